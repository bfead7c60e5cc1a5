package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/taas-appliance/taas/broker"
)

// feedSource is a live capture the test feeds: the stream's code runs as
// with the broker's, without a data plane behind it. It behaves as a
// broker.LiveCapture: offers after Stop are ignored, and Stop closes
// Packets and counts what it drains as dropped, so that Stats is final
// after Stop.
type feedSource struct {
	target   broker.LiveTarget
	snaplen  int
	ch       chan *broker.LivePacket
	released atomic.Int64
	stopped  chan struct{}
	stop     sync.Once

	mu                sync.Mutex
	closed            bool
	captured, dropped uint64
}

func newFeedSource(t broker.LiveTarget, snaplen, queue int) *feedSource {
	return &feedSource{target: t, snaplen: snaplen, ch: make(chan *broker.LivePacket, queue), stopped: make(chan struct{})}
}

// offer queues p, or counts it dropped when the queue is full, as the
// data plane does; after Stop it is ignored.
func (f *feedSource) offer(p *broker.LivePacket) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	select {
	case f.ch <- p:
		f.captured++
	default:
		f.dropped++
	}
}

// addDropped counts n frames dropped, as the kernel's losses are.
func (f *feedSource) addDropped(n uint64) {
	f.mu.Lock()
	f.dropped += n
	f.mu.Unlock()
}

// end closes Packets, as the data plane does when the target goes.
func (f *feedSource) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.ch)
	}
}

func (f *feedSource) Packets() <-chan *broker.LivePacket { return f.ch }
func (f *feedSource) Release(*broker.LivePacket)         { f.released.Add(1) }
func (f *feedSource) Stop() {
	f.end()
	var n uint64
	for range f.ch {
		f.released.Add(1)
		n++
	}
	f.mu.Lock()
	f.captured -= n
	f.dropped += n
	f.mu.Unlock()
	f.stop.Do(func() { close(f.stopped) })
}
func (f *feedSource) Stats() broker.LiveStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return broker.LiveStats{Captured: f.captured, Dropped: f.dropped}
}

// feeder hands the test every source the server starts.
type feeder struct {
	started chan *feedSource
	// closed makes every source end at once (its target gone).
	closed bool
	// err, when set, is StartLive's error.
	err error
}

func (fd *feeder) start(t broker.LiveTarget, snaplen int) (liveSource, error) {
	if fd.err != nil {
		return nil, fd.err
	}
	src := newFeedSource(t, snaplen, 1024)
	if fd.closed {
		src.end()
	}
	if fd.started != nil {
		fd.started <- src
	}
	return src, nil
}

// liveFixture is a token-mode server with a tap service, flow and mirror
// of proj-a, and the callers of isoTokens plus a reader of each project.
type liveFixture struct {
	ts                  *testServer
	src, mon            string // the ports
	svc, flow, mirror   string
	svcName             string
	paths               map[string]string // resource -> its item path
	resources           []string
	hRA, hRB, hAdminTok string
}

func startLiveFixture(t *testing.T, cfg Config) *liveFixture {
	t.Helper()
	toks, err := LoadTokens(writeTokens(t, isoTokens+"tr proj-a reader\ntrb proj-b reader\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Auth, cfg.Tokens = AuthToken, toks
	cfg.Interfaces = map[string]string{"cap0": RoleCapture, "mon0": RoleMonitor}
	ts := startServer(t, cfg)
	src := ts.createPortIn("proj-a", "a-src", "cap0", "", hAdmin)
	mon := ts.createPortIn("proj-a", "a-mon", "mon0", "", hAdmin)
	fx := &liveFixture{ts: ts, src: src, mon: mon, svcName: "web-svc", hRA: "X-Auth-Token: tr", hRB: "X-Auth-Token: trb", hAdminTok: hAdmin}
	fx.svc = ts.createService(fx.svcName, mon, hA)
	fx.flow = ts.createFlow("f", fx.svc, src, "BOTH", nil, hA)
	fx.mirror = ts.createMirror(src, `{"IN": 7}`, "198.51.100.7", "gre", hA)
	fx.resources = []string{"tap_service", "tap_flow", "tap_mirror"}
	fx.paths = map[string]string{"tap_service": "/v2.0/taas/tap_services/" + fx.svc,
		"tap_flow": "/v2.0/taas/tap_flows/" + fx.flow, "tap_mirror": "/v2.0/taas/tap_mirrors/" + fx.mirror}
	return fx
}

// capture is one capture request's answer, its body read to the end.
type capture struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
}

// getCapture runs a capture to its end.
func getCapture(t *testing.T, base, path string, headers ...string) capture {
	t.Helper()
	resp := openCapture(t, context.Background(), base, path, headers...)
	defer resp.Body.Close()
	start := time.Now()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", path, err)
	}
	return capture{status: resp.StatusCode, header: resp.Header, body: body, took: time.Since(start)}
}

