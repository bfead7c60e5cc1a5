package control

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestKeystoneAuth runs auth keystone against a real Keystone (Debian's
// keystone, SQLite, fernet tokens; testutil.StartKeystone), shared by the
// subtests, which run in order: the last one stops it.
func TestKeystoneAuth(t *testing.T) {
	k := testutil.StartKeystone(t)
	const ttl = 2 * time.Second
	ts := startServer(t, Config{Auth: AuthKeystone, Keystone: KeystoneConfig{URL: k.URL + "/v3", Username: "taasd",
		Password: testutil.KeystonePassword, Project: "service", CacheTTL: ttl}, Heartbeat: 200 * time.Millisecond})
	ks := ts.srv.ks
	alice, bob, rita := k.Token(t, "alice", "alpha"), k.Token(t, "bob", "beta"), k.Token(t, "rita", "alpha")
	auth := func(tok string) string { return "X-Auth-Token: " + tok }

	t.Run("projects are isolated", func(t *testing.T) {
		net := ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "a-net"}}`, "network", auth(alice))
		if net["project_id"] != k.Projects["alpha"] {
			t.Errorf("alice's network project_id = %v, want alpha's id %s", net["project_id"], k.Projects["alpha"])
		}
		ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "b-net"}}`, "network", "Authorization: Bearer "+bob)
		for _, tc := range []struct {
			name, token, want, notWant string
		}{{"alice", alice, "a-net", "b-net"}, {"bob", bob, "b-net", "a-net"}, {"rita", rita, "a-net", "b-net"}} {
			r := ts.do("GET", "/v2.0/networks", "", auth(tc.token))
			if r.status != 200 || !strings.Contains(r.raw, tc.want) || strings.Contains(r.raw, tc.notWant) {
				t.Errorf("%s: GET /v2.0/networks = %d %s, want %s and not %s", tc.name, r.status, r.raw, tc.want, tc.notWant)
			}
		}
	})

	t.Run("reader cannot write", func(t *testing.T) {
		r := ts.do("POST", "/v2.0/networks", `{"network": {"name": "r-net"}}`, auth(rita))
		if typ, _ := neutronErr(t, r); r.status != 403 || typ != "PolicyNotAuthorized" {
			t.Errorf("reader's POST = %d %s, want 403 PolicyNotAuthorized", r.status, r.raw)
		}
	})

	t.Run("bad tokens", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			headers []string
			status  int
			typ     string
		}{
			{"none", nil, 401, "HTTPUnauthorized"},
			{"garbage", []string{auth("garbage")}, 401, "HTTPUnauthorized"},
			{"garbage bearer", []string{"Authorization: Bearer gAAAAABnot-a-fernet-token"}, 401, "HTTPUnauthorized"},
			{"unscoped", []string{auth(k.Token(t, "alice", ""))}, 403, "HTTPForbidden"},
		} {
			r := ts.do("GET", "/v2.0/taas/tap_services", "", tc.headers...)
			typ, _ := neutronErr(t, r)
			if r.status != tc.status || typ != tc.typ {
				t.Errorf("%s: GET = %d %s, want %d %s", tc.name, r.status, r.raw, tc.status, tc.typ)
			}
			if tc.status == 401 && r.header.Get("WWW-Authenticate") != `Keystone uri="`+k.URL+`"` {
				t.Errorf("%s: WWW-Authenticate = %q", tc.name, r.header.Get("WWW-Authenticate"))
			}
		}
	})

	t.Run("one validation for concurrent requests", func(t *testing.T) {
		tok := k.Token(t, "bob", "beta")
		before, hits := ks.stats.valid.Load(), ks.stats.hits.Load()
		const n = 16
		var wg sync.WaitGroup
		codes := make(chan int, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes <- getStatus(t, ts.base+"/v2.0/taas/tap_services", tok)
			}()
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != 200 {
				t.Errorf("concurrent GET = %d, want 200", c)
			}
		}
		if got := ks.stats.valid.Load() - before; got != 1 {
			t.Errorf("%d concurrent requests with a new token: %d validations by keystone, want 1", n, got)
		}
		t.Logf("%d concurrent requests, one token: 1 validation, %d answered from the cache, %d waited for it",
			n, ks.stats.hits.Load()-hits, n-1-int(ks.stats.hits.Load()-hits))
	})

	t.Run("tokens no header can carry get 401", func(t *testing.T) {
		for _, tc := range []struct{ name, token string }{
			{"control byte", "gAAAA\x01bad"}, {"newline", "gAAAA\nX-Injected: 1"}, {"DEL", "gAAAA\x7f"},
			{"over 8 KiB", strings.Repeat("A", 8<<10+1)},
		} {
			if _, err := ks.validate(tc.token); !errors.Is(err, errUnauthorized) {
				t.Errorf("%s: validate = %v, want 401 (never asked of keystone)", tc.name, err)
			}
		}
		if _, err := ks.validate(strings.Repeat("A", 8<<10)); !errors.Is(err, errUnauthorized) {
			t.Errorf("8 KiB garbage token: validate = %v, want 401 from keystone", err)
		}
	})

	t.Run("rejected tokens never evict valid ones", func(t *testing.T) {
		cfg := ts.srv.cfg.Keystone
		cfg.CacheSize, cfg.CacheTTL = 2, time.Hour
		small := newKeystone(cfg, slog.New(slog.DiscardHandler))
		tok := k.Token(t, "alice", "alpha")
		if _, err := small.validate(tok); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if _, err := small.validate(fmt.Sprintf("garbage-%d", i)); !errors.Is(err, errUnauthorized) {
				t.Fatalf("garbage token: %v, want 401", err)
			}
		}
		if _, ok := small.cache.get(sha256.Sum256([]byte(tok)), time.Now()); !ok {
			t.Errorf("5 rejected tokens evicted the one valid token from a cache of 2")
		}
		t.Logf("cache: %d valid, %d rejected", small.cache.len(), small.rejected.len())
	})

	t.Run("one service token for concurrent refusals", func(t *testing.T) {
		// A keystone of its own with a long timeout: the test Keystone
		// answers one request at a time, about a second each on a busy
		// machine, and 503s from its slowness would hide the count.
		cfg := ts.srv.cfg.Keystone
		cfg.Timeout, cfg.Client = 60*time.Second, nil
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		own := newKeystone(cfg, slog.New(slog.DiscardHandler))
		svc, err := own.serviceToken("")
		if err != nil {
			t.Fatal(err)
		}
		k.Revoke(t, svc)
		const n = 4
		toks := make([]string, n)
		for i := range toks {
			toks[i] = k.Token(t, "bob", "beta")
		}
		auths := own.stats.serviceAuths.Load()
		var wg sync.WaitGroup
		for _, tok := range toks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := own.validate(tok); err != nil {
					t.Errorf("validate after the service token's revocation = %v, want valid", err)
				}
			}()
		}
		wg.Wait()
		if got := own.stats.serviceAuths.Load() - auths; got != 1 {
			t.Errorf("%d concurrent validations refused with the revoked service token: %d service tokens fetched, want 1", n, got)
		}
	})

	t.Run("latency cached and uncached", func(t *testing.T) {
		const n = 3
		var cold, warm time.Duration
		for range n {
			tok := k.Token(t, "alice", "alpha")
			t0 := time.Now()
			if c := getStatus(t, ts.base+"/v2.0/taas/tap_services", tok); c != 200 {
				t.Fatalf("GET = %d", c)
			}
			t1 := time.Now()
			if c := getStatus(t, ts.base+"/v2.0/taas/tap_services", tok); c != 200 {
				t.Fatalf("GET = %d", c)
			}
			cold, warm = cold+t1.Sub(t0), warm+time.Since(t1)
		}
		t.Logf("GET /v2.0/taas/tap_services, mean of %d: new token (validated by keystone) %v, cached %v",
			n, (cold / n).Round(time.Microsecond), (warm / n).Round(time.Microsecond))
	})

	t.Run("revoked token refused after the cache TTL", func(t *testing.T) {
		tok := k.Token(t, "alice", "alpha")
		if c := getStatus(t, ts.base+"/v2.0/networks", tok); c != 200 {
			t.Fatalf("GET = %d, want 200", c)
		}
		k.Revoke(t, tok)
		revoked := time.Now()
		for {
			c := getStatus(t, ts.base+"/v2.0/networks", tok)
			if c == 401 {
				t.Logf("revoked token refused %v after its revocation (cache TTL %v)", time.Since(revoked).Round(time.Millisecond), ttl)
				break
			}
			if c != 200 {
				t.Fatalf("GET with a revoked token = %d, want 200 (cached) then 401", c)
			}
			if time.Since(revoked) > ttl+30*time.Second {
				t.Fatalf("revoked token still accepted %v after its revocation (cache TTL %v)", time.Since(revoked), ttl)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("service token renewed when keystone refuses it", func(t *testing.T) {
		svc, err := ks.serviceToken("")
		if err != nil {
			t.Fatal(err)
		}
		k.Revoke(t, svc)
		auths := ks.stats.serviceAuths.Load()
		if c := getStatus(t, ts.base+"/v2.0/networks", k.Token(t, "bob", "beta")); c != 200 {
			t.Errorf("GET after the service token's revocation = %d, want 200", c)
		}
		if got := ks.stats.serviceAuths.Load() - auths; got != 1 {
			t.Errorf("service tokens fetched = %d, want 1", got)
		}
	})

	t.Run("events stream of a revoked token ends", func(t *testing.T) {
		tok := k.Token(t, "alice", "alpha")
		s := openStream(t, ts, auth(tok))
		k.Revoke(t, tok)
		revoked := time.Now()
		select {
		case <-s.ended:
			t.Logf("stream ended %v after its token's revocation (cache TTL %v)", time.Since(revoked).Round(time.Millisecond), ttl)
		case <-time.After(ttl + 30*time.Second):
			t.Errorf("stream still open %v after its token's revocation", time.Since(revoked))
		}
	})

	t.Run("a stopped server keeps no connection to keystone", func(t *testing.T) {
		// Behind a front that keeps connections alive (Apache, a load
		// balancer), unlike keystone-wsgi-public, which closes each.
		// It closes after the server's leak check, so that what the
		// server left open to it is still there to be found.
		u, err := url.Parse(k.URL)
		if err != nil {
			t.Fatal(err)
		}
		proxy := httputil.NewSingleHostReverseProxy(u)
		proxy.Transport = &http.Transport{DisableKeepAlives: true}
		front := httptest.NewServer(proxy)
		t.Cleanup(front.Close)
		fts := startServer(t, Config{Auth: AuthKeystone, Keystone: KeystoneConfig{URL: front.URL + "/v3",
			Username: "taasd", Password: testutil.KeystonePassword, Project: "service"}})
		fts.must(200, "GET", "/v2.0/networks", "", "", auth(k.Token(t, "alice", "alpha")))
	})

	t.Run("keystone down", func(t *testing.T) {
		tok := k.Token(t, "bob", "beta")
		old, err := ks.serviceToken("")
		if err != nil {
			t.Fatal(err)
		}
		ks.svcMu.Lock()
		ks.svcRefresh = time.Now() // due for renewal, not expired
		ks.svcMu.Unlock()
		k.Stop()
		if got, err := ks.serviceToken(""); got != old || err != nil {
			t.Errorf("renewal with keystone down: serviceToken = %.8s..., %v; want the old token until its expiry", got, err)
		}
		for _, path := range []string{"/v2.0/networks", "/v2.0/taas/tap_services"} {
			r := ts.do("GET", path, "", auth(tok))
			typ, msg := neutronErr(t, r)
			if r.status != 503 || typ != "ServiceUnavailable" || !strings.Contains(msg, "identity service is unavailable") {
				t.Errorf("GET %s with keystone down = %d %s, want 503 ServiceUnavailable", path, r.status, r.raw)
			}
		}
	})
}

// getStatus GETs url with token and returns the status.
func getStatus(t testing.TB, url, token string) int {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Error(err)
		return 0
	}
	req.Header.Set("X-Auth-Token", token)
	res, err := client.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body) // the status is what is checked
	return res.StatusCode
}

func TestTokenCacheLRU(t *testing.T) {
	c := newTokenCache(2)
	now := time.Now()
	key := func(i int) [32]byte { return [32]byte{byte(i)} }
	res := func(i int) tokenResult { return tokenResult{id: newIdentity(fmt.Sprint(i), nil)} }
	c.put(key(1), res(1), now.Add(time.Minute))
	c.put(key(2), res(2), now.Add(time.Minute))
	if _, ok := c.get(key(1), now); !ok { // 1 is now the most recently used
		t.Fatal("get(1) missed")
	}
	c.put(key(3), res(3), now.Add(time.Minute))
	for _, tc := range []struct {
		key  int
		want bool
	}{{1, true}, {2, false}, {3, true}} {
		if r, ok := c.get(key(tc.key), now); ok != tc.want || (ok && r.id.ProjectID != fmt.Sprint(tc.key)) {
			t.Errorf("get(%d) = %v, %v; want found %v", tc.key, r, ok, tc.want)
		}
	}
	if _, ok := c.get(key(3), now.Add(time.Minute)); ok {
		t.Error("get(3) at its deadline: found, want expired")
	}
	if c.len() != 1 {
		t.Errorf("len = %d, want 1 (the expired entry removed)", c.len())
	}
}

func TestKeystoneConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  KeystoneConfig
		err  string
	}{
		{"password", KeystoneConfig{URL: "http://k:5000/v3/", Username: "u", Password: "p", Project: "service"}, ""},
		{"app credential", KeystoneConfig{URL: "https://k", AppCredentialID: "i", AppCredentialSecret: "s"}, ""},
		{"no url", KeystoneConfig{Username: "u", Password: "p", Project: "s"}, "want http:// or https://"},
		{"no credentials", KeystoneConfig{URL: "http://k"}, "service credentials needed"},
		{"both", KeystoneConfig{URL: "http://k", Username: "u", Password: "p", Project: "s", AppCredentialID: "i",
			AppCredentialSecret: "s"}, "not both"},
		{"secret missing", KeystoneConfig{URL: "http://k", AppCredentialID: "i"}, "id and its secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Validate() = %v, want %q", err, tc.err)
			}
			if err == nil && strings.HasSuffix(tc.cfg.URL, "/v3") {
				t.Errorf("URL = %q, want it without /v3", tc.cfg.URL)
			}
		})
	}
}

