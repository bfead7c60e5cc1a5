package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/taas-appliance/taas/xdpprog"
)

// checkHelperEnv makes the test binary run `taasd check` with its
// arguments instead of the tests: the capability tests start it under
// setpriv with fewer privileges, which a goroutine of this process cannot
// have.
const checkHelperEnv = "TAASD_TEST_RUN_CHECK"

func TestMain(m *testing.M) {
	if err := setMemlockFromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	switch {
	case os.Getenv(checkHelperEnv) == "1":
		os.Exit(runCheck(os.Args[1:], os.Stdout, os.Stderr))
	case os.Getenv(brokerHelperEnv) == "1":
		os.Exit(runBrokerHelper(os.Args[1:], os.Stdout))
	}
	os.Exit(m.Run())
}

func TestParseCapEff(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         capSet
		wantErr      bool
	}{
		{"root", "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n", 0x1ffffffffff, false},
		{"the unit's capabilities", "CapEff:\t000000c000007000\n", 1<<capNetAdmin | 1<<capNetRaw | 1<<capIPCLock | 1<<capPerfmon | 1<<capBPF, false},
		{"none", "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n", 0, false},
		{"no CapEff line", "Name:\tx\n", 0, true},
		{"not hex", "CapEff:\tzz\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCapEff(strings.NewReader(tc.status))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseCapEff(%q) = %#x, %v; want %#x, error %v", tc.status, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// verdicts maps each result's name to its verdict.
func verdicts(rs []checkResult) map[string]verdict {
	m := map[string]verdict{}
	for _, r := range rs {
		m[r.Name] = r.Verdict
	}
	return m
}

func TestCheckCaps(t *testing.T) {
	unitCaps := capSet(1<<capNetAdmin | 1<<capNetRaw | 1<<capIPCLock | 1<<capPerfmon | 1<<capBPF)
	for _, tc := range []struct {
		name string
		caps capSet
		want map[string]verdict
	}{
		{"the unit's", unitCaps, map[string]verdict{
			"capability CAP_NET_ADMIN": pass, "capability CAP_BPF": pass, "capability CAP_NET_RAW": pass,
			"capability CAP_IPC_LOCK": pass, "capability CAP_PERFMON": pass}},
		{"none", 0, map[string]verdict{
			"capability CAP_NET_ADMIN": fail, "capability CAP_BPF": fail, "capability CAP_NET_RAW": fail,
			"capability CAP_IPC_LOCK": warn, "capability CAP_PERFMON": fail}},
		{"CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON", 1<<capSysAdmin | 1<<capNetAdmin | 1<<capNetRaw, map[string]verdict{
			"capability CAP_NET_ADMIN": pass, "capability CAP_BPF": pass, "capability CAP_NET_RAW": pass,
			"capability CAP_IPC_LOCK": warn, "capability CAP_PERFMON": pass}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := verdicts(checkCaps(tc.caps, nil))
			for name, v := range tc.want {
				if got[name] != v {
					t.Errorf("checkCaps(%#x)[%s] = %v, want %v", tc.caps, name, got[name], v)
				}
			}
		})
	}
	if rs := checkCaps(0, fmt.Errorf("no CapEff line")); len(rs) != 1 || rs[0].Verdict != warn {
		t.Errorf("checkCaps with a read error = %+v, want one WARN", rs)
	}
}

// procFile writes text to a file standing in for a /proc entry.
func procFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "proc")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckKernel(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    verdict
	}{
		{"6.18.44-fc-v669\n", pass},
		{"6.17.0\n", pass},
		{"7.0.1\n", pass},
		{"6.1.0-18-amd64\n", warn},
		{"5.4.0-150-generic\n", warn},
		{"5.3.18\n", fail},
		{"4.19.0-26-amd64\n", fail},
		{"unparsable\n", warn},
	} {
		if r := checkKernel(procFile(t, tc.release)); r.Verdict != tc.want {
			t.Errorf("checkKernel(%q) = %v %s, want %v", tc.release, r.Verdict, r.Detail, tc.want)
		}
	}
	if r := checkKernel(filepath.Join(t.TempDir(), "missing")); r.Verdict != warn {
		t.Errorf("checkKernel(missing file) = %v, want WARN", r.Verdict)
	}
}

