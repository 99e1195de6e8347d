package nixos

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/homelab-deploy/homelab-deploy/cli"
	"github.com/homelab-deploy/homelab-deploy/tools/build"
)

// option is one declared option as testdata/eval.nix reports it.
type option struct {
	Type           string `json:"type"`
	HasDefault     bool   `json:"hasDefault"`
	Default        any    `json:"default"`
	HasDescription bool   `json:"hasDescription"`
}

// required marks options SPEC.md lists as required (no default).
const required = "<required>"

var defaultSubjects = []any{"deploy.<tier>.<hostname>", "deploy.<tier>.all", "deploy.<tier>.role.<role>"}

// specOptions is SPEC.md's "NixOS module" tables, plus our compatible
// extensions (marked). Types use nixpkgs' type names; SPEC's "int" is a
// positive int here. The stand-in config's networking.hostName is
// "stub-hostname" and the stand-in pkgs.homelab-deploy is "<package
// homelab-deploy>", so those defaults prove where the real ones come from.
var specOptions = map[string]option{
	"listener.enable":               {Type: "bool", Default: false},
	"listener.package":              {Type: "package", Default: "<package homelab-deploy>"},
	"listener.hostname":             {Type: "str", Default: "stub-hostname"},
	"listener.tier":                 {Type: "enum [test prod]", Default: required},
	"listener.role":                 {Type: "nullOr str", Default: nil},
	"listener.natsUrl":              {Type: "str", Default: required},
	"listener.nkeyFile":             {Type: "path", Default: required},
	"listener.flakeUrl":             {Type: "str", Default: required},
	"listener.timeout":              {Type: "positiveInt", Default: 600.0},
	"listener.shutdownGrace":        {Type: "positiveInt", Default: 30.0}, // extension
	"listener.deploySubjects":       {Type: "listOf str", Default: defaultSubjects},
	"listener.discoverSubject":      {Type: "str", Default: "deploy.discover"},
	"listener.confirmTimeout":       {Type: "unsignedInt", Default: 120.0},  // extension
	"listener.healthChecks":         {Type: "listOf str", Default: []any{}}, // extension
	"listener.lockFile":             {Type: "nullOr str", Default: "/run/homelab-deploy/listener.lock"},
	"listener.fleet.heartbeat":      {Type: "unsignedInt", Default: 30.0},   // extension
	"listener.fleet.replicas":       {Type: "unsignedInt", Default: 0.0},    // extension
	"listener.trustedDeployers":     {Type: "listOf str", Default: []any{}}, // extension
	"listener.environment":          {Type: "attrsOf str", Default: map[string]any{}},
	"listener.metrics.enable":       {Type: "bool", Default: false},
	"listener.metrics.address":      {Type: "str", Default: ":9972"},
	"listener.metrics.openFirewall": {Type: "bool", Default: false},
	"listener.natsCaFile":           {Type: "nullOr path", Default: nil},                     // extension
	"listener.logLevel":             {Type: "enum [debug info warn error]", Default: "info"}, // extension
	"listener.extraArgs":            {Type: "listOf str", Default: []any{}},                  // extension
	"builder.enable":                {Type: "bool", Default: false},
	"builder.package":               {Type: "package", Default: "<package homelab-deploy>"},
	"builder.natsUrl":               {Type: "str", Default: required},
	"builder.nkeyFile":              {Type: "path", Default: required},
	"builder.configFile":            {Type: "nullOr path", Default: nil},      // required unless settings is set
	"builder.settings":              {Type: "nullOr submodule", Default: nil}, // extension
	"builder.timeout":               {Type: "positiveInt", Default: 1800.0},
	"builder.maxParallel":           {Type: "positiveInt", Default: 2.0},    // extension
	"builder.shutdownGrace":         {Type: "positiveInt", Default: 30.0},   // extension
	"builder.trustedDeployers":      {Type: "listOf str", Default: []any{}}, // extension
	"builder.environment":           {Type: "attrsOf str", Default: map[string]any{}},
	"builder.metrics.enable":        {Type: "bool", Default: false},
	"builder.metrics.address":       {Type: "str", Default: ":9973"},
	"builder.metrics.openFirewall":  {Type: "bool", Default: false},
	"builder.natsCaFile":            {Type: "nullOr path", Default: nil},                     // extension
	"builder.logLevel":              {Type: "enum [debug info warn error]", Default: "info"}, // extension
	"builder.extraArgs":             {Type: "listOf str", Default: []any{}},                  // extension
}

func TestOptionsMatchSpec(t *testing.T) {
	t.Parallel()
	var got map[string]option
	nixEvalJSON(t, &got, "testdata/eval.nix", "--argstr", "request", `{"what":"options"}`)

	for _, name := range slices.Sorted(maps.Keys(specOptions)) {
		want := specOptions[name]
		o, ok := got[name]
		if !ok {
			t.Errorf("option services.homelab-deploy.%s is not declared", name)
			continue
		}
		if o.Type != want.Type {
			t.Errorf("services.homelab-deploy.%s: type %q, want %q", name, o.Type, want.Type)
		}
		if want.Default == required {
			if o.HasDefault {
				t.Errorf("services.homelab-deploy.%s is required by SPEC.md but has default %#v", name, o.Default)
			}
		} else if !o.HasDefault || !reflect.DeepEqual(o.Default, want.Default) {
			t.Errorf("services.homelab-deploy.%s: default %#v (declared: %v), want %#v", name, o.Default, o.HasDefault, want.Default)
		}
		if !o.HasDescription {
			t.Errorf("services.homelab-deploy.%s has no description", name)
		}
	}
	for name := range got {
		if _, ok := specOptions[name]; !ok {
			t.Errorf("option services.homelab-deploy.%s is declared but not in this test's table: add it (and to the README)", name)
		}
	}
}

