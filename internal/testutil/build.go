package testutil

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildTaasd builds the taasd binary into the test's temporary directory,
// with extra `go build` flags (such as "-ldflags", "-X main.version=v1"),
// and returns its path. The build cache makes it quick after the first
// build of the tree.
func BuildTaasd(t testing.TB, flags ...string) string {
	t.Helper()
	gobin := GoBin()
	bin := filepath.Join(t.TempDir(), "taasd")
	args := append(append([]string{"build"}, flags...), "-o", bin, "github.com/taas-appliance/taas/cmd/taasd")
	if out, err := exec.Command(gobin, args...).CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/taasd: %v\n%s", err, out)
	}
	return bin
}

// GoBin is the go command: from PATH, else where Go's tarball installs it
// (sudo resets PATH; the Makefile looks there too).
func GoBin() string {
	if gobin, err := exec.LookPath("go"); err == nil {
		return gobin
	}
	return "/usr/local/go/bin/go"
}
