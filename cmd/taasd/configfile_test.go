package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestParseConfig covers every field: a valid value of each, and every error
// Validate reports, each naming its field.
func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want []string // substrings of the error, one per problem; none: valid
	}{
		{"empty file", "", nil},
		{"every field", `
listen = "0.0.0.0:9696"
db = "/var/lib/taasd/taas.db"
dataplane = "xdp"
max_tap_services = 10
[quotas]
network = 20
port = 500
tap_service = -1
tap_flow = 0
tap_mirror = 7
[auth]
mode = "token"
tokens = "/etc/taasd/tokens"
[log]
level = "debug"
format = "json"
[broker]
batch_size = 128
frame_size = 2048
busy_poll = true
cpus = [1, 0]
[[interfaces]]
name = "eth1"
role = "capture"
queues = 2
unmatched = "drop"
[[interfaces]]
name = "eth2"
role = "capture"
unmatched = "pass"
[[interfaces]]
name = "eth3"
role = "monitor"
`, nil},
		{"listen, empty host", `listen = ":9696"`, nil},
		{"listen, IPv6", `listen = "[::1]:9696"`, nil},
		{"listen, no port", `listen = "127.0.0.1"`, []string{`listen: must be host:port, got "127.0.0.1"`}},
		{"listen, bad port", `listen = "127.0.0.1:http"`, []string{`listen: port must be a number from 0 to 65535, got "http"`}},
		{"listen, port too big", `listen = "127.0.0.1:70000"`, []string{`listen: port must be a number`}},
		{"listen, bad host", `listen = "a b:1"`, []string{`listen: host must be an address or a name`}},
		{"db, empty", `db = ""`, []string{"db: must not be empty"}},
		{"dataplane, bad", `dataplane = "dpdk"`, []string{`dataplane: must be xdp or none, got "dpdk"`}},
		{"dataplane, none", `dataplane = "none"`, nil},
		{"max_tap_services, negative", `max_tap_services = -1`, []string{"max_tap_services: must be 0 (no cap) or more, got -1"}},
		{"quotas, below -1", "[quotas]\nport = -2\ntap_flow = 2147483648\nnetwork = -3\ntap_mirror = -4", []string{"quotas.port: must be -1 (unlimited), 0 (default) or up to 2147483647, got -2", "quotas.tap_flow: must be -1", "quotas.network: must be -1 (unlimited), 0 (default) or up to 2147483647, got -3", "quotas.tap_mirror: must be -1 (unlimited), 0 (default) or up to 2147483647, got -4"}},
		{"quotas, unknown resource", "[quotas]\nsubnet = 1", []string{"quotas.subnet: unknown key"}},
		{"auth.mode, bad", "[auth]\nmode = \"ldap\"", []string{`auth.mode: must be noauth, token or keystone, got "ldap"`}},
		{"keystone, password", "[auth]\nmode = \"keystone\"\nkeystone_url = \"https://k:5000/v3\"\nusername = \"taasd\"\n" +
			"password = \"p\"\nproject_name = \"service\"\ncache_seconds = 0", nil},
		{"keystone, application credential", "[auth]\nmode = \"keystone\"\nkeystone_url = \"http://k:5000\"\n" +
			"application_credential_id = \"i\"\napplication_credential_secret = \"s\"\ncache_size = 100", nil},
		{"keystone, nothing", "[auth]\nmode = \"keystone\"", []string{`auth.keystone_url: required when auth.mode is "keystone"`,
			"auth.username: required in keystone mode", "auth.password: required", "auth.project_name: required"}},
		{"keystone, both credentials", "[auth]\nmode = \"keystone\"\nkeystone_url = \"http://k\"\nusername = \"u\"\n" +
			"application_credential_id = \"i\"", []string{"auth.application_credential_id: either username, password and project_name"}},
		{"keystone, bad values", "[auth]\nmode = \"keystone\"\nkeystone_url = \"k:5000\"\napplication_credential_id = \"i\"\n" +
			"cache_seconds = -1\ncache_size = -2\nkeystone_cafile = \"\"", []string{`auth.keystone_url: must be an http:// or https:// URL, got "k:5000"`,
			"auth.application_credential_secret: required with application_credential_id", "auth.cache_seconds: must be 0 (no cache) or more, got -1",
			"auth.cache_size: must be 0 (default, 10000) or more, got -2", "auth.keystone_cafile: must not be empty"}},
		{"keystone keys in token mode", "[auth]\nmode = \"token\"\ntokens = \"/t\"\nkeystone_url = \"http://k\"\npassword = \"p\"",
			[]string{`auth.keystone_url: only used when auth.mode is "keystone"`, `auth.password: only used when auth.mode is "keystone"`}},
		{"tokens in keystone mode", "[auth]\nmode = \"keystone\"\nkeystone_url = \"http://k\"\napplication_credential_id = \"i\"\n" +
			"application_credential_secret = \"s\"\ntokens = \"/t\"", []string{`auth.tokens: only used when auth.mode is "token"`}},
		{"tls, both", "tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"", nil},
		{"tls, cert alone", "tls_cert = \"/c.pem\"", []string{"tls_cert: tls_cert and tls_key go together"}},
		{"tls, empty key", "tls_cert = \"/c.pem\"\ntls_key = \"\"", []string{"tls_key: must not be empty"}},
		{"auth.mode token without tokens", "[auth]\nmode = \"token\"", []string{`auth.tokens: required when auth.mode is "token"`}},
		{"auth.tokens with noauth", "[auth]\nmode = \"noauth\"\ntokens = \"/x\"", []string{`auth.tokens: only used when auth.mode is "token"`}},
		{"auth.tokens, empty", "[auth]\nmode = \"token\"\ntokens = \"\"", []string{"auth.tokens: must not be empty"}},
		{"log.level, bad", "[log]\nlevel = \"verbose\"", []string{`log.level: must be debug, info, warn or error, got "verbose"`}},
		{"log.format, bad", "[log]\nformat = \"xml\"", []string{`log.format: must be text or json, got "xml"`}},
		{"broker.batch_size, negative", "[broker]\nbatch_size = -1", []string{"broker.batch_size: must be 0 (default) or 64 to 256, got -1"}},
		{"broker.batch_size, too small", "[broker]\nbatch_size = 32", []string{"broker.batch_size: must be 0 (default) or 64 to 256, got 32"}},
		{"broker.batch_size, too big", "[broker]\nbatch_size = 512", []string{"broker.batch_size: must be 0 (default) or 64 to 256, got 512"}},
		{"broker.rx_ring_size, not a power of two", "[broker]\nrx_ring_size = 5000", []string{"broker.rx_ring_size: must be 0 (default) or a power of two from 64 to 65536, got 5000"}},
		{"broker.rx_ring_size, too big", "[broker]\nrx_ring_size = 131072", []string{"broker.rx_ring_size: must be 0 (default) or a power of two from 64 to 65536, got 131072"}},
		{"broker.frame_size, 4096", "[broker]\nframe_size = 4096", nil},
		{"broker.frame_size, bad", "[broker]\nframe_size = 3000", []string{"broker.frame_size: must be 0 (default), 2048 or 4096, got 3000"}},
		{"broker.cpus, negative", "[broker]\ncpus = [-1]", []string{"broker.cpus[0]: must be a CPU number (0 or more), got -1"}},
		{"broker.cpus, twice", "[broker]\ncpus = [1, 1]", []string{"broker.cpus[1]: CPU 1 listed twice"}},
		{"interfaces, no name", "[[interfaces]]\nrole = \"monitor\"", []string{"interfaces[0].name: empty"}},
		{"interfaces, long name", "[[interfaces]]\nname = \"abcdefghijklmnop\"\nrole = \"monitor\"", []string{"interfaces[0].name: \"abcdefghijklmnop\" is longer than 15 bytes"}},
		{"interfaces, bad name", "[[interfaces]]\nname = \"eth0:1\"\nrole = \"monitor\"", []string{"interfaces[0].name: \"eth0:1\" must not contain"}},
		{"interfaces, duplicate", "[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\n[[interfaces]]\nname = \"eth1\"\nrole = \"monitor\"",
			[]string{`interfaces[1].name: "eth1" already listed as interfaces[0]`}},
		{"interfaces, no role", "[[interfaces]]\nname = \"eth1\"", []string{"interfaces[0].role: required: capture, monitor or uplink"}},
		{"interfaces, bad role", "[[interfaces]]\nname = \"eth1\"\nrole = \"span\"", []string{`interfaces[0].role: must be capture, monitor or uplink, got "span"`}},
		{"interfaces, uplink", "[[interfaces]]\nname = \"eth3\"\nrole = \"uplink\"", nil},
		{"interfaces, uplink with queues", "[[interfaces]]\nname = \"eth3\"\nrole = \"uplink\"\nqueues = 2\nunmatched = \"pass\"",
			[]string{`interfaces[0].queues: only for role "capture"`, `interfaces[0].unmatched: only for role "capture"`}},
		{"interfaces, negative queues", "[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\nqueues = -1", []string{"interfaces[0].queues: must be 0 (all) to 64, got -1"}},
		{"interfaces, too many queues", "[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\nqueues = 65", []string{"interfaces[0].queues: must be 0 (all) to 64, got 65"}},
		{"interfaces, bad unmatched", "[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\n[[interfaces]]\nname = \"eth2\"\nrole = \"capture\"\nunmatched = \"foo\"",
			[]string{`interfaces[1].unmatched: must be pass or drop, got "foo"`}},
		{"interfaces, monitor with queues", "[[interfaces]]\nname = \"eth2\"\nrole = \"monitor\"\nqueues = 2", []string{`interfaces[0].queues: only for role "capture"`}},
		{"interfaces, monitor with unmatched", "[[interfaces]]\nname = \"eth2\"\nrole = \"monitor\"\nunmatched = \"drop\"", []string{`interfaces[0].unmatched: only for role "capture"`}},
		{"unknown top-level key", `lisen = "x"`, []string{"lisen: unknown key"}},
		{"unknown table key", "[log]\nlevle = \"info\"", []string{"log.levle: unknown key"}},
		{"unknown interface key", "[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\nunmached = \"drop\"", []string{"interfaces.unmached: unknown key"}},
		{"unknown table", "[database]\npath = \"x\"", []string{"database: unknown key", "database.path: unknown key"}},
		{"every problem at once", "dataplane = \"x\"\n[log]\nlevel = \"x\"\n[[interfaces]]\nname = \"\"\nrole = \"x\"",
			[]string{"dataplane:", "log.level:", "interfaces[0].name:", "interfaces[0].role:"}},
		{"wrong type", `listen = 9696`, []string{"listen: want a string, got an integer (9696)"}},
		{"wrong type in interface", "[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\nqueues = \"all\"", []string{`interfaces[0].queues: want an integer, got a string ("all")`}},
		{"syntax error", `listen = "127.0.0.1:9696`, []string{"line 1", "unexpected EOF"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.text)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("parseConfig(%q) = %v, want nil", tc.text, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("parseConfig(%q) = nil, want errors %q", tc.text, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("parseConfig(%q) = %q, want it to contain %q", tc.text, err, w)
				}
			}
			// Validate's problems come one per line, each naming its field.
			if strings.HasPrefix(tc.name, "every problem") || strings.HasPrefix(tc.name, "unknown table") {
				if lines := strings.Count(err.Error(), "\n") + 1; lines != len(tc.want) {
					t.Errorf("parseConfig(%q): %d lines for %d problems:\n%v", tc.text, lines, len(tc.want), err)
				}
			}
		})
	}
}

