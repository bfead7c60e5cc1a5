package control

import (
	"strings"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestLoopAfterLinkChange: the API remembers loop checks (feedsBack), and
// a veth pair added between two creates is seen by the second: the first
// flow, from a capture that did not exist yet, is accepted; once the
// capture is the veth peer of the monitor, the next is refused at once.
func TestLoopAfterLinkChange(t *testing.T) {
	testutil.RequireRoot(t, "CAP_NET_ADMIN for a veth pair")
	p := testutil.Prefix(t)
	mon, capt := p+"m", p+"c"
	ts := startServer(t, Config{})
	svc := ts.createService("s", ts.createPort("mon", mon, ""))
	src := ts.createPort("src", capt, "")
	ts.createFlow("before", svc, src, "IN", nil)
	testutil.Veth(t, mon, capt, testutil.VethOpts{})
	r := ts.do("POST", "/v2.0/taas/tap_flows", jsonBody(map[string]any{"tap_flow": map[string]any{"tap_service_id": svc,
		"source_port": src, "direction": "OUT"}}))
	if r.status != 400 || !strings.Contains(r.raw, "is the veth peer of capture interface "+capt) {
		t.Errorf("flow after the veth pair was added = %d %s, want 400 naming the loop", r.status, r.raw)
	}
}
