package control

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

const mirrors = "/v2.0/taas/tap_mirrors"

// mirrorJSON is a tap_mirror create body; dirs is the directions' JSON.
func mirrorJSON(port, dirs, ip, typ string) string {
	return fmt.Sprintf(`{"tap_mirror": {"name": "m", "port_id": %q, "directions": %s, "remote_ip": %q, "mirror_type": %q}}`,
		port, dirs, ip, typ)
}

func (ts *testServer) createMirror(port, dirs, ip, typ string, headers ...string) string {
	ts.t.Helper()
	return ts.must(201, "POST", mirrors, mirrorJSON(port, dirs, ip, typ), "tap_mirror", headers...)["id"].(string)
}

// startMirrorServer is a token-mode server with capture interfaces cap0
// and cap1 and monitor mon0, the callers of isoTokens and a reader of
// proj-a (X-Auth-Token: tr).
func startMirrorServer(t *testing.T) *testServer {
	t.Helper()
	toks, err := LoadTokens(writeTokens(t, isoTokens+"tr proj-a reader\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, Config{Auth: AuthToken, Tokens: toks,
		Interfaces: map[string]string{"cap0": RoleCapture, "cap1": RoleCapture, "mon0": RoleMonitor}})
}

const hR = "X-Auth-Token: tr"