// TestLoadConfigFile checks the file-level wrapping: the path in every
// message, a syntax error with its line, a missing file.
func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.toml", "listen = \"127.0.0.1:1\"\n[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\n")
	fc, err := loadConfigFile(good)
	if err != nil {
		t.Fatalf("loadConfigFile(good) = %v", err)
	}
	if fc.Listen != "127.0.0.1:1" || len(fc.Interfaces) != 1 || fc.Interfaces[0].Name != "eth1" {
		t.Errorf("loadConfigFile(good) = %+v", fc)
	}

	for _, tc := range []struct {
		name, path string
		want       []string
	}{
		{"syntax error has its line", write("syntax.toml", "listen = \"x:1\"\n\nlog = [\n"), []string{"syntax.toml: line 3:"}},
		{"invalid names the file and the field", write("bad.toml", "dataplane = \"x\"\n"), []string{"bad.toml: dataplane: must be xdp or none"}},
		{"missing file", filepath.Join(dir, "nope.toml"), []string{"nope.toml", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfigFile(tc.path)
			if err == nil {
				t.Fatalf("loadConfigFile(%s) = nil, want an error", tc.path)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("loadConfigFile(%s) = %q, want it to contain %q", tc.path, err, w)
				}
			}
		})
	}
}

// TestExampleConfig: deploy/taasd.toml, the documented example, is valid and
// mentions every field of the file format, as does the README.
func TestExampleConfig(t *testing.T) {
	const example = "../../deploy/taasd.toml"
	fc, err := loadConfigFile(example)
	if err != nil {
		t.Fatalf("the example config: %v", err)
	}
	if len(fc.Interfaces) != 2 || fc.Interfaces[0].Role != roleCapture || fc.Interfaces[1].Role != roleMonitor {
		t.Errorf("the example's interfaces = %+v, want a capture and a monitor", fc.Interfaces)
	}
	text, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range tomlKeys(reflect.TypeFor[fileConfig](), "") {
		leaf := key[strings.LastIndex(key, ".")+1:]
		if !strings.Contains(string(text), leaf) {
			t.Errorf("deploy/taasd.toml does not document %s", key)
		}
		if !strings.Contains(string(readme), "`"+key+"`") {
			t.Errorf("README.md does not document `%s`", key)
		}
	}
}

