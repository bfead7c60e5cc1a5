package control

import (
	"os"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestMain checks the whole run for leaks too: startServerAt checks each
// test that starts a server, this what the others (a Keystone client, a
// listener of their own) leave behind.
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(m))
}
