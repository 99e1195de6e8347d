package mcpserver

import (
	"errors"
	"strings"
	"testing"
)

func TestListenAddr(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"8080": "127.0.0.1:8080", ":8080": "127.0.0.1:8080", "0.0.0.0:9": "0.0.0.0:9",
		"localhost:1": "localhost:1", "[::1]:80": "[::1]:80",
	} {
		if got, err := ListenAddr(in); err != nil || got != want {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"127.0.0.1:", "a:b:c"} {
		if got, err := ListenAddr(in); err == nil {
			t.Errorf("ListenAddr(%q) = %q, want an error", in, got)
		}
	}
}

func TestListenRefusesWithoutAToken(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0", "0.0.0.0:0"} {
		ln, err := Listen(addr, "")
		if err == nil {
			_ = ln.Close()
			t.Errorf("Listen(%q) without a token bound %s", addr, ln.Addr())
			continue
		}
		if !errors.Is(err, ErrNeedsToken) || !strings.Contains(err.Error(), "head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE") || !strings.Contains(err.Error(), "stdio") {
			t.Errorf("Listen(%q) without a token: %v", addr, err)
		}
	}
	ln, err := Listen("127.0.0.1:0", "0123456789abcdef")
	if err != nil {
		t.Fatalf("Listen with a token: %v", err)
	}
	_ = ln.Close()
}
