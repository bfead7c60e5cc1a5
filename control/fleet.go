package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// The running side of nodes (nodes.go has the rules): registration at
// start, the heartbeat that also publishes this node's counters, what the
// node knows of the others' liveness, the status every API answer shows
// for a silent node's resources, and GET /v2.0/taas/nodes.

// CheckNodeName checks a node name (--node): 1 to 64 of A-Z, a-z, 0-9,
// '.', '_' and '-', as a host name fits.
func CheckNodeName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("node name %q: want 1 to 64 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("node name %q: %q is not one of A-Z, a-z, 0-9, '.', '_' and '-'", name, r)
		}
	}
	return nil
}

// DefaultNodeName is the host name, when it is a valid node name, else
// "taasd".
func DefaultNodeName() string {
	if h, err := os.Hostname(); err == nil && CheckNodeName(h) == nil {
		return h
	}
	return "taasd"
}

// fleet is the Server's node state.
type fleet struct {
	rules nodeRules
	// instance names this run of taasd in the nodes table.
	instance string
	// registered is set once Register claimed the node.
	registered atomic.Bool

	// mu guards owners, view, viewGen and the times below, and
	// serialises updates of down.
	mu     sync.Mutex
	owners map[string]owned // the last reconciler pass's, by id
	view   map[string]store.Node
	// published is the counters the last heartbeat published, without
	// their time; capped says the cap was logged. Only runNode's
	// goroutine uses them.
	published []byte
	capped    bool
	// interfaces is this node's interfaces as last published
	// (nodeInterfaces): the heartbeat publishes them again when a link
	// change moved a loop. Only Register and runNode's goroutine use it.
	interfaces []byte
	// seen is, by node name, when this taasd last saw the node's row
	// change (observe): liveness is judged on this node's monotonic clock,
	// never by comparing another machine's wall clock with this one's.
	seen map[string]sighting
	// viewAt is when view was read. blind is set while this node's
	// heartbeats fail (it cannot reach the database), since blindFrom
	// (the viewAt before the first failure); backAt is when they worked
	// again after the last such spell, blindFrom then its start.
	viewAt, blindFrom, backAt time.Time
	blind                     bool
	// viewGen is the store's NodeGeneration read just before view was:
	// a node that registered since has moved it (rereadNodes).
	viewGen uint64
	// down holds, by resource id, why each resource whose node is not
	// alive shows DOWN; the map is never changed once stored.
	down atomic.Pointer[map[string]nodeDown]

	// rereadMu serialises rereadNodes; failedGen is the NodeGeneration
	// its last failed reread was for. refreshMu serialises refreshNodes,
	// so that an older read never replaces a newer view.
	rereadMu  sync.Mutex
	failedGen uint64
	refreshMu sync.Mutex
}

// nodeDown is why a resource shows DOWN for its node's silence.
type nodeDown struct {
	reason string
	// unknown: the view has no row of its node ("never seen").
	unknown bool
}

// errNodeInUse is the refusal of a start under the name of a live node.
func errNodeInUse(n store.Node) error {
	return fmt.Errorf("node %s is in use: another taasd (version %q, API %s, started %s) heartbeat at %s; "+
		"stop it, or start this one with another --node", n.Name, n.Version, n.APIAddress, rfc3339(n.StartedAt), rfc3339(n.LastSeen))
}

func rfc3339(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }

// sighting is a node's row as this taasd last saw it change.
type sighting struct {
	instance string
	lastSeen int64
	// at is when, on this node's monotonic clock, the row was seen to
	// change.
	at time.Time
}

// observe records node n's row as read at now and returns when it was
// last seen to change (its heartbeat moved, or another run took it). The
// first sighting cannot tell: it trusts n's last_seen then (its age on
// this node's clock, at least none), and a node whose clock is behind is
// alive again at its next heartbeat. f.mu must be held.
func (f *fleet) observe(n store.Node, now time.Time) time.Time {
	old, ok := f.seen[n.Name]
	if ok && old.instance == n.Instance && old.lastSeen == n.LastSeen {
		return old.at
	}
	at := now
	if !ok {
		at = now.Add(-max(0, time.Duration(now.UnixMilli()-n.LastSeen)*time.Millisecond))
	}
	if f.seen == nil {
		f.seen = map[string]sighting{}
	}
	f.seen[n.Name] = sighting{instance: n.Instance, lastSeen: n.LastSeen, at: at}
	return at
}