// tomlKeys lists the dotted keys of a config struct type, tables included.
func tomlKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for f := range typ.Fields() {
		tag := f.Tag.Get("toml")
		if tag == "" {
			continue
		}
		key := prefix + tag
		keys = append(keys, key)
		ft := f.Type
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, tomlKeys(ft, key+".")...)
		}
	}
	return keys
}

// TestApply: a key set in the file fills the config unless its flag was
// given; a key the file leaves out keeps the flag default.
func TestApply(t *testing.T) {
	fc, err := parseConfig(`
listen = "0.0.0.0:1"
db = "/x.db"
dataplane = "xdp"
max_tap_services = 0
[quotas]
network = 4
port = 50
tap_flow = -1
tap_mirror = 3
[auth]
mode = "token"
tokens = "/t"
public_metrics = true
[log]
level = "debug"
[broker]
pin_dir = ""
`)
	if err != nil {
		t.Fatal(err)
	}
	defaults := config{Listen: "127.0.0.1:9696", DB: "taas.db", Auth: "noauth", MaxTapServices: 5, Dataplane: "none", LogLevel: "info",
		PinDir: defaultPinDir}

	got := defaults
	fc.apply(&got, nil)
	want := config{Listen: "0.0.0.0:1", DB: "/x.db", Auth: "token", Tokens: "/t", PublicMetrics: true, MaxTapServices: 0, Dataplane: "xdp", LogLevel: "debug",
		Quotas: control.Quotas{Network: 4, Port: 50, TapFlow: -1, TapMirror: 3}, PinDir: ""}
	if got != want {
		t.Errorf("apply, no flags = %+v, want %+v", got, want)
	}

	// Flags given on the command line win; their values are already in cfg.
	got = defaults
	got.Listen, got.Auth, got.MaxTapServices, got.Quotas.Port, got.Quotas.Network = "127.0.0.1:2", "noauth", 7, 9, 0
	got.Quotas.TapMirror = 8
	fc.apply(&got, map[string]bool{"listen": true, "auth": true, "max-tap-services": true, "quota-port": true, "public-metrics": true,
		"pin-dir": true, "quota-network": true, "quota-tap-mirror": true})
	want = config{Listen: "127.0.0.1:2", DB: "/x.db", Auth: "noauth", Tokens: "/t", MaxTapServices: 7, Dataplane: "xdp", LogLevel: "debug",
		Quotas: control.Quotas{Port: 9, TapFlow: -1, TapMirror: 8}, PinDir: defaultPinDir}
	if got != want {
		t.Errorf("apply, flags set = %+v, want %+v", got, want)
	}

	// Keys the file leaves out keep the defaults.
	empty, err := parseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	got = defaults
	empty.apply(&got, nil)
	if got != defaults {
		t.Errorf("apply, empty file = %+v, want the defaults %+v", got, defaults)
	}
}

