package natsauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// Fleet is the small description of a homelab that `nats-config` and `demo`
// turn into NATS users:
//
//	hosts:
//	  testhost1: {tier: test}
//	  dns1: {tier: prod, role: dns, nkey: UABC...}
//	builder: {repos: [nixos-servers]}
//	deployers: {test: true, admin: true, build_client: true, mcp: true}
type Fleet struct {
	Hosts     map[string]FleetHost `yaml:"hosts"`
	Builder   *FleetBuilder        `yaml:"builder"`
	Deployers FleetDeployers       `yaml:"deployers"`
}

// FleetHost is one listener.
type FleetHost struct {
	Tier string `yaml:"tier"`
	Role string `yaml:"role"`
	// Nkey is the listener's public key; empty means "from the keys dir".
	Nkey string `yaml:"nkey"`
	// DeploySubjects are the listener's --deploy-subject templates; empty
	// means the defaults.
	DeploySubjects []string `yaml:"deploy_subjects"`
	// DiscoverSubject is the listener's --discover-subject.
	DiscoverSubject string `yaml:"discover_subject"`
}

// FleetBuilder is the build host.
type FleetBuilder struct {
	Repos []string `yaml:"repos"`
	Nkey  string   `yaml:"nkey"`
}

// FleetDeployers says which deployer credentials exist.
type FleetDeployers struct {
	Test        FleetDeployer `yaml:"test"`
	Admin       FleetDeployer `yaml:"admin"`
	BuildClient FleetDeployer `yaml:"build_client"`
	MCP         FleetDeployer `yaml:"mcp"`
}

// FleetDeployer is written either `true` / `false` or as a mapping
// `{nkey: U...}` (which implies true). For mcp the mapping may also hold
// `builds: false` to keep the assistant's credential from requesting builds.
type FleetDeployer struct {
	Enabled bool
	Nkey    string
	// Builds is only meaningful for mcp; nil means "yes if there is a builder".
	Builds *bool
	line   int
}

// UnmarshalYAML accepts a boolean or a mapping with nkey (and, for mcp,
// builds). It checks keys itself because a custom unmarshaler does not
// inherit the decoder's KnownFields setting.
func (d *FleetDeployer) UnmarshalYAML(n *yaml.Node) error {
	d.line = n.Line
	switch n.Kind {
	case yaml.ScalarNode:
		var b bool
		if err := n.Decode(&b); err != nil {
			return fmt.Errorf("line %d: a deployer is `true`, `false` or a mapping like `{nkey: U...}`, not %q", n.Line, n.Value)
		}
		d.Enabled = b
		return nil
	case yaml.MappingNode:
		d.Enabled = true
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch k.Value {
			case "nkey":
				if v.Kind != yaml.ScalarNode {
					return fmt.Errorf("line %d: nkey must be a string (a public key starting with U)", v.Line)
				}
				d.Nkey = v.Value
			case "builds":
				var b bool
				if err := v.Decode(&b); err != nil {
					return fmt.Errorf("line %d: builds must be true or false", v.Line)
				}
				d.Builds = &b
			case "enabled":
				var b bool
				if err := v.Decode(&b); err != nil {
					return fmt.Errorf("line %d: enabled must be true or false", v.Line)
				}
				d.Enabled = b
			default:
				return fmt.Errorf("line %d: unknown field %q in a deployer; known fields: nkey, enabled, builds (mcp only)", k.Line, k.Value)
			}
		}
		return nil
	}
	return fmt.Errorf("line %d: a deployer is `true`, `false` or a mapping like `{nkey: U...}`", n.Line)
}

// MaxFleetSize bounds the fleet file (it is small; a huge one is a mistake).
const MaxFleetSize = 1 << 20

var (
	unknownFieldRe = regexp.MustCompile(`line (\d+): field (\S+) not found in type natsauth\.(\w+)`)
	typeHints      = map[string]string{
		"map[string]FleetHost": "hosts is a mapping of host name to {tier: test|prod, role: ...}",
		"FleetBuilder":         "builder is a mapping like {repos: [nixos-servers]}",
		"FleetDeployers":       "deployers is a mapping like {test: true, admin: true}",
		"[]string":             "write a list, e.g. [a, b]",
	}
	knownFields = map[string]string{
		"Fleet":          "hosts, builder, deployers",
		"FleetHost":      "tier, role, nkey, deploy_subjects, discover_subject",
		"FleetBuilder":   "repos, nkey",
		"FleetDeployers": "test, admin, build_client, mcp",
	}
)

