package testutil

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestSweepPostgres: a cluster directory left by a dead test binary goes
// once it is old; a young one, or one whose server runs, stays.
func TestSweepPostgres(t *testing.T) {
	mk := func(pid string, age time.Duration) string {
		t.Helper()
		dir, err := os.MkdirTemp("", "taas-pg-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if pid != "" {
			if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "data", "postmaster.pid"), []byte(pid+"\n/x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		old := time.Now().Add(-age)
		if err := os.Chtimes(dir, old, old); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dead := mk("2147483646", 2*time.Hour) // no such process
	young := mk("2147483646", time.Minute)
	running := mk(strconv.Itoa(os.Getpid()), 2*time.Hour)
	sweepPostgres(time.Hour)
	for dir, want := range map[string]bool{dead: false, young: true, running: true} {
		if _, err := os.Stat(dir); (err == nil) != want {
			t.Errorf("%s exists = %v after the sweep, want %v", dir, err == nil, want)
		}
	}
}
