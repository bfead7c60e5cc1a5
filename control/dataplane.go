package control

import (
	"context"

	"github.com/taas-appliance/taas/broker"
)

// DataPlane is the seam between the control plane and the data plane: the
// reconciler hands it the whole desired state and reads back what was
// realised. cmd/taasd passes a *broker.Broker; tests of the API alone pass
// NullDataPlane.
type DataPlane interface {
	// Apply replaces the data plane's plan and reports the status of every
	// service and flow in it. It must not interrupt traffic that the new plan
	// does not change.
	Apply(ctx context.Context, p *broker.Plan) (broker.Report, error)
	// Stats returns a snapshot of every counter.
	Stats() broker.Stats
	// LinkEvents delivers a value whenever an interface changes state (added,
	// removed, up, down), so the reconciler can run again. It may be nil.
	LinkEvents() <-chan struct{}
	// StartLive starts a live capture (broker.Broker.StartLive).
	StartLive(t broker.LiveTarget, snaplen int) (*broker.LiveCapture, error)
	// LiveTotals returns the counters of every live capture.
	LiveTotals() broker.LiveTotals
}

// NullDataPlane realises nothing: every service and flow stays DOWN with the
// reason "no data plane". It serves API-only runs (taasd --dataplane=none)
// and API tests.
type NullDataPlane struct{}

func (NullDataPlane) Apply(_ context.Context, p *broker.Plan) (broker.Report, error) {
	r := broker.Report{Version: p.Version, Services: map[string]broker.Status{}, Flows: map[string]broker.Status{}, Mirrors: map[string]broker.Status{}}
	for _, s := range p.Services {
		r.Services[s.ID] = broker.Status{State: broker.StateDown, Reason: "no data plane"}
	}
	for _, f := range p.Flows {
		r.Flows[f.ID] = broker.Status{State: broker.StateDown, Reason: "no data plane"}
	}
	for _, m := range p.Mirrors {
		r.Mirrors[m.ID] = broker.Status{State: broker.StateDown, Reason: "no data plane"}
	}
	return r, nil
}

func (NullDataPlane) Stats() broker.Stats { return broker.Stats{} }

func (NullDataPlane) LinkEvents() <-chan struct{} { return nil }

// StartLive starts a capture that never sees a frame: there is no data
// plane.
func (NullDataPlane) StartLive(t broker.LiveTarget, snaplen int) (*broker.LiveCapture, error) {
	return broker.NewLiveCapture(t, snaplen), nil
}

func (NullDataPlane) LiveTotals() broker.LiveTotals { return broker.LiveTotals{} }
