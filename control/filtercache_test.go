package control

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taas-appliance/taas/pcapfilter"
)

// TestVerdictCache: a verdict is compiled once, refusals are cached too,
// and the least recently used verdict goes first.
func TestVerdictCache(t *testing.T) {
	c := newVerdictCache(2)
	if r := c.check("tcp"); r != "" {
		t.Fatalf("check(tcp) = %q", r)
	}
	want := filterRefusal(t, "vlan")
	if r := c.check("vlan"); "Invalid input for filter. Reason: "+r+"." != want {
		t.Fatalf("check(vlan) = %q, want the reason of %q", r, want)
	}
	c.check("tcp") // tcp is now the most recently used
	c.check("udp") // evicts vlan
	if n := c.len(); n != 2 {
		t.Fatalf("%d verdicts cached, want 2", n)
	}
	c.mu.Lock()
	_, tcp := c.byKey["tcp"]
	_, vlan := c.byKey["vlan"]
	c.mu.Unlock()
	if !tcp || vlan {
		t.Errorf("cached tcp %v, vlan %v: want tcp kept and vlan evicted", tcp, vlan)
	}
}

// TestFilterBulkDistinctLimit: a bulk with more than maxRequestFilters
// distinct expressions is refused before any is compiled; repeats count
// once.
func TestFilterBulkDistinctLimit(t *testing.T) {
	ts := startServer(t, Config{})
	before := filterVerdicts.len()
	r := ts.do("POST", "/v2.0/taas/tap_flows", flowBulk(maxRequestFilters+1, 0, func(i int) string {
		return fmt.Sprintf("tcp port %d and net 198.51.%d.0/24", 1000+i, i)
	}, "vlan"))
	if r.status != 400 {
		t.Fatalf("bulk of %d distinct filters = %d %s, want 400", maxRequestFilters+1, r.status, r.raw)
	}
	if typ, msg := neutronErr(t, r); typ != "HTTPBadRequest" ||
		msg != "The request holds 66 distinct filter expressions: the limit is 64" {
		t.Errorf("got %s %q", typ, msg)
	}
	if n := filterVerdicts.len(); n != before {
		t.Errorf("%d verdicts cached after the refusal, %d before: nothing should have been compiled", n, before)
	}
	// 64 distinct, repeated, and a refused one: the 400 is the refusal's.
	r = ts.do("POST", "/v2.0/taas/tap_flows", flowBulk(3*maxRequestFilters, maxRequestFilters-1, func(i int) string {
		return fmt.Sprintf("tcp port %d", 2000+i)
	}, "vlan"))
	if typ, msg := neutronErr(t, r); r.status != 400 || msg != filterRefusal(t, "vlan") {
		t.Errorf("bulk of 63 distinct filters and vlan = %d %s %q, want the vlan refusal", r.status, typ, msg)
	}
}

// flowBulk is a bulk create body of n tap flows (of made-up services and
// ports: validation comes first) whose i-th filter is expr(i % distinct)
// (expr(i) when distinct is 0), followed by one whose filter is last.
func flowBulk(n, distinct int, expr func(i int) string, last string) string {
	var b strings.Builder
	b.WriteString(`{"tap_flows": [`)
	item := func(i int, f string) {
		fmt.Fprintf(&b, `{"tap_flow": {"tap_service_id": "00000000-0000-4000-8000-%012d", `+
			`"source_port": "00000000-0000-4000-9000-%012d", "direction": "IN", "filter": %q}}, `, i, i, f)
	}
	for i := 0; i < n; i++ {
		k := i
		if distinct > 0 {
			k = i % distinct
		}
		item(i, expr(k))
	}
	item(n, last)
	s := strings.TrimSuffix(b.String(), ", ")
	return s + "]}"
}

