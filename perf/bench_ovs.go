package perf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// OVS is Open vSwitch with its userspace datapath (datapath_type=netdev:
// this kernel has no openvswitch module), what upstream TaaS's own driver
// programs. Start runs an ovsdb-server and an ovs-vswitchd of the peer's
// own (database, sockets, pid files and logs in a fresh directory under
// Dir; a system instance, if any, is never touched), pinned to CPU 1,
// and makes a bridge with the capture and the monitors as ports. Plain
// mirroring is an OVS mirror per monitor (select_src_port the capture,
// output_port the monitor) with a flow table that drops everything else;
// selective scenarios are OpenFlow flows on the source MAC (a mirror
// selects by port and VLAN only), and a flow filter is expressed as
// OpenFlow matches where ovsFilters knows it. Stop deletes the bridge
// and stops both daemons by pid.
type OVS struct {
	Dir string // scratch directory
	// AFXDP opens the lab's interfaces as type=afxdp ports (native XDP,
	// copy mode on veth) polled by a PMD thread on CPU 1, instead of
	// AF_PACKET netdevs polled by ovs-vswitchd's main thread. The peer is
	// then named "ovs-afxdp".
	AFXDP bool

	s      Setup
	dir    string
	br     string
	procs  []*exec.Cmd
	logs   []*os.File
	ofport map[string]string // OpenFlow port number by interface
}

// ovsFilters are the pcap-filter expressions OVS can express, as OpenFlow
// matches (one flow each, any of which accepts the frame). OpenFlow has
// no general expression language: anything else is ErrNoFilter.
var ovsFilters = map[string][]string{
	"tcp port 443": {"tcp,tp_dst=443", "tcp,tp_src=443", "tcp6,tp_dst=443", "tcp6,tp_src=443"},
}

func (p *OVS) Name() string {
	if p.AFXDP {
		return "ovs-afxdp"
	}
	return "ovs"
}

func (p *OVS) Layout() string {
	if p.AFXDP {
		return fmt.Sprintf("ovs-vswitchd, userspace datapath, afxdp ports (native XDP, copy mode): PMD thread and the rest pinned to CPU %d; capture NAPI + XDP in softirq on the generator's CPU %d", peerCPU, genCPU)
	}
	return fmt.Sprintf("ovs-vswitchd, userspace datapath, AF_PACKET ports polled by its main thread, pinned to CPU %d; capture NAPI in softirq on the generator's CPU %d", peerCPU, genCPU)
}

// Tunnels: none here (the userspace datapath's tunnels need OVS's own
// routing and ARP set up; not measured).
func (p *OVS) Tunnels() bool { return false }

