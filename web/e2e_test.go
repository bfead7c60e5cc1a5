//go:build !no_ui

package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/taas-appliance/taas/internal/testutil"
)

// The browser tests: the real taasd (built from ./cmd/taasd, on a loopback
// port, with a temporary SQLite file) driven through its dashboard by
// Debian's headless Chromium, which the scripts in e2e/ control through
// playwright-core. Screenshots land in e2e/artifacts/.

const chromiumPath = "/usr/bin/chromium"

// browserTools returns node's path, or skips t when node or Chromium is
// missing (CI installs both: .ci/apt-packages.txt). playwright-core missing
// is a failure with the command that installs it, not a skip.
func browserTools(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("browser tests need node (Debian package nodejs): not found in PATH")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser tests need Chromium (Debian package chromium): %v", err)
	}
	if _, err := os.Stat(filepath.Join("e2e", "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("playwright-core is not installed in web/e2e: run make deps as root (npm ci): %v", err)
	}
	return node
}

// artifactsDir is where the scripts save screenshots, kept after the test
// so they can be looked at (CI collects them).
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("e2e", "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startTaasd runs the taasd binary bin with args until t ends, and returns
// its base URL once it answers.
func startTaasd(t *testing.T, bin string, args ...string) string {
	t.Helper()
	return testutil.StartTaasd(t, bin, args...).URL
}

// runScript runs one e2e/<name>.mjs against base with extra environment,
// logs its output, and fails t unless it exits 0 having printed PASS. A
// line "ACTION <name>" from the script runs actions[name] and answers "OK"
// (or "ERR <error>") on its stdin: the script asks, the test acts on the
// network it owns.
func runScript(t *testing.T, node, name, base string, env []string, actions map[string]func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, name+".mjs")
	cmd.Dir = "e2e"
	// The script and the Chromium it starts share a process group of their
	// own, so a script that hangs past the timeout is killed with its
	// browser (by that group's id) instead of leaving Chromium behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Env = append(os.Environ(), append([]string{
		"TAAS_URL=" + base,
		"TAAS_ARTIFACTS=" + artifactsDir(t),
		"CHROMIUM=" + chromiumPath,
	}, env...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	passed := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		switch {
		case line == "PASS":
			passed = true
		case strings.HasPrefix(line, "ACTION "):
			answer := "OK"
			if act, ok := actions[strings.TrimPrefix(line, "ACTION ")]; !ok {
				answer = "ERR no such action"
			} else if err := act(); err != nil {
				answer = "ERR " + strings.ReplaceAll(err.Error(), "\n", " ")
			}
			fmt.Fprintln(stdin, answer)
		}
	}
	r.Close()
	stdin.Close()
	err = cmd.Wait()
	if err != nil || !passed {
		t.Fatalf("node %s.mjs: %v (PASS printed: %v)", name, err, passed)
	}
}

