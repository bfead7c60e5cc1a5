package control

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// TestPortsAndNetworks covers what the TaaS tests do not: networks,
// generated and updated MACs, sorting ports.
func TestPortsAndNetworks(t *testing.T) {
	ts := startServer(t, Config{})
	member := "X-Project-Id: p1"
	r := ts.do("POST", "/v2.0/networks", `{"network": {"name": "n", "shared": true}}`, member)
	if typ, _ := neutronErr(t, r); r.status != 403 || typ != "PolicyNotAuthorized" {
		t.Errorf("member creates shared network = %d %s, want 403", r.status, typ)
	}
	n := ts.must(201, "POST", "/v2.0/networks", `{"network": {"name": "private"}}`, "network", member)
	if n["shared"] != false || n["project_id"] != "p1" || n["status"] != "ACTIVE" {
		t.Errorf("created network = %v", n)
	}
	if l := ts.list("/v2.0/networks", "networks", "X-Project-Id: p2"); len(l) != 1 || l[0]["name"] != "appliance" {
		t.Errorf("p2 sees networks %v, want only the shared one", l)
	}
	ts.must(404, "POST", "/v2.0/ports", `{"port": {"network_id": "`+n["id"].(string)+`"}}`, "", "X-Project-Id: p2")
	p := ts.must(201, "POST", "/v2.0/ports", `{"port": {"name": "b", "network_id": "`+n["id"].(string)+`"}}`, "port", member)
	if mac := p["mac_address"].(string); !strings.HasPrefix(mac, "fa:16:3e:") || normalMAC(mac) != mac {
		t.Errorf("generated MAC %q, want fa:16:3e:xx:xx:xx", mac)
	}
	if p["status"] != "DOWN" || p["port_security_enabled"] != true || p["admin_state_up"] != true {
		t.Errorf("unbound port = %v", p)
	}
	q := ts.createPort("a", "", "fa:16:3e:00:00:01")
	ts.createPort("c", "", "fa:16:3e:00:00:02")
	r = ts.do("PUT", "/v2.0/ports/"+q, `{"port": {"mac_address": "fa:16:3e:00:00:02"}}`)
	if typ, _ := neutronErr(t, r); r.status != 409 || typ != "MacAddressInUse" {
		t.Errorf("update to a used MAC = %d %s, want 409 MacAddressInUse", r.status, typ)
	}
	up := ts.must(200, "PUT", "/v2.0/ports/"+q, `{"port": {"mac_address": "FA-16-3E-00-00-09", "name": "a2"}}`, "port")
	if up["mac_address"] != "fa:16:3e:00:00:09" || up["name"] != "a2" {
		t.Errorf("updated port = %v", up)
	}
	var names []string
	for _, e := range ts.list("/v2.0/ports?sort_key=name&sort_dir=desc", "ports") {
		names = append(names, e["name"].(string))
	}
	if strings.Join(names, ",") != "c,b,a2" {
		t.Errorf("ports sorted by name desc = %v, want c,b,a2", names)
	}
}

// TestPanicIsA500: a handler that panics answers 500 with a NeutronError
// body, and the server keeps serving.
func TestPanicIsA500(t *testing.T) {
	ts := startServer(t, Config{Mount: func(app *fiber.App) {
		app.Get("/boom", func(*fiber.Ctx) error { panic("bug") })
	}})
	r := ts.do("GET", "/boom", "")
	if typ, msg := neutronErr(t, r); r.status != 500 || typ != "HTTPInternalServerError" ||
		msg != "Request Failed: internal server error while processing your request." {
		t.Errorf("panic = %d %s %q", r.status, typ, msg)
	}
	ts.must(200, "GET", "/", "", "")
}

// TestEventsTokenQuery: in token mode the events stream takes ?token=
// (EventSource cannot send headers), and nothing else does.
func TestEventsTokenQuery(t *testing.T) {
	toks, err := LoadTokens(writeTokens(t, "tk proj member\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{Auth: AuthToken, Tokens: toks})
	ts.must(401, "GET", "/v2.0/taas/tap_flows?token=tk", "", "")
	ts.must(401, "GET", "/v2.0/taas/events", "", "")
	resp, err := http.Get(ts.base + "/v2.0/taas/events?token=tk")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if resp.StatusCode != 200 || err != nil || !strings.HasPrefix(line, ":") {
		t.Errorf("events?token= = %d, first line %q %v", resp.StatusCode, line, err)
	}
}
