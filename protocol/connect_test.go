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
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

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

func TestConnectRefusesNonUserSeed(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bad.nkey")
	if err := os.WriteFile(path, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := protocol.Connect(context.Background(), protocol.ConnectOptions{URLs: "nats://127.0.0.1:1", NKeyFile: path})
	if err == nil || !strings.Contains(err.Error(), "SU") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "not a seed") {
		t.Fatal("the seed file's content leaked into the error")
	}
}

func TestParseURLs(t *testing.T) {
	t.Parallel()
	got, err := protocol.ParseURLs(" nats://a:4222, tls://b:4222 ,,ws://c:80")
	if err != nil || strings.Join(got, ",") != "nats://a:4222,tls://b:4222,ws://c:80" {
		t.Fatalf("%q %v", got, err)
	}
	for _, bad := range []string{"", ",", "http://a", "a:4222", "nats://"} {
		if _, err := protocol.ParseURLs(bad); err == nil {
			t.Errorf("ParseURLs(%q) accepted", bad)
		}
	}
}

func FuzzParseURLs(f *testing.F) {
	f.Add("nats://a:4222,tls://b:4222")
	f.Fuzz(func(t *testing.T, s string) {
		urls, err := protocol.ParseURLs(s)
		if err != nil {
			return
		}
		for _, u := range urls {
			if strings.Contains(u, ",") || !strings.Contains(u, "://") {
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
	dead := freePort(t)
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

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
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
