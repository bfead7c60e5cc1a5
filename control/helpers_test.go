package control

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/control/store"
	"github.com/taas-appliance/taas/internal/testutil"
)

// defaultNetwork is the id of the shared network migration 0002 creates.
const defaultNetwork = "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10"

// testServer is a real taasd control plane: a database of the pass's
// engine (testDB) and the fiber app listening on a loopback port.
type testServer struct {
	t    testing.TB
	srv  *Server
	st   *store.Store
	base string
	// stop shuts the server down and closes the store; idempotent.
	stop func()
}

// startServer starts the server with cfg (Store is filled in) and stops it
// when t ends.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	return startServerAt(t, testDB(t), cfg)
}

// The API's tests run on the engine TAAS_TEST_DB names: SQLite by
// default, PostgreSQL with TAAS_TEST_DB=postgres (issue 14: the whole API
// suite passes on both; make test runs both passes).

// TestMain also checks the whole run for leaks: startServerAt checks each
// test that starts a server, this what the others (a Keystone client, a
// listener of their own) leave behind.
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(func() int { return testutil.RunWithPostgres(m) }))
}

// testDB returns a new, empty database for t, as store.Open takes it: a
// SQLite file in t.TempDir(), or with TAAS_TEST_DB=postgres a database
// of its own on the package's PostgreSQL cluster, a copy of one migrated
// once (the store's tests migrate fresh ones).
func testDB(t testing.TB) string {
	t.Helper()
	return engineDB(t, os.Getenv("TAAS_TEST_DB"))
}

// engineDB is testDB on engine: "postgres", or SQLite.
func engineDB(t testing.TB, engine string) string {
	t.Helper()
	if engine == "postgres" {
		return testutil.StartPostgresFrom(t, "migrated", func(dsn string) error {
			st, err := store.Open(context.Background(), dsn)
			if err != nil {
				return err
			}
			return st.Close()
		})
	}
	return filepath.Join(t.TempDir(), "taas.db")
}

// startServerAt is startServer on the database dsn (testDB), which a
// test may open again. When t ends, after the test's own clean-ups, it
// stops the server and checks the test for leaks (serverLeaks).
func startServerAt(t testing.TB, path string, cfg Config) *testServer {
	t.Helper()
	leaks := serverLeaks(t)
	ctx := context.Background()
	srv, st := newServer(t, path, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx, ln) }()
	ts := &testServer{t: t, srv: srv, st: st, base: "http://" + ln.Addr().String()}
	var once sync.Once
	ts.stop = func() { once.Do(func() { stopServer(t, cancel, done, st) }) }
	t.Cleanup(func() {
		ts.stop()
		leaks()
	})
	return ts
}

// running counts the servers started and not yet cleaned up, by top-level
// test (or benchmark) name.
var running struct {
	sync.Mutex
	servers map[string]int
}

// serverLeaks returns the leak check of a server that t starts now, to
// call once it is stopped. Only the first server of a test (its subtests
// included) that is running takes a testutil.Leaks snapshot, and checks
// when its clean-up runs, the last of its servers': a server started
// while another runs would otherwise count what the other opens meanwhile
// (a database connection) as its own leak.
func serverLeaks(t testing.TB) func() {
	t.Helper()
	test, _, _ := strings.Cut(t.Name(), "/")
	running.Lock()
	if running.servers == nil {
		running.servers = map[string]int{}
	}
	first := running.servers[test] == 0
	running.servers[test]++
	running.Unlock()
	var leaks func()
	if first {
		leaks = testutil.Leaks(t)
	}
	return func() {
		running.Lock()
		running.servers[test]--
		running.Unlock()
		if leaks != nil {
			// The shared client's idle keep-alive connections would
			// otherwise be counted (their readers end only when the
			// server's close reaches them).
			client.CloseIdleConnections()
			leaks()
		}
	}
}

// newServer opens the store at path and builds a server on it with cfg
// (Store is filled in, Logger defaults to none). Closing the store is the
// caller's.
func newServer(t testing.TB, path string, cfg Config) (*Server, *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store = st
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := New(cfg)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	// fasthttp's worker pool cleaner sleeps this long between rounds
	// and ends only after a sleep: the default 10 s would keep every
	// stopped server's goroutine that long, which testutil.Leaks would
	// wait out (issue 13: the check once made this package's tests take
	// 600 s).
	srv.App().Server().MaxIdleWorkerDuration = 10 * time.Millisecond
	return srv, st
}

func stopServer(t testing.TB, cancel context.CancelFunc, done chan error, st *store.Store) {
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("server did not stop within 30s")
	}
	st.Close()
}

// settle runs a reconciler pass now: statuses and their reasons are then
// what the data plane made of every change so far, and stay so until the
// next change.
func (ts *testServer) settle() {
	ts.t.Helper()
	if err := ts.srv.Reconciler().Sync(context.Background()); err != nil {
		ts.t.Fatal(err)
	}
}

