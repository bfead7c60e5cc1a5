package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/xdpprog"
)

// version is taasd's version, set at build time by the Makefile:
// -ldflags "-X main.version=$(git describe --tags --always --dirty)".
var version = "dev"

// verdict is the outcome of one preflight check.
type verdict uint8

const (
	pass verdict = iota
	warn
	fail
)

func (v verdict) String() string {
	switch v {
	case pass:
		return "PASS"
	case warn:
		return "WARN"
	default:
		return "FAIL"
	}
}

// checkResult is one line of `taasd check`: what was checked, what was
// found, and, unless it passed, what to do about it.
type checkResult struct {
	Name    string
	Verdict verdict
	Detail  string
	Fix     string
}

// checkEnv is where the preflight reads the machine; tests point it at
// files of their own.
type checkEnv struct {
	// ProcStatus is /proc/self/status (CapEff).
	ProcStatus string
	// JITEnable is /proc/sys/net/core/bpf_jit_enable.
	JITEnable string
	// OSRelease is /proc/sys/kernel/osrelease.
	OSRelease string
}

var hostEnv = checkEnv{
	ProcStatus: "/proc/self/status",
	JITEnable:  "/proc/sys/net/core/bpf_jit_enable",
	OSRelease:  "/proc/sys/kernel/osrelease",
}

// runCheck is `taasd check [--config FILE]`: it prints one line per check
// and returns the exit code: 0 when nothing failed, 1 when something did,
// 2 when the command line or the configuration file is wrong.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("taasd check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration `file` whose interfaces to check")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: taasd check [--config FILE]")
		fmt.Fprintln(stderr, "Checks that this machine and these privileges can run taasd's data plane.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "taasd check: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var fc *fileConfig
	if *configPath != "" {
		var err error
		if fc, err = loadConfigFile(*configPath); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
	}
	results := preflight(hostEnv, fc)
	fmt.Fprintf(stdout, "taasd %s preflight\n", version)
	printResults(stdout, results)
	for _, r := range results {
		if r.Verdict == fail {
			return 1
		}
	}
	return 0
}

// printResults writes one aligned line per result, the fix indented below
// it, and a summary.
func printResults(w io.Writer, results []checkResult) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	var n [3]int
	for _, r := range results {
		n[r.Verdict]++
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Verdict, r.Name, r.Detail)
		if r.Fix != "" && r.Verdict != pass {
			fmt.Fprintf(tw, "\t\tfix: %s\n", r.Fix)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "%d passed, %d warnings, %d failed\n", n[pass], n[warn], n[fail])
}

// preflight runs every check: the kernel, the BPF JIT, AF_XDP sockets, the
// XDP program under the verifier, capabilities, locked memory, and each
// interface, the authentication and the database of fc (nil: no
// configuration file).
func preflight(env checkEnv, fc *fileConfig) []checkResult {
	var rs []checkResult
	rs = append(rs, checkKernel(env.OSRelease))
	rs = append(rs, checkJIT(env.JITEnable))
	rs = append(rs, checkAFXDP())
	rs = append(rs, checkXDPLoad())
	caps, capErr := readCapEff(env.ProcStatus)
	rs = append(rs, checkCaps(caps, capErr)...)
	rs = append(rs, checkMemlock(caps.has(capIPCLock), fc))
	rs = append(rs, checkInterfaces(fc)...)
	rs = append(rs, checkAuth(fc)...)
	rs = append(rs, checkDB(fc)...)
	rs = append(rs, checkNode(fc)...)
	return rs
}

