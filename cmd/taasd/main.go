// Command taasd is the mirror appliance: the Neutron TaaS API on an
// embedded SQLite database, and the data plane that realises it.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/taas-appliance/taas/control"
	"github.com/taas-appliance/taas/control/store"
	"github.com/taas-appliance/taas/web"
)

// config is everything taasd is started with: flags (and, later, the
// configuration file) fill it; run builds the components from it.
type config struct {
	Listen         string         // API address, host:port
	DB             string         // SQLite database file, or a postgres:// URL
	Auth           string         // noauth, token or keystone
	Tokens         string         // tokens file for auth token
	TLSCert        string         // PEM certificate (chain) for HTTPS; "" serves plain HTTP
	TLSKey         string         // its PEM private key
	MaxTapServices int            // 0: no cap
	Quotas         control.Quotas // per-project defaults; 0: control's default, -1: unlimited
	PublicMetrics  bool           // /metrics without an admin token in token mode
	Dataplane      string         // none or xdp
	PinDir         string         // bpffs directory of the handoff (SIGUSR2); "" for none
	LogLevel       string         // debug, info, warn or error
	Node           string         // this taasd's node name (issue 14); default the host name
	NodeTimeout    int            // seconds a fleet node may go unheard before its resources show DOWN; 0: 10

	// Limits bound what requests may cost ([limits] in the file).
	Limits control.Limits
	// Keystone is auth keystone's configuration ([auth] in the file,
	// --keystone-url); KeystoneCAFile the CA file to trust for its URL.
	Keystone       control.KeystoneConfig
	KeystoneCAFile string
	// MemoryLimit is the Go runtime's soft memory limit in bytes
	// (debug.SetMemoryLimit); 0 leaves the runtime's default (none).
	MemoryLimit int64

	// --version and --config (configfile.go, check.go).
	Version bool        // print the version and exit
	File    *fileConfig // the configuration file; nil without --config
}

// parseFlags fills a config from the command line. --help prints the usage
// on stdout (it is what was asked for) and returns flag.ErrHelp; a bad flag
// is returned (main prints it, with a pointer to --help).
func parseFlags(args []string, stdout io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("taasd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:9696", "API `address` (host:port)")
	fs.StringVar(&cfg.DB, "db", "taas.db", "database: a SQLite `file` (created if missing) or a postgres:// URL")
	fs.StringVar(&cfg.Auth, "auth", control.AuthNoauth, "authentication: noauth, token or keystone")
	fs.StringVar(&cfg.Tokens, "tokens", "", "tokens `file` for --auth token: lines \"TOKEN PROJECT_ID ROLE[,ROLE...]\"")
	fs.StringVar(&cfg.Keystone.URL, "keystone-url", "", "Keystone's `URL` for --auth keystone (the service credentials are in the --config file's [auth])")
	fs.BoolVar(&cfg.PublicMetrics, "public-metrics", false, "serve /metrics without a token in --auth token and keystone modes (default: admin token required)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate `file` (chain first the server's): serve the API and dashboard over HTTPS only; needs --tls-key")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.IntVar(&cfg.MaxTapServices, "max-tap-services", 0, "cap on tap services (409 TapServiceLimitReached beyond); 0 = no cap")
	fs.IntVar(&cfg.Quotas.Network, "quota-network", 0, "networks per project (409 OverQuota beyond); 0 = default (1000), -1 = unlimited")
	fs.IntVar(&cfg.Quotas.Port, "quota-port", 0, "ports per project; 0 = default (10000), -1 = unlimited")
	fs.IntVar(&cfg.Quotas.TapService, "quota-tap-service", 0, "tap services per project; 0 = default (1000), -1 = unlimited")
	fs.IntVar(&cfg.Quotas.TapFlow, "quota-tap-flow", 0, "tap flows per project; 0 = default (10000), -1 = unlimited")
	fs.IntVar(&cfg.Quotas.TapMirror, "quota-tap-mirror", 0, "tap mirrors per project; 0 = default (1000), -1 = unlimited")
	fs.StringVar(&cfg.Dataplane, "dataplane", "none", "data plane: none (API only) or xdp")
	fs.StringVar(&cfg.PinDir, "pin-dir", defaultPinDir, "bpffs `directory` where SIGUSR2 leaves the fast path attached for the next taasd; empty: SIGUSR2 stops as SIGTERM does")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.Node, "node", "",
		"this taasd's node `name` (1 to 64 of A-Z a-z 0-9 . _ -): it realises the ports whose binding:host_id names it; default the host name")
	fs.IntVar(&cfg.NodeTimeout, "node-timeout", 0,
		"`seconds` a fleet node may go unheard before its resources show DOWN; 0 = default (10)")
	fs.BoolVar(&cfg.Version, "version", false, "print the version and exit")
	configPath := fs.String("config", "", "configuration `file` (TOML, see deploy/taasd.toml); flags given here override it")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usageHead)
		fs.PrintDefaults()
		return cfg, err
	} else if err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *configPath != "" {
		fc, err := loadConfigFile(*configPath)
		if err != nil {
			return cfg, err
		}
		fc.apply(&cfg, visited(fs))
		cfg.File = fc
	}
	return cfg, nil
}