// TestTapMirrorAPI runs every rule of taas-api.md §5 (and tempest's
// test_tap_mirror.py) through the API, then ours: the tunnel id ranges of
// each mirror type, the capture-side port, no bulk, and 403 for a reader's
// write of a mirror it sees.
func TestTapMirrorAPI(t *testing.T) {
	ts := startMirrorServer(t)
	a1 := ts.createPortIn("proj-a", "a1", "cap0", "", hAdmin)
	a2 := ts.createPortIn("proj-a", "a2", "cap1", "", hAdmin)
	aMon := ts.createPortIn("proj-a", "a-mon", "mon0", "", hAdmin)
	b1 := ts.createPortIn("proj-b", "b1", "cap0", "", hAdmin)
	m1 := ts.createMirror(a1, `{"IN": 101}`, "192.0.2.10", "gre", hA)
	const missing = "5e3c2b1a-0f9e-4d8c-b7a6-958473625140"
	a, b, adm := []string{hA}, []string{hB}, []string{hAdmin}
	mb := mirrorJSON
	ts.runScenarios(t, []scenario{
		// §5.1/5.2: attributes, echoed as sent.
		{"create echoes", "POST", mirrors, mb(a1, `{"IN": 201, "OUT": "202"}`, "192.0.2.11", "erspanv1"), a, 201,
			`"directions":{"IN":201,"OUT":"202"},"id":`},
		{"create shows both projects", "POST", mirrors, mb(a1, `{"IN": 203}`, "192.0.2.11", "gre"), a, 201,
			`"project_id":"proj-a","remote_ip":"192.0.2.11","snaplen":null,"status":"DOWN","status_reason":"","tenant_id":"proj-a"`},
		{"without taas/", "POST", "/v2.0/tap_mirrors", mb(a2, `{"OUT": 204}`, "192.0.2.12", "gre"), a, 201, `"mirror_type":"gre"`},
		{"BOTH", "POST", mirrors, mb(a1, `{"BOTH": 300}`, "192.0.2.13", "gre"), a, 201, `"directions":{"BOTH":300}`},
		{"no directions", "POST", mirrors, mb(a1, `{}`, "192.0.2.13", "gre"), a, 201, `"directions":{}`},
		{"ipv6", "POST", mirrors, mb(a1, `{"IN": 301}`, "2001:db8::1", "gre"), a, 201, `"remote_ip":"2001:db8::1"`},
		{"integral float", "POST", mirrors, mb(a1, `{"IN": 302.0}`, "192.0.2.13", "gre"), a, 400,
			"Invalid input for directions. Reason: tunnel id 302.0 of direction IN must be an integer from 0 to 4294967295 for mirror_type gre"},
		{"unexpected key", "POST", mirrors, mb(a1, `{"something": 1}`, "192.0.2.13", "gre"), a, 400,
			"Invalid input for directions. Reason: Unexpected keys supplied: something."},
		{"directions not a dict", "POST", mirrors, mb(a1, `"IN"`, "192.0.2.13", "gre"), a, 400,
			"Invalid input for directions. Reason: 'IN' is not a dictionary."},
		{"null id", "POST", mirrors, mb(a1, `{"IN": null}`, "192.0.2.13", "gre"), a, 400, "Reason: 'None' is not an integer."},
		{"boolean id", "POST", mirrors, mb(a1, `{"IN": true}`, "192.0.2.13", "gre"), a, 400, "Reason: 'True' is not an integer:boolean."},
		{"word id", "POST", mirrors, mb(a1, `{"OUT": "abc"}`, "192.0.2.13", "gre"), a, 400, "Reason: 'abc' is not an integer."},
		{"fraction id", "POST", mirrors, mb(a1, `{"OUT": 1.5}`, "192.0.2.13", "gre"), a, 400, "Reason: '1.5' is not an integer."},
		{"erspanv2", "POST", mirrors, mb(a1, `{"IN": 401}`, "192.0.2.13", "erspanv2"), a, 400,
			"Invalid input for mirror_type. Reason: erspanv2 is not in valid_values."},
		{"bad ip", "POST", mirrors, mb(a1, `{"IN": 402}`, "192.101.0.420", "gre"), a, 400,
			"Invalid input for remote_ip. Reason: '192.101.0.420' is not a valid IP address."},
		{"leading zero ip", "POST", mirrors, mb(a1, `{"IN": 403}`, "192.0.2.010", "gre"), a, 400,
			"Reason: '192.0.2.010' is not an accepted IP address, '192.0.2.10' is recommended."},
		{"ipv6 zone", "POST", mirrors, mb(a1, `{"IN": 404}`, "fe80::1%cap0", "gre"), a, 400, "is not a valid IP address"},
		{"no port", "POST", mirrors, `{"tap_mirror": {"directions": {}, "remote_ip": "192.0.2.1", "mirror_type": "gre"}}`, a, 400,
			"Failed to parse request. Required attribute 'port_id' not specified"},
		{"no directions key", "POST", mirrors, `{"tap_mirror": {"port_id": "` + a1 + `", "remote_ip": "192.0.2.1", "mirror_type": "gre"}}`,
			a, 400, "Required attribute 'directions' not specified"},
		{"no remote_ip", "POST", mirrors, `{"tap_mirror": {"port_id": "` + a1 + `", "directions": {}, "mirror_type": "gre"}}`,
			a, 400, "Required attribute 'remote_ip' not specified"},
		{"no mirror_type", "POST", mirrors, `{"tap_mirror": {"port_id": "` + a1 + `", "directions": {}, "remote_ip": "192.0.2.1"}}`,
			a, 400, "Required attribute 'mirror_type' not specified"},
		{"no status attribute", "POST", mirrors, `{"tap_mirror": {"port_id": "` + a1 + `", "directions": {}, "remote_ip": "192.0.2.1",
			"mirror_type": "gre", "status": "ACTIVE"}}`, a, 400, "Attribute 'status' not allowed in POST"},
		{"long description", "POST", mirrors, `{"tap_mirror": {"port_id": "` + a1 + `", "directions": {}, "remote_ip": "192.0.2.1",
			"mirror_type": "gre", "description": "` + strings.Repeat("d", 256) + `"}}`, a, 400, "exceeds maximum length of 255"},
		// §5.3 rule 1: the port.
		{"missing port", "POST", mirrors, mb(missing, `{"IN": 501}`, "192.0.2.14", "gre"), a, 404,
			"Port " + missing + " could not be found."},
		{"other project's port", "POST", mirrors, mb(b1, `{"IN": 502}`, "192.0.2.14", "gre"), a, 404, "Port " + b1 + " could not be found."},
		{"port of another project than the mirror's", "POST", mirrors, `{"tap_mirror": {"project_id": "proj-a", "port_id": "` + b1 +
			`", "directions": {"IN": 503}, "remote_ip": "192.0.2.14", "mirror_type": "gre"}}`, adm, 403,
			"The specified port does not belong to the tenant"},
		// Rule 2: tunnel ids, raw, any direction, project-scoped.
		{"tunnel conflict other direction", "POST", mirrors, mb(a2, `{"OUT": 101}`, "192.0.2.15", "gre"), a, 409,
			"Tap Mirror with tunnel_id 101 already exists"},
		{"string does not conflict with int", "POST", mirrors, mb(a2, `{"IN": "101"}`, "192.0.2.15", "gre"), a, 201, `"IN":"101"`},
		{"string conflicts with string", "POST", mirrors, mb(a2, `{"OUT": "101"}`, "192.0.2.15", "erspanv1"), a, 409,
			"Tap Mirror with tunnel_id 101 already exists"},
		{"one id twice in one request", "POST", mirrors, mb(a2, `{"IN": 5, "OUT": 5}`, "192.0.2.16", "gre"), a, 201, `{"IN":5,"OUT":5}`},
		{"other project may reuse", "POST", mirrors, mb(b1, `{"IN": 101}`, "192.0.2.10", "gre"), b, 201, `"project_id":"proj-b"`},
		// Rule 3: several mirrors per port: a1 has many by now.
		// Ours: the range of each type's tunnel id.
		{"gre top", "POST", mirrors, mb(a1, `{"IN": 4294967295}`, "192.0.2.17", "gre"), a, 201, "4294967295"},
		{"gre over", "POST", mirrors, mb(a1, `{"IN": 4294967296}`, "192.0.2.17", "gre"), a, 400,
			"tunnel id 4294967296 of direction IN must be an integer from 0 to 4294967295 for mirror_type gre (the 32-bit GRE key)"},
		{"gre negative", "POST", mirrors, mb(a1, `{"OUT": "-1"}`, "192.0.2.17", "gre"), a, 400,
			"Invalid input for directions. Reason: tunnel id -1 of direction OUT must be an integer from 0 to 4294967295"},
		{"gre negative number", "POST", mirrors, mb(a1, `{"OUT": -7}`, "192.0.2.17", "gre"), a, 400, "tunnel id -7 of direction OUT"},
		{"gre string over", "POST", mirrors, mb(a1, `{"OUT": " 4294967296"}`, "192.0.2.17", "gre"), a, 400,
			"tunnel id  4294967296 of direction OUT"},
		// -0 is 0, as Python's int() reads it. Conflicts compare as
		// upstream's stored JSON does: numbers by value (its json.loads
		// reads -0 as 0), strings as sent.
		{"minus zero", "POST", mirrors, mb(a1, `{"IN": -0}`, "192.0.2.17", "erspanv1"), a, 201, `"directions":{"IN":-0}`},
		{"minus zero string", "POST", mirrors, mb(a1, `{"OUT": "-00"}`, "192.0.2.17", "erspanv3"), a, 201, `"directions":{"OUT":"-00"}`},
		{"zero conflicts with minus zero", "POST", mirrors, mb(a2, `{"BOTH": 0}`, "192.0.2.17", "gre"), a, 409,
			"Tap Mirror with tunnel_id 0 already exists"},
		{"zero string beside minus zero string", "POST", mirrors, mb(a2, `{"BOTH": "0"}`, "192.0.2.17", "gre"), a, 201,
			`"directions":{"BOTH":"0"}`},
		{"erspanv1 top", "POST", mirrors, mb(a1, `{"IN": 1023}`, "192.0.2.17", "erspanv1"), a, 201, `"mirror_type":"erspanv1"`},
		{"erspanv1 over", "POST", mirrors, mb(a1, `{"IN": 1024}`, "192.0.2.17", "erspanv1"), a, 400,
			"from 0 to 1023 for mirror_type erspanv1 (the 10-bit ERSPAN session id)"},
		{"erspanv3", "POST", mirrors, mb(a1, `{"OUT": " 1000 "}`, "192.0.2.17", "erspanv3"), a, 201, `"OUT":" 1000 "`},
		{"erspanv3 over", "POST", mirrors, mb(a1, `{"BOTH": "1024"}`, "192.0.2.17", "erspanv3"), a, 400,
			"from 0 to 1023 for mirror_type erspanv3"},
		{"vxlan top", "POST", mirrors, mb(a1, `{"IN": 16777215}`, "192.0.2.17", "vxlan"), a, 201, `"mirror_type":"vxlan"`},
		{"vxlan over", "POST", mirrors, mb(a1, `{"IN": 16777216}`, "192.0.2.17", "vxlan"), a, 400,
			"from 0 to 16777215 for mirror_type vxlan (the 24-bit VXLAN VNI)"},
		// Ours: the port is on the capture side; no bulk.
		{"monitor port", "POST", mirrors, mb(aMon, `{"IN": 601}`, "192.0.2.18", "gre"), a, 400,
			"Port " + aMon + " is bound to mon0, a monitor interface: a tap mirror's port must be bound to a capture interface."},
		{"bulk", "POST", mirrors, `{"tap_mirrors": [` + strings.TrimSuffix(strings.TrimPrefix(mb(a1, `{"IN": 602}`, "192.0.2.18", "gre"),
			`{"tap_mirror": `), "}") + `]}`, a, 400, "Bulk operation not supported"},
		{"reader may not create", "POST", mirrors, mb(a1, `{"IN": 603}`, "192.0.2.18", "gre"), []string{hR}, 403,
			"rule:create_tap_mirror is disallowed by policy"},
		// Show, list, update (rule 5).
		{"show", "GET", mirrors + "/" + m1, "", a, 200, `"directions":{"IN":101},"id":"` + m1 + `","mirror_type":"gre"`},
		{"show as reader", "GET", mirrors + "/" + m1, "", []string{hR}, 200, `"remote_ip":"192.0.2.10"`},
		{"show as other project", "GET", mirrors + "/" + m1, "", b, 404, "Tap Mirror " + m1 + " does not exist"},
		{"show missing", "GET", mirrors + "/" + missing, "", a, 404, "Tap Mirror " + missing + " does not exist"},
		{"show fields", "GET", mirrors + "/" + m1 + "?fields=directions&fields=id", "", a, 200,
			`{"tap_mirror":{"directions":{"IN":101},"id":"` + m1 + `"}}`},
		{"list filter", "GET", mirrors + "?mirror_type=vxlan&fields=mirror_type", "", a, 200,
			`{"tap_mirrors":[{"mirror_type":"vxlan"}]}`},
		{"list sorted by project", "GET", mirrors + "?sort_key=project_id&sort_dir=asc&fields=project_id&limit=1", "", adm, 200,
			`{"tap_mirrors":[{"project_id":"proj-a"}]`},
		{"sort by name refused", "GET", mirrors + "?sort_key=name&sort_dir=asc", "", a, 400, "['name'] is invalid attribute for sort_keys"},
		{"update", "PUT", mirrors + "/" + m1, `{"tap_mirror": {"name": "n2", "description": "d2"}}`, a, 200,
			`"description":"d2","directions":{"IN":101}`},
		{"update shown", "GET", mirrors + "/" + m1, "", a, 200, `"name":"n2"`},
		{"update directions", "PUT", mirrors + "/" + m1, `{"tap_mirror": {"directions": {"IN": 7}}}`, a, 400,
			"Cannot update read-only attribute directions"},
		{"update port", "PUT", mirrors + "/" + m1, `{"tap_mirror": {"port_id": "` + a2 + `"}}`, a, 400,
			"Cannot update read-only attribute port_id"},
		{"update as other project", "PUT", mirrors + "/" + m1, `{"tap_mirror": {"name": "x"}}`, b, 404, "Tap Mirror " + m1 + " does not exist"},
		{"update as reader", "PUT", mirrors + "/" + m1, `{"tap_mirror": {"name": "x"}}`, []string{hR}, 403,
			"rule:update_tap_mirror is disallowed by policy"},
		{"delete as reader", "DELETE", mirrors + "/" + m1, "", []string{hR}, 403, "rule:delete_tap_mirror is disallowed by policy"},
		{"delete missing as reader", "DELETE", mirrors + "/" + missing, "", []string{hR}, 404, "Tap Mirror " + missing + " does not exist"},
		{"delete as other project", "DELETE", mirrors + "/" + m1, "", b, 404, "Tap Mirror " + m1 + " does not exist"},
		{"put on collection", "PUT", mirrors, "", a, 405, ""},
		// Rule 6: delete, the port stays; a freed id is free again.
		{"delete", "DELETE", mirrors + "/" + m1, "", a, 204, ""},
		{"deleted", "GET", mirrors + "/" + m1, "", a, 404, "Tap Mirror " + m1 + " does not exist"},
		{"delete again", "DELETE", mirrors + "/" + m1, "", a, 404, "Tap Mirror " + m1 + " does not exist"},
		{"port remains", "GET", "/v2.0/ports/" + a1, "", a, 200, `"id":"` + a1 + `"`},
		{"freed id reused", "POST", mirrors, mb(a2, `{"OUT": 101}`, "192.0.2.19", "gre"), a, 201, `"OUT":101`},
		{"still used id", "POST", mirrors, mb(a2, `{"OUT": 204}`, "192.0.2.19", "gre"), a, 409, "Tap Mirror with tunnel_id 204 already exists"},
	})
	// Unlike upstream's, our tap mirrors show their status and its reason
	// (taas-status-reason), written by the reconciler as for services.
	m := ts.createMirror(a2, `{"IN": 700}`, "192.0.2.20", "gre", hA)
	ts.settle()
	if r := ts.do("GET", mirrors+"/"+m, "", hA); !strings.Contains(r.raw, `"status":"DOWN","status_reason":"no data plane"`) {
		t.Errorf("a tap mirror without data plane shows %s, want DOWN, no data plane", r.raw)
	}
	// Both are attributes lists filter on, as on services and flows.
	for q, want := range map[string]bool{"?status_reason=no+data+plane": true, "?status_reason=other": false,
		"?status=DOWN": true, "?status=ACTIVE": false} {
		if got := slices.Contains(ts.listIDs(mirrors+q, "tap_mirrors", hA), m); got != want {
			t.Errorf("GET tap_mirrors%s lists the mirror: %v, want %v", q, got, want)
		}
	}
}

