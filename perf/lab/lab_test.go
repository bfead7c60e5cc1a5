package lab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// freePort returns a loopback TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(testutil.FreeLoopbackAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// output collects a process's lines and signals when one matches.
type output struct {
	mu    sync.Mutex
	lines []string
	ready chan struct{}
	done  chan struct{}
}

func watch(r io.Reader, readyLine string) *output {
	o := &output{ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		sc := bufio.NewScanner(r)
		seen := false
		for sc.Scan() {
			o.mu.Lock()
			o.lines = append(o.lines, sc.Text())
			o.mu.Unlock()
			if !seen && sc.Text() == readyLine {
				seen = true
				close(o.ready)
			}
		}
	}()
	return o
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n")
}

// pid finds "<what> pid N" in the output.
func (o *output) pid(t *testing.T, what string) int {
	t.Helper()
	m := regexp.MustCompile(what + `.* pid (\d+)`).FindStringSubmatch(o.String())
	if m == nil {
		t.Fatalf("no %q pid in the lab's output:\n%s", what, o)
	}
	n, _ := strconv.Atoi(m[1]) // the regexp matched digits
	return n
}

// tcpdump captures count ICMP frames on iface (in netns ns, "" for this
// one), with link-level headers, giving up after 20 s.
func tcpdump(t *testing.T, ns, iface string, count int) string {
	t.Helper()
	args := []string{"timeout", "20", "tcpdump", "-l", "-n", "-e", "-i", iface, "-c", strconv.Itoa(count), "icmp"}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// alive reports whether pid is a running process (not a zombie).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

// leftovers lists the namespaces and links whose names start with prefix.
func leftovers(t *testing.T, prefix string) []string {
	t.Helper()
	var found []string
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			found = append(found, "namespace "+e.Name())
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifaces {
		if strings.HasPrefix(i.Name, prefix) {
			found = append(found, "link "+i.Name)
		}
	}
	return found
}

// TestLab runs the README's run command's lab with a unique prefix: it
// comes up, the ping between the VM namespaces is on the SPAN feed and,
// copied by taasd, in the monitor namespace; the tap mirror it prints the
// curl for gets the echo requests to the collector's VXLAN device; on
// SIGINT it stops what it started and deletes what it created.
func TestLab(t *testing.T) {
	testutil.RequireRoot(t, "the lab creates namespaces, veths and tc rules, and taasd attaches XDP")
	for _, tool := range []struct{ name, pkg string }{
		{"tcpdump", "tcpdump"}, {"ping", "iputils-ping"}, {"jq", "jq"}, {"curl", "curl"}, {"tc", "iproute2"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			t.Skipf("%s not installed (apt-get install %s; .ci/run installs it)", tool.name, tool.pkg)
		}
	}
	bin := testutil.BuildTaasd(t)
	p := testutil.Prefix(t)
	port := freePort(t)
	state := filepath.Join(t.TempDir(), "lab")
	api := fmt.Sprintf("http://127.0.0.1:%d", port)

	cmd := exec.Command("bash", "lab.sh", "--prefix", p, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--bin", bin, "--state", state, "--ping-count", "240")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	out := watch(pr, "lab: ready")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the lab has exited, with its error in waitErr.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); pw.Close(); close(exited) }()
	// If the test fails half way, stop the lab (it cleans up after itself),
	// and remove by name whatever it could not.
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			<-out.done
		}
		for _, l := range leftovers(t, p) {
			name := l[strings.IndexByte(l, ' ')+1:]
			if strings.HasPrefix(l, "namespace ") {
				_ = exec.Command("ip", "netns", "del", name).Run()
			} else {
				_ = exec.Command("ip", "link", "del", name).Run()
			}
		}
	})

	select {
	case <-out.ready:
	case <-exited:
		<-out.done
		t.Fatalf("the lab exited before it was ready: %v\n%s", waitErr, out)
	case <-time.After(2 * time.Minute):
		t.Fatalf("the lab was not ready after 2 minutes:\n%s", out)
	}
	t.Logf("the lab's output:\n%s", out)
	taasdPID, pingPID := out.pid(t, "taasd"), out.pid(t, "ping")

	// The flow is realised.
	var flows struct {
		TapFlows []struct{ Name, Status string } `json:"tap_flows"`
	}
	resp, err := http.Get(api + "/v2.0/taas/tap_flows")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&flows)
	resp.Body.Close()
	if err != nil || len(flows.TapFlows) != 1 || flows.TapFlows[0].Status != "ACTIVE" {
		t.Errorf("GET /v2.0/taas/tap_flows = %+v, %v; want one ACTIVE flow", flows, err)
	}

	// With GRO on the monitor's end, taasd copies in the kernel.
	if !regexp.MustCompile(`lab: data path of ` + p + `cap0: fast`).MatchString(out.String()) {
		t.Errorf("the lab does not report the fast path for %scap0:\n%s", p, out)
	}

	// The SPAN feed carries the ping: echo requests from vm-a, replies from vm-b.
	request := regexp.MustCompile(`fa:16:3e:00:00:0a > fa:16:3e:00:00:0b, .*10\.0\.0\.1 > 10\.0\.0\.2: ICMP echo request`)
	reply := regexp.MustCompile(`fa:16:3e:00:00:0b > fa:16:3e:00:00:0a, .*10\.0\.0\.2 > 10\.0\.0\.1: ICMP echo reply`)
	// Read it where the switch sends it, span0: on cap0 the XDP program takes
	// every frame before tcpdump could see it.
	span := tcpdump(t, p+"switch", "span0", 4)
	if !request.MatchString(span) || !reply.MatchString(span) {
		t.Errorf("tcpdump on the SPAN port span0: want echo requests and replies, got\n%s", span)
	}
	// taasd copies them into the monitor namespace (the flow is BOTH).
	mon := tcpdump(t, p+"monitor", "eth0", 4)
	if !request.MatchString(mon) || !reply.MatchString(mon) {
		t.Errorf("tcpdump in the monitor namespace: want echo requests and replies copied by taasd, got\n%s", mon)
	}

	// The tap mirror the lab prints, pasted as a user would: vm-a's echo
	// requests (OUT) reach the collector in VXLAN, and its kernel VXLAN
	// device decapsulates them.
	m := regexp.MustCompile(`(?s)\n\s+(curl -s -X POST .*?"vxlan"\}\}')\n`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("the lab prints no curl for a tap mirror:\n%s", out)
	}
	if created, err := exec.Command("bash", "-c", m[1]).CombinedOutput(); err != nil || !strings.Contains(string(created), `"tap_mirror"`) {
		t.Fatalf("%s: %v\n%s", m[1], err, created)
	}
	if col := tcpdump(t, p+"collector", "vxlan0", 2); !request.MatchString(col) || reply.MatchString(col) {
		t.Errorf("tcpdump on the collector's vxlan0: want vm-a's echo requests only, got\n%s", col)
	}

	// Ctrl-C: everything goes.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if ee, ok := waitErr.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
			t.Errorf("the lab after SIGINT: %v, want exit status 130", waitErr)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the lab did not exit within a minute of SIGINT:\n%s", out)
	}
	<-out.done
	t.Logf("the lab stopping:\n%s", out.String()[len(out.String())-min(len(out.String()), 600):])
	if alive(taasdPID) {
		t.Errorf("taasd (pid %d) still runs after the lab stopped", taasdPID)
	}
	if alive(pingPID) {
		t.Errorf("ping (pid %d) still runs after the lab stopped", pingPID)
	}
	if left := leftovers(t, p); len(left) > 0 {
		t.Errorf("the lab left %s behind", strings.Join(left, ", "))
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the lab's state directory %s is still there (%v)", state, err)
	}
}