// TestFilterBulkCannotStallOthers: a member sending, on every decode slot
// at once, bulks of 899 heavy filters and one refused one (distinct
// expressions that each took libpcap ~25 ms before the term limit, and
// the heaviest accepted ones, repeated) cannot make another project's
// write wait for a slot: it is answered, never 503. Before the limits,
// each such bulk held the compiler ~20 s and the other write got 503
// after DecodeWait.
func TestFilterBulkCannotStallOthers(t *testing.T) {
	ts := startIsoServer(t, Config{})
	monB := ts.createPortIn("proj-b", "b-mon", "mon0", "", hAdmin)
	// 40 nets: ~25 ms each for libpcap, refused now by MaxTerms.
	heavy := func(i int) string {
		var nets []string
		for k := 0; k < 39; k++ {
			nets = append(nets, fmt.Sprintf("1.%d/16", k))
		}
		return "net " + strings.Join(nets, " or ") + fmt.Sprintf(" or %d.%d/16", 10+i/200, i%200)
	}
	// At the limit: 16 nets, accepted.
	atLimit := func(i int) string {
		var nets []string
		for k := 0; k < pcapfilter.MaxTerms-1; k++ {
			nets = append(nets, fmt.Sprintf("1.%d/16", k))
		}
		return "net " + strings.Join(nets, " or ") + fmt.Sprintf(" or %d.%d/16", 10+i/200, i%200)
	}
	bodies := []string{
		flowBulk(899, 0, heavy, "vlan"),
		flowBulk(899, maxRequestFilters, atLimit, "vlan"),
	}
	// post is safe in goroutines (ts.do is not: it may call t.Fatal).
	post := func(path, body, token string) (int, string, time.Duration) {
		req, _ := http.NewRequest("POST", ts.base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Auth-Token", token)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error(), time.Since(start)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bulkTimes []time.Duration
	stop := make(chan struct{})
	for w := 0; w < DefaultMaxDecodes; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for round := 0; round < 6; round++ {
				select {
				case <-stop:
					return
				default:
				}
				st, _, d := post("/v2.0/taas/tap_flows", bodies[(w+round)%len(bodies)], "ta")
				mu.Lock()
				bulkTimes = append(bulkTimes, d)
				mu.Unlock()
				if st != 400 && st != 503 {
					t.Errorf("attacking bulk = %d, want 400 (or 503 for a slot)", st)
				}
			}
		}(w)
	}
	time.Sleep(50 * time.Millisecond)
	for i := 0; i < 5; i++ {
		st, body, d := post("/v2.0/taas/tap_services", fmt.Sprintf(`{"tap_service": {"name": "b%d", "port_id": %q}}`, i, monB), "tb")
		t.Logf("project b's write %d: %d in %v", i, st, d.Round(time.Millisecond))
		if st != 201 {
			t.Errorf("project b's write %d = %d %s, want 201", i, st, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	var max, sum time.Duration
	for _, d := range bulkTimes {
		sum += d
		if d > max {
			max = d
		}
	}
	t.Logf("%d attacking bulks: mean %v, max %v", len(bulkTimes), (sum / time.Duration(len(bulkTimes))).Round(time.Millisecond),
		max.Round(time.Millisecond))
}

// TestFastFilterLimit: a tap flow whose filter would be the 65th distinct
// expression among the flows on one capture interface (every project's)
// is 409, naming the interface and the limit; repeats, flows without a
// filter and other interfaces are not limited; a bulk counts its own
// earlier items and fails whole.
func TestFastFilterLimit(t *testing.T) {
	ts := startIsoServer(t, Config{})
	srcA := ts.createPortIn("proj-a", "a-src", "cap0", "fa:16:3e:00:0d:01", hAdmin)
	srcB := ts.createPortIn("proj-b", "b-src", "cap0", "fa:16:3e:00:0d:02", hAdmin)
	otherB := ts.createPortIn("proj-b", "b-other", "cap1", "fa:16:3e:00:0d:03", hAdmin)
	svcA := ts.createService("a", ts.createPortIn("proj-a", "a-mon", "mon0", "", hAdmin), hA)
	svcB := ts.createService("b", ts.createPortIn("proj-b", "b-mon", "mon1", "", hAdmin), hB)
	expr := func(i int) string { return fmt.Sprintf("tcp port %d", 1000+i) }
	bulk := func(svc, src string, from, to int) string {
		var items []string
		for i := from; i < to; i++ {
			items = append(items, fmt.Sprintf(`{"tap_service_id": %q, "source_port": %q, "direction": "IN", "filter": %q}`,
				svc, src, expr(i)))
		}
		return `{"tap_flows": [` + strings.Join(items, ", ") + `]}`
	}
	flow := func(svc, src string, filter any, project ...string) string {
		f := map[string]any{"tap_service_id": svc, "source_port": src, "direction": "IN", "filter": filter}
		for _, p := range project {
			f["project_id"] = p
		}
		return jsonBody(map[string]any{"tap_flow": f})
	}
	mustBulk := func(body string) {
		t.Helper()
		if r := ts.do("POST", "/v2.0/taas/tap_flows", body, hA); r.status != 201 {
			t.Fatalf("bulk = %d %.300s, want 201", r.status, r.raw)
		}
	}
	mustBulk(bulk(svcA, srcA, 0, 62))
	// Three more in one bulk: the 63rd and 64th fit, the 65th does not:
	// the bulk fails whole.
	r := ts.do("POST", "/v2.0/taas/tap_flows", bulk(svcA, srcA, 62, 65), hA)
	const full = "The capture interface cap0 already carries 64 distinct filter expressions, the most its fast path " +
		"holds (64): use one of them, or no filter"
	if typ, msg := neutronErr(t, r); r.status != 409 || typ != "TapFlowFilterLimit" || msg != full {
		t.Fatalf("bulk past the limit = %d %s %q, want 409 TapFlowFilterLimit %q", r.status, typ, msg, full)
	}
	if n := len(ts.list("/v2.0/taas/tap_flows", "tap_flows", hA)); n != 62 {
		t.Fatalf("%d flows after the refused bulk, want 62", n)
	}
	mustBulk(bulk(svcA, srcA, 62, 64))
	runIsoCases(t, ts, []isoCase{
		{"65th on the interface, another project", "POST", "/v2.0/taas/tap_flows", flow(svcB, srcB, expr(64)), hB,
			409, "TapFlowFilterLimit", full},
		{"65th by the admin", "POST", "/v2.0/taas/tap_flows", flow(svcB, srcB, "udp", "proj-b"), hAdmin,
			409, "TapFlowFilterLimit", full},
		{"a repeated expression", "POST", "/v2.0/taas/tap_flows", flow(svcB, srcB, expr(7)), hB, 201, "", ""},
		{"no filter", "POST", "/v2.0/taas/tap_flows", flow(svcB, srcB, nil), hB, 201, "", ""},
		{"another interface", "POST", "/v2.0/taas/tap_flows", flow(svcB, otherB, expr(64)), hB, 201, "", ""},
	})
}
