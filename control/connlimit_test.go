package control

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

const (
	rawGet = "GET / HTTP/1.1\r\nHost: taasd\r\n\r\n"
	// halfGet is a request head without its end: the server waits for
	// the rest.
	halfGet = "GET / HTTP/1.1\r\nHost: taasd\r\n"
)

// rawClient is one raw loopback connection to a test server.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// dialFrom connects to ts from the loopback address src (127.0.0.1,
// 127.0.0.2...), so that tests can be several clients.
func dialFrom(t *testing.T, ts *testServer, src string) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", strings.TrimPrefix(ts.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// get sends a GET on c and reads its answer, for at most wait.
func (c *rawClient) get(wait time.Duration) (*http.Response, error) {
	if err := c.conn.SetDeadline(time.Now().Add(wait)); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c.conn, rawGet); err != nil {
		return nil, err
	}
	return c.read()
}

// readWithin reads an answer on c, for at most wait.
func (c *rawClient) readWithin(wait time.Duration) (*http.Response, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return nil, err
	}
	return c.read()
}

func (c *rawClient) read() (*http.Response, error) {
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res, err
}

// mustGet is get that must answer 200 within 10 s (a generous bound: the
// server answers in milliseconds; without room it never would), and says
// how long it took.
func (c *rawClient) mustGet() time.Duration {
	c.t.Helper()
	start := time.Now()
	res, err := c.get(10 * time.Second)
	if err != nil {
		c.t.Fatalf("GET from %s: %v", c.conn.LocalAddr(), err)
	}
	if res.StatusCode != 200 {
		c.t.Fatalf("GET from %s = %d, want 200", c.conn.LocalAddr(), res.StatusCode)
	}
	return time.Since(start)
}

// half sends a request head without its end.
func (c *rawClient) half() {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, halfGet); err != nil {
		c.t.Fatal(err)
	}
}