// TestDefaultsFile checks defaults.nix, the plain data the options take
// their defaults from, on its own.
func TestDefaultsFile(t *testing.T) {
	t.Parallel()
	var d struct {
		Listener     map[string]any `json:"listener"`
		Builder      map[string]any `json:"builder"`
		Tiers        []string       `json:"tiers"`
		ListenerUnit string         `json:"listenerUnit"`
		BuilderUnit  string         `json:"builderUnit"`
		BuilderUser  string         `json:"builderUser"`
	}
	nixEvalJSON(t, &d, "defaults.nix")
	if !reflect.DeepEqual(d.Tiers, []string{"test", "prod"}) {
		t.Errorf("tiers = %v", d.Tiers)
	}
	if d.ListenerUnit != "homelab-deploy-listener" || d.BuilderUnit != "homelab-deploy-builder" || d.BuilderUser != "homelab-deploy-builder" {
		t.Errorf("unit/user names = %q %q %q", d.ListenerUnit, d.BuilderUnit, d.BuilderUser)
	}
	if d.Listener["timeout"] != 600.0 || d.Builder["timeout"] != 1800.0 || d.Builder["maxParallel"] != 2.0 {
		t.Errorf("timeouts/maxParallel = %v %v %v", d.Listener["timeout"], d.Builder["timeout"], d.Builder["maxParallel"])
	}
}

// unit is what testdata/eval.nix reports about one evaluated module.
type unit struct {
	Enabled          bool              `json:"enabled"`
	UnitName         string            `json:"unitName"`
	FailedAssertions []string          `json:"failedAssertions"`
	Warnings         []string          `json:"warnings"`
	ExecStart        string            `json:"execStart"`
	ServiceConfig    map[string]any    `json:"serviceConfig"`
	RestartIfChanged bool              `json:"restartIfChanged"`
	UnitConfig       map[string]any    `json:"unitConfig"`
	Wants            []string          `json:"wants"`
	After            []string          `json:"after"`
	WantedBy         []string          `json:"wantedBy"`
	Path             []string          `json:"path"`
	Environment      map[string]string `json:"environment"`
	FirewallPorts    []int             `json:"firewallPorts"`
	Users            []string          `json:"users"`
	Settings         any               `json:"settings"`
}

// evalUnit evaluates listener.nix or builder.nix with cfg on top of the
// option defaults.
func evalUnit(t *testing.T, service string, cfg map[string]any, allowedUsers ...string) unit {
	t.Helper()
	var system map[string]any
	if allowedUsers != nil {
		system = map[string]any{"allowedUsers": allowedUsers}
	}
	return evalUnitIn(t, service, cfg, system)
}

