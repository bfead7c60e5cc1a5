package perf

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Lab is the benchmark's own topology: the generator's end of a veth in
// namespace GenNS feeds the capture interface Cap in the root namespace,
// where every peer (taasd, tc, daemonlogger, netsniff-ng) reads; each
// monitor interface Mons[i] in the root namespace is a veth whose other end,
// in SinkNS, has a counting XDP sink. Only this process's own namespaces and
// links are touched, all named with Prefix, and Close removes them.
//
//	[GenNS] Gen ==veth==> Cap --(peer under test)--> Mons[i] ==veth==> [SinkNS] sink i
//	                          \--(tunnel)--> Uplink ==veth==> [RouterNS] --routed--> [CollectorNS] collector sink
//
// Tunnelled copies leave by Uplink towards Remote, a collector behind a
// router (so that the next hop is not the collector), whose link has the
// counting sink Collector. Addresses are a free /28 of 198.51.100.0/24
// (TEST-NET-2; not TEST-NET-1, which may be the host's own network: a
// route into it would take addresses of real hosts); the route to Remote in
// the root namespace goes with the uplink.
type Lab struct {
	Prefix        string
	GenNS, SinkNS string
	Gen, Cap      string
	Mons          []string
	Sinks         []*Sink
	// RouterNS and CollectorNS hold the router and the collector; Uplink
	// is the root end of the link to the router, Local its address, Remote
	// the collector's.
	RouterNS, CollectorNS string
	Uplink                string
	Local, Remote         string
	Collector             *Sink
	mark                  byte // the sinks' current mark (Traffic.Mark)
}

// TunnelMTU is the MTU of the lab's links towards the collector: a
// 1514-byte frame with VXLAN's 50 bytes of outer headers fits, so no copy
// is cut (a cut copy loses its mark).
const TunnelMTU = 1600

// NewLabPrefix returns a random prefix for a lab's names: 5 bytes, so that
// interface names and their NAPI thread names stay short.
func NewLabPrefix() string {
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return "b" + hex.EncodeToString(b[:])
}

// NewLab builds a lab with monitors monitor links. On error it removes what
// it built.
func NewLab(prefix string, monitors int) (l *Lab, err error) {
	l = &Lab{Prefix: prefix, GenNS: prefix + "gen", SinkNS: prefix + "snk", Gen: prefix + "g", Cap: prefix + "c",
		RouterNS: prefix + "rt", CollectorNS: prefix + "col", Uplink: prefix + "u"}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
			l = nil
		}
	}()
	for _, ns := range []string{l.GenNS, l.SinkNS, l.RouterNS, l.CollectorNS} {
		if err := run("ip", "netns", "add", ns); err != nil {
			return l, err
		}
		// No IPv6 on the lab's links: nothing but the generator's frames
		// reaches the counters.
		if err := run("ip", "netns", "exec", ns, "sysctl", "-qw",
			"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			return l, err
		}
	}
	if err := l.pair(l.Gen, l.GenNS, l.Cap); err != nil {
		return l, err
	}
	for i := range monitors {
		mon := fmt.Sprintf("%sm%d", prefix, i)
		if err := l.pair(mon+"s", l.SinkNS, mon); err != nil {
			return l, err
		}
		l.Mons = append(l.Mons, mon)
		s, err := AttachSink(l.SinkNS, mon+"s")
		if err != nil {
			return l, err
		}
		l.Sinks = append(l.Sinks, s)
	}
	return l, l.addCollector()
}

