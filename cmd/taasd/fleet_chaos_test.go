package main

// Issue 14's fleet under stress: three taasd on one PostgreSQL database,
// written to concurrently through every node's API (TestFleetChurn), and
// cut from the database for a while (TestFleetDatabaseCut).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// churnDuration is how long TestFleetChurn writes (the 60 s; 5 s
// with -short).
const churnDuration = 60 * time.Second

// dbCut is how long TestFleetDatabaseCut keeps PostgreSQL stopped.
const dbCut = 10 * time.Second

// apiAnswer is one request's outcome.
type apiAnswer struct {
	code int
	body []byte
	took time.Duration
}

// neutronError reports whether body is a Neutron error body.
func (a apiAnswer) neutronError() bool {
	var e struct {
		NeutronError *struct {
			Type    string  `json:"type"`
			Message string  `json:"message"`
			Detail  *string `json:"detail"`
		}
	}
	return json.Unmarshal(a.body, &e) == nil && e.NeutronError != nil && e.NeutronError.Type != "" &&
		e.NeutronError.Message != "" && e.NeutronError.Detail != nil
}

// request sends a JSON request to url with c and returns the answer; a
// transport error has code 0 and the error as body.
func request(c *http.Client, method, url string, body any) apiAnswer {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			panic(err) // the tests' own maps
		}
		rd = bytes.NewReader(b)
	}
	start := time.Now()
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return apiAnswer{body: []byte(err.Error())}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return apiAnswer{body: []byte(err.Error()), took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiAnswer{code: resp.StatusCode, body: b, took: time.Since(start)}
}

// churnPool is the ids the churn's goroutines created, shared by all, to
// pick targets from: some are gone already (a 404 is an answer too).
type churnPool struct {
	mu                              sync.Mutex
	networks, ports, services, flow []string
	// acked holds every id a create answered 201 with.
	acked map[string]bool
}

func (p *churnPool) add(list *[]string, id string) {
	p.mu.Lock()
	*list = append(*list, id)
	p.acked[id] = true
	p.mu.Unlock()
}

// drop removes id from list: deleted, or found gone.
func (p *churnPool) drop(list *[]string, id string) {
	p.mu.Lock()
	*list = slices.DeleteFunc(*list, func(s string) bool { return s == id })
	p.mu.Unlock()
}

// del deletes the resource id at url (one of list's), and drops it from
// list once it is gone; with no id (list is empty) it lists instead.
func (p *churnPool) del(c *http.Client, list *[]string, url, id string) apiAnswer {
	if id == "" {
		return request(c, "GET", strings.TrimSuffix(url, "/"), nil)
	}
	a := request(c, "DELETE", url+id, nil)
	if a.code == http.StatusNoContent || a.code == http.StatusNotFound {
		p.drop(list, id)
	}
	return a
}

// dropNamed drops id from list when a is a 404 that names it (a cascade
// took it).
func (p *churnPool) dropNamed(a apiAnswer, list *[]string, id string) {
	if a.code == http.StatusNotFound && id != "" && bytes.Contains(a.body, []byte(id)) {
		p.drop(list, id)
	}
}

// pick returns one of list's ids at random, or "" when it is empty.
func (p *churnPool) pick(r *rand.Rand, list *[]string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(*list) == 0 {
		return ""
	}
	return (*list)[r.IntN(len(*list))]
}

// churnStats counts one node's answers by code and keeps their latencies.
type churnStats struct {
	mu     sync.Mutex
	codes  map[int]int
	ops    map[string]int    // "op code"
	sample map[string]string // "op code": the first 4xx body
	took   []time.Duration
	bad    []string // 5xx, transport errors, error answers without a NeutronError body
}

func (s *churnStats) record(op string, a apiAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[a.code]++
	s.ops[fmt.Sprintf("%s %d", op, a.code)]++
	s.took = append(s.took, a.took)
	if a.code >= 400 && a.code < 500 && s.sample[op+" "+fmt.Sprint(a.code)] == "" {
		s.sample[fmt.Sprintf("%s %d", op, a.code)] = string(a.body)
	}
	if a.code == 0 || a.code >= 500 || a.code >= 400 && !a.neutronError() {
		if len(s.bad) < 20 {
			s.bad = append(s.bad, fmt.Sprintf("%s = %d: %.300s", op, a.code, a.body))
		}
	}
}

