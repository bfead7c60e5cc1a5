package control

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// Interface roles and the loop guard (issue 9). The API checks a binding
// or a new use of a port against the declared interfaces and the links of
// the port's node (bindTarget); roleGuard checks every plan again, for
// bindings made before the interfaces were declared, and the broker
// checks loops at plan time.

// Interface roles of Config.Interfaces.
const (
	RoleCapture = "capture"
	RoleMonitor = "monitor"
	// RoleUplink: tap mirrors' tunnelled copies leave through it (the
	// kernel's route to the remote IP picks which). No port is bound to
	// an uplink, and the loop guard treats it as a monitor, since copies
	// go out of it.
	RoleUplink = "uplink"
)

// What checkUse says a port is used as.
const (
	useService = "a tap service's port"
	useSource  = "a tap flow's source port"
	useMirror  = "a tap mirror's port"
)

// checkInterfaces logs, at start, what the declared interfaces allow: a
// warning without any, an error for a declared monitor or uplink that
// feeds a declared capture back (the API and the data plane refuse to use
// it).
func (s *Server) checkInterfaces() {
	if len(s.cfg.Interfaces) == 0 {
		s.log.Warn("no [[interfaces]] declared: admins may bind ports to any netdev of the host, in any role")
		return
	}
	for _, role := range []string{RoleMonitor, RoleUplink} {
		for _, m := range declared(s.cfg.Interfaces, role) {
			for _, c := range declared(s.cfg.Interfaces, RoleCapture) {
				if why, err := broker.FeedsBack(m, c); err != nil || why != "" {
					s.log.Error("declared "+role+" interface feeds a capture back: it will be refused", "iface", m,
						"capture", c, "reason", why, "err", err)
				}
			}
		}
	}
}

