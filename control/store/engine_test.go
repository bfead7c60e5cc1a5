package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// The store's tests run on the engine TAAS_TEST_DB names: SQLite by
// default, PostgreSQL with TAAS_TEST_DB=postgres (make test runs both).
// Tests of what only one engine has (SQLite's pragmas, its triggers
// dropped by hand) run on SQLite in the SQLite pass only; the tests of
// several stores on one database (postgres_test.go) run on PostgreSQL in
// every pass.

func TestMain(m *testing.M) { os.Exit(testutil.RunWithPostgres(m)) }

// onPostgres reports whether this pass runs on PostgreSQL.
func onPostgres() bool { return os.Getenv("TAAS_TEST_DB") == "postgres" }

// testDB returns a new, empty database of this pass's engine for t: a
// SQLite file in t.TempDir() or a database on the package's PostgreSQL
// cluster.
func testDB(t *testing.T) string {
	t.Helper()
	if onPostgres() {
		return testutil.StartPostgres(t)
	}
	return filepath.Join(t.TempDir(), "taas.db")
}

// sqliteOnly skips t in the PostgreSQL pass: it tests SQLite's own
// machinery, which the SQLite pass covers.
func sqliteOnly(t *testing.T) {
	t.Helper()
	if onPostgres() {
		t.Skip("tests SQLite's own machinery: the SQLite pass runs it")
	}
}
