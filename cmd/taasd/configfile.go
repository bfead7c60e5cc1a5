package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/taas-appliance/taas/control"
	"github.com/taas-appliance/taas/internal/netdev"
)

// fileConfig is taasd's configuration file, TOML, as deploy/taasd.toml
// documents it field by field. Every field is optional; a flag given on the
// command line wins over the file (see applyFile). Unknown keys are errors, so
// a misspelt key never silently does nothing.
type fileConfig struct {
	// Listen is the API and dashboard address, host:port (--listen).
	Listen string `toml:"listen"`
	// DB is the SQLite database file, or a postgres:// URL (--db).
	DB string `toml:"db"`
	// Dataplane is "xdp" or "none" (--dataplane).
	Dataplane string `toml:"dataplane"`
	// MaxTapServices caps the number of tap services; 0 means no cap
	// (--max-tap-services).
	MaxTapServices int `toml:"max_tap_services"`
	// TLSCert and TLSKey are PEM files: with both, the API and dashboard
	// are served over HTTPS only (--tls-cert, --tls-key). SIGHUP rereads
	// them.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// Node is this taasd's node name (--node); default the host name.
	Node string `toml:"node"`
	// NodeTimeoutSeconds is how long a fleet node may go unheard before
	// its resources show DOWN (--node-timeout); 0 means 10.
	NodeTimeoutSeconds int `toml:"node_timeout_seconds"`

	Auth       authFile    `toml:"auth"`
	Quotas     quotasFile  `toml:"quotas"`
	Log        logFile     `toml:"log"`
	Broker     brokerFile  `toml:"broker"`
	Limits     limitsFile  `toml:"limits"`
	Interfaces []ifaceFile `toml:"interfaces"`

	// path is where the file was read from, for messages.
	path string
	// meta says which keys the file set, so that a zero value written in the
	// file still overrides a default.
	meta toml.MetaData
}

// authFile is the [auth] table.
type authFile struct {
	// Mode is "noauth", "token" or "keystone" (--auth).
	Mode string `toml:"mode"`
	// Tokens is the token file, needed when Mode is "token" (--tokens).
	Tokens string `toml:"tokens"`
	// PublicMetrics serves /metrics without a token in token and keystone
	// modes; by default it needs an admin token there (--public-metrics).
	PublicMetrics bool `toml:"public_metrics"`

	// Keystone mode (control.KeystoneConfig): Keystone's URL
	// (--keystone-url), and taasd's own credentials, a service user's
	// password or an application credential.
	KeystoneURL       string `toml:"keystone_url"`
	KeystoneCAFile    string `toml:"keystone_cafile"`
	Username          string `toml:"username"`
	Password          string `toml:"password"`
	UserDomainName    string `toml:"user_domain_name"`
	ProjectName       string `toml:"project_name"`
	ProjectDomainName string `toml:"project_domain_name"`
	AppCredentialID   string `toml:"application_credential_id"`
	AppCredentialKey  string `toml:"application_credential_secret"`
	// CacheSeconds is how long a validated token is trusted; default 300,
	// 0 disables the cache.
	CacheSeconds int `toml:"cache_seconds"`
	// CacheSize bounds the cache in tokens; 0 means 10000.
	CacheSize int `toml:"cache_size"`
	// TimeoutSeconds bounds each request to Keystone; 0 means 5.
	TimeoutSeconds int `toml:"timeout_seconds"`
}

// keystoneKeys are the [auth] keys only keystone mode uses.
var keystoneKeys = []string{"keystone_url", "keystone_cafile", "username", "password", "user_domain_name", "project_name",
	"project_domain_name", "application_credential_id", "application_credential_secret", "cache_seconds", "cache_size", "timeout_seconds"}

// quotasFile is the [quotas] table: the per-project limits every project
// has unless an admin overrides them (PUT /v2.0/quotas/{project_id}). Each
// is a count; 0 means the default, -1 unlimited.
type quotasFile struct {
	// Network: networks per project (--quota-network); default 1000.
	Network int `toml:"network"`
	// Port: ports per project (--quota-port); default 10000.
	Port int `toml:"port"`
	// TapService: tap services per project (--quota-tap-service); default 1000.
	TapService int `toml:"tap_service"`
	// TapFlow: tap flows per project (--quota-tap-flow); default 10000.
	TapFlow int `toml:"tap_flow"`
	// TapMirror: tap mirrors per project (--quota-tap-mirror); default 1000.
	TapMirror int `toml:"tap_mirror"`
}

