package control

import (
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestDatabaseUnavailable: with the PostgreSQL server down, a request that
// needs it answers 503 with a NeutronError (issue 14: a taasd cut off from
// the database), and the same request succeeds once the server is back.
func TestDatabaseUnavailable(t *testing.T) {
	c := testutil.StartPostgresCluster(t)
	ts := startServerAt(t, c.CreateDB(t), Config{})
	body := `{"network": {"name": "n"}}`
	ts.must(201, "POST", "/v2.0/networks", body, "")
	c.Stop()
	r := ts.do("POST", "/v2.0/networks", body)
	if r.status != 503 || r.raw != `{"NeutronError":{"type":"ServiceUnavailable","message":"The database is unavailable. Please try again at a later time.","detail":""}}` {
		t.Errorf("POST with the database down = %d %s, want 503 and a NeutronError", r.status, r.raw)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ts.must(201, "POST", "/v2.0/networks", body, "")
	// The cluster this test started again goes before the server's leak
	// check (StartPostgresCluster's clean-up comes after it).
	ts.stop()
	c.Stop()
}
