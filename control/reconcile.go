package control

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// Reconciler is the only bridge from the store's desired state to the data
// plane: a pass reads every service, flow and tap mirror with its port's
// binding, builds a broker.Plan, hands it to DataPlane.Apply and writes
// back each status (and reason) that changed, announcing it as a "status"
// event. Tap mirrors have no status in the store (upstream's have no status
// attribute): the last pass's are kept in memory (MirrorStatuses), and a
// change is logged once.
//
// Passes run in Run's goroutine: at start-up, after Trigger (every mutating
// API call triggers; a burst of triggers coalesces into one pass), when
// another taasd writes the database (store.Subscribe: PostgreSQL's
// notifications, issue 14) and on every DataPlane.LinkEvents value. Sync runs one pass in the caller's
// goroutine; passes never overlap.
type Reconciler struct {
	st  *store.Store
	dp  DataPlane
	log *slog.Logger
	hub *hub
	// uplinks are the interfaces declared with role uplink, for every plan.
	uplinks []string
	// nodes say which resources are this node's to realise and to write
	// the status of (issue 14); the zero value realises every port whose
	// binding:host_id is empty.
	nodes nodeRules
	// onPass, when set, is given each pass's owners: the node of every
	// tap service, flow and mirror, with its stored status (nodes.go).
	onPass func(map[string]owned)

	trigger chan struct{}

	// mu serialises passes and guards version.
	mu      sync.Mutex
	version uint64
	// mirrors holds the last pass's tap mirror statuses, by id; the map
	// is never changed once stored.
	mirrors atomic.Pointer[map[string]broker.Status]
}

func newReconciler(st *store.Store, dp DataPlane, log *slog.Logger, h *hub, uplinks []string) *Reconciler {
	return &Reconciler{st: st, dp: dp, log: log, hub: h, uplinks: uplinks, trigger: make(chan struct{}, 1)}
}

// MirrorStatuses returns the status of every tap mirror as the last pass
// left it, by id; nil before the first pass. The map must not be changed.
func (r *Reconciler) MirrorStatuses() map[string]broker.Status {
	if m := r.mirrors.Load(); m != nil {
		return *m
	}
	return nil
}

// Trigger asks for a pass soon and returns at once.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default: // a pass is already pending; it will see this change too
	}
}

// Run passes once, then whenever triggered or a link changes, until ctx
// ends. Between two passes it rests minRest, or eight times as long as
// the last pass took if that is longer (up to maxRest): a pass reads the
// whole desired state, and under a burst of creates (issue 10: 8 clients
// creating thousands of flows) back-to-back passes took one of the two
// cores and doubled the creates' latency; resting twice a pass still left
// the passes a fifth of the creates' CPU, and their CPU added some 10 ms
// to the creates' p99. So passes take at most a ninth of a core, whatever
// a pass costs. Triggers meanwhile coalesce into the next pass, so a
// status follows a change within a rest and a pass (maxRest and a pass at
// most).
func (r *Reconciler) Run(ctx context.Context) {
	links := r.dp.LinkEvents()
	// Another taasd's writes wake the loop as this one's Trigger does.
	remote, unsubscribe := r.st.Subscribe()
	defer unsubscribe()
	rest := time.NewTimer(0)
	defer rest.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rest.C:
		}
		start := time.Now()
		if err := r.Sync(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("reconcile", "err", err)
		}
		rest.Reset(restAfter(time.Since(start)))
		select {
		case <-ctx.Done():
			return
		case <-r.trigger:
		case <-remote:
		case _, ok := <-links:
			if !ok {
				links = nil // a closed channel would spin
			}
		}
	}
}

// Run's rest between passes.
const (
	minRest = 25 * time.Millisecond
	maxRest = 250 * time.Millisecond
)

// restAfter is Run's rest after a pass that took pass.
func restAfter(pass time.Duration) time.Duration {
	return min(max(minRest, 8*pass), maxRest)
}

