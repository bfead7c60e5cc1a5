package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

func TestFlags(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	for _, tc := range []struct {
		args []string
		want string // "" = valid
	}{
		{nil, ""},
		{[]string{"--listen", "127.0.0.1:0", "--db", "x.db", "--max-tap-services", "3", "--log-level", "debug"}, ""},
		{[]string{"--auth", "token", "--tokens", tokens}, ""},
		{[]string{"--auth", "token"}, "--auth token needs --tokens FILE"},
		{[]string{"--tokens", tokens}, "--tokens needs --auth token"},
		{[]string{"--auth", "ldap"}, `--auth "ldap"`},
		{[]string{"--auth", "keystone"}, `--auth keystone: keystone url ""`},
		{[]string{"--auth", "keystone", "--keystone-url", "http://k:5000"}, "service credentials needed"},
		{[]string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, ""},
		{[]string{"--listen", "9696"}, `--listen "9696"`},
		{[]string{"--max-tap-services", "-1"}, "--max-tap-services -1"},
		{[]string{"--quota-port", "-1", "--quota-tap-service", "5", "--quota-tap-flow", "0", "--quota-network", "-1"}, ""},
		{[]string{"--quota-network", "-2"}, "--quota-network -2"},
		{[]string{"--quota-tap-flow", "-2"}, "--quota-tap-flow -2"},
		{[]string{"--dataplane", "dpdk"}, `--dataplane "dpdk"`},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"--db", ""}, "--db: empty path"},
		{[]string{"--pin-dir", "bpf"}, `--pin-dir "bpf"`},
		{[]string{"--pin-dir", ""}, ""},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if err == nil {
			err = cfg.validate()
		}
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("taasd %v: %v, want %q", tc.args, err, tc.want)
		}
	}
	cfg, _ := parseFlags(nil, io.Discard)
	if cfg.Listen != "127.0.0.1:9696" || cfg.Auth != "noauth" || cfg.Dataplane != "none" || cfg.DB != "taas.db" {
		t.Errorf("defaults = %+v", cfg)
	}
}

func call(t *testing.T, method, url, body string, want int) map[string]any {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d %s, want %d", method, url, resp.StatusCode, raw, want)
	}
	var m map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// TestRestartAfterKill writes state through the real binary, kills it
// with SIGKILL right after the last acknowledged write, restarts it on the
// same database and reads everything back.
func TestRestartAfterKill(t *testing.T) {
	dir := t.TempDir()
	bin := testutil.BuildTaasd(t)
	db := filepath.Join(dir, "taas.db")
	d := testutil.StartTaasd(t, bin, "--db", db)
	base := d.URL

	port := call(t, "POST", base+"/v2.0/ports", `{"port": {"name": "mon", "network_id": "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10", "binding:profile": {"interface": "mon0"}}}`, 201)["port"].(map[string]any)
	// The flows' source is another port: a port both monitor and source
	// would be a loop (issue 9).
	src := call(t, "POST", base+"/v2.0/ports", `{"port": {"name": "src", "network_id": "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10", "binding:profile": {"interface": "cap0"}}}`, 201)["port"].(map[string]any)
	svc := call(t, "POST", base+"/v2.0/taas/tap_services", fmt.Sprintf(`{"tap_service": {"name": "ids", "port_id": %q}}`, port["id"]), 201)["tap_service"].(map[string]any)
	var flows []string
	for i := range 20 {
		f := call(t, "POST", base+"/v2.0/taas/tap_flows", fmt.Sprintf(`{"tap_flow": {"name": "f%d", "tap_service_id": %q, "source_port": %q, "direction": "IN", "vlan_filter": "%d"}}`, i, svc["id"], src["id"], i), 201)
		flows = append(flows, f["tap_flow"].(map[string]any)["id"].(string))
	}
	call(t, "PUT", base+"/v2.0/taas/tap_services/"+svc["id"].(string), `{"tap_service": {"description": "last write"}}`, 200)
	d.Kill(t)
	if _, err := os.Stat(db); err != nil {
		t.Fatal(err)
	}

	d.Restart(t)
	got := call(t, "GET", base+"/v2.0/taas/tap_services/"+svc["id"].(string), "", 200)["tap_service"].(map[string]any)
	if got["description"] != "last write" || got["name"] != "ids" || got["port_id"] != port["id"] {
		t.Errorf("service after restart = %v", got)
	}
	list := call(t, "GET", base+"/v2.0/taas/tap_flows", "", 200)["tap_flows"].([]any)
	if len(list) != len(flows) {
		t.Fatalf("%d flows after restart, want %d", len(list), len(flows))
	}
	for i, e := range list {
		f := e.(map[string]any)
		if f["id"] != flows[i] || f["vlan_filter"] != fmt.Sprint(i) {
			t.Errorf("flow %d after restart = %v", i, f)
		}
	}
	p := call(t, "GET", base+"/v2.0/ports/"+port["id"].(string), "", 200)["port"].(map[string]any)
	if p["mac_address"] != port["mac_address"] || p["binding:profile"].(map[string]any)["interface"] != "mon0" {
		t.Errorf("port after restart = %v, want %v", p, port)
	}
}