// unseenLocked is how long n has not been heard from, at now, as this node
// can tell: the time it was blind itself (its heartbeats failing: a
// network cut, PostgreSQL down) does not count, since it could not have
// heard n then, and in an outage of the database n could not write
// either; without that, every node would show every other DOWN when the
// database returns, until their next heartbeats. f.mu must be held.
func (f *fleet) unseenLocked(n store.Node, now time.Time) time.Duration {
	last := f.observe(n, now) // when this node saw n's heartbeat move
	if f.blind {
		now = f.blindFrom // what view showed when it was last read
	}
	unseen := now.Sub(last)
	if f.backAt.After(last) {
		from := f.blindFrom
		if last.After(from) {
			from = last
		}
		unseen -= f.backAt.Sub(from)
	}
	return unseen
}

// peerAliveLocked is alive for another node: whether n is running and heard
// from within the timeout, blind spells not counted. f.mu must be held.
func (s *Server) peerAliveLocked(n store.Node, now time.Time) bool {
	return n.StoppedAt == 0 && s.fleet.unseenLocked(n, now) < s.cfg.NodeTimeout
}

// Register claims this node's row in the nodes table: Config.Node, under
// a new instance id. In a fleet, a row whose run did not stop cleanly is
// watched for two and a half heartbeats, however old its last_seen looks
// (the clocks of two machines may disagree): if it moves, a live taasd
// has the name and Register refuses (a clean error naming it); if not,
// that run is gone (killed) and this one takes over. taasd calls it before its
// first plan; Run calls it if nobody did.
func (s *Server) Register(ctx context.Context) error {
	f := s.fleet
	if f.registered.Load() {
		return nil
	}
	name := f.rules.self
	var seen int64
	old, err := s.st.GetNode(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("register node %s: %w", name, err)
	default:
		seen = old.LastSeen
		if s.cfg.Fleet && old.StoppedAt == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2*s.cfg.NodeHeartbeat + s.cfg.NodeHeartbeat/2):
			}
			again, err := s.st.GetNode(ctx, name)
			if err != nil {
				return fmt.Errorf("register node %s: %w", name, err)
			}
			if again.LastSeen != old.LastSeen || again.Instance != old.Instance {
				return errNodeInUse(again)
			}
		}
	}
	now := time.Now().UnixMilli()
	ifaces := s.nodeInterfaces()
	me := store.Node{Name: name, Instance: f.instance, Version: s.cfg.Version, APIAddress: s.cfg.APIAddress,
		StartedAt: now, LastSeen: now, Interfaces: string(ifaces)}
	if err := s.st.ClaimNode(ctx, me, seen); errors.Is(err, store.ErrNodeTaken) {
		if again, gerr := s.st.GetNode(ctx, name); gerr == nil {
			return errNodeInUse(again)
		}
		return err
	} else if err != nil {
		return err
	}
	f.interfaces = ifaces
	f.registered.Store(true)
	s.log.Info("node registered", "node", name, "fleet", s.cfg.Fleet, "instance", f.instance)
	if s.cfg.Fleet {
		return s.refreshNodes(ctx)
	}
	return nil
}

// runNode heartbeats every Config.NodeHeartbeat, in a fleet, until ctx
// ends, then records the clean stop. It returns an error only when
// another run took this node's name (this one must stop realising it).
func (s *Server) runNode(ctx context.Context) error {
	if !s.cfg.Fleet || !s.fleet.registered.Load() {
		return nil
	}
	defer func() {
		lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.st.LeaveNode(lctx, s.fleet.rules.self, s.fleet.instance, time.Now().UnixMilli()); err != nil {
			s.log.Warn("record the node's stop", "node", s.fleet.rules.self, "err", err)
		}
	}()
	tick := time.NewTicker(s.cfg.NodeHeartbeat)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		err := s.heartbeat(ctx)
		if errors.Is(err, store.ErrNodeTaken) {
			return fmt.Errorf("node %s: another taasd claimed it (this one was not seen for %v?): %w",
				s.fleet.rules.self, s.cfg.NodeTimeout, err)
		}
		// One line when heartbeats start failing and one when they work
		// again, not one a second.
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.log.Error("heartbeat", "node", s.fleet.rules.self, "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("heartbeat works again", "node", s.fleet.rules.self)
			failing = false
		}
	}
}

