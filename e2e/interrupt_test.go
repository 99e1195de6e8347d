package e2e

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// TestCtrlCDuringDeploy: SIGINT while a host is still deploying exits 130,
// says which host is still running and that its rebuild goes on, and
// --json counts it as unfinished, not failed. The rebuild does go on: the
// listener later reports it completed.
func TestCtrlCDuringDeploy(t *testing.T) {
	f := startRelFleet(t, holdBody)
	dir := f.standIn

	cmd := exec.Command(binary, "deploy", "deploy.test.testhost1", "--json")
	cmd.Env = f.deployEnv("")
	var stdout bytes.Buffer
	stderr := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "started"), 30*time.Second)
	// started is written by nixos-rebuild itself; the deployer has the
	// "started" status once the listener published it, which it does
	// before running the command.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "started") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if code != 130 {
		t.Fatalf("exit %d (%v), want 130\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr)
	}
	var res struct {
		Success    bool   `json:"success"`
		Message    string `json:"message"`
		Failed     int    `json:"failed"`
		Unfinished int    `json:"unfinished"`
		Hosts      []struct {
			Hostname string `json:"hostname"`
			Status   string `json:"status"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout.String())
	}
	if res.Success || res.Failed != 0 || res.Unfinished != 1 || len(res.Hosts) != 1 || res.Hosts[0].Status != "started" {
		t.Errorf("--json after Ctrl-C: %+v", res)
	}
	for _, want := range []string{"interrupted", "testhost1 (started)", "goes on on the host", "list-hosts"} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("message %q does not say %q", res.Message, want)
		}
	}

	// The rebuild was not stopped by the deployer's exit.
	touch(t, filepath.Join(dir, "release"))
	waitFile(t, filepath.Join(dir, "finished"), 30*time.Second)
	f.listener.WaitFor(t, "completed", 30*time.Second)
}

// TestJSONOnErrors: with --json, every command prints one JSON document on
// stdout, errors included, with the exit code inside.
func TestJSONOnErrors(t *testing.T) {
	dir := t.TempDir()
	seed := testenv.NewCred(t, dir, "deployer", protocol.TestDeployerPermissions()).SeedFile
	// Nothing listens on this port: connecting fails.
	env := append(baseEnv(), "HOMELAB_DEPLOY_NATS_URL=nats://127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)), "HOMELAB_DEPLOY_NKEY_FILE="+seed)
	cases := []struct {
		args []string
		code int
	}{
		{[]string{"deploy", "deploy.test.h1", "--json", "--branch", "a..b"}, 2},
		{[]string{"deploy", "deploy.test.h1", "--json", "--nkey-file", filepath.Join(dir, "missing.nkey")}, 2},
		{[]string{"build", "fleet", "--json"}, 2},
		{[]string{"list-hosts", "--json", "--tier", "staging"}, 2},
		{[]string{"deploy", "deploy.test.h1", "--json"}, 1},
		{[]string{"list-hosts", "--json"}, 1},
		{[]string{"build", "fleet", "h1", "--json"}, 1},
	}
	for _, c := range cases {
		r := run(t, env, c.args...)
		var doc struct {
			Error    string `json:"error"`
			ExitCode int    `json:"exit_code"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil || doc.Error == "" || doc.ExitCode != c.code || r.Code != c.code {
			t.Errorf("%q: exit %d, stdout %q (%v); want exit %d and {\"error\": ..., \"exit_code\": %d}", c.args, r.Code, r.Stdout, err, c.code, c.code)
		}
	}
}
