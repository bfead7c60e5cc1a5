package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestKeystoneCLI drives taasd in keystone mode, over HTTPS, with the real
// openstack client and ordinary password credentials against a real
// Keystone (testutil.StartKeystone): two projects see only their own tap
// services, a reader creates none, a revoked token is refused once the
// cache forgets it, a garbage token gets 401, with taasd out of the
// catalog a token issued with the password and --os-endpoint still drive
// it (and no endpoint override does), and Keystone stopped gets 503.
// Each client call costs seconds (Python, then Keystone twice), so they
// are few; the subtests share one Keystone and run in order.
func TestKeystoneCLI(t *testing.T) {
	bin, err := exec.LookPath("openstack")
	if err != nil {
		testutil.SkipUnlessRequired(t, "openstack CLI not installed (apt-get install python3-openstackclient python3-neutron-taas; .ci/run does)")
	}
	// taasd is the catalog's network endpoint, as an operator registers
	// it: with password auth, Debian 12's client reaches the tap commands
	// only through the catalog (see "without a catalog entry" below).
	addr := testutil.FreeLoopbackAddr(t)
	k := testutil.StartKeystone(t, "network", "https://"+addr)
	ca := newTestCA(t)
	ca.issue(t, 2001)
	conf := filepath.Join(t.TempDir(), "taasd.toml")
	text := fmt.Sprintf(`[auth]
mode = "keystone"
keystone_url = "%s/v3"
username = "taasd"
password = %q
project_name = "service"
cache_seconds = 2
# The test Keystone answers in seconds on a loaded machine.
timeout_seconds = 30
`, k.URL, testutil.KeystonePassword)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	taasBin := testutil.BuildTaasd(t)
	if out, err := exec.Command(taasBin, "check", "--config", conf).CombinedOutput(); !strings.Contains(string(out), "PASS  keystone") {
		t.Errorf("taasd check: %v, want PASS keystone\n%s", err, out)
	}
	d := testutil.StartTaasd(t, taasBin, "--listen", addr, "--config", conf, "--tls-cert", ca.certPath, "--tls-key", ca.keyPath)
	if logs := d.Logs(); !strings.Contains(logs, "auth keystone") || strings.Contains(logs, testutil.KeystonePassword) {
		t.Errorf("start log: want the keystone line, never the password:\n%s", logs)
	}
	hc := ca.client(nil)

	// run runs openstack with args, and env as its only OS_ variables; it
	// returns stdout, and stderr too when the client fails.
	run := func(env []string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--os-cacert", ca.path}, args...)...)
		cmd.Env = append(cleanOSEnv(), env...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if err != nil {
			return out.String() + errOut.String(), err
		}
		return out.String(), nil
	}
	// cli runs openstack as user of project, with password credentials.
	cli := func(user, project string, args ...string) (string, error) {
		t.Helper()
		return run(nil, append([]string{"--os-auth-url", k.URL + "/v3", "--os-project-name", project,
			"--os-username", user, "--os-password", testutil.KeystonePassword, "--os-user-domain-name", "Default",
			"--os-project-domain-name", "Default"}, args...)...)
	}
	// port creates a port in project with a token of user, over the API.
	port := func(user, project, name string) string {
		t.Helper()
		var p struct{ Port struct{ ID string } }
		callJSON(t, hc, "POST", d.URL+"/v2.0/ports", k.Token(t, user, project),
			fmt.Sprintf(`{"port": {"name": %q, "network_id": "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10"}}`, name), 201, &p)
		return p.Port.ID
	}

	t.Run("two projects isolated", func(t *testing.T) {
		for _, u := range []struct{ user, project, svc string }{{"alice", "alpha", "a-svc"}, {"bob", "beta", "b-svc"}} {
			id := port(u.user, u.project, u.svc+"-port")
			out, err := cli(u.user, u.project, "tap", "service", "create", "--name", u.svc, "--port", id, "-f", "json")
			var svc map[string]any
			if err != nil || json.Unmarshal([]byte(out), &svc) != nil || svc["Tenant"] != k.Projects[u.project] {
				t.Fatalf("%s: tap service create: %v, want Tenant %s\n%s", u.user, err, k.Projects[u.project], out)
			}
		}
		for _, u := range []struct{ user, project, want, notWant string }{{"alice", "alpha", "a-svc", "b-svc"},
			{"bob", "beta", "b-svc", "a-svc"}} {
			out, err := cli(u.user, u.project, "tap", "service", "list", "-f", "value", "-c", "Name")
			if err != nil || strings.TrimSpace(out) != u.want {
				t.Errorf("%s: tap service list: %v: %q, want only %s", u.user, err, out, u.want)
			}
		}
	})

	t.Run("reader lists, creates nothing", func(t *testing.T) {
		out, err := cli("rita", "alpha", "tap", "service", "list", "-f", "json")
		if err != nil {
			t.Errorf("reader: tap service list: %v\n%s", err, out)
		}
		out, err = cli("rita", "alpha", "tap", "service", "create", "--name", "r-svc", "--port", port("alice", "alpha", "r-port"))
		if err == nil || !strings.Contains(out, "rule:create_tap_service is disallowed by policy") {
			t.Errorf("reader: tap service create: %v, want the policy refusal\n%s", err, out)
		}
	})

	t.Run("garbage token", func(t *testing.T) {
		body := callJSON(t, hc, "GET", d.URL+"/v2.0/taas/tap_services", "gAAAAAB-garbage", "", 401, nil)
		if !strings.Contains(body, `"type":"HTTPUnauthorized"`) {
			t.Errorf("garbage token: %s, want a NeutronError HTTPUnauthorized", body)
		}
	})

	t.Run("revoked token", func(t *testing.T) {
		tok := k.Token(t, "alice", "alpha")
		callJSON(t, hc, "GET", d.URL+"/v2.0/taas/tap_services", tok, "", 200, nil)
		k.Revoke(t, tok)
		revoked := time.Now()
		for {
			status, _ := get(t, hc, d.URL+"/v2.0/taas/tap_services", tok)
			if status == 401 {
				t.Logf("revoked token refused %v after its revocation (cache_seconds 2)", time.Since(revoked).Round(time.Millisecond))
				break
			}
			if status != 200 || time.Since(revoked) > 30*time.Second {
				t.Fatalf("revoked token: %d %v after its revocation, want 200 (cached) then 401", status, time.Since(revoked))
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("metrics need an admin token", func(t *testing.T) {
		callJSON(t, hc, "GET", d.URL+"/metrics", k.Token(t, "alice", "alpha"), "", 403, nil)
		body := callJSON(t, hc, "GET", d.URL+"/metrics", k.Token(t, "admin", "admin"), "", 200, nil)
		for _, want := range []string{`taas_keystone_validations_total{result="valid"}`,
			`taas_keystone_validations_total{result="invalid"}`, "taas_keystone_service_tokens_total"} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics: no %s", want)
			}
		}
	})

	// Without taasd in the catalog, password auth cannot reach the tap
	// commands: they go through neutronclient, whose plugin
	// (python3-neutronclient 8.1) passes no endpoint override, so the
	// client ignores clouds.yaml's network_endpoint_override (which the
	// SDK's own commands, e.g. port list, honour) and --os-endpoint, and
	// has no --os-endpoint-override. A token issued with the password,
	// then --os-auth-type admin_token --os-token --os-endpoint, does:
	// the token keeps the user's project and roles.
	t.Run("without a catalog entry", func(t *testing.T) {
		admin := k.Token(t, "admin", "admin")
		var eps struct{ Endpoints []struct{ ID, URL string } }
		callJSON(t, hc, "GET", k.URL+"/v3/endpoints", admin, "", 200, &eps)
		for _, e := range eps.Endpoints {
			if e.URL == d.URL {
				callJSON(t, hc, "DELETE", k.URL+"/v3/endpoints/"+e.ID, admin, "", 204, nil)
			}
		}
		clouds := filepath.Join(t.TempDir(), "clouds.yaml")
		yaml := fmt.Sprintf("clouds:\n  taas:\n    auth:\n      auth_url: %s/v3\n      username: alice\n      password: %s\n"+
			"      project_name: alpha\n      user_domain_name: Default\n      project_domain_name: Default\n"+
			"    network_endpoint_override: %s\n", k.URL, testutil.KeystonePassword, d.URL)
		if err := os.WriteFile(clouds, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		const notFound = "public endpoint for network service not found"
		if out, err := run([]string{"OS_CLIENT_CONFIG_FILE=" + clouds}, "--os-cloud", "taas", "tap", "service", "list"); err == nil ||
			!strings.Contains(out, notFound) {
			t.Errorf("tap service list with network_endpoint_override: %v, want %q (else update the README's note)\n%s", err, notFound, out)
		}
		// byToken runs openstack as a user whose openrc set the password
		// variables: a token, then the command with it and the endpoint,
		// without them (with them, admin_token fails: "Token.__init__()
		// got an unexpected keyword argument 'user_domain_name'").
		byToken := func(user, project string, args ...string) string {
			t.Helper()
			openrc := []string{"OS_AUTH_URL=" + k.URL + "/v3", "OS_PROJECT_NAME=" + project, "OS_USERNAME=" + user,
				"OS_PASSWORD=" + testutil.KeystonePassword, "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default"}
			tok, err := run(openrc, "token", "issue", "-f", "value", "-c", "id")
			if err != nil {
				t.Fatalf("%s: token issue: %v\n%s", user, err, tok)
			}
			out, err := run(nil, append([]string{"--os-auth-type", "admin_token", "--os-token", strings.TrimSpace(tok),
				"--os-endpoint", d.URL}, args...)...)
			if err != nil {
				t.Fatalf("%s: openstack --os-token --os-endpoint %s: %v\n%s", user, strings.Join(args, " "), err, out)
			}
			return out
		}
		created := byToken("alice", "alpha", "tap", "service", "create", "--name", "a-tok", "--port", port("alice", "alpha", "a-tok-port"),
			"-f", "value", "-c", "Tenant")
		if strings.TrimSpace(created) != k.Projects["alpha"] {
			t.Errorf("alice: tap service create by token: Tenant %q, want alpha's %s", created, k.Projects["alpha"])
		}
		if out := byToken("bob", "beta", "tap", "service", "list", "-f", "value", "-c", "Name"); strings.TrimSpace(out) != "b-svc" {
			t.Errorf("bob: tap service list by token: %q, want only b-svc", out)
		}
	})

	t.Run("keystone stopped", func(t *testing.T) {
		tok := k.Token(t, "bob", "beta")
		k.Stop()
		body := callJSON(t, hc, "GET", d.URL+"/v2.0/taas/tap_services", tok, "", 503, nil)
		if !strings.Contains(body, `"type":"ServiceUnavailable"`) || !strings.Contains(body, "identity service is unavailable") {
			t.Errorf("keystone stopped: %s, want a NeutronError ServiceUnavailable", body)
		}
		out, err := cli("bob", "beta", "tap", "service", "list")
		if err == nil {
			t.Errorf("openstack with keystone stopped: succeeded\n%s", out)
		}
	})
}

// get sends GET url with token and returns the status and body.
func get(t *testing.T, c *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// callJSON sends a request with token and body, fails t unless the status
// is want, decodes the answer into out when not nil, and returns it.
func callJSON(t *testing.T, c *http.Client, method, url, token, body string, want int, out any) string {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != want {
		t.Fatalf("%s %s = %d %s, want %d", method, url, res.StatusCode, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, b)
		}
	}
	return string(b)
}

// TestKeystoneCacheSeconds: auth.cache_seconds unset keeps control's
// default (5 minutes), 0 disables the cache, N is N seconds; the file's
// credentials reach control's KeystoneConfig.
func TestKeystoneCacheSeconds(t *testing.T) {
	for _, tc := range []struct {
		text string
		want time.Duration
	}{
		{"", 0},
		{"cache_seconds = 0", -1},
		{"cache_seconds = 30", 30 * time.Second},
	} {
		fc, err := parseConfig("[auth]\nmode = \"keystone\"\nkeystone_url = \"http://k:5000\"\nusername = \"u\"\npassword = \"p\"\n" +
			"project_name = \"service\"\n" + tc.text)
		if err != nil {
			t.Fatalf("%q: %v", tc.text, err)
		}
		var cfg config
		fc.apply(&cfg, nil)
		if cfg.Keystone.CacheTTL != tc.want || cfg.Keystone.Username != "u" || cfg.Keystone.URL != "http://k:5000" {
			t.Errorf("%q: Keystone = %+v, want CacheTTL %v", tc.text, cfg.Keystone, tc.want)
		}
	}
}
