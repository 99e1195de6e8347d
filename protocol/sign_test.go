package protocol

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

const signSubject = "deploy.prod.dns1"

var (
	signBody = []byte(`{"id":"abc","action":"switch","revision":"main","reply_to":"deploy.responses.abc"}`)
	signNow  = time.Unix(1_800_000_000, 0)
)

func newUser(t testing.TB) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

func trust(keys ...string) TrustedKeys {
	t := TrustedKeys{}
	for _, k := range keys {
		t[k] = struct{}{}
	}
	return t
}

func cloneHeader(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// resign signs the canonical bytes of other fields with kp, as a holder of
// a key would when it forges headers by hand.
func resign(t testing.TB, kp nkeys.KeyPair, subject string, issued, expires int64, body []byte) nats.Header {
	t.Helper()
	pub, _ := kp.PublicKey()
	sig, err := kp.Sign(signedBytes(subject, issued, expires, body))
	if err != nil {
		t.Fatal(err)
	}
	return nats.Header{
		HeaderKey: {pub}, HeaderSignature: {sigEncoding.EncodeToString(sig)},
		HeaderIssued: {strconv.FormatInt(issued, 10)}, HeaderExpires: {strconv.FormatInt(expires, 10)},
	}
}

func TestSignThenVerify(t *testing.T) {
	t.Parallel()
	kp, pub := newUser(t)
	h, err := Sign(kp, signSubject, signBody, signNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Get(HeaderKey); got != pub {
		t.Fatalf("%s = %q, want %q", HeaderKey, got, pub)
	}
	if got, want := h.Get(HeaderExpires), strconv.FormatInt(signNow.Add(SignatureLifetime).Unix(), 10); got != want {
		t.Fatalf("%s = %q, want %q (issued + %s)", HeaderExpires, got, want, SignatureLifetime)
	}
	for name, trusted := range map[string]TrustedKeys{"no trusted keys": nil, "trusted": trust(pub)} {
		caller, err := Verify(h, signSubject, signBody, signNow, trusted)
		if err != nil || caller != pub {
			t.Errorf("%s: Verify = %q, %v; want %q", name, caller, err, pub)
		}
	}
	// Clock skew: a verifier 30 s behind the signer, or one that checks
	// 30 s after the expiry, still accepts.
	for _, now := range []time.Time{signNow.Add(-ClockSkew), signNow.Add(SignatureLifetime + ClockSkew)} {
		if _, err := Verify(h, signSubject, signBody, now, nil); err != nil {
			t.Errorf("Verify at %s: %v, want accepted within the skew", now.Sub(signNow), err)
		}
	}
}

// Signing must leave the key pair usable: the connection keeps
// authenticating with it on every reconnect.
func TestSignLeavesTheKeyPairIntact(t *testing.T) {
	t.Parallel()
	kp, pub := newUser(t)
	for range 3 {
		h, err := Sign(kp, signSubject, signBody, signNow)
		if err != nil {
			t.Fatal(err)
		}
		if caller, err := Verify(h, signSubject, signBody, signNow, nil); err != nil || caller != pub {
			t.Fatalf("Verify = %q, %v", caller, err)
		}
	}
	nonce := []byte("nonce")
	sig, err := kp.Sign(nonce)
	if err != nil || kp.Verify(nonce, sig) != nil {
		t.Fatalf("the key pair no longer signs: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	kp, pub := newUser(t)
	_, other := newUser(t)
	h, err := Sign(kp, signSubject, signBody, signNow)
	if err != nil {
		t.Fatal(err)
	}
	issued := signNow.Unix()
	tampered := []byte(strings.Replace(string(signBody), "main", "evil", 1))
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	seed, _ := kp.Seed()
	with := func(name, value string) nats.Header {
		c := cloneHeader(h)
		c[name] = []string{value}
		return c
	}
	without := func(name string) nats.Header {
		c := cloneHeader(h)
		delete(c, name)
		return c
	}
	cases := []struct {
		name    string
		header  nats.Header
		subject string
		body    []byte
		now     time.Time
		trusted TrustedKeys
		want    string // in the reason
	}{
		{"tampered body", h, signSubject, tampered, signNow, nil, "does not match the request"},
		{"body with a trailing space", h, signSubject, append(append([]byte(nil), signBody...), ' '), signNow, nil, "does not match"},
		{"other subject", h, "deploy.prod.all", signBody, signNow, nil, "signed for another subject than deploy.prod.all"},
		{"expired", h, signSubject, signBody, signNow.Add(SignatureLifetime + ClockSkew + time.Second), nil, "expired at"},
		{"issued in the future beyond the skew", h, signSubject, signBody, signNow.Add(-ClockSkew - time.Second), nil, "ahead of this host's clock"},
		{"signed by a key that is not trusted", h, signSubject, signBody, signNow, trust(other), "signed by " + pub + ", which is not a trusted deployer"},
		{"unsigned with trusted keys", nil, signSubject, signBody, signNow, trust(pub), "not signed"},
		{"key swapped for another user's", with(HeaderKey, other), signSubject, signBody, signNow, nil, "does not match"},
		{"key of an account", with(HeaderKey, accountPub), signSubject, signBody, signNow, nil, "not of a user"},
		{"a seed as key", with(HeaderKey, string(seed)), signSubject, signBody, signNow, nil, "like a seed"},
		{"key in a longer form nkeys also decodes", with(HeaderKey, pub+"A"), signSubject, signBody, signNow, nil, "57-character value"},
		{"issued time moved", with(HeaderIssued, strconv.FormatInt(issued-1, 10)), signSubject, signBody, signNow, nil, "does not match"},
		{"expiry extended", with(HeaderExpires, strconv.FormatInt(issued+60*60, 10)), signSubject, signBody, signNow, nil, "does not match"},
		{"lifetime too long though validly signed", resign(t, kp, signSubject, issued, issued+int64(MaxSignatureLifetime/time.Second)+1, signBody), signSubject, signBody, signNow, nil, "must expire"},
		{"expiry before issue", resign(t, kp, signSubject, issued, issued-1, signBody), signSubject, signBody, signNow, nil, "must expire"},
		{"missing expiry", without(HeaderExpires), signSubject, signBody, signNow, nil, "has no " + HeaderExpires},
		{"missing signature", without(HeaderSignature), signSubject, signBody, signNow, nil, "has no " + HeaderSignature},
		{"signature of the wrong length", with(HeaderSignature, "AAAA"), signSubject, signBody, signNow, nil, "86"},
		{"signature not base64url", with(HeaderSignature, strings.Repeat("+", encodedSigLen)), signSubject, signBody, signNow, nil, "not an Ed25519 signature"},
		{"time with a sign", with(HeaderIssued, "+"+strconv.FormatInt(issued, 10)), signSubject, signBody, signNow, nil, "Unix time"},
		{"time with a leading zero", with(HeaderIssued, "0"+strconv.FormatInt(issued, 10)), signSubject, signBody, signNow, nil, "Unix time"},
		{"header twice", func() nats.Header { c := cloneHeader(h); c[HeaderKey] = append(c[HeaderKey], other); return c }(), signSubject, signBody, signNow, nil, "appears 2 times"},
		{"header in another case", func() nats.Header {
			c := cloneHeader(h)
			c["homelab-deploy-key"] = c[HeaderKey]
			delete(c, HeaderKey)
			return c
		}(), signSubject, signBody, signNow, nil, "only in case"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			caller, err := Verify(c.header, c.subject, c.body, c.now, c.trusted)
			if err == nil {
				t.Fatalf("Verify = %q, nil; want refused", caller)
			}
			if caller != "" {
				t.Errorf("a refused request names caller %q", caller)
			}
			var ae *AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("error %T, want *AuthError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("reason %q, want it to mention %q", err, c.want)
			}
			if strings.Contains(err.Error(), string(seed)) || strings.Contains(err.Error(), string(seed[:20])) {
				t.Errorf("reason quotes the seed: %q", err)
			}
		})
	}
}

// Without trusted keys an unsigned request is accepted (older deployers)
// and names no caller; with them it is refused as unsigned.
func TestUnsignedRequests(t *testing.T) {
	t.Parallel()
	_, pub := newUser(t)
	for _, h := range []nats.Header{nil, {}, {"Other": {"x"}}} {
		caller, err := Verify(h, signSubject, signBody, signNow, nil)
		if err != nil || caller != "" {
			t.Errorf("unsigned %v without trusted keys: %q, %v; want accepted", h, caller, err)
		}
		_, err = Verify(h, signSubject, signBody, signNow, trust(pub))
		if !errors.Is(err, ErrUnsigned) {
			t.Errorf("unsigned %v with trusted keys: %v, want ErrUnsigned", h, err)
		}
	}
}

func TestParseTrustedKeys(t *testing.T) {
	t.Parallel()
	kp, pub := newUser(t)
	seed, _ := kp.Seed()
	got, err := ParseTrustedKeys([]string{pub, " " + pub + "\n"})
	if err != nil || len(got) != 1 {
		t.Fatalf("ParseTrustedKeys = %v, %v", got, err)
	}
	if keys := got.Keys(); len(keys) != 1 || keys[0] != pub {
		t.Fatalf("Keys = %q", keys)
	}
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	for _, bad := range []string{"", string(seed), accountPub, pub[:55], pub + "A", strings.ToLower(pub), "U" + strings.Repeat("A", 55)} {
		_, err := ParseTrustedKeys([]string{pub, bad})
		if err == nil {
			t.Errorf("ParseTrustedKeys(%.10q) = nil, want an error", bad)
			continue
		}
		if !strings.Contains(err.Error(), "keygen") {
			t.Errorf("error %q does not say where a public key comes from", err)
		}
		if len(bad) > 20 && strings.Contains(err.Error(), string(seed[:20])) {
			t.Errorf("error quotes the seed: %q", err)
		}
	}
	if empty, err := ParseTrustedKeys(nil); err != nil || len(empty) != 0 {
		t.Errorf("ParseTrustedKeys(nil) = %v, %v", empty, err)
	}
}

// FuzzParseSignature: any header values either parse into a signature
// whose fields print back to exactly the values given, or are refused;
// nothing panics, and Verify agrees with ParseSignature on refusal.
func FuzzParseSignature(f *testing.F) {
	kp, pub := newUser(f)
	h, _ := Sign(kp, signSubject, signBody, signNow)
	f.Add(pub, h.Get(HeaderSignature), h.Get(HeaderIssued), h.Get(HeaderExpires), "", signBody)
	f.Add(pub, h.Get(HeaderSignature), "0", "1", "homelab-deploy-key", signBody)
	f.Add("SUAB", strings.Repeat("A", encodedSigLen), "1", "99999999999999", "", []byte(nil))
	f.Add("", "", "", "", "Homelab-Deploy-Expires", []byte("{}"))
	f.Add(pub, strings.Repeat("_", encodedSigLen-1)+"A", "１", "2", "X", []byte("x"))
	f.Fuzz(func(t *testing.T, key, sig, issued, expires, extra string, body []byte) {
		hdr := nats.Header{HeaderKey: {key}, HeaderSignature: {sig}, HeaderIssued: {issued}, HeaderExpires: {expires}}
		if extra != "" {
			hdr[extra] = []string{key}
		}
		s, err := ParseSignature(hdr)
		caller, verr := Verify(hdr, signSubject, body, signNow, nil)
		if err != nil {
			if verr == nil {
				t.Fatalf("ParseSignature refused (%v) but Verify accepted %q", err, caller)
			}
			return
		}
		if s.Key != key || sigEncoding.EncodeToString(s.Sig) != sig ||
			strconv.FormatInt(s.Issued, 10) != issued || strconv.FormatInt(s.Expires, 10) != expires {
			t.Fatalf("parsed %+v does not print back to %q %q %q %q", s, key, sig, issued, expires)
		}
		if !nkeys.IsValidPublicUserKey(s.Key) || len(s.Sig) != signatureLen {
			t.Fatalf("parsed an invalid key or signature: %+v", s)
		}
		if verr == nil && caller != key {
			t.Fatalf("Verify accepted caller %q for key %q", caller, key)
		}
	})
}

// FuzzVerify: a request signed for one subject and body verifies only for
// exactly that subject and body.
func FuzzVerify(f *testing.F) {
	kp, pub := newUser(f)
	f.Add(signSubject, signBody, signSubject, signBody)
	f.Add(signSubject, signBody, signSubject+"x", signBody)
	f.Add("a\nb", []byte("c"), "a", []byte("b\nc"))
	f.Add("deploy.test.all", []byte(""), "deploy.test.all", []byte(" "))
	f.Fuzz(func(t *testing.T, subject string, body []byte, otherSubject string, otherBody []byte) {
		h, err := Sign(kp, subject, body, signNow)
		if err != nil {
			t.Fatal(err)
		}
		caller, err := Verify(h, otherSubject, otherBody, signNow, trust(pub))
		same := subject == otherSubject && string(body) == string(otherBody)
		if same && (err != nil || caller != pub) {
			t.Fatalf("own signature refused: %v", err)
		}
		// Subjects never contain a newline; only then is the encoding
		// unambiguous, so only then must a different request be refused.
		if !same && !strings.Contains(subject+otherSubject, "\n") && err == nil {
			t.Fatalf("signature for %q %q accepted for %q %q", subject, body, otherSubject, otherBody)
		}
	})
}

// BenchmarkSign and BenchmarkVerify measure what signing adds to every
// request (the deployer) and to every request a listener or builder
// takes.
func BenchmarkSign(b *testing.B) {
	kp, _ := newUser(b)
	s, err := newRequestSigner(kp) // once per connection, as Connect does
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s.sign(signSubject, signBody, signNow)
	}
}

func BenchmarkVerify(b *testing.B) {
	kp, pub := newUser(b)
	h, _ := Sign(kp, signSubject, signBody, signNow)
	trusted := trust(pub)
	for b.Loop() {
		if _, err := Verify(h, signSubject, signBody, signNow, trusted); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSignatureHeaderSize: what the headers add to a request on the wire
// (NATS header framing included), so the cost stays visible.
func TestSignatureHeaderSize(t *testing.T) {
	t.Parallel()
	kp, _ := newUser(t)
	h, err := Sign(kp, signSubject, signBody, signNow)
	if err != nil {
		t.Fatal(err)
	}
	size := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			size += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	if size > 300 {
		t.Errorf("signature headers take %d bytes, more than the 300 expected", size)
	}
	t.Logf("signature headers: %d bytes per request", size)
}
