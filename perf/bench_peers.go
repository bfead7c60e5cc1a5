package perf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/taas-appliance/taas/broker"
)

// Setup is what a peer realises for one scenario: copy every frame whose
// source MAC is PortMAC from the lab's capture interface to its first
// Fanout monitors.
type Setup struct {
	Lab    *Lab
	Fanout int
	// PortMAC is the source port's MAC: frames from it are wanted.
	PortMAC net.HardwareAddr
	// Filter is true when the traffic also holds frames no one wants, so
	// the peer must select on PortMAC (without it a peer may copy all).
	Filter bool
	// ChurnMAC is the MAC of the flow that Churn creates and deletes,
	// copied to monitor 1; nil outside the churn scenario.
	ChurnMAC net.HardwareAddr
	// Tunnel, when not empty, is the encapsulation (a mirror_type) of the
	// copies, sent to Lab.Remote through Lab.Uplink instead of monitors.
	Tunnel string
	// Sources, when not empty, replaces PortMAC: one flow per source port
	// (these MACs), flow i copying to monitor i % Fanout, the first
	// selecting with FlowFilter, a pcap-filter expression ("" for all of
	// its frames). The traffic holds frames of every source (see flows).
	Sources    []net.HardwareAddr
	FlowFilter string
}

// ErrNoChurn is what Churn returns for a peer whose configuration cannot
// change while it runs (restarting it would lose frames by design).
var ErrNoChurn = errors.New("no runtime configuration changes")

// ErrNoTunnel is what a tunnel scenario returns for a peer that does not
// send copies through tunnels.
var ErrNoTunnel = errors.New("no tunnels")

// tunnelPeer is a Peer that can send its copies to the lab's collector
// through a tunnel (Setup.Tunnel).
type tunnelPeer interface {
	Tunnels() bool
}

// Peer is one mirroring implementation under test.
type Peer interface {
	Name() string
	// Layout says where its work runs, for the report.
	Layout() string
	// Start sets it up for s; Stop undoes it.
	Start(ctx context.Context, s Setup) error
	Stop() error
	// Churn changes the configuration (the ChurnMAC flow) as fast as it
	// can until ctx ends, and returns how many changes it made.
	Churn(ctx context.Context) (int, error)
	// Reported returns what the peer itself counts (ok false when it
	// counts nothing).
	Reported(ctx context.Context) (c PeerCounts, ok bool, err error)
}

// CPU placement on this 2-core machine (afxdp-notes.md gotcha 8): the
// generator always runs on genCPU; peers get peerCPU.
const (
	genCPU  = 0
	peerCPU = 1
)

// TC mirrors with kernel tc: clsact ingress filters on the capture interface
// with `mirred egress mirror` actions. In a tunnel scenario the action
// mirrors to a kernel VXLAN device towards the lab's collector (VNI
// BenchTunnelID), what a user without taasd would set up; the kernel has
// no GRE/ERSPAN modules here.
type TC struct {
	s  Setup
	vx string // the VXLAN device, while there is one
}

// Tunnels: VXLAN only.
func (p *TC) Tunnels() bool { return true }

func (p *TC) Name() string { return "tc-mirred" }
func (p *TC) Layout() string {
	return fmt.Sprintf("capture NAPI threaded, pinned to CPU %d (tc runs there); generator on CPU %d", peerCPU, genCPU)
}

func (p *TC) Start(_ context.Context, s Setup) error {
	p.s = s
	// GRO on gives the veth a NAPI context (gotcha 10), which can then be
	// threaded and pinned.
	if err := run("ethtool", "-K", s.Lab.Cap, "gro", "on"); err != nil {
		return err
	}
	if err := s.Lab.CapNAPI(peerCPU); err != nil {
		return err
	}
	if err := run("tc", "qdisc", "add", "dev", s.Lab.Cap, "clsact"); err != nil {
		return err
	}
	if len(s.Sources) > 0 {
		return p.addFlows(s)
	}
	args := []string{"filter", "add", "dev", s.Lab.Cap, "ingress", "prio", "1", "protocol", "all", "u32"}
	if s.selects() {
		args = append(args, u32SrcMAC(s.PortMAC)...)
	} else {
		args = append(args, "match", "u32", "0", "0")
	}
	outs := s.Lab.Mons[:s.Fanout]
	if s.Tunnel != "" {
		if s.Tunnel != "vxlan" {
			return fmt.Errorf("tc-mirred: tunnel %s: %w", s.Tunnel, ErrNoTunnel)
		}
		p.vx = s.Lab.Prefix + "vx"
		if err := run("ip", "link", "add", p.vx, "mtu", strconv.Itoa(TunnelMTU-50), "type", "vxlan", "id",
			strconv.Itoa(BenchTunnelID), "remote", s.Lab.Remote, "local", s.Lab.Local, "dstport", "4789", "dev", s.Lab.Uplink); err != nil {
			return err
		}
		if err := run("ip", "link", "set", p.vx, "up"); err != nil {
			return err
		}
		outs = []string{p.vx}
	}
	for _, m := range outs {
		args = append(args, "action", "mirred", "egress", "mirror", "dev", m)
	}
	return run("tc", args...)
}