func openCapture(t *testing.T, ctx context.Context, base, path string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

// TestParseLiveParams: the accepted parameters and their values.
func TestParseLiveParams(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want liveParams
		err  string
	}{
		{"", liveParams{duration: 10 * time.Second, snaplen: 262144}, ""},
		{"duration=30&snaplen=256", liveParams{duration: 30 * time.Second, snaplen: 256}, ""},
		{"count=10000", liveParams{duration: 10 * time.Second, count: 10000, snaplen: 262144}, ""},
		{"duration=3600&count=1000000000&snaplen=64&", liveParams{duration: time.Hour, count: 1e9, snaplen: 64}, ""},
		{"%64uration=007", liveParams{duration: 7 * time.Second, snaplen: 262144}, ""},
		{"duration=-1", liveParams{}, "Invalid input for duration. Reason: '-1' is not an integer from 1 to 3600 (seconds)."},
		{"duration=0", liveParams{}, "'0' is not an integer from 1 to 3600"},
		{"duration=3601", liveParams{}, "'3601' is not an integer"},
		{"duration=1e3", liveParams{}, "'1e3' is not an integer"},
		{"duration=+5", liveParams{}, "' 5' is not an integer"},
		{"duration=5.0", liveParams{}, "'5.0' is not"},
		{"duration=", liveParams{}, "'' is not an integer"},
		{"duration", liveParams{}, "Invalid input for duration"},
		{"duration=%zz", liveParams{}, "'%zz' is not"},
		{"count=0", liveParams{}, "Invalid input for count. Reason: '0' is not an integer from 1 to 1000000000 (frames)."},
		{"count=1000000001", liveParams{}, "Invalid input for count"},
		{"count=99999999999999999999999", liveParams{}, "Invalid input for count"},
		{"snaplen=63", liveParams{}, "Invalid input for snaplen. Reason: '63' is not an integer from 64 to 262144 (bytes)."},
		{"snaplen=262145", liveParams{}, "Invalid input for snaplen"},
		{"snaplen=abc", liveParams{}, "'abc' is not"},
		{"duration=5&duration=5", liveParams{}, "Query parameter duration is given more than once."},
		{"Duration=5", liveParams{}, "Unknown query parameter Duration: a capture takes duration, count and snaplen."},
		{"fields=id", liveParams{}, "Unknown query parameter fields"},
		{"%zz=1", liveParams{}, "Malformed query parameter %zz."},
	} {
		got, err := parseLiveParams(tc.raw)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("parseLiveParams(%q) = %+v, %v, want %+v", tc.raw, got, err, tc.want)
			}
			continue
		}
		var ne *neutronError
		if !errors.As(err, &ne) || ne.Status != 400 || !strings.Contains(ne.Message, tc.err) {
			t.Errorf("parseLiveParams(%q) = %v, want 400 %q", tc.raw, err, tc.err)
		}
	}
}

// FuzzLiveParams: parseLiveParams never panics, refuses with a 400, and
// agrees with an independent reading through url.ParseQuery wherever that
// one parses: only the three names, once each, plain decimal values within
// their bounds.
func FuzzLiveParams(f *testing.F) {
	bounds := map[string][2]int{"duration": {1, 3600}, "count": {1, 1e9}, "snaplen": {64, 262144}}
	digits := regexp.MustCompile(`^[0-9]+$`)
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := parseLiveParams(raw)
		var ne *neutronError
		if err != nil && (!errors.As(err, &ne) || ne.Status != 400) {
			t.Fatalf("parseLiveParams(%q) = %v, want a 400", raw, err)
		}
		if err == nil && (p.duration < time.Second || p.duration > time.Hour || p.count > 1e9 ||
			p.snaplen < 64 || p.snaplen > 262144) {
			t.Fatalf("parseLiveParams(%q) = %+v: out of bounds", raw, p)
		}
		q, qerr := url.ParseQuery(raw)
		if qerr != nil {
			return
		}
		want := true
		got := map[string]int{}
		for k, vs := range q {
			b, known := bounds[k]
			if !known || len(vs) != 1 || !digits.MatchString(vs[0]) {
				want = false
				break
			}
			n, cerr := strconv.Atoi(vs[0])
			if cerr != nil || n < b[0] || n > b[1] {
				want = false
				break
			}
			got[k] = n
		}
		if (err == nil) != want {
			t.Fatalf("parseLiveParams(%q) = %v, want ok %v", raw, err, want)
		}
		if err != nil {
			return
		}
		if n, ok := got["duration"]; ok && p.duration != time.Duration(n)*time.Second ||
			got["count"] != int(p.count) || got["snaplen"] != 0 && got["snaplen"] != p.snaplen {
			t.Fatalf("parseLiveParams(%q) = %+v, want %v", raw, p, got)
		}
	})
}

// TestLiveBadParams: over HTTP, every bad parameter is a 400 NeutronError
// and no capture starts.
func TestLiveBadParams(t *testing.T) {
	fd := &feeder{}
	ts := startServer(t, Config{startLive: fd.start})
	svc := ts.createService("s", ts.createPort("mon", "", ""))
	p := "/v2.0/taas/tap_services/" + svc + "/capture?"
	var tests []scenario
	for _, q := range []string{"duration=-1", "duration=0", "duration=99999999999", "duration=abc", "duration=1e3",
		"duration=", "duration=5&duration=5", "count=-5", "count=0", "count=1000000001", "count=1.5",
		"snaplen=0", "snaplen=63", "snaplen=262145", "snaplen=", "snaplen=64&snaplen=65", "unknown=1",
		"duration=5&foo", "%zz=1"} {
		tests = append(tests, scenario{name: q, method: "GET", path: p + q, status: 400, want: ""})
	}
	ts.runScenarios(t, tests)
	if n := ts.srv.live.running(); n != 0 {
		t.Errorf("running captures = %d, want 0", n)
	}
}