// declared returns the interfaces of role in roles (declared interfaces
// and their roles), sorted.
func declared(roles map[string]string, role string) []string {
	var out []string
	for name, r := range roles {
		if r == role {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// bindTarget is what a port's interface binding is checked against: the
// node the port is on. That is this taasd (its declared interfaces and
// its links) on a single appliance and for this node's ports; in a fleet,
// for a port another node sees, the node its binding:host_id names, as it
// published its interfaces (nodeInterfaces): the API of any node takes
// the request, and eth1 of node b is not this node's eth1.
type bindTarget struct {
	// node is the port's node; "" on a single appliance, whose every
	// port is its own.
	node string
	// local: the node is this taasd, whose links the loop checks read.
	local bool
	// roles are the node's declared interfaces and their roles; none:
	// any netdev, in any role.
	roles map[string]string
	// loops holds, for another node, why each of its declared
	// interfaces closes a mirror loop there (publishedIface.Loop).
	loops map[string]string
}

// hosts is the scope of the ports on the target's node, for
// store.Tx.BoundInterfaces: nil, every port, on a single appliance.
func (b bindTarget) hosts() []string {
	if b.node == "" {
		return nil
	}
	return []string{b.node}
}

// whose names the target's interfaces in a refusal.
func (b bindTarget) whose() string {
	if b.local {
		return "the appliance's"
	}
	return "node " + b.node + "'s"
}

// bindTarget returns what port p's interface binding is checked against.
// In a fleet a bound port must name its node, and a node of the fleet;
// the refusal lists the fleet's nodes when list is set (for who binds
// ports, admins: the names of every appliance are not a project's to
// read).
func (s *Server) bindTarget(p store.Port, list bool) (bindTarget, error) {
	nodes := func() string {
		if !list {
			return ""
		}
		return " (" + orNone(s.nodeNames()) + ")"
	}
	switch {
	case !s.cfg.Fleet:
		return bindTarget{local: true, roles: s.cfg.Interfaces}, nil
	case p.HostID == s.fleet.rules.self:
		return bindTarget{node: p.HostID, local: true, roles: s.cfg.Interfaces}, nil
	case p.Interface == "":
		// Not bound: nothing to check, and nothing to realise.
		return bindTarget{node: p.HostID}, nil
	case p.HostID == "":
		return bindTarget{}, badRequest("A port bound to interface %s must name its node: in a fleet, set "+
			"binding:host_id to the node whose interface it is%s.", p.Interface, nodes())
	}
	n, ok, err := s.nodeRow(p.HostID)
	if err != nil {
		return bindTarget{}, err
	}
	if !ok {
		return bindTarget{}, badRequest("binding:host_id %s is not a node of this fleet%s: a port is bound to an "+
			"interface of the node that sees it.", p.HostID, nodes())
	}
	t := bindTarget{node: n.Name}
	if n.Interfaces == "" {
		return t, nil // published nothing: any netdev, as a node without [[interfaces]]
	}
	var ifaces map[string]publishedIface
	if err := json.Unmarshal([]byte(n.Interfaces), &ifaces); err != nil {
		return t, fmt.Errorf("node %s's published interfaces: %w", n.Name, err)
	}
	if len(ifaces) > 0 {
		t.roles, t.loops = map[string]string{}, map[string]string{}
	}
	for name, i := range ifaces {
		t.roles[name] = i.Role
		if i.Loop != "" {
			t.loops[name] = i.Loop
		}
	}
	return t, nil
}

// publishedIface is one declared interface as a node publishes it for the
// others' binding checks (nodes.interfaces, keyed by name) and as GET
// /v2.0/taas/nodes shows it: its role and, when it closes a mirror loop
// on that node with another declared interface, why (the API refuses to
// use it, as on that node itself).
type publishedIface struct {
	Role string `json:"role"`
	Loop string `json:"loop,omitempty"`
}

// nodeInterfaces is this node's declared interfaces as it publishes them:
// JSON of publishedIface by name, "{}" without any. A loop is looked for
// between every declared monitor or uplink and every declared capture,
// as checkUse does for this node's own ports.
func (s *Server) nodeInterfaces() []byte {
	out := map[string]publishedIface{}
	for name, role := range s.cfg.Interfaces {
		out[name] = publishedIface{Role: role}
	}
	for _, m := range append(declared(s.cfg.Interfaces, RoleMonitor), declared(s.cfg.Interfaces, RoleUplink)...) {
		for _, c := range declared(s.cfg.Interfaces, RoleCapture) {
			why, err := s.feedsBack(m, c)
			if err != nil {
				why = fmt.Sprintf("loop check of %s and %s: %v", m, c, err)
			} else if why == "" {
				continue
			}
			for _, name := range []string{m, c} {
				if i := out[name]; i.Loop == "" {
					i.Loop = loopMessage(m, why)
					out[name] = i
				}
			}
		}
	}
	b, _ := json.Marshal(out) // strings only: always encodes
	return b
}

// checkBindable refuses an interface binding of port p outside its node's
// declared interfaces, and to an uplink.
func (s *Server) checkBindable(p store.Port) error {
	t, err := s.bindTarget(p, true)
	if err != nil || p.Interface == "" || len(t.roles) == 0 {
		return err
	}
	switch role, ok := t.roles[p.Interface]; {
	case ok && role == RoleUplink:
		return badRequest("Interface %s is an uplink: tap mirrors' tunnels leave through it, and no port can be bound to it. "+
			"Bind to a capture interface (%s) or a monitor interface (%s).", p.Interface, orNone(declared(t.roles, RoleCapture)),
			orNone(declared(t.roles, RoleMonitor)))
	case ok:
		return nil
	}
	return badRequest("Interface %s is not one of %s interfaces: bind to a capture interface (%s) "+
		"or a monitor interface (%s).", p.Interface, t.whose(), orNone(declared(t.roles, RoleCapture)), orNone(declared(t.roles, RoleMonitor)))
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none declared"
	}
	return strings.Join(names, ", ")
}

// checkUse checks that port p may be used in role, as what (in the
// refusal): as a tap service's port (RoleMonitor), or a tap flow's or tap
// mirror's source (RoleCapture). Its interface, if bound, must be declared
// in that role on its node (when any is declared there), and no interface
// of that node in use or declared in the other role (for a capture, the
// uplinks too) may close a loop with it. For a port of another node the
// loops are those it published among its declared interfaces; one it
// cannot see from here (a node without [[interfaces]]) it refuses itself,
// at plan time (broker.Apply: ERROR with the reason).
// tx is the write transaction: store.Tx.BoundInterfaces sees the uses
// earlier Writes of its batch added. Inside it FeedsBack's netlink
// look-ups (about 60 us per pair) are the one wait besides the database;
// feedsBack answers again from memory while no link changes.
func (s *Server) checkUse(tx *store.Tx, p store.Port, role, what string) error {
	if p.Interface == "" {
		return nil
	}
	t, err := s.bindTarget(p, false)
	if err != nil {
		return err
	}
	if r, ok := t.roles[p.Interface]; ok && r != role {
		return badRequest("Port %s is bound to %s, a %s interface: %s must be bound to a %s interface.",
			p.ID, p.Interface, r, what, role)
	}
	if !t.local {
		if why, ok := t.loops[p.Interface]; ok {
			return badRequest("Refused on node %s: %s.", t.node, why)
		}
		return nil
	}
	// The other role's interfaces: in use on the port's node, and declared.
	other, err := tx.BoundInterfaces(t.hosts(), role == RoleCapture)
	if err != nil {
		return err
	}
	if role == RoleMonitor {
		other = append(other, declared(s.cfg.Interfaces, RoleCapture)...)
	} else {
		other = append(other, declared(s.cfg.Interfaces, RoleMonitor)...)
		other = append(other, declared(s.cfg.Interfaces, RoleUplink)...)
	}
	for _, o := range other {
		mon, capt := p.Interface, o
		if role == RoleCapture {
			mon, capt = o, p.Interface
		}
		if err := s.loopErr(mon, capt); err != nil {
			return err
		}
	}
	return nil
}

// loopErr is the 400 for a monitor that feeds a capture back (issue 9).
func (s *Server) loopErr(monitor, capture string) error {
	why, err := s.feedsBack(monitor, capture)
	if err != nil {
		return err
	}
	if why != "" {
		return badRequest("Refused: %s.", loopMessage(monitor, why))
	}
	return nil
}

// loopMessage says why monitor closes a loop: why, as FeedsBack put it.
func loopMessage(monitor, why string) string {
	return fmt.Sprintf("%s, so copies sent out of %s would be captured again (a mirror loop)", why, monitor)
}

// feedsBack is broker.FeedsBack, answered from the memory of Run's loop
// checker while no link changes: the same pairs are checked create after
// create, inside the write transaction (issue 10).
func (s *Server) feedsBack(monitor, capture string) (string, error) {
	if lc := s.loops.Load(); lc != nil {
		return lc.FeedsBack(monitor, capture)
	}
	return broker.FeedsBack(monitor, capture)
}

// checkRebind checks a port's new interface binding, or its move to
// another node, against what uses the port: its tap services need a
// monitor, the flows it is the source of and the mirrors on it a capture.
// It reads through tx, the update's write transaction, which sees the
// uses that Writes earlier in its batch added.
func (s *Server) checkRebind(tx *store.Tx, p store.Port) error {
	if err := s.checkBindable(p); err != nil || p.Interface == "" {
		return err
	}
	svcs, sources, err := tx.PortUse(p.ID)
	if err != nil {
		return err
	}
	if svcs > 0 && sources > 0 {
		// An unbound port may be both; bound, it would be its own loop.
		return s.loopErr(p.Interface, p.Interface)
	}
	if svcs > 0 {
		if err := s.checkUse(tx, p, RoleMonitor, useService); err != nil {
			return err
		}
	}
	if sources > 0 {
		return s.checkUse(tx, p, RoleCapture, useSource)
	}
	return nil
}

// roleGuard is the data plane behind declared interfaces: it keeps out
// of every plan a tap service whose port is bound outside the declared
// monitors, a tap flow or tap mirror whose source is bound outside the
// declared captures, and a flow whose service was kept out, and reports
// them ERROR with the reason. Bindings made before the interfaces were
// declared (or by hand in the database) thus never reach an undeclared
// netdev.
type roleGuard struct {
	DataPlane
	roles map[string]string
}

func (g roleGuard) Apply(ctx context.Context, p *broker.Plan) (broker.Report, error) {
	q := &broker.Plan{Version: p.Version, Uplinks: p.Uplinks}
	held := broker.Report{Services: map[string]broker.Status{}, Flows: map[string]broker.Status{}, Mirrors: map[string]broker.Status{}}
	misplaced := func(iface, role string) string {
		switch r, ok := g.roles[iface]; {
		case iface == "" || r == role:
			return ""
		case !ok:
			return fmt.Sprintf("interface %s is not one of the appliance's declared interfaces", iface)
		default:
			return fmt.Sprintf("interface %s is a %s interface, not a %s interface", iface, r, role)
		}
	}
	for _, s := range p.Services {
		if why := misplaced(s.Iface, RoleMonitor); why != "" {
			held.Services[s.ID] = broker.Status{State: broker.StateError, Reason: why}
			continue
		}
		q.Services = append(q.Services, s)
	}
	for _, f := range p.Flows {
		why := misplaced(f.Iface, RoleCapture)
		if svc, ok := held.Services[f.ServiceID]; ok && why == "" {
			why = fmt.Sprintf("tap service %s: %s", f.ServiceID, svc.Reason)
		}
		if why != "" {
			held.Flows[f.ID] = broker.Status{State: broker.StateError, Reason: why}
			continue
		}
		q.Flows = append(q.Flows, f)
	}
	for _, m := range p.Mirrors {
		if why := misplaced(m.Iface, RoleCapture); why != "" {
			held.Mirrors[m.ID] = broker.Status{State: broker.StateError, Reason: why}
			continue
		}
		q.Mirrors = append(q.Mirrors, m)
	}
	rep, err := g.DataPlane.Apply(ctx, q)
	if err != nil {
		return rep, err
	}
	for id, st := range held.Services {
		rep.Services[id] = st
	}
	for id, st := range held.Flows {
		rep.Flows[id] = st
	}
	if rep.Mirrors == nil {
		rep.Mirrors = map[string]broker.Status{}
	}
	for id, st := range held.Mirrors {
		rep.Mirrors[id] = st
	}
	return rep, nil
}
