package protocol

import (
	"strings"
	"testing"
)

func TestFlakeRef(t *testing.T) {
	t.Parallel()
	commit := "0123456789abcdef0123456789abcdef01234567"
	tests := []struct{ url, rev, attr, want string }{
		{"git+https://git.example.com/user/nixos-configs.git", "main", "myhost", "git+https://git.example.com/user/nixos-configs.git?ref=main#myhost"},
		{"git+https://git.example.com/cfg.git?dir=sub", "feature/x", "h", "git+https://git.example.com/cfg.git?dir=sub&ref=feature/x#h"},
		{"git+https://git.example.com/cfg.git?ref=old&dir=sub", "main", "h", "git+https://git.example.com/cfg.git?dir=sub&ref=main#h"},
		{"git+ssh://git@github.com/user/homelab.git", commit, "h", "git+ssh://git@github.com/user/homelab.git?rev=" + commit + "#h"},
		{"git+file:///srv/cfg", "v1.0", "nixosConfigurations.h.config.system.build.toplevel", "git+file:///srv/cfg?ref=v1.0#nixosConfigurations.h.config.system.build.toplevel"},
		{"github:user/repo", "main", "h", "github:user/repo?ref=main#h"},
	}
	for _, tt := range tests {
		got, err := FlakeRef(tt.url, tt.rev, tt.attr)
		if err != nil || got != tt.want {
			t.Errorf("FlakeRef(%q, %q) = %q, %v; want %q", tt.url, tt.rev, got, err, tt.want)
		}
	}
	for _, bad := range []struct{ url, rev string }{
		{"", "main"}, {"no-scheme/path", "main"}, {"git+https://x/y#frag", "main"}, {"git+https://x/y z", "main"},
		{"git+https://x/y", "-o"}, {"git+https://x/y", "main#other"}, {"git+https://x/y", "x?dir=/etc"}, {"git+https://x/y", "ref&rev=0"}, {"git+https://x/y", "a..b"},
	} {
		if got, err := FlakeRef(bad.url, bad.rev, "h"); err == nil {
			t.Errorf("FlakeRef(%q, %q) = %q, want error", bad.url, bad.rev, got)
		}
	}
}

func FuzzFlakeRef(f *testing.F) {
	f.Add("git+https://git.example.com/cfg.git?dir=sub", "main")
	f.Add("git+file:///srv/cfg", "0123456789abcdef0123456789abcdef01234567")
	f.Fuzz(func(t *testing.T, u, rev string) {
		ref, err := FlakeRef(u, rev, "host")
		if err != nil {
			return
		}
		if !strings.HasSuffix(ref, "#host") || strings.Count(ref, "#") != 1 {
			t.Fatalf("FlakeRef(%q, %q) = %q: attribute not ours", u, rev, ref)
		}
		if !strings.Contains(ref, "ref="+rev) && !strings.Contains(ref, "rev="+rev) {
			t.Fatalf("FlakeRef(%q, %q) = %q lacks the revision", u, rev, ref)
		}
		if strings.HasPrefix(ref, "-") {
			t.Fatalf("flake ref %q could be read as an option", ref)
		}
	})
}
