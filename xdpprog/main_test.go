package xdpprog

import (
	"os"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestMain fails the package's run when its tests, examples and fuzz seeds
// together leave a goroutine, a descriptor (a map, program, bpf_link,
// perf event or socket) or a mapping (a perf ring) behind: no single
// helper opens what they open, so the check is here rather than per test.
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(m.Run))
}