// TestLiveScoping: a capture answers 404 exactly where show does (another
// project's resource, an unknown id, a reader of another project, and a
// reader of services and flows, which are members' reads), with show's
// NeutronError; where show answers, the capture streams.
func TestLiveScoping(t *testing.T) {
	fx := startLiveFixture(t, Config{startLive: (&feeder{closed: true}).start})
	ts := fx.ts
	const missing = "5e3c2b1a-0f9e-4d8c-b7a6-958473625140"
	who := map[string]string{"admin": hAdmin, "member a": hA, "member b": hB, "reader a": fx.hRA, "reader b": fx.hRB}
	for _, res := range fx.resources {
		for _, item := range []string{fx.paths[res], fx.paths[res][:strings.LastIndex(fx.paths[res], "/")+1] + missing} {
			for name, h := range who {
				t.Run(res+"/"+name+"/"+item[len(item)-4:], func(t *testing.T) {
					show := ts.do("GET", item, "", h)
					c := getCapture(t, ts.base, item+"/capture?duration=5", h)
					if c.status != show.status {
						t.Fatalf("capture = %d, show = %d", c.status, show.status)
					}
					if c.status != 200 {
						r := response{status: c.status, raw: string(c.body)}
						if err := json.Unmarshal(c.body, &r.body); err != nil {
							t.Fatal(err)
						}
						typ, msg := neutronErr(t, r)
						styp, smsg := neutronErr(t, show)
						if typ != styp || msg != smsg || c.status != 404 {
							t.Errorf("capture = %d %s %q, show = %s %q", c.status, typ, msg, styp, smsg)
						}
						return
					}
					if ct := c.header.Get("Content-Type"); ct != "application/x-pcapng" {
						t.Errorf("Content-Type = %q", ct)
					}
					if _, err := pcapgo.NewNgReader(bytes.NewReader(c.body), pcapgo.DefaultNgReaderOptions); err != nil {
						t.Errorf("not a pcapng: %v", err)
					}
				})
			}
		}
	}
	// Who may capture what, as show says.
	for _, tc := range []struct {
		res, who string
		want     int
	}{
		{"tap_service", hA, 200}, {"tap_flow", hA, 200}, {"tap_mirror", hA, 200}, {"tap_mirror", fx.hRA, 200},
		{"tap_service", fx.hRA, 404}, {"tap_service", hB, 404}, {"tap_mirror", fx.hRB, 404}, {"tap_flow", hAdmin, 200},
	} {
		if c := getCapture(t, ts.base, fx.paths[tc.res]+"/capture", tc.who); c.status != tc.want {
			t.Errorf("%s capture by %s = %d, want %d", tc.res, tc.who, c.status, tc.want)
		}
	}
}

// TestLiveLimit: the 9th capture while 8 run is a 409; a client that
// closes its connection ends its capture (the running gauge drops) and
// frees its slot; a data plane's refusal frees the slot too.
func TestLiveLimit(t *testing.T) {
	ts := startServer(t, Config{}) // NullDataPlane: captures that see nothing
	svc := ts.createService("s", ts.createPort("mon", "", ""))
	path := "/v2.0/taas/tap_services/" + svc + "/capture?duration=60"
	gauge := func() string {
		m := regexp.MustCompile(`(?m)^taas_live_captures (\d+)$`).FindStringSubmatch(scrape(t, MetricsHandler(NullDataPlane{}, ts.srv.LiveMetrics())))
		if m == nil {
			t.Fatal("no taas_live_captures in /metrics")
		}
		return m[1]
	}
	var cancels []context.CancelFunc
	for i := 0; i < broker.MaxLive; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		resp := openCapture(t, ctx, ts.base, path)
		if resp.StatusCode != 200 {
			t.Fatalf("capture %d = %d", i+1, resp.StatusCode)
		}
		go func() { _, _ = io.Copy(io.Discard, resp.Body) }() // ends with an error when cancelled
		cancels = append(cancels, cancel)
	}
	if g := gauge(); g != "8" {
		t.Fatalf("taas_live_captures = %s, want 8", g)
	}
	r := ts.do("GET", path, "")
	if typ, msg := neutronErr(t, r); r.status != 409 || typ != "LiveCaptureLimit" || !strings.Contains(msg, "8 live captures already run") {
		t.Fatalf("9th capture = %d %s %q, want 409 LiveCaptureLimit", r.status, typ, msg)
	}
	closed := time.Now()
	cancels[0]()
	waitFor(t, "the closed client's capture to end", func() bool { return gauge() == "7" })
	t.Logf("a closed client's capture ended %v after the close", time.Since(closed).Round(time.Millisecond))
	if c := getCapture(t, ts.base, "/v2.0/taas/tap_services/"+svc+"/capture?duration=1"); c.status != 200 {
		t.Fatalf("capture after a slot was freed = %d %s", c.status, c.body)
	}
	for _, cancel := range cancels {
		cancel()
	}
	waitFor(t, "every capture to end", func() bool { return ts.srv.live.running() == 0 })

	for _, tc := range []struct {
		err    error
		status int
		typ    string
	}{
		{broker.ErrLiveLimit, 409, "LiveCaptureLimit"},
		{errors.New("no room"), 503, "ServiceUnavailable"},
	} {
		fts := startServer(t, Config{startLive: (&feeder{err: tc.err}).start})
		svc := fts.createService("s", fts.createPort("mon", "", ""))
		r := fts.do("GET", "/v2.0/taas/tap_services/"+svc+"/capture", "")
		if typ, _ := neutronErr(t, r); r.status != tc.status || typ != tc.typ {
			t.Errorf("StartLive error %v: %d %s, want %d %s", tc.err, r.status, typ, tc.status, tc.typ)
		}
		if n := fts.srv.live.running(); n != 0 {
			t.Errorf("StartLive error %v: running = %d, want 0", tc.err, n)
		}
	}
}