// evalUnitIn is evalUnit in a NixOS configuration that sets what system
// holds (see testdata/stub.nix: allowedUsers, trustedUsers, users, groups,
// nixEnvVars, proxyEnvVars).
func evalUnitIn(t *testing.T, service string, cfg, system map[string]any) unit {
	t.Helper()
	u, err := tryEvalUnit(t, service, cfg, system)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// tryEvalUnit returns the evaluation error (Nix's message on stderr) instead
// of failing the test: a definition the module system refuses.
func tryEvalUnit(t *testing.T, service string, cfg, system map[string]any) (unit, error) {
	t.Helper()
	req := map[string]any{"what": service, "cfg": cfg}
	if system != nil {
		req["system"] = system
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var u unit
	err = tryNixEvalJSON(t, &u, "testdata/eval.nix", "--argstr", "request", string(b))
	return u, err
}

// splitExecLine undoes helpers.execLine: the program, then arguments quoted
// as JSON strings with % and $ doubled. It fails the test on anything else,
// so an unquoted argument cannot slip into ExecStart.
func splitExecLine(t *testing.T, line string) (string, []string) {
	t.Helper()
	program, rest, _ := strings.Cut(line, " ")
	var args []string
	for rest != "" {
		if rest[0] != '"' {
			t.Fatalf("ExecStart argument not quoted at %q (line %q)", rest, line)
		}
		end := 1
		for ; end < len(rest); end++ {
			if rest[end] == '\\' {
				end++
				continue
			}
			if rest[end] == '"' {
				break
			}
		}
		if end >= len(rest) {
			t.Fatalf("unterminated quote in ExecStart %q", line)
		}
		quoted := strings.NewReplacer("%%", "%", "$$", "$").Replace(rest[:end+1])
		if strings.ContainsAny(strings.NewReplacer("%%", "", "$$", "").Replace(rest[:end+1]), "%$") {
			t.Errorf("ExecStart argument %s has an unescaped %% or $", rest[:end+1])
		}
		var arg string
		if err := json.Unmarshal([]byte(quoted), &arg); err != nil {
			t.Fatalf("ExecStart argument %s: %v", rest[:end+1], err)
		}
		args = append(args, arg)
		rest = strings.TrimPrefix(rest[end+1:], " ")
	}
	return program, args
}

const stubProgram = "/nix/store/00000000000000000000000000000000-homelab-deploy/bin/homelab-deploy"

func listenerCfg(extra map[string]any) map[string]any {
	cfg := map[string]any{
		"enable":   true,
		"tier":     "test",
		"natsUrl":  "nats://nats.example.com:4222",
		"nkeyFile": "/run/secrets/listener.nkey",
		"flakeUrl": "git+https://git.example.com/user/nixos-configs.git",
	}
	maps.Copy(cfg, extra)
	return cfg
}

func builderCfg(extra map[string]any) map[string]any {
	cfg := map[string]any{
		"enable":   true,
		"natsUrl":  "nats://nats.example.com:4222",
		"nkeyFile": "/run/secrets/builder.nkey",
		"settings": map[string]any{"repos": map[string]any{
			"nixos-servers": map[string]any{"url": "git+https://git.example.com/org/nixos-servers.git", "default_branch": "master"},
		}},
	}
	maps.Copy(cfg, extra)
	return cfg
}

// builderRepos is builderCfg with one repository named name at url.
func builderRepos(name, url string) map[string]any {
	return builderCfg(map[string]any{"settings": map[string]any{"repos": map[string]any{
		name: map[string]any{"url": url, "default_branch": "main"}}}})
}

const watchUnit = "/etc/systemd/system/homelab-deploy-listener.service"

func TestListenerCommandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  map[string]any
		want []string
	}{
		{
			name: "defaults",
			cfg:  listenerCfg(nil),
			want: []string{"listener",
				"--hostname", "stub-hostname", "--tier", "test",
				"--nats-url", "nats://nats.example.com:4222",
				"--nkey-file", "/run/secrets/listener.nkey",
				"--flake-url", "git+https://git.example.com/user/nixos-configs.git",
				"--timeout", "600", "--shutdown-grace", "30", "--confirm-timeout", "120",
				"--deploy-subject", "deploy.<tier>.<hostname>",
				"--deploy-subject", "deploy.<tier>.all",
				"--deploy-subject", "deploy.<tier>.role.<role>",
				"--discover-subject", "deploy.discover",
				"--fleet-heartbeat", "30", "--fleet-replicas", "0", "--fleet-system-root", "/",
				"--lock-file", "/run/homelab-deploy/listener.lock",
				"--log-level", "info", "--log-format", "text",
				"--watch-unit-file", watchUnit},
		},
		{
			name: "everything set",
			cfg: listenerCfg(map[string]any{
				"hostname":        "dns1",
				"tier":            "prod",
				"role":            "dns",
				"natsUrl":         "tls://n1.example.com:4222,tls://n2.example.com:4222",
				"timeout":         120,
				"deploySubjects":  []string{"deploy.<tier>.<hostname>", "custom.<role>"},
				"discoverSubject": "deploy.discover.lab",
				"metrics":         map[string]any{"enable": true, "address": "127.0.0.1:9100"},
				"natsCaFile":      "/etc/ssl/nats-ca.pem",
				"logLevel":        "debug",
				"confirmTimeout":  60,
				"healthChecks":    []string{"systemctl is-active sshd.service", `timeout=5s curl -fsS "http://127.0.0.1/a b"`},
				"fleet":           map[string]any{"heartbeat": 10, "replicas": 3},
				"extraArgs":       []string{"--some-new-flag", "value with space"},
			}),
			want: []string{"listener",
				"--hostname", "dns1", "--tier", "prod",
				"--nats-url", "tls://n1.example.com:4222,tls://n2.example.com:4222",
				"--nkey-file", "/run/secrets/listener.nkey",
				"--flake-url", "git+https://git.example.com/user/nixos-configs.git",
				"--role", "dns",
				"--timeout", "120", "--shutdown-grace", "30", "--confirm-timeout", "60",
				"--health-check", "systemctl is-active sshd.service",
				"--health-check", `timeout=5s curl -fsS "http://127.0.0.1/a b"`,
				"--deploy-subject", "deploy.<tier>.<hostname>",
				"--deploy-subject", "custom.<role>",
				"--discover-subject", "deploy.discover.lab",
				"--fleet-heartbeat", "10", "--fleet-replicas", "3", "--fleet-system-root", "/",
				"--lock-file", "/run/homelab-deploy/listener.lock",
				"--metrics-enabled", "--metrics-addr", "127.0.0.1:9100",
				"--nats-ca-file", "/etc/ssl/nats-ca.pem",
				"--log-level", "debug", "--log-format", "text",
				"--watch-unit-file", watchUnit,
				"--some-new-flag", "value with space"},
		},
		{
			// systemd expands %specifiers and $VARS in Exec lines; neither may
			// reach a value, and quotes or spaces must not split it.
			name: "values systemd would otherwise expand or split",
			cfg: listenerCfg(map[string]any{
				"flakeUrl": `git+https://h.example/r.git?dir=a%20b&x=%41$HOME"'\`,
			}),
			want: []string{"listener",
				"--hostname", "stub-hostname", "--tier", "test",
				"--nats-url", "nats://nats.example.com:4222",
				"--nkey-file", "/run/secrets/listener.nkey",
				"--flake-url", `git+https://h.example/r.git?dir=a%20b&x=%41$HOME"'\`,
				"--timeout", "600", "--shutdown-grace", "30", "--confirm-timeout", "120",
				"--deploy-subject", "deploy.<tier>.<hostname>",
				"--deploy-subject", "deploy.<tier>.all",
				"--deploy-subject", "deploy.<tier>.role.<role>",
				"--discover-subject", "deploy.discover",
				"--fleet-heartbeat", "30", "--fleet-replicas", "0", "--fleet-system-root", "/",
				"--lock-file", "/run/homelab-deploy/listener.lock",
				"--log-level", "info", "--log-format", "text",
				"--watch-unit-file", watchUnit},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := evalUnit(t, "listener", tt.cfg)
			if len(u.FailedAssertions) > 0 {
				t.Fatalf("assertions failed: %q", u.FailedAssertions)
			}
			program, args := splitExecLine(t, u.ExecStart)
			if program != stubProgram {
				t.Errorf("program = %q, want %q", program, stubProgram)
			}
			if !slices.Equal(args, tt.want) {
				t.Errorf("argv mismatch\n got: %q\nwant: %q\nExecStart: %s", args, tt.want, u.ExecStart)
			}
		})
	}
}

func TestBuilderCommandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  map[string]any
		want []string
	}{
		{
			name: "settings rendered to YAML",
			cfg:  builderCfg(nil),
			want: []string{"builder",
				"--nats-url", "nats://nats.example.com:4222",
				"--nkey-file", "/run/secrets/builder.nkey",
				"--config", "/nix/store/00000000000000000000000000000000-homelab-deploy-builder.yaml",
				"--timeout", "1800", "--max-parallel", "2", "--shutdown-grace", "30",
				"--log-level", "info", "--log-format", "text"},
		},
		{
			name: "configFile and everything set",
			cfg: builderCfg(map[string]any{
				"settings":    nil,
				"configFile":  "/etc/homelab-deploy/builder.yaml",
				"timeout":     3600,
				"maxParallel": 4,
				"metrics":     map[string]any{"enable": true},
				"natsCaFile":  "/etc/ssl/nats-ca.pem",
				"logLevel":    "warn",
				"extraArgs":   []string{"--x"},
			}),
			want: []string{"builder",
				"--nats-url", "nats://nats.example.com:4222",
				"--nkey-file", "/run/secrets/builder.nkey",
				"--config", "/etc/homelab-deploy/builder.yaml",
				"--timeout", "3600", "--max-parallel", "4", "--shutdown-grace", "30",
				"--metrics-enabled", "--metrics-addr", ":9973",
				"--nats-ca-file", "/etc/ssl/nats-ca.pem",
				"--log-level", "warn", "--log-format", "text",
				"--x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := evalUnit(t, "builder", tt.cfg)
			if len(u.FailedAssertions) > 0 {
				t.Fatalf("assertions failed: %q", u.FailedAssertions)
			}
			program, args := splitExecLine(t, u.ExecStart)
			if program != stubProgram {
				t.Errorf("program = %q, want %q", program, stubProgram)
			}
			if !slices.Equal(args, tt.want) {
				t.Errorf("argv mismatch\n got: %q\nwant: %q", args, tt.want)
			}
		})
	}
}

// The flags of both modes, read from the binary's own command tree, so a
// flag added to the binary and forgotten in the module fails here.
var (
	listenerFlags = cli.FlagNames("listener")
	builderFlags  = cli.FlagNames("builder")
)

func TestEveryFlagReachable(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, service string, cfg map[string]any, flags []string) {
		_, args := splitExecLine(t, evalUnit(t, service, cfg).ExecStart)
		for _, f := range flags {
			if !slices.Contains(args, f) {
				t.Errorf("%s: flag %s is not reachable from the module (argv %q)", service, f, args)
			}
		}
		for _, a := range args {
			if strings.HasPrefix(a, "--") && !slices.Contains(flags, a) {
				t.Errorf("%s: the module passes %s, which the binary does not define", service, a)
			}
		}
	}
	t.Run("listener", func(t *testing.T) {
		t.Parallel()
		check(t, "listener", withHealthCheck(listenerCfg(map[string]any{
			"trustedDeployers": []string{userKey(t)},
			"role":             "dns",
			"metrics":          map[string]any{"enable": true},
			"natsCaFile":       "/etc/ca.pem",
		})), listenerFlags)
	})
	t.Run("builder", func(t *testing.T) {
		t.Parallel()
		check(t, "builder", builderCfg(map[string]any{
			"trustedDeployers": []string{userKey(t)},
			"metrics":          map[string]any{"enable": true},
			"natsCaFile":       "/etc/ca.pem",
		}), builderFlags)
	})
}

func TestListenerUnit(t *testing.T) {
	t.Parallel()
	u := evalUnit(t, "listener", listenerCfg(map[string]any{
		"environment": map[string]any{"GIT_SSH_COMMAND": "ssh -i /run/secrets/k", "NIX_CONFIG": "mine"},
	}))
	if !u.Enabled || u.UnitName != "homelab-deploy-listener" {
		t.Fatalf("unit %q enabled=%v", u.UnitName, u.Enabled)
	}
	if u.RestartIfChanged {
		t.Error("restartIfChanged must be false: a switch must not kill the deployment it runs in")
	}
	if u.UnitConfig["X-StopOnRemoval"] != false {
		t.Errorf(`unitConfig."X-StopOnRemoval" = %v, want false`, u.UnitConfig["X-StopOnRemoval"])
	}
	if u.ServiceConfig["Restart"] != "always" || u.ServiceConfig["RestartSec"] == nil {
		t.Errorf("Restart=%v RestartSec=%v, want always and a delay (the listener exits to be restarted after a switch)",
			u.ServiceConfig["Restart"], u.ServiceConfig["RestartSec"])
	}
	if u.ServiceConfig["KillMode"] != "mixed" {
		t.Errorf("KillMode = %v, want mixed: systemd must not SIGTERM a running nixos-rebuild before the listener's shutdown grace", u.ServiceConfig["KillMode"])
	}
	if _, ok := u.ServiceConfig["User"]; ok {
		t.Errorf("listener must run as root (nixos-rebuild), has User=%v", u.ServiceConfig["User"])
	}
	if !slices.Contains(u.Wants, "network-online.target") || !slices.Contains(u.After, "network-online.target") {
		t.Errorf("wants=%v after=%v, want network-online.target in both", u.Wants, u.After)
	}
	if !slices.Contains(u.WantedBy, "multi-user.target") {
		t.Errorf("wantedBy = %v", u.WantedBy)
	}
	for _, p := range []string{"nixos-rebuild", "nix", "git", "openssh"} {
		if !slices.Contains(u.Path, p) {
			t.Errorf("path %v lacks %s", u.Path, p)
		}
	}
	if u.Environment["GIT_SSH_COMMAND"] != "ssh -i /run/secrets/k" {
		t.Errorf("environment not passed through: %v", u.Environment)
	}
	if u.Environment["NIX_CONFIG"] != "mine" {
		t.Errorf("the user's NIX_CONFIG must override the module's default, got %q", u.Environment["NIX_CONFIG"])
	}
	if !strings.Contains(evalUnit(t, "listener", listenerCfg(nil)).Environment["NIX_CONFIG"], "flakes") {
		t.Error("default NIX_CONFIG does not enable flakes")
	}

	off := evalUnit(t, "listener", map[string]any{})
	if off.Enabled {
		t.Error("listener enabled by default")
	}
}

