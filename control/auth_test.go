package control

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeTokens(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadTokens(t *testing.T) {
	good := writeTokens(t, "# comment\n\nsecret-a proj-a member,reader\nsecret-admin admin-proj admin\n")
	toks, err := LoadTokens(good, nil)
	if err != nil {
		t.Fatalf("LoadTokens: %v", err)
	}
	if id := toks["secret-a"]; id.ProjectID != "proj-a" || id.Admin || !id.member() {
		t.Errorf("secret-a = %+v, want member of proj-a", id)
	}
	if id := toks["secret-admin"]; !id.Admin {
		t.Errorf("secret-admin = %+v, want admin", id)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"two fields", "a b\n", ":1: want"},
		{"duplicate", "a p r\n# x\na p r\n", ":3: token defined twice"},
		{"empty role", "a p r,,s\n", ":1: empty role"},
		{"no tokens", "# nothing\n", "no tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadTokens(writeTokens(t, tc.text), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadTokens(%q) = %v, want error containing %q", tc.text, err, tc.want)
			}
		})
	}
	if _, err := LoadTokens(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Errorf("LoadTokens(missing file) = nil error")
	}
}

// TestLoadTokensUnknownRoles: a line whose roles include one the API does
// not know is loaded as it is, and logs one warning naming the file, the
// line and its unknown roles, never the token.
func TestLoadTokensUnknownRoles(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // per warning: "line=N role=R"
	}{
		{"known roles only", "t1 p admin\nt2 p member,reader\n", nil},
		{"capitalised", "t1 p Admin\n", []string{"line=1 role=Admin"}},
		{"legacy _member_ with member", "# c\n\nt1 p member,_member_\n", []string{"line=3 role=_member_"}},
		{"two unknown on a line, one warning", "t1 p reader\nt2 p auditor,member,ops\n", []string{"line=2 role=auditor,ops"}},
		{"a warning per line", "t1 p x\nt2 p admin\nt3 p y\n", []string{"line=1 role=x", "line=3 role=y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			path := writeTokens(t, tc.text)
			toks, err := LoadTokens(path, slog.New(slog.NewTextHandler(&buf, nil)))
			if err != nil {
				t.Fatalf("LoadTokens(%q) = %v, want the tokens", tc.text, err)
			}
			// Kept as written: Keystone roles may be custom; only the
			// role admin, as written, makes an admin.
			for _, line := range strings.Split(tc.text, "\n") {
				f := strings.Fields(line)
				if len(f) != 3 {
					continue
				}
				id := toks[f[0]]
				if got := strings.Join(id.Roles, ","); got != f[2] || id.Admin != slices.Contains(strings.Split(f[2], ","), "admin") {
					t.Errorf("%s = %+v, want roles %s as written, admin only with role admin", f[0], id, f[2])
				}
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if line == "" {
					continue
				}
				if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "file="+path+" ") {
					t.Errorf("logged %q, want a warning naming file=%s", line, path)
				}
				for tok := range toks {
					if strings.Contains(line, tok+" ") {
						t.Errorf("logged %q: it names token %s", line, tok)
					}
				}
				_, attrs, _ := strings.Cut(line, " line=")
				got = append(got, "line="+attrs)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("LoadTokens(%q) warned %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

// TestTokenAuthIsolation runs token mode: 401 without a token, projects
// isolated from each other (404, empty lists), readers kept out of tap
// resources, admin seeing everything.
func TestTokenAuthIsolation(t *testing.T) {
	toks, err := LoadTokens(writeTokens(t, "ta proj-a member\ntb proj-b member\ntr proj-a reader\ntadmin ops admin\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{Auth: AuthToken, Tokens: toks})
	a, b, reader, admin := "X-Auth-Token: ta", "X-Auth-Token: tb", "X-Auth-Token: tr", "Authorization: Bearer tadmin"

	for _, h := range [][]string{nil, {"X-Auth-Token: wrong"}, {"X-Project-Id: proj-a"}} {
		r := ts.do("GET", "/v2.0/taas/tap_services", "", h...)
		if r.status != 401 {
			t.Fatalf("GET with %v = %d, want 401", h, r.status)
		}
		if typ, _ := neutronErr(t, r); typ != "HTTPUnauthorized" {
			t.Errorf("401 type = %s", typ)
		}
	}
	ts.must(200, "GET", "/", "", "") // the version document needs no token

	srcA := ts.createPortIn("proj-a", "src-a", "veth0", "", admin)
	monA := ts.createPortIn("proj-a", "mon-a", "mon0", "", admin)
	svcA := ts.createService("svc-a", monA, a)
	flowA := ts.createFlow("flow-a", svcA, srcA, "BOTH", nil, a)
	monB := ts.createPort("mon-b", "", "", b)
	svcB := ts.createService("svc-b", monB, b)

	// B sees only its own.
	if l := ts.list("/v2.0/taas/tap_services", "tap_services", b); len(l) != 1 || l[0]["id"] != svcB {
		t.Errorf("B's services = %v, want only %s", l, svcB)
	}
	if l := ts.list("/v2.0/taas/tap_flows", "tap_flows", b); len(l) != 0 {
		t.Errorf("B sees flows %v", l)
	}
	if l := ts.list("/v2.0/ports?name=src-a", "ports", b); len(l) != 0 {
		t.Errorf("B finds A's port by name: %v", l)
	}
	for _, rq := range []struct{ method, path, body string }{
		{"GET", "/v2.0/taas/tap_services/" + svcA, ""},
		{"PUT", "/v2.0/taas/tap_services/" + svcA, `{"tap_service": {"name": "x"}}`},
		{"DELETE", "/v2.0/taas/tap_services/" + svcA, ""},
		{"GET", "/v2.0/taas/tap_flows/" + flowA, ""},
		{"DELETE", "/v2.0/taas/tap_flows/" + flowA, ""},
		{"GET", "/v2.0/ports/" + srcA, ""},
		{"DELETE", "/v2.0/ports/" + srcA, ""},
		// B cannot mirror A's port into its own service, nor use A's service.
		{"POST", "/v2.0/taas/tap_flows", jsonBody(map[string]any{"tap_flow": map[string]any{
			"tap_service_id": svcB, "source_port": srcA, "direction": "IN"}})},
		{"POST", "/v2.0/taas/tap_services", jsonBody(map[string]any{"tap_service": map[string]any{"port_id": monA}})},
	} {
		if r := ts.do(rq.method, rq.path, rq.body, b); r.status != 404 {
			t.Errorf("B: %s %s = %d %s, want 404", rq.method, rq.path, r.status, r.raw)
		}
	}
	// The reader of A sees A's ports but no tap resource, and may not create.
	if l := ts.list("/v2.0/ports", "ports", reader); len(l) != 2 {
		t.Errorf("reader sees %d ports, want 2", len(l))
	}
	if l := ts.list("/v2.0/taas/tap_services", "tap_services", reader); len(l) != 0 {
		t.Errorf("reader sees services %v", l)
	}
	ts.must(404, "GET", "/v2.0/taas/tap_services/"+svcA, "", "", reader)
	r := ts.do("POST", "/v2.0/taas/tap_services", jsonBody(map[string]any{"tap_service": map[string]any{"port_id": monA}}), reader)
	if typ, msg := neutronErr(t, r); r.status != 403 || typ != "PolicyNotAuthorized" || msg != "rule:create_tap_service is disallowed by policy" {
		t.Errorf("reader create = %d %s %q, want 403 PolicyNotAuthorized", r.status, typ, msg)
	}
	// Admin sees both projects and may act in A's project explicitly.
	if l := ts.list("/v2.0/taas/tap_services", "tap_services", admin); len(l) != 2 {
		t.Errorf("admin sees %d services, want 2", len(l))
	}
	if l := ts.list("/v2.0/taas/tap_services?project_id=proj-b", "tap_services", admin); len(l) != 1 {
		t.Errorf("admin filter project_id=proj-b: %d, want 1", len(l))
	}
	body := jsonBody(map[string]any{"tap_service": map[string]any{"port_id": monA, "tenant_id": "proj-a"}})
	if s := ts.must(201, "POST", "/v2.0/taas/tap_services", body, "tap_service", admin); s["project_id"] != "proj-a" {
		t.Errorf("admin-created service project = %v", s["project_id"])
	}
	// Without naming the project, the admin's own project does not own the port: 403.
	body = jsonBody(map[string]any{"tap_service": map[string]any{"port_id": monA}})
	if r := ts.do("POST", "/v2.0/taas/tap_services", body, admin); r.status != 403 {
		t.Errorf("admin create on A's port in own project = %d, want 403", r.status)
	}
	// A flow naming another project than its service's: 403.
	body = jsonBody(map[string]any{"tap_flow": map[string]any{"tap_service_id": svcB, "source_port": srcA,
		"direction": "IN", "project_id": "proj-a"}})
	r = ts.do("POST", "/v2.0/taas/tap_flows", body, admin)
	if typ, _ := neutronErr(t, r); r.status != 403 || typ != "TapServiceNotBelongToTenant" {
		t.Errorf("flow into another project's service = %d %s, want 403 TapServiceNotBelongToTenant", r.status, typ)
	}
	ts.must(204, "DELETE", "/v2.0/taas/tap_flows/"+flowA, "", "", admin)
}

// TestNoauthHeaders checks noauth: no headers is admin in the default
// project; X-Project-Id scopes; X-Roles: admin elevates.
func TestNoauthHeaders(t *testing.T) {
	ts := startServer(t, Config{DefaultProject: "lab"})
	p := ts.must(201, "POST", "/v2.0/ports", `{"port": {"network_id": "`+defaultNetwork+`"}}`, "port")
	if p["project_id"] != "lab" || p["tenant_id"] != "lab" {
		t.Errorf("port project = %v/%v, want lab", p["project_id"], p["tenant_id"])
	}
	ts.createPort("x", "", "", "X-Project-Id: p1")
	if l := ts.list("/v2.0/ports", "ports", "X-Project-Id: p1"); len(l) != 1 {
		t.Errorf("p1 sees %d ports, want 1", len(l))
	}
	if l := ts.list("/v2.0/ports", "ports", "X-Project-Id: p1", "X-Roles: admin"); len(l) != 2 {
		t.Errorf("p1 admin sees %d ports, want 2", len(l))
	}
	if l := ts.list("/v2.0/ports", "ports"); len(l) != 2 {
		t.Errorf("default admin sees %d ports, want 2", len(l))
	}
}

// TestMaxTapServices checks the cap and that a freed slot is reusable.
func TestMaxTapServices(t *testing.T) {
	ts := startServer(t, Config{MaxTapServices: 2})
	mon := ts.createPort("mon", "", "")
	s1 := ts.createService("a", mon)
	ts.createService("b", mon)
	r := ts.do("POST", "/v2.0/taas/tap_services", jsonBody(map[string]any{"tap_service": map[string]any{"port_id": mon}}))
	typ, msg := neutronErr(t, r)
	if r.status != 409 || typ != "TapServiceLimitReached" || msg != "Reached the maximum quota for Tap Services" {
		t.Fatalf("third service = %d %s %q, want 409 TapServiceLimitReached", r.status, typ, msg)
	}
	ts.must(204, "DELETE", "/v2.0/taas/tap_services/"+s1, "", "")
	ts.createService("c", mon)
}

// TestSetTokens swaps the token set of a running server: a removed token
// gets 401 on the next request, an added one works, a changed one acts as
// its new project; the change is counted, and a refused swap keeps the set.
func TestSetTokens(t *testing.T) {
	toks, err := LoadTokens(writeTokens(t, "keep proj-a member\ngone proj-a member\nmoved proj-a member\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{Auth: AuthToken, Tokens: toks})
	monA := ts.createPort("mon-a", "", "", "X-Auth-Token: keep")
	ts.createService("svc-a", monA, "X-Auth-Token: keep")
	ts.must(200, "GET", "/v2.0/taas/tap_services", "", "", "X-Auth-Token: gone")

	next, err := LoadTokens(writeTokens(t, "keep proj-a member\nmoved proj-b member\nnew proj-a reader,member\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := ts.srv.SetTokens(next)
	if want := (TokenChange{Added: 1, Removed: 1, Changed: 1, Total: 3}); err != nil || ch != want {
		t.Errorf("SetTokens = %+v, %v, want %+v", ch, err, want)
	}
	for _, tc := range []struct {
		token    string
		status   int
		services int
	}{
		{"keep", 200, 1},
		{"gone", 401, 0},
		{"new", 200, 1},
		{"moved", 200, 0}, // now in proj-b
	} {
		r := ts.do("GET", "/v2.0/taas/tap_services", "", "X-Auth-Token: "+tc.token)
		if r.status != tc.status {
			t.Errorf("GET with token %s after SetTokens = %d, want %d", tc.token, r.status, tc.status)
			continue
		}
		if tc.status == 200 {
			if l := ts.list("/v2.0/taas/tap_services", "tap_services", "X-Auth-Token: "+tc.token); len(l) != tc.services {
				t.Errorf("token %s sees %d services, want %d", tc.token, len(l), tc.services)
			}
		}
	}

	if _, err := ts.srv.SetTokens(Tokens{}); err == nil {
		t.Error("SetTokens(empty) = nil error")
	}
	ts.must(200, "GET", "/v2.0/taas/tap_services", "", "", "X-Auth-Token: new")

	noauth := startServer(t, Config{})
	if _, err := noauth.srv.SetTokens(next); err == nil || !strings.Contains(err.Error(), "auth is noauth") {
		t.Errorf("SetTokens without token auth = %v, want an error", err)
	}
}
