// Command taas-bench is `make bench`: it builds a lab of its own
// (namespaces and veths named with a random prefix), measures taasd, kernel
// tc mirred, daemonlogger, netsniff-ng and Open vSwitch (userspace
// datapath, daemons of its own) one after another on the same generated
// traffic, then the control plane, and writes
// perf/results/latest.{json,md,svg}; with --readme it also replaces the
// README's table (never by default: the figures are pasted in by hand). It removes its
// lab on success, on failure and on Ctrl-C, and gives up after --timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/taas-appliance/taas/perf"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "taas-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		taasd, out, peers, scenarios, readme string
		reps, clients                        int
		seconds, timeout                     time.Duration
		control, busyPoll, quick             bool
		batch, rxRing                        int
	)
	flag.StringVar(&taasd, "taasd", "bin/taasd", "taasd binary to measure")
	flag.StringVar(&out, "out", "perf/results", "directory for latest.json, latest.md and latest.svg")
	flag.StringVar(&readme, "readme", "", "README whose benchmark table to replace (default: none; the table is in latest.md)")
	flag.StringVar(&peers, "peers", "taasd,taasd-afxdp,tc-mirred,daemonlogger,netsniff-ng,ovs,ovs-afxdp",
		"peers to measure, in order (taasd-afxdp: taasd without its in-kernel fast path; ovs-afxdp: Open vSwitch with afxdp ports)")
	flag.StringVar(&scenarios, "scenarios", "", "scenarios to run (default all: 64B,1518B,vxlan64B,vxlan1518B,fanout4,select1of6,lossless80,churn,mixed8,filter8,capture64B,capture1518B)")
	flag.IntVar(&reps, "reps", 3, "repetitions per scenario")
	flag.DurationVar(&seconds, "seconds", 3*time.Second, "traffic per repetition (lossless80 and churn have their own)")
	flag.DurationVar(&timeout, "timeout", 25*time.Minute, "give up (and clean up) after this long")
	flag.BoolVar(&control, "control", true, "also run the control-plane benchmark")
	flag.IntVar(&clients, "clients", 8, "concurrent clients in the control-plane benchmark")
	flag.BoolVar(&busyPoll, "busy-poll", true, "taasd-afxdp workers busy-poll (they have CPU 1 to themselves; never on the fast path, whose NAPI thread runs there)")
	flag.IntVar(&batch, "batch", 256, "taasd worker batch size")
	// 16384 rather than taasd's default 4096: at 80 % of its maximum the
	// default ring lost a few hundred frames in 3 x 10 s to worker stalls
	// (xsk_rx_fill_ring_empty), 16384 lost none (16:13 UTC runs).
	flag.IntVar(&rxRing, "rx-ring", 16384, "taasd capture fill/RX ring size (0: taasd's default, 4096)")
	flag.BoolVar(&quick, "quick", false, "a first look in under a minute: taasd and tc-mirred, 64B, one repetition of 1 s, "+
		"no control-plane benchmark (flags given explicitly still apply)")
	flag.Parse()
	if quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, apply := range map[string]func(){
			"peers": func() { peers = "taasd,tc-mirred" }, "scenarios": func() { scenarios = "64B" },
			"reps": func() { reps = 1 }, "seconds": func() { seconds = time.Second }, "control": func() { control = false },
		} {
			if !set[name] {
				apply()
			}
		}
	}

	if os.Geteuid() != 0 {
		return errors.New("needs root: namespaces, veths and XDP")
	}
	if err := ensureTools(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "taas-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	cfg := perf.BenchConfig{Reps: reps, Seconds: seconds, Log: os.Stdout}
	for _, name := range strings.Split(peers, ",") {
		switch name {
		case "taasd", "taasd-afxdp":
			cfg.Peers = append(cfg.Peers, &perf.Taasd{Bin: taasd, Dir: dir, BusyPoll: busyPoll, BatchSize: batch, RxRing: rxRing,
				AFXDP: name == "taasd-afxdp"})
		case "tc-mirred":
			cfg.Peers = append(cfg.Peers, &perf.TC{})
		case "daemonlogger":
			cfg.Peers = append(cfg.Peers, perf.Daemonlogger(dir))
		case "netsniff-ng":
			cfg.Peers = append(cfg.Peers, perf.NetsniffNG(dir))
		case "ovs", "ovs-afxdp":
			cfg.Peers = append(cfg.Peers, &perf.OVS{Dir: dir, AFXDP: name == "ovs-afxdp"})
		default:
			return fmt.Errorf("--peers: unknown peer %q", name)
		}
	}
	cfg.Scenarios = perf.Scenarios
	if scenarios != "" {
		cfg.Scenarios = nil
		for _, name := range strings.Split(scenarios, ",") {
			found := false
			for _, sc := range perf.Scenarios {
				if sc.Name == name {
					cfg.Scenarios = append(cfg.Scenarios, sc)
					found = true
				}
			}
			if !found {
				return fmt.Errorf("--scenarios: unknown scenario %q", name)
			}
		}
	}

	res := perf.Results{Start: time.Now().UTC().Format(time.RFC3339), Host: host()}
	fmt.Printf("taas-bench: %s\n", res.Host)
	lab, err := perf.NewLab(perf.NewLabPrefix(), 4)
	if err != nil {
		return err
	}
	rows, benchErr := perf.RunBench(ctx, lab, cfg)
	res.Rows = rows
	if err := lab.Close(); err != nil {
		benchErr = errors.Join(benchErr, fmt.Errorf("remove lab: %w", err))
	}
	if control && ctx.Err() == nil {
		cdir, err := os.MkdirTemp(dir, "control-")
		if err != nil {
			return err
		}
		c, err := perf.RunControlBench(ctx, taasd, cdir, clients, 5*time.Second)
		if err != nil {
			benchErr = errors.Join(benchErr, fmt.Errorf("control plane: %w", err))
		}
		for _, r := range c {
			fmt.Printf("control      %-22s %d clients: %d requests, %.0f/s, p50 %.2f ms, p99 %.2f ms, %d errors\n",
				r.Op, r.Clients, r.Requests, r.PerSecond, r.P50ms, r.P99ms, r.Errors)
		}
		res.Control = c
	}
	if len(res.Rows) > 0 {
		if err := res.Write(out); err != nil {
			return errors.Join(benchErr, err)
		}
		fmt.Printf("taas-bench: wrote %s/latest.{json,md,svg}\n", out)
		if readme == "" {
			fmt.Printf("taas-bench: the README's table is %s/latest.md; paste it between the bench markers, or run with --readme README.md\n", out)
		} else {
			if err := perf.UpdateReadme(readme, res.Markdown()); err != nil {
				return errors.Join(benchErr, err)
			}
		}
	}
	return benchErr
}

// ensureTools installs the Debian packages of the peers when missing.
func ensureTools() error {
	var missing []string
	for bin, pkg := range map[string]string{"daemonlogger": "daemonlogger", "netsniff-ng": "netsniff-ng", "tc": "iproute2", "ethtool": "ethtool", "taskset": "util-linux",
		"ovs-vswitchd": "openvswitch-switch", "tcpdump": "tcpdump"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Println("taas-bench: installing", missing)
	cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apt-get install %v: %w", missing, err)
	}
	return nil
}

// host describes the machine and its load for the results.
func host() string {
	load, _ := os.ReadFile("/proc/loadavg") // best effort: only a label
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	rel := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	f := strings.Fields(string(load))
	la := "?"
	if len(f) >= 3 {
		la = strings.Join(f[:3], " ")
	}
	return fmt.Sprintf("Linux %s, %d vCPUs, load average %s at start", rel, runtime.NumCPU(), la)
}
