package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/internal/testutil"
)

// brokerHelperEnv makes the test binary run the broker instead of the
// tests (runBrokerHelper); memlockEnv, with either helper, first lowers
// RLIMIT_MEMLOCK to so many bytes. Under setpriv, without CAP_IPC_LOCK, the
// helpers meet the limit as taasd under a unit would.
const (
	brokerHelperEnv = "TAASD_TEST_RUN_BROKER"
	memlockEnv      = "TAASD_TEST_MEMLOCK"
)

// setMemlockFromEnv sets RLIMIT_MEMLOCK (soft and hard) to memlockEnv's
// bytes, when set.
func setMemlockFromEnv() error {
	v := os.Getenv(memlockEnv)
	if v == "" {
		return nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return fmt.Errorf("%s=%q: %w", memlockEnv, v, err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: n, Max: n}); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_MEMLOCK, %d): %w", n, err)
	}
	return nil
}

// runBrokerHelper is `CONFIG CAPTURE MONITOR`: it starts the broker taasd
// would start with the configuration file CONFIG and applies a plan with a
// tap flow on interface CAPTURE into a tap service on MONITOR (either may
// be "-", none), which opens their sockets, then prints each status, one
// line each ("flow ACTIVE", "service ERROR open monitor ..."), and closes
// the broker.
func runBrokerHelper(args []string, stdout io.Writer) int {
	if len(args) != 3 {
		fmt.Fprintln(stdout, "usage: CONFIG CAPTURE MONITOR")
		return 2
	}
	fc, err := loadConfigFile(args[0])
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 2
	}
	b, err := broker.New(config{File: fc}.brokerConfig(nil))
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	defer b.Close()
	none := func(s string) string { return strings.TrimPrefix(s, "-") }
	plan := &broker.Plan{Version: 1, Services: []broker.Service{{ID: "svc", Iface: none(args[2])}}}
	if args[1] != "-" {
		plan.Flows = []broker.Flow{{ID: "flow", ServiceID: "svc", SourcePortID: "port", Iface: args[1],
			MAC: [6]byte{0x02, 0, 0, 0, 0, 1}, Direction: broker.DirBoth}}
	}
	rep, err := b.Apply(context.Background(), plan)
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	for id, st := range rep.Flows {
		fmt.Fprintln(stdout, "flow", id, st.State, st.Reason)
	}
	for id, st := range rep.Services {
		fmt.Fprintln(stdout, "service", id, st.State, st.Reason)
	}
	return 0
}

// umemNeed reads the UMEM `taasd check` says the broker locks from its
// locked memory line ("... 16 MiB of UMEM for ...").
var umemNeed = regexp.MustCompile(`locked memory +RLIMIT_MEMLOCK .*?(\d+) (MiB|KiB) of UMEM`)

