package testutil

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// leakWait is how long Leaks gives what a test closed to go: goroutines
// that end after Close returns (a connection's reader seeing EOF) and
// descriptors that close with them. A variable for leaks_test.go.
var leakWait = 10 * time.Second

// Leaks notes the process's goroutines, file descriptors and mappings of
// sockets and anonymous inodes now; the function it returns, called once
// what the test started is closed, fails t with what is new and still
// there after up to leakWait: each goroutine's stack, each descriptor's
// number and target (its /proc/self/fd link, e.g. "socket:[123]" or
// "anon_inode:bpf-map") and each mapping's range and path (an AF_XDP
// socket's rings stay mapped after its descriptor closes). Goroutines are
// told apart by their ids (never reused), descriptors by number and
// target, so that whatever earlier tests leave to end meanwhile (a
// finalizer closing a BPF object, a connection's goroutine) neither hides
// a leak nor makes one up. It assumes no other test runs at the same time
// (no t.Parallel).
func Leaks(t testing.TB) func() {
	t.Helper()
	warmPoller()
	before := takeLeakSnapshot(t)
	return func() {
		t.Helper()
		start := time.Now()
		var l, first leaked
		for i := 0; ; i++ {
			l = before.leaked(takeLeakSnapshot(t))
			if i == 0 {
				first = l
			}
			if l.none() || time.Since(start) > leakWait {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if waited := time.Since(start); l.none() && waited > 100*time.Millisecond {
			// What made the test longer, to be closed sooner.
			t.Logf("leak check: waited %v for what the test left to end:\n%s", waited.Round(time.Millisecond), first)
		}
		if !l.none() {
			t.Errorf("leaked after close (waited %v):\n%s", leakWait, l)
		}
	}
}

// CheckLeaks is Leaks around run (m.Run, or what wraps it) for TestMain,
// for what no test checks itself: it returns run's exit code, or 1, having
// printed what leaked, when the tests together leave a goroutine, a
// descriptor or a mapping behind. Its snapshot is taken before any test
// runs: os.Exit(testutil.CheckLeaks(m.Run)).
func CheckLeaks(run func() int) int {
	warmPoller()
	before, err := leakSnapshotOf()
	if err != nil {
		fmt.Fprintln(os.Stderr, "leak check:", err)
		return 1
	}
	code := run()
	start := time.Now()
	var l, first leaked
	for i := 0; ; i++ {
		after, err := leakSnapshotOf()
		if err != nil {
			fmt.Fprintln(os.Stderr, "leak check:", err)
			return 1
		}
		l = before.leaked(after)
		if i == 0 {
			first = l
		}
		if l.none() || time.Since(start) > leakWait {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if waited := time.Since(start); l.none() && waited > time.Second {
		// What made the run longer, to be closed sooner.
		fmt.Fprintf(os.Stderr, "leak check: waited %v for what the tests left to end:\n%s", waited.Round(time.Millisecond), first)
	}
	if !l.none() {
		fmt.Fprintf(os.Stderr, "FAIL: the package's tests leaked (waited %v):\n%s", leakWait, l)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// processGoroutines are goroutines a library starts once, lazily, and
// keeps for the process's life, by a function of their stacks.
var processGoroutines = []string{
	// The Date header's clock, started by fasthttp's first server.
	"github.com/valyala/fasthttp.updateServerDate",
}

func processGoroutine(stack string) bool {
	for _, f := range processGoroutines {
		if strings.Contains(stack, f) {
			return true
		}
	}
	return false
}

var warmOnce sync.Once

// warmPoller makes the Go runtime open its poller's descriptors (an epoll
// instance and an eventfd, opened once, on first use, and kept) before the
// first snapshot, so that the first test to use the network is not blamed
// for them.
func warmPoller() {
	warmOnce.Do(func() {
		r, w, err := os.Pipe()
		if err != nil {
			return // the snapshot's own error says more
		}
		r.Close()
		w.Close()
	})
}

// leakSnapshot is what a process holds at one moment.
type leakSnapshot struct {
	// goroutines are stacks by goroutine id; self is the id of the
	// goroutine that took the snapshot.
	goroutines map[uint64]string
	self       uint64
	// fds are /proc/self/fd link targets by descriptor number.
	fds map[int]string
	// mappings are the memory mappings of sockets, anonymous inodes and
	// memfds ("7f00-7f10 socket:[123]"): an AF_XDP socket's rings, a
	// perf ring. They outlive their descriptor until unmapped.
	mappings map[string]bool
}

func takeLeakSnapshot(t testing.TB) leakSnapshot {
	t.Helper()
	s, err := leakSnapshotOf()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func leakSnapshotOf() (leakSnapshot, error) {
	fds, err := openFDs()
	if err != nil {
		return leakSnapshot{}, err
	}
	maps, err := mappings()
	if err != nil {
		return leakSnapshot{}, err
	}
	gs, self := goroutines()
	return leakSnapshot{goroutines: gs, self: self, fds: fds, mappings: maps}, nil
}

// leaked is what after holds that s did not, but the goroutine that took
// after (the check's own).
func (s leakSnapshot) leaked(after leakSnapshot) leaked {
	var l leaked
	for id, stack := range after.goroutines {
		if _, ok := s.goroutines[id]; !ok && id != after.self && !processGoroutine(stack) {
			l.goroutines = append(l.goroutines, stack)
		}
	}
	for fd, target := range after.fds {
		if was, ok := s.fds[fd]; !ok || was != target {
			l.fds = append(l.fds, fmt.Sprintf("fd %d -> %s%s", fd, target, fdInfo(fd, target)))
		}
	}
	for m := range after.mappings {
		if !s.mappings[m] {
			l.mappings = append(l.mappings, m)
		}
	}
	sort.Strings(l.goroutines)
	sort.Strings(l.fds)
	sort.Strings(l.mappings)
	return l
}

// leaked is what a test left behind: goroutine stacks, descriptors
// ("fd N -> target") and mappings ("start-end path").
type leaked struct {
	goroutines []string
	fds        []string
	mappings   []string
}

func (l leaked) none() bool {
	return len(l.goroutines) == 0 && len(l.fds) == 0 && len(l.mappings) == 0
}

func (l leaked) String() string {
	var b strings.Builder
	if len(l.fds) > 0 {
		fmt.Fprintf(&b, "%d file descriptors:\n\t%s\n", len(l.fds), strings.Join(l.fds, "\n\t"))
	}
	if len(l.mappings) > 0 {
		fmt.Fprintf(&b, "%d mappings:\n\t%s\n", len(l.mappings), strings.Join(l.mappings, "\n\t"))
	}
	if len(l.goroutines) > 0 {
		fmt.Fprintf(&b, "%d goroutines:\n\n%s\n", len(l.goroutines), strings.Join(l.goroutines, "\n\n"))
	}
	return b.String()
}

// goroutines returns every goroutine's stack by id, and the caller's id.
func goroutines() (map[uint64]string, uint64) {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[uint64]string)
	var self uint64
	// The first stack is the caller's; stacks are separated by a blank line.
	for i, g := range bytes.Split(buf, []byte("\n\n")) {
		id, ok := goroutineID(g)
		if !ok {
			continue
		}
		if i == 0 {
			self = id
		}
		out[id] = string(g)
	}
	return out, self
}

// goroutineID reads the id of a stack's header, "goroutine 42 [running]:".
func goroutineID(stack []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(stack, []byte("goroutine "))
	if !ok {
		return 0, false
	}
	num, _, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(string(num), 10, 64)
	return id, err == nil
}

// openFDs returns the process's descriptors and their targets, leaving
// out the one it reads the list through.
func openFDs() (map[int]string, error) {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	self := int(dir.Fd())
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	fds := make(map[int]string, len(names))
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == self {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + name)
		if err != nil {
			continue // closed since the listing
		}
		fds[fd] = target
	}
	return fds, nil
}

// mappings returns the process's mappings of sockets, anonymous inodes and
// memfds, as "start-end path".
func mappings() (map[string]bool, error) {
	raw, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool)
	for _, line := range strings.Split(string(raw), "\n") {
		// start-end perms offset dev inode path
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		path := strings.Join(f[5:], " ")
		for _, p := range []string{"socket:", "anon_inode:", "/memfd:"} {
			if strings.HasPrefix(path, p) {
				out[f[0]+" "+path] = true
			}
		}
	}
	return out, nil
}

// fdInfo says more of a BPF object or perf event than its target: the
// lines of /proc/self/fdinfo that name its kind (map_type, prog_type,
// prog_tag, link_type, ...), as " (key: value, ...)"; "" for the others.
func fdInfo(fd int, target string) string {
	if !strings.HasPrefix(target, "anon_inode:") {
		return ""
	}
	raw, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return ""
	}
	var kept []string
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "map_type", "map_id", "key_size", "value_size", "max_entries", "prog_type", "prog_tag", "prog_id", "link_type", "link_id":
			kept = append(kept, k+": "+strings.TrimSpace(v))
		}
	}
	if len(kept) == 0 {
		return ""
	}
	return " (" + strings.Join(kept, ", ") + ")"
}
