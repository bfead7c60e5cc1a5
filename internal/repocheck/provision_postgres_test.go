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
	dsn := c.DSN("taasd")
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
		FROM pg_roles r, pg_database d WHERE r.rolname = 'taasd' AND d.datname = 'taasd'`).Scan(&superuser, &createdb, &owner)
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
		db := strings.Replace(r.config(t).DB, "/etc/taasd/pgpass", filepath.Join(r.Upper, "etc", "taasd", "pgpass"), 1)
		if err := pgConnects(db); err != nil {
			t.Errorf("taasd's db with the password file provision.sh wrote: %v", err)
		}
	})
}
