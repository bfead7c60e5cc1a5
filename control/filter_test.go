package control

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/pcapfilter"
)

// Issue 11: a tap flow's filter (taas-flow-filter) and the snaplen of tap
// services and tap mirrors (taas-snaplen).

// filterRefusal is the message the API answers for an expression
// pcapfilter refuses: its reason, verbatim, in Neutron's wording.
func filterRefusal(t *testing.T, expr string) string {
	t.Helper()
	_, err := pcapfilter.Compile(expr)
	if err == nil {
		t.Fatalf("pcapfilter.Compile(%.40q) accepted it", expr)
	}
	return "Invalid input for filter. Reason: " + err.Error() + "."
}

// planned is the entry of a plan's list whose id (idOf) is id.
func planned[T any](t *testing.T, list []T, id string, idOf func(T) string) T {
	t.Helper()
	for _, x := range list {
		if idOf(x) == id {
			return x
		}
	}
	var zero T
	t.Fatalf("%s not in the plan", id)
	return zero
}

// TestFilterSnaplenAPI: snaplen is null by default, set at create, changed
// and cleared by update (name-only updates keep it), and each change
// reaches the data plane's plan; a tap flow's filter is echoed as sent,
// shown, listed, usable in filters and fields=, refused by PUT, and in
// the plan.
func TestFilterSnaplenAPI(t *testing.T) {
	dp := newRecorder()
	ts := startServer(t, Config{DataPlane: dp})
	ctx := context.Background()
	src := ts.createPort("src", "cap0", "fa:16:3e:00:0b:01")
	mon := ts.createPort("mon", "mon0", "")
	sync := func() *broker.Plan {
		t.Helper()
		if err := ts.srv.Reconciler().Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return dp.last()
	}
	planService := func(id string) broker.Service {
		t.Helper()
		return planned(t, sync().Services, id, func(s broker.Service) string { return s.ID })
	}
	planMirror := func(id string) broker.Mirror {
		t.Helper()
		return planned(t, sync().Mirrors, id, func(m broker.Mirror) string { return m.ID })
	}
	services, mirrorsPath := "/v2.0/taas/tap_services/", mirrors+"/"

	svc := ts.must(201, "POST", strings.TrimSuffix(services, "/"), fmt.Sprintf(`{"tap_service": {"port_id": %q, "snaplen": 128}}`, mon), "tap_service")
	id := svc["id"].(string)
	if svc["snaplen"] != 128.0 {
		t.Errorf("created service = %v, want snaplen 128", svc)
	}
	plain := ts.createService("plain", mon)
	if s := ts.must(200, "GET", services+plain, "", "tap_service"); s["snaplen"] != nil {
		t.Errorf("service without snaplen = %v, want snaplen null", s)
	}
	if s := planService(id); s.Snaplen != 128 {
		t.Errorf("plan service = %+v, want Snaplen 128", s)
	}
	if s := planService(plain); s.Snaplen != 0 {
		t.Errorf("plan service without snaplen = %+v, want Snaplen 0", s)
	}
	for _, tc := range []struct {
		body string
		want any // the API's snaplen
		plan int
	}{
		{`{"tap_service": {"snaplen": 65535}}`, 65535.0, 65535},
		{`{"tap_service": {"name": "renamed"}}`, 65535.0, 65535},
		{`{"tap_service": {"snaplen": 64, "description": "d"}}`, 64.0, 64},
		{`{"tap_service": {"snaplen": null}}`, nil, 0},
	} {
		up := ts.must(200, "PUT", services+id, tc.body, "tap_service")
		if up["snaplen"] != tc.want {
			t.Errorf("PUT %s = %v, want snaplen %v", tc.body, up, tc.want)
		}
		if got := ts.must(200, "GET", services+id, "", "tap_service")["snaplen"]; got != tc.want {
			t.Errorf("after PUT %s, snaplen = %v, want %v", tc.body, got, tc.want)
		}
		if s := planService(id); s.Snaplen != tc.plan {
			t.Errorf("after PUT %s, plan service = %+v, want Snaplen %d", tc.body, s, tc.plan)
		}
	}
	ts.must(200, "PUT", services+id, `{"tap_service": {"snaplen": 200}}`, "tap_service")
	if got := ts.list("/v2.0/taas/tap_services?snaplen=200", "tap_services"); len(got) != 1 || got[0]["id"] != id {
		t.Errorf("tap_services?snaplen=200 = %v, want %s", got, id)
	}
	if got := ts.must(200, "GET", services+id+"?fields=snaplen", "", "tap_service"); len(got) != 1 || got["snaplen"] != 200.0 {
		t.Errorf("fields=snaplen = %v", got)
	}

	m := ts.must(201, "POST", mirrors, strings.Replace(mirrorJSON(src, `{"IN": 7}`, "198.51.100.7", "gre"), `"name"`,
		`"snaplen": 96, "name"`, 1), "tap_mirror")
	mid := m["id"].(string)
	if m["snaplen"] != 96.0 {
		t.Errorf("created mirror = %v, want snaplen 96", m)
	}
	if pm := planMirror(mid); pm.Snaplen != 96 {
		t.Errorf("plan mirror = %+v, want Snaplen 96", pm)
	}
	if up := ts.must(200, "PUT", mirrorsPath+mid, `{"tap_mirror": {"snaplen": 1500}}`, "tap_mirror"); up["snaplen"] != 1500.0 {
		t.Errorf("PUT mirror snaplen 1500 = %v", up)
	}
	if pm := planMirror(mid); pm.Snaplen != 1500 {
		t.Errorf("after PUT, plan mirror = %+v, want Snaplen 1500", pm)
	}
	ts.must(200, "PUT", mirrorsPath+mid, `{"tap_mirror": {"snaplen": null}}`, "tap_mirror")
	if pm := planMirror(mid); pm.Snaplen != 0 {
		t.Errorf("after PUT null, plan mirror = %+v, want Snaplen 0", pm)
	}

	// A flow without a filter shows null, and filters on it find nothing.
	bare := ts.createFlow("bare", plain, src, "BOTH", nil)
	if f := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+bare, "", "tap_flow"); f["filter"] != nil {
		t.Errorf("flow without filter = %v, want filter null", f)
	}
	if got := ts.list("/v2.0/taas/tap_flows?filter=tcp", "tap_flows"); len(got) != 0 {
		t.Errorf("tap_flows?filter=tcp = %v, want none", got)
	}

	// Stored and echoed as sent, blanks included.
	const expr = "tcp  port 443 and not host 198.51.100.9"
	body := jsonBody(map[string]any{"tap_flow": map[string]any{"name": "https", "tap_service_id": id,
		"source_port": src, "direction": "IN", "filter": expr}})
	f := ts.must(201, "POST", "/v2.0/taas/tap_flows", body, "tap_flow")
	fid := f["id"].(string)
	if f["filter"] != expr {
		t.Errorf("created flow = %v, want filter %q", f, expr)
	}
	if got := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+fid, "", "tap_flow"); got["filter"] != expr {
		t.Errorf("shown flow = %v, want filter %q", got, expr)
	}
	if got := ts.list("/v2.0/taas/tap_flows?filter="+url.QueryEscape(expr), "tap_flows"); len(got) != 1 || got[0]["id"] != fid {
		t.Errorf("tap_flows?filter=%q = %v, want %s", expr, got, fid)
	}
	if got := ts.list("/v2.0/taas/tap_flows?fields=id&fields=filter", "tap_flows"); len(got) != 2 ||
		len(got[0]) != 2 || got[0]["filter"] != nil || got[1]["filter"] != expr {
		t.Errorf("tap_flows?fields=id&fields=filter = %v", got)
	}
	r := ts.do("PUT", "/v2.0/taas/tap_flows/"+fid, `{"tap_flow": {"filter": "udp"}}`)
	if typ, msg := neutronErr(t, r); r.status != 400 || typ != "HTTPBadRequest" || msg != "Cannot update read-only attribute filter" {
		t.Errorf("PUT filter = %d %s %q, want 400 Cannot update read-only attribute filter", r.status, typ, msg)
	}
	for _, pf := range sync().Flows {
		want := map[string]string{fid: expr, bare: ""}[pf.ID]
		if pf.Filter != want {
			t.Errorf("plan flow %s Filter = %q, want %q", pf.ID, pf.Filter, want)
		}
	}
}

