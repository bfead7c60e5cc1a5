package control

import (
	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/broker"
)

// The taas-stats extension: GET /v2.0/taas/stats answers
// {"taas_stats": broker.Stats} limited to what the caller may see (a
// member: its own tap services and flows; an admin: everything, with the
// interfaces), each tap service and tap flow entry carrying its status and
// the reason from the store. Services and flows the data plane does not
// report appear with zero counters.

type serviceStats struct {
	broker.ServiceStats
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
}

type flowStats struct {
	broker.FlowStats
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
}

type taasStats struct {
	UnixNano    int64               `json:"time_unix_nano"`
	PlanVersion uint64              `json:"plan_version"`
	Interfaces  []broker.IfaceStats `json:"interfaces"`
	Services    []serviceStats      `json:"tap_services"`
	Flows       []flowStats         `json:"tap_flows"`
}

func (s *Server) stats(c *fiber.Ctx) error {
	id := identity(c)
	out := taasStats{Interfaces: []broker.IfaceStats{}, Services: []serviceStats{}, Flows: []flowStats{}}
	if !id.member() {
		return renderJSON(c, fiber.StatusOK, map[string]any{"taas_stats": out})
	}
	// UserContext, not the fasthttp RequestCtx: database/sql watches the
	// context from another goroutine, and fasthttp reuses RequestCtx.
	ctx := c.UserContext()
	// Read the store first: a resource created after the snapshot then
	// shows zero counters rather than going missing.
	svcs, err := s.st.ListTapServices(ctx, id.scope())
	if err != nil {
		return err
	}
	flows, err := s.st.ListTapFlows(ctx, id.scope())
	if err != nil {
		return err
	}
	snap := s.cfg.DataPlane.Stats()
	out.UnixNano, out.PlanVersion = snap.UnixNano, snap.PlanVersion
	// The appliance's interfaces carry every project's traffic: their
	// counters and names are the admin's (issue 9), even when a member's
	// port is bound to one.
	if id.Admin {
		out.Interfaces = append(out.Interfaces, snap.Interfaces...)
	}
	svcCounters := map[string]broker.ServiceStats{}
	for _, ss := range snap.Services {
		svcCounters[ss.ID] = ss
	}
	for _, t := range svcs {
		ss, ok := svcCounters[t.ID]
		if !ok {
			ss = broker.ServiceStats{ID: t.ID, Drops: map[string]uint64{}}
		}
		out.Services = append(out.Services, serviceStats{ServiceStats: ss, Status: t.Status, StatusReason: t.StatusReason})
	}
	flowCounters := map[string]broker.FlowStats{}
	for _, fs := range snap.Flows {
		flowCounters[fs.ID] = fs
	}
	for _, f := range flows {
		fs, ok := flowCounters[f.ID]
		if !ok {
			fs = broker.FlowStats{ID: f.ID}
		}
		out.Flows = append(out.Flows, flowStats{FlowStats: fs, Status: f.Status, StatusReason: f.StatusReason})
	}
	return renderJSON(c, fiber.StatusOK, map[string]any{"taas_stats": out})
}