// addFlows adds one filter per flow of s, in order: u32 on the source
// MAC, or for a flow with a pcap filter cls_bpf running tcpdump's code
// for the MAC and the filter together (this kernel has no flower; at
// ingress cls_bpf runs classic BPF on the frame from its MAC header).
func (p *TC) addFlows(s Setup) error {
	for i, f := range s.flows() {
		args := []string{"filter", "add", "dev", s.Lab.Cap, "ingress", "prio", strconv.Itoa(i + 1), "protocol", "all"}
		if f.filter == "" {
			args = append(append(args, "u32"), u32SrcMAC(f.src)...)
		} else {
			prog, err := compilePcap(f.pcapExpr())
			if err != nil {
				return err
			}
			args = append(args, "bpf", "bytecode", ddd(prog))
		}
		for _, m := range f.mons {
			args = append(args, "action", "mirred", "egress", "mirror", "dev", s.Lab.Mons[m])
		}
		if err := run("tc", args...); err != nil {
			return err
		}
	}
	return nil
}

// u32SrcMAC matches a source MAC with u32, the classifier this kernel has
// (no flower, no matchall): at ingress offsets are from the network header,
// so the source MAC sits at -8.
func u32SrcMAC(mac net.HardwareAddr) []string {
	hi := fmt.Sprintf("0x%02x%02x%02x%02x", mac[0], mac[1], mac[2], mac[3])
	lo := fmt.Sprintf("0x%02x%02x", mac[4], mac[5])
	return []string{"match", "u32", hi, "0xffffffff", "at", "-8", "match", "u16", lo, "0xffff", "at", "-4"}
}

func (p *TC) Churn(ctx context.Context) (int, error) {
	n := 0
	for ctx.Err() == nil {
		args := append([]string{"filter", "add", "dev", p.s.Lab.Cap, "ingress", "prio", "2", "protocol", "all", "u32"},
			u32SrcMAC(p.s.ChurnMAC)...)
		if err := run("tc", append(args, "action", "mirred", "egress", "mirror", "dev", p.s.Lab.Mons[1])...); err != nil {
			return n, err
		}
		if err := run("tc", "filter", "del", "dev", p.s.Lab.Cap, "ingress", "prio", "2"); err != nil {
			return n, err
		}
		n += 2
	}
	return n, nil
}

func (p *TC) Stop() error {
	// The qdisc is absent when Start failed before adding it.
	_ = run("tc", "qdisc", "del", "dev", p.s.Lab.Cap, "clsact")
	var err error
	if p.vx != "" {
		err = run("ip", "link", "del", p.vx)
		p.vx = ""
	}
	return errors.Join(err, p.s.Lab.CapNAPI(-1))
}

func (p *TC) Reported(context.Context) (PeerCounts, bool, error) { return PeerCounts{}, false, nil }

// procPeer is a userspace mirror run as one process per monitor
// (daemonlogger and netsniff-ng copy one input to one output).
type procPeer struct {
	name string
	// argv returns the command line copying cap to mon, selecting on
	// filter (a pcap expression, "" for none).
	argv  func(cap, mon, filter string) []string
	procs []*exec.Cmd
	logs  []*os.File
	dir   string
}

// Daemonlogger is daemonlogger -i CAP -o MON, one process per monitor.
func Daemonlogger(logDir string) Peer {
	return &procPeer{name: "daemonlogger", dir: logDir, argv: func(cap, mon, filter string) []string {
		a := []string{"taskset", "-c", strconv.Itoa(peerCPU), "daemonlogger", "-i", cap, "-o", mon}
		if filter != "" {
			a = append(a, filter)
		}
		return a
	}}
}

// NetsniffNG is netsniff-ng --in CAP --out MON -S 64MiB (gotcha 15), one
// process per monitor.
func NetsniffNG(logDir string) Peer {
	return &procPeer{name: "netsniff-ng", dir: logDir, argv: func(cap, mon, filter string) []string {
		a := []string{"netsniff-ng", "--in", cap, "--out", mon, "-S", "64MiB", "--silent", "--bind-cpu", strconv.Itoa(peerCPU)}
		if filter != "" {
			a = append(a, "--filter", filter)
		}
		return a
	}}
}

