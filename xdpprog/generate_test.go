package xdpprog

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestGeneratedUpToDate runs `make generate` on a copy of this package (with
// the repo's Makefile, go.mod and go.sum, in a scratch module holding only
// xdpprog) and fails when the committed bpf2go output differs from what
// xdp.c gives: someone edited xdp.c without regenerating, or the pinned
// compiler no longer reproduces the object. It touches nothing in the tree.
func TestGeneratedUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the clang build of xdp.c")
	}
	// CI installs clang-14 and llvm-14 (.ci/apt-packages.txt); a developer
	// machine without them cannot regenerate, and the committed output
	// builds without them.
	for _, tool := range []string{"clang-14", "llvm-strip-14", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: cannot regenerate (CI installs it)", tool)
		}
	}
	root := t.TempDir()
	copyFile(t, "../Makefile", filepath.Join(root, "Makefile"))
	copyFile(t, "../go.mod", filepath.Join(root, "go.mod"))
	copyFile(t, "../go.sum", filepath.Join(root, "go.sum"))
	for _, f := range []string{"xdp.c", "gen.go", "headers/bpf_helpers.h", "headers/bpf_helper_defs.h", "headers/bpf_endian.h"} {
		copyFile(t, f, filepath.Join(root, "xdpprog", f))
	}
	cmd := exec.Command("make", "-s", "generate", "GO="+testutil.GoBin())
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make generate in a copy of xdpprog: %v\n%s", err, out)
	}
	for _, f := range []string{"xdp_bpfel.go", "xdp_bpfel.o"} {
		want, err := os.ReadFile(filepath.Join(root, "xdpprog", f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("committed %s differs from `make generate` output (%d vs %d bytes): run make generate and commit", f, len(got), len(want))
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