// addCollector builds the way to the collector: Uplink, the router and
// the collector's link with its sink.
func (l *Lab) addCollector() error {
	base, err := freeSlot()
	if err != nil {
		return err
	}
	addr := func(host int) string { return fmt.Sprintf("198.51.100.%d", base+host) }
	l.Local, l.Remote = addr(1), addr(10)
	up, rc, col := l.Prefix+"ur", l.Prefix+"rc", l.Prefix+"cl"
	if err := l.pair(up, l.RouterNS, l.Uplink); err != nil {
		return err
	}
	if err := run("ip", "link", "add", rc, "netns", l.RouterNS, "type", "veth", "peer", "name", col, "netns", l.CollectorNS); err != nil {
		return err
	}
	rt, cn := []string{"-n", l.RouterNS}, []string{"-n", l.CollectorNS}
	mtu := strconv.Itoa(TunnelMTU)
	for _, c := range [][]string{
		{"link", "set", l.Uplink, "mtu", mtu},
		append(rt, "link", "set", up, "mtu", mtu),
		append(rt, "link", "set", rc, "mtu", mtu, "up"),
		append(cn, "link", "set", col, "mtu", mtu, "up"),
		{"addr", "add", addr(1) + "/29", "dev", l.Uplink},
		append(rt, "addr", "add", addr(2)+"/29", "dev", up),
		append(rt, "addr", "add", addr(9)+"/30", "dev", rc),
		append(cn, "addr", "add", addr(10)+"/30", "dev", col),
		{"route", "replace", l.Remote + "/32", "via", addr(2), "dev", l.Uplink},
	} {
		if err := run("ip", c...); err != nil {
			return err
		}
	}
	if err := run("ip", "netns", "exec", l.RouterNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	// taasd's fast path redirects into the uplink veth: its peer needs GRO
	// or XDP (afxdp-notes gotcha 10).
	if err := run("ip", "netns", "exec", l.RouterNS, "ethtool", "-K", up, "gro", "on"); err != nil {
		return err
	}
	// The collector's sink drops ARP too: the router knows its MAC.
	ifc, err := interfaceIn(l.CollectorNS, col)
	if err != nil {
		return err
	}
	if err := run("ip", "-n", l.RouterNS, "neigh", "replace", l.Remote, "lladdr", ifc.HardwareAddr.String(),
		"dev", rc, "nud", "permanent"); err != nil {
		return err
	}
	s, err := AttachSink(l.CollectorNS, col)
	if err != nil {
		return err
	}
	l.Collector = s
	return nil
}

// freeSlot picks a /28 of 198.51.100.0/24 that no address of this
// namespace is in (another lab's, perf/lab/lab.sh's), from a random one
// on, and returns its first address's last byte.
func freeSlot() (int, error) {
	var b [1]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, err
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return 0, err
	}
	for i := range 16 {
		base := 16 * ((int(b[0]) + i) % 16)
		_, slot, _ := net.ParseCIDR(fmt.Sprintf("198.51.100.%d/28", base))
		if !slices.ContainsFunc(addrs, func(a net.Addr) bool {
			ip, ok := a.(*net.IPNet)
			return ok && slot.Contains(ip.IP)
		}) {
			return base, nil
		}
	}
	return 0, errors.New("no free /28 in 198.51.100.0/24 for the collector")
}

// interfaceIn looks up interface name in namespace netnsName.
func interfaceIn(netnsName, name string) (*net.Interface, error) {
	var ifc *net.Interface
	err := inLockedThread(netnsName, func() (err error) {
		ifc, err = net.InterfaceByName(name)
		return err
	})
	return ifc, err
}

// sinks are the sinks that count scenario sc's copies.
func (l *Lab) sinks(sc Scenario) []*Sink {
	if sc.Tunnel != "" {
		return []*Sink{l.Collector}
	}
	return l.Sinks[:sc.Fanout]
}

// allSinks are the monitors' sinks and the collector's.
func (l *Lab) allSinks() []*Sink {
	if l.Collector == nil {
		return l.Sinks
	}
	return append(slices.Clip(l.Sinks), l.Collector)
}

