package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/control/store"
	"github.com/taas-appliance/taas/internal/testutil"
)

// loadConfigText loads text as a taasd.toml written to a temporary file.
func loadConfigText(t *testing.T, text string) *fileConfig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "taasd.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := loadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fc
}

// TestCheckDB: `taasd check` connects to the configured database, SQLite
// or PostgreSQL, says where its schema stands, fails when it cannot
// connect or a newer taasd migrated it, and never prints the password.
func TestCheckDB(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, db string) checkResult {
		t.Helper()
		rs := checkDB(loadConfigText(t, fmt.Sprintf("db = %q\n", db)))
		if len(rs) != 1 {
			t.Fatalf("checkDB = %+v, want one result", rs)
		}
		if strings.Contains(rs[0].Detail+rs[0].Fix, "s3cretpw") {
			t.Errorf("checkDB prints the password: %+v", rs[0])
		}
		return rs[0]
	}
	expect := func(t *testing.T, r checkResult, v verdict, detail string) {
		t.Helper()
		if r.Verdict != v || !strings.Contains(r.Detail, detail) {
			t.Errorf("checkDB = %v %q, want %v and %q", r.Verdict, r.Detail, v, detail)
		}
	}
	migrate := func(t *testing.T, db string) {
		t.Helper()
		st, err := store.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "taas.db")
		expect(t, check(t, path), pass, "does not exist yet")
		if _, err := os.Stat(path); err == nil {
			t.Errorf("checkDB created %s", path)
		}
		migrate(t, path)
		expect(t, check(t, path), pass, "schema up to date (0011_node_interfaces.sql)")
	})
	t.Run("postgres", func(t *testing.T) {
		c := testutil.StartPostgresCluster(t)
		// The cluster trusts its socket: a password in the URL is taken
		// and not needed, which lets the test see what is printed of it.
		dsn := strings.Replace(c.CreateDB(t), "postgres:///", "postgres://postgres:s3cretpw@/", 1)
		expect(t, check(t, dsn), pass, "empty, the first start creates the schema")
		migrate(t, dsn)
		expect(t, check(t, dsn), pass, "schema up to date (0011_node_interfaces.sql)")
		if r := check(t, dsn); !strings.Contains(r.Detail, "postgres://postgres:xxxxx@/") {
			t.Errorf("checkDB = %q, want the URL with its password redacted", r.Detail)
		}
		c.Stop()
		r := check(t, dsn)
		expect(t, r, fail, "connect")
		if !strings.Contains(r.Fix, "pg_hba.conf") {
			t.Errorf("checkDB's fix = %q, want it to name pg_hba.conf", r.Fix)
		}
	})
}

// TestDBResult: the verdict on each state of a database's schema.
func TestDBResult(t *testing.T) {
	pg := store.Info{Engine: "postgres", Name: "postgres://taasd:xxxxx@db1/taas", Server: "15.8", Known: "0009_status_reason.sql"}
	with := func(applied ...string) store.Info { i := pg; i.Applied = applied; return i }
	for _, tc := range []struct {
		name   string
		info   store.Info
		err    error
		want   verdict
		detail string
	}{
		{"up to date", with("0001_init.sql", "0009_status_reason.sql"), nil, pass, "schema up to date (0009_status_reason.sql)"},
		{"older", with("0001_init.sql", "0008_filter_snaplen.sql"), nil, pass, "schema at 0008_filter_snaplen.sql, the start migrates it to 0009"},
		{"newer", with("0010_nodes.sql"), nil, fail, "newer than this taasd's newest (0009_status_reason.sql)"},
		{"empty", with(), nil, pass, "empty, the first start creates the schema"},
		{"unreachable", pg, fmt.Errorf("connect: %w", store.ErrUnavailable), fail, "postgres postgres://taasd:xxxxx@db1/taas: connect: database unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dbResult(tc.info, tc.err)
			if r.Verdict != tc.want || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("dbResult = %v %q, want %v and %q", r.Verdict, r.Detail, tc.want, tc.detail)
			}
			if (r.Verdict == fail) != (r.Fix != "") {
				t.Errorf("dbResult = %v with fix %q: a failure, and only one, says what to do", r.Verdict, r.Fix)
			}
		})
	}
}
