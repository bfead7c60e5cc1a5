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

// In a fleet each entry's node is the node that realises it (issue 14),
// whose counters it shows ("" for what is bound to no node); a single
// appliance leaves node out, as before nodes existed.

type serviceStats struct {
	broker.ServiceStats
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
	Node         string `json:"node,omitempty"`
}

type flowStats struct {
	broker.FlowStats
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
	Node         string `json:"node,omitempty"`
}

// ifaceStatsAndNode is an interface's counters with its node's name.
type ifaceStatsAndNode struct {
	broker.IfaceStats
	Node string `json:"node,omitempty"`
}

// mirrorStats shadows broker.MirrorStats' status fields: the status is the
// reconciler's, which also covers mirrors kept out of the plan, and
// status_reason is always present, as for services and flows.
type mirrorStats struct {
	broker.MirrorStats
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
	Node         string `json:"node,omitempty"`
}

type taasStats struct {
	UnixNano    int64               `json:"time_unix_nano"`
	PlanVersion uint64              `json:"plan_version"`
	Interfaces  []ifaceStatsAndNode `json:"interfaces"`
	Services    []serviceStats      `json:"tap_services"`
	Flows       []flowStats         `json:"tap_flows"`
	Mirrors     []mirrorStats       `json:"tap_mirrors"`
	// LiveCaptures are the appliance's live capture counters (issue 12):
	// the admin's, as the interfaces are.
	LiveCaptures *liveCaptureStats `json:"live_captures,omitempty"`
	// TaasdVersion is the running taasd's version (issue 13: the
	// dashboard shows it); GET / is as open, so every caller gets it.
	TaasdVersion string `json:"taasd_version,omitempty"`
	// TaasdStarted is when this run of taasd started (Unix ns): a change
	// means the counters started again.
	TaasdStarted int64 `json:"taasd_started_unix_nano,omitempty"`
	// Node is the node that answers, in a fleet (issue 14).
	Node string `json:"node,omitempty"`
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
	out := taasStats{TaasdVersion: s.cfg.Version, Interfaces: []ifaceStatsAndNode{}, Services: []serviceStats{}, Flows: []flowStats{},
		Mirrors: []mirrorStats{}, Node: s.nodeLabel(s.fleet.rules.self)}
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
	snaps, err := s.snapshots(ctx)
	if err != nil {
		return err
	}
	snap := snaps[0].Stats
	out.UnixNano, out.PlanVersion, out.TaasdStarted = snap.UnixNano, snap.PlanVersion, s.started.UnixNano()
	// The appliance's interfaces carry every project's traffic: their
	// counters and names are the admin's (issue 9), even when a member's
	// port is bound to one.
	if id.Admin {
		for _, ns := range snaps {
			for _, is := range ns.Stats.Interfaces {
				out.Interfaces = append(out.Interfaces, ifaceStatsAndNode{IfaceStats: is, Node: s.nodeLabel(ns.Node)})
			}
		}
		lt := s.liveTotals()
		out.LiveCaptures = &liveCaptureStats{Running: lt.Running, Captured: lt.Captured, Dropped: lt.Dropped}
	}
	// Each resource's counters are its node's.
	owners := s.owners()
	svcCounters := map[string]map[string]broker.ServiceStats{}
	for _, ns := range snaps {
		svcCounters[ns.Node] = map[string]broker.ServiceStats{}
		for _, ss := range ns.Stats.Services {
			svcCounters[ns.Node][ss.ID] = ss
		}
	}
	for _, t := range svcs {
		node := s.nodeIn(owners, t.ID)
		ss, ok := svcCounters[node][t.ID]
		if !ok {
			ss = broker.ServiceStats{ID: t.ID, Drops: map[string]uint64{}}
		}
		s.nodeStatus(t.ID, &t.Status, &t.StatusReason)
		out.Services = append(out.Services, serviceStats{ServiceStats: ss, Status: t.Status, StatusReason: t.StatusReason,
			Node: s.nodeLabel(node)})
	}
	flowCounters := map[string]map[string]broker.FlowStats{}
	for _, ns := range snaps {
		flowCounters[ns.Node] = map[string]broker.FlowStats{}
		for _, fs := range ns.Stats.Flows {
			flowCounters[ns.Node][fs.ID] = fs
		}
	}
	for _, f := range flows {
		node := s.nodeIn(owners, f.ID)
		fs, ok := flowCounters[node][f.ID]
		if !ok {
			fs = broker.FlowStats{ID: f.ID}
		}
		s.nodeStatus(f.ID, &f.Status, &f.StatusReason)
		out.Flows = append(out.Flows, flowStats{FlowStats: fs, Status: f.Status, StatusReason: f.StatusReason, Node: s.nodeLabel(node)})
	}
	var hidden []string // the uplinks' names, which members do not see
	if !id.Admin {
		hidden = []string{}
		for _, ns := range snaps {
			hidden = append(hidden, s.uplinkNames(ns.Stats)...)
		}
	}
	out.Mirrors = s.mirrorStats(mirrors, snaps, hidden)
	return renderJSON(c, fiber.StatusOK, map[string]any{"taas_stats": out})
}

// mirrorStats joins mirrors (from the store) with their nodes' counters
// (snaps) and the reconciler's statuses. A mirror created since
// the last pass is DOWN until a pass hands it to the data plane; in a
// fleet, another node's mirror has the status that node wrote. An uplink is an
// appliance interface, bound to no port: only admins see its name (issue
// 9), so for others (hidden lists the uplinks' names) the uplink field is
// left out and the names in a reason are replaced by "<uplink>".
func (s *Server) mirrorStats(mirrors []store.TapMirror, snaps []nodeStats, hidden []string) []mirrorStats {
	out := make([]mirrorStats, 0, len(mirrors))
	counters := map[string]map[string]broker.MirrorStats{}
	for _, ns := range snaps {
		counters[ns.Node] = make(map[string]broker.MirrorStats, len(ns.Stats.Mirrors))
		for _, ms := range ns.Stats.Mirrors {
			counters[ns.Node][ms.ID] = ms
		}
	}
	owners := s.owners()
	statuses := s.rec.MirrorStatuses()
	for _, m := range mirrors {
		node := s.nodeIn(owners, m.ID)
		ms, ok := counters[node][m.ID]
		if !ok {
			ms = broker.MirrorStats{ID: m.ID, Drops: map[string]uint64{}}
		}
		st := broker.Status{State: broker.StateDown, Reason: notApplied}
		status, reason := st.State.String(), st.Reason
		if rs, ok := statuses[m.ID]; ok {
			status, reason = rs.State.String(), rs.Reason
		} else if s.cfg.Fleet && node != s.fleet.rules.self {
			status, reason = m.Status, m.StatusReason
		}
		s.nodeStatus(m.ID, &status, &reason)
		if hidden != nil {
			ms.Uplink = ""
			reason = hideNames(reason, hidden, "<uplink>")
		}
		out = append(out, mirrorStats{MirrorStats: ms, Status: status, StatusReason: reason, Node: s.nodeLabel(node)})
	}
	return out
}

// notApplied is the reason of a tap mirror no reconciler pass has seen yet.
const notApplied = "not yet handed to the data plane"

// uplinkNames are the names of every uplink: declared, in the snapshot's
// interfaces, or reported by a mirror. Never nil.
func (s *Server) uplinkNames(snap broker.Stats) []string {
	names := append([]string{}, declared(s.cfg.Interfaces, RoleUplink)...)
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