// TestCheckMemlockMatchesKernel holds `taasd check`'s locked memory to
// what the kernel charges for the sockets the broker opens: under a
// RLIMIT_MEMLOCK of exactly the UMEM check reports, without CAP_IPC_LOCK,
// the broker opens them all and check passes; a page less, the kernel
// refuses one and check fails. Each run is a fresh user, whose locked
// memory (the kernel counts it per user, and frees a closed socket's UMEM
// later, from a work queue) starts at nothing. RLIMIT_MEMLOCK's hard limit
// here is 8 MiB, beyond which this process cannot raise it, so a default
// capture socket (16 MiB) is checked only above its limit.
func TestCheckMemlockMatchesKernel(t *testing.T) {
	testutil.RequireRoot(t, "setpriv runs check and the broker as another user without CAP_IPC_LOCK; veths and XDP")
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		t.Fatal(err)
	}
	bin := selfCopy(t)
	dir := filepath.Dir(bin)
	p := testutil.Prefix(t)
	ns := testutil.Netns(t, p+"peer")
	capName, monName := p+"cap", p+"mon"
	testutil.Veth(t, capName, "c0", testutil.VethOpts{NetnsB: ns})
	testutil.Veth(t, monName, "m0", testutil.VethOpts{NetnsB: ns})

	// The unit's capabilities but CAP_IPC_LOCK, as a user of its own.
	const caps = "net_admin,+net_raw,+bpf,+perfmon"
	uid := 70000 + os.Getpid()%20000
	as := func() []string {
		uid++
		return []string{fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups",
			"--inh-caps=-all,+" + caps, "--ambient-caps=-all,+" + caps, "--bounding-set=-all,+" + caps}
	}
	captureConf := fmt.Sprintf("[[interfaces]]\nname = %q\nrole = \"capture\"\n", capName)
	monitorConf := fmt.Sprintf("[[interfaces]]\nname = %q\nrole = \"monitor\"\n", monName)
	for _, tc := range []struct {
		name, conf, capture, monitor string
	}{
		// The issue: check said 8 MiB for a capture socket, the kernel
		// charged 16 MiB.
		{"capture, one queue, default rings", captureConf + "queues = 1\n", capName, "-"},
		{"capture, default rings", captureConf, capName, "-"},
		{"capture, rx_ring_size 1024", "[broker]\nrx_ring_size = 1024\n" + captureConf, capName, "-"},
		{"capture, rx_ring_size 512, frame_size 4096", "[broker]\nrx_ring_size = 512\nframe_size = 4096\n" + captureConf, capName, "-"},
		{"monitor", monitorConf, "-", monName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".toml")
			if err := os.WriteFile(conf, []byte(tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			// run runs check, then the broker, under limit bytes of
			// RLIMIT_MEMLOCK: check's locked memory line and UMEM, and
			// whether the broker opened every socket.
			run := func(limit uint64) (line string, need uint64, opened bool) {
				t.Helper()
				env := []string{memlockEnv + "=" + strconv.FormatUint(limit, 10)}
				out, _ := runSelfAs(t, bin, as(), append(env, checkHelperEnv+"=1"), "--config", conf)
				m := umemNeed.FindStringSubmatch(spaces.ReplaceAllString(out, "  "))
				if m == nil {
					t.Fatalf("taasd check under RLIMIT_MEMLOCK %d: no locked memory figure\n%s", limit, out)
				}
				for _, l := range strings.Split(out, "\n") {
					if strings.Contains(l, "locked memory") {
						line = spaces.ReplaceAllString(strings.TrimSpace(l), "  ")
					}
				}
				n, _ := strconv.ParseUint(m[1], 10, 64)
				need = n << 10
				if m[2] == "MiB" {
					need = n << 20
				}
				out, code := runSelfAs(t, bin, as(), append(env, brokerHelperEnv+"=1"), conf, tc.capture, tc.monitor)
				if code != 0 {
					t.Fatalf("the broker under RLIMIT_MEMLOCK %d: exit %d\n%s", limit, code, out)
				}
				opened = !strings.Contains(out, " ERROR ")
				if !opened && !strings.Contains(out, "RLIMIT_MEMLOCK") {
					t.Fatalf("the broker under RLIMIT_MEMLOCK %d failed for another reason:\n%s", limit, out)
				}
				t.Logf("RLIMIT_MEMLOCK %d: check: %s; broker: %s", limit, line, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
				return line, need, opened
			}
			_, need, _ := run(lim.Max)
			page := uint64(os.Getpagesize())
			if need < page {
				t.Fatalf("taasd check says the broker locks %d bytes of UMEM", need)
			}
			limits := []uint64{need, need - page}
			if need > lim.Max {
				limits = []uint64{lim.Max}
			}
			for _, limit := range limits {
				line, _, opened := run(limit)
				if passed := strings.HasPrefix(line, "PASS"); passed != opened {
					t.Errorf("RLIMIT_MEMLOCK %d: taasd check says %q, but the broker opened every socket: %v", limit, line, opened)
				}
				if want := limit >= need; opened != want {
					t.Errorf("RLIMIT_MEMLOCK %d, check's UMEM %d: the broker opened every socket: %v, want %v", limit, need, opened, want)
				}
			}
		})
	}
}
