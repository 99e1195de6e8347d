package nixos

import "testing"

// withHealthCheck adds a health check to a listener configuration, so that
// --health-check appears on its command line.
func withHealthCheck(cfg map[string]any) map[string]any {
	cfg["healthChecks"] = []string{"systemctl is-active sshd.service"}
	return cfg
}

// confirmTimeout = 0 turns confirmation off and still reaches the binary,
// whose own default is 120 s.
func TestConfirmTimeoutZeroReachesTheBinary(t *testing.T) {
	t.Parallel()
	_, args := splitExecLine(t, evalUnit(t, "listener", listenerCfg(map[string]any{"confirmTimeout": 0})).ExecStart)
	found := false
	for i := range args[:len(args)-1] {
		if args[i] == "--confirm-timeout" {
			found = args[i+1] == "0"
		}
	}
	if !found {
		t.Fatalf("argv %q lacks --confirm-timeout 0", args)
	}
}