func (p *OVS) Start(ctx context.Context, s Setup) (err error) {
	p.s, p.br = s, s.Lab.Prefix+"ovs"
	for _, f := range s.flows() {
		if _, ok := ovsFilters[f.filter]; f.filter != "" && !ok {
			return fmt.Errorf("ovs: %q: %w", f.filter, ErrNoFilter)
		}
	}
	// An AF_PACKET port reads the capture after its NAPI, which a veth
	// only has with GRO on or an XDP program (gotcha 10).
	if err := run("ethtool", "-K", s.Lab.Cap, "gro", "on"); err != nil {
		return err
	}
	if p.dir, err = os.MkdirTemp(p.Dir, "ovs-"); err != nil {
		return err
	}
	db := filepath.Join(p.dir, "conf.db")
	if err := run("ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema"); err != nil {
		return err
	}
	if err := p.daemon("ovsdb-server", db, "--remote=punix:"+p.sock()); err != nil {
		return err
	}
	if err := p.waitDB(ctx); err != nil {
		return err
	}
	mask := fmt.Sprintf("other_config:pmd-cpu-mask=%#x", 1<<peerCPU)
	if err := p.vsctl("--no-wait", "set", "Open_vSwitch", ".", mask); err != nil {
		return err
	}
	if err := p.daemon("ovs-vswitchd", "unix:"+p.sock()); err != nil {
		return err
	}
	args := []string{"add-br", p.br, "--", "set", "bridge", p.br, "datapath_type=netdev", "fail_mode=secure"}
	// Monitor 1 too for the churn flow.
	ifaces := append([]string{s.Lab.Cap}, s.Lab.Mons[:min(len(s.Lab.Mons), max(s.Fanout, 2))]...)
	for _, ifc := range ifaces {
		args = append(args, "--", "add-port", p.br, ifc)
		if p.AFXDP {
			args = append(args, "--", "set", "interface", ifc, "type=afxdp", "options:xdp-mode=native", "options:n_rxq=1")
		}
	}
	if err := p.vsctl(args...); err != nil {
		return err
	}
	p.ofport = map[string]string{}
	for _, ifc := range ifaces {
		out, err := p.vsctlOut("get", "interface", ifc, "ofport", "error")
		if err != nil {
			return err
		}
		f := strings.SplitN(out, "\n", 2)
		if len(f) == 2 && strings.TrimSpace(f[1]) != "[]" {
			return fmt.Errorf("ovs: port %s: %s", ifc, strings.TrimSpace(f[1]))
		}
		if n, err := strconv.Atoi(strings.TrimSpace(f[0])); err != nil || n <= 0 {
			return fmt.Errorf("ovs: port %s: ofport %q", ifc, f[0])
		}
		p.ofport[ifc] = strings.TrimSpace(f[0])
	}
	if err := p.ofctl("del-flows", p.br); err != nil {
		return err
	}
	if err := p.ofctl("add-flow", p.br, "priority=0,actions=drop"); err != nil {
		return err
	}
	if s.selects() {
		for _, f := range s.flows() {
			if err := p.addFlow(f, 10); err != nil {
				return err
			}
		}
		return nil
	}
	// Plain mirroring: an OVS mirror per monitor.
	args = []string{"--", "--id=@c", "get", "port", s.Lab.Cap}
	var ids []string
	for i, m := range s.Lab.Mons[:s.Fanout] {
		id := "@m" + strconv.Itoa(i)
		args = append(args, "--", "--id=@o"+strconv.Itoa(i), "get", "port", m,
			"--", "--id="+id, "create", "mirror", "name=bench"+strconv.Itoa(i), "select_src_port=@c", "output_port=@o"+strconv.Itoa(i))
		ids = append(ids, id)
	}
	args = append(args, "--", "set", "bridge", p.br, "mirrors=["+strings.Join(ids, ",")+"]")
	return p.vsctl(args...)
}

// addFlow adds f as OpenFlow flows at priority prio: with a filter, one
// flow per OpenFlow match of it above a drop for the rest of the source.
func (p *OVS) addFlow(f setupFlow, prio int) error {
	var out []string
	for _, m := range f.mons {
		out = append(out, "output:"+p.ofport[p.s.Lab.Mons[m]])
	}
	base := fmt.Sprintf("in_port=%s,dl_src=%s", p.ofport[p.s.Lab.Cap], f.src)
	actions := "actions=" + strings.Join(out, ",")
	if f.filter == "" {
		return p.ofctl("add-flow", p.br, fmt.Sprintf("priority=%d,%s,%s", prio, base, actions))
	}
	for _, m := range ovsFilters[f.filter] {
		if err := p.ofctl("add-flow", p.br, fmt.Sprintf("priority=%d,%s,%s,%s", prio+1, base, m, actions)); err != nil {
			return err
		}
	}
	return p.ofctl("add-flow", p.br, fmt.Sprintf("priority=%d,%s,actions=drop", prio, base))
}