// TestLiveProjectLimit: one project's members and readers run at most 4
// captures at once (409 naming the project's limit), another project and
// admins take the other slots, up to 8.
func TestLiveProjectLimit(t *testing.T) {
	fx := startLiveFixture(t, Config{}) // NullDataPlane: captures that see nothing
	ts := fx.ts
	bSvc := ts.createService("b-svc", ts.createPortIn("proj-b", "b-mon", "mon0", "", hAdmin), hB)
	open := func(path, h string) response {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		resp := openCapture(t, ctx, ts.base, path+"/capture?duration=60", h)
		if resp.StatusCode != 200 {
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			r := response{status: resp.StatusCode, raw: string(body)}
			if err := json.Unmarshal(body, &r.body); err != nil {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			return r
		}
		go func() { _, _ = io.Copy(io.Discard, resp.Body) }() // ends with an error when cancelled
		return response{status: 200}
	}
	for _, tc := range []struct {
		name, path, who string
		status          int
		msg             string
	}{
		{"member a 1", fx.paths["tap_service"], hA, 200, ""},
		{"member a 2", fx.paths["tap_flow"], hA, 200, ""},
		{"member a 3", fx.paths["tap_mirror"], hA, 200, ""},
		{"reader a 4", fx.paths["tap_mirror"], fx.hRA, 200, ""},
		{"member a 5", fx.paths["tap_service"], hA, 409, "project proj-a already runs 4 live captures, the most one project runs at once"},
		{"reader a 5", fx.paths["tap_mirror"], fx.hRA, 409, "project proj-a already runs 4 live captures"},
		{"member b 1", "/v2.0/taas/tap_services/" + bSvc, hB, 200, ""},
		{"admin 1", fx.paths["tap_service"], hAdmin, 200, ""},
		{"admin 2", fx.paths["tap_service"], hAdmin, 200, ""},
		{"admin 3", "/v2.0/taas/tap_services/" + bSvc, hAdmin, 200, ""},
		{"admin 4", fx.paths["tap_flow"], hAdmin, 409, "8 live captures already run"},
		{"member b 2", "/v2.0/taas/tap_services/" + bSvc, hB, 409, "8 live captures already run"},
	} {
		r := open(tc.path, tc.who)
		if r.status != tc.status {
			t.Fatalf("%s: capture = %d %s, want %d", tc.name, r.status, r.raw, tc.status)
		}
		if tc.status != 200 {
			if typ, msg := neutronErr(t, r); typ != "LiveCaptureLimit" || !strings.Contains(msg, tc.msg) {
				t.Errorf("%s: capture = %d %s %q, want 409 LiveCaptureLimit %q", tc.name, r.status, typ, msg, tc.msg)
			}
		}
	}
	if n := ts.srv.live.running(); n != broker.MaxLive {
		t.Errorf("running = %d, want %d", n, broker.MaxLive)
	}
}

// TestLiveTargetDeleted: deleting a capture's target ends the capture
// (with its final statistics block) though the data plane never had the
// target in its plan (NullDataPlane): the port's cascade (its service and
// that service's flow), and a tap mirror deleted itself; other captures
// run on.
func TestLiveTargetDeleted(t *testing.T) {
	fx := startLiveFixture(t, Config{})
	ts := fx.ts
	type result struct {
		body []byte
		err  error
	}
	done := map[string]chan result{}
	for _, res := range fx.resources {
		resp := openCapture(t, context.Background(), ts.base, fx.paths[res]+"/capture?duration=60", hA)
		if resp.StatusCode != 200 {
			t.Fatalf("%s capture = %d", res, resp.StatusCode)
		}
		ch := make(chan result, 1)
		done[res] = ch
		go func() {
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			ch <- result{b, err}
		}()
	}
	ended := func(res string) {
		t.Helper()
		select {
		case r := <-done[res]:
			if r.err != nil {
				t.Fatalf("%s capture: %v", res, r.err)
			}
			isbs := liveISBs(t, r.body)
			if len(isbs) == 0 || isbs[len(isbs)-1].EndTime.IsZero() {
				t.Errorf("%s capture: statistics blocks %+v, want a final one", res, isbs)
			}
		case <-time.After(20 * time.Second): // a bound on a hang; the capture runs 60 s
			t.Fatalf("%s capture runs on after its target was deleted", res)
		}
	}
	start := time.Now()
	ts.must(204, "DELETE", "/v2.0/ports/"+fx.mon, "", "", hAdmin)
	ended("tap_service")
	ended("tap_flow")
	t.Logf("the port's delete ended its service's and flow's captures in %v", time.Since(start).Round(time.Millisecond))
	select {
	case <-done["tap_mirror"]:
		t.Fatal("the mirror's capture ended with the monitor port")
	default:
	}
	ts.must(204, "DELETE", fx.paths["tap_mirror"], "", "", hA)
	ended("tap_mirror")
	waitFor(t, "the slots to be freed", func() bool { return ts.srv.live.running() == 0 })
}

// TestLiveHalfClose: a client that half-closes after its request (as
// `nc -N` does) still gets the whole capture, to its duration and its
// final statistics block.
func TestLiveHalfClose(t *testing.T) {
	ts := startServer(t, Config{})
	svc := ts.createService("s", ts.createPort("mon", "", ""))
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "GET /v2.0/taas/tap_services/%s/capture?duration=2 HTTP/1.1\r\nHost: x\r\n\r\n", svc); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("read after %v: %v", took, err)
	}
	isbs := liveISBs(t, body)
	t.Logf("a half-closed client's capture (duration=2) ended after %v with %d statistics blocks", took.Round(time.Millisecond), len(isbs))
	if resp.StatusCode != 200 || len(isbs) == 0 || isbs[len(isbs)-1].EndTime.IsZero() || took < 2*time.Second {
		t.Errorf("capture = %d after %v, statistics blocks %+v; want 200, a final block, at least 2 s", resp.StatusCode, took, isbs)
	}
}