// kernelVersion parses "6.18.44-fc-v669" into 6, 18.
func kernelVersion(release string) (major, minor int, ok bool) {
	f := strings.FieldsFunc(release, func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(f[0])
	minor, err2 := strconv.Atoi(f[1])
	return major, minor, err1 == nil && err2 == nil
}

// checkKernel: AF_XDP with need_wakeup needs Linux 5.4; the copy-mode TX
// budget (afxdp-notes gotcha 3) 6.17.
func checkKernel(osrelease string) checkResult {
	r := checkResult{Name: "kernel"}
	b, err := os.ReadFile(osrelease)
	if err != nil {
		r.Verdict, r.Detail = warn, fmt.Sprintf("cannot read the kernel version: %v", err)
		return r
	}
	rel := strings.TrimSpace(string(b))
	major, minor, ok := kernelVersion(rel)
	at := func(ma, mi int) bool { return major > ma || major == ma && minor >= mi }
	switch {
	case !ok:
		r.Verdict, r.Detail = warn, fmt.Sprintf("Linux %s: cannot parse the version", rel)
	case !at(5, 4):
		r.Verdict, r.Detail = fail, fmt.Sprintf("Linux %s: AF_XDP with need_wakeup needs 5.4 or later", rel)
		r.Fix = "install a newer kernel (Debian 12's 6.1 works)"
	case !at(6, 17):
		r.Verdict, r.Detail = warn, fmt.Sprintf("Linux %s: copy-mode TX sends 32 frames per kick before 6.17 (XDP_MAX_TX_SKB_BUDGET)", rel)
		r.Fix = "works as is, with a lower copy rate; Linux 6.17 or later lifts the limit"
	default:
		r.Verdict, r.Detail = pass, fmt.Sprintf("Linux %s", rel)
	}
	return r
}

// checkJIT: without the JIT the XDP program is interpreted, several times
// slower per frame.
func checkJIT(path string) checkResult {
	r := checkResult{Name: "bpf jit"}
	b, err := os.ReadFile(path)
	if err != nil {
		r.Verdict, r.Detail = warn, fmt.Sprintf("cannot read %s: %v", path, err)
		r.Fix = "a kernel without CONFIG_BPF_JIT interprets the XDP program: slower, but it works"
		return r
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "1":
		r.Verdict, r.Detail = pass, "enabled"
	case "2":
		r.Verdict, r.Detail = warn, "enabled with debug output (bpf_jit_enable=2)"
		r.Fix = "sysctl -w net.core.bpf_jit_enable=1"
	case "0":
		r.Verdict, r.Detail = warn, "disabled: the XDP program runs interpreted"
		r.Fix = "sysctl -w net.core.bpf_jit_enable=1 (and net.core.bpf_jit_enable = 1 in /etc/sysctl.d/)"
	default:
		r.Verdict, r.Detail = warn, fmt.Sprintf("unexpected bpf_jit_enable %q", v)
	}
	return r
}

// checkAFXDP opens (and closes) an AF_XDP socket.
func checkAFXDP() checkResult {
	r := checkResult{Name: "af_xdp sockets"}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	switch {
	case err == nil:
		unix.Close(fd)
		r.Verdict, r.Detail = pass, "socket(AF_XDP) works"
	case errors.Is(err, unix.EAFNOSUPPORT):
		r.Verdict, r.Detail = fail, "socket(AF_XDP): the kernel has no XDP sockets"
		r.Fix = "use a kernel built with CONFIG_XDP_SOCKETS=y (Debian's is)"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		r.Verdict, r.Detail = fail, fmt.Sprintf("socket(AF_XDP): %v", err)
		r.Fix = "run with CAP_NET_RAW (the systemd unit grants it); under systemd, RestrictAddressFamilies must list AF_XDP"
	default:
		r.Verdict, r.Detail = fail, fmt.Sprintf("socket(AF_XDP): %v", err)
	}
	return r
}

// checkXDPLoad loads taasd's XDP program and its maps, which puts them
// through the verifier with this process's privileges, and unloads them.
// It attaches to nothing.
func checkXDPLoad() checkResult {
	r := checkResult{Name: "xdp program"}
	c, err := xdpprog.Load(xdpprog.Config{})
	if err != nil {
		r.Verdict, r.Detail = fail, fmt.Sprintf("load: %v", err)
		r.Fix = "run as root or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (the systemd unit grants them)"
		if errors.Is(err, unix.ENOMEM) || strings.Contains(err.Error(), "memlock") {
			r.Fix = "raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity, ulimit -l unlimited) or grant CAP_IPC_LOCK"
		}
		return r
	}
	if err := c.Close(); err != nil {
		r.Verdict, r.Detail = warn, fmt.Sprintf("loaded, but unloading failed: %v", err)
		return r
	}
	r.Verdict, r.Detail = pass, "loads and passes the verifier"
	return r
}

// Capability numbers (linux/capability.h).
const (
	capNetAdmin = 12
	capNetRaw   = 13
	capIPCLock  = 14
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// capSet is a capability bitmask as /proc/<pid>/status prints it.
type capSet uint64

func (c capSet) has(n uint) bool { return c&(1<<n) != 0 }

// readCapEff reads the effective capabilities from a /proc/<pid>/status
// file.
func readCapEff(path string) (capSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseCapEff(f)
}

// parseCapEff finds the CapEff line of a /proc/<pid>/status text.
func parseCapEff(r io.Reader) (capSet, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
		}
		return capSet(n), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no CapEff line")
}

// checkCaps reports each capability the data plane uses.
func checkCaps(caps capSet, err error) []checkResult {
	if err != nil {
		return []checkResult{{Name: "capabilities", Verdict: warn,
			Detail: fmt.Sprintf("cannot read them: %v", err)}}
	}
	sysAdmin := caps.has(capSysAdmin)
	type need struct {
		name    string
		n       uint
		missing verdict
		why     string
	}
	var rs []checkResult
	for _, c := range []need{
		{"CAP_NET_ADMIN", capNetAdmin, fail, "attach XDP programs to interfaces"},
		{"CAP_BPF", capBPF, fail, "load the XDP program and its maps"},
		{"CAP_NET_RAW", capNetRaw, fail, "open AF_XDP sockets"},
		{"CAP_IPC_LOCK", capIPCLock, warn, "keep UMEM out of RLIMIT_MEMLOCK"},
		// Measured: without it the verifier rejects the XDP program
		// ("pointer arithmetic with it prohibited for !root").
		{"CAP_PERFMON", capPerfmon, fail, "have the verifier accept the XDP program's pointer arithmetic"},
	} {
		r := checkResult{Name: "capability " + c.name}
		switch {
		case caps.has(c.n):
			r.Verdict, r.Detail = pass, "to "+c.why
		case sysAdmin && (c.n == capBPF || c.n == capPerfmon):
			r.Verdict, r.Detail = pass, "CAP_SYS_ADMIN covers it: to "+c.why
		default:
			r.Verdict, r.Detail = c.missing, "missing: needed to "+c.why
			r.Fix = "run as root, or grant it (the systemd unit's AmbientCapabilities does)"
		}
		rs = append(rs, r)
	}
	return rs
}

// checkMemlock: UMEM is charged to RLIMIT_MEMLOCK unless the process has
// CAP_IPC_LOCK (gotcha 7). Each capture RX queue and each monitor and
// uplink has a socket with its own UMEM, sized by the broker
// (broker.Config.Memory); without interfaces, one capture queue and one
// monitor, the least a tap flow needs.
func checkMemlock(ipcLock bool, fc *fileConfig) checkResult {
	r := checkResult{Name: "locked memory"}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		r.Verdict, r.Detail = warn, fmt.Sprintf("getrlimit(RLIMIT_MEMLOCK): %v", err)
		return r
	}
	bc, _ := fc.brokerConfig()
	mem := bc.Memory()
	captures, outputs := 1, 1
	if fc != nil && len(fc.Interfaces) > 0 {
		captures, outputs = 0, 0
		for _, ifc := range fc.Interfaces {
			if ifc.Role == roleCapture {
				captures += bc.CaptureQueues(ifc.Name, queuesOf(ifc.Name, ifc.Role))
			} else {
				outputs++
			}
		}
	}
	need := uint64(mem.Locked(captures, outputs))
	var parts []string
	if captures > 0 {
		parts = append(parts, fmt.Sprintf("%d capture socket(s) of %s", captures, mib(uint64(mem.CaptureSocket))))
	}
	if outputs > 0 {
		parts = append(parts, fmt.Sprintf("%d monitor/uplink socket(s) of %s", outputs, mib(uint64(mem.OutputSocket))))
	}
	umem := fmt.Sprintf("%s of UMEM for %s", mib(need), strings.Join(parts, " and "))
	switch {
	case lim.Cur == unix.RLIM_INFINITY:
		r.Verdict, r.Detail = pass, "RLIMIT_MEMLOCK unlimited covers "+umem
	case ipcLock:
		r.Verdict, r.Detail = pass, fmt.Sprintf("RLIMIT_MEMLOCK %s, but CAP_IPC_LOCK lifts it for %s", mib(lim.Cur), umem)
	case lim.Cur < need:
		r.Verdict = fail
		r.Detail = fmt.Sprintf("RLIMIT_MEMLOCK %s < %s", mib(lim.Cur), umem)
		r.Fix = "LimitMEMLOCK=infinity in the unit, ulimit -l unlimited in a shell, or grant CAP_IPC_LOCK"
	default:
		r.Verdict, r.Detail = pass, fmt.Sprintf("RLIMIT_MEMLOCK %s covers %s", mib(lim.Cur), umem)
	}
	if lim.Cur != unix.RLIM_INFINITY && !ipcLock && bc.FastPath {
		r.Detail += fmt.Sprintf("; a live capture on the fast path locks %s a CPU more", mib(uint64(mem.LivePerCPU)))
	}
	return r
}