// closedByServer reports whether the server closed c (within wait): a read
// ends in EOF or a reset, after any answer (a 408) the server sent first.
func (c *rawClient) closedByServer(wait time.Duration) bool {
	c.t.Helper()
	if err := c.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		c.t.Fatal(err)
	}
	_, err := io.Copy(io.Discard, c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

// waitBusy waits until the server has read a request byte from n of its
// connections (half-sent ones are then busy, never reclaimed).
func waitBusy(t *testing.T, ts *testServer, n int) {
	t.Helper()
	waitConns(t, ts, n, "busy", func(idleSince int64) bool { return idleSince == 0 })
}

// idleFrom opens a connection from src that has had an answer, and waits
// until the server counts idle of its connections idle.
func idleFrom(t *testing.T, ts *testServer, src string, idle int) *rawClient {
	t.Helper()
	c := dialFrom(t, ts, src)
	c.mustGet()
	waitIdle(t, ts, idle)
	return c
}

// waitIdle waits until n of the server's connections are idle: a client
// may read its answer before the server has marked the connection idle.
func waitIdle(t *testing.T, ts *testServer, n int) {
	t.Helper()
	waitConns(t, ts, n, "idle", func(idleSince int64) bool { return idleSince > 0 })
}

func waitConns(t *testing.T, ts *testServer, n int, what string, is func(idleSince int64) bool) {
	t.Helper()
	l := ts.srv.conns
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := 0
		l.mu.Lock()
		for c := range l.conns {
			if is(c.idleSince.Load()) {
				got++
			}
		}
		l.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s connections after 10s, want %d", got, what, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConnLimitPerIPHalfSent: one address holds its cap of half-sent
// requests and opens as many more connections as the server has slots;
// those beyond its cap are closed at once, its half-sent ones stay, and a
// client at another address is answered (issue 9: before, the attacker
// took every slot and the other client waited in the backlog).
func TestConnLimitPerIPHalfSent(t *testing.T) {
	// A long HeaderTimeout: only the per-address cap can help here.
	ts := startServer(t, Config{Limits: Limits{MaxConnections: 8, MaxConnectionsPerIP: 2, HeaderTimeout: time.Minute}})
	var held []*rawClient
	for range 2 {
		c := dialFrom(t, ts, "127.0.0.1")
		c.half()
		held = append(held, c)
	}
	waitBusy(t, ts, 2)
	start := time.Now()
	for i := range 8 {
		c := dialFrom(t, ts, "127.0.0.1")
		// The server may have closed it already: the read below says.
		_, _ = io.WriteString(c.conn, halfGet)
		if !c.closedByServer(10 * time.Second) {
			t.Fatalf("connection %d beyond the address's cap still open after 10s", i+3)
		}
	}
	t.Logf("8 connections beyond the cap closed in %v", time.Since(start))
	other := dialFrom(t, ts, "127.0.0.2")
	t.Logf("other address answered in %v", other.mustGet())
	for i, c := range held {
		if c.closedByServer(50 * time.Millisecond) {
			t.Errorf("half-sent connection %d closed, want it kept (within the cap, HeaderTimeout 1m)", i+1)
		}
	}
	if got := ts.srv.conns.refused.Load(); got != 8 {
		t.Errorf("refused = %d, want 8", got)
	}
	scrape := scrapeConnMetrics(t, ts)
	for _, want := range []string{"taas_http_connections_refused_total 8", "taas_http_connections 3",
		"taas_http_connections_reclaimed_total 0"} {
		if !strings.Contains(scrape, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, scrape)
		}
	}
}

// TestConnLimitPerIPIdle: one address holds its cap of idle keep-alive
// connections and keeps opening more; each new one is served and closes
// that address's idlest, so it never holds more than its cap, and a client
// at another address is answered.
func TestConnLimitPerIPIdle(t *testing.T) {
	ts := startServer(t, Config{Limits: Limits{MaxConnections: 4, MaxConnectionsPerIP: 2}})
	var mine []*rawClient
	for i := range 6 {
		mine = append(mine, idleFrom(t, ts, "127.0.0.1", min(i+1, 2)))
		if i >= 2 {
			// The idlest of the address's connections went to make room.
			if !mine[i-2].closedByServer(10 * time.Second) {
				t.Fatalf("connection %d still open after connection %d came in", i-1, i+1)
			}
		}
	}
	for _, c := range mine[4:] {
		c.mustGet()
	}
	other := dialFrom(t, ts, "127.0.0.2")
	t.Logf("other address answered in %v", other.mustGet())
	if got := ts.srv.conns.reclaimed.Load(); got != 4 {
		t.Errorf("reclaimed = %d, want 4", got)
	}
	if got := ts.srv.conns.refused.Load(); got != 0 {
		t.Errorf("refused = %d, want 0", got)
	}
}

// TestConnLimitReclaimIdle fills every slot with idle keep-alive
// connections: a new client is answered at once, and the idlest
// connection, not another, is closed to make room.
func TestConnLimitReclaimIdle(t *testing.T) {
	ts := startServer(t, Config{Limits: Limits{MaxConnections: 3, MaxConnectionsPerIP: 3}})
	var idle []*rawClient
	for i := range 3 {
		idle = append(idle, idleFrom(t, ts, "127.0.0.1", i+1))
	}
	// The first becomes the most recently used: the second is the idlest.
	idle[0].mustGet()
	waitIdle(t, ts, 3)
	other := dialFrom(t, ts, "127.0.0.2")
	t.Logf("new client with every slot idle answered in %v", other.mustGet())
	if !idle[1].closedByServer(10 * time.Second) {
		t.Fatal("the idlest connection is still open")
	}
	idle[0].mustGet()
	idle[2].mustGet()
	if got := ts.srv.conns.reclaimed.Load(); got != 1 {
		t.Errorf("reclaimed = %d, want 1", got)
	}
}

// TestHeaderTimeout: a connection that sends no request, or half of a
// request head, is closed after HeaderTimeout, not ReadTimeout's 30 s; a
// body that comes after HeaderTimeout is still read (it has bodyTimeout).
func TestHeaderTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := startServer(t, Config{Limits: Limits{HeaderTimeout: timeout}})
	for _, tc := range []struct {
		name string
		send string
	}{
		{"nothing", ""},
		{"half a head", halfGet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, ts, "127.0.0.1")
			start := time.Now()
			if _, err := io.WriteString(c.conn, tc.send); err != nil {
				t.Fatal(err)
			}
			if !c.closedByServer(10 * time.Second) {
				t.Fatalf("connection still open after 10s, HeaderTimeout %v", timeout)
			}
			t.Logf("closed after %v (HeaderTimeout %v)", time.Since(start), timeout)
		})
	}
	if got := ts.srv.conns.timedOut.Load(); got != 2 {
		t.Errorf("timed out = %d, want 2", got)
	}

	c := dialFrom(t, ts, "127.0.0.1")
	body := `{"network": {"name": "slow body"}}`
	head := strings.TrimSuffix(rawPost("/v2.0/networks", body), body)
	if _, err := io.WriteString(c.conn, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * timeout)
	if _, err := io.WriteString(c.conn, body); err != nil {
		t.Fatal(err)
	}
	res, err := c.readWithin(10 * time.Second)
	if err != nil {
		t.Fatalf("POST with a body after HeaderTimeout: %v", err)
	}
	if res.StatusCode != 201 {
		t.Errorf("POST with a body after HeaderTimeout = %d, want 201", res.StatusCode)
	}
}