// Sync runs one pass now and returns when its statuses are written: after
// it, the store reflects what the data plane made of every change committed
// before the call.
func (r *Reconciler) Sync(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	desired, err := r.st.Desired(ctx)
	if err != nil {
		return err
	}
	svcs, flows := desired.Services, desired.Flows
	r.version++
	plan, held, owners := buildNodePlan(r.version, desired, r.uplinks, r.nodes)
	report, err := r.dp.Apply(ctx, plan)
	if err != nil {
		// Nothing of this plan is known to be realised: say so on each.
		r.log.Error("apply plan", "plan_version", plan.Version, "err", err)
		fail := broker.Status{State: broker.StateError, Reason: fmt.Sprintf("apply plan %d: %v", plan.Version, err)}
		report = broker.Report{Version: plan.Version, Services: map[string]broker.Status{}, Flows: map[string]broker.Status{},
			Mirrors: map[string]broker.Status{}}
		for _, s := range plan.Services {
			report.Services[s.ID] = fail
		}
		for _, f := range plan.Flows {
			report.Flows[f.ID] = fail
		}
		for _, m := range plan.Mirrors {
			report.Mirrors[m.ID] = fail
		}
	}
	for id, st := range held.Services {
		report.Services[id] = st
	}
	for id, st := range held.Flows {
		report.Flows[id] = st
	}
	mirrors := make(map[string]broker.Status, len(desired.Mirrors))
	for _, m := range desired.Mirrors {
		if !r.nodes.writes(owners[m.ID].node) {
			continue
		}
		st, ok := held.Mirrors[m.ID]
		if !ok {
			st, ok = report.Mirrors[m.ID]
		}
		if !ok {
			st = broker.Status{State: broker.StateDown, Reason: "not reported by the data plane"}
		}
		mirrors[m.ID] = st
	}
	changedSvcs, changedFlows := map[string]store.Status{}, map[string]store.Status{}
	var (
		evs []Event
		// changes are logged once written.
		changes []statusChange
	)
	for _, s := range svcs {
		if !r.nodes.writes(owners[s.ID].node) {
			continue // its node writes it
		}
		st := toStoreStatus(report.Services, s.ID)
		if st != s.Status {
			changedSvcs[s.ID] = st
			changes = append(changes, statusChange{s.ID, func() { r.logStatus(ctx, "tap_service", s.ID, s.Name, s.Status, st) }})
			evs = append(evs, Event{Resource: "tap_service", ID: s.ID, Action: "status", Status: st.State, ProjectID: s.ProjectID})
		}
	}
	for _, f := range flows {
		if !r.nodes.writes(owners[f.ID].node) {
			continue
		}
		st := toStoreStatus(report.Flows, f.ID)
		if st != f.Status {
			changedFlows[f.ID] = st
			changes = append(changes, statusChange{f.ID, func() { r.logStatus(ctx, "tap_flow", f.ID, f.Name, f.Status, st) }})
			evs = append(evs, Event{Resource: "tap_flow", ID: f.ID, Action: "status", Status: st.State, ProjectID: f.ProjectID})
		}
	}
	changedMirrors := map[string]store.Status{}
	for _, m := range desired.Mirrors {
		st, ok := mirrors[m.ID]
		if !ok {
			continue // another node's
		}
		ss := store.Status{State: st.State.String(), Reason: st.Reason}
		if ss == m.Status {
			continue
		}
		changedMirrors[m.ID] = ss
		evs = append(evs, Event{Resource: "tap_mirror", ID: m.ID, Action: "status", Status: ss.State, ProjectID: m.ProjectID})
		changes = append(changes, statusChange{m.ID, func() { r.logStatus(ctx, "tap_mirror", m.ID, m.Name, m.Status, ss) }})
	}
	// The store checks ownership again as it writes: a port may have moved
	// to another node since this pass read it. Only what it wrote is
	// logged and announced: a row it skipped holds the other node's status,
	// and an event of this pass's would show subscribers a status the
	// database never held (issue 14).
	written, err := r.st.SetOwnStatuses(ctx, r.nodes.owns(), changedSvcs, changedFlows, changedMirrors)
	if err != nil {
		return fmt.Errorf("write status of plan %d: %w", plan.Version, err)
	}
	evs = slices.DeleteFunc(evs, func(e Event) bool { return !written[e.ID] })
	for _, c := range changes {
		if written[c.id] {
			c.log()
		}
	}
	for id := range changedMirrors {
		if !written[id] {
			delete(mirrors, id) // another node's now
		}
	}
	r.mirrors.Store(&mirrors)
	if r.onPass != nil {
		r.onPass(owners)
	}
	r.hub.publish(evs...)
	// Info only when something changed: every API write triggers a pass.
	level := slog.LevelDebug
	if len(evs) > 0 {
		level = slog.LevelInfo
	}
	r.log.Log(ctx, level, "plan applied", "plan_version", plan.Version, "tap_services", len(plan.Services),
		"tap_flows", len(plan.Flows), "tap_mirrors", len(plan.Mirrors), "status_changes", len(evs))
	return nil
}