// FuzzParseConfig: any text either fails with an error or yields a config
// whose every interface is usable; it never panics.
func FuzzParseConfig(f *testing.F) {
	f.Add("")
	f.Add("listen = \"127.0.0.1:9696\"\n[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\nunmatched = \"drop\"\n")
	f.Add("[auth]\nmode = \"token\"\ntokens = \"/t\"\n[broker]\ncpus = [0, 1]\n")
	f.Add("listen = 5\n[auth]\nmode = 3\n[[interfaces]]\nname = 2\nrole = [1]\n[broker]\ncpus = [\"a\"]\n")
	f.Add("[[interfaces]]\nname = \"eth3\"\nrole = \"uplink\"\n[quotas]\ntap_mirror = -1\n")
	f.Fuzz(func(t *testing.T, text string) {
		fc, err := parseConfig(text)
		if err != nil {
			return
		}
		for i, ifc := range fc.Interfaces {
			if ifc.Role != roleCapture && ifc.Role != roleMonitor && ifc.Role != roleUplink {
				t.Fatalf("interfaces[%d].role %q accepted", i, ifc.Role)
			}
			if ifc.Name == "" || len(ifc.Name) > 15 {
				t.Fatalf("interfaces[%d].name %q accepted", i, ifc.Name)
			}
			if ifc.Queues < 0 || ifc.Queues > broker.MaxQueues {
				t.Fatalf("interfaces[%d].queues %d accepted", i, ifc.Queues)
			}
		}
		// What the file accepts, broker.New accepts.
		if err := (config{File: fc}).brokerConfig(nil).Validate(); err != nil {
			t.Fatalf("accepted, but the broker says %v", err)
		}
		if fc.MaxTapServices < 0 {
			t.Fatalf("max_tap_services %d accepted", fc.MaxTapServices)
		}
		maxConns := fc.Limits.MaxConnections
		if maxConns == 0 {
			maxConns = control.DefaultMaxConnections
		}
		if fc.Limits.MaxConnectionsPerIP > maxConns || fc.Limits.HeaderTimeoutMS < 0 {
			t.Fatalf("limits %+v accepted", fc.Limits)
		}
	})
}

