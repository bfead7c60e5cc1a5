package control

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/control/store"
)

// In a fleet, taas_tap_mirror_status covers every node's mirrors, labelled
// with their node, from the stored statuses, DOWN for a node that is not
// alive (it covered only this node's mirrors; review of issue 14).
func TestFleetMirrorMetrics(t *testing.T) {
	dp := newRecorder()
	dp.ifaceUp["cap0"] = true
	ts := startServer(t, Config{DataPlane: dp, Node: "a", Fleet: true, NodeTimeout: time.Second, NodeHeartbeat: 100 * time.Millisecond})
	ctx := context.Background()
	b := startFakeNode(t, ts.st, "b", `{}`)
	mine := ts.createMirror(ts.hostPort("src-a", "cap0", "fa:16:3e:00:00:01", "a"), `{"IN": 1}`, "198.51.100.1", "gre")
	theirs := ts.createMirror(ts.hostPort("src-b", "cap0", "fa:16:3e:00:00:02", "b"), `{"IN": 2}`, "198.51.100.1", "gre")
	if err := ts.st.SetStatuses(ctx, nil, nil, map[string]store.Status{theirs: {State: "ACTIVE"}}); err != nil {
		t.Fatal(err)
	}
	ts.settle()
	h := MetricsHandler(dp, ts.srv.MirrorMetrics())
	series := func(node, id, status string) string {
		return fmt.Sprintf("taas_tap_mirror_status{node=%q,status=%q,tap_mirror_id=%q} ", node, status, id)
	}
	has := func(want ...string) bool {
		body := scrape(t, h)
		for _, w := range want {
			if !strings.Contains(body, w+"\n") {
				return false
			}
		}
		return true
	}
	want := []string{series("a", mine, "ACTIVE") + "1", series("b", theirs, "ACTIVE") + "1", series("b", theirs, "DOWN") + "0"}
	waitFor(t, "both nodes' mirrors ACTIVE", func() bool { return has(want...) })
	b.halt()
	t0 := time.Now()
	waitFor(t, "b's mirror DOWN", func() bool {
		return has(series("a", mine, "ACTIVE")+"1", series("b", theirs, "DOWN")+"1", series("b", theirs, "ACTIVE")+"0")
	})
	t.Logf("b's mirror DOWN in /metrics %v after b's last heartbeat (timeout 1 s)", time.Since(t0))
}