// pair makes a veth nsEnd (moved into ns) <-> rootEnd, both up, with IPv6
// off on the root end.
func (l *Lab) pair(nsEnd, ns, rootEnd string) error {
	if err := run("ip", "link", "add", rootEnd, "type", "veth", "peer", "name", nsEnd, "netns", ns); err != nil {
		return err
	}
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+rootEnd+"/disable_ipv6", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("disable ipv6 on %s: %w", rootEnd, err)
	}
	if err := run("ip", "link", "set", rootEnd, "up"); err != nil {
		return err
	}
	return run("ip", "-n", ns, "link", "set", nsEnd, "up")
}

// NewMark starts a new count: it gives every sink a mark it has not had
// recently (1-255, in turn) and zeroes it. Traffic sent with the returned
// Traffic.Mark counts from now on; frames of earlier marks that a peer
// still delivers are dropped uncounted.
func (l *Lab) NewMark() (byte, error) {
	l.mark = l.mark%255 + 1
	var errs []error
	for _, s := range l.allSinks() {
		errs = append(errs, s.SetMark(l.mark), s.Reset())
	}
	return l.mark, errors.Join(errs...)
}

// Delivered sums the first n sinks' counters.
func (l *Lab) Delivered(n int) (frames, bytes uint64, err error) {
	return delivered(l.Sinks[:n])
}

// delivered sums the counters of sinks.
func delivered(sinks []*Sink) (frames, bytes uint64, err error) {
	for _, s := range sinks {
		f, b, err := s.Count()
		if err != nil {
			return 0, 0, err
		}
		frames += f
		bytes += b
	}
	return frames, bytes, nil
}

// MonitorTxDropped sums the kernel's tx_dropped counters of the monitor
// interfaces and the uplink: copies a peer handed to a monitor link that the link could not
// pass on (a veth drops when its peer's 256-frame ring is full).
func (l *Lab) MonitorTxDropped() (uint64, error) {
	var n uint64
	for _, m := range append(slices.Clip(l.Mons), l.Uplink) {
		b, err := os.ReadFile("/sys/class/net/" + m + "/statistics/tx_dropped")
		if err != nil {
			return 0, err
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("tx_dropped of %s: %w", m, err)
		}
		n += v
	}
	return n, nil
}

// CapNAPI switches the capture interface's NAPI to a kernel thread pinned
// to cpu (threaded NAPI), or back to softirq context when cpu < 0.
func (l *Lab) CapNAPI(cpu int) error {
	on := "0"
	if cpu >= 0 {
		on = "1"
	}
	if err := os.WriteFile("/sys/class/net/"+l.Cap+"/threaded", []byte(on), 0o644); err != nil {
		return fmt.Errorf("threaded napi on %s: %w", l.Cap, err)
	}
	if cpu < 0 {
		return nil
	}
	pids, err := threadsNamed("napi/" + l.Cap + "-")
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return fmt.Errorf("threaded napi on %s: no napi thread found", l.Cap)
	}
	for _, pid := range pids {
		if err := run("taskset", "-pc", strconv.Itoa(cpu), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// threadsNamed lists the pids of kernel threads whose comm starts with
// prefix (comm is cut at 15 bytes).
func threadsNamed(prefix string) ([]int, error) {
	if len(prefix) > 15 {
		prefix = prefix[:15]
	}
	comms, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil {
			continue // the task exited since the glob
		}
		if strings.HasPrefix(string(b), prefix) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(c)))
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Close detaches the sinks and deletes the namespaces, which deletes every
// veth of the lab with them (each pair has one end inside).
func (l *Lab) Close() error {
	var errs []error
	for _, s := range l.allSinks() {
		errs = append(errs, s.Close())
	}
	l.Sinks, l.Collector = nil, nil
	for _, ns := range []string{l.GenNS, l.SinkNS, l.RouterNS, l.CollectorNS} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			errs = append(errs, run("ip", "netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}

// run runs a command and returns an error with its output when it fails.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// stopProcess ends a process this package started: SIGTERM, then SIGKILL
// if it is still there after a second.
func stopProcess(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM) // it may have exited already
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // its exit status after SIGTERM says nothing useful
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