// logFile is the [log] table.
type logFile struct {
	// Level is debug, info, warn or error (--log-level).
	Level string `toml:"level"`
	// Format is "text" (default) or "json".
	Format string `toml:"format"`
}

// brokerFile is the [broker] table: data-plane tuning, used with
// dataplane = "xdp".
type brokerFile struct {
	// BatchSize is the number of descriptors a worker takes per batch,
	// 64 to 256; 0 means the broker's default (256).
	BatchSize int `toml:"batch_size"`
	// FrameSize is the UMEM chunk size in bytes, 2048 or 4096; 0 means
	// 2048. Frames longer than a chunk holds (1792 bytes with 2048) are
	// counted oversize and not copied: use 4096 for jumbo frames.
	FrameSize int `toml:"frame_size"`
	// RxRingSize is the size of each capture socket's fill and RX rings,
	// a power of two from 64 to 65536; 0 means the broker's default
	// (4096). Larger rings absorb longer stalls of a worker (its core
	// taken by something else) without loss, at 2 UMEM frames per entry.
	RxRingSize int `toml:"rx_ring_size"`
	// BusyPoll makes workers spin instead of sleeping in poll(2); only
	// worth it with a core to spare (afxdp-notes gotcha 8).
	BusyPoll bool `toml:"busy_poll"`
	// FastPath lets the XDP program decide and copy frames in the kernel
	// (DEVMAP redirect) wherever the plan fits it; false keeps every
	// capture on the AF_XDP workers. Default true (absent = true).
	FastPath bool `toml:"fast_path"`
	// CPUs pins the workers to these CPUs, round robin; empty means no
	// pinning.
	CPUs []int `toml:"cpus"`
	// PinDir is the bpffs directory where SIGUSR2 leaves the fast path
	// attached for the next taasd (--pin-dir); "" means SIGUSR2 stops as
	// SIGTERM does. Default /sys/fs/bpf/taasd.
	PinDir string `toml:"pin_dir"`
}

// limitsFile is the [limits] table: what requests may cost (control.Limits,
// whose comments give the defaults). Every 0 means the default.
type limitsFile struct {
	// MaxBodySize is the largest request body, in bytes.
	MaxBodySize int `toml:"max_body_size"`
	// MaxBulkItems is the most resources one bulk create may list.
	MaxBulkItems int `toml:"max_bulk_items"`
	// MaxJSONDepth is the deepest nesting a body may have, at most 512.
	MaxJSONDepth int `toml:"max_json_depth"`
	// MaxJSONValues is the most JSON values a body may hold.
	MaxJSONValues int `toml:"max_json_values"`
	// MaxDecodes is how many requests with a body are handled at once.
	MaxDecodes int `toml:"max_decodes"`
	// DecodeWaitMS is how long, in milliseconds, a request with a body
	// waits for its turn before 503.
	DecodeWaitMS int `toml:"decode_wait_ms"`
	// MaxConnections is how many connections are served at once.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerIP is how many of them one client address (an IPv6
	// client's /64) may hold, at most max_connections.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// HeaderTimeoutMS is how long, in milliseconds, a connection may take
	// to send a request's line and headers.
	HeaderTimeoutMS int `toml:"header_timeout_ms"`
	// WriteTimeoutMS is how long, in milliseconds, writing one answer may
	// take before the connection is closed (events streams move it on).
	WriteTimeoutMS int `toml:"write_timeout_ms"`
	// MemoryLimitMiB is the Go runtime's soft memory limit in MiB; 0 means
	// none.
	MemoryLimitMiB int `toml:"memory_limit_mib"`
}

// ifaceFile is one [[interfaces]] entry: a netdev of the appliance.
type ifaceFile struct {
	// Name is the netdev, e.g. "eth1".
	Name string `toml:"name"`
	// Role is "capture" (a SPAN/TAP feed taasd reads), "monitor" (where
	// copies go) or "uplink" (where tap mirrors' tunnelled copies leave,
	// the kernel's route to the remote IP choosing which; no port can be
	// bound to it).
	Role string `toml:"role"`
	// Queues is how many RX queues of a capture interface get a worker,
	// from queue 0; 0 means all of them.
	Queues int `toml:"queues"`
	// Unmatched is what the XDP program does with a frame on a capture
	// interface that no flow wants: "pass" (to the kernel, the default) or
	// "drop".
	Unmatched string `toml:"unmatched"`
}

// Roles of an interface in the file.
const (
	roleCapture = "capture"
	roleMonitor = "monitor"
	roleUplink  = "uplink"
)