// FuzzKeystoneToken: whatever Keystone's answer holds, parse gives an
// identity with a project, or one of the three refusals; it never panics.
func FuzzKeystoneToken(f *testing.F) {
	f.Add([]byte(`{"token": {}}`))
	k := newKeystone(KeystoneConfig{URL: "http://k", CacheTTL: time.Minute}, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, _ := k.parse(b)
		switch {
		case res.err == nil && res.id.ProjectID == "":
			t.Errorf("parse(%q) = an identity without a project", b)
		case res.err != nil && res.err != errUnauthorized && res.err != errNotProjectScoped && res.err != errIdentityUnavailable:
			t.Errorf("parse(%q) = %v, want one of the three refusals", b, res.err)
		}
	})
}

// TestKeystoneHanging: a Keystone that accepts connections and never
// answers (a plain TCP listener) costs the requests one timeout together,
// not one each in turn, and later requests get 503 at once while the
// failure is remembered (review of issue 13: 8 requests took 1..8 timeouts).
func TestKeystoneHanging(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	accepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
	ts := startServer(t, Config{Auth: AuthKeystone, Keystone: KeystoneConfig{URL: "http://" + ln.Addr().String(),
		Username: "taasd", Password: "pw", Project: "service"}})
	// After startServer's, so that it runs before the server's leak
	// check: the connections it accepted are the test's own.
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	const n = 8
	var wg sync.WaitGroup
	took := make([]time.Duration, n)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c := getStatus(t, ts.base+"/v2.0/networks", fmt.Sprintf("token-%d", i)); c != 503 {
				t.Errorf("GET with keystone hanging = %d, want 503", c)
			}
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	if got := accepted(); got != 1 {
		t.Errorf("%d concurrent requests with keystone hanging: %d connections to keystone, want 1 (one shared fetch)", n, got)
	}
	t0 := time.Now()
	if c := getStatus(t, ts.base+"/v2.0/networks", "token-late"); c != 503 {
		t.Errorf("GET after the failed fetch = %d, want 503", c)
	}
	late := time.Since(t0)
	if got := accepted(); got != 1 {
		t.Errorf("a request right after the failed fetch opened a connection to keystone (%d in all), want the failure remembered", got)
	}
	slices.Sort(took)
	t.Logf("keystone hanging, timeout %v: %d concurrent requests answered 503 after %v..%v; one right after in %v",
		ts.srv.cfg.Keystone.Timeout, n, took[0].Round(time.Millisecond), took[n-1].Round(time.Millisecond),
		late.Round(time.Microsecond))
}

func TestKeystoneRolesLowercased(t *testing.T) {
	k := newKeystone(KeystoneConfig{URL: "http://k", CacheTTL: time.Minute}, slog.New(slog.DiscardHandler))
	res, _ := k.parse([]byte(`{"token": {"project": {"id": "p"}, "roles": [{"name": "Admin"}, {"name": "Member"}]}}`))
	if res.err != nil || !res.id.Admin || !res.id.member() || res.id.Roles[0] != "admin" {
		t.Errorf("parse(roles Admin, Member) = %+v, want admin and member", res)
	}
}