// heartbeat moves this node's last_seen, publishes its counters (and its
// interfaces, when they changed) and rereads the nodes.
func (s *Server) heartbeat(ctx context.Context) error {
	stats, same, err := s.statsToPublish()
	if err != nil {
		return err
	}
	ifaces := s.nodeInterfaces()
	changed := ifaces
	if bytes.Equal(ifaces, s.fleet.interfaces) {
		changed = nil
	}
	hctx, cancel := context.WithTimeout(ctx, s.cfg.NodeTimeout)
	defer cancel()
	if err := s.st.Heartbeat(hctx, s.fleet.rules.self, s.fleet.instance, time.Now().UnixMilli(), stats, changed); err != nil {
		s.fleet.goBlind()
		return err
	}
	s.fleet.seeAgain()
	s.fleet.published, s.fleet.interfaces = same, ifaces
	if err := s.refreshNodes(hctx); err != nil {
		s.fleet.goBlind()
		return err
	}
	return nil
}

// seeAgain records that this node reaches the database again, if it did
// not (a heartbeat worked): only the heartbeat decides it, since the
// blind spell is the time its heartbeats failed (unseenLocked).
func (f *fleet) seeAgain() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blind {
		f.blind, f.backAt = false, time.Now()
	}
}

// goBlind records that this node cannot reach the database (see
// unseenLocked).
func (f *fleet) goBlind() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.blind {
		f.blind, f.blindFrom = true, f.viewAt
	}
}

// maxPublishedStats caps the counters a node publishes every heartbeat
// (node_stats), in bytes of JSON. Each tap service and flow takes some
// 110 bytes: 1000 of each made a 227 KB row, rewritten every second. Past
// the cap, the per-resource counters are left out (the interfaces stay):
// other nodes' taas/stats and /metrics then show none for this node's
// resources, and this node's own show them all.
const maxPublishedStats = 64 << 10

// statsToPublish is this node's counters as the heartbeat publishes them,
// nil when they did not change since the last heartbeat published (an idle
// node writes no counters); same is what to remember once published.
func (s *Server) statsToPublish() (stats, same []byte, err error) {
	st := s.cfg.DataPlane.Stats()
	at := st.UnixNano
	st.UnixNano = 0
	if same, err = json.Marshal(st); err != nil {
		return nil, nil, fmt.Errorf("encode stats: %w", err)
	}
	if bytes.Equal(same, s.fleet.published) {
		return nil, same, nil
	}
	st.UnixNano = at
	if stats, err = json.Marshal(st); err != nil {
		return nil, nil, fmt.Errorf("encode stats: %w", err)
	}
	if len(stats) > maxPublishedStats {
		if !s.fleet.capped {
			s.log.Warn("published counters over the cap: other nodes show this node's interfaces only",
				"bytes", len(stats), "cap", maxPublishedStats, "tap_services", len(st.Services), "tap_flows", len(st.Flows),
				"tap_mirrors", len(st.Mirrors))
			s.fleet.capped = true
		}
		st.Services, st.Flows, st.Mirrors = []broker.ServiceStats{}, []broker.FlowStats{}, []broker.MirrorStats{}
		if stats, err = json.Marshal(st); err != nil {
			return nil, nil, fmt.Errorf("encode stats: %w", err)
		}
	}
	return stats, same, nil
}

