package control

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// connLimiter shares the connection slots (Limits.MaxConnections) among
// clients, so that no client can shut the others out by holding
// connections (issue 9, "Bounded resources": 128 idle or half-sent
// connections without a token made every other client wait, and a client
// that reconnected kept them out for good). Three rules:
//
//  1. An address (an IPv6 client's /64) holds at most
//     Limits.MaxConnectionsPerIP connections. Beyond that, its idlest idle
//     connection is closed to make room, or, if it has none, the new one
//     is closed at once (refused).
//  2. When every slot is taken, the idlest idle connection of any client
//     is closed to make room (reclaimed), as nginx does with keep-alive
//     connections. Only when none is idle does a new connection wait in the
//     listen backlog, as before.
//  3. A request head must arrive within Limits.HeaderTimeout (the server's
//     ReadTimeout; headerReceived then gives the body bodyTimeout).
//
// A connection is idle from its accept until the first byte of a request,
// and again, once its response is written, from when the server reads it
// for the next request with nothing left over from the last read (a
// request pipelined behind another is busy) until a byte comes: an idle
// connection holds no request, so closing it loses nothing (a client that
// sends on it at that moment sees what an IdleTimeout would have done).
//
// fasthttp's own MaxConnsPerIP is not used: it counts all IPv6 clients as
// one and answers text/plain 429.
type connLimiter struct {
	max, perIP int
	log        *slog.Logger

	// wake has a token when a slot was freed or a connection became idle,
	// for an Accept waiting for room.
	wake chan struct{}

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
	hosts map[netip.Prefix]int
	// refusedLogged is when a refusal was last logged (one line a minute).
	refusedLogged time.Time

	refused, reclaimed, timedOut atomic.Uint64
}

func newConnLimiter(l Limits, log *slog.Logger) *connLimiter {
	return &connLimiter{max: l.MaxConnections, perIP: l.MaxConnectionsPerIP, log: log,
		wake: make(chan struct{}, 1), conns: map[*limitedConn]struct{}{}, hosts: map[netip.Prefix]int{}}
}

// limitedConn is a connection that holds a slot of its connLimiter until
// it closes or is reclaimed.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	host netip.Prefix
	// idleSince is when the connection became idle, in Unix nanoseconds;
	// 0 while a request is read or handled, evicted once reclaimed.
	idleSince atomic.Int64
	// served: a response has been written (an idle connection is then a
	// keep-alive one, whose read timeout is the IdleTimeout).
	served atomic.Bool
	// awaiting: a response has been written and no byte of the next
	// request read since; the next Read, if fasthttp has none left over
	// (a pipelined request), waits for one, idle.
	awaiting atomic.Bool
	release  sync.Once
}

const evicted = -1

// listener wraps ln: its Accept hands out connections that hold a slot.
func (l *connLimiter) listener(ln net.Listener) *limitListener {
	return &limitListener{Listener: ln, l: l, done: make(chan struct{}), accepting: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	l     *connLimiter
	done  chan struct{}
	close sync.Once
	// accepting is closed at the first Accept: fasthttp's Serve has then
	// taken the listener, and its Shutdown closes it (Server.Run).
	accepting chan struct{}
	accepted  sync.Once
}

// Accept returns the next connection there is room for: it closes those
// beyond their address's cap, and waits (holding the one it accepted,
// others stay in the backlog) while every slot is taken by a busy
// connection.
func (ll *limitListener) Accept() (net.Conn, error) {
	ll.accepted.Do(func() { close(ll.accepting) })
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := ll.l.admit(c, hostOf(c.RemoteAddr()), ll.done); lc != nil {
			return lc, nil
		}
		// Refused, or the listener is closing. Nothing was read from or
		// written to c: a close error tells nobody anything.
		_ = c.Close()
	}
}

func (ll *limitListener) Close() error {
	ll.close.Do(func() { close(ll.done) })
	return ll.Listener.Close()
}

// admit gives c a slot, making room as the rules of connLimiter say, or
// returns nil when c is refused or done is closed.
func (l *connLimiter) admit(c net.Conn, host netip.Prefix, done <-chan struct{}) *limitedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hosts[host] >= l.perIP && !l.reclaimLocked(host, true) {
		l.refused.Add(1)
		if now := time.Now(); now.Sub(l.refusedLogged) >= time.Minute {
			l.refusedLogged = now
			l.log.Warn("connection refused: address at its cap", "addr", host.String(),
				"max_connections_per_ip", l.perIP, "refused_total", l.refused.Load())
		}
		return nil
	}
	for len(l.conns) >= l.max && !l.reclaimLocked(host, false) {
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-done:
			l.mu.Lock()
			return nil
		}
		l.mu.Lock()
	}
	lc := &limitedConn{Conn: c, l: l, host: host}
	lc.idleSince.Store(time.Now().UnixNano())
	l.conns[lc] = struct{}{}
	l.hosts[host]++
	return lc
}

