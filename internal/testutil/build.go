package testutil

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// BuildTaasd builds the taasd binary into the test's temporary directory,
// with extra `go build` flags (such as "-ldflags", "-X main.version=v1"),
// and returns its path. The build cache makes it quick after the first
// build of the tree.
func BuildTaasd(t testing.TB, flags ...string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		// Under `go test`, the toolchain that built this test is there.
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "taasd")
	args := append(append([]string{"build"}, flags...), "-o", bin, "github.com/taas-appliance/taas/cmd/taasd")
	if out, err := exec.Command(gobin, args...).CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/taasd: %v\n%s", err, out)
	}
	return bin
}