// TestTapMirrorRemoteIP: our rule on top of upstream's type:ip_address, a
// unicast remote_ip: the appliance must not flood a tenant's copies onto
// the uplink's segment (issue 10's review).
func TestTapMirrorRemoteIP(t *testing.T) {
	ts := startMirrorServer(t)
	a1 := ts.createPortIn("proj-a", "a1", "cap0", "", hAdmin)
	const must = ", and a tap mirror's remote_ip must be a unicast address."
	var rows []scenario
	for i, tc := range []struct {
		ip     string
		status int
		want   string
	}{
		{"192.0.2.20", 201, `"remote_ip":"192.0.2.20"`},
		{"198.51.100.255", 201, `"remote_ip":"198.51.100.255"`}, // a subnet's broadcast is not ours to know
		{"2001:db8::20", 201, `"remote_ip":"2001:db8::20"`},
		{"10.0.0.1", 201, `"remote_ip":"10.0.0.1"`},
		{"0.0.0.0", 400, "Invalid input for remote_ip. Reason: '0.0.0.0' is the unspecified address" + must},
		{"::", 400, "'::' is the unspecified address" + must},
		{"0.1.2.3", 400, "'0.1.2.3' is a 'this network' address (0.0.0.0/8)" + must},
		{"127.0.0.1", 400, "'127.0.0.1' is a loopback address" + must},
		{"127.255.0.9", 400, "'127.255.0.9' is a loopback address" + must},
		{"::1", 400, "'::1' is a loopback address" + must},
		{"224.0.0.1", 400, "'224.0.0.1' is a multicast address" + must},
		{"239.255.255.250", 400, "'239.255.255.250' is a multicast address" + must},
		{"ff02::1", 400, "'ff02::1' is a multicast address" + must},
		{"255.255.255.255", 400, "'255.255.255.255' is the limited broadcast address" + must},
		{"240.0.0.1", 400, "'240.0.0.1' is a reserved address (240.0.0.0/4)" + must},
		{"169.254.1.1", 400, "'169.254.1.1' is a link-local address, whose egress interface would be ambiguous without a zone" + must},
		{"fe80::1", 400, "'fe80::1' is a link-local address"},
		{"febf::1", 400, "'febf::1' is a link-local address"},
		{"fec0::1", 201, `"remote_ip":"fec0::1"`}, // outside fe80::/10
		{"::ffff:192.0.2.21", 400, "'::ffff:192.0.2.21' is an IPv4-mapped IPv6 address, '192.0.2.21' is recommended."},
		{"::192.0.2.22", 400, "'::192.0.2.22' is an IPv4-compatible IPv6 address, '192.0.2.22' is recommended."},
		{"::ffff:127.0.0.1", 400, "'::ffff:127.0.0.1' is a loopback address" + must},
		{"::ffff:255.255.255.255", 400, "'::ffff:255.255.255.255' is the limited broadcast address" + must},
		{"::224.0.0.1", 400, "'::224.0.0.1' is a multicast address" + must},
		// type:ip_address's own refusals come first.
		{"fe80::1%cap0", 400, "'fe80::1%cap0' is not a valid IP address."},
		{"127.0.0.01", 400, "'127.0.0.01' is not an accepted IP address, '127.0.0.1' is recommended."},
	} {
		rows = append(rows, scenario{tc.ip, "POST", mirrors, mirrorJSON(a1, fmt.Sprintf(`{"IN": %d}`, 700+i), tc.ip, "gre"),
			[]string{hA}, tc.status, tc.want})
	}
	ts.runScenarios(t, rows)
}