// liveFrames are test frames of many sizes, each with its time.
func liveFrames() ([][]byte, []time.Time) {
	base := time.Unix(1_700_000_000, 123_456_789)
	var frames [][]byte
	var times []time.Time
	for i, n := range []int{60, 64, 65, 100, 255, 256, 257, 1514, 1518, 9000, 60, 1500} {
		f := make([]byte, n)
		for j := range f {
			f[j] = byte(i*31 + j*7)
		}
		copy(f, []byte{0x02, 0, 0, 0, 0, byte(i), 0x02, 0, 0, 0, 1, byte(i), 0x08, 0x00})
		frames = append(frames, f)
		times = append(times, base.Add(time.Duration(i)*1001*time.Nanosecond))
	}
	return frames, times
}

// feed hands frames to src as the data plane would, counting them.
func feed(src *feedSource, frames [][]byte, times []time.Time) {
	for i, f := range frames {
		src.offer(&broker.LivePacket{Time: times[i], Length: len(f), Data: f})
	}
}

// tshark runs tshark with args, stdin as its input; it returns stdout and
// stderr (where it also warns when it runs as root) and whether it
// succeeded.
func tshark(t *testing.T, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed (.ci/apt-packages.txt lists it)")
	}
	var out, errb bytes.Buffer
	cmd := exec.Command("tshark", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// pcapngBlocks are the numbers tshark's pcapng file dissector reads from
// a capture file: the IDB's snaplen and timestamp resolution, and each
// ISB's received and dropped counts.
type pcapngBlocks struct {
	snaplen, tsresol  string
	received, dropped []string
}

func readBlocks(t *testing.T, file string) pcapngBlocks {
	t.Helper()
	const opt = "pcapng.options.option.data.interface."
	out, errs, err := tshark(t, nil, "-r", file, "-X", "read_format:MIME Files Format", "-T", "fields", "-E", "occurrence=a",
		"-E", "aggregator=,", "-e", "pcapng.interface_description.snap_length", "-e", opt+"timestamp_resolution.value",
		"-e", opt+"received", "-e", opt+"dropped")
	if err != nil {
		t.Fatalf("tshark pcapng blocks of %s: %v\n%s", file, err, errs)
	}
	f := strings.Split(strings.TrimRight(out, "\n"), "\t")
	if len(f) != 4 {
		t.Fatalf("tshark pcapng blocks: %q", out)
	}
	return pcapngBlocks{snaplen: f[0], tsresol: f[1], received: strings.Split(f[2], ","), dropped: strings.Split(f[3], ",")}
}

// TestLiveStream: a capture's stream, read by tshark from stdin as it
// comes (curl | wireshark -k -i -) and from the file it was saved to, holds
// the frames the data plane handed over, byte for byte (cut to the
// snaplen), with their nanosecond timestamps and lengths, an interface
// block with the snaplen, nanosecond resolution and the resource's name,
// and a final statistics block with the drop count; the answer's headers
// say what it is.
func TestLiveStream(t *testing.T) {
	fd := &feeder{started: make(chan *feedSource, 1)}
	ts := startServer(t, Config{startLive: fd.start})
	svc := ts.createService("web", ts.createPort("mon", "", ""))
	frames, times := liveFrames()
	const snaplen = 256
	resp := openCapture(t, context.Background(), ts.base,
		fmt.Sprintf("/v2.0/taas/tap_services/%s/capture?count=%d&snaplen=%d", svc, len(frames), snaplen))
	defer resp.Body.Close()
	src := <-fd.started
	if want := (broker.LiveTarget{Kind: broker.LiveService, ID: svc}); src.target != want || src.snaplen != snaplen {
		t.Fatalf("StartLive(%+v, %d), want (%+v, %d)", src.target, src.snaplen, want, snaplen)
	}
	for k, re := range map[string]string{
		"Content-Type":           `^application/x-pcapng$`,
		"Content-Disposition":    `^attachment; filename="tap_service-` + svc + `-\d{8}T\d{6}Z\.pcapng"$`,
		"Cache-Control":          `^no-store$`,
		"X-Openstack-Request-Id": `^req-`,
	} {
		if v := resp.Header.Get(k); !regexp.MustCompile(re).MatchString(v) {
			t.Errorf("%s = %q, want %s", k, v, re)
		}
	}
	src.addDropped(7)
	go feed(src, frames, times)

	// tshark reads the stream as it comes, and the file it is saved to.
	file := filepath.Join(t.TempDir(), "live.pcapng")
	saved, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	out, errs, err := tshark(t, io.TeeReader(resp.Body, saved), "-r", "-", "-T", "fields",
		"-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len")
	saved.Close()
	if err != nil {
		t.Fatalf("tshark -r -: %v\n%s", err, errs)
	}
	rows := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(rows) != len(frames) {
		t.Fatalf("tshark -r - read %d frames, want %d:\n%s", len(rows), len(frames), out)
	}
	for i, row := range rows {
		want := fmt.Sprintf("%d.%09d\t%d\t%d", times[i].Unix(), times[i].Nanosecond(), len(frames[i]), min(len(frames[i]), snaplen))
		if row != want {
			t.Errorf("frame %d: tshark -r - reads %q, want %q", i+1, row, want)
		}
	}
	// From the file: the bytes, through tshark's own conversion.
	conv := filepath.Join(t.TempDir(), "live.pcap")
	if _, errs, err := tshark(t, nil, "-r", file, "-F", "nsecpcap", "-w", conv); err != nil {
		t.Fatalf("tshark -r %s -w: %v\n%s", file, err, errs)
	}
	cf, err := os.Open(conv)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	pr, err := pcapgo.NewReader(cf)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		data, ci, err := pr.ReadPacketData()
		if err != nil {
			t.Fatalf("frame %d: %v", i+1, err)
		}
		if want := f[:min(len(f), snaplen)]; !bytes.Equal(data, want) || !ci.Timestamp.Equal(times[i]) || ci.Length != len(f) {
			t.Errorf("frame %d = %d bytes at %v (length %d), want %d bytes at %v (length %d)", i+1, len(data),
				ci.Timestamp, ci.Length, len(want), times[i], len(f))
		}
	}
	b := readBlocks(t, file)
	last := len(b.dropped) - 1
	if b.snaplen != strconv.Itoa(snaplen) || b.tsresol != "9" || b.dropped[last] != "7" ||
		b.received[last] != strconv.Itoa(len(frames)) {
		t.Errorf("pcapng blocks = %+v, want snaplen %d, tsresol 9, a final ISB of %d received and 7 dropped", b,
			snaplen, len(frames))
	}
	ng, err := pcapgo.NewNgReader(bytes.NewReader(mustRead(t, file)), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	intf, err := ng.Interface(0)
	if want := "tap_service web (" + svc + ")"; err != nil || intf.Name != want {
		t.Errorf("interface name = %q, %v, want %q", intf.Name, err, want)
	}
	waitFor(t, "the stream to hand every frame back", func() bool { return src.released.Load() == int64(len(frames)) })
	waitFor(t, "the slot to be freed", func() bool { return ts.srv.live.running() == 0 })
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// liveBytes is a whole capture stream of frames, written by liveStream
// alone (no HTTP), ended by its count.
func liveBytes(t *testing.T, frames [][]byte, times []time.Time) []byte {
	t.Helper()
	src := newFeedSource(broker.LiveTarget{Kind: broker.LiveFlow, ID: "f"}, 0, len(frames))
	feed(src, frames, times)
	src.addDropped(3)
	ls := &liveStream{src: src, params: liveParams{duration: time.Minute, count: uint64(len(frames)), snaplen: liveMaxSnaplen},
		start: time.Now(), intf: pcapgo.NgInterface{Name: "tap_flow f (f)", SnapLength: liveMaxSnaplen, LinkType: 1}}
	var buf bytes.Buffer
	if end, n := ls.run(&buf, func() error { return nil }); end != liveEndCount || n != uint64(len(frames)) {
		t.Fatalf("run = %s, %d, want %s, %d", end, n, liveEndCount, len(frames))
	}
	return buf.Bytes()
}

// TestLiveInterrupted: a stream cut anywhere, as a dropped connection
// leaves it, is still read by tshark up to its last whole block: it lists
// every whole packet block before the cut, and says that the file was cut
// short (exiting non-zero) when the cut is inside a block.
func TestLiveInterrupted(t *testing.T) {
	frames, times := liveFrames()
	whole := liveBytes(t, frames, times)
	// The blocks' ends, from their length fields (little endian, as NgWriter writes).
	type block struct {
		typ      uint32
		end      int
		epbsUpTo int // packet blocks up to this one's end
	}
	var blocks []block
	epbs := 0
	for off := 0; off < len(whole); {
		typ, n := binary.LittleEndian.Uint32(whole[off:]), int(binary.LittleEndian.Uint32(whole[off+4:]))
		if typ == 6 {
			epbs++
		}
		off += n
		blocks = append(blocks, block{typ, off, epbs})
	}
	if epbs != len(frames) || blocks[len(blocks)-1].end != len(whole) {
		t.Fatalf("stream of %d bytes: %d packet blocks, want %d", len(whole), epbs, len(frames))
	}
	// Cuts: inside a packet block, at its end, inside the last packet
	// block, inside the final statistics block, and none.
	isb := len(blocks) - 1
	lastEPB := isb - 1
	for blocks[lastEPB].typ != 6 {
		lastEPB--
	}
	dir := t.TempDir()
	for _, c := range []struct {
		block int
		mid   bool
	}{{4, true}, {4, false}, {lastEPB, true}, {isb, true}, {isb, false}} {
		bl, start := blocks[c.block], blocks[c.block-1].end
		cut := bl.end
		if c.mid {
			cut = (start + bl.end) / 2
		}
		file := filepath.Join(dir, fmt.Sprintf("cut%d.pcapng", cut))
		if err := os.WriteFile(file, whole[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		out, errs, err := tshark(t, nil, "-r", file, "-T", "fields", "-e", "frame.len")
		got, want := len(strings.Fields(out)), bl.epbsUpTo
		if c.mid && bl.typ == 6 {
			want-- // this block is cut
		}
		if got != want || c.mid != (err != nil) {
			t.Errorf("cut at %d (block %d, type %d, ends at %d): tshark lists %d frames (err %v), want %d (err %v)\n%s",
				cut, c.block, bl.typ, bl.end, got, err, want, c.mid, errs)
		}
		if c.mid {
			t.Logf("tshark on a stream cut in block %d (type %d): %d frames, %v: %s", c.block, bl.typ, got, err,
				strings.TrimSpace(lastLine(errs)))
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// liveISBs reads a stream's interface statistics blocks.
func liveISBs(t *testing.T, body []byte) []pcapgo.NgInterfaceStatistics {
	t.Helper()
	var isbs []pcapgo.NgInterfaceStatistics
	opts := pcapgo.DefaultNgReaderOptions
	opts.StatisticsCallback = func(_ int, s pcapgo.NgInterfaceStatistics) { isbs = append(isbs, s) }
	r, err := pcapgo.NewNgReader(bytes.NewReader(body), opts)
	if err != nil {
		t.Fatalf("not a pcapng: %v", err)
	}
	for {
		if _, _, err := r.ReadPacketData(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read pcapng: %v", err)
			}
			return isbs
		}
	}
}

// TestLiveEnds: a capture ends at its duration, when its target goes
// (Packets closed) and when the server shuts down, each time with a final
// statistics block (with an end time) after the idle ones.
func TestLiveEnds(t *testing.T) {
	final := func(t *testing.T, body []byte) {
		t.Helper()
		isbs := liveISBs(t, body)
		if len(isbs) == 0 || isbs[len(isbs)-1].EndTime.IsZero() {
			t.Errorf("statistics blocks %+v: want a final one with an end time", isbs)
		}
	}
	t.Run("duration", func(t *testing.T) {
		ts := startServer(t, Config{})
		svc := ts.createService("s", ts.createPort("mon", "", ""))
		c := getCapture(t, ts.base, "/v2.0/tap_services/"+svc+"/capture?duration=1")
		t.Logf("duration=1 took %v, %d idle statistics blocks", c.took.Round(time.Millisecond), len(liveISBs(t, c.body))-1)
		if c.status != 200 || c.took < time.Second {
			t.Fatalf("duration=1: %d after %v", c.status, c.took)
		}
		final(t, c.body)
	})
	t.Run("target gone", func(t *testing.T) {
		ts := startServer(t, Config{startLive: (&feeder{closed: true}).start})
		svc := ts.createService("s", ts.createPort("mon", "", ""))
		c := getCapture(t, ts.base, "/v2.0/taas/tap_services/"+svc+"/capture?duration=60")
		t.Logf("a capture whose target went ended after %v", c.took.Round(time.Millisecond))
		final(t, c.body)
	})
	t.Run("shutdown", func(t *testing.T) {
		ts := startServer(t, Config{})
		svc := ts.createService("s", ts.createPort("mon", "", ""))
		resp := openCapture(t, context.Background(), ts.base, "/v2.0/taas/tap_services/"+svc+"/capture?duration=3600")
		defer resp.Body.Close()
		start := time.Now()
		ts.stop()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("shutdown ended a capture and stopped the server in %v", time.Since(start).Round(time.Millisecond))
		final(t, body)
	})
}

// TestLiveStats: /metrics and taas/stats count the running captures and
// the data plane's totals; taas/stats shows them to admins only, as the
// interfaces.
func TestLiveStats(t *testing.T) {
	fd := &feeder{started: make(chan *feedSource, 1)}
	dp := liveTotalsPlane{totals: broker.LiveTotals{Running: 5, Captured: 1234, Dropped: 56}}
	ts := startServer(t, Config{DataPlane: dp, startLive: fd.start})
	svc := ts.createService("s", ts.createPort("mon", "", ""))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := openCapture(t, ctx, ts.base, "/v2.0/taas/tap_services/"+svc+"/capture")
	defer resp.Body.Close()
	<-fd.started
	body := scrape(t, MetricsHandler(dp, ts.srv.LiveMetrics()))
	for _, want := range []string{"taas_live_captures 1\n", "taas_live_captured_packets_total 1234\n", "taas_live_dropped_packets_total 56\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	admin := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats")
	if got, _ := json.Marshal(admin["live_captures"]); string(got) != `{"captured_packets":1234,"dropped_packets":56,"running":1}` {
		t.Errorf("admin's live_captures = %s", got)
	}
	member := ts.must(200, "GET", "/v2.0/taas/stats", "", "taas_stats", "X-Project-Id: p")
	if _, ok := member["live_captures"]; ok {
		t.Errorf("a member's taas/stats has live_captures: %v", member["live_captures"])
	}
}

// liveTotalsPlane is a data plane whose live totals are fixed.
type liveTotalsPlane struct {
	NullDataPlane
	totals broker.LiveTotals
}

func (p liveTotalsPlane) LiveTotals() broker.LiveTotals { return p.totals }

// slowWriter takes its time over every write, as a slow client does.
type slowWriter struct {
	bytes.Buffer
	delay time.Duration
}

func (w *slowWriter) Write(b []byte) (int, error) {
	time.Sleep(w.delay)
	return w.Buffer.Write(b)
}

// TestLiveEndQueued: a capture whose reader is behind ends at its duration
// all the same, and its final statistics block holds the source's counts
// after Stop: the frames written as received, those still queued then as
// dropped (the broker's Stop counts them so); a capture ended by its count
// does not count those beyond it as dropped.
func TestLiveEndQueued(t *testing.T) {
	const n = 40
	frames, times := make([][]byte, n), make([]time.Time, n)
	for i := range frames {
		frames[i], times[i] = make([]byte, 3000), time.Now()
	}
	for _, tc := range []struct {
		name     string
		count    uint64
		duration time.Duration
		want     string
	}{{"duration", 0, 150 * time.Millisecond, liveEndDuration}, {"count", 3, time.Minute, liveEndCount}} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFeedSource(broker.LiveTarget{Kind: broker.LiveService, ID: "s"}, 0, n)
			feed(src, frames, times)
			src.addDropped(5)
			ls := &liveStream{src: src, params: liveParams{duration: tc.duration, count: tc.count, snaplen: liveMaxSnaplen},
				start: time.Now(), intf: pcapgo.NgInterface{Name: "x", LinkType: 1}}
			w := &slowWriter{delay: 40 * time.Millisecond}
			start := time.Now()
			end, written := ls.run(w, func() error { return nil })
			took := time.Since(start)
			isbs := liveISBs(t, w.Bytes())
			final := isbs[len(isbs)-1]
			t.Logf("ended by %s after %v: %d of %d frames written; final ISB %d received, %d dropped", end,
				took.Round(time.Millisecond), written, n, final.PacketsReceived, final.PacketsDropped)
			wantDropped := uint64(5)
			if tc.count == 0 {
				wantDropped += n - written
			}
			if end != tc.want || written == n || final.PacketsReceived != written || final.PacketsDropped != wantDropped {
				t.Errorf("run = %s, %d written; final ISB %d received, %d dropped; want %s, fewer than %d, %d received, %d dropped",
					end, written, final.PacketsReceived, final.PacketsDropped, tc.want, n, written, wantDropped)
			}
			if got := src.released.Load(); got != n {
				t.Errorf("%d frames handed back, want %d", got, n)
			}
		})
	}
}

// TestLiveStalledReader: a reader stalled in a flush does not stretch the
// capture: the duration's timer stops the source itself, while the flush
// still blocks, so the counts end at the duration.
func TestLiveStalledReader(t *testing.T) {
	src := newFeedSource(broker.LiveTarget{Kind: broker.LiveService, ID: "s"}, 0, 16)
	ls := &liveStream{src: src, params: liveParams{duration: 200 * time.Millisecond, snaplen: liveMaxSnaplen},
		start: time.Now(), intf: pcapgo.NgInterface{Name: "x", LinkType: 1}}
	frame := make([]byte, 100)
	src.offer(&broker.LivePacket{Time: time.Now(), Length: len(frame), Data: frame})
	flushes := 0
	stoppedInFlush := false
	start := time.Now()
	end, written := ls.run(io.Discard, func() error {
		if flushes++; flushes == 2 { // the first frame's: the reader stalls
			select {
			case <-src.stopped:
				stoppedInFlush = true
			case <-time.After(10 * time.Second): // the write timeout's stand-in
			}
		}
		return nil
	})
	t.Logf("ended by %s after %v, %d written, source stopped during the stalled flush: %v", end,
		time.Since(start).Round(time.Millisecond), written, stoppedInFlush)
	if !stoppedInFlush || end != liveEndDuration || written != 1 {
		t.Errorf("run = %s, %d written, stopped in the flush %v; want %s, 1, true", end, written, stoppedInFlush,
			liveEndDuration)
	}
	src.offer(&broker.LivePacket{Time: time.Now(), Length: len(frame), Data: frame})
	if st := src.Stats(); st.Captured != 1 || st.Dropped != 0 {
		t.Errorf("stats after the end = %+v, want 1 captured, 0 dropped", st)
	}
}

// TestLiveBusyStats: a busy stream writes a statistics block every tick
// too (the dashboard's live drop count reads them), not only while idle.
func TestLiveBusyStats(t *testing.T) {
	src := newFeedSource(broker.LiveTarget{Kind: broker.LiveService, ID: "s"}, 0, 64)
	ls := &liveStream{src: src, params: liveParams{duration: 1600 * time.Millisecond, snaplen: liveMaxSnaplen},
		start: time.Now(), intf: pcapgo.NgInterface{Name: "x", LinkType: 1}}
	stop := make(chan struct{})
	fed := make(chan int)
	go func() {
		// A frame every 5 ms, never a pause of a tick, bounded in count.
		frame, n := make([]byte, 64), 0
		defer func() { fed <- n }()
		for ; n < 1000; n++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			src.offer(&broker.LivePacket{Time: time.Now(), Length: len(frame), Data: frame})
		}
	}()
	var buf bytes.Buffer
	end, written := ls.run(&buf, func() error { return nil })
	close(stop)
	isbs := liveISBs(t, buf.Bytes())
	t.Logf("ended by %s: %d frames fed, %d written, %d statistics blocks", end, <-fed, written, len(isbs))
	if len(isbs) < 2 || !isbs[0].EndTime.IsZero() {
		t.Errorf("%d statistics blocks, want one while busy and a final one", len(isbs))
	}
}

// BenchmarkLiveStream: the frames a second one capture's stream carries
// over loopback HTTP to a reader that keeps up: the API's share of a live
// capture (pcapgo's blocks, fasthttp's pipe, TCP), at 64 and 1518 bytes.
func BenchmarkLiveStream(b *testing.B) {
	for _, size := range []int{64, 1518} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			fd := &feeder{started: make(chan *feedSource, 1)}
			ts := startServer(b, Config{startLive: fd.start})
			svc := ts.createService("s", ts.createPort("mon", "", ""))
			resp, err := http.Get(fmt.Sprintf("%s/v2.0/taas/tap_services/%s/capture?count=%d&duration=3600", ts.base, svc, b.N))
			if err != nil {
				b.Fatal(err)
			}
			defer resp.Body.Close()
			src := <-fd.started
			frame, now := make([]byte, size), time.Now()
			b.ResetTimer()
			start := time.Now()
			go func() {
				for range b.N {
					// Blocking, unlike offer: the reader keeps up, and
					// Stop comes after the count.
					src.ch <- &broker.LivePacket{Time: now, Length: size, Data: frame}
				}
			}()
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil {
				b.Fatal(err)
			}
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N)/el, "frames/s")
			b.ReportMetric(float64(n)/el/1e6, "MB/s")
		})
	}
}