// TestLabNotRoot: run by an ordinary user, the lab creates nothing, says
// why, and serves the API alone (taasd --dataplane none) until SIGINT.
func TestLabNotRoot(t *testing.T) {
	testutil.RequireRoot(t, "setpriv needs root to become another user")
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed (util-linux; .ci/run installs it)")
	}
	// A directory user nobody can enter, with the binary and the database.
	dir, err := os.MkdirTemp("", "taas-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	built, err := os.ReadFile(testutil.BuildTaasd(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "taasd")
	if err := os.WriteFile(bin, built, 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("lab.sh")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
		"bash", script, "--bin", bin, "--db", filepath.Join(dir, "taas.db"), "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	out := watch(pr, "")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); pw.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	// Bounded wait for the API; failing to answer within a minute is a hang.
	api := fmt.Sprintf("http://127.0.0.1:%d/v2.0/", port)
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(api)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s = %d, want 200", api, resp.StatusCode)
			}
			break
		}
		select {
		case <-exited:
			<-out.done
			t.Fatalf("the lab exited: %v\n%s", waitErr, out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API did not answer within a minute:\n%s", out)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("taasd did not stop within 30 s of SIGINT:\n%s", out)
	}
	<-out.done
	for _, w := range []string{"lab: not root: the lab needs CAP_NET_ADMIN", "starting taasd API-only (--dataplane none)"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("the lab's output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out.String(), "creating namespaces") {
		t.Errorf("the lab tried to build the topology as an ordinary user:\n%s", out)
	}
	if waitErr != nil {
		t.Errorf("taasd after SIGINT: %v, want a clean exit\n%s", waitErr, out)
	}
}
