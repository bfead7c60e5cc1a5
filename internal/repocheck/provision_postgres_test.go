package repocheck

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taas-appliance/taas/control/store"
	"github.com/taas-appliance/taas/internal/testutil"
)

// asRole returns dsn (a testutil.PostgresCluster URL) for user, with
// password unless it is empty.
func asRole(t *testing.T, dsn, user, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("user", user)
	if password != "" {
		q.Set("password", password)
	}
	// pgx unescapes the query as a path: a space is %20, + stays +.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

// pgExec runs statements on dsn.
func pgExec(t *testing.T, dsn string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// pgConnects reports whether dsn's user may connect (nil) or why not.
func pgConnects(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// TestProvisionPostgresRole runs deploy/provision-postgres.sh --db-only
// (the SQL the db VM runs, through psql) on a real PostgreSQL: twice, then
// with a new password. The role logs in with its password (SCRAM, pg_hba
// demands it here) and not with the old one, is no superuser, owns the
// database and may run taasd's migrations in it; other roles may not
// connect to it. Then provision.sh's password file, written for that
// password, lets taasd's driver in.
func TestProvisionPostgresRole(t *testing.T) {
	t.Parallel() // a fake root, or a Vagrant state, of its own
	needTool(t, "psql", "postgresql-client")
	c := testutil.StartPostgresCluster(t)
	script, err := filepath.Abs(filepath.Join(root, "deploy", "provision-postgres.sh"))
	if err != nil {
		t.Fatal(err)
	}
	provision := func(password string, args ...string) {
		t.Helper()
		cmd := exec.Command(script, append([]string{"--db-only"}, args...)...)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "TAASD_") && !strings.HasPrefix(kv, "PG") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "PGHOST="+c.Dir, "PGUSER=postgres", "TAASD_DB_PASSWORD="+password)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("provision-postgres.sh --db-only %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("provision-postgres.sh --db-only %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	}
	const old, password = "first password", `it's a "new" one: \ too`
	provision(old)
	provision(old)
	provision(password)
	provision(password, "--role", "other", "--database", "otherdb")

	// Passwords from here on: the server's own user by its socket alone.
	super := c.DSN("postgres")
	hba := filepath.Join(c.Dir, "data", "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all postgres trust\nlocal all all scram-sha-256\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pgExec(t, super, "SELECT pg_reload_conf()")
	dsn := c.DSN("taas")
	// The postmaster rereads pg_hba when the signal reaches it: until then
	// trust lets anyone in.
	for deadline := time.Now().Add(10 * time.Second); pgConnects(asRole(t, dsn, "taasd", "")) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("pg_hba.conf not in effect 10 s after pg_reload_conf()")
		}
	}

	if err := pgConnects(asRole(t, dsn, "taasd", password)); err != nil {
		t.Errorf("taasd with its password: %v", err)
	}
	for what, pw := range map[string]string{"the old password": old, "no password": ""} {
		if err := pgConnects(asRole(t, dsn, "taasd", pw)); err == nil {
			t.Errorf("taasd with %s connected", what)
		}
	}
	if err := pgConnects(asRole(t, dsn, "other", password)); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("another role into taasd's database: %v, want permission denied", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, super)
	if err != nil {
		t.Fatal(err)
	}
	var superuser, createdb bool
	var owner string
	err = conn.QueryRow(ctx, `SELECT r.rolsuper, r.rolcreatedb, pg_get_userbyid(d.datdba)
		FROM pg_roles r, pg_database d WHERE r.rolname = 'taasd' AND d.datname = 'taas'`).Scan(&superuser, &createdb, &owner)
	conn.Close(ctx)
	if err != nil || superuser || createdb || owner != "taasd" {
		t.Errorf("role taasd: superuser %v createdb %v, database owner %q (%v); want neither, owner taasd", superuser, createdb, owner, err)
	}

	// taasd's own migrations, as the role.
	s, err := store.Open(ctx, asRole(t, dsn, "taasd", password))
	if err != nil {
		t.Fatalf("store.Open as taasd: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}

	t.Run("provision.sh's password file", func(t *testing.T) {
		r := newFakeRoot(t)
		out, err := r.run(t, []string{"TAASD_DB_PASSWORD=" + password}, append([]string{"--db", asRole(t, dsn, "taasd", ""), "--node", "n1"}, nics...)...)
		if err != nil {
			t.Fatalf("provision.sh: %v\n%s", err, out)
		}
		// taasd's store, opened as taasd opens its db.
		db := strings.Replace(r.config(t).DB, "/etc/taasd/pgpass", filepath.Join(r.Upper, "etc", "taasd", "pgpass"), 1)
		s, err := store.Open(ctx, db)
		if err != nil {
			t.Fatalf("store.Open of the db provision.sh wrote, with its password file: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
}

// serverScript is TestProvisionPostgresServer's run in the fake root: a
// Debian cluster of its own (pg_createcluster, as the postgresql package
// makes one), the management address on a veth, provision-postgres.sh
// twice (the password generated by the first), then connections over TCP
// as the nodes make them, each section's output after a "== name" line.
const serverScript = `set -e
script=$1
rm -rf /etc/postgresql/* /var/lib/postgresql/* /var/log/postgresql/*
version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
pg_createcluster "$version" main >/dev/null
ip link add fl0 type veth peer name fl1
ip addr add 198.51.100.2/24 dev fl0
ip link set fl0 up
ip link set fl1 up
echo "== first"
"$script" --listen 198.51.100.2 --allow 198.51.100.0/24 2>&1
echo "== again"
"$script" --listen 198.51.100.2 --allow 198.51.100.0/24 2>&1
pw=$(cat /etc/postgresql/taasd.password)
try() { # try USER PASSWORD SSLMODE
	PGPASSWORD=$2 PGCONNECT_TIMEOUT=5 psql -X "host=198.51.100.2 dbname=taas user=$1 sslmode=$3" \
		-Atc "SELECT 'ssl=' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>&1 || echo refused
}
echo "== taasd"; try taasd "$pw" require
echo "== taasd without TLS"; try taasd "$pw" disable
echo "== taasd with another password"; try taasd "not$pw" require
echo "== postgres"; try postgres "$pw" require
echo "== end"
`

// TestProvisionPostgresServer runs deploy/provision-postgres.sh whole, as
// the db VM does, on a Debian cluster in a fake root: PostgreSQL then
// takes the role taasd over TCP on the management address with TLS and the
// generated password, and nothing else; a second run changes nothing.
func TestProvisionPostgresServer(t *testing.T) {
	t.Parallel() // a fake root, or a Vagrant state, of its own
	needTool(t, "pg_createcluster", "postgresql-common")
	needTool(t, "psql", "postgresql-client")
	r := newFakeRoot(t)
	start := time.Now()
	out, err := r.exec(t, nil, "bash", "-c", serverScript, "server", deployScript(t, "provision-postgres.sh"))
	t.Logf("a cluster, two provisionings and four connections in %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	section := map[string]string{}
	for _, part := range strings.Split(out, "== ")[1:] {
		name, body, _ := strings.Cut(part, "\n")
		section[name] = body
	}
	if _, ok := section["end"]; !ok {
		t.Fatalf("the script stopped early:\n%s", out)
	}
	for name, want := range map[string]string{
		"first":                       "generated the password of taasd into /etc/postgresql/taasd.password",
		"taasd":                       "ssl=t",
		"taasd without TLS":           "no pg_hba.conf entry",
		"taasd with another password": "password authentication failed",
		"postgres":                    "no pg_hba.conf entry",
	} {
		if !strings.Contains(section[name], want) {
			t.Errorf("%s: want %q in\n%s", name, want, section[name])
		}
	}
	if !strings.Contains(section["first"], "wrote taasd's lines in") || strings.Contains(section["again"], "wrote") || strings.Contains(section["again"], "generated") {
		t.Errorf("the second run changed something:\nfirst:\n%s\nagain:\n%s", section["first"], section["again"])
	}
	hbas, _ := filepath.Glob(filepath.Join(r.Upper, "etc", "postgresql", "*", "main", "pg_hba.conf"))
	if len(hbas) != 1 {
		t.Fatalf("pg_hba.conf: %v", hbas)
	}
	hba, err := os.ReadFile(hbas[0])
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(hba), "\nhostssl taas taasd 198.51.100.0/24 scram-sha-256\n"); n != 1 {
		t.Errorf("pg_hba.conf has taasd's line %d times, want once:\n%s", n, hba)
	}
	r.file(t, "/etc/postgresql/taasd.password", 0o600, "root")
}