func TestCheckJIT(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  verdict
	}{
		{"1\n", pass},
		{"0\n", warn},
		{"2\n", warn},
		{"x\n", warn},
	} {
		if r := checkJIT(procFile(t, tc.value)); r.Verdict != tc.want {
			t.Errorf("checkJIT(%q) = %v %s, want %v", tc.value, r.Verdict, r.Detail, tc.want)
		}
	}
	if r := checkJIT(filepath.Join(t.TempDir(), "missing")); r.Verdict != warn || r.Fix == "" {
		t.Errorf("checkJIT(missing file) = %+v, want WARN with a fix", r)
	}
}

// TestCheckInterfaces inspects real links: veths in this namespace (their
// peers in a namespace of the test), a bridge standing in for a NIC that
// filters MACs, an XDP program attached by xdpprog.
func TestCheckInterfaces(t *testing.T) {
	testutil.RequireRoot(t, "CAP_NET_ADMIN to create veths and attach an XDP program")
	p := testutil.Prefix(t)
	ns := testutil.Netns(t, p+"peer")
	capName, monName, brName := p+"cap", p+"mon", p+"br"
	testutil.Veth(t, capName, "c0", testutil.VethOpts{NetnsB: ns, Queues: 4})
	testutil.Veth(t, monName, "m0", testutil.VethOpts{NetnsB: ns})
	testutil.Run(t, "ip", "link", "add", brName, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", brName).Run() })

	find := func(rs []checkResult, name string) checkResult {
		for _, r := range rs {
			if r.Name == name {
				return r
			}
		}
		t.Fatalf("no result %q in %+v", name, rs)
		return checkResult{}
	}
	check := func(ifs ...ifaceFile) []checkResult {
		return checkInterfaces(&fileConfig{Interfaces: ifs})
	}

	rs := check(ifaceFile{Name: capName, Role: roleCapture}, ifaceFile{Name: monName, Role: roleMonitor})
	if r := find(rs, "capture "+capName); r.Verdict != pass || !strings.Contains(r.Detail, "4 RX queues") {
		t.Errorf("capture veth, up, 4 queues: %+v, want PASS with 4 RX queues", r)
	}
	if r := find(rs, "monitor "+monName); r.Verdict != pass || !strings.Contains(r.Detail, " TX queues") {
		t.Errorf("monitor veth: %+v, want PASS", r)
	}

	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T)
		iface  ifaceFile
		want   verdict
		detail string
	}{
		{"missing", nil, ifaceFile{Name: p + "none", Role: roleCapture}, fail, "does not exist"},
		{"more queues than the NIC", nil, ifaceFile{Name: capName, Role: roleCapture, Queues: 8}, fail, "queues = 8 but it has 4 RX queues"},
		{"down", func(t *testing.T) {
			testutil.Run(t, "ip", "link", "set", monName, "down")
			t.Cleanup(func() { testutil.Run(t, "ip", "link", "set", monName, "up") })
		}, ifaceFile{Name: monName, Role: roleMonitor}, warn, "down"},
		{"not promiscuous, not a veth", func(t *testing.T) {
			testutil.Run(t, "ip", "link", "set", brName, "up")
		}, ifaceFile{Name: brName, Role: roleCapture}, warn, "not promiscuous"},
		{"promiscuous", func(t *testing.T) {
			testutil.Run(t, "ip", "link", "set", brName, "promisc", "on")
		}, ifaceFile{Name: brName, Role: roleCapture}, pass, "promiscuous"},
		{"jumbo MTU", func(t *testing.T) {
			testutil.Run(t, "ip", "link", "set", capName, "mtu", "9000")
			t.Cleanup(func() { testutil.Run(t, "ip", "link", "set", capName, "mtu", "1500") })
		}, ifaceFile{Name: capName, Role: roleCapture}, warn, "MTU 9000"},
		{"XDP program attached", func(t *testing.T) {
			l, err := netlink.LinkByName(capName)
			if err != nil {
				t.Fatal(err)
			}
			c, err := xdpprog.Attach(l.Attrs().Index, xdpprog.Config{})
			testutil.SkipIfNotSupported(t, err)
			t.Cleanup(func() { c.Close() })
		}, ifaceFile{Name: capName, Role: roleCapture}, warn, "an XDP program (id "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			r := find(check(tc.iface), tc.iface.Role+" "+tc.iface.Name)
			if r.Verdict != tc.want || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("checkInterface(%+v) = %v %q, want %v with %q", tc.iface, r.Verdict, r.Detail, tc.want, tc.detail)
			}
			if r.Verdict != pass && r.Fix == "" {
				t.Errorf("checkInterface(%+v) = %v with no fix", tc.iface, r.Verdict)
			}
		})
	}

	// A monitor that is the veth peer of a capture closes a loop.
	la, lb := p+"la", p+"lb"
	testutil.Veth(t, la, lb, testutil.VethOpts{})
	rs = check(ifaceFile{Name: la, Role: roleCapture}, ifaceFile{Name: lb, Role: roleMonitor})
	if r := find(rs, "monitor "+lb); r.Verdict != fail || !strings.Contains(r.Detail, "is the veth peer of capture interface "+la) || r.Fix == "" {
		t.Errorf("monitor on the capture's veth peer: %+v, want FAIL naming the loop, with a fix", r)
	}
	// So does an uplink: tunnelled copies go out of it.
	rs = check(ifaceFile{Name: la, Role: roleCapture}, ifaceFile{Name: lb, Role: roleUplink})
	if r := find(rs, "uplink "+lb); r.Verdict != fail || !strings.Contains(r.Detail, "is the veth peer of capture interface "+la) {
		t.Errorf("uplink on the capture's veth peer: %+v, want FAIL naming the loop", r)
	}

	if rs := checkInterfaces(nil); len(rs) != 1 || rs[0].Verdict != warn {
		t.Errorf("checkInterfaces(no config) = %+v, want one WARN", rs)
	}
}