// refreshNodes rereads the nodes table and updates what the API shows
// of the resources of nodes that are not alive.
func (s *Server) refreshNodes(ctx context.Context) error {
	f := s.fleet
	f.refreshMu.Lock()
	defer f.refreshMu.Unlock()
	gen := s.st.NodeGeneration()
	nodes, err := s.st.ListNodes(ctx)
	if err != nil {
		return err
	}
	view := make(map[string]store.Node, len(nodes))
	for _, n := range nodes {
		view[n.Name] = n
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.view, f.viewAt, f.viewGen = view, time.Now(), gen
	for _, n := range nodes {
		f.observe(n, f.viewAt)
	}
	s.updateDownLocked()
	return nil
}

// nodeRow returns node name's row, as the last heartbeat read it or, for a
// node that joined since, from the database; ok is false when there is
// none.
func (s *Server) nodeRow(name string) (n store.Node, ok bool, err error) {
	f := s.fleet
	f.mu.Lock()
	n, ok = f.view[name]
	f.mu.Unlock()
	if ok {
		return n, true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err = s.st.GetNode(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return n, false, nil
	}
	return n, err == nil, err
}

// nodeNames returns the names of the nodes, sorted, for a refusal: from
// the database (a node may have joined since the last heartbeat read
// them), else as the last heartbeat read them.
func (s *Server) nodeNames() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if nodes, err := s.st.ListNodes(ctx); err == nil {
		names := make([]string, len(nodes))
		for i, n := range nodes {
			names[i] = n.Name
		}
		return names
	}
	f := s.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.view))
}

// rereadNodes rereads the nodes for a resource whose node the view does
// not know, when the nodes' runs changed since the view was read, and
// reports whether it did. That node may have registered since, and its
// resources must not show "node X never seen" until the next heartbeat
// rereads them (issue 14): its claim moves NodeGeneration before it
// returns (through this Store) or once its notification arrives (through
// another taasd's, notify.go). Ordinary writes and heartbeats do not move
// it, so a node that never joins costs no reread, and a change costs one.
// A reread waits at most rereadTimeout: with the nodes table slow or
// locked, answers show the view as it is rather than queue behind it.
// Blind (heartbeats failing), the view stays as it is (updateDownLocked).
func (s *Server) rereadNodes() bool {
	f := s.fleet
	gen := s.st.NodeGeneration()
	f.rereadMu.Lock()
	defer f.rereadMu.Unlock()
	f.mu.Lock()
	skip := f.view == nil || f.blind || f.viewGen >= gen
	f.mu.Unlock()
	if skip || f.failedGen >= gen {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), rereadTimeout)
	defer cancel()
	if err := s.refreshNodes(ctx); err != nil {
		// The next heartbeat rereads them, or finds the database gone;
		// until the nodes change again, answers do not wait for it.
		f.failedGen = gen
		s.log.Debug("reread the nodes", "err", err)
		return false
	}
	return true
}

// rereadTimeout bounds a reread of the nodes (rereadNodes).
const rereadTimeout = 500 * time.Millisecond

// passOwners takes a reconciler pass's owners (Reconciler.onPass). They
// are stored first, so that what a reread announces is this pass's.
func (s *Server) passOwners(owners map[string]owned) {
	f := s.fleet
	f.mu.Lock()
	f.owners = owners
	s.updateDownLocked()
	f.mu.Unlock()
	if s.cfg.Fleet && s.unknownNode(owners) {
		s.rereadNodes()
	}
}

// unknownNode reports whether a resource of owners is on a node that the
// view has no row of.
func (s *Server) unknownNode(owners map[string]owned) bool {
	f := s.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range owners {
		if _, known := f.view[o.node]; !known && o.node != "" && o.node != f.rules.self {
			return true
		}
	}
	return false
}

