package main

// Tests of taasd's process lifecycle (issue 9), on the real binary started
// by testutil.StartTaasd: SIGHUP reloads the tokens file, and what a
// restart costs the monitors.

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestReload rewrites the tokens file of a running taasd and sends
// SIGHUP: an added token works and a removed one gets 401 as soon as the
// reload is logged; a file with a bad line keeps the previous tokens and
// logs the line; a role taasd does not know is a warning naming the file,
// line and role, at start and at reload; the log gives counts, never
// tokens; taasd stays up.
func TestReload(t *testing.T) {
	bin := testutil.BuildTaasd(t)
	t.Run("tokens", func(t *testing.T) { testReloadTokens(t, bin) })
	t.Run("noauth", func(t *testing.T) { testReloadNoauth(t, bin) })
}

func testReloadTokens(t *testing.T, bin string) {
	file := filepath.Join(t.TempDir(), "tokens")
	write := func(text string) {
		t.Helper()
		// As an operator should: a new file renamed over the old one.
		if err := os.WriteFile(file+".new", []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
	const unknownRole = "tokens file: role unknown to taasd"
	write("tok-alpha-5f1e proj-a member\ntok-bravo-93c2 proj-b member,_member_\n")
	d := testutil.StartTaasd(t, bin, "--auth", "token", "--tokens", file)
	if line := logLine(d.Logs(), unknownRole); !strings.Contains(line, "level=WARN") ||
		!strings.Contains(line, "file="+file+" line=2 role=_member_") {
		t.Errorf("start with role _member_ logged %q, want a warning naming %s line 2", line, file)
	}
	want := func(token string, status int) {
		t.Helper()
		if got := statusWithToken(t, d.URL, token); got != status {
			t.Errorf("GET /v2.0/taas/tap_services with %s = %d, want %d", token, got, status)
		}
	}
	want("tok-alpha-5f1e", 200)
	want("tok-charlie-07ad", 401)

	write("# alpha removed, charlie added\ntok-bravo-93c2 proj-b member,_member_\ntok-charlie-07ad proj-c member,auditor\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "tokens reloaded", 1)
	want("tok-alpha-5f1e", 401)
	want("tok-bravo-93c2", 200)
	want("tok-charlie-07ad", 200)
	if line := logLine(d.Logs(), "tokens reloaded"); !strings.Contains(line, "tokens=2 added=1 removed=1 changed=0") {
		t.Errorf("reload logged %q, want the counts tokens=2 added=1 removed=1 changed=0", line)
	}
	if n := strings.Count(d.Logs(), unknownRole); n != 3 {
		t.Errorf("%d warnings of unknown roles after the reload, want 3 (line 2 at start, lines 2 and 3 at reload)", n)
	}
	if line := logLine(d.Logs(), unknownRole); !strings.Contains(line, "file="+file+" line=3 role=auditor") {
		t.Errorf("reload with role auditor logged %q, want a warning naming %s line 3", line, file)
	}

	write("tok-bravo-93c2 proj-b member\ntok-delta-4b0e proj-d\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "reload tokens: kept the previous tokens", 1)
	if line := logLine(d.Logs(), "reload tokens"); !strings.Contains(line, "level=ERROR") || !strings.Contains(line, file+":2:") {
		t.Errorf("a bad tokens file logged %q, want an error naming %s:2", line, file)
	}
	want("tok-charlie-07ad", 200)
	want("tok-delta-4b0e", 401)
	select {
	case <-d.Exited():
		t.Fatalf("taasd exited after SIGHUP:\n%s", d.Logs())
	default:
	}
	for _, tok := range []string{"tok-alpha", "tok-bravo", "tok-charlie", "tok-delta"} {
		if strings.Contains(d.Logs(), tok) {
			t.Errorf("taasd logged token %s", tok)
		}
	}
}

// testReloadNoauth: SIGHUP to a noauth taasd only logs.
func testReloadNoauth(t *testing.T, bin string) {
	d := testutil.StartTaasd(t, bin)
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "SIGHUP: nothing to reload", 1)
	if got := statusWithToken(t, d.URL, ""); got != 200 {
		t.Errorf("GET after SIGHUP = %d, want 200", got)
	}
}

func statusWithToken(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest("GET", url+"/v2.0/taas/tap_services", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitLog waits (up to 10 s) until taasd has logged substr n times.
func waitLog(t *testing.T, d *testutil.Taasd, substr string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(d.Logs(), substr) < n {
		if time.Now().After(deadline) {
			t.Fatalf("taasd did not log %q %d times within 10s:\n%s", substr, n, d.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logLine is the last line of logs that contains substr.
func logLine(logs, substr string) string {
	lines := strings.Split(logs, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], substr) {
			return lines[i]
		}
	}
	return ""
}

// TestStop sends SIGTERM to taasd --dataplane xdp with a capture on the
// AF_XDP path and an events stream open: it exits 0 within a bound, the
// stream ends, and the log is clean (no warning or error) and ends with
// how long the stop took. It prints the stop's phases from the log.
func TestStop(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	tp := newE2ETopo(t)
	td := testutil.StartTaasd(t, testutil.BuildTaasd(t), "--dataplane", "xdp", "--log-level", "debug")
	d := &xdpDaemon{url: td.URL}
	src := d.createPort(t, "vm-a", "fa:16:3e:00:00:0a", tp.capIf)
	mon := d.createPort(t, "monitor", "fa:16:3e:00:00:99", tp.monIf)
	flow := d.createFlow(t, "both", d.createService(t, "svc", mon), src, "BOTH", nil)
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")
	resp, err := http.Get(td.URL + "/v2.0/taas/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	streamDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, resp.Body) // until taasd ends the stream
		close(streamDone)
	}()

	before := len(td.Logs())
	sent := time.Now()
	if err := td.Stop(t); err != nil {
		t.Errorf("taasd after SIGTERM: %v, want exit status 0", err)
	}
	took := time.Since(sent)
	if took > 10*time.Second {
		t.Errorf("taasd took %v to exit after SIGTERM, want well under 10s", took)
	}
	select {
	case <-streamDone:
	case <-time.After(5 * time.Second):
		t.Error("the events stream was still open 5s after taasd exited")
	}
	logs := td.Logs()[before:]
	for _, bad := range []string{"level=WARN", "level=ERROR"} {
		if line := logLine(logs, bad); line != "" {
			t.Errorf("stop logged %q", line)
		}
	}
	if line := logLine(logs, "msg=\"taasd stopped\""); !strings.Contains(line, "took=") {
		t.Errorf("the log does not end with how long the stop took:\n%s", logs)
	}
	phases := []string{"SIGTERM"}
	at := []time.Time{sent}
	for _, msg := range []string{"msg=stopped component=control", "msg=\"capture detached\"", "msg=\"monitor closed\"",
		"msg=\"taasd stopped\""} {
		ts, ok := strings.CutPrefix(logLine(logs, msg), "time=")
		if tm, err := time.Parse(time.RFC3339Nano, strings.Fields(ts + " ")[0]); ok && err == nil {
			phases, at = append(phases, msg), append(at, tm)
		}
	}
	for i := 1; i < len(phases); i++ {
		t.Logf("stop: %-40s +%5.1f ms", phases[i], at[i].Sub(at[i-1]).Seconds()*1000)
	}
	t.Logf("stop: SIGTERM to exit %.1f ms", took.Seconds()*1000)
}

// The restart-loss measurement's traffic: a paced stream, bounded in rate,
// count and time.
const (
	lossRate      = 20000 // frames per second
	lossMaxTime   = 10 * time.Second
	lossMaxFrames = lossRate * int(lossMaxTime/time.Second)
	lossBefore    = 500 * time.Millisecond // of traffic before the restart
	lossAfter     = 500 * time.Millisecond // of copies after they resume
)

// TestRestartLoss streams frames through taasd --dataplane xdp at 20 kpps
// while it is restarted (SIGTERM, then the same binary again on the same
// database), and counts the copies at the monitor: it prints how many
// frames the restart lost and the gap in ms, on the AF_XDP path (the
// monitor's peer takes no redirected frames) and on the fast path (GRO on
// the peer, gotcha 10), and for a restart by SIGUSR2, which hands the fast
// path off to the next taasd. It asserts that the copies resume, that the
// program stays attached across a handoff and is taken over, and that
// SIGTERM leaves no program attached.
func TestRestartLoss(t *testing.T) {
	testutil.RequireRoot(t, e2eRootWhy)
	bin := testutil.BuildTaasd(t)
	for _, tc := range []struct {
		name          string
		fast, handoff bool
	}{{"af_xdp", false, false}, {"fast", true, false}, {"fast_handoff", true, true}} {
		t.Run(tc.name, func(t *testing.T) { measureRestartLoss(t, bin, tc.fast, tc.handoff) })
	}
}

// xdpAttached reports whether a program is attached to iface.
func xdpAttached(t *testing.T, iface string) bool {
	t.Helper()
	return strings.Contains(testutil.Run(t, "ip", "-d", "link", "show", "dev", iface), "prog/xdp")
}

func measureRestartLoss(t *testing.T, bin string, fast, handoff bool) {
	var mu sync.Mutex
	got := make([]bool, lossMaxFrames)
	dups := 0 // copies of a frame seen twice (two programs at a takeover)
	keep := func(f []byte) bool {
		if n, ok := packettest.Seq(f); ok && int(n) < lossMaxFrames {
			mu.Lock()
			if got[n] {
				dups++
			}
			got[n] = true
			mu.Unlock()
		}
		return false // counted here, not kept
	}
	tp := newE2ETopoKeep(t, keep)
	if fast {
		testutil.Run(t, "ip", "netns", "exec", tp.monNS, "ethtool", "-K", tp.monIf+"p", "gro", "on")
	}
	pinDir := testutil.BPFFS(t)
	td := testutil.StartTaasd(t, bin, "--dataplane", "xdp", "--pin-dir", pinDir)
	d := &xdpDaemon{url: td.URL}
	vmA, vmB := "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
	src := d.createPort(t, "vm-a", vmA, tp.capIf)
	mon := d.createPort(t, "monitor", "fa:16:3e:00:00:99", tp.monIf)
	svc := d.createService(t, "svc", mon)
	flow := d.createFlow(t, "both", svc, src, "BOTH", nil)
	d.waitStatus(t, "tap_flow", flow, "ACTIVE")
	waitFastPath(t, d.url, tp.capIf, fast)

	// The sender: frame seq goes at sent[seq] after start, in 1 ms bursts.
	frame := packettest.Frame(packettest.MustMAC(vmB), packettest.MustMAC(vmA), nil, 0, 60)
	sent := make([]time.Duration, lossMaxFrames)
	var stop atomic.Bool
	var nsent atomic.Int64
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		seq := 0
		for seq < lossMaxFrames && !stop.Load() {
			due := min(int(time.Since(start).Seconds()*lossRate)+1, lossMaxFrames)
			for ; seq < due; seq++ {
				binary.BigEndian.PutUint32(frame[14+8:], uint32(seq))
				if err := tp.inject.Send(frame); err != nil {
					done <- err
					return
				}
				sent[seq] = time.Since(start)
				nsent.Store(int64(seq + 1))
			}
			time.Sleep(time.Millisecond)
		}
		done <- nil
	}()
	received := func(from int) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ok := range got[from:nsent.Load()] {
			if ok {
				return true
			}
		}
		return false
	}

	time.Sleep(lossBefore)
	tTerm := time.Since(start)
	if handoff {
		if err := td.Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		select {
		case <-td.Exited():
		case <-time.After(15 * time.Second):
			t.Fatal("taasd did not exit within 15s of SIGUSR2")
		}
		if code := td.Cmd.ProcessState.ExitCode(); code != exitHandoff {
			t.Errorf("taasd exited %d after SIGUSR2, want %d", code, exitHandoff)
		}
		if !xdpAttached(t, tp.capIf) {
			t.Errorf("no program attached to %s after the handoff", tp.capIf)
		}
	} else if err := td.Stop(t); err != nil {
		t.Errorf("taasd after SIGTERM: %v", err)
	}
	tExited := time.Since(start)
	afterExit := int(nsent.Load())
	td = td.Restart(t)
	tServing := time.Since(start)
	for !received(afterExit) && time.Since(start) < lossMaxTime {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(lossAfter)
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the last copies reach the capture
	n := int(nsent.Load())
	if ents, err := os.ReadDir(pinDir); err == nil && len(ents) > 0 {
		t.Errorf("%d pins left in %s after the restart, want every one taken over", len(ents), pinDir)
	}
	if handoff && !strings.Contains(td.Logs(), "capture taken over from the previous process") {
		t.Errorf("the restarted taasd did not log the takeover")
	}
	if err := td.Stop(t); err != nil {
		t.Errorf("taasd after SIGTERM: %v", err)
	}
	if xdpAttached(t, tp.capIf) {
		t.Errorf("a program is still attached to %s after SIGTERM", tp.capIf)
	}

	mu.Lock()
	defer mu.Unlock()
	copies, gapFrom, gapLen, run := 0, 0, 0, 0
	for i, ok := range got[:n] {
		if ok {
			copies++
			run = 0
			continue
		}
		if run++; run > gapLen {
			gapFrom, gapLen = i-run+1, run
		}
	}
	if gapLen > 0 && gapFrom+gapLen == n {
		t.Fatalf("no copies after frame %d of %d: taasd did not resume copying within %v", gapFrom, n, lossMaxTime)
	}
	gapStart, gapEnd := time.Duration(0), time.Duration(0)
	if gapFrom > 0 {
		gapStart = sent[gapFrom-1]
	}
	if gapLen > 0 {
		gapEnd = sent[gapFrom+gapLen]
	} else {
		gapStart = 0
	}
	path := "af_xdp"
	if fast {
		path = "fast"
	}
	if handoff {
		path += " (SIGUSR2 handoff)"
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", d.Seconds()*1000) }
	t.Logf("restart loss on the %s path at %d pps: %d of %d frames lost, %d in the longest gap, of %s (%s to %s), %d elsewhere; %d copies twice",
		path, lossRate, n-copies, n, gapLen, ms(gapEnd-gapStart), ms(gapStart), ms(gapEnd), n-copies-gapLen, dups)
	t.Logf("timeline: signal at %s, exited at %s (stop took %s), serving again at %s (start took %s)",
		ms(tTerm), ms(tExited), ms(tExited-tTerm), ms(tServing), ms(tServing-tExited))
}

// waitFastPath waits (boundedly) until /metrics says capture interface
// iface takes the fast path, or the AF_XDP path when fast is false.
func waitFastPath(t *testing.T, url, iface string, fast bool) {
	t.Helper()
	path := broker.PathAFXDP
	if fast {
		path = broker.PathFast
	}
	want := fmt.Sprintf("taas_interface_path{iface=%q,path=%q} 1", iface, path)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if strings.Contains(metricsText(t, url), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /metrics lacks %q after 10s", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