// scrapeConnMetrics serves ts's connection metrics through MetricsHandler.
func scrapeConnMetrics(t *testing.T, ts *testServer) string {
	t.Helper()
	app := fiber.New()
	app.Get("/metrics", MetricsHandler(NullDataPlane{}, ts.srv.ConnMetrics()))
	resp, err := app.Test(httptest.NewRequest("GET", "/metrics", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHostOf(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}, "fe80::/64"},
		{&net.UnixAddr{Name: "/run/x", Net: "unix"}, "invalid Prefix"},
		{&net.TCPAddr{}, "invalid Prefix"},
	} {
		if got := hostOf(tc.addr).String(); got != tc.want {
			t.Errorf("hostOf(%v) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

// TestConnLimitPipelinedBusy: a request that came pipelined behind another
// (here an events stream) is busy while it is handled, although fasthttp
// reads it from its buffer without reading the connection: reclaiming it
// freed its slot while it went on streaming, uncounted (any client could
// so hold connections beyond max_connections), and left the idle
// connection open.
func TestConnLimitPipelinedBusy(t *testing.T) {
	ts := startServer(t, Config{Limits: Limits{MaxConnections: 2, MaxConnectionsPerIP: 2}})
	stream := dialFrom(t, ts, "127.0.0.1")
	if _, err := io.WriteString(stream.conn, rawGet+"GET /v2.0/taas/events HTTP/1.1\r\nHost: taasd\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if res, err := stream.readWithin(10 * time.Second); err != nil || res.StatusCode != 200 {
		t.Fatalf("first pipelined request: %v, %v", res, err)
	}
	res, err := http.ReadResponse(stream.br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("events stream: %v, %v", res, err)
	}
	idle := idleFrom(t, ts, "127.0.0.2", 1)
	t.Logf("new client with one slot idle, one streaming, answered in %v", dialFrom(t, ts, "127.0.0.3").mustGet())
	if !idle.closedByServer(10 * time.Second) {
		t.Fatal("the idle connection is still open: the streaming one was reclaimed")
	}
}

// racingConn is a connection whose Read lets its limiter reclaim it (as
// Accept may, on another goroutine) before the bytes of a request come.
type racingConn struct {
	net.Conn
	l *connLimiter
}

func (c racingConn) Read(b []byte) (int, error) {
	c.l.mu.Lock()
	c.l.reclaimLocked(netip.Prefix{}, false)
	c.l.mu.Unlock()
	return copy(b, rawGet), nil
}

// TestConnLimitReclaimedWhileReading: bytes that come on an idle
// connection just as it is reclaimed are not handed to fasthttp: the
// connection lost its slot, and a request served on it would be served
// uncounted.
func TestConnLimitReclaimedWhileReading(t *testing.T) {
	l := newConnLimiter(Limits{MaxConnections: 1, MaxConnectionsPerIP: 1}, slog.New(slog.DiscardHandler))
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	lc := l.admit(racingConn{Conn: server, l: l}, netip.Prefix{}, nil)
	n, err := lc.Read(make([]byte, 64))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read of a connection reclaimed meanwhile = %d, %v; want 0, a timeout", n, err)
	}
	if got := l.reclaimed.Load(); got != 1 {
		t.Errorf("reclaimed = %d, want 1", got)
	}
}

// TestWriteTimeoutFreesSlot: a client that pipelines requests and never
// reads the answers loses its slot after WriteTimeout. Found by review:
// without a write timeout it held the slot for good, so that
// max_connections / max_connections_per_ip such hosts held every slot.
func TestWriteTimeoutFreesSlot(t *testing.T) {
	ts := startServer(t, Config{Limits: Limits{MaxConnections: 2, MaxConnectionsPerIP: 1,
		WriteTimeout: 300 * time.Millisecond}})
	stuck := dialFrom(t, ts, "127.0.0.1")
	if err := stuck.conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	// 20000 answers of a few KiB each: far more than the socket buffers
	// hold, so the server's writes block. The server stops reading once
	// they do, so the write runs on until the test closes the connection.
	pipelined := strings.Repeat("GET /v2.0/extensions HTTP/1.1\r\nHost: taasd\r\n\r\n", 20000)
	go io.WriteString(stuck.conn, pipelined) //nolint:errcheck // ends with the connection
	waitBusy(t, ts, 1)
	// Let the server fill the socket buffers and block in a write.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	for deadline := start.Add(10 * time.Second); ; {
		res, err := dialFrom(t, ts, "127.0.0.1").get(time.Second)
		if err == nil && res.StatusCode == 200 {
			t.Logf("a new connection from the stuck client's address was answered after %v", time.Since(start))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the address's one slot is still held 10 s after its client stopped reading (last: %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEventsOutliveWriteTimeout: an events stream moves its write deadline
// on at every heartbeat, so it lasts far beyond WriteTimeout while its
// reader reads.
func TestEventsOutliveWriteTimeout(t *testing.T) {
	ts := startServer(t, Config{Heartbeat: 50 * time.Millisecond, Limits: Limits{WriteTimeout: 200 * time.Millisecond}})
	c := dialFrom(t, ts, "127.0.0.1")
	if _, err := io.WriteString(c.conn, "GET /v2.0/taas/events HTTP/1.1\r\nHost: taasd\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(c.br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("events: %v, %v", res, err)
	}
	// Closing the body would drain an endless stream: the connection's
	// cleanup ends it.
	br := bufio.NewReader(res.Body)
	heartbeats := 0
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("events stream ended after %v and %d heartbeats (write timeout 200ms): %v",
				time.Since(start), heartbeats, err)
		}
		if strings.HasPrefix(line, ": heartbeat") {
			heartbeats++
		}
	}
	t.Logf("%d heartbeats in 1.5 s on a stream with a 200 ms write timeout", heartbeats)
}

// TestShutdownClosesSilentConns: connections that never sent a byte, or
// sit idle after a request, do not hold a shutdown for HeaderTimeout
// (fasthttp counts a new connection busy: CI saw a 10 s shutdown fail
// after an HTTP client left a spare connection unused).
func TestShutdownClosesSilentConns(t *testing.T) {
	ts := startServer(t, Config{Limits: Limits{HeaderTimeout: time.Minute}})
	silent := dialFrom(t, ts, "127.0.0.1")
	used := dialFrom(t, ts, "127.0.0.1")
	used.mustGet()
	waitIdle(t, ts, 2)
	start := time.Now()
	ts.stop()
	took := time.Since(start)
	t.Logf("shutdown with a silent and an idle connection took %v", took)
	if took > 5*time.Second {
		t.Errorf("shutdown took %v: a silent connection held it", took)
	}
	if !silent.closedByServer(time.Second) || !used.closedByServer(time.Second) {
		t.Error("a connection is still open after shutdown")
	}
}
