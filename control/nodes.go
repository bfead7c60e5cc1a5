package control

import (
	"fmt"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// Nodes (issue 14). A fleet is several taasd, each a node named by
// Config.Node, on one database. A port's binding:host_id names the node
// that sees it, and each node realises (puts in its plan, and writes the
// status of) only the tap services, flows and mirrors whose ports are
// its own: a flow by its source port's node, and only when the tap
// service's port is on that node too (copies do not cross nodes). On a
// single appliance (Config.Fleet false) an empty binding:host_id means
// this appliance, as before nodes existed; in a fleet it means no node,
// and what sits on such a port is DOWN, its status written by every node
// alike.
//
// Liveness: fleet nodes heartbeat in the nodes table (nodes_run.go); any
// node's API shows the resources of a node not seen for
// Config.NodeTimeout DOWN with the reason "node X not seen since T",
// computed when it answers rather than written: the silent node's last
// writes (ACTIVE, most likely) stay as they were, and are right again the
// moment it heartbeats, without anybody writing them back; and no live
// node ever writes a row another node owns, so two writers never race.

// nodeRules decide which node realises what.
type nodeRules struct {
	// self is this node's name.
	self string
	// fleet: an empty binding:host_id is no node (see above).
	fleet bool
}

// portNode is the node of a port bound to hostID: "" for none, in a fleet.
func (n nodeRules) portNode(hostID string) string {
	if hostID == "" && !n.fleet {
		return n.self
	}
	return hostID
}

// writes reports whether this node writes the status of a resource of
// node: its own; those bound to no node, whose status every node writes
// the same; and, on a single appliance, every resource.
func (n nodeRules) writes(node string) bool {
	return !n.fleet || node == n.self || node == ""
}

// portHeld is the status of a tap service or mirror, or of a flow's
// source, whose port (what names it) is on node, when this node cannot
// realise it; ok is false when it can.
func (n nodeRules) portHeld(what, portID, node string) (broker.Status, bool) {
	switch {
	case node == n.self:
		return broker.Status{}, false
	case node == "":
		return broker.Status{State: broker.StateDown,
			Reason: fmt.Sprintf("%s %s is bound to no node (its binding:host_id is empty)", what, portID)}, true
	default:
		// A single appliance with a port bound to another node.
		return broker.Status{State: broker.StateDown,
			Reason: fmt.Sprintf("%s %s is on node %s (its binding:host_id), not on this appliance, node %s", what, portID, node, n.self)}, true
	}
}

// flowHeld is the status of flow f, whose source port is on node (this
// node's or none), when it cannot be realised here because of where its
// ports are; svcNode gives each tap service's node.
func (n nodeRules) flowHeld(f store.DesiredFlow, node string, svcNode map[string]string) (broker.Status, bool) {
	if st, ok := n.portHeld("source port", f.SourcePortID, node); ok {
		return st, true
	}
	sn, ok := svcNode[f.ServiceID]
	switch {
	case !ok || sn == node:
		return broker.Status{}, false
	case sn == "":
		return broker.Status{State: broker.StateDown,
			Reason: fmt.Sprintf("tap service %s's port is bound to no node (its binding:host_id is empty)", f.ServiceID)}, true
	default:
		return broker.Status{State: broker.StateDown,
			Reason: fmt.Sprintf("source port %s is on node %s and tap service %s's port on node %s: copies do not cross nodes",
				f.SourcePortID, node, f.ServiceID, sn)}, true
	}
}

// owned is a resource as a reconciler pass saw it: its node (that of its
// port, of its source port for a flow), what it is, its project and its
// stored status.
type owned struct {
	node, resource, project string
	status                  store.Status
}
