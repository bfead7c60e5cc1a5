package control

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// Reconciler is the only bridge from the store's desired state to the data
// plane: a pass reads every service and flow with its port's binding,
// builds a broker.Plan, hands it to DataPlane.Apply and writes back each
// status (and reason) that changed, announcing it as a "status" event.
//
// Passes run in Run's goroutine: at start-up, after Trigger (every mutating
// API call triggers; a burst of triggers coalesces into one pass), and on
// every DataPlane.LinkEvents value. Sync runs one pass in the caller's
// goroutine; passes never overlap.
type Reconciler struct {
	st  *store.Store
	dp  DataPlane
	log *slog.Logger
	hub *hub

	trigger chan struct{}

	// mu serialises passes and guards version.
	mu      sync.Mutex
	version uint64
}

func newReconciler(st *store.Store, dp DataPlane, log *slog.Logger, h *hub) *Reconciler {
	return &Reconciler{st: st, dp: dp, log: log, hub: h, trigger: make(chan struct{}, 1)}
}

// Trigger asks for a pass soon and returns at once.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default: // a pass is already pending; it will see this change too
	}
}

// Run passes once, then whenever triggered or a link changes, until ctx
// ends.
func (r *Reconciler) Run(ctx context.Context) {
	links := r.dp.LinkEvents()
	for {
		if err := r.Sync(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.trigger:
		case _, ok := <-links:
			if !ok {
				links = nil // a closed channel would spin
			}
		}
	}
}

// Sync runs one pass now and returns when its statuses are written: after
// it, the store reflects what the data plane made of every change committed
// before the call.
func (r *Reconciler) Sync(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	svcs, flows, err := r.st.Desired(ctx)
	if err != nil {
		return err
	}
	r.version++
	plan, held := buildPlan(r.version, svcs, flows)
	report, err := r.dp.Apply(ctx, plan)
	if err != nil {
		// Nothing of this plan is known to be realised: say so on each.
		r.log.Error("apply plan", "plan_version", plan.Version, "err", err)
		fail := broker.Status{State: broker.StateError, Reason: fmt.Sprintf("apply plan %d: %v", plan.Version, err)}
		report = broker.Report{Version: plan.Version, Services: map[string]broker.Status{}, Flows: map[string]broker.Status{}}
		for _, s := range plan.Services {
			report.Services[s.ID] = fail
		}
		for _, f := range plan.Flows {
			report.Flows[f.ID] = fail
		}
	}
	for id, st := range held.Services {
		report.Services[id] = st
	}
	for id, st := range held.Flows {
		report.Flows[id] = st
	}
	changedSvcs, changedFlows := map[string]store.Status{}, map[string]store.Status{}
	var evs []Event
	for _, s := range svcs {
		st := toStoreStatus(report.Services, s.ID)
		if st != s.Status {
			changedSvcs[s.ID] = st
			evs = append(evs, Event{Resource: "tap_service", ID: s.ID, Action: "status", Status: st.State, ProjectID: s.ProjectID})
		}
	}
	for _, f := range flows {
		st := toStoreStatus(report.Flows, f.ID)
		if st != f.Status {
			changedFlows[f.ID] = st
			evs = append(evs, Event{Resource: "tap_flow", ID: f.ID, Action: "status", Status: st.State, ProjectID: f.ProjectID})
		}
	}
	if err := r.st.SetStatuses(ctx, changedSvcs, changedFlows); err != nil {
		return fmt.Errorf("write status of plan %d: %w", plan.Version, err)
	}
	r.hub.publish(evs...)
	// Info only when something changed: every API write triggers a pass.
	level := slog.LevelDebug
	if len(evs) > 0 {
		level = slog.LevelInfo
	}
	r.log.Log(ctx, level, "plan applied", "plan_version", plan.Version, "tap_services", len(plan.Services),
		"tap_flows", len(plan.Flows), "status_changes", len(evs))
	return nil
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
// port, every flow into that service, and every flow whose source is such a
// port. held gives their statuses, DOWN with the reason.
func buildPlan(version uint64, svcs []store.DesiredService, flows []store.DesiredFlow) (p *broker.Plan, held broker.Report) {
	p = &broker.Plan{Version: version, Services: make([]broker.Service, 0, len(svcs)),
		Flows: make([]broker.Flow, 0, len(flows))}
	held = broker.Report{Version: version, Services: map[string]broker.Status{}, Flows: map[string]broker.Status{}}
	downPort := map[string]string{} // service id -> its administratively down port
	for _, s := range svcs {
		if !s.PortUp {
			held.Services[s.ID] = adminDown("port", s.PortID)
			downPort[s.ID] = s.PortID
			continue
		}
		p.Services = append(p.Services, broker.Service{ID: s.ID, Iface: s.Iface})
	}
	for _, f := range flows {
		if !f.PortUp {
			held.Flows[f.ID] = adminDown("source port", f.SourcePortID)
			continue
		}
		if port, down := downPort[f.ServiceID]; down {
			held.Flows[f.ID] = adminDown("tap service's port", port)
			continue
		}
		bf := broker.Flow{ID: f.ID, ServiceID: f.ServiceID, SourcePortID: f.SourcePortID, Iface: f.Iface,
			Direction: directions[f.Direction], VLANFilter: f.VLANFilter}
		// The API validated and normalised the MAC; a bad one here would be
		// a corrupt row, and the zero MAC then matches nothing.
		if hw, err := net.ParseMAC(f.MAC); err == nil && len(hw) == 6 {
			copy(bf.MAC[:], hw)
		}
		p.Flows = append(p.Flows, bf)
	}
	return p, held
}

func adminDown(what, portID string) broker.Status {
	return broker.Status{State: broker.StateDown, Reason: fmt.Sprintf("%s %s is administratively down (admin_state_up is false)", what, portID)}
}

var directions = map[string]broker.Direction{"IN": broker.DirIn, "OUT": broker.DirOut, "BOTH": broker.DirBoth}