func (p *procPeer) Name() string { return p.name }
func (p *procPeer) Layout() string {
	return fmt.Sprintf("process(es) pinned to CPU %d; capture NAPI in softirq on the generator's CPU %d", peerCPU, genCPU)
}

func (p *procPeer) Start(_ context.Context, s Setup) error {
	if err := run("ethtool", "-K", s.Lab.Cap, "gro", "on"); err != nil {
		return err
	}
	for i, m := range s.Lab.Mons[:s.Fanout] {
		filter := ""
		if s.selects() {
			filter = monitorExpr(s.flows(), i)
		}
		argv := p.argv(s.Lab.Cap, m, filter)
		log, err := os.Create(filepath.Join(p.dir, fmt.Sprintf("%s-%d.log", p.name, i)))
		if err != nil {
			return err
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			log.Close()
			return fmt.Errorf("start %s: %w", p.name, err)
		}
		p.procs = append(p.procs, cmd)
		p.logs = append(p.logs, log)
	}
	return nil
}

func (p *procPeer) Churn(context.Context) (int, error) { return 0, ErrNoChurn }

func (p *procPeer) Stop() error {
	for _, c := range p.procs {
		stopProcess(c)
	}
	var errs []error
	for _, l := range p.logs {
		errs = append(errs, l.Close())
	}
	p.procs, p.logs = nil, nil
	return errors.Join(errs...)
}

func (p *procPeer) Reported(context.Context) (PeerCounts, bool, error) {
	return PeerCounts{}, false, nil
}

// Taasd is the appliance: taasd --dataplane xdp, configured through its API
// (ports bound to the lab's interfaces, a tap service per monitor, one tap
// flow per service from the capture port, direction OUT).
type Taasd struct {
	Bin string // taasd binary
	Dir string // scratch directory for its database, config and log
	// BusyPoll and BatchSize tune its workers ([broker] in its config).
	BusyPoll  bool
	BatchSize int
	// RxRing is the capture sockets' fill/RX ring size (0: taasd's default).
	RxRing int
	// AFXDP turns the in-kernel fast path off ([broker] fast_path = false):
	// every frame then goes through the AF_XDP workers. The peer is named
	// "taasd-afxdp", so both paths can be measured in one run.
	AFXDP bool

	cmd      *exec.Cmd
	log      *os.File
	api      API
	s        Setup
	svcs     []string
	churnSvc string
	churnSrc string
}

func (p *Taasd) Name() string {
	if p.AFXDP {
		return "taasd-afxdp"
	}
	return "taasd"
}
func (p *Taasd) Layout() string {
	mode := "poll(2)"
	if p.busyPoll() {
		mode = "busy poll"
	}
	ring := "default"
	if p.RxRing != 0 {
		ring = fmt.Sprint(p.RxRing)
	}
	workers := fmt.Sprintf("workers pinned to CPU %d (%s, capture rx ring %s)", peerCPU, mode, ring)
	if p.AFXDP {
		return fmt.Sprintf("AF_XDP path only: %s; capture NAPI + XDP in softirq on the generator's CPU %d", workers, genCPU)
	}
	return fmt.Sprintf("in-kernel fast path: capture NAPI + XDP (which decides and redirects the copies) in softirq on the generator's CPU %d, paced traffic in 1 ms bursts; %s, idle", genCPU, workers)
}

// PacedBurst: on the fast path the capture's XDP program runs in the
// generator's own softirq and drains the veth ring before the next frames
// come, so paced traffic may come in large bursts, which lets the
// generator pace at the rates this path reaches (burstPeer).
func (p *Taasd) PacedBurst() uint64 {
	if p.AFXDP {
		return 0
	}
	return 4096
}

// busyPoll is BusyPoll where workers have frames to spin for: on the fast
// path they get none, and a spinning worker would only take CPU 1 from
// the monitors' and taasd's other work (afxdp-notes.md gotcha 8).
func (p *Taasd) busyPoll() bool { return p.BusyPoll && p.AFXDP }