func TestBuilderUnit(t *testing.T) {
	t.Parallel()
	u := evalUnit(t, "builder", builderCfg(map[string]any{"environment": map[string]any{"FOO": "bar"}}))
	if !u.Enabled || u.UnitName != "homelab-deploy-builder" {
		t.Fatalf("unit %q enabled=%v", u.UnitName, u.Enabled)
	}
	sc := u.ServiceConfig
	if sc["User"] != "homelab-deploy-builder" || sc["Group"] != "homelab-deploy-builder" {
		t.Errorf("User=%v Group=%v, want the dedicated homelab-deploy-builder user", sc["User"], sc["Group"])
	}
	if !slices.Contains(u.Users, "homelab-deploy-builder") {
		t.Errorf("users.users = %v, want homelab-deploy-builder declared", u.Users)
	}
	wantSandbox := map[string]any{
		"ProtectSystem":           "strict",
		"ProtectHome":             true,
		"PrivateTmp":              true,
		"PrivateDevices":          true,
		"NoNewPrivileges":         true,
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"RestrictNamespaces":      true,
		"RestrictSUIDSGID":        true,
		"LockPersonality":         true,
		"ProtectKernelTunables":   true,
		"ProtectKernelModules":    true,
		"ProtectKernelLogs":       true,
		"ProtectControlGroups":    true,
		"SystemCallArchitectures": "native",
		"RestrictAddressFamilies": []any{"AF_UNIX", "AF_INET", "AF_INET6"},
		"StateDirectory":          "homelab-deploy-builder",
		"CacheDirectory":          "homelab-deploy-builder",
		"Restart":                 "always",
		"KillMode":                "mixed",
	}
	for k, want := range wantSandbox {
		if !reflect.DeepEqual(sc[k], want) {
			t.Errorf("serviceConfig.%s = %#v, want %#v", k, sc[k], want)
		}
	}
	env := u.Environment
	if env["HOME"] != "/var/lib/homelab-deploy-builder" || env["XDG_CACHE_HOME"] != "/var/cache/homelab-deploy-builder" {
		t.Errorf("HOME=%q XDG_CACHE_HOME=%q, want the StateDirectory and CacheDirectory", env["HOME"], env["XDG_CACHE_HOME"])
	}
	if env["NIX_REMOTE"] != "daemon" || env["FOO"] != "bar" {
		t.Errorf("environment = %v, want NIX_REMOTE=daemon and the user's FOO", env)
	}
	for _, p := range []string{"nix", "git", "openssh"} {
		if !slices.Contains(u.Path, p) {
			t.Errorf("path %v lacks %s", u.Path, p)
		}
	}
	if !slices.Contains(u.After, "nix-daemon.socket") || !slices.Contains(u.After, "network-online.target") {
		t.Errorf("after = %v", u.After)
	}
	if len(u.Warnings) != 0 {
		t.Errorf("warnings with allowed-users = *: %q", u.Warnings)
	}
	for _, allowed := range [][]string{{"*"}, {"root", "homelab-deploy-builder"}, {"@homelab-deploy-builder"}} {
		if w := evalUnit(t, "builder", builderCfg(nil), allowed...).Warnings; len(w) != 0 {
			t.Errorf("allowed-users %v: unexpected warnings %q", allowed, w)
		}
	}
	if w := evalUnit(t, "builder", builderCfg(nil), "root", "@wheel").Warnings; len(w) != 1 || !strings.Contains(w[0], "allowed-users") {
		t.Errorf("allowed-users without the builder: warnings %q, want one about allowed-users", w)
	}
}

