package nixos

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// The module refuses at evaluation what the binary would refuse at start.
// helpers.nix re-implements protocol's checks in the Nix language, so these
// tests run both over the same inputs and require the same verdict.

var natsURLInputs = []string{
	"nats://nats.example.com:4222",
	"nats.example.com:4222",
	"nats.example.com",
	"tls://n1.example.com:4222,tls://n2.example.com:4222",
	" nats://a:4222 , nats://b:4222 ",
	"NATS://nats.example.com:4222",
	"TLS://h:4222",
	"ws://h:8080,wss://h2:443",
	"nats://user:pass@h:4222",
	"nats://[::1]:4222",
	"[::1]:4222",
	"nats://h:",
	"nats://h/",
	"nats://h:04222",
	"127.0.0.1:4222",
	"http://nats.example.com:4222",
	"https://nats.example.com",
	"nats://",
	"nats://:4222",
	"nats://[]:4222",
	"nats://h:0",
	"nats://h:65536",
	"nats://h:99999999",
	"nats://h:abc",
	"nats://h:4222/path",
	"nats://h:4222?x=1",
	"nats://h:4222#frag",
	"nats://h:4222,http://g:4222",
	"ws://h:8080,nats://g:4222",
	"",
	" , ",
	"nats://h o:4222",
	"nats://h|o:4222",
}

var flakeURLInputs = []string{
	"git+https://git.example.com/user/nixos-configs.git",
	"git+ssh://git@github.com/you/homelab.git",
	"git+file:///etc/nixos",
	"path:/etc/nixos",
	"github:you/nixos-configs",
	"git+https://git.example.com/x.git?dir=hosts",
	"git+https://h:8443/x.git",
	"git+https://user:tok@h/x.git",
	"/etc/nixos",
	"./nixos",
	"etc/nixos",
	"",
	"git+https://h/x.git#web1",
	"git+https://h/x y.git",
	"git+https://h/x.git\n",
	":foo",
	"git+https://h:abc/x.git",
	"1git+https://h/x",
	"git+https://h/x\x01",
}

func TestNatsURLMirrorsBinary(t *testing.T) {
	t.Parallel()
	var got []*string
	in, _ := json.Marshal(natsURLInputs)
	nixEvalJSON(t, &got, "-E", `let h = import ./helpers.nix; in map h.natsUrlProblem (builtins.fromJSON ''`+string(in)+`'')`)
	for i, s := range natsURLInputs {
		_, goErr := protocol.ParseURLs(s)
		if (goErr == nil) != (got[i] == nil) {
			t.Errorf("natsUrl %q: binary says %v, module says %v", s, goErr, verdict(got[i]))
		}
	}
}

func TestFlakeURLMirrorsBinary(t *testing.T) {
	t.Parallel()
	var got []*string
	in, _ := json.Marshal(flakeURLInputs)
	// JSON in an indented Nix string: escape the one sequence it interprets.
	nixEvalJSON(t, &got, "-E", `let h = import ./helpers.nix; in map h.flakeUrlProblem (builtins.fromJSON ''`+
		strings.ReplaceAll(string(in), "${", "''${")+`'')`)
	for i, s := range flakeURLInputs {
		goErr := protocol.ValidateFlakeURL(s)
		if (goErr == nil) != (got[i] == nil) {
			t.Errorf("flakeUrl %q: binary says %v, module says %v", s, goErr, verdict(got[i]))
		}
	}
}

func verdict(s *string) string {
	if s == nil {
		return "<accepted>"
	}
	return *s
}
