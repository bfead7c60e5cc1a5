package control

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// Interface roles and the loop guard (issue 9). The API checks a binding
// or a new use of a port against the declared interfaces and the links it
// sees; roleGuard checks every plan again, for bindings made before the
// interfaces were declared, and the broker checks loops at plan time.

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
		for _, m := range s.declared(role) {
			for _, c := range s.declared(RoleCapture) {
				if why, err := broker.FeedsBack(m, c); err != nil || why != "" {
					s.log.Error("declared "+role+" interface feeds a capture back: it will be refused", "iface", m,
						"capture", c, "reason", why, "err", err)
				}
			}
		}
	}
}

// declared returns the declared interfaces of role, sorted.
func (s *Server) declared(role string) []string {
	var out []string
	for name, r := range s.cfg.Interfaces {
		if r == role {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// checkBindable refuses an interface binding outside the declared
// interfaces, and to an uplink.
func (s *Server) checkBindable(iface string) error {
	if iface == "" || len(s.cfg.Interfaces) == 0 {
		return nil
	}
	switch role, ok := s.cfg.Interfaces[iface]; {
	case ok && role == RoleUplink:
		return badRequest("Interface %s is an uplink: tap mirrors' tunnels leave through it, and no port can be bound to it. "+
			"Bind to a capture interface (%s) or a monitor interface (%s).", iface, orNone(s.declared(RoleCapture)),
			orNone(s.declared(RoleMonitor)))
	case ok:
		return nil
	}
	return badRequest("Interface %s is not one of the appliance's interfaces: bind to a capture interface (%s) "+
		"or a monitor interface (%s).", iface, orNone(s.declared(RoleCapture)), orNone(s.declared(RoleMonitor)))
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
// in that role (when any is declared), and no interface in use or declared
// in the other role (for a capture, the uplinks too) may close a loop with
// it.
// bound lists the interfaces in use: the write transaction's
// store.Tx.BoundInterfaces. Inside a write transaction FeedsBack's netlink
// look-ups (about 60 us per pair) are the one wait besides the database;
// feedsBack answers again from memory while no link changes.
func (s *Server) checkUse(bound func(services bool) ([]string, error), p store.Port, role, what string) error {
	if p.Interface == "" {
		return nil
	}
	if r, ok := s.cfg.Interfaces[p.Interface]; ok && r != role {
		return badRequest("Port %s is bound to %s, a %s interface: %s must be bound to a %s interface.",
			p.ID, p.Interface, r, what, role)
	}
	// The other role's interfaces: in use, and declared.
	other, err := bound(role == RoleCapture)
	if err != nil {
		return err
	}
	if role == RoleMonitor {
		other = append(other, s.declared(RoleCapture)...)
	} else {
		other = append(other, s.declared(RoleMonitor)...)
		other = append(other, s.declared(RoleUplink)...)
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
		return badRequest("Refused: %s, so copies sent out of %s would be captured again (a mirror loop).", why, monitor)
	}
	return nil
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

// checkRebind checks a port's new interface binding against what uses the
// port: its tap services need a monitor, the flows it is the source of
// and the mirrors on it a capture. It reads through tx, the update's
// write transaction, which sees the uses that Writes earlier in its batch
// added.
func (s *Server) checkRebind(tx *store.Tx, p store.Port) error {
	if err := s.checkBindable(p.Interface); err != nil || p.Interface == "" {
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
		if err := s.checkUse(tx.BoundInterfaces, p, RoleMonitor, useService); err != nil {
			return err
		}
	}
	if sources > 0 {
		return s.checkUse(tx.BoundInterfaces, p, RoleCapture, useSource)
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
