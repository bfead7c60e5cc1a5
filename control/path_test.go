package control

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// encodeAll percent-encodes every byte of s, in upper-case hex.
func encodeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// TestPathDecoding: every route finds a resource by its id
// percent-encoded, in part or whole, as upstream does; an id that decodes
// to nothing known is that resource's 404 with the decoded id; an encoded
// '/' separates segments; a path that decodes to bytes that are not UTF-8
// is 400. Nothing is a 500.
func TestPathDecoding(t *testing.T) {
	ts := startServer(t, Config{})
	mon := ts.createPort("mon", "mon0", "")
	src := ts.createPort("src", "cap0", "")
	svc := ts.createService("s", mon)
	flow := ts.createFlow("f", svc, src, "IN", nil)
	dash := func(id string) string { return strings.ReplaceAll(id, "-", "%2D") }
	tests := []scenario{
		{"port, dashes encoded", "GET", "/v2.0/ports/" + dash(mon), "", nil, 200, `"id":"` + mon + `"`},
		{"port, all encoded", "GET", "/v2.0/ports/" + encodeAll(mon), "", nil, 200, `"id":"` + mon + `"`},
		{"port, lower-case hex", "GET", "/v2.0/ports/" + strings.ToLower(encodeAll(mon)), "", nil, 200, `"id":"` + mon + `"`},
		{"port update", "PUT", "/v2.0/ports/" + dash(mon), `{"port": {"name": "mon2"}}`, nil, 200, `"name":"mon2"`},
		{"network", "GET", "/v2.0/networks/" + encodeAll(defaultNetwork), "", nil, 200, `"name":"appliance"`},
		{"tap service", "GET", "/v2.0/taas/tap_services/" + dash(svc), "", nil, 200, `"id":"` + svc + `"`},
		{"tap service without taas/", "GET", "/v2.0/tap_services/" + dash(svc), "", nil, 200, `"id":"` + svc + `"`},
		{"tap flow update", "PUT", "/v2.0/taas/tap_flows/" + encodeAll(flow), `{"tap_flow": {"name": "f2"}}`, nil, 200, `"name":"f2"`},
		{"collection encoded", "GET", "/v2.0/%70orts?name=src", "", nil, 200, `"id":"` + src + `"`},
		{"first bytes encoded", "GET", "/%762.0/ports/" + dash(src), "", nil, 200, `"id":"` + src + `"`},
		{".json encoded", "GET", "/v2.0/ports/" + src + "%2Ejson", "", nil, 200, `"id":"` + src + `"`},
		{"version document encoded", "GET", "/%2F", "", nil, 404, "The resource could not be found."},
		{"slash encoded", "GET", "/v2.0/ports%2F" + src, "", nil, 200, `"id":"` + src + `"`},
		{"unknown port", "GET", "/v2.0/ports/a%20b", "", nil, 404, "Port a b could not be found."},
		{"unknown network", "GET", "/v2.0/networks/%41", "", nil, 404, "Network A could not be found."},
		{"unknown tap service", "GET", "/v2.0/taas/tap_services/x%2By", "", nil, 404, "Tap Service  x+y does not exist"},
		{"bad escape", "GET", "/v2.0/ports/%zz", "", nil, 404, "Port %zz could not be found."},
		{"id with a slash", "GET", "/v2.0/ports/a%2Fb", "", nil, 404, "The resource could not be found."},
		{"not UTF-8", "GET", "/v2.0/ports/%C3%28", "", nil, 400, "malformed or otherwise incorrect"},
		{"UTF-8", "GET", "/v2.0/ports/%C3%A9", "", nil, 404, "Port é could not be found."},
		{"tap flow delete", "DELETE", "/v2.0/taas/tap_flows/" + dash(flow), "", nil, 204, ""},
		{"tap flow gone", "GET", "/v2.0/taas/tap_flows/" + dash(flow), "", nil, 404, "Tap Flow  " + flow + " does not exist"},
		{"port delete", "DELETE", "/v2.0/ports/" + encodeAll(src), "", nil, 204, ""},
	}
	ts.runScenarios(t, tests)
}

// TestEventsPathDecodedWithToken: the events stream takes its token from
// the query on its path percent-encoded too: authentication sees the
// decoded path, as the router does.
func TestEventsPathDecodedWithToken(t *testing.T) {
	ts := startServer(t, Config{Auth: AuthToken, Tokens: Tokens{"tk": newIdentity("proj", []string{"member"})}})
	for _, path := range []string{"/v2.0/taas/events", "/v2.0/taas/%65vents", "/v2.0/taas/%65vents%3F"} {
		t.Run(path, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", ts.base+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque, req.URL.RawQuery = path, "token=tk"
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			want := 200
			if strings.HasSuffix(path, "%3F") { // "events?" is another path: no token from the query
				want = 401
			}
			if resp.StatusCode != want {
				t.Errorf("GET %s?token= = %d, want %d", path, resp.StatusCode, want)
			}
		})
	}
}
