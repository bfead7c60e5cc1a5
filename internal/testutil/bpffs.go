package testutil

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BPFFS mounts a bpffs of the test's own on a temporary directory (each
// mount is a new instance, so nothing is shared with /sys/fs/bpf or other
// tests) and returns a path in it that does not exist yet, for pins.
// Unmounting when t ends unpins, and so releases, whatever is left.
func BPFFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	Run(t, "mount", "-t", "bpf", "bpf", dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return filepath.Join(dir, "pins")
}
