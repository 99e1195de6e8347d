package protocol_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/homelab-deploy/homelab-deploy/internal/testenv"
	"github.com/homelab-deploy/homelab-deploy/protocol"
)

func TestCheckSeedFileRefusesReadableSeeds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := testenv.NewCred(t, dir, "u", protocol.Permissions{})
	if err := protocol.CheckSeedFile(c.SeedFile); err != nil {
		t.Fatalf("0600 seed refused: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o666} {
		if err := os.Chmod(c.SeedFile, mode); err != nil {
			t.Fatal(err)
		}
		err := protocol.CheckSeedFile(c.SeedFile)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+c.SeedFile) {
			t.Errorf("mode %04o: err = %v", mode, err)
		}
	}
	if err := protocol.CheckSeedFile(dir); err == nil {
		t.Error("a directory was accepted as a seed file")
	}
	if err := protocol.CheckSeedFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing seed file was accepted")
	}
}

// The content is judged before the mode: a public key at 0644 is told it is
// a public key, not to chmod it; nothing else is quoted from the file.
func TestCheckSeedFileSaysWhatTheFileIs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := testenv.NewCred(t, dir, "u", protocol.Permissions{})
	seed, err := os.ReadFile(c.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountSeed, _ := account.Seed()
	accountPub, _ := account.PublicKey()
	tests := []struct {
		name, content string
		mode          os.FileMode
		want          []string
	}{
		{"user public key", c.Public + "\n", 0o644, []string{"is a public key (" + c.Public[:8] + "…), not a seed", "starts with SU", "homelab-deploy keygen"}},
		{"account public key", accountPub, 0o600, []string{"is a public key (" + accountPub[:8] + "…) and not of a user"}},
		{"account seed", string(accountSeed), 0o600, []string{"operator or account seed, not a user seed"}},
		{"garbage", "SUnot-really-a-seed-but-secret\n", 0o644, []string{"does not hold an NKey user seed", "starts with SU"}},
		{"empty", "", 0o600, []string{"is empty"}},
		{"loose seed", string(seed), 0o644, []string{"chmod 600"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(path, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			err := protocol.CheckSeedFile(path)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if tt.name != "loose seed" && strings.Contains(msg, "chmod") {
				t.Errorf("error %q tells to chmod a file that is not a seed", msg)
			}
			if strings.Contains(msg, "secret") || strings.Contains(msg, string(accountSeed)) || strings.Contains(msg, strings.TrimSpace(string(seed))) {
				t.Errorf("error %q quotes the file's content", msg)
			}
		})
	}
}

func TestConnectRefusesNonUserSeed(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bad.nkey")
	if err := os.WriteFile(path, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: "nats://127.0.0.1:1", NKeyFile: path})
	if err == nil || !strings.Contains(err.Error(), "SU") || strings.Contains(err.Error(), "%!") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "not a seed") {
		t.Fatal("the seed file's content leaked into the error")
	}
}

func TestParseURLs(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		" nats://a:4222, tls://b:4222 ,,nats://c:80": "nats://a:4222,tls://b:4222,nats://c:80",
		// natscli and nats.go read a URL without scheme as nats://.
		"127.0.0.1:4222":          "nats://127.0.0.1:4222",
		"nats.example.com":        "nats://nats.example.com",
		"a:4222,b:4222":           "nats://a:4222,nats://b:4222",
		"[::1]:4222":              "nats://[::1]:4222",
		"ws://a:80,wss://b:443":   "ws://a:80,wss://b:443",
		"nats://user:pass@a:4222": "nats://user:pass@a:4222",
		"tls://nats.example.com/": "tls://nats.example.com/",
	}
	for in, want := range ok {
		got, err := protocol.ParseURLs(in)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("ParseURLs(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":                       "no NATS URL given",
		",":                      "no NATS URL given",
		"http://a":               "nats://host:port, tls://host:port, ws://host:port or wss://host:port",
		"https://a:4222":         "scheme https://",
		"nats://":                "has no host",
		"a:99999":                "port 99999",
		"a:4222/path":            "path",
		"nats://a:4222,ws://b:1": "mix websocket",
		"nats://a b":             "does not parse",
	}
	for in, want := range bad {
		_, err := protocol.ParseURLs(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURLs(%q) = %v; want an error saying %q", in, err, want)
		}
	}
}

func FuzzParseURLs(f *testing.F) {
	f.Add("nats://a:4222,tls://b:4222")
	f.Add("127.0.0.1:4222")
	f.Add("http://a")
	f.Add("host")
	f.Fuzz(func(t *testing.T, s string) {
		urls, err := protocol.ParseURLs(s)
		if err != nil {
			return
		}
		for _, u := range urls {
			scheme, _, ok := strings.Cut(u, "://")
			if strings.Contains(u, ",") || !ok || !slices.Contains(protocol.URLSchemes, scheme) {
				t.Fatalf("accepted %q", u)
			}
		}
	})
}

// A cluster list whose first URL is dead still connects, and a tls:// URL
// with --nats-ca-file trusts a private CA.
func TestConnectTLSWithCAFileAndSeveralURLs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, serverTLS := selfSignedCA(t, dir)
	cred := testenv.NewCred(t, dir, "u", protocol.Permissions{})
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		TLS: true, TLSConfig: serverTLS, TLSTimeout: 5,
		Nkeys: []*server.NkeyUser{{Nkey: cred.Public}}}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server did not start")
	}
	t.Cleanup(s.Shutdown)
	port := s.Addr().(*net.TCPAddr).Port
	dead := testenv.FreePort(t)
	urls := fmt.Sprintf("tls://127.0.0.1:%d,tls://127.0.0.1:%d", dead, port)

	// Without the CA the server's certificate is not trusted.
	if c, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: urls, NKeyFile: cred.SeedFile}); err == nil {
		c.Close()
		t.Fatal("connected to a server signed by an unknown CA")
	}
	c, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: urls, NKeyFile: cred.SeedFile, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.IsConnected() || !strings.Contains(c.ConnectedUrl(), fmt.Sprint(port)) {
		t.Fatalf("connected to %q", c.ConnectedUrl())
	}
}

