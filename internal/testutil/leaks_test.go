package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLeaksNamesWhatLeaked leaks a goroutine, a descriptor and a mapping
// whose descriptor is closed, and checks that Leaks names each (the
// goroutine by its stack, the descriptor by its target, the mapping by
// its path), and then, once they are gone, nothing.
func TestLeaksNamesWhatLeaked(t *testing.T) {
	defer func(w time.Duration) { leakWait = w }(leakWait)
	leakWait = 100 * time.Millisecond

	r := &recorder{TB: t}
	check := Leaks(r)
	stop := make(chan struct{})
	exited := make(chan struct{})
	go leakyGoroutine(stop, exited)
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	mfd, err := unix.MemfdCreate("leakstest", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(mfd, int64(os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(mfd, 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(mfd)

	check()
	if len(r.errs) != 1 {
		t.Fatalf("Leaks reported %d errors, want 1: %q", len(r.errs), r.errs)
	}
	for _, want := range []string{
		"testutil.leakyGoroutine", // the stack
		fmt.Sprintf("fd %d -> /dev/null", f.Fd()),
		"/memfd:leakstest", // the mapping
	} {
		if !strings.Contains(r.errs[0], want) {
			t.Errorf("Leaks reported\n%s\nwant it to name %q", r.errs[0], want)
		}
	}

	close(stop)
	<-exited
	f.Close()
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	r.errs = nil
	check()
	if len(r.errs) != 0 {
		t.Errorf("Leaks reported after everything ended: %q", r.errs)
	}
}

func leakyGoroutine(stop, exited chan struct{}) {
	defer close(exited)
	<-stop
}