func (p *Taasd) Start(ctx context.Context, s Setup) error {
	p.s, p.svcs = s, nil
	dir, err := os.MkdirTemp(p.Dir, "taasd-")
	if err != nil {
		return err
	}
	conf := fmt.Sprintf("[broker]\ncpus = [%d]\nbusy_poll = %v\nbatch_size = %d\nrx_ring_size = %d\nfast_path = %v\n\n"+
		"[[interfaces]]\nname = %q\nrole = \"capture\"\nunmatched = \"drop\"\n\n[[interfaces]]\nname = %q\nrole = \"uplink\"\n",
		peerCPU, p.busyPoll(), p.BatchSize, p.RxRing, !p.AFXDP, s.Lab.Cap, s.Lab.Uplink)
	for _, m := range s.Lab.Mons {
		conf += fmt.Sprintf("\n[[interfaces]]\nname = %q\nrole = \"monitor\"\n", m)
	}
	cfgPath := filepath.Join(dir, "taasd.toml")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		return err
	}
	p.cmd, p.log, p.api, err = startTaasd(ctx, p.Bin, dir, "--config", cfgPath, "--dataplane", "xdp", "--log-level", "warn")
	if err != nil {
		return err
	}
	src, err := p.api.CreatePort(ctx, "bench-src", s.PortMAC.String(), s.Lab.Cap)
	if err != nil {
		return err
	}
	if s.Tunnel != "" {
		// A tap mirror of the port's OUT frames; warmUp sees its copies
		// arrive (taas/stats shows no mirror status).
		if _, err := p.api.CreateMirror(ctx, "bench-mirror", src, s.Tunnel, s.Lab.Remote, BenchTunnelID); err != nil {
			return err
		}
		return p.checkPath(ctx)
	}
	svcs := make([]string, max(s.Fanout, 2))
	for i, m := range s.Lab.Mons[:len(svcs)] {
		port, err := p.api.CreatePort(ctx, "bench-mon"+strconv.Itoa(i), "", m)
		if err != nil {
			return err
		}
		if svcs[i], err = p.api.CreateService(ctx, "bench-svc"+strconv.Itoa(i), port); err != nil {
			return err
		}
	}
	p.svcs = svcs
	if s.Fanout < len(svcs) {
		p.churnSvc = svcs[s.Fanout]
	}
	for i, f := range s.flows() {
		port := src
		if i > 0 {
			if port, err = p.api.CreatePort(ctx, "bench-src"+strconv.Itoa(i), f.src.String(), s.Lab.Cap); err != nil {
				return err
			}
		}
		for _, m := range f.mons {
			if _, err := p.api.CreateFlow(ctx, fmt.Sprintf("bench-flow%d-%d", i, m), port, svcs[m], "OUT", f.filter); err != nil {
				return err
			}
		}
	}
	if s.ChurnMAC != nil {
		if p.churnSrc, err = p.api.CreatePort(ctx, "bench-churn", s.ChurnMAC.String(), s.Lab.Cap); err != nil {
			return err
		}
	}
	if err := p.api.WaitFlowsActive(ctx, 15*time.Second); err != nil {
		return err
	}
	return p.checkPath(ctx)
}

// checkPath makes sure the capture is on the path the peer's name says,
// or says why not. It waits up to 15 s for the capture to be attached on
// that path: a mirror has no status to wait for, and its first plan may
// find the next hop unresolved.
func (p *Taasd) checkPath(ctx context.Context) error {
	s := p.s
	want := broker.PathFast
	if p.AFXDP {
		want = broker.PathAFXDP
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		path, why, err := p.api.CapturePath(ctx, s.Lab.Cap)
		if err == nil && path == want {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return err
			}
			return fmt.Errorf("%s: capture %s is on the %q path, not %q: %s", p.Name(), s.Lab.Cap, path, want, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Tunnels: every mirror_type, both paths.
func (p *Taasd) Tunnels() bool { return true }

func (p *Taasd) Churn(ctx context.Context) (int, error) {
	n := 0
	for ctx.Err() == nil {
		id, err := p.api.CreateFlow(context.Background(), "churn", p.churnSrc, p.churnSvc, "OUT", "")
		if err != nil {
			return n, err
		}
		if err := p.api.DeleteFlow(context.Background(), id); err != nil {
			return n, err
		}
		n += 2
	}
	return n, nil
}

// StartLive starts a live capture of the first tap service for d
// (livePeer).
func (p *Taasd) StartLive(ctx context.Context, d time.Duration) (*LiveCapture, error) {
	if len(p.svcs) == 0 {
		return nil, fmt.Errorf("%s: no tap service to capture: %w", p.Name(), ErrNoLive)
	}
	return p.api.StartLive(ctx, p.svcs[0], d)
}

func (p *Taasd) Reported(ctx context.Context) (PeerCounts, bool, error) {
	c, err := p.api.Counts(ctx)
	return c, err == nil, err
}

func (p *Taasd) Stop() error {
	stopProcess(p.cmd)
	p.cmd = nil
	if p.log == nil {
		return nil
	}
	err := p.log.Close()
	p.log = nil
	return err
}