// mib prints n bytes in MiB, or KiB when that is not a whole number.
func mib(n uint64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// queuesOf is the RX (capture) or TX (monitor, uplink) queue count of a
// netdev, 0 when it cannot be read.
func queuesOf(name, role string) int {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0
	}
	if role != roleCapture {
		return l.Attrs().NumTxQueues
	}
	return l.Attrs().NumRxQueues
}

// checkInterfaces reports each interface of fc: exists, up, queues,
// promiscuous (capture), an XDP program already attached (capture), MTU.
func checkInterfaces(fc *fileConfig) []checkResult {
	if fc == nil || len(fc.Interfaces) == 0 {
		return []checkResult{{Name: "interfaces", Verdict: warn,
			Detail: "none configured: nothing to capture or deliver to",
			Fix:    "list capture and monitor NICs under [[interfaces]] and run taasd check --config FILE"}}
	}
	var captures []string
	for _, ifc := range fc.Interfaces {
		if ifc.Role == roleCapture {
			captures = append(captures, ifc.Name)
		}
	}
	bc, _ := fc.brokerConfig()
	var rs []checkResult
	for _, ifc := range fc.Interfaces {
		rs = append(rs, checkInterface(ifc, bc, captures))
	}
	return rs
}

// checkInterface checks one interface; bc is the broker's configuration,
// whose UMEM chunk bounds the frames a capture interface can deliver; a
// monitor or an uplink is checked for loops with captures.
func checkInterface(ifc ifaceFile, bc broker.Config, captures []string) checkResult {
	r := checkResult{Name: fmt.Sprintf("%s %s", ifc.Role, ifc.Name)}
	l, err := netlink.LinkByName(ifc.Name)
	if err != nil {
		r.Verdict, r.Detail = fail, fmt.Sprintf("does not exist (%v)", err)
		r.Fix = "check the name with ip -br link; taasd reports its flows DOWN until it appears"
		return r
	}
	a := l.Attrs()
	var notes, fixes []string
	r.Verdict = pass
	worse := func(v verdict, note, fix string) {
		r.Verdict = max(r.Verdict, v)
		notes = append(notes, note)
		if fix != "" {
			fixes = append(fixes, fix)
		}
	}
	if a.Flags&unix.IFF_UP == 0 || a.OperState == netlink.OperDown {
		worse(warn, fmt.Sprintf("down (%s)", a.OperState), fmt.Sprintf("ip link set dev %s up; its flows stay DOWN until it is", ifc.Name))
	} else {
		notes = append(notes, "up")
	}
	switch ifc.Role {
	case roleCapture:
		if ifc.Queues > a.NumRxQueues {
			worse(fail, fmt.Sprintf("queues = %d but it has %d RX queues", ifc.Queues, a.NumRxQueues),
				fmt.Sprintf("set queues to at most %d, or 0 for all", a.NumRxQueues))
		} else {
			notes = append(notes, fmt.Sprintf("%d RX queues", a.NumRxQueues))
		}
		if q := bc.CaptureQueues(ifc.Name, a.NumRxQueues); q > broker.MaxQueues {
			worse(fail, fmt.Sprintf("%d queues to capture, more than %d", q, broker.MaxQueues), fmt.Sprintf("set queues to %d or fewer", broker.MaxQueues))
		}
		switch {
		case a.Promisc != 0:
			notes = append(notes, "promiscuous")
		case l.Type() == "veth":
			notes = append(notes, "veth (no MAC filter: promiscuous not needed)")
		default:
			worse(warn, "not promiscuous: the NIC may drop the SPAN feed's foreign unicast",
				fmt.Sprintf("ip link set dev %s promisc on", ifc.Name))
		}
		if a.Xdp != nil && a.Xdp.Attached {
			worse(warn, fmt.Sprintf("an XDP program (id %d) is attached", a.Xdp.ProgId),
				fmt.Sprintf("if taasd is not running, find its owner (bpftool net) or detach it: ip link set dev %s xdp off", ifc.Name))
		}
	case roleMonitor, roleUplink: // copies go out of either
		notes = append(notes, fmt.Sprintf("%d TX queues", a.NumTxQueues))
		for _, c := range captures {
			why, err := broker.FeedsBack(ifc.Name, c)
			if err != nil {
				why = err.Error()
			}
			if why != "" {
				worse(fail, "feeds a capture back: "+why+"; taasd refuses to send copies out of it",
					fmt.Sprintf("use a monitor NIC that does not lead back into %s", c))
			}
		}
	}
	// A frame is the MTU plus an Ethernet header and two VLAN tags.
	if maxRxFrame := bc.MaxFrame(); a.MTU+14+8 > maxRxFrame && ifc.Role == roleCapture {
		worse(warn, fmt.Sprintf("MTU %d: frames over %d bytes do not fit a UMEM chunk and are counted oversize", a.MTU, maxRxFrame),
			"set frame_size = 4096 under [broker]")
	}
	r.Detail = strings.Join(notes, ", ")
	r.Fix = strings.Join(fixes, "; ")
	return r
}