// loadConfigFile reads and validates the configuration file at path. The
// error names the file and, for each problem, the field.
func loadConfigFile(path string) (*fileConfig, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	fc := &fileConfig{path: path}
	md, typeErrs, err := decodeConfig(string(text), fc)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("config %s: line %d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	fc.meta = md
	if err := joinProblems(typeErrs, fc.Validate()); err != nil {
		// One line per problem, each naming the file and the field.
		lines := strings.Split(err.Error(), "\n")
		for i, l := range lines {
			lines[i] = fmt.Sprintf("config %s: %s", path, l)
		}
		return nil, errors.New(strings.Join(lines, "\n"))
	}
	return fc, nil
}

// parseConfig decodes and validates a configuration held in memory; tests
// and the fuzz target use it.
func parseConfig(text string) (*fileConfig, error) {
	fc := &fileConfig{path: "(inline)"}
	md, typeErrs, err := decodeConfig(text, fc)
	if err != nil {
		return nil, err
	}
	fc.meta = md
	return fc, joinProblems(typeErrs, fc.Validate())
}

// isSet reports whether the file set key (dotted, e.g. "auth.mode").
func (fc *fileConfig) isSet(key string) bool {
	return fc != nil && fc.meta.IsDefined(strings.Split(key, ".")...)
}

// Validate checks every field and reports every problem, one per line, each
// naming its field: `interfaces[1].unmatched: must be pass or drop, got "foo"`.
func (fc *fileConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	for _, k := range fc.meta.Undecoded() {
		// Keys inside [[interfaces]] carry no index here: "interfaces.foo".
		errs = append(errs, fmt.Errorf("%s: unknown key", k))
	}

	if fc.isSet("listen") {
		if err := checkListen(fc.Listen); err != nil {
			bad("listen", "%v", err)
		}
	}
	if fc.isSet("db") && strings.TrimSpace(fc.DB) == "" {
		bad("db", "must not be empty")
	}
	if fc.isSet("dataplane") {
		oneOf(bad, "dataplane", fc.Dataplane, "xdp", "none")
	}
	if fc.MaxTapServices < 0 {
		bad("max_tap_services", "must be 0 (no cap) or more, got %d", fc.MaxTapServices)
	}
	if fc.isSet("node") {
		if err := control.CheckNodeName(fc.Node); err != nil {
			bad("node", "%v", err)
		}
	}
	if n := fc.NodeTimeoutSeconds; n < 0 || n == 1 {
		bad("node_timeout_seconds", "must be 0 (default) or 2 or more, got %d", n)
	}

	for _, q := range []struct {
		key string
		v   int
	}{{"quotas.network", fc.Quotas.Network}, {"quotas.port", fc.Quotas.Port}, {"quotas.tap_service", fc.Quotas.TapService},
		{"quotas.tap_flow", fc.Quotas.TapFlow}, {"quotas.tap_mirror", fc.Quotas.TapMirror}} {
		if q.v < -1 || q.v > math.MaxInt32 {
			bad(q.key, "must be -1 (unlimited), 0 (default) or up to %d, got %d", math.MaxInt32, q.v)
		}
	}

	if fc.isSet("auth.mode") {
		oneOf(bad, "auth.mode", fc.Auth.Mode, "noauth", "token", "keystone")
	}
	fc.validateKeystone(bad)
	if fc.isSet("tls_cert") != fc.isSet("tls_key") {
		bad("tls_cert", "tls_cert and tls_key go together: both or neither")
	}
	if fc.isSet("tls_cert") && strings.TrimSpace(fc.TLSCert) == "" {
		bad("tls_cert", "must not be empty")
	}
	if fc.isSet("tls_key") && strings.TrimSpace(fc.TLSKey) == "" {
		bad("tls_key", "must not be empty")
	}
	if fc.isSet("auth.tokens") && strings.TrimSpace(fc.Auth.Tokens) == "" {
		bad("auth.tokens", "must not be empty")
	}
	if fc.Auth.Mode == "token" && !fc.isSet("auth.tokens") {
		bad("auth.tokens", `required when auth.mode is "token"`)
	}
	if (fc.Auth.Mode == "noauth" || fc.Auth.Mode == "keystone") && fc.isSet("auth.tokens") {
		bad("auth.tokens", `only used when auth.mode is "token"`)
	}

	if fc.isSet("log.level") {
		oneOf(bad, "log.level", fc.Log.Level, "debug", "info", "warn", "error")
	}
	if fc.isSet("log.format") {
		oneOf(bad, "log.format", fc.Log.Format, "text", "json")
	}

	for _, f := range []struct {
		key string
		v   int
	}{
		{"max_body_size", fc.Limits.MaxBodySize}, {"max_bulk_items", fc.Limits.MaxBulkItems},
		{"max_json_depth", fc.Limits.MaxJSONDepth}, {"max_json_values", fc.Limits.MaxJSONValues},
		{"max_decodes", fc.Limits.MaxDecodes}, {"decode_wait_ms", fc.Limits.DecodeWaitMS},
		{"max_connections", fc.Limits.MaxConnections}, {"memory_limit_mib", fc.Limits.MemoryLimitMiB},
		{"max_connections_per_ip", fc.Limits.MaxConnectionsPerIP}, {"header_timeout_ms", fc.Limits.HeaderTimeoutMS},
		{"write_timeout_ms", fc.Limits.WriteTimeoutMS},
	} {
		if f.v < 0 {
			bad("limits."+f.key, "must be 0 (default) or more, got %d", f.v)
		}
	}
	if d := fc.Limits.MaxJSONDepth; d > 512 {
		bad("limits.max_json_depth", "must be at most 512, got %d", d)
	}
	if n := fc.Limits.MaxBodySize; n > 0 && n < 4096 {
		bad("limits.max_body_size", "must be 0 (default) or 4096 bytes or more, got %d", n)
	}
	maxConns := fc.Limits.MaxConnections
	if maxConns == 0 {
		maxConns = control.DefaultMaxConnections
	}
	if n := fc.Limits.MaxConnectionsPerIP; n > maxConns {
		bad("limits.max_connections_per_ip", "must be at most max_connections (%d), got %d", maxConns, n)
	}
	if m := fc.Limits.MemoryLimitMiB; m > 0 && m < 64 {
		bad("limits.memory_limit_mib", "must be 0 (none) or 64 or more, got %d", m)
	}

	// The broker judges its own settings and its capture interfaces
	// (broker.Config.Problems); the file's rules are the roles, and that a
	// name is listed once whatever its role.
	bc, from := fc.brokerConfig()
	reported := map[string]bool{}
	seen := map[string]int{}
	for i, ifc := range fc.Interfaces {
		field := func(name string) string { return fmt.Sprintf("interfaces[%d].%s", i, name) }
		// A capture's name is the broker's to judge, the others' here.
		nameBad := false
		if ifc.Role != roleCapture {
			if err := netdev.CheckName(ifc.Name); err != nil {
				bad(field("name"), "%v", err)
				nameBad = true
			}
		}
		if j, dup := seen[ifc.Name]; dup && !nameBad && ifc.Name != "" {
			bad(field("name"), "%q already listed as interfaces[%d]", ifc.Name, j)
			reported[field("name")] = true
		} else if !dup {
			seen[ifc.Name] = i
		}
		switch ifc.Role {
		case roleCapture:
		case roleMonitor, roleUplink:
			if ifc.Queues != 0 {
				bad(field("queues"), "only for role %q", roleCapture)
			}
			if ifc.Unmatched != "" {
				bad(field("unmatched"), "only for role %q", roleCapture)
			}
		case "":
			bad(field("role"), "required: capture, monitor or uplink")
		default:
			bad(field("role"), "must be capture, monitor or uplink, got %q", ifc.Role)
		}
	}
	for _, err := range brokerProblems(bc, from) {
		// A capture listed twice is the file's problem first.
		if key, _, _ := strings.Cut(err.Error(), ": "); !reported[key] {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// oneOf reports field through bad unless v is one of allowed.
func oneOf(bad func(field, format string, args ...any), field, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	last := len(allowed) - 1
	bad(field, "must be %s or %s, got %q", strings.Join(allowed[:last], ", "), allowed[last], v)
}

// checkListen accepts host:port with a numeric port; an empty host listens
// on every address.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be a number from 0 to 65535, got %q", port)
	}
	if strings.ContainsAny(host, " \t/") {
		return fmt.Errorf("host must be an address or a name, got %q", host)
	}
	return nil
}

// apply copies every key the file set into cfg, except those whose flag was
// given on the command line (set holds flag names, from flag.Visit): flags
// override the file.
func (fc *fileConfig) apply(cfg *config, set map[string]bool) {
	str := func(key, flagName string, dst *string, v string) {
		if fc.isSet(key) && !set[flagName] {
			*dst = v
		}
	}
	str("listen", "listen", &cfg.Listen, fc.Listen)
	str("db", "db", &cfg.DB, fc.DB)
	str("dataplane", "dataplane", &cfg.Dataplane, fc.Dataplane)
	str("auth.mode", "auth", &cfg.Auth, fc.Auth.Mode)
	str("auth.tokens", "tokens", &cfg.Tokens, fc.Auth.Tokens)
	str("auth.keystone_url", "keystone-url", &cfg.Keystone.URL, fc.Auth.KeystoneURL)
	str("tls_cert", "tls-cert", &cfg.TLSCert, fc.TLSCert)
	str("tls_key", "tls-key", &cfg.TLSKey, fc.TLSKey)
	str("node", "node", &cfg.Node, fc.Node)
	a := fc.Auth
	cfg.KeystoneCAFile = a.KeystoneCAFile
	cfg.Keystone.Username, cfg.Keystone.Password, cfg.Keystone.UserDomain = a.Username, a.Password, a.UserDomainName
	cfg.Keystone.Project, cfg.Keystone.ProjectDomain = a.ProjectName, a.ProjectDomainName
	cfg.Keystone.AppCredentialID, cfg.Keystone.AppCredentialSecret = a.AppCredentialID, a.AppCredentialKey
	cfg.Keystone.CacheTTL, cfg.Keystone.CacheSize = cacheTTL(fc.isSet("auth.cache_seconds"), a.CacheSeconds), a.CacheSize
	cfg.Keystone.Timeout = time.Duration(a.TimeoutSeconds) * time.Second
	str("log.level", "log-level", &cfg.LogLevel, fc.Log.Level)
	str("broker.pin_dir", "pin-dir", &cfg.PinDir, fc.Broker.PinDir)
	if fc.isSet("auth.public_metrics") && !set["public-metrics"] {
		cfg.PublicMetrics = fc.Auth.PublicMetrics
	}
	num := func(key, flagName string, dst *int, v int) {
		if fc.isSet(key) && !set[flagName] {
			*dst = v
		}
	}
	num("max_tap_services", "max-tap-services", &cfg.MaxTapServices, fc.MaxTapServices)
	num("node_timeout_seconds", "node-timeout", &cfg.NodeTimeout, fc.NodeTimeoutSeconds)
	num("quotas.network", "quota-network", &cfg.Quotas.Network, fc.Quotas.Network)
	num("quotas.port", "quota-port", &cfg.Quotas.Port, fc.Quotas.Port)
	num("quotas.tap_service", "quota-tap-service", &cfg.Quotas.TapService, fc.Quotas.TapService)
	num("quotas.tap_flow", "quota-tap-flow", &cfg.Quotas.TapFlow, fc.Quotas.TapFlow)
	num("quotas.tap_mirror", "quota-tap-mirror", &cfg.Quotas.TapMirror, fc.Quotas.TapMirror)
	l := fc.Limits
	cfg.Limits = control.Limits{MaxBodySize: l.MaxBodySize, MaxBulkItems: l.MaxBulkItems,
		MaxJSONDepth: l.MaxJSONDepth, MaxJSONValues: l.MaxJSONValues, MaxDecodes: l.MaxDecodes,
		DecodeWait: time.Duration(l.DecodeWaitMS) * time.Millisecond, MaxConnections: l.MaxConnections,
		MaxConnectionsPerIP: l.MaxConnectionsPerIP, HeaderTimeout: time.Duration(l.HeaderTimeoutMS) * time.Millisecond,
		WriteTimeout: time.Duration(l.WriteTimeoutMS) * time.Millisecond}
	cfg.MemoryLimit = int64(l.MemoryLimitMiB) << 20
}

// interfaces is the declared [[interfaces]], name to role, for
// control.Config.Interfaces; nil without a file or without any.
func (c config) interfaces() map[string]string {
	if c.File == nil || len(c.File.Interfaces) == 0 {
		return nil
	}
	m := map[string]string{}
	for _, ifc := range c.File.Interfaces {
		m[ifc.Name] = ifc.Role
	}
	return m
}

// visited returns the names of the flags fs was given.
func visited(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// newLogger is taasd's logger: text (the default) or JSON lines on w;
// under systemd each line starts with its syslog priority (journal.go).
func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	var pw *prefixWriter
	if f, ok := w.(*os.File); ok && journalStream(f) {
		pw = &prefixWriter{w: w}
		w = pw
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	if pw != nil {
		h = &journalHandler{inner: h, out: pw}
	}
	return slog.New(h)
}

// logFormat is log.format from the file, "" (text) without one.
func (c config) logFormat() string {
	if c.File == nil {
		return ""
	}
	return c.File.Log.Format
}
