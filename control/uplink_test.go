package control

import (
	"testing"
)

// TestUplinkRole: an uplink is a declared interface no port can be bound
// to, on create or on update, with the reason in plain words.
func TestUplinkRole(t *testing.T) {
	ts := startIsoServer(t, Config{Interfaces: map[string]string{"cap0": RoleCapture, "mon0": RoleMonitor, "up0": RoleUplink}})
	port := ts.createPortIn("proj-a", "p", "", "", hAdmin)
	const refused = "Interface up0 is an uplink: tap mirrors' tunnels leave through it, and no port can be bound to it. " +
		"Bind to a capture interface (cap0) or a monitor interface (mon0)."
	runIsoCases(t, ts, []isoCase{
		{"create bound to the uplink", "POST", "/v2.0/ports", jsonBody(map[string]any{"port": map[string]any{"network_id": defaultNetwork,
			"binding:profile": map[string]any{"interface": "up0"}}}), hAdmin, 400, "HTTPBadRequest", refused},
		{"bind to the uplink", "PUT", "/v2.0/ports/" + port, `{"port": {"binding:profile": {"interface": "up0"}}}`, hAdmin, 400,
			"HTTPBadRequest", refused},
		{"undeclared names no uplink", "PUT", "/v2.0/ports/" + port, `{"port": {"binding:profile": {"interface": "eth9"}}}`, hAdmin, 400,
			"HTTPBadRequest", "bind to a capture interface (cap0) or a monitor interface (mon0)."},
		{"bind to the capture", "PUT", "/v2.0/ports/" + port, `{"port": {"binding:profile": {"interface": "cap0"}}}`, hAdmin, 200, "", ""},
	})
	for _, tc := range []struct {
		role string
		ok   bool
	}{{RoleUplink, true}, {RoleCapture, true}, {RoleMonitor, true}, {"sink", false}, {"", false}} {
		cfg := Config{Store: ts.st, Interfaces: map[string]string{"x0": tc.role}}
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(role %q) = %v, want ok %v", tc.role, err, tc.ok)
		}
	}
}