// TestFilterSnaplenBadInput: every bad filter or snaplen is a 400 with a
// NeutronError body, never a 500: refused expressions carry pcapfilter's
// reason verbatim.
func TestFilterSnaplenBadInput(t *testing.T) {
	ts := startServer(t, Config{})
	src := ts.createPort("src", "cap0", "fa:16:3e:00:0c:01")
	mon := ts.createPort("mon", "mon0", "")
	svc := ts.createService("s", mon)
	flow := ts.createFlow("f", svc, src, "IN", nil)
	mirror := ts.createMirror(src, `{"IN": 9}`, "198.51.100.9", "gre")

	flowWith := func(filter string) string {
		return fmt.Sprintf(`{"tap_flow": {"tap_service_id": %q, "source_port": %q, "direction": "IN", "filter": %s}}`,
			svc, src, filter)
	}
	type tc struct {
		name, method, path, body string
		msg                      string // the whole message
	}
	var tests []tc
	for _, e := range []struct{ name, expr string }{
		{"empty", ""},
		{"blanks", " \t "},
		{"10 KB", strings.Repeat("tcp or ", 1500) + "udp"},
		{"syntax", "tcp port"},
		{"dangling and", "tcp and"},
		{"unbalanced", "(tcp or udp"},
		{"vlan", "vlan 10"},
		{"vlan bare", "vlan and tcp"},
		{"unknown protocol", "ip proto frobnicate"},
		{"unknown primitive", "frobnicate"},
		{"host name", "host example.com"},
		{"host localhost", "src host localhost"},
		{"NUL inside", "tcp\x00 and frobnicate"},
	} {
		tests = append(tests, tc{"filter " + e.name, "POST", "/v2.0/taas/tap_flows", flowWith(jsonBody(e.expr)), ""})
		if strings.ContainsRune(e.expr, 0) {
			tests[len(tests)-1].msg = "Invalid input for filter. Reason: the expression holds a NUL character."
		} else {
			tests[len(tests)-1].msg = filterRefusal(t, e.expr)
		}
	}
	for _, v := range []struct{ json, shown string }{
		{`5`, "5"}, {`[1, "tcp"]`, "[1, 'tcp']"}, {`{"a": "tcp"}`, "{'a': 'tcp'}"}, {`true`, "True"},
	} {
		tests = append(tests, tc{"filter " + v.json, "POST", "/v2.0/taas/tap_flows", flowWith(v.json),
			"Invalid input for filter. Reason: '" + v.shown + "' is not a valid string."})
	}
	tests = append(tests,
		tc{"put filter", "PUT", "/v2.0/taas/tap_flows/" + flow, `{"tap_flow": {"filter": null}}`,
			"Cannot update read-only attribute filter"},
		tc{"filter on a service", "POST", "/v2.0/taas/tap_services",
			fmt.Sprintf(`{"tap_service": {"port_id": %q, "filter": "tcp"}}`, mon), "Unrecognized attribute(s) 'filter'"},
		tc{"snaplen on a flow", "POST", "/v2.0/taas/tap_flows",
			strings.Replace(flowWith("null"), `"filter"`, `"snaplen"`, 1), "Unrecognized attribute(s) 'snaplen'"},
		// Just under the body limit: the validator, not the reader, refuses.
		tc{"filter of 1000 KB", "POST", "/v2.0/taas/tap_flows", flowWith(jsonBody(strings.Repeat("x", 1000<<10))),
			filterRefusal(t, strings.Repeat("x", 1000<<10))},
	)
	for _, v := range []struct{ json, reason string }{
		{`0`, "'0' is too small - must be at least '64'"},
		{`63`, "'63' is too small - must be at least '64'"},
		{`-1`, "'-1' is too small - must be at least '64'"},
		{`65536`, "'65536' is too large - must be no larger than '65535'"},
		{`99999999999999999999999`, "'99999999999999999999999' is too large - must be no larger than '65535'"},
		{`-99999999999999999999999`, "'-99999999999999999999999' is too small - must be at least '64'"},
		{`"abc"`, "'abc' is not an integer"},
		{`"128"`, "'128' is not an integer"},
		{`1.5`, "'1.5' is not an integer"},
		{`128.0`, "'128.0' is not an integer"},
		{`1e3`, "'1e3' is not an integer"},
		{`true`, "'True' is not an integer:boolean"},
		{`[128]`, "'[128]' is not an integer"},
		{`{"n": 128}`, "'{'n': 128}' is not an integer"},
	} {
		msg := "Invalid input for snaplen. Reason: " + v.reason + "."
		tests = append(tests,
			tc{"service snaplen " + v.json, "POST", "/v2.0/taas/tap_services",
				fmt.Sprintf(`{"tap_service": {"port_id": %q, "snaplen": %s}}`, mon, v.json), msg},
			tc{"put service snaplen " + v.json, "PUT", "/v2.0/taas/tap_services/" + svc,
				fmt.Sprintf(`{"tap_service": {"snaplen": %s}}`, v.json), msg},
			tc{"mirror snaplen " + v.json, "POST", mirrors,
				strings.Replace(mirrorJSON(src, `{"OUT": 10}`, "198.51.100.9", "gre"), `"name"`, `"snaplen": `+v.json+`, "name"`, 1), msg},
			tc{"put mirror snaplen " + v.json, "PUT", mirrors + "/" + mirror,
				fmt.Sprintf(`{"tap_mirror": {"snaplen": %s}}`, v.json), msg})
	}
	ts.settle()
	before := ts.do("GET", "/v2.0/taas/tap_flows", "").raw + ts.do("GET", "/v2.0/taas/tap_services", "").raw +
		ts.do("GET", mirrors, "").raw
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.do(tc.method, tc.path, tc.body)
			if r.status != 400 {
				t.Fatalf("%s %s %.200s = %d %.300s, want 400", tc.method, tc.path, tc.body, r.status, r.raw)
			}
			if typ, msg := neutronErr(t, r); typ != "HTTPBadRequest" || msg != tc.msg {
				t.Errorf("%s %s = %s %.300q, want HTTPBadRequest %.300q", tc.method, tc.path, typ, msg, tc.msg)
			}
		})
	}
	after := ts.do("GET", "/v2.0/taas/tap_flows", "").raw + ts.do("GET", "/v2.0/taas/tap_services", "").raw +
		ts.do("GET", mirrors, "").raw
	if after != before {
		t.Errorf("refused requests changed the resources:\n%s\nwant\n%s", after, before)
	}
	// A body over the limit never reaches a validator: TestHTTPHygiene
	// checks its 413.
}