// TestParseFlagsConfig: --config loads the file into the flag config, and
// a flag given on the command line beats the file's field.
func TestParseFlagsConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "taasd.toml")
	text := "listen = \"0.0.0.0:1\"\ndb = \"/var/lib/taasd/taas.db\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseFlags([]string{"--config", path, "--listen", "127.0.0.1:5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:5" || cfg.DB != "/var/lib/taasd/taas.db" || cfg.LogLevel != "debug" || cfg.logFormat() != "json" {
		t.Errorf("parseFlags(--config, --listen) = %+v, want listen from the flag, db and log from the file", cfg)
	}
	if cfg.File == nil || cfg.File.path != path {
		t.Errorf("parseFlags: File = %+v, want the file read from %s", cfg.File, path)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\nunmatched = \"foo\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = parseFlags([]string{"--config", bad}, io.Discard)
	if want := `config ` + bad + `: interfaces[0].unmatched: must be pass or drop, got "foo"`; err == nil || err.Error() != want {
		t.Errorf("parseFlags(--config bad) = %v, want %q", err, want)
	}
}

// TestVersionAndCheckCommand builds taasd with the Makefile's -ldflags and
// runs `taasd --version` and `taasd check --help`.
func TestVersionAndCheckCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds taasd: not in -short")
	}
	bin := testutil.BuildTaasd(t, "-ldflags", "-X main.version=v0.0.0-test")
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || string(out) != "taasd v0.0.0-test\n" {
		t.Errorf("taasd --version = %q, %v; want \"taasd v0.0.0-test\\n\"", out, err)
	}
	out, err = exec.Command(bin, "check", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "usage: taasd check [--config FILE]") {
		t.Errorf("taasd check --help = %q, %v; want the usage and exit status 0", out, err)
	}
}

// TestConfigTypeErrors: values of the wrong type are all reported, one line
// each naming the field, together with the other problems of the file, and
// a field set aside for its type is not also called missing.
func TestConfigTypeErrors(t *testing.T) {
	text := `listen = 5
bogus = 1
[auth]
mode = "tok"
public_metrics = "yes"
[broker]
cpus = [1, "a"]
batch_size = 1.5
[limits]
max_body_size = "big"
[[interfaces]]
name = "cap0"
role = 1
[[interfaces]]
name = 2
role = "monitor"
`
	_, err := parseConfig(text)
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{
		`listen: want a string, got an integer (5)`,
		`auth.public_metrics: want true or false, got a string ("yes")`,
		`broker.batch_size: want an integer, got a float (1.5)`,
		`broker.cpus[1]: want an integer, got a string ("a")`,
		`limits.max_body_size: want an integer, got a string ("big")`,
		`interfaces[0].role: want a string, got an integer (1)`,
		`interfaces[1].name: want a string, got an integer (2)`,
		`bogus: unknown key`,
		`auth.mode: must be noauth, token or keystone, got "tok"`,
	}
	got := strings.Split(err.Error(), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Right types, one wrong: the rest of the file still decodes.
	fc, err := parseConfig("listen = \"127.0.0.1:1\"\n[log]\nlevel = 3\n")
	if err == nil || err.Error() != "log.level: want a string, got an integer (3)" || fc.Listen != "127.0.0.1:1" {
		t.Errorf("parseConfig = %+v, %v", fc, err)
	}
}