// runCheckAs runs `taasd check args...` in a copy of the test binary under
// setpriv with the given options, and returns its output and exit code.
func runCheckAs(t *testing.T, setpriv []string, args ...string) (string, int) {
	t.Helper()
	return runSelfAs(t, selfCopy(t), setpriv, []string{checkHelperEnv + "=1"}, args...)
}

// selfCopy copies the test binary into a directory every user can enter
// and read, removed when the test ends, and returns its path; files a
// test writes there are readable by the users setpriv makes.
func selfCopy(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed (util-linux; .ci/run installs it)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "taasd-check-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "taasd.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runSelfAs runs bin (a selfCopy) under setpriv with the given options,
// with env added to the environment (which TestMain reads), and returns
// its output and exit code.
func runSelfAs(t *testing.T, bin string, setpriv, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("setpriv", append(append(setpriv, bin), args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("setpriv %v: %v\n%s", setpriv, err, out.String())
	}
	return out.String(), code
}

// unitCaps are the capabilities of deploy/taasd.service, in setpriv's
// spelling.
const (
	unitCaps          = "net_admin,+net_raw,+bpf,+ipc_lock,+perfmon"
	unitCapsNoPerfmon = "net_admin,+net_raw,+bpf,+ipc_lock"
)

// TestCheckPrivileges runs `taasd check` with the privileges the systemd
// unit gives (a non-root user with exactly the unit's capabilities), and
// with less: it proves those capabilities load the XDP program and open
// AF_XDP sockets, and that check fails, naming what is missing, without.
func TestCheckPrivileges(t *testing.T) {
	testutil.RequireRoot(t, "setpriv needs root to change user and capabilities")
	asUnit := []string{"--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all,+" + unitCaps, "--ambient-caps=-all,+" + unitCaps, "--bounding-set=-all,+" + unitCaps}

	for _, tc := range []struct {
		name     string
		setpriv  []string
		wantCode int
		want     []string
	}{
		{"the unit's user and capabilities", asUnit, 0, []string{
			"PASS  af_xdp sockets", "PASS  xdp program", "PASS  capability CAP_BPF", "PASS  capability CAP_PERFMON", "PASS  locked memory"}},
		{"the unit's user without CAP_PERFMON", []string{"--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=-all,+" + unitCapsNoPerfmon, "--ambient-caps=-all,+" + unitCapsNoPerfmon, "--bounding-set=-all,+" + unitCapsNoPerfmon}, 1, []string{
			"FAIL  xdp program", "FAIL  capability CAP_PERFMON", "PASS  af_xdp sockets"}},
		{"root without CAP_BPF", []string{"--bounding-set=-bpf,-perfmon,-sys_admin"}, 1, []string{
			"FAIL  xdp program", "FAIL  capability CAP_BPF", "PASS  capability CAP_NET_ADMIN"}},
		{"no capabilities at all", []string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}, 1, []string{
			"FAIL  af_xdp sockets", "FAIL  xdp program", "FAIL  capability CAP_NET_ADMIN", "FAIL  capability CAP_NET_RAW"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCheckAs(t, tc.setpriv)
			if code != tc.wantCode {
				t.Errorf("taasd check under setpriv %v: exit %d, want %d\n%s", tc.setpriv, code, tc.wantCode, out)
			}
			for _, w := range tc.want {
				if !containsLine(out, w) {
					t.Errorf("taasd check under setpriv %v: no line starting %q\n%s", tc.setpriv, w, out)
				}
			}
		})
	}
}

// containsLine reports whether some line of out starts with prefix, once
// runs of two or more spaces are squeezed to two (tabwriter's alignment
// varies with the names).
func containsLine(out, prefix string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(spaces.ReplaceAllString(l, "  "), prefix) {
			return true
		}
	}
	return false
}