func TestBrowser(t *testing.T) {
	node := browserTools(t)
	bin := testutil.BuildTaasd(t)
	t.Logf("screenshots: %s", artifactsDir(t))

	t.Run("noauth", func(t *testing.T) {
		base := startTaasd(t, bin, "--dataplane", "none")
		// Sequential: each script drives its own Chromium, and the machine
		// CI runs on has two cores.
		for _, name := range []string{"crud", "narrow", "toast"} {
			t.Run(name, func(t *testing.T) { runScript(t, node, name, base, nil, nil) })
		}
	})

	t.Run("token", func(t *testing.T) {
		tokens := filepath.Join(t.TempDir(), "tokens")
		err := os.WriteFile(tokens, []byte("# token project roles\n"+
			"tok-alpha-0123 project-alpha member,reader\n"+
			"tok-bravo-4567 project-bravo member,reader\n"), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		base := startTaasd(t, bin, "--dataplane", "none", "--auth", "token", "--tokens", tokens)
		runScript(t, node, "token", base, []string{
			"TAAS_TOKEN_A=tok-alpha-0123", "TAAS_PROJECT_A=project-alpha", "TAAS_TOKEN_B=tok-bravo-4567"}, nil)
	})

	t.Run("mirror", func(t *testing.T) {
		tokens := filepath.Join(t.TempDir(), "tokens")
		err := os.WriteFile(tokens, []byte("# token project roles\n"+
			"tok-admin-89ab ops admin\n"+
			"tok-alpha-0123 project-alpha member,reader\n"+
			"tok-bravo-4567 project-bravo member,reader\n"), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		base := startTaasd(t, bin, "--dataplane", "none", "--auth", "token", "--tokens", tokens)
		runScript(t, node, "mirror", base, []string{"TAAS_TOKEN_ADMIN=tok-admin-89ab",
			"TAAS_TOKEN_A=tok-alpha-0123", "TAAS_PROJECT_A=project-alpha",
			"TAAS_TOKEN_B=tok-bravo-4567", "TAAS_PROJECT_B=project-bravo"}, nil)
	})
}

// TestBrowserCapture drives the Capture dialog on taasd without a data
// plane (e2e/capture.mjs): downloads that tshark reads, Stop, a bad
// parameter, and the 409 of a 9th capture while this test holds 8 open
// over HTTP (actions hold8 and release8).
func TestBrowserCapture(t *testing.T) {
	node := browserTools(t)
	bin := testutil.BuildTaasd(t)
	runCapture(t, node, startTaasd(t, bin, "--dataplane", "none"))
}

// runCapture runs e2e/capture.mjs against base.
func runCapture(t *testing.T, node, base string) {
	var held []*http.Response
	release := func() error {
		for _, r := range held {
			r.Body.Close()
		}
		held = nil
		return nil
	}
	t.Cleanup(func() { release() })
	hold := func() error {
		var list struct {
			TapServices []struct{ ID string } `json:"tap_services"`
		}
		if err := getJSON(base+"/v2.0/taas/tap_services", &list); err != nil {
			return err
		}
		if len(list.TapServices) == 0 {
			return fmt.Errorf("no tap service to capture")
		}
		// Each capture ends on its own after 2 minutes, should the test
		// not get to release it.
		url := base + "/v2.0/taas/tap_services/" + list.TapServices[0].ID + "/capture?duration=120"
		// The dialog's own captures end within about a second of the
		// page closing them (taasd checks the socket every 500 ms): a 409
		// meanwhile is retried.
		deadline := time.Now().Add(10 * time.Second)
		for len(held) < 8 {
			res, err := http.Get(url)
			if err != nil {
				return err
			}
			if res.StatusCode == http.StatusOK {
				held = append(held, res)
				continue
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusConflict || time.Now().After(deadline) {
				return fmt.Errorf("GET %s: %s: %s", url, res.Status, b)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}
	runScript(t, node, "capture", base, nil, map[string]func() error{"hold8": hold, "release8": release})
}

// getJSON decodes the JSON answer of GET url into out.
func getJSON(url string, out any) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, res.Status, b)
	}
	return json.Unmarshal(b, out)
}

// TestModel runs the unit tests of the dashboard's pure functions (rates,
// number formatting, which field an API error names, the Capture dialog's
// pcapng counter) under node's test runner; they need no browser. The
// counter also reads a capture that gopacket's pcapgo writer made, the
// library the appliance writes its streams with.
func TestModel(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("the dashboard's unit tests need node (Debian package nodejs): not found in PATH")
	}
	fixture, want := writePcapng(t)
	cmd := exec.Command(node, "--test", "model.test.mjs", "pcapng.test.mjs")
	cmd.Dir = "e2e"
	cmd.Env = append(os.Environ(), "PCAPNG_FIXTURE="+fixture, "PCAPNG_FIXTURE_WANT="+want)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test model.test.mjs pcapng.test.mjs: %v\n%s", err, out)
	}
	// A file that fails to load runs no test and still exits 0 on some
	// node versions: insist on passes and no failures, and on the fixture's
	// test having run.
	if !regexp.MustCompile(`(?m)^# pass [1-9]`).Match(out) || !strings.Contains(string(out), "# fail 0") ||
		!strings.Contains(string(out), "# skipped 0") {
		t.Fatalf("node --test: want passing tests, no failures and none skipped:\n%s", out)
	}
}

// writePcapng writes a pcapng file as the appliance's capture endpoint
// does (pcapgo's NgWriter: an interface of nanosecond timestamps, packets
// of several sizes, statistics blocks on the way and at the end), and
// returns its path and what a reader should count, as JSON.
func writePcapng(t *testing.T) (path, want string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "fixture.pcapng")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := pcapgo.NewNgWriterInterface(f, pcapgo.NgInterface{Name: "tap_service test", LinkType: layers.LinkTypeEthernet,
		SnapLength: 262144, TimestampResolution: 9}, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1700000000, 0)
	const packets = 40
	for i := range packets {
		size := 60 + 37*i // 60 to 1503 bytes: blocks of every padding
		data := make([]byte, size)
		ci := gopacket.CaptureInfo{Timestamp: start.Add(time.Duration(i) * time.Millisecond), CaptureLength: size, Length: size}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			stats := pcapgo.NgInterfaceStatistics{LastUpdate: ci.Timestamp, PacketsReceived: uint64(i + 1), PacketsDropped: uint64(i)}
			if err := w.WriteInterfaceStats(0, stats); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return path, fmt.Sprintf(`{"packets": %d, "received": %d, "dropped": %d}`, packets, packets, packets-1)
}
