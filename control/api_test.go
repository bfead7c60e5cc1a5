package control

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// TestBadInput runs every kind of bad request of the issue against a real
// server and checks the upstream status, the NeutronError body, and that
// nothing changed.
func TestBadInput(t *testing.T) {
	ts := startServer(t, Config{})
	port := ts.createPort("src", "veth0", "fa:16:3e:00:00:01")
	mon := ts.createPort("mon", "mon0", "")
	svc := ts.createService("ids", mon)
	flow := ts.createFlow("f", svc, port, "BOTH", "10-20")
	other := "X-Project-Id: other"
	otherPort := ts.createPort("theirs", "", "", other)
	missing := "11111111-2222-3333-4444-555555555555"
	long := strings.Repeat("x", 256)

	svcBody := func(attrs string) string { return `{"tap_service": {` + attrs + `}}` }
	flowBody := func(attrs string) string {
		return fmt.Sprintf(`{"tap_flow": {"tap_service_id": %q, "source_port": %q, "direction": "IN"%s}}`, svc, port, attrs)
	}
	portBody := func(attrs string) string {
		return fmt.Sprintf(`{"port": {"network_id": %q%s}}`, defaultNetwork, attrs)
	}
	services := "/v2.0/taas/tap_services"
	flows := "/v2.0/taas/tap_flows"

	tests := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		typ, msg                 string
	}{
		{"empty body", "POST", services, "", nil, 400, "HTTPBadRequest", "Unable to find 'tap_service' in request body"},
		{"truncated json", "POST", services, `{"tap_service": {"name": "x"`, nil, 400, "HTTPBadRequest", "Body contains invalid data"},
		{"trailing data", "POST", services, `{"tap_service": {}} x`, nil, 400, "HTTPBadRequest", "Body contains invalid data"},
		{"array body", "POST", services, `[1]`, nil, 400, "HTTPBadRequest", "Body contains invalid data"},
		{"wrong wrapper", "POST", services, `{"tap_flow": {}}`, nil, 400, "HTTPBadRequest", "Unable to find 'tap_service' in request body"},
		{"resource not object", "POST", services, `{"tap_service": 5}`, nil, 400, "HTTPBadRequest", "Object 'tap_service' contains invalid data"},
		{"unknown attributes", "POST", services, svcBody(`"port_id": "` + mon + `", "zz": 1, "aa": 2`), nil, 400, "HTTPBadRequest", "Unrecognized attribute(s) 'aa, zz'"},
		{"id in post", "POST", services, svcBody(`"id": "` + missing + `", "port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "Attribute 'id' not allowed in POST"},
		{"status in post", "POST", services, svcBody(`"status": "ACTIVE", "port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "Attribute 'status' not allowed in POST"},
		{"missing port_id", "POST", services, svcBody(`"name": "x"`), nil, 400, "HTTPBadRequest", "Failed to parse request. Required attribute 'port_id' not specified"},
		{"bad uuid", "POST", services, svcBody(`"port_id": "abc"`), nil, 400, "HTTPBadRequest", "Invalid input for port_id. Reason: 'abc' is not a valid UUID."},
		{"uuid wrong type", "POST", services, svcBody(`"port_id": 5`), nil, 400, "HTTPBadRequest", "Invalid input for port_id. Reason: '5' is not a valid UUID."},
		{"null uuid", "POST", services, svcBody(`"port_id": null`), nil, 400, "HTTPBadRequest", "Invalid input for port_id. Reason: 'None' is not a valid UUID."},
		{"name too long", "POST", services, svcBody(`"name": "` + long + `", "port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "Invalid input for name. Reason: '" + long + "' exceeds maximum length of 255."},
		{"name with tab", "POST", services, svcBody(`"name": "a\tb", "port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "Invalid input for name. Reason: 'a\tb' is not a valid string."},
		{"name leading space", "POST", services, svcBody(`"name": " a", "port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "is not a valid string."},
		{"name not string", "POST", services, svcBody(`"name": 5, "port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "Invalid input for name. Reason: '5' is not a valid string."},
		{"description too long", "POST", services, svcBody(`"description": "` + strings.Repeat("d", 1025) + `", "port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "exceeds maximum length of 1024."},
		{"project mismatch", "POST", services, svcBody(`"tenant_id": "a", "project_id": "b", "port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "'project_id' and 'tenant_id' do not match"},
		{"other project as member", "POST", services, svcBody(`"project_id": "default", "port_id": "` + mon + `"`), []string{other}, 400, "HTTPBadRequest", "Specifying 'project_id' other than the authenticated project in request is not allowed for the current user."},
		{"unknown port", "POST", services, svcBody(`"port_id": "` + missing + `"`), nil, 404, "PortNotFound", "Port " + missing + " could not be found."},
		{"invisible port", "POST", services, svcBody(`"port_id": "` + mon + `"`), []string{other}, 404, "PortNotFound", "could not be found."},
		{"port of another tenant", "POST", services, svcBody(`"port_id": "` + otherPort + `"`), nil, 403, "PortDoesNotBelongToTenant", "The specified port does not belong to the tenant"},
		{"empty bulk", "POST", services, `{"tap_services": []}`, nil, 400, "HTTPBadRequest", "Resources required"},
		{"bad direction", "POST", flows, strings.Replace(flowBody(""), `"IN"`, `"in"`, 1), nil, 400, "HTTPBadRequest", "Invalid input for direction. Reason: in is not in valid_values."},
		{"missing direction", "POST", flows, strings.Replace(flowBody(""), `, "direction": "IN"`, "", 1), nil, 400, "HTTPBadRequest", "Failed to parse request. Required attribute 'direction' not specified"},
		{"missing source_port", "POST", flows, `{"tap_flow": {"tap_service_id": "` + svc + `", "direction": "IN"}}`, nil, 400, "HTTPBadRequest", "Required attribute 'source_port' not specified"},
		{"vlan_filter trailing comma", "POST", flows, flowBody(`, "vlan_filter": "10-25,"`), nil, 400, "HTTPBadRequest", "Invalid input for vlan_filter. Reason: '10-25,' is not a valid input."},
		{"vlan_filter empty", "POST", flows, flowBody(`, "vlan_filter": ""`), nil, 400, "HTTPBadRequest", "Reason: '' is not a valid input."},
		{"vlan_filter space", "POST", flows, flowBody(`, "vlan_filter": "1 ,2"`), nil, 400, "HTTPBadRequest", "Reason: '1 ,2' is not a valid input."},
		{"vlan_filter number", "POST", flows, flowBody(`, "vlan_filter": 5`), nil, 400, "HTTPBadRequest", "Reason: '5' is not a valid input."},
		{"vlan_filter too long", "POST", flows, flowBody(`, "vlan_filter": "` + strings.Repeat("1,", 600) + `1"`), nil, 400, "HTTPBadRequest", "exceeds maximum length of 1024."},
		{"unknown tap service", "POST", flows, strings.Replace(flowBody(""), svc, missing, 1), nil, 404, "TapServiceNotFound", "Tap Service  " + missing + " does not exist"},
		{"invisible tap service", "POST", flows, strings.Replace(flowBody(""), port, otherPort, 1), []string{other}, 404, "TapServiceNotFound", "Tap Service  " + svc + " does not exist"},
		{"unknown source port", "POST", flows, strings.Replace(flowBody(""), port, missing, 1), nil, 404, "PortNotFound", "Port " + missing + " could not be found."},
		{"put read-only port_id", "PUT", services + "/" + svc, svcBody(`"port_id": "` + mon + `"`), nil, 400, "HTTPBadRequest", "Cannot update read-only attribute port_id"},
		{"put read-only vlan_filter", "PUT", flows + "/" + flow, `{"tap_flow": {"vlan_filter": "1"}}`, nil, 400, "HTTPBadRequest", "Cannot update read-only attribute vlan_filter"},
		{"put read-only direction", "PUT", flows + "/" + flow, `{"tap_flow": {"direction": "IN"}}`, nil, 400, "HTTPBadRequest", "Cannot update read-only attribute direction"},
		{"put tenant_id", "PUT", flows + "/" + flow, `{"tap_flow": {"tenant_id": "default"}}`, nil, 400, "HTTPBadRequest", "Cannot update read-only attribute tenant_id"},
		{"put empty body", "PUT", flows + "/" + flow, "", nil, 400, "HTTPBadRequest", "Unable to find 'tap_flow' in request body"},
		{"put unknown service", "PUT", services + "/" + missing, `{"tap_service": {"name": "x"}}`, nil, 404, "TapServiceNotFound", "Tap Service  " + missing + " does not exist"},
		{"put other project's flow", "PUT", flows + "/" + flow, `{"tap_flow": {"name": "x"}}`, []string{other}, 404, "TapFlowNotFound", "Tap Flow  " + flow + " does not exist"},
		{"delete with body", "DELETE", services + "/" + svc, `{}`, nil, 400, "HTTPBadRequest", "Request body is not supported in DELETE."},
		{"delete unknown flow", "DELETE", flows + "/" + missing, "", nil, 404, "TapFlowNotFound", "Tap Flow  " + missing + " does not exist"},
		{"delete other project's service", "DELETE", services + "/" + svc, "", []string{other}, 404, "TapServiceNotFound", "does not exist"},
		{"show non-uuid", "GET", services + "/not-a-uuid", "", nil, 404, "TapServiceNotFound", "Tap Service  not-a-uuid does not exist"},
		{"show unknown flow", "GET", flows + "/" + missing, "", nil, 404, "TapFlowNotFound", "Tap Flow  " + missing + " does not exist"},
		{"show other project's flow", "GET", flows + "/" + flow, "", []string{other}, 404, "TapFlowNotFound", "does not exist"},
		{"put on collection", "PUT", services, svcBody(""), nil, 405, "HTTPMethodNotAllowed", ""},
		{"delete on collection", "DELETE", flows, "", nil, 405, "HTTPMethodNotAllowed", ""},
		{"post on item", "POST", services + "/" + svc, svcBody(""), nil, 405, "HTTPMethodNotAllowed", ""},
		{"patch on item", "PATCH", flows + "/" + flow, `{"tap_flow": {}}`, nil, 405, "HTTPMethodNotAllowed", ""},
		{"post on root", "POST", "/", "", nil, 405, "HTTPMethodNotAllowed", ""},
		{"post on extensions", "POST", "/v2.0/extensions", "", nil, 404, "HTTPNotFound", "The resource could not be found."},
		{"unknown extension", "GET", "/v2.0/extensions/tap-mirrors", "", nil, 404, "HTTPNotFound", "Extension with alias tap-mirrors does not exist"},
		{"v2.0 without slash", "GET", "/v2.0", "", nil, 404, "HTTPNotFound", "The resource could not be found."},
		{"unknown path", "GET", "/v2.0/taas/tap_mirror", "", nil, 404, "HTTPNotFound", "The resource could not be found."},
		{"sort_key", "GET", services + "?sort_key=name&sort_dir=asc", "", nil, 400, "HTTPBadRequest", "['name'] is invalid attribute for sort_keys"},
		{"sort_key count", "GET", flows + "?sort_key=name", "", nil, 400, "HTTPBadRequest", "The number of sort_keys and sort_dirs must be same"},
		{"sort_dir", "GET", "/v2.0/ports?sort_key=name&sort_dir=up", "", nil, 400, "HTTPBadRequest", "['up'] is invalid value for sort_dirs, valid value is 'asc' and 'desc'"},
		{"bad limit", "GET", flows + "?limit=x", "", nil, 400, "BadRequest", "Bad limit request: Limit must be an integer 0 or greater and not 'x'."},
		{"negative limit", "GET", flows + "?limit=-1", "", nil, 400, "BadRequest", "not '-1'."},
		{"bad bool filter", "GET", "/v2.0/ports?admin_state_up=maybe", "", nil, 400, "InvalidInput", "Invalid input for operation: 'maybe' cannot be converted to boolean."},
		{"port bad mac", "POST", "/v2.0/ports", portBody(`, "mac_address": "zz"`), nil, 400, "HTTPBadRequest", "Invalid input for mac_address. Reason: 'zz' is not a valid MAC address."},
		{"port broadcast mac", "POST", "/v2.0/ports", portBody(`, "mac_address": "ff:ff:ff:ff:ff:ff"`), nil, 400, "HTTPBadRequest", "is not a valid MAC address."},
		{"port duplicate mac", "POST", "/v2.0/ports", portBody(`, "mac_address": "FA:16:3E:00:00:01"`), nil, 409, "MacAddressInUse", "The mac address fa:16:3e:00:00:01 is in use."},
		{"port bad interface", "POST", "/v2.0/ports", portBody(`, "binding:profile": {"interface": "a/b"}`), nil, 400, "HTTPBadRequest", "Invalid input for binding:profile. Reason: 'a/b' is not a valid network interface name."},
		{"port long interface", "POST", "/v2.0/ports", portBody(`, "binding:profile": {"interface": "abcdefghijklmnop"}`), nil, 400, "HTTPBadRequest", "is not a valid network interface name."},
		{"port profile keys", "POST", "/v2.0/ports", portBody(`, "binding:profile": {"pci": 1}`), nil, 400, "HTTPBadRequest", "Invalid input for binding:profile. Reason: Unexpected keys supplied: pci."},
		{"port profile not dict", "POST", "/v2.0/ports", portBody(`, "binding:profile": "mon0"`), nil, 400, "HTTPBadRequest", "Reason: 'mon0' is not a dictionary."},
		{"port bad bool", "POST", "/v2.0/ports", portBody(`, "admin_state_up": "maybe"`), nil, 400, "InvalidInput", "Invalid input for operation: 'maybe' cannot be converted to boolean."},
		{"port unknown network", "POST", "/v2.0/ports", `{"port": {"network_id": "` + missing + `"}}`, nil, 404, "NetworkNotFound", "Network " + missing + " could not be found."},
		{"port missing network", "POST", "/v2.0/ports", `{"port": {"name": "x"}}`, nil, 400, "HTTPBadRequest", "Required attribute 'network_id' not specified"},
		{"port put network", "PUT", "/v2.0/ports/" + port, `{"port": {"network_id": "` + defaultNetwork + `"}}`, nil, 400, "HTTPBadRequest", "Cannot update read-only attribute network_id"},
		{"port show name", "GET", "/v2.0/ports/src", "", nil, 404, "PortNotFound", "Port src could not be found."},
		{"network show name", "GET", "/v2.0/networks/appliance", "", nil, 404, "NetworkNotFound", "Network appliance could not be found."},
	}
	count := func() string {
		return fmt.Sprint(len(ts.list("/v2.0/ports", "ports")), len(ts.list(services, "tap_services")), len(ts.list(flows, "tap_flows")))
	}
	ts.settle()
	before := count()
	snapshot := ts.do("GET", flows+"/"+flow, "").raw
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.do(tc.method, tc.path, tc.body, tc.headers...)
			if r.status != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, r.status, r.raw, tc.status)
			}
			if r.header.Get("X-Openstack-Request-Id") == "" {
				t.Errorf("no X-Openstack-Request-Id")
			}
			typ, msg := neutronErr(t, r)
			if typ != tc.typ || !strings.Contains(msg, tc.msg) {
				t.Errorf("error = %s %q, want %s containing %q", typ, msg, tc.typ, tc.msg)
			}
		})
	}
	if after := count(); after != before {
		t.Errorf("ports, services, flows = %s after bad requests, want %s", after, before)
	}
	if after := ts.do("GET", flows+"/"+flow, "").raw; after != snapshot {
		t.Errorf("flow changed by bad requests:\n%s\nwant\n%s", after, snapshot)
	}
}

// TestWorkflow follows the upstream workflow over HTTP: ports, a service,
// flows, filters, fields, updates and the delete cascades.
func TestWorkflow(t *testing.T) {
	ts := startServer(t, Config{})
	src := ts.createPort("web-port", "veth0", "fa:16:3e:00:00:20")
	src2 := ts.createPort("db-port", "veth1", "")
	mon := ts.createPort("monitor-port", "mon0", "fa:16:3e:00:00:10")

	svcBody := jsonBody(map[string]any{"tap_service": map[string]any{"name": "ids", "port_id": mon}})
	svc := ts.must(201, "POST", "/v2.0/taas/tap_services", svcBody, "tap_service")
	want := map[string]any{"name": "ids", "description": "", "port_id": mon, "status": "DOWN",
		"tenant_id": "default", "project_id": "default"}
	for k, v := range want {
		if svc[k] != v {
			t.Errorf("created tap_service[%s] = %v, want %v", k, svc[k], v)
		}
	}
	if len(svc) != 9 || svc["snaplen"] != nil || svc["status_reason"] != "" {
		t.Errorf("tap_service has keys %v, want upstream's 7, snaplen null and status_reason", svc)
	}
	svcID := svc["id"].(string)

	flowIn := ts.must(201, "POST", "/v2.0/taas/tap_flows", jsonBody(map[string]any{"tap_flow": map[string]any{
		"name": "web-in", "tap_service_id": svcID, "source_port": src, "direction": "IN",
		"vlan_filter": "189,279,999-1008"}}), "tap_flow")
	if flowIn["vlan_filter"] != "189,279,999-1008" || flowIn["status"] != "DOWN" || len(flowIn) != 12 ||
		flowIn["filter"] != nil || flowIn["status_reason"] != "" {
		t.Errorf("created tap_flow = %v, want vlan_filter echoed, status DOWN, filter null, status_reason \"\", 12 keys", flowIn)
	}
	flowOut := ts.createFlow("db-out", svcID, src2, "OUT", nil)
	// tap_flow.name stays type:string (a tab is fine) where tap_service.name
	// is name_string (TestBadInput rejects the tab there).
	tab := ts.createFlow("a\tb", svcID, src2, "OUT", nil)
	ts.must(204, "DELETE", "/v2.0/taas/tap_flows/"+tab, "", "")
	if f := ts.must(200, "GET", "/v2.0/taas/tap_flows/"+flowOut, "", "tap_flow"); f["vlan_filter"] != nil {
		t.Errorf("vlan_filter = %v, want null", f["vlan_filter"])
	}

	// Filters: exact match, repeated keys OR, different keys AND; the
	// lookups the CLI makes (?id=, ?name=).
	for _, tc := range []struct {
		query string
		n     int
	}{
		{"", 2},
		{"?name=web-in", 1},
		{"?name=web-in&name=db-out", 2},
		{"?name=web-in&direction=OUT", 0},
		{"?direction=OUT", 1},
		{"?id=" + flowOut, 1},
		{"?tap_service_id=" + svcID + "&source_port=" + src, 1},
		{"?project_id=default", 2},
		{"?tenant_id=nobody", 0},
		{"?vlan_filter=189,279,999-1008", 1},
		{"?status=DOWN", 2},
		{"?name=", 2},          // empty values are dropped
		{"?no_such_attr=1", 2}, // unknown keys are ignored
		{"?name=web", 0},       // exact, not prefix
	} {
		if got := ts.list("/v2.0/taas/tap_flows"+tc.query, "tap_flows"); len(got) != tc.n {
			t.Errorf("GET tap_flows%s: %d flows, want %d", tc.query, len(got), tc.n)
		}
	}
	if got := ts.list("/v2.0/ports?name=monitor-port", "ports"); len(got) != 1 || got[0]["id"] != mon {
		t.Errorf("ports?name=monitor-port = %v", got)
	}
	if got := ts.list("/v2.0/ports?admin_state_up=true&mac_address=fa:16:3e:00:00:10", "ports"); len(got) != 1 {
		t.Errorf("ports by admin_state_up and mac = %d, want 1", len(got))
	}

	// fields= on list and show; .json suffix; the alias without taas/.
	got := ts.list("/v2.0/taas/tap_flows.json?fields=id&fields=direction&fields=bogus", "tap_flows")
	if len(got) != 2 || len(got[0]) != 2 || got[0]["direction"] == nil {
		t.Errorf("fields=id,direction: %v", got)
	}
	one := ts.must(200, "GET", "/v2.0/tap_services/"+svcID+".json?fields=name", "", "tap_service")
	if len(one) != 1 || one["name"] != "ids" {
		t.Errorf("show fields=name: %v", one)
	}

	// Updates: name and description only; {} succeeds (the CLI sends it).
	up := ts.must(200, "PUT", "/v2.0/taas/tap_services/"+svcID, `{"tap_service": {"name": "ids2", "description": "d"}}`, "tap_service")
	if up["name"] != "ids2" || up["description"] != "d" || up["port_id"] != mon {
		t.Errorf("updated service = %v", up)
	}
	ts.must(200, "PUT", "/v2.0/taas/tap_flows/"+flowOut, `{"tap_flow": {}}`, "tap_flow")
	upf := ts.must(200, "PUT", "/v2.0/taas/tap_flows/"+flowOut, `{"tap_flow": {"description": "x"}}`, "tap_flow")
	if upf["description"] != "x" || upf["direction"] != "OUT" {
		t.Errorf("updated flow = %v", upf)
	}
	upp := ts.must(200, "PUT", "/v2.0/ports/"+src2, `{"port": {"binding:profile": null, "admin_state_up": false}}`, "port")
	if p := upp["binding:profile"].(map[string]any); len(p) != 0 || upp["admin_state_up"] != false {
		t.Errorf("updated port = %v", upp)
	}

	// Deleting the flow's source port deletes the flow only.
	ts.must(204, "DELETE", "/v2.0/ports/"+src2, "", "")
	ts.must(404, "DELETE", "/v2.0/taas/tap_flows/"+flowOut, "", "")
	ts.must(200, "GET", "/v2.0/taas/tap_services/"+svcID, "", "tap_service")

	// Deleting a service deletes its flows.
	svc2 := ts.createService("second", mon)
	f2 := ts.createFlow("f2", svc2, src, "BOTH", "0-4095")
	ts.must(204, "DELETE", "/v2.0/taas/tap_services/"+svc2, "", "")
	ts.must(404, "GET", "/v2.0/taas/tap_flows/"+f2, "", "")

	// Deleting the service's port deletes the service and its flows.
	ts.must(204, "DELETE", "/v2.0/ports/"+mon, "", "")
	ts.must(404, "DELETE", "/v2.0/taas/tap_services/"+svcID, "", "")
	ts.must(404, "DELETE", "/v2.0/taas/tap_flows/"+flowIn["id"].(string), "", "")
	if n := len(ts.list("/v2.0/taas/tap_flows", "tap_flows")); n != 0 {
		t.Errorf("%d flows left, want 0", n)
	}
}

// TestBulkCreate checks that bulk creates all or nothing.
func TestBulkCreate(t *testing.T) {
	ts := startServer(t, Config{})
	mon := ts.createPort("mon", "mon0", "")
	body := jsonBody(map[string]any{"tap_services": []any{
		map[string]any{"name": "a", "port_id": mon},
		map[string]any{"tap_service": map[string]any{"name": "b", "port_id": mon}},
	}})
	r := ts.must(201, "POST", "/v2.0/taas/tap_services", body, "")
	if l, _ := r["tap_services"].([]any); len(l) != 2 {
		t.Fatalf("bulk create = %v, want 2 services", r)
	}
	bad := jsonBody(map[string]any{"tap_services": []any{
		map[string]any{"name": "c", "port_id": mon},
		map[string]any{"name": "d", "port_id": "11111111-2222-3333-4444-555555555555"},
	}})
	if r := ts.do("POST", "/v2.0/taas/tap_services", bad); r.status != 404 {
		t.Fatalf("bulk with a missing port = %d %s, want 404", r.status, r.raw)
	}
	if n := len(ts.list("/v2.0/taas/tap_services", "tap_services")); n != 2 {
		t.Errorf("%d services after failed bulk, want 2 (nothing of it kept)", n)
	}
}

// TestPagination walks limit/marker/page_reverse and the links.
func TestPagination(t *testing.T) {
	ts := startServer(t, Config{})
	src := ts.createPort("src", "", "")
	svc := ts.createService("s", ts.createPort("mon", "", ""))
	var ids []string
	for i := range 5 {
		ids = append(ids, ts.createFlow(fmt.Sprint("f", i), svc, src, "IN", nil))
	}
	page := func(path string) ([]string, map[string]string) {
		t.Helper()
		body := ts.must(200, "GET", path, "", "")
		var got []string
		for _, e := range body["tap_flows"].([]any) {
			got = append(got, e.(map[string]any)["id"].(string))
		}
		links := map[string]string{}
		if ls, ok := body["tap_flows_links"].([]any); ok {
			for _, l := range ls {
				m := l.(map[string]any)
				u, err := url.Parse(m["href"].(string))
				if err != nil {
					t.Fatal(err)
				}
				if u.Host != strings.TrimPrefix(ts.base, "http://") {
					t.Errorf("link host %s, want the server's", u.Host)
				}
				links[m["rel"].(string)] = u.RequestURI()
			}
		}
		return got, links
	}
	got, links := page("/v2.0/taas/tap_flows?limit=2")
	if fmt.Sprint(got) != fmt.Sprint(ids[:2]) || links["next"] == "" || links["previous"] == "" {
		t.Fatalf("page 1 = %v %v", got, links)
	}
	got, links = page(links["next"])
	if fmt.Sprint(got) != fmt.Sprint(ids[2:4]) {
		t.Fatalf("page 2 = %v, want %v", got, ids[2:4])
	}
	got, last := page(links["next"])
	if fmt.Sprint(got) != fmt.Sprint(ids[4:]) || last["next"] != "" || last["previous"] == "" {
		t.Fatalf("page 3 = %v %v, want %v with no next", got, last, ids[4:])
	}
	got, _ = page(links["previous"])
	if fmt.Sprint(got) != fmt.Sprint(ids[:2]) {
		t.Fatalf("previous of page 2 = %v, want %v", got, ids[:2])
	}
	got, _ = page("/v2.0/taas/tap_flows?limit=2&page_reverse=True")
	if fmt.Sprint(got) != fmt.Sprint(ids[3:]) {
		t.Fatalf("reverse without marker = %v, want %v", got, ids[3:])
	}
	if got, links := page("/v2.0/taas/tap_flows?limit=2&marker=11111111-2222-3333-4444-555555555555"); len(got) != 0 || len(links) != 0 {
		t.Fatalf("unknown marker = %v %v, want empty", got, links)
	}
	if got, links := page("/v2.0/taas/tap_flows?limit=0"); len(got) != 5 || len(links) != 0 {
		t.Fatalf("limit=0 = %d items %v, want all, no links", len(got), links)
	}
}

// TestMeta checks the version document, /v2.0/ and the extensions.
func TestMeta(t *testing.T) {
	ts := startServer(t, Config{Mount: func(app *fiber.App) {}})
	v := ts.must(200, "GET", "/", "", "")
	versions := v["versions"].([]any)
	first := versions[0].(map[string]any)
	if first["id"] != "v2.0" || first["status"] != "CURRENT" {
		t.Errorf("version document = %v", v)
	}
	href := first["links"].([]any)[0].(map[string]any)["href"]
	if href != ts.base+"/v2.0/" {
		t.Errorf("self href = %v, want %s/v2.0/", href, ts.base)
	}
	if r := ts.do("GET", "/", "", "Accept: text/html,application/xhtml+xml"); r.status != 302 || r.header.Get("Location") != "/ui/" {
		t.Errorf("browser GET / = %d Location %q, want 302 /ui/", r.status, r.header.Get("Location"))
	}
	ts.must(200, "GET", "/v2.0/", "", "")
	// HEAD answers 405 on collections and items, as upstream (fiber's Get
	// would have answered it).
	for _, p := range []string{"/v2.0/taas/tap_services", "/v2.0/taas/tap_flows/" + defaultNetwork, "/v2.0/ports", "/"} {
		if r := ts.do("HEAD", p, ""); r.status != 405 {
			t.Errorf("HEAD %s = %d, want 405", p, r.status)
		}
	}
	exts := ts.list("/v2.0/extensions", "extensions")
	byAlias := map[string]map[string]any{}
	for _, e := range exts {
		byAlias[e["alias"].(string)] = e
	}
	if e := byAlias["taas"]; e == nil || e["name"] != "Neutron Tap as a Service" ||
		e["description"] != "Neutron Tap as a Service Extension." || e["updated"] != "2015-01-14T10:00:00-00:00" {
		t.Errorf("taas extension = %v", e)
	}
	if e := byAlias["taas-vlan-filter"]; e == nil || e["name"] != "VLAN filtering for Neutron Tap as a Service" ||
		e["description"] != "Neutron Tap as a Service Extension for filtering VLANs." {
		t.Errorf("taas-vlan-filter extension = %v", e)
	}
	if e := byAlias["tap-mirror"]; e == nil || e["name"] != "Tap as a Service GRE or ERSPAN mirror" ||
		e["description"] != "Neutron Tap as a Service extension for GRE or ERSPAN mirroring." ||
		e["updated"] != "2023-05-05T11:45:00-00:00" {
		t.Errorf("tap-mirror extension = %v", e)
	}
	if e := byAlias["tap-mirror-both-direction"]; e == nil ||
		e["name"] != "Tap as a Service mirror with BOTH direction support" ||
		e["description"] != "Neutron Tap as a Service extension mirroring with support for BOTH direction." ||
		e["updated"] != "2025-12-15T11:45:00-00:00" {
		t.Errorf("tap-mirror-both-direction extension = %v", e)
	}
	if e := byAlias["taas-mirror-types"]; e == nil || !strings.Contains(e["description"].(string), "erspanv3") {
		t.Errorf("taas-mirror-types extension = %v", e)
	}
	for _, alias := range []string{"taas-stats", "taas-status-reason", "taas-live-capture"} {
		if byAlias[alias] == nil {
			t.Errorf("extensions = %v: want %s", byAlias, alias)
		}
	}
	if e := ts.must(200, "GET", "/v2.0/extensions/taas", "", "extension"); e["alias"] != "taas" {
		t.Errorf("extension taas = %v", e)
	}
	nets := ts.list("/v2.0/networks?name=appliance", "networks")
	if len(nets) != 1 || nets[0]["id"] != defaultNetwork || nets[0]["shared"] != true {
		t.Errorf("networks?name=appliance = %v", nets)
	}
}