// Churn adds and deletes the churn flow (to monitor 1) with ovs-ofctl.
func (p *OVS) Churn(ctx context.Context) (int, error) {
	if p.s.ChurnMAC == nil {
		return 0, nil // the probe before Start (runScenario)
	}
	n := 0
	match := fmt.Sprintf("priority=10,in_port=%s,dl_src=%s", p.ofport[p.s.Lab.Cap], p.s.ChurnMAC)
	for ctx.Err() == nil {
		if err := p.ofctl("add-flow", p.br, match+",actions=output:"+p.ofport[p.s.Lab.Mons[1]]); err != nil {
			return n, err
		}
		if err := p.ofctl("--strict", "del-flows", p.br, match); err != nil {
			return n, err
		}
		n += 2
	}
	return n, nil
}

func (p *OVS) Reported(context.Context) (PeerCounts, bool, error) { return PeerCounts{}, false, nil }

func (p *OVS) Stop() error {
	var errs []error
	if len(p.procs) == 2 {
		// Deleting the bridge closes the ports cleanly (an afxdp port
		// detaches its XDP program) while ovs-vswitchd still runs.
		errs = append(errs, p.vsctl("--if-exists", "del-br", p.br))
	}
	for i := len(p.procs) - 1; i >= 0; i-- {
		stopProcess(p.procs[i])
	}
	for _, l := range p.logs {
		errs = append(errs, l.Close())
	}
	p.procs, p.logs = nil, nil
	if p.AFXDP && p.s.Lab != nil {
		// Whatever an interrupted ovs-vswitchd left on the lab's own
		// interfaces (a no-op when nothing is attached).
		for _, ifc := range append([]string{p.s.Lab.Cap}, p.s.Lab.Mons...) {
			errs = append(errs, run("ip", "link", "set", "dev", ifc, "xdp", "off"))
		}
	}
	return errors.Join(errs...)
}

func (p *OVS) sock() string { return filepath.Join(p.dir, "db.sock") }

// daemon starts an OVS daemon in the foreground, pinned to CPU 1, with
// every file it makes in the peer's directory.
func (p *OVS) daemon(name string, args ...string) error {
	log, err := os.Create(filepath.Join(p.dir, name+".out"))
	if err != nil {
		return err
	}
	argv := append([]string{"-c", strconv.Itoa(peerCPU), name}, args...)
	argv = append(argv, "--no-chdir", "--pidfile="+filepath.Join(p.dir, name+".pid"),
		"--unixctl="+filepath.Join(p.dir, name+".ctl"), "--log-file="+filepath.Join(p.dir, name+".log"))
	cmd := exec.Command("taskset", argv...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = p.env()
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p.procs = append(p.procs, cmd)
	p.logs = append(p.logs, log)
	return nil
}

// env points every OVS directory at the peer's own.
func (p *OVS) env() []string {
	env := os.Environ()
	for _, k := range []string{"OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"} {
		env = append(env, k+"="+p.dir)
	}
	return env
}

// waitDB waits up to 10 s for ovsdb-server to answer, then initialises
// the database.
func (p *OVS) waitDB(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := p.vsctl("--no-wait", "init")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("ovsdb-server not up after 10 s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *OVS) vsctl(args ...string) error {
	_, err := p.vsctlOut(args...)
	return err
}

// vsctlOut runs ovs-vsctl on the peer's database; without --no-wait it
// waits (up to 30 s) until ovs-vswitchd has applied the change.
func (p *OVS) vsctlOut(args ...string) (string, error) {
	cmd := exec.Command("ovs-vsctl", append([]string{"--db=unix:" + p.sock(), "--timeout=30"}, args...)...)
	cmd.Env = p.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ovs-vsctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ofctl runs ovs-ofctl on the bridge's management socket: args are the
// command, the bridge (replaced by the socket) and the rest.
func (p *OVS) ofctl(args ...string) error {
	for i, a := range args {
		if a == p.br {
			args[i] = "unix:" + filepath.Join(p.dir, p.br+".mgmt")
		}
	}
	cmd := exec.Command("ovs-ofctl", args...)
	cmd.Env = p.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ovs-ofctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
