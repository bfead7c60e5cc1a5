package repocheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taas-appliance/taas/internal/testutil"
)

// fakeRoot runs deploy/ scripts as root on this machine's own files, seen
// through overlays: in a mount namespace of its own, /etc, /usr/local and
// /var are overlays whose writes land in Upper and /run is empty; in a
// network namespace of its own the capture and monitor NICs are veths
// (cap0, mon0); in a pid namespace of its own, whatever the scripts start
// ends with them. The scripts run for real (useradd, openssl, ip, sysctl,
// install, chown, pg_ctlcluster) except for systemd, which this machine
// does not run: systemctl and systemd-run are stand-ins that log their
// arguments to Systemd; systemctl does for postgresql@V-N.service what
// Debian's unit does (pg_ctlcluster V N ACTION) and nothing for other
// units. --bin is a stand-in taasd (provisioning runs only its --version;
// `taasd check` goes through systemd-run). Runs share Upper, so a second
// run sees what the first wrote, as a re-provisioning does.
type fakeRoot struct {
	Dir     string // work, upper and stand-ins
	Upper   string // Upper/etc/taasd/taasd.toml is what /etc/taasd/taasd.toml became
	Systemd string // the stand-ins' log
	fresh   bool
}

func newFakeRoot(t *testing.T) *fakeRoot {
	t.Helper()
	testutil.RequireRoot(t, "mount namespaces and overlays")
	needTool(t, "unshare", "util-linux")
	needTool(t, "openssl", "openssl")
	dir := t.TempDir()
	r := &fakeRoot{Dir: dir, Upper: filepath.Join(dir, "upper"), Systemd: filepath.Join(dir, "systemd.log"), fresh: true}
	for _, d := range []string{"etc", "usr/local", "var"} {
		for _, top := range []string{"upper", "work"} {
			if err := os.MkdirAll(filepath.Join(dir, top, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	stand := filepath.Join(dir, "bin")
	if err := os.MkdirAll(stand, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"systemctl": "#!/bin/bash\necho \"systemctl $*\" >>" + r.Systemd + "\n" + `
args=()
for a in "$@"; do [[ $a == -* ]] || args+=("$a"); done
action=${args[0]:-}; unit=${args[1]:-}
[[ $unit =~ ^postgresql@([0-9]+)-(.+)\.service$ ]] || exit 0
v=${BASH_REMATCH[1]}; n=${BASH_REMATCH[2]}
case $action in
start | stop | restart | reload) exec pg_ctlcluster "$v" "$n" "$action" ;;
is-active) exec pg_ctlcluster "$v" "$n" status >/dev/null ;;
esac
`,
		"systemd-run": "#!/bin/sh\necho \"systemd-run $*\" >>" + r.Systemd + "\n",
		"taasd":       "#!/bin/sh\necho 'taasd (provision test stand-in)'\n",
	} {
		if err := os.WriteFile(filepath.Join(stand, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// setup is the namespace's preparation, run by bash as unshare's child;
// $1 is the fake root's directory, $2 "fresh" on the first run, the rest
// the command.
const setup = `set -e
d=$1; fresh=$2; shift 2
mount --make-rprivate /
for p in etc usr/local var; do
	mount -t overlay overlay -o "lowerdir=/$p,upperdir=$d/upper/$p,workdir=$d/work/$p" "/$p"
done
mount -t tmpfs -o mode=0755 tmpfs /run
if [ "$fresh" = fresh ]; then
	# What this machine may hold of a taasd of its own: whited out.
	rm -rf /etc/taasd /usr/local/bin/taasd /etc/systemd/system/taasd.service /etc/sysctl.d/60-taasd-*
fi
ip link set lo up
ip link add cap0 type veth peer name cap0p
ip link add mon0 type veth peer name mon0p
"$@"
`

// run runs provision.sh with args and env (and nothing of this process's
// TAASD_ variables) and returns its output and error.
func (r *fakeRoot) run(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	return r.exec(t, env, append([]string{deployScript(t, "provision.sh"), "--bin", filepath.Join(r.Dir, "bin", "taasd")}, args...)...)
}

// deployScript is the absolute path of deploy/name.
func deployScript(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(root, "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// exec runs argv in the fake root, as run does.
func (r *fakeRoot) exec(t *testing.T, env []string, argv ...string) (string, error) {
	t.Helper()
	fresh := "again"
	if r.fresh {
		fresh, r.fresh = "fresh", false
	}
	argv = append([]string{"--mount", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", setup, "setup", r.Dir, fresh}, argv...)
	cmd := exec.Command("unshare", argv...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TAASD_") && !strings.HasPrefix(kv, "PATH=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PATH="+filepath.Join(r.Dir, "bin")+":"+os.Getenv("PATH"))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// file returns the content of path (an absolute path of the fake root)
// and checks its mode and group.
func (r *fakeRoot) file(t *testing.T, path string, mode os.FileMode, group string) string {
	t.Helper()
	p := filepath.Join(r.Upper, path)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
	}
	if want := r.gid(t, group); fi.Sys().(*syscall.Stat_t).Gid != want {
		t.Errorf("%s: gid %d, want %d (%s)", path, fi.Sys().(*syscall.Stat_t).Gid, want, group)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// gid is the group's id in the fake root's /etc/group.
func (r *fakeRoot) gid(t *testing.T, group string) uint32 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.Upper, "etc", "group"))
	if err != nil {
		b, err = os.ReadFile("/etc/group") // useradd found the group there
		if err != nil {
			t.Fatal(err)
		}
	}
	if group == "root" {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 3 && f[0] == group {
			n, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil {
				t.Fatalf("/etc/group: %q: %v", l, err)
			}
			return uint32(n)
		}
	}
	t.Fatalf("no group %s in the fake root", group)
	return 0
}

// provisionedConfig is what the tests read back of taasd.toml.
type provisionedConfig struct {
	Listen  string `toml:"listen"`
	TLSCert string `toml:"tls_cert"`
	DB      string `toml:"db"`
	Node    string `toml:"node"`
	Auth    struct {
		Mode   string `toml:"mode"`
		Tokens string `toml:"tokens"`
	} `toml:"auth"`
	Interfaces []struct {
		Name string `toml:"name"`
		Role string `toml:"role"`
	} `toml:"interfaces"`
}

func (r *fakeRoot) config(t *testing.T) provisionedConfig {
	t.Helper()
	var c provisionedConfig
	text := r.file(t, "/etc/taasd/taasd.toml", 0o640, "taasd")
	if _, err := toml.Decode(text, &c); err != nil {
		t.Fatalf("taasd.toml: %v\n%s", err, text)
	}
	return c
}

var nics = []string{"--capture", "cap0", "--monitor", "mon0", "--no-start"}

// TestProvisionSingle: without the fleet's options, provisioning writes
// today's configuration: the SQLite file, no node, token auth with a
// generated token, TLS; and runs taasd check through systemd-run.
func TestProvisionSingle(t *testing.T) {
	t.Parallel() // a fake root, or a Vagrant state, of its own
	r := newFakeRoot(t)
	out, err := r.run(t, nil, nics...)
	if err != nil {
		t.Fatalf("provision.sh: %v\n%s", err, out)
	}
	c := r.config(t)
	if c.DB != "/var/lib/taasd/taas.db" || c.Node != "" || c.Auth.Mode != "token" || c.TLSCert != "/etc/taasd/tls/taasd.crt" {
		t.Errorf("taasd.toml: db %q node %q auth %q tls_cert %q; want the SQLite file, no node, token, TLS", c.DB, c.Node, c.Auth.Mode, c.TLSCert)
	}
	if len(c.Interfaces) != 2 || c.Interfaces[0].Name != "cap0" || c.Interfaces[1].Role != "monitor" {
		t.Errorf("taasd.toml interfaces: %+v", c.Interfaces)
	}
	if strings.Contains(out, "fleet") {
		t.Errorf("a single appliance's provisioning speaks of a fleet:\n%s", out)
	}
	tokens := r.file(t, "/etc/taasd/tokens", 0o640, "taasd")
	tok := strings.Fields(tokens[strings.LastIndex(strings.TrimSpace(tokens), "\n")+1:])
	if len(tok) != 3 || len(tok[0]) != 64 || tok[1] != "admin" || !strings.Contains(out, tok[0]) {
		t.Errorf("tokens: %q; want one generated admin token, shown once in the output", tokens)
	}
	if _, err := os.Stat(filepath.Join(r.Upper, "etc", "taasd", "pgpass")); err == nil {
		t.Error("a single appliance got /etc/taasd/pgpass")
	}
	sd, _ := os.ReadFile(r.Systemd)
	if !strings.Contains(string(sd), "/usr/local/bin/taasd check --config /etc/taasd/taasd.toml") {
		t.Errorf("systemd-run did not run taasd check; systemd log:\n%s", sd)
	}
}

// TestProvisionFleetNode: --db, --node, TAASD_DB_PASSWORD and
// TAASD_ADMIN_TOKEN make a fleet node's configuration: the URL names a
// password file that taasd's driver (pgx) reads back to the password, the
// node is named, every node gets the same admin token, and neither secret
// is printed.
func TestProvisionFleetNode(t *testing.T) {
	t.Parallel() // a fake root, or a Vagrant state, of its own
	r := newFakeRoot(t)
	const (
		url      = "postgres://taasd@db.fleet.test:5432/taas?sslmode=verify-full&sslrootcert=/etc/taasd/db-ca.crt"
		password = `pa:ss\wo#rd "x"`
		token    = "0123456789abcdef0123456789abcdef"
	)
	env := []string{"TAASD_DB_PASSWORD=" + password, "TAASD_ADMIN_TOKEN=" + token}
	out, err := r.run(t, env, append([]string{"--db", url, "--node", "taas2"}, nics...)...)
	if err != nil {
		t.Fatalf("provision.sh: %v\n%s", err, out)
	}
	c := r.config(t)
	if want := url + "&passfile=/etc/taasd/pgpass"; c.DB != want || c.Node != "taas2" {
		t.Errorf("taasd.toml: db %q node %q, want %q and taas2", c.DB, c.Node, want)
	}
	if c.Auth.Mode != "token" || c.TLSCert == "" {
		t.Errorf("a fleet node lost the secure defaults: auth %q tls_cert %q", c.Auth.Mode, c.TLSCert)
	}
	pgpass := r.file(t, "/etc/taasd/pgpass", 0o640, "taasd")
	// What taasd's driver makes of the URL, reading the file (and, for
	// the CA it names, the certificate provisioning made: any will do).
	pc, err := pgconn.ParseConfig(strings.NewReplacer(
		"/etc/taasd/pgpass", filepath.Join(r.Upper, "etc/taasd/pgpass"),
		"/etc/taasd/db-ca.crt", filepath.Join(r.Upper, "etc/taasd/tls/taasd.crt"),
	).Replace(c.DB))
	if err != nil {
		t.Fatalf("pgconn.ParseConfig(%q): %v", c.DB, err)
	}
	if pc.Password != password || pc.User != "taasd" || pc.Host != "db.fleet.test" || pc.TLSConfig == nil {
		t.Errorf("pgx reads user %q password %q host %q TLS %v; want taasd, %q, db.fleet.test, TLS\npgpass:\n%s",
			pc.User, pc.Password, pc.Host, pc.TLSConfig != nil, password, pgpass)
	}
	tokens := r.file(t, "/etc/taasd/tokens", 0o640, "taasd")
	if !strings.Contains(tokens, "\n"+token+" admin admin\n") {
		t.Errorf("tokens:\n%s\nwant the fleet's token %s as admin", tokens, token)
	}
	if strings.Contains(out, token) || strings.Contains(out, "pa:ss") {
		t.Errorf("the output shows a secret:\n%s", out)
	}
	if !strings.Contains(out, "a node of a fleet: node taas2") {
		t.Errorf("the output does not say it is a fleet node:\n%s", out)
	}

	// Provisioning again with the same options keeps everything; another
	// node name, or a kept tokens file without the fleet's token, fails
	// rather than leaving a node that is not what was asked.
	if out, err := r.run(t, env, append([]string{"--db", url, "--node", "taas2"}, nics...)...); err != nil {
		t.Errorf("provision.sh again: %v\n%s", err, out)
	}
	out, err = r.run(t, env, append([]string{"--db", url, "--node", "taas3"}, nics...)...)
	if err == nil || !strings.Contains(out, "node taas2, not db") {
		t.Errorf("provision.sh with another --node over a kept config: %v\n%s", err, out)
	}
	if out, err := r.run(t, env, append([]string{"--db", url, "--node", "taas3", "--keep-config"}, nics...)...); err != nil || r.config(t).Node != "taas2" {
		t.Errorf("--keep-config: %v, node %q\n%s", err, r.config(t).Node, out)
	}
	other := []string{"TAASD_DB_PASSWORD=" + password, "TAASD_ADMIN_TOKEN=ffffffffffffffffffffffffffffffff"}
	out, err = r.run(t, other, append([]string{"--db", url, "--node", "taas2"}, nics...)...)
	if err == nil || !strings.Contains(out, "lacks TAASD_ADMIN_TOKEN") {
		t.Errorf("provision.sh with another admin token over a kept tokens file: %v\n%s", err, out)
	}
}

// TestProvisionDBFile: --db-file takes the URL from a file (comments and
// blank lines skipped, the line trimmed, a CRLF file's \r too), password
// and all, into taasd.toml only.
func TestProvisionDBFile(t *testing.T) {
	t.Parallel() // a fake root, or a Vagrant state, of its own
	r := newFakeRoot(t)
	const url = "postgresql://taasd:s3cret@db1:5432,db2:5432/taas?target_session_attrs=read-write&sslmode=require"
	f := filepath.Join(r.Dir, "db-url")
	if err := os.WriteFile(f, []byte("# the fleet's database\n\n  "+url+" \r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := r.run(t, nil, append([]string{"--db-file", f}, nics...)...)
	if err != nil {
		t.Fatalf("provision.sh: %v\n%s", err, out)
	}
	if c := r.config(t); c.DB != url || c.Node != "" {
		t.Errorf("taasd.toml: db %q node %q, want %q and no node", c.DB, c.Node, url)
	}
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "taasd:xxxxx@db1") {
		t.Errorf("the output shows the password, or not the redacted URL:\n%s", out)
	}
}

// TestProvisionFleetRefuses: what provisioning refuses before it writes
// anything.
func TestProvisionFleetRefuses(t *testing.T) {
	t.Parallel() // a fake root, or a Vagrant state, of its own
	r := newFakeRoot(t)
	withPassword := filepath.Join(r.Dir, "db-url")
	if err := os.WriteFile(withPassword, []byte("postgres://taasd:pw@db/taasd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"password on the command line", nil, []string{"--db", "postgres://taasd:pw@db/taasd"}, "the URL holds a password"},
		{"password parameter on the command line", nil, []string{"--db", "postgres://taasd@db/taas?sslmode=require&password=pw"}, "the URL holds a password"},
		{"quote in the URL", nil, []string{"--db", `postgres://taasd@db/taas?application_name="x"`}, "no \""},
		{"bad node name", nil, []string{"--node", "taas 2"}, "--node taas 2: want 1 to 64"},
		{"node name too long", nil, []string{"--node", strings.Repeat("n", 65)}, "want 1 to 64"},
		{"password for SQLite", []string{"TAASD_DB_PASSWORD=pw"}, nil, "TAASD_DB_PASSWORD is for a postgres:// --db"},
		{"two passwords", []string{"TAASD_DB_PASSWORD=pw"}, []string{"--db-file", withPassword}, "a password in the URL: choose one"},
		{"empty URL file", nil, []string{"--db-file", "/dev/null"}, "no URL in it"},
		{"short admin token", []string{"TAASD_ADMIN_TOKEN=abc"}, nil, "TAASD_ADMIN_TOKEN: want 16 or more"},
		{"admin token without token auth", []string{"TAASD_ADMIN_TOKEN=0123456789abcdef0"}, []string{"--auth", "noauth"}, "is for --auth token"},
		{"--db and --db-file", nil, []string{"--db", "postgres://db/taasd", "--db-file", "/dev/null"}, "choose one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := r.run(t, tc.env, append(tc.args, nics...)...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("provision.sh: %v, want a failure saying %q\n%s", err, tc.want, out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(r.Upper, "etc", "taasd")); err == nil {
		t.Error("a refused run wrote /etc/taasd")
	}
}
