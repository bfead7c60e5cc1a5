package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestUplinkLoopGuard: an uplink that is the veth peer of a capture would
// send tunnelled copies back into it, so the loop guard treats it as a
// monitor: a tap flow whose source is on that capture is refused, 400
// naming the loop. No port can be bound to the uplink itself.
func TestUplinkLoopGuard(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	p := testutil.Prefix(t)
	capt, up, mon, monPeer := p+"c", p+"u", p+"m", p+"n"
	testutil.Veth(t, capt, up, testutil.VethOpts{})
	testutil.Veth(t, mon, monPeer, testutil.VethOpts{})
	fc, err := parseConfig(fmt.Sprintf(`
[[interfaces]]
name = %q
role = "capture"
[[interfaces]]
name = %q
role = "uplink"
[[interfaces]]
name = %q
role = "monitor"
`, capt, up, mon))
	if err != nil {
		t.Fatal(err)
	}
	d := startXDPDaemonWith(t, config{DB: filepath.Join(t.TempDir(), "taas.db"), Auth: "noauth", File: fc})
	svc := d.createService(t, "svc", d.createPort(t, "mon", "fa:16:3e:00:00:0b", mon))
	src := d.createPort(t, "src", "fa:16:3e:00:00:0a", capt)
	var out map[string]map[string]string
	d.call(t, "POST", "/v2.0/taas/tap_flows", map[string]any{"tap_flow": map[string]any{"tap_service_id": svc,
		"source_port": src, "direction": "IN"}}, 400, &out)
	want := fmt.Sprintf("interface %s is the veth peer of capture interface %s", up, capt)
	if msg := out["NeutronError"]["message"]; !strings.Contains(msg, want) || !strings.Contains(msg, "mirror loop") {
		t.Errorf("flow from the capture whose peer is the uplink: %q, want it to say %q", msg, want)
	}
	d.call(t, "POST", "/v2.0/ports", map[string]any{"port": map[string]any{"network_id": defaultNetwork,
		"binding:profile": map[string]string{"interface": up}}}, 400, &out)
	if msg := out["NeutronError"]["message"]; !strings.Contains(msg, "is an uplink") {
		t.Errorf("port bound to the uplink: %q, want it refused as an uplink", msg)
	}
}
