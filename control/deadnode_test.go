package control

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A dead node's published counters leave taas/stats and /metrics once it
// is not alive (they said its links were up, forever), and an admin can
// delete it, with its counters, once it is not alive: 409 while it is, and
// for the answering node (review of issue 14).
func TestDeadNodeCountersLeftOutAndDeletable(t *testing.T) {
	ts := startIsoServer(t, Config{DataPlane: newRecorder(), Node: "a", Fleet: true, NodeTimeout: time.Second, NodeHeartbeat: 100 * time.Millisecond})
	b := startFakeNode(t, ts.st, "b", `{"plan_version": 3, "interfaces": [{"name": "cap-b", "role": "capture", "link_up": true, "rx_packets": 7}]}`)
	hasB := func() (stats, metrics bool) {
		r := ts.do("GET", "/v2.0/taas/stats", "", hAdmin)
		body := scrape(t, ts.srv.MetricsHandler())
		return strings.Contains(string(r.raw), `"cap-b"`), strings.Contains(body, `node="b"`)
	}
	waitFor(t, "b's counters", func() bool { s, m := hasB(); return s && m })
	runIsoCases(t, ts, []isoCase{
		{"alive", "DELETE", "/v2.0/taas/nodes/b", "", hAdmin, 409, "NodeInUse", "Node b is alive"},
		{"self", "DELETE", "/v2.0/taas/nodes/a", "", hAdmin, 409, "NodeInUse", "Node a is alive"},
		{"member", "DELETE", "/v2.0/taas/nodes/b", "", hA, 403, "PolicyNotAuthorized", "rule:delete_node is disallowed by policy"},
		{"bad name", "DELETE", "/v2.0/taas/nodes/a!b", "", hAdmin, 400, "HTTPBadRequest", "node name"},
		{"unknown", "DELETE", "/v2.0/taas/nodes/zz", "", hAdmin, 404, "NodeNotFound", "Node zz could not be found."},
	})
	b.halt()
	t0 := time.Now()
	waitFor(t, "b's counters gone", func() bool { s, m := hasB(); return !s && !m })
	t.Logf("b's counters left out %v after its last heartbeat (timeout 1 s)", time.Since(t0))
	runIsoCases(t, ts, []isoCase{
		{"dead", "DELETE", "/v2.0/taas/nodes/b", "", hAdmin, 204, "", ""},
		{"again", "DELETE", "/v2.0/taas/nodes/b", "", hAdmin, 404, "NodeNotFound", "Node b could not be found."},
	})
	if pub, err := ts.st.ListNodeStats(context.Background(), "a"); err != nil || len(pub) != 0 {
		t.Errorf("node_stats after deleting b: %v %v, want none", pub, err)
	}
	for _, n := range ts.list("/v2.0/taas/nodes", "nodes", hAdmin) {
		if n["name"] == "b" {
			t.Errorf("b still listed: %v", n)
		}
	}
}