// updateDownLocked recomputes which resources show DOWN for their node's
// silence. When that changes, the cached lists go (they carry statuses)
// and each change is announced as a status event. f.mu must be held.
func (s *Server) updateDownLocked() {
	f := s.fleet
	// Blind (this node's heartbeats fail), it keeps what it showed: its
	// view of the nodes is as old as its last read, and may predate a
	// node's joining; the first heartbeat that works rereads it.
	if !s.cfg.Fleet || f.view == nil || f.blind {
		return
	}
	now := time.Now()
	down := map[string]nodeDown{}
	for id, o := range f.owners {
		if o.node == "" || o.node == f.rules.self {
			continue
		}
		n, known := f.view[o.node]
		switch {
		case !known:
			down[id] = nodeDown{reason: fmt.Sprintf("node %s never seen (no taasd with --node %s has joined)", o.node, o.node),
				unknown: true}
		case !s.peerAliveLocked(n, now):
			down[id] = nodeDown{reason: fmt.Sprintf("node %s not seen since %s", n.Name, rfc3339(n.LastSeen))}
		}
	}
	var old map[string]nodeDown
	if p := f.down.Load(); p != nil {
		old = *p
	}
	if maps.Equal(old, down) {
		return
	}
	f.down.Store(&down)
	s.lists.invalidate()
	var evs []Event
	for id := range down {
		if _, was := old[id]; !was {
			o := f.owners[id]
			evs = append(evs, Event{Resource: o.resource, ID: id, Action: "status", Status: broker.StateDown.String(), ProjectID: o.project})
		}
	}
	for id := range old {
		if _, is := down[id]; !is {
			if o, ok := f.owners[id]; ok {
				evs = append(evs, Event{Resource: o.resource, ID: id, Action: "status", Status: o.status.State, ProjectID: o.project})
			}
		}
	}
	s.hub.publish(evs...)
}

// nodeStatus replaces *status and *reason by DOWN and why when the
// resource id is on a node that is not alive. A node never seen may have
// joined since the view was read: it rereads the nodes first
// (rereadNodes).
func (s *Server) nodeStatus(id string, status, reason *string) {
	p := s.fleet.down.Load()
	if p == nil {
		return
	}
	d, ok := (*p)[id]
	if ok && d.unknown && s.rereadNodes() {
		d, ok = (*s.fleet.down.Load())[id]
	}
	if ok {
		*status, *reason = broker.StateDown.String(), d.reason
	}
}

// nodeView is one node as GET /v2.0/taas/nodes shows it.
type nodeView struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	APIAddress string `json:"api_address"`
	StartedAt  string `json:"started_at"`
	LastSeen   string `json:"last_seen"`
	// StoppedAt is when it stopped cleanly; "" while it runs or after it
	// died.
	StoppedAt string `json:"stopped_at"`
	Alive     bool   `json:"alive"`
	// Self marks the node that answers.
	Self bool `json:"self"`
	// Interfaces is what the node declares (nodeInterfaces), by name:
	// what a port bound to it is checked against.
	Interfaces map[string]publishedIface `json:"interfaces"`
}

// listNodes answers GET /v2.0/taas/nodes (admins only): every node that
// ever registered, with whether it is alive now. On a single appliance
// this node is alive without heartbeats.
func (s *Server) listNodes(c *fiber.Ctx) error {
	if !identity(c).Admin {
		return errPolicy("get_nodes")
	}
	nodes, err := s.st.ListNodes(c.UserContext())
	if err != nil {
		return err
	}
	now := time.Now()
	out := make([]nodeView, 0, len(nodes))
	f := s.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range nodes {
		self := n.Name == f.rules.self && n.Instance == f.instance
		v := nodeView{Name: n.Name, Version: n.Version, APIAddress: n.APIAddress, StartedAt: rfc3339(n.StartedAt),
			LastSeen: rfc3339(n.LastSeen), Alive: s.peerAliveLocked(n, now) || self && !s.cfg.Fleet, Self: self}
		if n.StoppedAt != 0 {
			v.StoppedAt = rfc3339(n.StoppedAt)
		}
		v.Interfaces = map[string]publishedIface{}
		if n.Interfaces != "" {
			if err := json.Unmarshal([]byte(n.Interfaces), &v.Interfaces); err != nil {
				s.log.Warn("node's published interfaces do not decode", "node", n.Name, "err", err)
				v.Interfaces = map[string]publishedIface{}
			}
		}
		if self && !s.cfg.Fleet {
			v.LastSeen = now.UTC().Format(time.RFC3339) // answering: seen now, without heartbeats
		}
		out = append(out, v)
	}
	return renderJSON(c, fiber.StatusOK, map[string]any{"nodes": out})
}

