package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control/store"
)

// Config configures the control plane. The zero value of each field means
// its default.
type Config struct {
	// Store is the opened database. Required.
	Store *store.Store
	// DataPlane realises the plans; nil means NullDataPlane.
	DataPlane DataPlane
	// Auth is AuthNoauth (default), AuthToken or AuthKeystone.
	Auth string
	// Version is taasd's version, which taas/stats reports as
	// taasd_version (the dashboard shows it); empty is left out.
	Version string
	// Tokens are the bearer tokens of AuthToken (see LoadTokens).
	Tokens Tokens
	// Keystone is where AuthKeystone validates tokens (keystone.go).
	Keystone KeystoneConfig
	// DefaultProject is the project of noauth callers that name none;
	// default "default".
	DefaultProject string
	// MaxTapServices caps the number of tap services across all projects
	// (409 TapServiceLimitReached beyond); 0 means no cap.
	MaxTapServices int
	// Quotas are the default per-project limits (409 OverQuota beyond),
	// which admins override per project through /v2.0/quotas.
	Quotas Quotas
	// Interfaces are the appliance's declared interfaces ([[interfaces]] of
	// taasd's configuration), name to role (RoleCapture, RoleMonitor or
	// RoleUplink). When any is declared, ports can be bound only to these,
	// never to an uplink, and each is used only in its role: a tap
	// service's port on a monitor, a tap flow's or tap mirror's source port
	// on a capture; the uplinks are where tap mirrors' tunnels may leave. Empty keeps the lab's behaviour (any
	// netdev, any role) and logs a warning at start.
	Interfaces map[string]string
	// PublicMetrics serves GET /metrics (MountMetrics) to anybody in
	// AuthToken mode too; by default it needs an admin token there, since
	// it names every interface and resource.
	PublicMetrics bool
	// Heartbeat is the interval of the events stream's keep-alive comment;
	// default 15s.
	Heartbeat time.Duration
	// Limits bound what requests may cost (bodies, decoding, connections);
	// each zero field means its default.
	Limits Limits
	// Mount, when set, adds the dashboard's routes (web.Mount): it is called
	// before the API's routes, so its middleware on "/" sees requests first.
	// With a dashboard mounted, GET / from a browser (Accept: text/html) is
	// redirected to /ui/.
	Mount func(app *fiber.App)
	// Logger; default slog.Default().
	Logger *slog.Logger

	// Node is this taasd's node name (issue 14, nodes.go): the ports whose
	// binding:host_id names it are realised here; default
	// DefaultNodeName() (the host name).
	Node string
	// Fleet says that other taasd share the database (PostgreSQL): an
	// empty binding:host_id is then no node, nodes heartbeat and publish
	// their counters, and every node's API shows the whole fleet. false is
	// a single appliance.
	Fleet bool
	// NodeTimeout is how long a fleet node may go unheard before its
	// resources show DOWN; default 10s.
	NodeTimeout time.Duration
	// NodeHeartbeat is the interval of a fleet node's heartbeat and
	// counters; default 1s, at most NodeTimeout/2.
	NodeHeartbeat time.Duration
	// APIAddress is this node's API address (host:port) as the nodes
	// table shows it.
	APIAddress string

	// newMAC generates the MAC of a port created without one; default
	// generateMAC. Tests make collisions likely through it.
	newMAC func() string
	// startLive starts a live capture; default DataPlane.StartLive. Tests
	// feed streams through it without a data plane.
	startLive func(t broker.LiveTarget, snaplen int) (liveSource, error)
}

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("control: no store")
	}
	if c.DataPlane == nil {
		c.DataPlane = NullDataPlane{}
	}
	switch c.Auth {
	case "":
		c.Auth = AuthNoauth
	case AuthNoauth:
	case AuthToken:
		if len(c.Tokens) == 0 {
			return errors.New("control: auth token needs tokens")
		}
	case AuthKeystone:
		if err := c.Keystone.Validate(); err != nil {
			return fmt.Errorf("control: %w", err)
		}
	default:
		return fmt.Errorf("control: auth %q: want %s, %s or %s", c.Auth, AuthNoauth, AuthToken, AuthKeystone)
	}
	if c.DefaultProject == "" {
		c.DefaultProject = "default"
	}
	if c.MaxTapServices < 0 {
		return fmt.Errorf("control: max tap services %d: want 0 (no cap) or more", c.MaxTapServices)
	}
	if err := c.Quotas.validate(); err != nil {
		return err
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	for name, role := range c.Interfaces {
		if role != RoleCapture && role != RoleMonitor && role != RoleUplink {
			return fmt.Errorf("control: interface %s: role %q: want %s, %s or %s", name, role, RoleCapture, RoleMonitor, RoleUplink)
		}
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Node == "" {
		c.Node = DefaultNodeName()
	}
	if err := CheckNodeName(c.Node); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if c.NodeTimeout <= 0 {
		c.NodeTimeout = 10 * time.Second
	}
	if c.NodeHeartbeat <= 0 {
		c.NodeHeartbeat = time.Second
	}
	if c.NodeHeartbeat > c.NodeTimeout/2 {
		return fmt.Errorf("control: node heartbeat %v: want at most half the node timeout (%v)", c.NodeHeartbeat, c.NodeTimeout)
	}
	if c.newMAC == nil {
		c.newMAC = generateMAC
	}
	if c.startLive == nil {
		c.startLive = startLive(c.DataPlane)
	}
	return nil
}

// Server is the control plane: the fiber app with every route, the
// reconciler and the event hub. Its goroutines: fiber's (one per
// connection), the reconciler's (Run), and one per events stream and per
// live capture stream.
type Server struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	app   *fiber.App
	hub   *hub
	rec   *Reconciler
	done  chan struct{}
	close sync.Once
	// started is when New ran: taas/stats' taasd_started_unix_nano tells
	// one run of taasd from the next (the dashboard drops the rates it
	// kept then).
	started time.Time
	// decodes holds a token per request whose body is being handled
	// (bodyLimits); release returns their memory once they are done.
	decodes chan struct{}
	release *time.Timer
	// tokens replaces cfg.Tokens once SetTokens has run (auth.go).
	tokens atomic.Pointer[Tokens]
	// ks validates tokens with AuthKeystone (keystone.go); nil otherwise.
	ks *keystone
	// conns shares the connection slots among clients (connlimit.go).
	conns *connLimiter
	// lists caches rendered lists per store generation (listcache.go).
	lists *listCache
	// loops remembers loop checks while no link changes (feedsBack); set
	// while Run runs.
	loops atomic.Pointer[broker.LoopChecker]
	// live counts the running live captures (live.go).
	live liveSlots
	// fleet is this node's registration and what it knows of the others
	// (fleet.go).
	fleet *fleet

	// The collections, each served by the generic handlers (typed.go).
	networks *kind[store.Network, networkBody, networkView]
	ports    *kind[store.Port, portBody, portView]
	services *kind[store.TapService, serviceBody, serviceView]
	flows    *kind[store.TapFlow, flowBody, flowView]
	mirrors  *kind[store.TapMirror, mirrorBody, mirrorView]
}