// TestBuilderSettings: settings is typed like the builder's YAML file, so
// a misspelt or missing key fails evaluation (not the unit's start, in a
// restart loop), and what the module writes is what the binary reads.
func TestBuilderSettings(t *testing.T) {
	t.Parallel()
	repo := func(r map[string]any) map[string]any {
		return builderCfg(map[string]any{"settings": map[string]any{"repos": map[string]any{"nixos-servers": r}}})
	}
	const prefix = "services.homelab-deploy.builder.settings"
	tests := []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"camelCase defaultBranch", repo(map[string]any{"url": "git+file:///x", "defaultBranch": "main"}),
			"The option `" + prefix + ".repos.nixos-servers.defaultBranch' does not exist."},
		{"no default_branch", repo(map[string]any{"url": "git+file:///x"}),
			"The option `" + prefix + ".repos.nixos-servers.default_branch' was accessed but has no value defined."},
		{"no url", repo(map[string]any{"default_branch": "main"}),
			"The option `" + prefix + ".repos.nixos-servers.url' was accessed but has no value defined."},
		{"branch not a string", repo(map[string]any{"url": "git+file:///x", "default_branch": 1}),
			"A definition for option `" + prefix + ".repos.nixos-servers.default_branch' is not of type `string'."},
		{"unknown top-level key", builderCfg(map[string]any{"settings": map[string]any{"repositories": map[string]any{}}}),
			"The option `" + prefix + ".repositories' does not exist."},
		{"no repos", builderCfg(map[string]any{"settings": map[string]any{}}),
			"The option `" + prefix + ".repos' was accessed but has no value defined."},
		{"dotted repo name quoted", builderCfg(map[string]any{"settings": map[string]any{"repos": map[string]any{
			"a.b": map[string]any{"url": "git+file:///x", "branch": "main"}}}}),
			"The option `" + prefix + `.repos."a.b".branch' does not exist.`},
		// The same checks hold for every option, as in nixpkgs.
		{"unknown listener option", listenerCfg(map[string]any{"natsURL": "nats://x"}),
			"The option `services.homelab-deploy.listener.natsURL' does not exist."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			service := "builder"
			if _, ok := tt.cfg["tier"]; ok {
				service = "listener"
			}
			_, err := tryEvalUnit(t, service, tt.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("evaluation error %v, want one saying %q", err, tt.want)
			}
		})
	}

	t.Run("rendered settings pass the binary's check", func(t *testing.T) {
		t.Parallel()
		u := evalUnit(t, "builder", builderCfg(map[string]any{"settings": map[string]any{"repos": map[string]any{
			"nixos-servers": map[string]any{"url": "git+https://git.example.com/org/nixos-servers.git", "default_branch": "master"},
			"homelab":       map[string]any{"url": "git+ssh://git@github.com/you/homelab.git", "default_branch": "main"},
		}}}))
		// JSON is YAML: this is the content of the file the unit gets.
		rendered, err := json.Marshal(u.Settings)
		if err != nil {
			t.Fatal(err)
		}
		c, err := build.ParseConfig("settings", rendered)
		if err != nil {
			t.Fatalf("the builder refuses what the module writes (%s): %v", rendered, err)
		}
		if got := c.Names(); !slices.Equal(got, []string{"homelab", "nixos-servers"}) || c.Repos["homelab"].DefaultBranch != "main" {
			t.Errorf("builder read %+v from %s", c.Repos, rendered)
		}
	})
}

// TestNixDaemonAccess: the warning about allowed-users follows the Nix
// daemon's rule: a user may connect when allowed-users or trusted-users
// holds "*", its name, or "@group" of a group it is in.
func TestNixDaemonAccess(t *testing.T) {
	t.Parallel()
	const user = "homelab-deploy-builder"
	tests := []struct {
		name   string
		system map[string]any
		warn   bool
	}{
		{"nixpkgs defaults", map[string]any{}, false},
		{"allowed by name", map[string]any{"allowedUsers": []string{"root", user}}, false},
		{"allowed by its own group", map[string]any{"allowedUsers": []string{"@" + user}}, false},
		{"only root and wheel", map[string]any{"allowedUsers": []string{"root", "@wheel"}}, true},
		{"trusted by name", map[string]any{"allowedUsers": []string{"root"}, "trustedUsers": []string{"root", user}}, false},
		{"trusted *", map[string]any{"allowedUsers": []string{"root"}, "trustedUsers": []string{"*"}}, false},
		{"trusted @wheel, in wheel", map[string]any{"allowedUsers": []string{"root"}, "trustedUsers": []string{"root", "@wheel"},
			"users": map[string]any{user: map[string]any{"extraGroups": []string{"wheel"}}}}, false},
		{"allowed @nixusers, a member", map[string]any{"allowedUsers": []string{"@nixusers"},
			"groups": map[string]any{"nixusers": map[string]any{"members": []string{"alice", user}}}}, false},
		{"trusted @wheel, not in wheel", map[string]any{"allowedUsers": []string{"root"}, "trustedUsers": []string{"root", "@wheel"},
			"groups": map[string]any{"wheel": map[string]any{"members": []string{"alice"}}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := evalUnitIn(t, "builder", builderCfg(nil), tt.system).Warnings
			if !tt.warn && len(w) != 0 {
				t.Errorf("unexpected warnings %q", w)
			}
			if tt.warn && (len(w) != 1 || !strings.Contains(w[0], `Add "`+user+`" to nix.settings.allowed-users`)) {
				t.Errorf("warnings %q, want one saying to add %s to allowed-users", w, user)
			}
		})
	}
}

// TestServiceEnvironment: the listener runs nixos-rebuild with the
// environment nixpkgs' nixos-upgrade service has (nix.envVars, HOME=/root,
// the proxy), so fetching works behind a proxy; the service's own
// environment option still wins.
func TestServiceEnvironment(t *testing.T) {
	t.Parallel()
	system := map[string]any{
		"nixEnvVars":   map[string]any{"NIX_REMOTE": "daemon"},
		"proxyEnvVars": map[string]any{"https_proxy": "http://proxy:3128", "no_proxy": "127.0.0.1,localhost"},
	}
	env := evalUnitIn(t, "listener", listenerCfg(nil), system).Environment
	want := map[string]string{"HOME": "/root", "NIX_REMOTE": "daemon", "https_proxy": "http://proxy:3128", "no_proxy": "127.0.0.1,localhost"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("listener %s = %q, want %q (environment %v)", k, env[k], v, env)
		}
	}
	env = evalUnitIn(t, "listener", listenerCfg(map[string]any{"environment": map[string]any{"HOME": "/var/lib/deploy", "https_proxy": "http://other:8080"}}), system).Environment
	if env["HOME"] != "/var/lib/deploy" || env["https_proxy"] != "http://other:8080" {
		t.Errorf("the listener's environment option must win: HOME=%q https_proxy=%q", env["HOME"], env["https_proxy"])
	}
	if env := evalUnit(t, "listener", listenerCfg(nil)).Environment; env["HOME"] != "/root" || env["https_proxy"] != "" {
		t.Errorf("without a proxy: HOME=%q https_proxy=%q", env["HOME"], env["https_proxy"])
	}

	env = evalUnitIn(t, "builder", builderCfg(nil), system).Environment
	if env["https_proxy"] != "http://proxy:3128" || env["HOME"] != "/var/lib/homelab-deploy-builder" || env["NIX_REMOTE"] != "daemon" {
		t.Errorf("builder environment %v, want the proxy, its own HOME and NIX_REMOTE=daemon", env)
	}
}