func TestFleetChurn(t *testing.T) {
	db := testutil.StartPostgresCluster(t).CreateDB(t)
	bin := testutil.BuildTaasd(t)
	nodes := []string{"a", "b", "c"}
	urls := map[string]string{}
	for _, n := range nodes {
		// No data plane: the churn is the API's and the database's.
		d := testutil.StartTaasd(t, bin, "--db", db, "--node", n, "--node-timeout", "5", "--dataplane", "none")
		urls[n] = d.URL
	}
	c := &http.Client{Timeout: 30 * time.Second}
	// Small quotas so that creates collide with them.
	if a := request(c, "PUT", urls["a"]+"/v2.0/quotas/default", map[string]any{"quota": map[string]any{
		"network": 4, "port": 40, "tap_service": 10, "tap_flow": 30}}); a.code != 200 {
		t.Fatalf("PUT quota = %d: %s", a.code, a.body)
	}

	duration := churnDuration
	if testing.Short() {
		duration = 5 * time.Second
	}
	const perNode = 3
	// A small pool of MACs on two interfaces: MAC collisions.
	macs := make([]string, 12)
	for i := range macs {
		macs[i] = fmt.Sprintf("fa:16:3e:14:00:%02x", i)
	}
	ifaces := []string{"chaos0", "chaos1"}
	pool := churnPool{networks: []string{defaultNetwork}, acked: map[string]bool{defaultNetwork: true}}
	stats := map[string]*churnStats{}
	for _, n := range nodes {
		stats[n] = &churnStats{codes: map[int]int{}, ops: map[string]int{}, sample: map[string]string{}}
	}
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for ni, n := range nodes {
		for w := range perNode {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(ni), uint64(w)))
				base, st := urls[n]+"/v2.0", stats[n]
				for i := 0; time.Now().Before(stop); i++ {
					var op string
					var a apiAnswer
					switch k := r.IntN(100); {
					case k < 3: // networks cannot be deleted: their quota fills
						op = "create network"
						a = request(c, "POST", base+"/networks", map[string]any{"network": map[string]any{
							"name": fmt.Sprintf("n-%s%d-%d", n, w, i)}})
						if a.code == 201 {
							pool.add(&pool.networks, idOf(a.body, "network"))
						}
					case k < 28:
						op = "create port"
						a = request(c, "POST", base+"/ports", map[string]any{"port": map[string]any{
							"name": fmt.Sprintf("p-%s%d-%d", n, w, i), "network_id": pool.pick(r, &pool.networks),
							"mac_address": macs[r.IntN(len(macs))], "binding:host_id": nodes[r.IntN(len(nodes))],
							"binding:profile": map[string]string{"interface": ifaces[r.IntN(len(ifaces))]}}})
						if a.code == 201 {
							pool.add(&pool.ports, idOf(a.body, "port"))
						}
					case k < 34:
						op = "delete port"
						a = pool.del(c, &pool.ports, base+"/ports/", pool.pick(r, &pool.ports))
					case k < 50:
						op = "create tap service"
						port := pool.pick(r, &pool.ports)
						a = request(c, "POST", base+"/taas/tap_services", map[string]any{"tap_service": map[string]any{
							"name": fmt.Sprintf("s-%s%d-%d", n, w, i), "port_id": port}})
						if a.code == 201 {
							pool.add(&pool.services, idOf(a.body, "tap_service"))
						}
						pool.dropNamed(a, &pool.ports, port)
					case k < 55:
						op = "delete tap service"
						a = pool.del(c, &pool.services, base+"/taas/tap_services/", pool.pick(r, &pool.services))
					case k < 85:
						op = "create tap flow"
						svc, port := pool.pick(r, &pool.services), pool.pick(r, &pool.ports)
						a = request(c, "POST", base+"/taas/tap_flows", map[string]any{"tap_flow": map[string]any{
							"name": fmt.Sprintf("f-%s%d-%d", n, w, i), "tap_service_id": svc,
							"source_port": port, "direction": "BOTH"}})
						if a.code == 201 {
							pool.add(&pool.flow, idOf(a.body, "tap_flow"))
						}
						pool.dropNamed(a, &pool.services, svc)
						pool.dropNamed(a, &pool.ports, port)
					case k < 93:
						op = "delete tap flow"
						a = pool.del(c, &pool.flow, base+"/taas/tap_flows/", pool.pick(r, &pool.flow))
					default:
						op = "list tap flows"
						a = request(c, "GET", base+"/taas/tap_flows", nil)
					}
					st.record(op, a)
				}
			})
		}
	}
	wg.Wait()

	for _, n := range nodes {
		st := stats[n]
		codes := slices.Sorted(maps.Keys(st.codes))
		var table []string
		total := 0
		for _, code := range codes {
			table = append(table, fmt.Sprintf("%d: %d", code, st.codes[code]))
			total += st.codes[code]
		}
		slices.Sort(st.took)
		p99 := st.took[len(st.took)*99/100]
		t.Logf("node %s: %d requests in %v, %.0f req/s, p99 %v; by code: %s", n, total, duration,
			float64(total)/duration.Seconds(), p99.Round(time.Microsecond), strings.Join(table, ", "))
		var byOp []string
		for _, k := range slices.Sorted(maps.Keys(st.ops)) {
			byOp = append(byOp, fmt.Sprintf("%s: %d", k, st.ops[k]))
		}
		t.Logf("node %s by request: %s", n, strings.Join(byOp, ", "))
		if n == "a" {
			for _, k := range slices.Sorted(maps.Keys(st.sample)) {
				t.Logf("node a, first %s: %.200s", k, st.sample[k])
			}
		}
		for _, b := range st.bad {
			t.Errorf("node %s: %s", n, b)
		}
	}

	checkIntegrity(t, db, pool.acked)
	// Every node lists the same resources with the same statuses (once
	// the last changes have reached every node's reconciler).
	var last string
	start := time.Now()
	for {
		var views []string
		for _, n := range nodes {
			views = append(views, fleetView(t, c, urls[n]))
		}
		if views[0] == views[1] && views[1] == views[2] {
			t.Logf("every node lists the same %d resources and statuses %v after the churn", strings.Count(views[0], "\n"), time.Since(start).Round(time.Millisecond))
			break
		}
		last = strings.Join(views, "\n---\n")
		if time.Since(start) > 15*time.Second {
			t.Fatalf("the nodes' lists differ 15 s after the churn:\n%s", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// idOf is the id of the resource kind in a create's answer.
func idOf(body []byte, kind string) string {
	var out map[string]struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(body, &out) // a 201 is JSON
	return out[kind].ID
}

// fleetView is what url's API lists: one line per network, port, tap
// service and tap flow, with its status, sorted.
func fleetView(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	var lines []string
	for _, kind := range []struct{ path, key string }{
		{"/v2.0/networks", "networks"}, {"/v2.0/ports", "ports"},
		{"/v2.0/taas/tap_services", "tap_services"}, {"/v2.0/taas/tap_flows", "tap_flows"},
	} {
		a := request(c, "GET", url+kind.path, nil)
		if a.code != 200 {
			t.Fatalf("GET %s%s = %d: %s", url, kind.path, a.code, a.body)
		}
		var out map[string][]map[string]any
		if err := json.Unmarshal(a.body, &out); err != nil {
			t.Fatalf("GET %s%s: %v", url, kind.path, err)
		}
		for _, r := range out[kind.key] {
			lines = append(lines, fmt.Sprintf("%s %v %v %v", kind.key, r["id"], r["status"], r["status_reason"]))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// checkIntegrity checks, in SQL on the database db, what the API's rules
// and the schema promise: no flow without its service or source port, no
// service without its port, quota usages equal to the rows, no two ports
// with one MAC on an interface, no row that no create acknowledged (its
// id in acked).
func checkIntegrity(t *testing.T, db string, acked map[string]bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	checks := []struct{ name, query string }{
		{"flows without their tap service", `SELECT id FROM tap_flows f WHERE NOT EXISTS (SELECT 1 FROM tap_services s WHERE s.id = f.tap_service_id)`},
		{"flows without their source port", `SELECT id FROM tap_flows f WHERE NOT EXISTS (SELECT 1 FROM ports p WHERE p.id = f.source_port)`},
		{"tap services without their port", `SELECT id FROM tap_services s WHERE NOT EXISTS (SELECT 1 FROM ports p WHERE p.id = s.port_id)`},
		{"ports without their network", `SELECT id FROM ports p WHERE NOT EXISTS (SELECT 1 FROM networks n WHERE n.id = p.network_id)`},
		{"MACs on an interface of a node twice", `SELECT host_id || ' ' || iface || ' ' || mac_address FROM ports WHERE iface <> '' GROUP BY host_id, iface, mac_address HAVING count(*) > 1`},
		{"quota usages unequal to the rows", `
			WITH rows AS (
				SELECT project_id, 'network' AS resource, count(*) AS n FROM networks GROUP BY project_id
				UNION ALL SELECT project_id, 'port', count(*) FROM ports GROUP BY project_id
				UNION ALL SELECT project_id, 'tap_service', count(*) FROM tap_services GROUP BY project_id
				UNION ALL SELECT project_id, 'tap_flow', count(*) FROM tap_flows GROUP BY project_id)
			SELECT coalesce(u.project_id, r.project_id) || ' ' || coalesce(u.resource, r.resource) || ': in_use ' ||
				coalesce(u.in_use, 0) || ', rows ' || coalesce(r.n, 0)
			FROM quota_usages u FULL JOIN rows r ON u.project_id = r.project_id AND u.resource = r.resource
			WHERE coalesce(u.in_use, 0) <> coalesce(r.n, 0)`},
		{"quota limits exceeded", `
			SELECT q.resource || ': ' || u.in_use || ' > ' || q.hard_limit FROM quotas q
			JOIN quota_usages u ON u.project_id = q.project_id AND u.resource = q.resource
			WHERE q.hard_limit >= 0 AND u.in_use > q.hard_limit`},
	}
	for _, ch := range checks {
		rows, err := conn.Query(ctx, ch.query)
		if err != nil {
			t.Fatalf("%s: %v", ch.name, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", ch.name, err)
		}
		if len(got) > 0 {
			t.Errorf("%s: %v", ch.name, got)
		}
	}
	rows, err := conn.Query(ctx, `SELECT 'network ' || id FROM networks UNION ALL SELECT 'port ' || id FROM ports
		UNION ALL SELECT 'tap_service ' || id FROM tap_services UNION ALL SELECT 'tap_flow ' || id FROM tap_flows`)
	if err != nil {
		t.Fatal(err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if _, id, _ := strings.Cut(r, " "); !acked[id] {
			t.Errorf("%s is in the database, but no create answered 201 with its id", r)
		}
	}
	var n [4]int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM networks), (SELECT count(*) FROM ports),
		(SELECT count(*) FROM tap_services), (SELECT count(*) FROM tap_flows)`).Scan(&n[0], &n[1], &n[2], &n[3]); err != nil {
		t.Fatal(err)
	}
	t.Logf("after the churn: %d networks, %d ports, %d tap services, %d tap flows", n[0], n[1], n[2], n[3])
}

func TestFleetDatabaseCut(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	pg := testutil.StartPostgresCluster(t)
	db := pg.CreateDB(t)
	bin := testutil.BuildTaasd(t)
	topoB, topoC := newE2ETopo(t), newE2ETopo(t)
	daemons := map[string]*testutil.Taasd{}
	apis := map[string]*xdpDaemon{}
	for _, n := range []string{"a", "b", "c"} {
		daemons[n] = testutil.StartTaasd(t, bin, "--db", db, "--node", n, "--node-timeout", "3", "--dataplane", "xdp",
			"--pin-dir", "", "--log-level", "debug")
		apis[n] = &xdpDaemon{url: daemons[n].URL}
	}
	apiA, apiC := apis["a"], apis["c"]
	vmB, vmC, peer := "fa:16:3e:00:02:0b", "fa:16:3e:00:02:0c", "fa:16:3e:00:02:99"
	hwB, hwC, hwPeer := packettest.MustMAC(vmB), packettest.MustMAC(vmC), packettest.MustMAC(peer)
	srcB := apiA.nodePort(t, defaultNetwork, "vm-b", vmB, topoB.capIf, "b")
	monB := apiA.nodePort(t, defaultNetwork, "mon-b", "fa:16:3e:00:02:9b", topoB.monIf, "b")
	flowB := apiA.createFlow(t, "flow-b", apiA.createService(t, "svc-b", monB), srcB, "BOTH", nil)
	// ACTIVE through every node before the cut: a node's view of the
	// others is read at its start and then at each heartbeat (1 s), so
	// for up to a second a node that started first shows a later one's
	// resources "never seen".
	for _, api := range apis {
		api.waitFlow(t, flowB, "ACTIVE", "", 20*time.Second)
	}
	topoB.sendFrames(t, hwB, hwPeer, 1, 3)

	// The cut: PostgreSQL stopped (a fast shutdown: every connection
	// closed), then started again on the same data directory.
	c := &http.Client{Timeout: 30 * time.Second}
	pg.Stop()
	cut := time.Now()
	// Frames injected at b during the cut reach b's monitor: the data
	// plane keeps its last plan.
	topoB.capture.Reset()
	sent := 0
	// Reads and writes through every node answer 503 with a NeutronError.
	var worst time.Duration
	for time.Since(cut) < dbCut {
		if err := topoB.inject.Send(packettest.Frame(hwPeer, hwB, nil, uint32(100+sent), 64)); err != nil {
			t.Fatal(err)
		}
		sent++
		for n, api := range apis {
			for _, rq := range []struct {
				method, path string
				body         any
			}{
				{"GET", "/v2.0/taas/tap_flows", nil},
				{"GET", "/v2.0/ports/" + srcB, nil},
				{"POST", "/v2.0/taas/tap_services", map[string]any{"tap_service": map[string]any{"name": "cut", "port_id": srcB}}},
			} {
				a := request(c, rq.method, api.url+rq.path, rq.body)
				worst = max(worst, a.took)
				if a.code != http.StatusServiceUnavailable || !a.neutronError() {
					t.Errorf("node %s during the cut: %s %s = %d in %v, want 503 with a NeutronError: %.300s",
						n, rq.method, rq.path, a.code, a.took, a.body)
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	topoB.capture.WaitN(sent, 10*time.Second)
	t.Logf("PostgreSQL stopped for %v: %d frames injected at b all reached its monitor; every node answered 503 NeutronError, the slowest in %v",
		time.Since(cut).Round(time.Millisecond), sent, worst.Round(time.Microsecond))
	for n, d := range daemons {
		select {
		case <-d.Exited():
			t.Fatalf("node %s exited during the cut:\n%s", n, d.Logs())
		default:
		}
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	cutTook := back.Sub(cut)

	// Every node's API answers again.
	for n, api := range apis {
		for {
			a := request(c, "GET", api.url+"/v2.0/taas/tap_flows/"+flowB, nil)
			if a.code == 200 {
				t.Logf("node %s answers again %v after PostgreSQL's return", n, time.Since(back).Round(time.Millisecond))
				break
			}
			if time.Since(back) > 30*time.Second {
				t.Fatalf("node %s: GET tap flow = %d 30 s after PostgreSQL's return: %s", n, a.code, a.body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// What the heartbeats did: each node was unseen for the whole cut,
	// longer than the node timeout (3 s). Watch flow-b's status through
	// every node for 5 s: a DOWN "node b not seen since" would be a node
	// marking another DOWN because it itself could not reach the
	// database.
	seen := map[string]bool{}
	for watch := time.Now(); time.Since(watch) < 5*time.Second; time.Sleep(50 * time.Millisecond) {
		for n, api := range apis {
			a := request(c, "GET", api.url+"/v2.0/taas/tap_flows/"+flowB, nil)
			var out struct {
				TapFlow struct {
					Status       string `json:"status"`
					StatusReason string `json:"status_reason"`
				} `json:"tap_flow"`
			}
			_ = json.Unmarshal(a.body, &out) // a failed request shows as an empty status
			s := fmt.Sprintf("through %s: %d %s %q at +%v", n, a.code, out.TapFlow.Status, out.TapFlow.StatusReason,
				time.Since(back).Round(100*time.Millisecond))
			key := n + out.TapFlow.Status + out.TapFlow.StatusReason
			if !seen[key] {
				seen[key] = true
				t.Logf("flow-b after the return %s", s)
			}
			if out.TapFlow.Status != "ACTIVE" {
				t.Errorf("flow-b after the return %s, want ACTIVE", s)
			}
		}
	}

	// A write through a reaches c's data plane.
	created := time.Now()
	srcC := apiA.nodePort(t, defaultNetwork, "vm-c", vmC, topoC.capIf, "c")
	monC := apiA.nodePort(t, defaultNetwork, "mon-c", "fa:16:3e:00:02:9c", topoC.monIf, "c")
	flowC := apiA.createFlow(t, "flow-c", apiA.createService(t, "svc-c", monC), srcC, "BOTH", nil)
	apiC.waitFlow(t, flowC, "ACTIVE", "", 20*time.Second)
	topoC.sendFrames(t, hwC, hwPeer, 201, 3)
	topoB.sendFrames(t, hwB, hwPeer, 301, 3)
	t.Logf("cut %v; after the return, a flow on c created through a (two ports, a service, the flow) ACTIVE through c and delivering %v after its first request",
		cutTook.Round(time.Millisecond), time.Since(created).Round(time.Millisecond))
}
