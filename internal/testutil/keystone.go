package testutil

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Keystone is a real OpenStack Keystone (Debian's keystone package: SQLite,
// fernet tokens) that a test started on a free loopback port, with the
// fixture KeystoneUsers describes. It is stopped, by its own pid, when the
// test ends.
type Keystone struct {
	// URL is the server's base, "http://127.0.0.1:PORT"; the identity API is
	// URL + "/v3", what clients take as their auth URL.
	URL string
	// Projects maps the fixture's project names to their ids.
	Projects map[string]string
	// Dir holds the configuration, database, keys and LogPath, the server's
	// log.
	Dir, LogPath string
	// Took is how long the start took, set-up of the database included.
	Took time.Duration

	cmd    *exec.Cmd
	exited chan struct{}
}

// The fixture StartKeystone creates, every user in domain Default with
// password KeystonePassword: admin (admin of project admin, keystone's
// bootstrap), alice (member of alpha), bob (member of beta), rita (reader of
// alpha), and taasd (role service in project service: the credentials a
// service validates tokens with, as keystonemiddleware's).
const KeystonePassword = "pw-for-tests"

// keystoneSetup creates the database and the bootstrap admin in one Python
// process: each keystone-manage run costs seconds of imports. It turns the
// database to WAL: in SQLite's default journal a read transaction the
// server leaves open fails every write with "database is locked". The fernet
// and credential keys are written by StartKeystone (fernet_setup's format:
// urlsafe base64 of 32 random bytes, files 0 (staged) and 1 (primary)).
const keystoneSetup = `import sys
from keystone.cmd import cli
import keystone.conf
conf, password, db = sys.argv[1], sys.argv[2], sys.argv[3]
cli.main(argv=['keystone-manage', '--config-file', conf, 'db_sync'])
keystone.conf.CONF.clear()
keystone.conf.CONF.unregister_opt(cli.command_opt)
cli.main(argv=['keystone-manage', '--config-file', conf, 'bootstrap', '--bootstrap-password', password,
               '--bootstrap-region-id', 'RegionOne'])
import sqlite3
sqlite3.connect(db).execute('PRAGMA journal_mode=WAL').close()
`

// StartKeystone starts Keystone with its own configuration in a temporary
// directory and creates the fixture (see KeystonePassword). endpoints are
// pairs of a service type and a URL that the catalog lists as that
// service's public endpoint (e.g. "network", taasd's URL), as an operator
// registers a Neutron or an appliance: the openstack client looks its
// service up there, even with an endpoint override. It skips t when
// keystone is not installed (apt-get install keystone; .ci/run does),
// except in CI (SkipUnlessRequired), and fails it when the start fails or
// takes over 120 s. Keystone and its set-up run in a process group of
// their own, killed when the test ends, and die with the test binary
// (Pdeathsig). Keystone's start costs
// seconds of Python imports: share one across subtests.
func StartKeystone(t testing.TB, endpoints ...string) *Keystone {
	t.Helper()
	const wsgi = "/usr/bin/keystone-wsgi-public"
	if _, err := os.Stat(wsgi); err != nil {
		SkipUnlessRequired(t, "keystone not installed (%v): apt-get install --no-install-recommends keystone (.ci/run does)", err)
	}
	start := time.Now()
	dir := t.TempDir()
	k := &Keystone{Dir: dir, LogPath: filepath.Join(dir, "keystone.log"), Projects: map[string]string{}}
	for _, repo := range []string{"fernet-keys", "credential-keys"} {
		if err := os.Mkdir(filepath.Join(dir, repo), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"0", "1"} {
			key := make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, repo, name), []byte(base64.URLEncoding.EncodeToString(key)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	conf := filepath.Join(dir, "keystone.conf")
	text := fmt.Sprintf(`[DEFAULT]
log_file = %[1]s/keystone.log
use_stderr = false
[database]
connection = sqlite:///%[1]s/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = %[1]s/fernet-keys
[credential]
key_repository = %[1]s/credential-keys
[cache]
enabled = false
`, dir)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "setup.py")
	if err := os.WriteFile(script, []byte(keystoneSetup), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := FreeLoopbackAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	k.URL = "http://" + addr

	// The server imports while the database is set up: it reads the
	// database only once asked.
	setup := exec.Command("/usr/bin/python3", script, conf, KeystonePassword, filepath.Join(dir, "keystone.db"))
	setupOut := &bytes.Buffer{}
	setup.Stdout, setup.Stderr = setupOut, setupOut
	if err := startGroup(setup); err != nil {
		t.Fatalf("keystone setup: %v", err)
	}
	setupDone := make(chan struct{})
	var setupErr error
	go func() {
		setupErr = setup.Wait()
		close(setupDone)
	}()

	out, err := os.Create(filepath.Join(dir, "wsgi.out"))
	if err != nil {
		t.Fatal(err)
	}
	k.cmd = exec.Command(wsgi, "--host", host, "--port", port)
	k.cmd.Env = append(os.Environ(), "OS_KEYSTONE_CONFIG_FILES="+conf)
	k.cmd.Stdout, k.cmd.Stderr = out, out
	if err := startGroup(k.cmd); err != nil {
		out.Close()
		killGroup(setup)
		t.Fatalf("start keystone: %v", err)
	}
	k.exited = make(chan struct{})
	go func() {
		_ = k.cmd.Wait() // a stopped Keystone is what Stop wants
		out.Close()
		close(k.exited)
	}()
	t.Cleanup(func() {
		k.Stop()
		select {
		case <-setupDone:
		default:
			killGroup(setup) // the set-up hung: StartKeystone gave up on it
		}
		<-setupDone
		if t.Failed() {
			b, _ := os.ReadFile(k.LogPath)
			w, _ := os.ReadFile(filepath.Join(dir, "wsgi.out"))
			t.Logf("keystone log (last 4 KiB):\n%s\nkeystone's stderr (last 4 KiB):\n%s", tail(b, 4096), tail(w, 4096))
		}
	})
	select {
	case <-setupDone:
	case <-time.After(120 * time.Second):
		t.Fatalf("keystone setup still running after 120 s (killed)") // the cleanup kills it
	}
	if setupErr != nil {
		t.Fatalf("keystone setup: %v\n%s", setupErr, tail(setupOut.Bytes(), 4096))
	}
	waitOK(t, http.DefaultClient, k.URL+"/v3", 120*time.Second, k.exited, func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "wsgi.out"))
		return "keystone:\n" + string(tail(b, 4096))
	})
	k.fixture(t, endpoints)
	k.Took = time.Since(start)
	t.Logf("keystone %s started in %v (database set-up, server, fixture)", k.URL, k.Took.Round(time.Millisecond))
	return k
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// fixture creates the projects, users and role assignments of
// KeystonePassword's comment, as admin.
func (k *Keystone) fixture(t testing.TB, endpoints []string) {
	t.Helper()
	admin := k.Token(t, "admin", "admin")
	for i := 0; i+1 < len(endpoints); i += 2 {
		var svc struct{ Service struct{ ID string } }
		k.call(t, admin, "POST", "/v3/services", map[string]any{"service": map[string]any{"type": endpoints[i],
			"name": endpoints[i]}}, 201, &svc)
		k.call(t, admin, "POST", "/v3/endpoints", map[string]any{"endpoint": map[string]any{"service_id": svc.Service.ID,
			"interface": "public", "url": endpoints[i+1], "region_id": "RegionOne"}}, 201, nil)
	}
	roles := map[string]string{}
	var rl struct {
		Roles []struct{ ID, Name string }
	}
	k.call(t, admin, "GET", "/v3/roles", nil, 200, &rl)
	for _, r := range rl.Roles {
		roles[r.Name] = r.ID
	}
	if roles["service"] == "" {
		var r struct{ Role struct{ ID string } }
		k.call(t, admin, "POST", "/v3/roles", map[string]any{"role": map[string]any{"name": "service"}}, 201, &r)
		roles["service"] = r.Role.ID
	}
	var pl struct {
		Projects []struct{ ID, Name string }
	}
	k.call(t, admin, "GET", "/v3/projects", nil, 200, &pl)
	for _, p := range pl.Projects {
		k.Projects[p.Name] = p.ID
	}
	for _, name := range []string{"alpha", "beta", "service"} {
		var p struct{ Project struct{ ID string } }
		k.call(t, admin, "POST", "/v3/projects", map[string]any{"project": map[string]any{"name": name, "domain_id": "default"}}, 201, &p)
		k.Projects[name] = p.Project.ID
	}
	for _, u := range []struct{ name, project, role string }{
		{"alice", "alpha", "member"}, {"bob", "beta", "member"}, {"rita", "alpha", "reader"}, {"taasd", "service", "service"},
	} {
		var resp struct{ User struct{ ID string } }
		k.call(t, admin, "POST", "/v3/users", map[string]any{"user": map[string]any{"name": u.name, "domain_id": "default",
			"password": KeystonePassword}}, 201, &resp)
		k.call(t, admin, "PUT", fmt.Sprintf("/v3/projects/%s/users/%s/roles/%s", k.Projects[u.project], resp.User.ID,
			roles[u.role]), nil, 204, nil)
	}
}

// Token returns a token of user (domain Default, password KeystonePassword)
// scoped to project (domain Default), or unscoped when project is "".
func (k *Keystone) Token(t testing.TB, user, project string) string {
	t.Helper()
	auth := map[string]any{"identity": map[string]any{"methods": []string{"password"},
		"password": map[string]any{"user": map[string]any{"name": user, "domain": map[string]any{"name": "Default"},
			"password": KeystonePassword}}}}
	if project != "" {
		auth["scope"] = map[string]any{"project": map[string]any{"name": project, "domain": map[string]any{"name": "Default"}}}
	}
	res := k.call(t, "", "POST", "/v3/auth/tokens", map[string]any{"auth": auth}, 201, nil)
	return res.Header.Get("X-Subject-Token")
}

// Revoke revokes token (DELETE /v3/auth/tokens), as the admin.
func (k *Keystone) Revoke(t testing.TB, token string) {
	t.Helper()
	k.call(t, k.Token(t, "admin", "admin"), "DELETE", "/v3/auth/tokens", nil, 204, nil, "X-Subject-Token", token)
}

// call sends a request to Keystone and fails t unless it answers want; the
// body, when out is not nil, is decoded into it.
func (k *Keystone) call(t testing.TB, token, method, path string, body any, want int, out any, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, k.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, b := k.send(t, req, body)
	if res.StatusCode != want {
		t.Fatalf("keystone %s %s = %d, want %d: %s", method, path, res.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("keystone %s %s: %v: %s", method, path, err, b)
		}
	}
	return res
}

// send sends req with body as JSON, again after a 500: Keystone on SQLite
// answers one now and then ("database is locked") on a loaded machine.
func (k *Keystone) send(t testing.TB, req *http.Request, body any) (*http.Response, []byte) {
	t.Helper()
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	for attempt := 1; ; attempt++ {
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("keystone %s %s: %v", req.Method, req.URL.Path, err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("keystone %s %s: %v", req.Method, req.URL.Path, err)
		}
		if res.StatusCode != http.StatusInternalServerError || attempt == 3 {
			return res, b
		}
		t.Logf("keystone %s %s = 500 (attempt %d), again", req.Method, req.URL.Path, attempt)
		time.Sleep(500 * time.Millisecond)
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s), by its pid, and
// waits for it to exit; later calls do nothing. Tests call it to see
// Keystone unreachable.
func (k *Keystone) Stop() {
	select {
	case <-k.exited:
		return
	default:
	}
	// The group: keystone-wsgi-public's children, if any, go with it.
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(5 * time.Second):
		killGroup(k.cmd)
		<-k.exited
	}
}

// startGroup starts cmd as the leader of a process group of its own
// (killGroup ends it and its children, by that id), killed by the kernel
// if the test binary dies first (Pdeathsig, which follows the thread that
// started it: hence the locked thread).
func startGroup(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}

// killGroup kills the process group cmd leads (startGroup), by its id.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // ESRCH once the group is gone: nothing to do
	}
}

// SkipUnlessRequired skips t with the message, except in CI (CI=true, which
// CI services set, or TAAS_REQUIRE_KEYSTONE=1, which .ci/run exports), where
// a missing dependency fails t: a test skipped there is a test not run.
func SkipUnlessRequired(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" || os.Getenv("TAAS_REQUIRE_KEYSTONE") == "1" {
		t.Fatalf("required in CI: "+format, args...)
		return
	}
	t.Skipf(format, args...)
}
