package testutil

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// Leaks takes the process's goroutine and file descriptor counts now; the
// function it returns, called once what the test started is closed,
// fails t when either is higher (goroutines get 10 s to end), with the
// goroutines' stacks. Tests that start and stop a broker or a server use
// it; it assumes no other test runs at the same time (no t.Parallel).
func Leaks(t testing.TB) func() {
	t.Helper()
	goroutines, fds := runtime.NumGoroutine(), countFDs(t)
	return func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for (runtime.NumGoroutine() > goroutines || countFDs(t) > fds) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > goroutines {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines after close, %d before\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
		}
		if n := countFDs(t); n > fds {
			t.Errorf("%d file descriptors after close, %d before", n, fds)
		}
	}
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