// statusChange is a status a pass writes, and how to log it once written.
type statusChange struct {
	id  string
	log func()
}

// logStatus logs a status change once, when it is written: at info, or
// at warning when the new status is ERROR (journalctl -p warning lists
// what an operator must fix).
func (r *Reconciler) logStatus(ctx context.Context, resource, id, name string, old, st store.Status) {
	level := slog.LevelInfo
	if st.State == broker.StateError.String() {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "status changed", "resource", resource, "name", name, "id", id,
		"old_status", old.State, "status", st.State, "reason", st.Reason)
}

func toStoreStatus(m map[string]broker.Status, id string) store.Status {
	st, ok := m[id]
	if !ok {
		return store.Status{State: broker.StateDown.String(), Reason: "not reported by the data plane"}
	}
	return store.Status{State: st.State.String(), Reason: st.Reason}
}

// buildPlan turns the desired state into the data plane's plan. Unbound
// ports give an empty Iface; the data plane reports those DOWN. What sits on
// an administratively down port (admin_state_up false, as Neutron means it:
// the port passes no traffic) stays out of the plan: a service on such a
// port, every flow into that service, every flow whose source is such a
// port and every tap mirror on one. So does a mirror the data plane could
// not use (a remote IP, type or tunnel id it cannot parse: a row the API
// did not write). held gives their statuses, DOWN or ERROR with the reason.
func buildPlan(version uint64, d store.DesiredState, uplinks []string) (p *broker.Plan, held broker.Report) {
	p, held, _ = buildNodePlan(version, d, uplinks, nodeRules{})
	return p, held
}

// buildNodePlan is buildPlan for the node rules say: what sits on
// another node's ports is left out, and not held either (that node writes
// its status), but what this node must say DOWN because of where its
// ports are (bound to no node, a flow across two nodes; or, on a single
// appliance, a port bound to another node) is held with the reason.
// owners gives every resource's node and stored status.
func buildNodePlan(version uint64, d store.DesiredState, uplinks []string, rules nodeRules) (p *broker.Plan, held broker.Report,
	owners map[string]owned) {
	owners = make(map[string]owned, len(d.Services)+len(d.Flows)+len(d.Mirrors))
	p = &broker.Plan{Version: version, Services: make([]broker.Service, 0, len(d.Services)),
		Flows: make([]broker.Flow, 0, len(d.Flows)), Mirrors: make([]broker.Mirror, 0, len(d.Mirrors)),
		Uplinks: uplinks}
	held = broker.Report{Version: version, Services: map[string]broker.Status{}, Flows: map[string]broker.Status{},
		Mirrors: map[string]broker.Status{}}
	downPort := map[string]string{} // service id -> its administratively down port
	svcNode := make(map[string]string, len(d.Services))
	for _, s := range d.Services {
		node := rules.portNode(s.HostID)
		svcNode[s.ID] = node
		owners[s.ID] = owned{node: node, resource: "tap_service", project: s.ProjectID, status: s.Status}
		if !rules.writes(node) {
			continue
		}
		if st, ok := rules.portHeld("port", s.PortID, node); ok {
			held.Services[s.ID] = st
			continue
		}
		if !s.PortUp {
			held.Services[s.ID] = adminDown("port", s.PortID)
			downPort[s.ID] = s.PortID
			continue
		}
		p.Services = append(p.Services, broker.Service{ID: s.ID, Iface: s.Iface, Snaplen: s.Snaplen})
	}
	for _, f := range d.Flows {
		node := rules.portNode(f.HostID)
		owners[f.ID] = owned{node: node, resource: "tap_flow", project: f.ProjectID, status: f.Status}
		if !rules.writes(node) {
			continue
		}
		if st, ok := rules.flowHeld(f, node, svcNode); ok {
			held.Flows[f.ID] = st
			continue
		}
		if !f.PortUp {
			held.Flows[f.ID] = adminDown("source port", f.SourcePortID)
			continue
		}
		if port, down := downPort[f.ServiceID]; down {
			held.Flows[f.ID] = adminDown("tap service's port", port)
			continue
		}
		p.Flows = append(p.Flows, broker.Flow{ID: f.ID, ServiceID: f.ServiceID, SourcePortID: f.SourcePortID, Iface: f.Iface,
			MAC: planMAC(f.MAC), Direction: directions[f.Direction], VLANFilter: f.VLANFilter, Filter: f.Filter})
	}
	for _, m := range d.Mirrors {
		node := rules.portNode(m.HostID)
		owners[m.ID] = owned{node: node, resource: "tap_mirror", project: m.ProjectID, status: m.Status}
		if !rules.writes(node) {
			continue
		}
		if st, ok := rules.portHeld("port", m.PortID, node); ok {
			held.Mirrors[m.ID] = st
			continue
		}
		if !m.PortUp {
			held.Mirrors[m.ID] = adminDown("port", m.PortID)
			continue
		}
		bm, err := planMirror(m)
		if err != nil {
			held.Mirrors[m.ID] = broker.Status{State: broker.StateError, Reason: err.Error()}
			continue
		}
		p.Mirrors = append(p.Mirrors, bm)
	}
	return p, held, owners
}