// New builds the server; nothing runs until Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "control")
	if len(cfg.Interfaces) > 0 {
		cfg.DataPlane = roleGuard{DataPlane: cfg.DataPlane, roles: cfg.Interfaces}
	}
	s := &Server{cfg: cfg, st: cfg.Store, log: log, hub: newHub(), done: make(chan struct{}), started: time.Now(),
		decodes: make(chan struct{}, cfg.Limits.MaxDecodes), conns: newConnLimiter(cfg.Limits, log)}
	if cfg.Auth == AuthKeystone {
		s.ks = newKeystone(cfg.Keystone, log)
		s.ks.logStart()
	}
	s.release = time.AfterFunc(time.Hour, s.releaseMemory)
	s.release.Stop()
	s.rec = newReconciler(cfg.Store, cfg.DataPlane, log, s.hub, declared(s.cfg.Interfaces, RoleUplink))
	s.lists = newListCache()
	s.fleet = newFleet(cfg)
	s.rec.nodes, s.rec.onPass = s.fleet.rules, s.passOwners
	s.networks, s.ports, s.services, s.flows = s.networkKind(), s.portKind(), s.serviceKind(), s.flowKind()
	s.mirrors = s.mirrorKind()
	s.app = fiber.New(fiber.Config{
		ErrorHandler:          errorHandler(log),
		DisableStartupMessage: true,
		// "/v2.0" and "/v2.0/" differ upstream; ids are case-sensitive.
		StrictRouting: true,
		CaseSensitive: true,
		// Handlers keep request values (ids, names) past the handler in
		// events and logs; Immutable copies them instead of aliasing
		// fasthttp's reused buffers.
		Immutable: true,
		// A request head must come within HeaderTimeout, so that a
		// half-sent one cannot hold a slot for long (issue 9);
		// headerReceived then gives the body bodyTimeout.
		ReadTimeout: cfg.Limits.HeaderTimeout,
		IdleTimeout: 120 * time.Second,
		// A client that never reads its answers loses its slot after
		// WriteTimeout instead of holding it for good (issue 9 review).
		WriteTimeout: cfg.Limits.WriteTimeout,
		// Bodies over the limit get 413 before they are read; headers over
		// maxHeaderSize get 431 (issue 9).
		BodyLimit:      cfg.Limits.MaxBodySize,
		ReadBufferSize: maxHeaderSize,
		// No route takes multipart forms; fasthttp would parse them before
		// any handler could refuse them.
		DisablePreParseMultipartForm: true,
	})
	srv := s.app.Server()
	srv.Handler = s.guard(srv.Handler)
	srv.HeaderReceived = headerReceived
	srv.ConnState = s.conns.connState
	s.routes()
	s.checkInterfaces()
	return s, nil
}