func TestFirewall(t *testing.T) {
	t.Parallel()
	tests := []struct {
		service string
		cfg     map[string]any
		want    []int
	}{
		{"listener", listenerCfg(nil), nil},
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true}}), nil},
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"openFirewall": true}}), nil},
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true}}), []int{9972}},
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "0.0.0.0:9100"}}), []int{9100}},
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "[::]:9101"}}), []int{9101}},
		{"builder", builderCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true}}), []int{9973}},
		{"builder", builderCfg(map[string]any{"metrics": map[string]any{"enable": true}}), nil},
		// Loopback: nothing outside can reach it, so no hole (and a warning).
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "localhost:9972"}}), nil},
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "127.0.0.1:9972"}}), nil},
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "[::1]:9972"}}), nil},
		{"builder", builderCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "127.0.0.2:9973"}}), nil},
		{"listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "192.168.1.5:9972"}}), []int{9972}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			u := evalUnit(t, tt.service, tt.cfg)
			if len(u.FirewallPorts) != len(tt.want) || (len(tt.want) > 0 && !slices.Equal(u.FirewallPorts, tt.want)) {
				t.Errorf("%s %v: firewall ports %v, want %v", tt.service, tt.cfg["metrics"], u.FirewallPorts, tt.want)
			}
			m, _ := tt.cfg["metrics"].(map[string]any)
			loopback := strings.HasPrefix(fmt.Sprint(m["address"]), "localhost") || strings.HasPrefix(fmt.Sprint(m["address"]), "127.") || strings.HasPrefix(fmt.Sprint(m["address"]), "[::1]")
			warned := slices.ContainsFunc(u.Warnings, func(w string) bool { return strings.Contains(w, "openFirewall has no effect") })
			if warned != loopback {
				t.Errorf("%s %v: warnings %q; want one saying openFirewall has no effect exactly when the address is loopback", tt.service, m, u.Warnings)
			}
		})
	}
}