// reclaimLocked closes the idlest idle connection (of host only, if
// sameHost) and frees its slot; false if there is none.
func (l *connLimiter) reclaimLocked(host netip.Prefix, sameHost bool) bool {
	for {
		var (
			best  *limitedConn
			since int64
		)
		for c := range l.conns {
			if sameHost && c.host != host {
				continue
			}
			if s := c.idleSince.Load(); s > 0 && (best == nil || s < since) {
				best, since = c, s
			}
		}
		if best == nil {
			return false
		}
		// A request's first byte may have come in since the scan: then
		// the connection is busy and another is looked for.
		if !best.idleSince.CompareAndSwap(since, evicted) {
			continue
		}
		// Its reads fail from now on (Read checks idleSince), including
		// the one fasthttp waits in; fasthttp then closes it without an
		// answer, or with 408 if no request came yet, as on a timeout.
		if err := best.Conn.SetReadDeadline(time.Unix(1, 0)); err != nil {
			// Only a closed connection refuses a deadline: it is going.
			l.log.Debug("reclaim connection", "err", err)
		}
		l.releaseLocked(best)
		l.reclaimed.Add(1)
		return true
	}
}

// closeIdle ends every idle connection, as reclaimLocked ends one: at
// shutdown, fasthttp closes only the connections it counts as idle, and it
// counts a new connection as busy from its accept (it would wait
// HeaderTimeout for a request that may never come: an HTTP client's spare
// connection, dialled and never used, kept shutdown waiting 10 s).
func (l *connLimiter) closeIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		if s := c.idleSince.Load(); s > 0 && c.idleSince.CompareAndSwap(s, evicted) {
			if err := c.Conn.SetReadDeadline(time.Unix(1, 0)); err != nil {
				l.log.Debug("close idle connection", "err", err)
			}
			l.releaseLocked(c)
		}
	}
}

// releaseLocked frees c's slot, once.
func (l *connLimiter) releaseLocked(c *limitedConn) {
	c.release.Do(func() {
		delete(l.conns, c)
		if l.hosts[c.host]--; l.hosts[c.host] <= 0 {
			delete(l.hosts, c.host)
		}
		l.signal()
	})
}

// signal wakes an Accept waiting for room, without blocking.
func (l *connLimiter) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// connState is fasthttp's Server.ConnState hook: a connection whose
// response is written awaits the next request, which may already be in
// fasthttp's buffer (pipelined): then StateActive comes without a Read,
// and the connection stays busy. Only Read marks it idle.
func (l *connLimiter) connState(c net.Conn, st fasthttp.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	switch st {
	case fasthttp.StateIdle:
		lc.served.Store(true)
		lc.awaiting.Store(true)
	case fasthttp.StateActive:
		lc.awaiting.Store(false)
	}
}

// errReclaimed is what reads of a reclaimed connection return: a timeout,
// which fasthttp treats as the end of an idle connection.
var errReclaimed = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

func (c *limitedConn) Read(b []byte) (int, error) {
	s := c.idleSince.Load()
	if s == evicted {
		return 0, errReclaimed
	}
	if s == 0 && c.awaiting.Swap(false) {
		// fasthttp has read all it had and waits for the next request
		// (it reads the connection only when its buffer is empty).
		if now := time.Now().UnixNano(); c.idleSince.CompareAndSwap(0, now) {
			s = now
			c.l.signal()
		}
	}
	n, err := c.Conn.Read(b)
	if n > 0 && s > 0 && !c.idleSince.CompareAndSwap(s, 0) {
		// Reclaimed while the bytes came: its slot is gone, so the
		// request is not served (no answer, as when an IdleTimeout ends
		// a connection a request was just sent on).
		return 0, errReclaimed
	}
	if err != nil && n == 0 {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			// A request head or body that did not come in time, or a
			// connection that never sent one; not a keep-alive connection
			// that stayed idle, nor a reclaimed one.
			if s := c.idleSince.Load(); s == 0 || s > 0 && !c.served.Load() {
				c.l.timedOut.Add(1)
			}
		}
	}
	return n, err
}

func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// hostOf is the address whose connections are counted together: the IP of
// an IPv4 client, the /64 of an IPv6 one (a host's privacy addresses).
// Anything but TCP counts as one address.
func hostOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		// Prefix fails only for a zoned or invalid address.
		return netip.Prefix{}
	}
	return p
}

// Connection metrics, served with the data plane's (MetricsHandler).
var (
	descConns = prometheus.NewDesc("taas_http_connections",
		"API connections open (each holds one of max_connections).", nil, nil)
	descConnsRefused = prometheus.NewDesc("taas_http_connections_refused_total",
		"API connections closed at accept: their address held max_connections_per_ip busy connections.", nil, nil)
	descConnsReclaimed = prometheus.NewDesc("taas_http_connections_reclaimed_total",
		"Idle API connections closed to make room for a new one.", nil, nil)
	descConnsTimedOut = prometheus.NewDesc("taas_http_connections_timed_out_total",
		"API connections closed because a request head (header_timeout_ms) or body did not arrive in time.", nil, nil)
)

func (l *connLimiter) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConns
	ch <- descConnsRefused
	ch <- descConnsReclaimed
	ch <- descConnsTimedOut
}

func (l *connLimiter) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	open := len(l.conns)
	l.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(open))
	for _, m := range []struct {
		d *prometheus.Desc
		v *atomic.Uint64
	}{{descConnsRefused, &l.refused}, {descConnsReclaimed, &l.reclaimed}, {descConnsTimedOut, &l.timedOut}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v.Load()))
	}
}