// App is the fiber app, for components that add routes of their own (the
// broker's /metrics). Add them before Run; they get no authentication
// unless they use s.Authenticate.
func (s *Server) App() *fiber.App { return s.app }

// Authenticate is the middleware that resolves the caller's identity, for
// routes added through App that need it.
func (s *Server) Authenticate(c *fiber.Ctx) error { return s.authenticate(c) }

// ConnMetrics collects the API's connection counters (connlimit.go), for
// MetricsHandler.
func (s *Server) ConnMetrics() prometheus.Collector { return s.conns }

// AuthMetrics collects the Keystone validation counters (keystone.go) with
// AuthKeystone, nothing otherwise, for MetricsHandler.
func (s *Server) AuthMetrics() prometheus.Collector {
	if s.ks == nil {
		return noMetrics{}
	}
	return s.ks
}

type noMetrics struct{}

func (noMetrics) Describe(chan<- *prometheus.Desc) {}
func (noMetrics) Collect(chan<- prometheus.Metric) {}

// MirrorMetrics collects each tap mirror's status (metrics.go), for
// MetricsHandler: as the reconciler last saw it on a single appliance; in
// a fleet, every node's mirror with its node.
func (s *Server) MirrorMetrics() prometheus.Collector {
	if s.cfg.Fleet {
		return mirrorStatusCollector{rec: s.rec, srv: s}
	}
	return mirrorStatusCollector{rec: s.rec}
}

// headerReceived is fasthttp's HeaderReceived hook: once a request's head
// is in, its body gets bodyTimeout (the server's ReadTimeout is the
// HeaderTimeout).
func headerReceived(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	return fasthttp.RequestConfig{ReadTimeout: bodyTimeout}
}

// Reconciler is the server's reconciler (tests call Sync on it).
func (s *Server) Reconciler() *Reconciler { return s.rec }