func TestAssertions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		service string
		cfg     map[string]any
		want    string // substring of a failed assertion; "" = none fails
	}{
		{"valid hostname", "listener", listenerCfg(map[string]any{"hostname": "web-01_a", "role": "dns-2"}), ""},
		{"dotted hostname", "listener", listenerCfg(map[string]any{"hostname": "web.example.com"}), "hostname = \"web.example.com\" cannot be used"},
		{"hostname all", "listener", listenerCfg(map[string]any{"hostname": "all"}), `not "all" or "role"`},
		{"hostname role", "listener", listenerCfg(map[string]any{"hostname": "role"}), `not "all" or "role"`},
		{"hostname wildcard", "listener", listenerCfg(map[string]any{"hostname": "*"}), "one NATS subject token"},
		{"empty hostname", "listener", listenerCfg(map[string]any{"hostname": ""}), "one NATS subject token"},
		{"dotted role", "listener", listenerCfg(map[string]any{"role": "dns.prod"}), `role = "dns.prod" cannot be used`},
		{"role with >", "listener", listenerCfg(map[string]any{"role": ">"}), "role"},
		{"role with space", "listener", listenerCfg(map[string]any{"role": "a b"}), "role"},
		{"seed in the store", "listener", listenerCfg(map[string]any{"nkeyFile": "/nix/store/abc-seed"}), "outside the Nix store"},
		{"no subjects", "listener", listenerCfg(map[string]any{"deploySubjects": []string{}}), "deploySubjects is empty"},
		{"firewall without port", "listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "localhost"}}), "needs a port"},
		{"port out of range", "listener", listenerCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": ":70000"}}), "needs a port"},

		{"builder valid", "builder", builderCfg(nil), ""},
		{"builder configFile only", "builder", builderCfg(map[string]any{"settings": nil, "configFile": "/etc/b.yaml"}), ""},
		{"builder neither", "builder", builderCfg(map[string]any{"settings": nil}), "neither is set"},
		{"builder both", "builder", builderCfg(map[string]any{"configFile": "/etc/b.yaml"}), "not both"},
		{"builder no repos", "builder", builderCfg(map[string]any{"settings": map[string]any{"repos": map[string]any{}}}), "settings.repos is empty"},
		{"builder dotted repo", "builder", builderRepos("a.b", "git+file:///x"), `repo name "a.b" is not one NATS subject token`},
		{"builder repo named responses", "builder", builderRepos("responses", "git+file:///x"), `"responses" is reserved`},
		{"builder repo url without scheme", "builder", builderRepos("r", "/srv/git/r"), `repos.r.url: flake URL "/srv/git/r" has no scheme`},
		{"builder repo url with attribute", "builder", builderRepos("r", "git+file:///x#web1"), "must not contain '#'"},

		// natsUrl and flakeUrl: what the binary refuses at start fails here,
		// saying what to write instead (mirror_test.go holds both to the
		// binary's own checks).
		{"http natsUrl", "listener", listenerCfg(map[string]any{"natsUrl": "http://nats.example.com:4222"}),
			`natsUrl = "http://nats.example.com:4222" would be refused by the listener at start:` + "\n" + `NATS URL "http://nats.example.com:4222" has scheme http://, which NATS does not speak: give host:port or nats://host:port, tls://host:port`},
		{"natsUrl host:port", "listener", listenerCfg(map[string]any{"natsUrl": "nats.example.com:4222"}), ""},
		{"natsUrl cluster", "listener", listenerCfg(map[string]any{"natsUrl": "tls://n1:4222, tls://n2:4222,nats://n3"}), ""},
		{"natsUrl websocket", "listener", listenerCfg(map[string]any{"natsUrl": "wss://nats.example.com:443"}), ""},
		{"natsUrl mixing websocket", "listener", listenerCfg(map[string]any{"natsUrl": "wss://a:443,nats://b:4222"}), "mix websocket"},
		{"natsUrl bad port", "listener", listenerCfg(map[string]any{"natsUrl": "nats://a:70000"}), "a port is 1 to 65535"},
		{"natsUrl empty", "listener", listenerCfg(map[string]any{"natsUrl": " , "}), "no NATS URL given"},
		{"builder http natsUrl", "builder", builderCfg(map[string]any{"natsUrl": "https://nats.example.com"}),
			"would be refused by the builder at start:\nNATS URL \"https://nats.example.com\" has scheme https://"},
		{"local flakeUrl", "listener", listenerCfg(map[string]any{"flakeUrl": "/etc/nixos"}),
			`flakeUrl = "/etc/nixos" would be refused by the listener at start:` + "\n" + `flake URL "/etc/nixos" has no scheme: use e.g. git+https://, git+ssh://, git+file:// or path:; for a local checkout write "git+file:///etc/nixos" (or "path:/etc/nixos")`},
		{"flakeUrl with attribute", "listener", listenerCfg(map[string]any{"flakeUrl": "git+https://h/r.git#web1"}), "must not contain '#'"},
		{"flakeUrl with space", "listener", listenerCfg(map[string]any{"flakeUrl": "git+https://h/r .git"}), "contains whitespace"},
		{"flakeUrl git+file", "listener", listenerCfg(map[string]any{"flakeUrl": "git+file:///etc/nixos?dir=hosts"}), ""},
		{"flakeUrl github", "listener", listenerCfg(map[string]any{"flakeUrl": "github:you/nixos-configs"}), ""},
		{"builder seed in the store", "builder", builderCfg(map[string]any{"nkeyFile": "/nix/store/abc-seed"}), "outside the Nix store"},
		{"builder firewall without port", "builder", builderCfg(map[string]any{"metrics": map[string]any{"enable": true, "openFirewall": true, "address": "[::1]"}}), "needs a port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			failed := evalUnit(t, tt.service, tt.cfg).FailedAssertions
			if tt.want == "" {
				if len(failed) != 0 {
					t.Errorf("unexpected failed assertions: %q", failed)
				}
				return
			}
			if len(failed) != 1 || !strings.Contains(failed[0], tt.want) {
				t.Errorf("failed assertions %q, want exactly one containing %q", failed, tt.want)
			}
		})
	}
}

// TestHelpers evaluates the pure functions of helpers.nix directly.
func TestHelpers(t *testing.T) {
	t.Parallel()
	var got struct {
		Ports   []any    `json:"ports"`
		Tokens  []bool   `json:"tokens"`
		Hosts   []bool   `json:"hosts"`
		Escaped []string `json:"escaped"`
	}
	nixEvalJSON(t, &got, "-E", `let h = import ./helpers.nix; in {
		ports = map h.portOfAddress [ ":9972" "0.0.0.0:9972" "[::]:9972" "[::1]:9100" "host.lan:80" ":09972"
		                              "9972" "" ":0" ":65536" ":65535" "a:b:9972" "[::]" ];
		tokens = map h.isSubjectToken [ "web1" "a_b-C" "a.b" "*" ">" "a b" "" ];
		hosts = map h.isValidHostname [ "web1" "all" "role" "allx" ];
		escaped = map h.escapeExecArg [ "plain" "a b" "%d/nkey" "$HOME" "q\"s'\\" ];
	}`)
	wantPorts := []any{9972.0, 9972.0, 9972.0, 9100.0, 80.0, 9972.0, nil, nil, nil, nil, 65535.0, nil, nil}
	if !reflect.DeepEqual(got.Ports, wantPorts) {
		t.Errorf("portOfAddress = %v, want %v", got.Ports, wantPorts)
	}
	if want := []bool{true, true, false, false, false, false, false}; !slices.Equal(got.Tokens, want) {
		t.Errorf("isSubjectToken = %v, want %v", got.Tokens, want)
	}
	if want := []bool{true, false, false, true}; !slices.Equal(got.Hosts, want) {
		t.Errorf("isValidHostname = %v, want %v", got.Hosts, want)
	}
	want := []string{`"plain"`, `"a b"`, `"%%d/nkey"`, `"$$HOME"`, `"q\"s'\\"`}
	if !slices.Equal(got.Escaped, want) {
		t.Errorf("escapeExecArg = %q, want %q", got.Escaped, want)
	}
}