// usageHead is the start of --help: the commands, then the flags.
const usageHead = `Usage:
  taasd [flags]               run the appliance: the API (and dashboard) and the data plane
  taasd check [--config F]    check that this machine, these privileges and that configuration
                              can run the data plane, without starting it (exit 1 on a failure)
  taasd --version             print the version

Signals: SIGHUP reloads the tokens file; SIGUSR2 stops, leaving the fast path
attached for the next taasd (--pin-dir); SIGTERM and SIGINT stop.

Flags:
`

// validate checks what flags alone can get wrong.
func (c config) validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: %w", c.Listen, err)
	}
	if c.DB == "" {
		return errors.New("--db: empty path")
	}
	switch c.Auth {
	case control.AuthNoauth:
		if c.Tokens != "" {
			return errors.New("--tokens needs --auth token")
		}
	case control.AuthToken:
		if c.Tokens == "" {
			return errors.New("--auth token needs --tokens FILE")
		}
	case control.AuthKeystone:
		if c.Tokens != "" {
			return errors.New("--tokens needs --auth token")
		}
		kc := c.Keystone
		if err := kc.Validate(); err != nil {
			return fmt.Errorf("--auth keystone: %w (set auth.keystone_url and the service credentials in the --config file)", err)
		}
	default:
		return fmt.Errorf("--auth %q: want noauth, token or keystone", c.Auth)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together: both or neither")
	}
	if c.MaxTapServices < 0 {
		return fmt.Errorf("--max-tap-services %d: want 0 (no cap) or more", c.MaxTapServices)
	}
	for _, q := range []struct {
		flag string
		v    int
	}{{"--quota-network", c.Quotas.Network}, {"--quota-port", c.Quotas.Port}, {"--quota-tap-service", c.Quotas.TapService},
		{"--quota-tap-flow", c.Quotas.TapFlow}, {"--quota-tap-mirror", c.Quotas.TapMirror}} {
		if q.v < -1 {
			return fmt.Errorf("%s %d: want -1 (unlimited), 0 (default) or more", q.flag, q.v)
		}
	}
	if c.PinDir != "" && !filepath.IsAbs(c.PinDir) {
		return fmt.Errorf("--pin-dir %q: want an absolute path on a bpffs, or empty", c.PinDir)
	}
	if c.Dataplane != "none" && c.Dataplane != "xdp" {
		return fmt.Errorf("--dataplane %q: want none or xdp", c.Dataplane)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	// Empty is the default, the host name (control.Config.Node).
	if c.Node != "" {
		if err := control.CheckNodeName(c.Node); err != nil {
			return fmt.Errorf("--node: %w", err)
		}
	}
	if c.NodeTimeout < 0 || c.NodeTimeout == 1 {
		return fmt.Errorf("--node-timeout %d: want 0 (default) or 2 seconds or more", c.NodeTimeout)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check" {
		os.Exit(runCheck(os.Args[2:], os.Stdout, os.Stderr))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err == nil && cfg.Version {
		fmt.Println("taasd", version)
		return
	}
	if err == nil {
		err = cfg.validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "taasd:", err)
		fmt.Fprintln(os.Stderr, "Run 'taasd --help' for the commands and flags.")
		os.Exit(2)
	}
	level, _ := parseLevel(cfg.LogLevel) // validated above
	logger := newLogger(os.Stderr, level, cfg.logFormat())
	// SIGHUP is caught from here on: its default would kill taasd.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, stop := stopContext()
	defer stop()
	var stopping atomic.Pointer[time.Time]
	context.AfterFunc(ctx, func() {
		now := time.Now()
		stopping.Store(&now)
	})
	if err := stopErr(ctx, run(ctx, cfg, logger, hup)); err != nil {
		logger.Error("taasd stopped", "err", err)
		os.Exit(1)
	}
	if t := stopping.Load(); t != nil {
		// From the signal to here: HTTP drain, event streams, reconciler,
		// data plane (workers, XDP detach) and database.
		took := time.Since(*t).Round(time.Millisecond)
		if errors.Is(context.Cause(ctx), errHandoff) {
			logger.Info("taasd stopped for a restart", "took", took, "exit_status", exitHandoff)
			os.Exit(exitHandoff)
		}
		logger.Info("taasd stopped", "took", took)
	}
}