// TestStatsRejected: taas/stats shows each tap flow's rejected_packets
// next to its matched counters, 0 for a flow the data plane does not
// report.
func TestStatsRejected(t *testing.T) {
	dp := newRecorder()
	ts := startServer(t, Config{DataPlane: dp})
	src := ts.createPort("src", "cap0", "fa:16:3e:00:0d:01")
	svc := ts.createService("s", ts.createPort("mon", "mon0", ""))
	reported := ts.createFlow("reported", svc, src, "IN", nil)
	silent := ts.createFlow("silent", svc, src, "OUT", nil)
	dp.set(func(d *recordingDataPlane) {
		d.stats = broker.Stats{Flows: []broker.FlowStats{{ID: reported, MatchedPackets: 3, MatchedBytes: 180, RejectedPackets: 17}}}
	})
	st := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats")
	got := map[string]map[string]any{}
	for _, e := range st["tap_flows"].([]any) {
		m := e.(map[string]any)
		got[m["id"].(string)] = m
	}
	if f := got[reported]; f["rejected_packets"] != 17.0 || f["matched_packets"] != 3.0 {
		t.Errorf("stats of %s = %v, want matched_packets 3, rejected_packets 17", reported, f)
	}
	if f := got[silent]; f["rejected_packets"] != 0.0 {
		t.Errorf("stats of unreported %s = %v, want rejected_packets 0", silent, f)
	}
}