// Run serves on ln and runs the reconciler until ctx ends, then shuts down
// gracefully: event streams end, in-flight requests finish (up to 10s).
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	// A ctx ended already stops at once (below) without the node.
	if err := s.Register(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		s.rec.Run(rctx)
	}()
	// The node's heartbeat (a fleet's), stopped last: the node is alive
	// while it drains.
	nctx, ncancel := context.WithCancel(context.Background())
	defer ncancel()
	nodeErr, nodeDone := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(nodeDone)
		if err := s.runNode(nctx); err != nil {
			nodeErr <- err
		}
	}()
	if lc, err := broker.NewLoopChecker(); err != nil {
		s.log.Warn("loop checks read the links on every create", "err", err)
	} else {
		s.loops.Store(lc)
		defer func() {
			s.loops.Store(nil)
			if err := lc.Close(); err != nil {
				s.log.Warn("close loop checker", "err", err)
			}
		}()
	}
	errc := make(chan error, 1)
	// Connections beyond the limit wait in the kernel's backlog, unless an
	// idle one can be closed to make room: fasthttp's own Concurrency limit
	// would answer them a text/plain 503.
	lln := s.conns.listener(ln)
	go func() { errc <- s.app.Listener(lln) }()
	s.log.Info("listening", "addr", ln.Addr().String(), "auth", s.cfg.Auth)
	var err error
	serving := true
	select {
	case <-ctx.Done():
	case err = <-errc:
		serving = false
	case err = <-nodeErr:
	}
	if serving {
		// fasthttp's Shutdown closes only the listeners Serve has
		// taken: stopped before that, Serve would go on accepting
		// after Run returned, on a closed store (issue 13's leak
		// check found it).
		select {
		case <-lln.accepting:
		case lerr := <-errc:
			serving = false
			if err == nil {
				err = lerr
			}
		}
	}
	s.close.Do(func() { close(s.done) })
	s.hub.close()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	idleDone := make(chan struct{})
	go func() {
		// Idle connections end at once, including those that never sent
		// a byte (connLimiter.closeIdle), until the last request is done.
		defer close(idleDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			s.conns.closeIdle()
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	serr := s.app.ShutdownWithContext(sctx)
	scancel()
	<-idleDone
	if serr != nil && err == nil {
		err = fmt.Errorf("shut down http: %w", serr)
	}
	if serving {
		// Serve returns once Shutdown closed its listener.
		if lerr := <-errc; lerr != nil && err == nil {
			err = lerr
		}
	}
	cancel()
	<-recDone
	if s.ks != nil {
		s.ks.close()
	}
	ncancel()
	<-nodeDone
	s.release.Stop()
	s.log.Info("stopped")
	return err
}

// afterChange publishes events, ends the live captures of what they
// delete, and triggers a reconcile pass: the request never waits for the
// data plane.
func (s *Server) afterChange(evs ...Event) {
	s.hub.publish(evs...)
	s.live.deleted(evs)
	s.rec.Trigger()
}

func newID() string { return uuid.NewString() }

// requestID sets upstream's X-Openstack-Request-Id on every response, and
// strips the .json suffix upstream accepts on every URL.
func requestID(c *fiber.Ctx) error {
	setRequestID(c)
	if p := c.Path(); strings.HasSuffix(p, ".json") && len(p) > len("/v2.0/.json") {
		c.Path(strings.TrimSuffix(p, ".json"))
	}
	return c.Next()
}

// headerRequestID is upstream's request id header.
const headerRequestID = "X-Openstack-Request-Id"

// setRequestID gives the response a request id unless it has one: errors
// that fasthttp finds before any middleware runs get theirs from
// errorHandler.
func setRequestID(c *fiber.Ctx) {
	if len(c.Response().Header.Peek(headerRequestID)) == 0 {
		c.Set(headerRequestID, "req-"+uuid.NewString())
	}
}