// run builds the components from cfg and serves until ctx ends. Each value
// of hup (SIGHUP; nil in tests that need none) rereads the tokens file.
func run(ctx context.Context, cfg config, logger *slog.Logger, hup <-chan os.Signal) error {
	ccfg := control.Config{Auth: cfg.Auth, MaxTapServices: cfg.MaxTapServices, Quotas: cfg.Quotas, Logger: logger,
		Mount: web.Mount, Limits: cfg.Limits, Interfaces: cfg.interfaces(), PublicMetrics: cfg.PublicMetrics,
		Node: cfg.Node, NodeTimeout: time.Duration(cfg.NodeTimeout) * time.Second, APIAddress: cfg.Listen}
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	if cfg.Auth == control.AuthToken {
		t, err := control.LoadTokens(cfg.Tokens, logger)
		if err != nil {
			return err
		}
		ccfg.Tokens = t
	}
	if cfg.Auth == control.AuthKeystone {
		kc, err := cfg.keystoneConfig()
		if err != nil {
			return err
		}
		ccfg.Keystone = kc
	}
	var certs *certStore
	if cfg.TLSCert != "" {
		var err error
		if certs, err = loadCertStore(cfg.TLSCert, cfg.TLSKey, logger); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer st.Close()
	ccfg.Store = st
	// A fleet is several taasd on one database, which only PostgreSQL
	// serves (issue 14).
	ccfg.Fleet = isFleetDB(cfg.DB)
	dp, closeDP, err := newDataPlane(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer closeDP()
	ccfg.DataPlane = dp
	ccfg.Version = version
	srv, err := control.New(ccfg)
	if err != nil {
		return err
	}
	// The node is claimed before its first plan: a second taasd under a
	// live node's name must not touch the data plane.
	if err := srv.Register(ctx); err != nil {
		return err
	}
	// An admin token in token mode, unless --public-metrics.
	srv.MountMetrics(srv.MetricsHandler(srv.ConnMetrics(), srv.MirrorMetrics(), srv.AuthMetrics(),
		srv.LiveMetrics(), control.BuildInfo(version)))
	// The stored plan runs before the API answers, so that its first
	// answers carry this run's statuses, not those of the last run (issue
	// 9). A failed pass is retried by the reconciler once it runs.
	if err := srv.Reconciler().Sync(ctx); err != nil && ctx.Err() == nil {
		logger.Error("apply the stored plan at start", "err", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	warnOpen(cfg, ln.Addr(), logger)
	if certs != nil {
		ln = tls.NewListener(refusePlainHTTP(ln), certs.tlsConfig())
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go serveReloads(rctx, hup, reloadHooks(cfg, srv, certs, logger), logger)
	return srv.Run(ctx, ln)
}

// isFleetDB reports whether --db names a PostgreSQL database (in every
// form the store takes), which makes this taasd a node of a fleet.
var isFleetDB = store.IsPostgresURL