// planMAC is a port's MAC for the plan. The API validated and normalised
// it; a bad one here would be a corrupt row, and the zero MAC then matches
// nothing.
func planMAC(mac string) (out [6]byte) {
	if hw, err := net.ParseMAC(mac); err == nil && len(hw) == 6 {
		copy(out[:], hw)
	}
	return out
}

// planMirror is a tap mirror as the data plane sees it: its tunnels in the
// order IN, OUT, BOTH, each id parsed from the value the API stored.
func planMirror(m store.DesiredMirror) (broker.Mirror, error) {
	bm := broker.Mirror{ID: m.ID, PortID: m.PortID, Iface: m.Iface, MAC: planMAC(m.MAC), Type: tunnelTypes[m.MirrorType],
		Snaplen: m.Snaplen}
	if bm.Type == 0 {
		return bm, fmt.Errorf("mirror_type %q is not one the data plane knows", m.MirrorType)
	}
	var err error
	if bm.RemoteIP, err = netip.ParseAddr(m.RemoteIP); err != nil {
		return bm, fmt.Errorf("remote_ip %q: %v", m.RemoteIP, err)
	}
	for _, dir := range []string{"IN", "OUT", "BOTH"} {
		for _, t := range m.Directions {
			if t.Direction != dir {
				continue
			}
			id, err := t.Uint32()
			if err != nil {
				return bm, err
			}
			bm.Tunnels = append(bm.Tunnels, broker.Tunnel{Direction: directions[dir], ID: id})
		}
	}
	if len(bm.Tunnels) != len(m.Directions) {
		return bm, fmt.Errorf("directions %s: only IN, OUT and BOTH are directions", mustJSON(m.Directions))
	}
	return bm, nil
}

func mustJSON(d store.Directions) string {
	b, err := d.MarshalJSON()
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func adminDown(what, portID string) broker.Status {
	return broker.Status{State: broker.StateDown, Reason: fmt.Sprintf("%s %s is administratively down (admin_state_up is false)", what, portID)}
}

var directions = map[string]broker.Direction{"IN": broker.DirIn, "OUT": broker.DirOut, "BOTH": broker.DirBoth}

// tunnelTypes maps a tap mirror's mirror_type to its encapsulation, by
// the broker's own spellings.
var tunnelTypes = func() map[string]broker.TunnelType {
	m := map[string]broker.TunnelType{}
	for t := broker.TunnelGRE; t <= broker.TunnelVXLAN; t++ {
		m[t.String()] = t
	}
	return m
}()