// TestTapMirrorPortDelete: deleting a port deletes its mirrors (as
// upstream's tap_mirror_plugin.handle_delete_port does), announces them,
// and frees their tunnel ids.
func TestTapMirrorPortDelete(t *testing.T) {
	ts := startMirrorServer(t)
	p := ts.createPortIn("proj-a", "p", "cap0", "", hAdmin)
	q := ts.createPortIn("proj-a", "q", "cap1", "", hAdmin)
	m := ts.createMirror(p, `{"IN": 11, "OUT": 12}`, "192.0.2.30", "gre", hA)
	other := ts.createMirror(q, `{"IN": 13}`, "192.0.2.30", "gre", hA)
	events := openStream(t, ts, hA)
	ts.must(204, "DELETE", "/v2.0/ports/"+p, "", "", hA)
	if r := ts.do("GET", mirrors+"/"+m, "", hA); r.status != 404 {
		t.Errorf("mirror of a deleted port: GET = %d %s, want 404", r.status, r.raw)
	}
	ts.must(200, "GET", mirrors+"/"+other, "", "", hA)
	waitFor(t, "the mirror's delete event", func() bool { return events.has("tap_mirror", m, "delete") })
	ts.createMirror(q, `{"OUT": 11}`, "192.0.2.31", "gre", hA)
}

