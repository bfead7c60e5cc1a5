package testutil

import (
	"strings"
	"testing"
	"time"
)

// WaitOperUp waits until link name (in netns; empty is the test's own)
// reports operational state UP. The kernel activates a link's qdisc only
// then, a moment after the carrier comes up: frames sent out of a veth end
// before that are dropped, so tests wait for it before injecting.
func WaitOperUp(t testing.TB, netns, name string) {
	t.Helper()
	args := []string{"-o", "link", "show", "dev", name}
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := Run(t, "ip", args...)
		if strings.Contains(out, " state UP ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not operationally up after 10s: %s", name, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
