package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// RequireRoot skips t unless the process runs as root. why says which
// privileges the test needs, for the skip message. CI runs as root, so there
// these tests always run.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("requires root: %s", why)
	}
}

// ErrNotSupported is what feature probes wrap when the kernel lacks a feature;
// SkipIfNotSupported turns it into a skip.
var ErrNotSupported = errors.New("not supported by this kernel")

// SkipIfNotSupported skips t when err says a kernel feature is missing, and
// fails it on any other non-nil error. Production packages cannot wrap this
// package's ErrNotSupported, so an error whose chain has a NotSupported()
// bool method returning true (xsk.ErrNotSupported) counts too.
func SkipIfNotSupported(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ns interface{ NotSupported() bool }
	if errors.Is(err, ErrNotSupported) || (errors.As(err, &ns) && ns.NotSupported()) {
		t.Skipf("kernel feature missing: %v", err)
	}
	t.Fatal(err)
}

// Prefix returns a short random prefix for namespace and link names, unique
// to this call, so tests running in parallel (or left over by a crash) never
// collide. Interface names are at most 15 bytes: keep what follows the
// prefix under 9.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b[:])
}

// Run runs a command and fails t with its output when it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Netns creates a network namespace with its loopback up and deletes it
// when t ends.
func Netns(t testing.TB, name string) string {
	t.Helper()
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v %s", name, err, out)
		}
	})
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// VethOpts places and shapes a veth pair.
type VethOpts struct {
	// NetnsA and NetnsB are the namespaces of each end; empty is the test's
	// own namespace.
	NetnsA, NetnsB string
	// Queues is the number of RX and TX queues of each end; 0 means 1.
	Queues int
	// MACA and MACB set the ends' MAC addresses when not empty.
	MACA, MACB string
	// NoIPv6 turns IPv6 off on both ends before they come up: the kernel
	// then sends no router solicitation or MLD report of its own, which a
	// test counting frames from an end's MAC would see.
	NoIPv6 bool
}

// Veth creates a veth pair a <-> b with its ends in their namespaces
// (made there: a name need be free only in its own namespace), brings
// both up, and deletes the pair when t ends.
func Veth(t testing.TB, a, b string, o VethOpts) {
	t.Helper()
	end := func(name, ns string) []string {
		args := []string{name}
		if o.Queues > 1 {
			q := strconv.Itoa(o.Queues)
			args = append(args, "numtxqueues", q, "numrxqueues", q)
		}
		if ns != "" {
			args = append(args, "netns", ns)
		}
		return args
	}
	args := append(append([]string{"link", "add"}, end(a, o.NetnsA)...), "type", "veth", "peer", "name")
	Run(t, "ip", append(args, end(b, o.NetnsB)...)...)
	t.Cleanup(func() {
		// Deleting one end deletes both; the namespace may already be gone,
		// and with it the pair, so a failure here is not an error.
		if o.NetnsA != "" {
			_ = exec.Command("ip", "-n", o.NetnsA, "link", "del", a).Run()
		} else {
			_ = exec.Command("ip", "link", "del", a).Run()
		}
	})
	for _, end := range []struct{ name, ns, mac string }{{a, o.NetnsA, o.MACA}, {b, o.NetnsB, o.MACB}} {
		ip := []string{}
		if end.ns != "" {
			ip = append(ip, "-n", end.ns)
		}
		if end.mac != "" {
			Run(t, "ip", append(ip, "link", "set", end.name, "address", end.mac)...)
		}
		if o.NoIPv6 {
			sysctl := []string{"sysctl", "-qw", "net.ipv6.conf." + end.name + ".disable_ipv6=1"}
			if end.ns != "" {
				sysctl = append([]string{"netns", "exec", end.ns}, sysctl...)
				Run(t, "ip", sysctl...)
			} else {
				Run(t, sysctl[0], sysctl[1:]...)
			}
		}
		Run(t, "ip", append(ip, "link", "set", end.name, "up")...)
	}
}