// selfSignedCA writes a CA certificate to dir and returns its path and a
// server TLS config with a certificate for 127.0.0.1 signed by it.
func selfSignedCA(t *testing.T, dir string) (string, *tls.Config) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}, MinVersion: tls.VersionTLS12}
}

// chanHandler sends every log record to a channel, so a test waits for the
// record it expects instead of sleeping.
type chanHandler chan slog.Record

func (h chanHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h chanHandler) Handle(_ context.Context, r slog.Record) error {
	h <- r
	return nil
}
func (h chanHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h chanHandler) WithGroup(string) slog.Handler      { return h }

// nextLog waits for a record whose message contains msg and returns it,
// failing the test after d; records before it are returned in skipped.
func nextLog(t *testing.T, logs <-chan slog.Record, msg string, d time.Duration) (rec slog.Record, skipped []string) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case r := <-logs:
			if strings.Contains(r.Message, msg) {
				return r, skipped
			}
			skipped = append(skipped, r.Message)
		case <-timeout:
			t.Fatalf("no log %q within %s; got %q", msg, d, skipped)
		}
	}
}

// A daemon (Wait) started before its NATS server warns at once that the
// server is not reachable, warns again while it stays so, and logs when it
// finally connects.
func TestConnectWaitWarnsUntilServerIsUp(t *testing.T) {
	t.Parallel()
	cred := testenv.NewCred(t, t.TempDir(), "u", protocol.Permissions{})
	port := testenv.FreePort(t)
	logs := make(chan slog.Record, 1000)
	c, err := protocol.Connect(context.Background(), protocol.ConnectOptions{
		URLs: fmt.Sprintf("127.0.0.1:%d", port), NKeyFile: cred.SeedFile, Wait: true, Logger: slog.New(chanHandler(logs)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The first warning comes before Connect returns, so before a daemon
	// could log that it is ready.
	select {
	case r := <-logs:
		if r.Level != slog.LevelWarn || !strings.Contains(r.Message, "not reachable yet") {
			t.Fatalf("first log is %v %q, want the not-reachable warning", r.Level, r.Message)
		}
	default:
		t.Fatal("Connect returned without warning that no server is reachable")
	}
	r, _ := nextLog(t, logs, "still not reachable", 10*time.Second)
	if r.Level != slog.LevelWarn {
		t.Errorf("repeated warning has level %v", r.Level)
	}
	attrs := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	if attrs["down_for"] == "" || attrs["next_warning_in"] != "2s" || !strings.Contains(attrs["servers"], fmt.Sprint(port)) {
		t.Errorf("repeated warning attrs %v: want down_for, next_warning_in=2s and the server", attrs)
	}

	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		Nkeys: []*server.NkeyUser{{Nkey: cred.Public}}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	r, _ = nextLog(t, logs, "NATS connected", 15*time.Second)
	if r.Level != slog.LevelInfo {
		t.Errorf("connected is logged at %v, want info", r.Level)
	}
	if !c.IsConnected() {
		t.Error("not connected after logging so")
	}
}

// A one-shot command (no Wait) fails at once instead of warning.
func TestConnectWithoutWaitFailsFast(t *testing.T) {
	t.Parallel()
	cred := testenv.NewCred(t, t.TempDir(), "u", protocol.Permissions{})
	logs := make(chan slog.Record, 100)
	_, err := protocol.Connect(context.Background(), protocol.ConnectOptions{
		URLs: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), NKeyFile: cred.SeedFile, Logger: slog.New(chanHandler(logs)),
	})
	if err == nil || !strings.Contains(err.Error(), "connect to NATS at nats://127.0.0.1:") {
		t.Fatalf("err = %v, want a connect error naming the URL", err)
	}
	select {
	case r := <-logs:
		if strings.Contains(r.Message, "reachable") {
			t.Errorf("a one-shot connection logged %q", r.Message)
		}
	default:
	}
}

// A refusal on a fleet registry subject is the registry code's to report
// (a tier the credential may not read is left out with a note, a listener
// warns that its entry is not written): the connection logs it at debug.
// Any other refusal is logged as an error naming the subject.
func TestRegistryRefusalsAreNotLoggedAsErrors(t *testing.T) {
	t.Parallel()
	srv := testenv.StartNATSWith(t, nil, testenv.User{Name: "narrow", Permissions: testenv.Ptr(protocol.Permissions{
		Publish: []string{"allowed.>"}, Subscribe: []string{"allowed.>"}})})
	var logs testenv.Buffer
	c, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: srv.URL, NKeyFile: srv.Cred("narrow").SeedFile,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, subject := range []string{protocol.FleetReplyPrefix + "read.prod.X.*", protocol.DeployResponsesPrefix + "Y"} {
		if _, err := c.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		if err := c.ConfirmSubscription(subject); err == nil {
			t.Fatalf("subscription to %s: the server's refusal was not reported", subject)
		}
	}
	if err := c.Publish(protocol.FleetStreamInfoSubject, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the asynchronous handler
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, protocol.DeployResponsesPrefix+"Y") {
		t.Errorf("the refused deploy reply subscription was not logged as an error:\n%s", out)
	}
	if strings.Contains(out, "fleet.") || strings.Contains(out, "$JS.API") {
		t.Errorf("a fleet registry refusal was logged above debug:\n%s", out)
	}
}