// TestStopDuringStartup: a stop signal that cancels run before it serves
// (here before it opens the database) is a clean stop, exit 0 (or 75 for
// SIGUSR2), not "taasd stopped" at level ERROR and exit 1; other failures
// stay failures.
func TestStopDuringStartup(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cause   error // nil: not cancelled
		db      string
		wantErr bool
	}{
		{name: "SIGTERM", cause: errStop},
		{name: "SIGUSR2", cause: errHandoff},
		{name: "no signal, bad database", db: "/dev/null/taas.db", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if tc.cause != nil {
				cancel(tc.cause)
			}
			cfg := config{Listen: testutil.FreeLoopbackAddr(t), DB: tc.db, Auth: "noauth", Dataplane: "none", LogLevel: "info"}
			if cfg.DB == "" {
				cfg.DB = filepath.Join(t.TempDir(), "taas.db")
			}
			err := stopErr(ctx, run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil))
			if (err != nil) != tc.wantErr {
				t.Errorf("run = %v, want an error: %v", err, tc.wantErr)
			}
		})
	}
}

// TestHelp: `taasd --help` prints the commands (check among them) and the
// flags on stdout and exits 0; a bad flag says so once on stderr, points at
// --help and exits 2.
func TestHelp(t *testing.T) {
	bin := testutil.BuildTaasd(t)
	for _, tc := range []struct {
		args                 []string
		code                 int
		stdout, stderr, nots []string
	}{
		{[]string{"--help"}, 0, []string{"taasd check", "--version", "-listen", "-config"}, nil, nil},
		{[]string{"-h"}, 0, []string{"taasd check"}, nil, nil},
		{[]string{"--bogus"}, 2, nil, []string{"flag provided but not defined: -bogus", "taasd --help"}, []string{"-listen"}},
	} {
		var out, errb strings.Builder
		cmd := exec.Command(bin, tc.args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("taasd %v: exit %d, want %d", tc.args, code, tc.code)
		}
		for _, w := range tc.stdout {
			if !strings.Contains(out.String(), w) {
				t.Errorf("taasd %v: stdout lacks %q:\n%s", tc.args, w, out.String())
			}
		}
		for _, w := range tc.stderr {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("taasd %v: stderr lacks %q:\n%s", tc.args, w, errb.String())
			}
		}
		for _, w := range tc.nots {
			if strings.Contains(out.String()+errb.String(), w) {
				t.Errorf("taasd %v: prints %q:\n%s%s", tc.args, w, out.String(), errb.String())
			}
		}
		if tc.code == 0 && errb.Len() > 0 {
			t.Errorf("taasd %v: stderr %q, want nothing", tc.args, errb.String())
		}
	}
}
