package control

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// The taas-stats extension: GET /v2.0/taas/stats answers
// {"taas_stats": broker.Stats} limited to what the caller may see (a
// member: its project's tap services, flows and mirrors; a reader: its
// project's tap mirrors; an
// admin: everything, with the interfaces and the live captures' counters), each tap service and tap flow entry carrying its
// status and the reason from the store, each tap mirror entry the
// reconciler's last pass (which it also writes to the store, issue 13).
// Resources the data plane does not report appear with zero counters.

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

// mirrorStats shadows broker.MirrorStats' status fields: the status is the
// reconciler's, which also covers mirrors kept out of the plan, and
// status_reason is always present, as for services and flows.
type mirrorStats struct {
	broker.MirrorStats
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
}

type taasStats struct {
	UnixNano    int64               `json:"time_unix_nano"`
	PlanVersion uint64              `json:"plan_version"`
	Interfaces  []broker.IfaceStats `json:"interfaces"`
	Services    []serviceStats      `json:"tap_services"`
	Flows       []flowStats         `json:"tap_flows"`
	Mirrors     []mirrorStats       `json:"tap_mirrors"`
	// LiveCaptures are the appliance's live capture counters (issue 12):
	// the admin's, as the interfaces are.
	LiveCaptures *liveCaptureStats `json:"live_captures,omitempty"`
}

// liveCaptureStats are taas/stats' live_captures: the captures running,
// and the frames every capture took and dropped since start.
type liveCaptureStats struct {
	Running  int    `json:"running"`
	Captured uint64 `json:"captured_packets"`
	Dropped  uint64 `json:"dropped_packets"`
}

func (s *Server) stats(c *fiber.Ctx) error {
	id := identity(c)
	out := taasStats{Interfaces: []broker.IfaceStats{}, Services: []serviceStats{}, Flows: []flowStats{}, Mirrors: []mirrorStats{}}
	// Readers see the stats of what they may read: their project's tap
	// mirrors, whose one status is here. Tap services and flows are
	// members' reads (upstream's policy), so not theirs.
	if !id.reader() {
		return renderJSON(c, fiber.StatusOK, map[string]any{"taas_stats": out})
	}
	// UserContext, not the fasthttp RequestCtx: database/sql watches the
	// context from another goroutine, and fasthttp reuses RequestCtx.
	ctx := c.UserContext()
	// Read the store first: a resource created after the snapshot then
	// shows zero counters rather than going missing.
	var svcs []store.TapService
	var flows []store.TapFlow
	if id.member() {
		var err error
		if svcs, err = s.st.ListTapServices(ctx, id.scope()); err != nil {
			return err
		}
		if flows, err = s.st.ListTapFlows(ctx, id.scope()); err != nil {
			return err
		}
	}
	mirrors, err := s.st.ListTapMirrors(ctx, id.scope())
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
		lt := s.liveTotals()
		out.LiveCaptures = &liveCaptureStats{Running: lt.Running, Captured: lt.Captured, Dropped: lt.Dropped}
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
	var hidden []string // the uplinks' names, which members do not see
	if !id.Admin {
		hidden = s.uplinkNames(snap)
	}
	out.Mirrors = s.mirrorStats(mirrors, snap.Mirrors, hidden)
	return renderJSON(c, fiber.StatusOK, map[string]any{"taas_stats": out})
}

// mirrorStats joins mirrors (from the store) with the data plane's
// counters and the reconciler's statuses. A mirror created since the last
// pass is DOWN until a pass hands it to the data plane. An uplink is an
// appliance interface, bound to no port: only admins see its name (issue
// 9), so for others (hidden lists the uplinks' names) the uplink field is
// left out and the names in a reason are replaced by "<uplink>".
func (s *Server) mirrorStats(mirrors []store.TapMirror, reported []broker.MirrorStats, hidden []string) []mirrorStats {
	out := make([]mirrorStats, 0, len(mirrors))
	counters := make(map[string]broker.MirrorStats, len(reported))
	for _, ms := range reported {
		counters[ms.ID] = ms
	}
	statuses := s.rec.MirrorStatuses()
	for _, m := range mirrors {
		ms, ok := counters[m.ID]
		if !ok {
			ms = broker.MirrorStats{ID: m.ID, Drops: map[string]uint64{}}
		}
		st, ok := statuses[m.ID]
		if !ok {
			st = broker.Status{State: broker.StateDown, Reason: notApplied}
		}
		if hidden != nil {
			ms.Uplink = ""
			st.Reason = hideNames(st.Reason, hidden, "<uplink>")
		}
		out = append(out, mirrorStats{MirrorStats: ms, Status: st.State.String(), StatusReason: st.Reason})
	}
	return out
}

// notApplied is the reason of a tap mirror no reconciler pass has seen yet.
const notApplied = "not yet handed to the data plane"

// uplinkNames are the names of every uplink: declared, in the snapshot's
// interfaces, or reported by a mirror. Never nil.
func (s *Server) uplinkNames(snap broker.Stats) []string {
	names := append([]string{}, s.declared(RoleUplink)...)
	for _, is := range snap.Interfaces {
		if is.Role == RoleUplink {
			names = append(names, is.Name)
		}
	}
	for _, ms := range snap.Mirrors {
		if ms.Uplink != "" {
			names = append(names, ms.Uplink)
		}
	}
	return names
}

// hideNames replaces each whole word of text that is one of names by
// mask. A word is a run of the characters interface names are made of
// here (letters, digits, '.', '_', '-', '@'), so up0 in "uplink up0 is
// down" goes and up0 in up01 stays.
func hideNames(text string, names []string, mask string) string {
	inName := func(r rune) bool {
		return unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("._-@", r)
	}
	var b strings.Builder
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		if !inName(r) {
			b.WriteString(text[i : i+size])
			i += size
			continue
		}
		j := i + strings.IndexFunc(text[i:]+" ", func(r rune) bool { return !inName(r) })
		// A sentence's full stop is not part of the name.
		word := strings.TrimRight(text[i:j], ".")
		if slices.Contains(names, word) {
			b.WriteString(mask)
		} else {
			b.WriteString(word)
		}
		b.WriteString(text[i+len(word) : j])
		i = j
	}
	return b.String()
}