// TestTapMirrorQuota: tap mirrors count against the tap_mirror quota.
func TestTapMirrorQuota(t *testing.T) {
	ts := startMirrorServer(t)
	p := ts.createPortIn("proj-a", "p", "cap0", "", hAdmin)
	ts.must(200, "PUT", "/v2.0/quotas/proj-a", `{"quota": {"tap_mirror": 1}}`, "", hAdmin)
	ts.createMirror(p, `{"IN": 1}`, "192.0.2.40", "gre", hA)
	r := ts.do("POST", mirrors, mirrorJSON(p, `{"IN": 2}`, "192.0.2.40", "gre"), hA)
	if typ, msg := neutronErr(t, r); r.status != 409 || typ != "OverQuota" || msg != "Quota exceeded for resources: ['tap_mirror']." {
		t.Errorf("second mirror over quota 1 = %d %s %q", r.status, typ, msg)
	}
	if d := ts.must(200, "GET", "/v2.0/quotas/proj-a/details", "", "quota", hAdmin); fmt.Sprint(d["tap_mirror"]) != "map[limit:1 reserved:0 used:1]" {
		t.Errorf("tap_mirror details = %v", d["tap_mirror"])
	}
}

// TestTapMirrorDirectionsOrder: directions come back exactly as sent,
// keys in the order given and each id as written (an int, a numeric
// string), like upstream's json.dumps of the dict it stored, on every path
// that renders a mirror: create, show, list (cached), fields= and update.
func TestTapMirrorDirectionsOrder(t *testing.T) {
	ts := startMirrorServer(t)
	port := ts.createPortIn("proj-a", "a1", "cap0", "", hAdmin)
	const want = `"directions":{"OUT":"7","IN":5}`
	r := ts.do("POST", mirrors, mirrorJSON(port, `{"OUT": "7", "IN": 5}`, "192.0.2.10", "gre"), hA)
	if r.status != 201 || !strings.Contains(r.raw, want) {
		t.Fatalf("create = %d %s, want 201 with %s", r.status, r.raw, want)
	}
	id := r.body["tap_mirror"].(map[string]any)["id"].(string)
	for _, tc := range []struct{ name, method, path, body string }{
		{"show", "GET", mirrors + "/" + id, ""},
		{"list", "GET", mirrors, ""},
		{"list again (cached)", "GET", mirrors, ""},
		{"list fields", "GET", mirrors + "?fields=directions&fields=id", ""},
		{"show fields", "GET", mirrors + "/" + id + "?fields=directions", ""},
		{"update", "PUT", mirrors + "/" + id, `{"tap_mirror": {"name": "renamed"}}`},
		{"admin list", "GET", mirrors, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			who := hA
			if tc.name == "admin list" {
				who = hAdmin
			}
			if r := ts.do(tc.method, tc.path, tc.body, who); r.status != 200 || !strings.Contains(r.raw, want) {
				t.Errorf("%s %s = %d %s, want 200 with %s", tc.method, tc.path, r.status, r.raw, want)
			}
		})
	}
}