var spaces = regexp.MustCompile(`  +`)

// TestRunCheck runs the command in-process: usage errors exit 2, a bad
// configuration exits 2 naming the field, and as root with a good one it
// reports every check and exits 0 unless something failed.
func TestRunCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[[interfaces]]\nname = \"eth1\"\nrole = \"span\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined"},
		{"extra argument", []string{"now"}, `unexpected argument "now"`},
		{"bad config", []string{"--config", bad}, `interfaces[0].role: must be capture, monitor or uplink, got "span"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := runCheck(tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("runCheck(%q) = %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
			}
		})
	}

	testutil.RequireRoot(t, "CAP_BPF and CAP_NET_RAW for the XDP program and AF_XDP checks")
	p := testutil.Prefix(t)
	ns := testutil.Netns(t, p+"peer")
	testutil.Veth(t, p+"cap", "c0", testutil.VethOpts{NetnsB: ns})
	testutil.Veth(t, p+"mon", "m0", testutil.VethOpts{NetnsB: ns})
	good := filepath.Join(dir, "good.toml")
	conf := fmt.Sprintf("[[interfaces]]\nname = %q\nrole = \"capture\"\n[[interfaces]]\nname = %q\nrole = \"monitor\"\n", p+"cap", p+"mon")
	if err := os.WriteFile(good, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := runCheck([]string{"--config", good}, &stdout, &stderr)
	out := stdout.String()
	t.Logf("taasd check as root:\n%s", out)
	wantCode := 0
	if strings.Contains(out, "FAIL") {
		wantCode = 1
	}
	if code != wantCode {
		t.Errorf("runCheck = %d, want %d\n%s%s", code, wantCode, out, stderr.String())
	}
	for _, w := range []string{"kernel", "bpf jit", "af_xdp sockets", "xdp program", "capability CAP_NET_ADMIN",
		"locked memory", "capture " + p + "cap", "monitor " + p + "mon"} {
		if !strings.Contains(out, w) {
			t.Errorf("taasd check output has no %q line\n%s", w, out)
		}
	}
	for _, w := range []string{"PASS  af_xdp sockets", "PASS  xdp program", "PASS  capture " + p + "cap", "PASS  monitor " + p + "mon"} {
		if !containsLine(out, w) {
			t.Errorf("taasd check as root: no line starting %q\n%s", w, out)
		}
	}
}