// response is one HTTP answer, its body decoded when it is JSON.
type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// client does not follow redirects: tests check them. Its transport is its
// own, so that closing its idle connections (startServerAt) leaves the
// server's, to Keystone, to the server.
var client = &http.Client{Timeout: 30 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone(),
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// do sends a request; headers are "Key: value" strings.
func (ts *testServer) do(method, path, body string, headers ...string) response {
	ts.t.Helper()
	return ts.send(method, path, body, false, headers...)
}

// doVerbatim is do with path sent as it is on the request line: Go's URL
// parser refuses escapes such as "%zz" and may re-encode others.
func (ts *testServer) doVerbatim(method, path, body string, headers ...string) response {
	ts.t.Helper()
	return ts.send(method, path, body, true, headers...)
}

func (ts *testServer) send(method, path, body string, verbatim bool, headers ...string) response {
	ts.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	url := ts.base + path
	if verbatim {
		url = ts.base + "/"
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	if verbatim {
		req.URL.Opaque = path
	}
	req.Header.Set("Accept", "application/json")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		// Not every answer is an object (none should fail to decode).
		if err := json.Unmarshal(raw, &r.body); err != nil {
			ts.t.Fatalf("%s %s: body is not a JSON object: %v\n%s", method, path, err, raw)
		}
	}
	return r
}

// must sends a request and fails the test unless the status is want; it
// returns the object under key (or the whole body when key is "").
func (ts *testServer) must(want int, method, path, body string, key string, headers ...string) map[string]any {
	ts.t.Helper()
	r := ts.do(method, path, body, headers...)
	if r.status != want {
		ts.t.Fatalf("%s %s %s = %d %s, want %d", method, path, body, r.status, r.raw, want)
	}
	if key == "" {
		return r.body
	}
	m, ok := r.body[key].(map[string]any)
	if !ok {
		ts.t.Fatalf("%s %s: no object %q in %s", method, path, key, r.raw)
	}
	return m
}

func (ts *testServer) list(path, key string, headers ...string) []map[string]any {
	ts.t.Helper()
	body := ts.must(200, "GET", path, "", "", headers...)
	raw, ok := body[key].([]any)
	if !ok {
		ts.t.Fatalf("GET %s: no list %q in %v", path, key, body)
	}
	out := make([]map[string]any, len(raw))
	for i, e := range raw {
		out[i] = e.(map[string]any)
	}
	return out
}

// jsonBody marshals v for a request body.
func jsonBody(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// createPort creates a port on the default network and returns its id.
func (ts *testServer) createPort(name, iface, mac string, headers ...string) string {
	ts.t.Helper()
	return ts.postPort(map[string]any{"name": name}, iface, mac, headers...)
}

// createPortIn is createPort as an admin (headers: the admin's; none is
// noauth's admin) registering a port into project: only admins bind.
func (ts *testServer) createPortIn(project, name, iface, mac string, headers ...string) string {
	ts.t.Helper()
	return ts.postPort(map[string]any{"name": name, "project_id": project}, iface, mac, headers...)
}

// hostPort creates a port bound to interface iface of node host (its
// binding:host_id).
func (ts *testServer) hostPort(name, iface, mac, host string) string {
	ts.t.Helper()
	return ts.postPort(map[string]any{"name": name, "binding:host_id": host}, iface, mac)
}

// postPort creates the port p on the default network, bound to iface
// and with the MAC mac when they are not "", and returns its id.
func (ts *testServer) postPort(p map[string]any, iface, mac string, headers ...string) string {
	ts.t.Helper()
	p["network_id"] = defaultNetwork
	if iface != "" {
		p["binding:profile"] = map[string]any{"interface": iface}
	}
	if mac != "" {
		p["mac_address"] = mac
	}
	return ts.must(201, "POST", "/v2.0/ports", jsonBody(map[string]any{"port": p}), "port", headers...)["id"].(string)
}

func (ts *testServer) createService(name, port string, headers ...string) string {
	ts.t.Helper()
	body := jsonBody(map[string]any{"tap_service": map[string]any{"name": name, "port_id": port}})
	return ts.must(201, "POST", "/v2.0/taas/tap_services", body, "tap_service", headers...)["id"].(string)
}

func (ts *testServer) createFlow(name, svc, src, dir string, vlan any, headers ...string) string {
	ts.t.Helper()
	f := map[string]any{"name": name, "tap_service_id": svc, "source_port": src, "direction": dir}
	if vlan != nil {
		f["vlan_filter"] = vlan
	}
	body := jsonBody(map[string]any{"tap_flow": f})
	return ts.must(201, "POST", "/v2.0/taas/tap_flows", body, "tap_flow", headers...)["id"].(string)
}

// scenario is one request of a scenario table and what it must answer.
type scenario struct {
	name         string
	method, path string
	body         string
	headers      []string
	status       int
	want         string // a substring of the body, or of the NeutronError message
}

// runScenarios sends each request in order, its path verbatim, as a
// subtest: a row may depend on the rows before it.
func (ts *testServer) runScenarios(t *testing.T, tests []scenario) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.doVerbatim(tc.method, tc.path, tc.body, tc.headers...)
			if r.status != tc.status {
				t.Fatalf("%s %s %s = %d %s, want %d", tc.method, tc.path, tc.body, r.status, r.raw, tc.status)
			}
			if r.status >= 400 {
				if _, msg := neutronErr(t, r); !strings.Contains(msg, tc.want) {
					t.Errorf("message %q, want %q", msg, tc.want)
				}
				return
			}
			if !strings.Contains(r.raw, tc.want) {
				t.Errorf("body %s, want %s", r.raw, tc.want)
			}
		})
	}
}

// neutronError checks that r carries a well-formed NeutronError body and
// returns its type and message.
func neutronErr(t testing.TB, r response) (typ, msg string) {
	t.Helper()
	ne, ok := r.body["NeutronError"].(map[string]any)
	if !ok {
		t.Fatalf("status %d: no NeutronError in %s", r.status, r.raw)
	}
	if d, ok := ne["detail"].(string); !ok || d != "" {
		t.Errorf("NeutronError detail = %v, want \"\"", ne["detail"])
	}
	typ, _ = ne["type"].(string)
	msg, _ = ne["message"].(string)
	return typ, msg
}