// ParseFleet reads a fleet description strictly (unknown fields are errors)
// and validates every name. name is the file name used in errors.
func ParseFleet(r io.Reader, name string) (*Fleet, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFleetSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > MaxFleetSize {
		return nil, fmt.Errorf("%s: larger than %d bytes; a fleet file is a short list of hosts", name, MaxFleetSize)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: the fleet file is empty; it needs at least `hosts:` (see examples/fleet.yaml)", name)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f Fleet
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %s", name, explainYAMLError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s line %d: a second YAML document; put the whole fleet in one document", name, extra.Line)
	}
	if err := f.validate(root.Content[0]); err != nil {
		return nil, fmt.Errorf("%s %w", name, err)
	}
	return &f, nil
}

func explainYAMLError(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return strings.TrimPrefix(err.Error(), "yaml: ")
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := unknownFieldRe.FindStringSubmatch(e); m != nil {
			msgs = append(msgs, fmt.Sprintf("line %s: unknown field %q; known fields here: %s", m[1], m[2], knownFields[m[3]]))
			continue
		}
		e = strings.ReplaceAll(e, "natsauth.", "")
		for typ, hint := range typeHints {
			if strings.Contains(e, typ) {
				e += " (" + hint + ")"
				break
			}
		}
		msgs = append(msgs, e)
	}
	return strings.Join(msgs, "; ")
}