// deleteNode answers DELETE /v2.0/taas/nodes/{name} (admins only): it
// forgets a node that is not alive (a node retired or renamed), with the
// counters it published; 409 NodeInUse while it is alive, and for the
// answering node itself. Its resources, if ports still name it, then show
// "node X never seen".
func (s *Server) deleteNode(c *fiber.Ctx) error {
	if !identity(c).Admin {
		return errPolicy("delete_node")
	}
	name := c.Params("name")
	if err := CheckNodeName(name); err != nil {
		return badRequest("%v", err)
	}
	notFound := notFound("NodeNotFound", "Node %s could not be found.", name)
	n, err := s.st.GetNode(c.UserContext(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound
	} else if err != nil {
		return err
	}
	f := s.fleet
	f.mu.Lock()
	alive := name == f.rules.self || s.cfg.Fleet && s.peerAliveLocked(n, time.Now())
	f.mu.Unlock()
	if alive {
		return conflict("NodeInUse", fmt.Sprintf("Node %s is alive (its heartbeat moved within %v): stop its taasd first.",
			name, s.cfg.NodeTimeout))
	}
	switch err := s.st.DeleteNode(c.UserContext(), name, n.LastSeen); {
	case errors.Is(err, store.ErrNotFound):
		return notFound
	case errors.Is(err, store.ErrNodeTaken):
		return conflict("NodeInUse", fmt.Sprintf("Node %s heartbeat again: it is alive.", name))
	case err != nil:
		return err
	}
	s.log.Info("node deleted", "node", name)
	if s.cfg.Fleet {
		if err := s.refreshNodes(c.UserContext()); err != nil {
			s.log.Warn("reread the nodes", "err", err)
		}
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func newFleet(cfg Config) *fleet {
	return &fleet{rules: nodeRules{self: cfg.Node, fleet: cfg.Fleet}, instance: uuid.NewString()}
}

// nodeStats is one node's data-plane counters: this node's live, another
// node's as it last published them.
type nodeStats struct {
	Node  string
	Stats broker.Stats
}

// snapshots returns this node's counters first and then, in a fleet,
// every other live node's as last published: a dead or renamed node's
// counters are no longer true (its links are not up), and are left out
// from the moment it is judged not alive. A published blob that does not
// decode (a newer taasd's?) is left out, and logged.
func (s *Server) snapshots(ctx context.Context) ([]nodeStats, error) {
	out := []nodeStats{{Node: s.fleet.rules.self, Stats: s.cfg.DataPlane.Stats()}}
	if !s.cfg.Fleet {
		return out, nil
	}
	pub, err := s.st.ListNodeStats(ctx, s.fleet.rules.self)
	if err != nil {
		return nil, err
	}
	f := s.fleet
	f.mu.Lock()
	now := time.Now()
	live := make(map[string]bool, len(pub))
	for _, p := range pub {
		n, ok := f.view[p.Node]
		live[p.Node] = ok && s.peerAliveLocked(n, now)
	}
	f.mu.Unlock()
	for _, p := range pub {
		if !live[p.Node] {
			continue
		}
		var st broker.Stats
		if err := json.Unmarshal(p.Stats, &st); err != nil {
			s.log.Warn("decode a node's published stats", "node", p.Node, "err", err)
			continue
		}
		out = append(out, nodeStats{Node: p.Node, Stats: st})
	}
	return out, nil
}

// owners is the last reconciler pass's owners; the map must not be
// changed.
func (s *Server) owners() map[string]owned {
	f := s.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.owners
}

// nodeIn is the node of resource id in owners: this node on a single
// appliance.
func (s *Server) nodeIn(owners map[string]owned, id string) string {
	if !s.cfg.Fleet {
		return s.fleet.rules.self
	}
	return owners[id].node
}

// nodeLabel is node as taas/stats and /metrics name it: "" (left out) on
// a single appliance.
func (s *Server) nodeLabel(node string) string {
	if !s.cfg.Fleet {
		return ""
	}
	return node
}
