package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// testCA is a certificate authority made for one test, and the files of
// the server certificates it issues.
type testCA struct {
	cert              *x509.Certificate
	key               *ecdsa.PrivateKey
	pool              *x509.CertPool
	path              string // the CA certificate, PEM
	certPath, keyPath string // the server's, rewritten by each issue
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "taasd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := &testCA{cert: cert, key: key, pool: x509.NewCertPool(), path: filepath.Join(dir, "ca.pem"),
		certPath: filepath.Join(dir, "taasd.crt"), keyPath: filepath.Join(dir, "taasd.key")}
	ca.pool.AddCert(cert)
	writePEM(t, ca.path, "CERTIFICATE", der)
	return ca
}

// issue writes a server certificate for 127.0.0.1 and localhost with serial
// to certPath, and its key to keyPath.
func (ca *testCA) issue(t *testing.T, serial int64) {
	t.Helper()
	ca.issueUntil(t, serial, time.Now().Add(24*time.Hour))
}

// issueUntil is issue with the certificate valid until notAfter.
func (ca *testCA) issueUntil(t *testing.T, serial int64, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "taasd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, ca.keyPath, "EC PRIVATE KEY", kder)
	writePEM(t, ca.certPath, "CERTIFICATE", der)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// client trusts only the CA; every request opens a new connection, so that
// it sees the certificate served now.
func (ca *testCA) client(cfg *tls.Config) *http.Client {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs = ca.pool
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

// TestTLS: with --tls-cert and --tls-key the API is HTTPS only, in modern
// versions and suites only, for Go's client, curl and the openstack CLI
// with the test's CA; SIGHUP serves a new certificate to new connections,
// and a broken one keeps the old.
func TestTLS(t *testing.T) {
	ca := newTestCA(t)
	ca.issue(t, 1001)
	d := testutil.StartTaasd(t, testutil.BuildTaasd(t), "--tls-cert", ca.certPath, "--tls-key", ca.keyPath)
	url := d.URL + "/v2.0/taas/tap_services"

	serial := func(t *testing.T) int64 {
		t.Helper()
		res, err := ca.client(nil).Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("GET %s = %d", url, res.StatusCode)
		}
		return res.TLS.PeerCertificates[0].SerialNumber.Int64()
	}

	t.Run("versions and suites", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			cfg  *tls.Config
			ok   bool
		}{
			{"default (1.3)", &tls.Config{}, true},
			{"1.2 ECDHE AES-GCM", &tls.Config{MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true},
			{"1.2 ECDHE CBC", &tls.Config{MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, false},
			{"1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false},
		} {
			res, err := ca.client(tc.cfg).Get(url)
			if err == nil {
				res.Body.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("%s: GET: %v, want success %v", tc.name, err, tc.ok)
			}
			if err == nil && res.ProtoMajor != 1 {
				t.Errorf("%s: protocol %s, want HTTP/1.1", tc.name, res.Proto)
			}
		}
	})

	t.Run("plain HTTP gets 400", func(t *testing.T) {
		res, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + d.Addr + "/v2.0/taas/tap_services")
		if err != nil {
			t.Fatalf("plain HTTP GET: %v, want 400", err)
		}
		b, _ := io.ReadAll(res.Body) // what was read is checked
		res.Body.Close()
		if res.StatusCode != 400 || !strings.Contains(string(b), "HTTPS") {
			t.Errorf("plain HTTP GET = %d %q, want 400 saying HTTPS", res.StatusCode, b)
		}
		// The port still speaks TLS afterwards.
		if res, err := ca.client(nil).Get(url); err != nil {
			t.Errorf("HTTPS GET after a plain one: %v", err)
		} else {
			res.Body.Close()
		}
	})

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl not installed (.ci/run installs it)")
		}
		out, err := exec.Command("curl", "-sS", "-v", "--cacert", ca.path, "-o", "/dev/null", "-w", "%{http_code}", url).CombinedOutput()
		if err != nil || !strings.HasSuffix(string(out), "200") {
			t.Errorf("curl --cacert: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "SSL connection using") {
				t.Logf("curl: %s", strings.TrimSpace(l))
			}
		}
		if out, err := exec.Command("curl", "-sS", "-o", "/dev/null", url).CombinedOutput(); err == nil {
			t.Errorf("curl without the CA: succeeded, want a certificate error\n%s", out)
		}
	})

	t.Run("openstack CLI", func(t *testing.T) {
		bin, err := exec.LookPath("openstack")
		if err != nil {
			t.Skip("openstack CLI not installed (.ci/run installs it)")
		}
		run := func(args ...string) (string, error) {
			cmd := exec.Command(bin, append([]string{"--os-auth-type", "none", "--os-endpoint", d.URL}, args...)...)
			cmd.Env = cleanOSEnv()
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			return out.String(), err
		}
		if out, err := run("--os-cacert", ca.path, "tap", "service", "list", "-f", "json"); err != nil ||
			strings.TrimSpace(out) != "[]" {
			t.Errorf("openstack --os-cacert tap service list: %v\n%s", err, out)
		}
		if out, err := run("tap", "service", "list"); err == nil || !strings.Contains(out, "CERTIFICATE_VERIFY_FAILED") {
			t.Errorf("openstack without --os-cacert: %v, want a certificate error\n%s", err, out)
		}
	})

	t.Run("SIGHUP reloads the certificate", func(t *testing.T) {
		if got := serial(t); got != 1001 {
			t.Fatalf("serial = %d, want 1001", got)
		}
		ca.issue(t, 1002)
		if err := d.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitSerial(t, serial, 1002)
		// A broken pair: the one served stays, and the log says why.
		if err := os.WriteFile(ca.certPath, []byte("not a certificate"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(d.Logs(), "reload TLS certificate: kept the previous TLS certificate") {
			if time.Now().After(deadline) {
				t.Fatalf("no reload error in the log:\n%s", d.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := serial(t); got != 1002 {
			t.Errorf("after a broken certificate: serial %d, want 1002 kept", got)
		}
	})
}

// waitSerial polls until serial returns want (SIGHUP is asynchronous).
func waitSerial(t *testing.T, serial func(*testing.T) int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := serial(t)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial = %d 10 s after SIGHUP, want %d", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanOSEnv is the environment without OS_ variables, so that the
// caller's cloud settings never reach a test's openstack client.
func cleanOSEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OS_") {
			env = append(env, e)
		}
	}
	return env
}

// TestWarnOpen: noauth, or tokens without TLS, on an address other than
// loopback log a warning at start, and so does an http:// Keystone off
// loopback; loopback, or authentication over TLS, does not.
func TestWarnOpen(t *testing.T) {
	for _, tc := range []struct {
		auth, addr string
		warn       bool
	}{
		{"noauth", "0.0.0.0:9696", true},
		{"noauth", "[::]:9696", true},
		{"noauth", "198.51.100.7:9696", true},
		{"noauth", "127.0.0.1:9696", false},
		{"noauth", "[::1]:9696", false},
		{"token", "0.0.0.0:9696", true},
		{"keystone", "0.0.0.0:9696", true},
		{"token", "127.0.0.1:9696", false},
		{"token tls", "0.0.0.0:9696", false},
		{"keystone tls", "[::]:9696", false},
		{"keystone tls http://keystone.example:5000", "[::]:9696", true},
		{"keystone tls http://127.0.0.1:5000", "[::]:9696", false},
		{"keystone tls http://localhost:5000", "[::]:9696", false},
		{"keystone http://[::1]:5000", "127.0.0.1:9696", false},
		{"keystone http://198.51.100.1:5000", "127.0.0.1:9696", true},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		var cfg config
		fields := strings.Fields(tc.auth)
		cfg.Auth, cfg.Keystone.URL = fields[0], "https://keystone.example:5000"
		for _, f := range fields[1:] {
			if f == "tls" {
				cfg.TLSCert = "/etc/taasd/tls/taasd.crt"
			} else {
				cfg.Keystone.URL = f
			}
		}
		var buf bytes.Buffer
		warnOpen(cfg, addr, slog.New(slog.NewTextHandler(&buf, nil)))
		if got := strings.Contains(buf.String(), "level=WARN"); got != tc.warn {
			t.Errorf("warnOpen(%s, %s) logged %q, want a warning %v", tc.auth, tc.addr, buf.String(), tc.warn)
		}
	}
}

// TestCheckCert: taasd check fails a pair that does not load or is not
// valid now, and warns within 30 days of its expiry.
func TestCheckCert(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	for _, tc := range []struct {
		name     string
		notAfter time.Time
		at       time.Time
		broken   bool
		want     verdict
	}{
		{"valid", now.Add(90 * 24 * time.Hour), now, false, pass},
		{"expires in a week", now.Add(7 * 24 * time.Hour), now, false, warn},
		{"expired", now.Add(24 * time.Hour), now.Add(48 * time.Hour), false, fail},
		{"not yet valid", now.Add(24 * time.Hour), now.Add(-2 * time.Hour), false, fail},
		{"not PEM", now.Add(24 * time.Hour), now, true, fail},
	} {
		ca.issueUntil(t, 7, tc.notAfter)
		if tc.broken {
			if err := os.WriteFile(ca.certPath, []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if r := checkCert(ca.certPath, ca.keyPath, tc.at); r.Verdict != tc.want {
			t.Errorf("%s: checkCert = %v %s, want %v", tc.name, r.Verdict, r.Detail, tc.want)
		}
	}
}

// TestCheckSecretModes: taasd check warns about a TLS key, a tokens file or
// a configuration holding a keystone password that every local user can
// read, and passes them at 0640.
func TestCheckSecretModes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	for _, mode := range []os.FileMode{0o644, 0o640} {
		key := write("taasd.key", "not a key", mode)
		tokens := write("tokens", "t admin admin\n", mode)
		tokenConf := write("token.toml", fmt.Sprintf("tls_cert = %q\ntls_key = %q\n[auth]\nmode = \"token\"\ntokens = %q\n",
			key, key, tokens), 0o640)
		ksConf := write("keystone.toml", "[auth]\nmode = \"keystone\"\nkeystone_url = \"http://127.0.0.1:1\"\n"+
			"username = \"taasd\"\npassword = \"pw\"\nproject_name = \"service\"\n", mode)
		var got []checkResult
		for _, conf := range []string{tokenConf, ksConf} {
			fc, err := loadConfigFile(conf)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range checkAuth(fc) {
				if r.Name == "secret file mode" {
					got = append(got, r)
				}
			}
		}
		want := pass
		if mode&0o004 != 0 {
			want = warn
		}
		if len(got) != 3 {
			t.Errorf("mode %04o: %d secret file checks %+v, want 3 (key, tokens, keystone config)", mode, len(got), got)
		}
		for _, r := range got {
			if r.Verdict != want {
				t.Errorf("mode %04o: %s: %s, want %s", mode, r.Detail, r.Verdict, want)
			}
		}
	}
}