// lineOf finds the line of the key at path in a mapping tree, or of the
// nearest parent that exists.
func lineOf(n *yaml.Node, path ...string) int {
	line := n.Line
	for _, p := range path {
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == p {
				line = n.Content[i].Line
				n = n.Content[i+1]
				found = true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

func (f *Fleet) validate(root *yaml.Node) error {
	at := func(path ...string) string { return "line " + strconv.Itoa(lineOf(root, path...)) }
	if len(f.Hosts) == 0 && f.Builder == nil {
		return fmt.Errorf("%s: no hosts and no builder: list the listeners under `hosts:` (e.g. `hosts: {myhost: {tier: prod}}`)", at())
	}
	for _, name := range f.HostNames() {
		h := f.Hosts[name]
		if err := protocol.ValidateHostname(name); err != nil {
			return fmt.Errorf("%s: %v", at("hosts", name), err)
		}
		if h.Tier == "" {
			return fmt.Errorf("%s: host %s has no tier: add `tier: test` or `tier: prod`", at("hosts", name), name)
		}
		if err := protocol.ValidateTier(h.Tier); err != nil {
			return fmt.Errorf("%s: host %s: %v", at("hosts", name, "tier"), name, err)
		}
		if h.Role != "" {
			if err := protocol.ValidateRole(h.Role); err != nil {
				return fmt.Errorf("%s: host %s: %v", at("hosts", name, "role"), name, err)
			}
		}
		if h.Nkey != "" {
			if err := ValidatePublicUserKey(h.Nkey); err != nil {
				return fmt.Errorf("%s: host %s: %v", at("hosts", name, "nkey"), name, err)
			}
		}
		if h.DiscoverSubject != "" {
			if err := protocol.ValidateLiteralSubject(h.DiscoverSubject); err != nil {
				return fmt.Errorf("%s: host %s: discover_subject: %v", at("hosts", name, "discover_subject"), name, err)
			}
		}
		subs, err := h.subjects(name)
		if err != nil {
			return fmt.Errorf("%s: host %s: deploy_subjects: %v", at("hosts", name, "deploy_subjects"), name, err)
		}
		if len(subs) == 0 {
			return fmt.Errorf("%s: host %s: deploy_subjects leave no subject to subscribe to", at("hosts", name, "deploy_subjects"), name)
		}
	}
	if b := f.Builder; b != nil {
		if len(b.Repos) == 0 {
			return fmt.Errorf("%s: the builder has no repos: add `repos: [<name>]` with the names from its builder.yaml", at("builder"))
		}
		seen := map[string]bool{}
		for _, r := range b.Repos {
			if err := protocol.ValidateRepo(r); err != nil {
				return fmt.Errorf("%s: builder: %v", at("builder", "repos"), err)
			}
			if seen[r] {
				return fmt.Errorf("%s: builder: repo %s is listed twice", at("builder", "repos"), r)
			}
			seen[r] = true
		}
		if b.Nkey != "" {
			if err := ValidatePublicUserKey(b.Nkey); err != nil {
				return fmt.Errorf("%s: builder: %v", at("builder", "nkey"), err)
			}
		}
	}
	ds := []struct {
		key string
		d   FleetDeployer
	}{{"test", f.Deployers.Test}, {"admin", f.Deployers.Admin}, {"build_client", f.Deployers.BuildClient}, {"mcp", f.Deployers.MCP}}
	for _, x := range ds {
		if x.d.Nkey != "" {
			if err := ValidatePublicUserKey(x.d.Nkey); err != nil {
				return fmt.Errorf("%s: deployers.%s: %v", at("deployers", x.key), x.key, err)
			}
		}
		if x.d.Builds != nil && x.key != "mcp" {
			return fmt.Errorf("%s: deployers.%s: `builds` only applies to mcp", at("deployers", x.key), x.key)
		}
	}
	if f.Deployers.BuildClient.Enabled && f.Builder == nil {
		return fmt.Errorf("%s: deployers.build_client needs a builder: add `builder: {repos: [<name>]}`", at("deployers", "build_client"))
	}
	return nil
}

func (h FleetHost) subjects(name string) ([]string, error) {
	tpl := h.DeploySubjects
	if len(tpl) == 0 {
		tpl = protocol.DefaultDeploySubjects()
	}
	return protocol.ExpandSubjects(tpl, protocol.TemplateVars{Hostname: name, Tier: h.Tier, Role: h.Role})
}

// HostNames returns the host names sorted.
func (f *Fleet) HostNames() []string {
	names := make([]string, 0, len(f.Hosts))
	for n := range f.Hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Credential names used for key files (<name>.nkey, <name>.pub).
const (
	CredBuilder       = "builder"
	CredTestDeployer  = "test-deployer"
	CredAdminDeployer = "admin-deployer"
	CredBuildClient   = "build-client"
	CredMCP           = "mcp"
)

// ListenerCred is the credential name of a host's listener.
func ListenerCred(host string) string { return "listener-" + host }

// Credential is one NKey user the fleet needs, before its key is known.
type Credential struct {
	// Name is the key file name (without .nkey / .pub).
	Name string
	// Comment says what the credential is for.
	Comment string
	// Nkey is the public key given inline in the fleet file, if any.
	Nkey        string
	Permissions protocol.Permissions
}

// Credentials lists every credential of a validated fleet with SPEC's
// permissions, in a stable order: listeners by name, builder, test deployer,
// admin deployer, build client, MCP.
//
// The MCP server's own credential (its --nkey-file) gets the test
// deployer's permissions, plus the build client's when the fleet has a
// builder (its `build` tool, enabled with --enable-builds, uses the same
// connection) unless `mcp: {builds: false}`. Its deploy_admin tool uses a
// separate --admin-nkey-file: the admin deployer.
func (f *Fleet) Credentials() []Credential {
	var out []Credential
	for _, name := range f.HostNames() {
		h := f.Hosts[name]
		subs, _ := h.subjects(name) // validated
		comment := fmt.Sprintf("listener %s, tier %s", name, h.Tier)
		if h.Role != "" {
			comment += ", role " + h.Role
		}
		out = append(out, Credential{
			Name: ListenerCred(name), Comment: comment, Nkey: h.Nkey,
			Permissions: MergePermissions(protocol.ListenerPermissions(name, subs, h.DiscoverSubject), protocol.FleetListenerPermissions(h.Tier, name)),
		})
	}
	var repos []string
	if f.Builder != nil {
		repos = f.Builder.Repos
		out = append(out, Credential{
			Name: CredBuilder, Comment: "builder, repos " + strings.Join(repos, ", "), Nkey: f.Builder.Nkey,
			Permissions: protocol.BuilderPermissions(repos),
		})
	}
	d := f.Deployers
	if d.Test.Enabled {
		out = append(out, Credential{Name: CredTestDeployer, Comment: "test deployer (test tier and discovery)", Nkey: d.Test.Nkey, Permissions: protocol.TestDeployerPermissions()})
	}
	if d.Admin.Enabled {
		out = append(out, Credential{Name: CredAdminDeployer, Comment: "admin deployer (every tier)", Nkey: d.Admin.Nkey, Permissions: protocol.AdminDeployerPermissions()})
	}
	if d.BuildClient.Enabled {
		out = append(out, Credential{Name: CredBuildClient, Comment: "build client, repos " + strings.Join(repos, ", "), Nkey: d.BuildClient.Nkey, Permissions: protocol.BuildClientPermissions(repos)})
	}
	if d.MCP.Enabled {
		p := protocol.TestDeployerPermissions()
		comment := "MCP server (test deployer"
		if len(repos) > 0 && (d.MCP.Builds == nil || *d.MCP.Builds) {
			p = MergePermissions(p, protocol.BuildClientPermissions(repos))
			comment += " + build client"
		}
		out = append(out, Credential{Name: CredMCP, Comment: comment + "; deploy_admin uses the admin deployer)", Nkey: d.MCP.Nkey, Permissions: p})
	}
	return out
}

// MergePermissions returns the union of several permission sets, keeping
// the first occurrence's order.
func MergePermissions(ps ...protocol.Permissions) protocol.Permissions {
	var out protocol.Permissions
	seenPub, seenSub := map[string]bool{}, map[string]bool{}
	for _, p := range ps {
		for _, s := range p.Publish {
			if !seenPub[s] {
				seenPub[s] = true
				out.Publish = append(out.Publish, s)
			}
		}
		for _, s := range p.Subscribe {
			if !seenSub[s] {
				seenSub[s] = true
				out.Subscribe = append(out.Subscribe, s)
			}
		}
	}
	return out
}
