package control

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/taas-appliance/taas/broker"
)

// Live captures (issue 12): GET .../{tap_services,tap_flows,tap_mirrors}/{id}/capture
// streams a pcapng of what a tap service delivers, a tap flow matches or a
// tap mirror sends (its inner frames), from the data plane's live capture
// (broker.StartLive), flushed as frames come:
//
//	request -> parseLiveParams (400) -> the show path's lookup (404)
//	        -> a slot of liveSlots (409) -> DataPlane.StartLive (409, 503)
//	        -> one goroutine (fasthttp's body stream writer): SHB, IDB, then
//	           EPBs per batch of what is queued, an ISB every liveIdle while
//	           idle, a final ISB; it ends at duration, at count, when the
//	           client goes (a failed flush), when the target goes (Packets
//	           closed) or at shutdown.

// Bounds of a capture's query parameters.
const (
	liveDefaultDuration = 10 * time.Second
	liveMaxDuration     = 3600 // seconds
	liveMaxCount        = 1_000_000_000
	liveMinSnaplen      = 64
	liveMaxSnaplen      = 262144
)

// liveIdle is how often an idle stream writes an interface statistics
// block, and how often a stream checks whether its client closed the
// connection (peerClosed): a closed client ends its capture within
// liveIdle. Where the check cannot be made, the writes find out, within
// three ticks: the first one after the close draws a reset, and
// fasthttp's pipe between the stream and the connection holds the next.
const liveIdle = 500 * time.Millisecond

// liveBatch is the most frames written between two flushes, so that a busy
// stream still moves its write deadline on.
const liveBatch = 256

// liveParams are a capture's validated query parameters.
type liveParams struct {
	duration time.Duration
	// count is the number of frames after which the capture ends; 0 is
	// no bound.
	count   uint64
	snaplen int
}

// liveParam is one query parameter of a capture: its bounds, and the
// unit the refusal names.
type liveParam struct {
	name     string
	min, max uint64
	unit     string
}

var liveParamTable = []liveParam{
	{"duration", 1, liveMaxDuration, " (seconds)"},
	{"count", 1, liveMaxCount, " (frames)"},
	{"snaplen", liveMinSnaplen, liveMaxSnaplen, " (bytes)"},
}

// parseLiveParams reads a capture's raw query string strictly: only
// duration, count and snaplen, each at most once, each a plain decimal
// integer within its bounds (no sign, exponent, blank or empty value).
// Anything else is a 400 HTTPBadRequest, so that a typo never silently
// runs a ten-second capture of every frame.
func parseLiveParams(raw string) (liveParams, error) {
	p := liveParams{duration: liveDefaultDuration, snaplen: liveMaxSnaplen}
	var seen [3]bool
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue // "?duration=5&" from a script
		}
		rawKey, rawVal, hasEq := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return p, badRequest("Malformed query parameter %s.", clip(rawKey))
		}
		i := -1
		for n, lp := range liveParamTable {
			if key == lp.name {
				i = n
			}
		}
		if i < 0 {
			return p, badRequest("Unknown query parameter %s: a capture takes duration, count and snaplen.", clip(key))
		}
		lp := liveParamTable[i]
		if seen[i] {
			return p, badRequest("Query parameter %s is given more than once.", lp.name)
		}
		seen[i] = true
		val, err := url.QueryUnescape(rawVal)
		if err != nil {
			val = rawVal
		}
		n, ok := uint64(0), hasEq && err == nil && val != ""
		for j := 0; ok && j < len(val); j++ {
			ok = val[j] >= '0' && val[j] <= '9'
		}
		if ok {
			n, err = strconv.ParseUint(val, 10, 64)
			ok = err == nil && n >= lp.min && n <= lp.max
		}
		if !ok {
			return p, invalidInput(lp.name, fmt.Sprintf("'%s' is not an integer from %d to %d%s", clip(val), lp.min, lp.max, lp.unit))
		}
		switch lp.name {
		case "duration":
			p.duration = time.Duration(n) * time.Second
		case "count":
			p.count = n
		case "snaplen":
			p.snaplen = int(n)
		}
	}
	return p, nil
}

// clip shortens a value a refusal quotes.
func clip(s string) string {
	const most = 40
	if len(s) > most {
		s = s[:most] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// liveSource is what a stream reads: a broker.LiveCapture.
type liveSource interface {
	Packets() <-chan *broker.LivePacket
	Release(p *broker.LivePacket)
	Stats() broker.LiveStats
	Stop()
}

// startLive is the default Config.startLive: the data plane's StartLive.
func startLive(dp DataPlane) func(broker.LiveTarget, int) (liveSource, error) {
	return func(t broker.LiveTarget, snaplen int) (liveSource, error) {
		lc, err := dp.StartLive(t, snaplen)
		if err != nil {
			return nil, err
		}
		return lc, nil
	}
}

// liveSlots counts the running captures, at most broker.MaxLive, whatever
// the data plane (NullDataPlane enforces the limit too).
type liveSlots struct {
	n atomic.Int32
}

func (l *liveSlots) acquire() bool {
	for {
		n := l.n.Load()
		if n >= broker.MaxLive {
			return false
		}
		if l.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (l *liveSlots) release() { l.n.Add(-1) }

func (l *liveSlots) running() int { return int(l.n.Load()) }

var errLiveLimit = conflict("LiveCaptureLimit", fmt.Sprintf("%d live captures already run, the most the appliance "+
	"serves at once: retry when one ends (each ends at its duration, its count, or when its client disconnects)",
	broker.MaxLive))

// liveKinds are the live capture kinds of the resources, by singular name.
var liveKinds = map[string]broker.LiveKind{
	"tap_service": broker.LiveService, "tap_flow": broker.LiveFlow, "tap_mirror": broker.LiveMirror,
}

// handleCapture answers GET on a resource's /capture: the caller must be
// able to show it (the same 404 as show otherwise).
func (k *kind[T, B, V]) handleCapture(c *fiber.Ctx) error {
	p, err := parseLiveParams(string(c.Request().URI().QueryString()))
	if err != nil {
		return err
	}
	t, err := k.lookup(c)
	if err != nil {
		return err
	}
	name, _ := attrOf(k.view(t), "name").(string)
	return k.s.streamLive(c, k.res.singular, k.ref(t).ID, name, p)
}

// streamLive starts the capture of the resource id (of kind res, named
// name) and streams it as the response.
func (s *Server) streamLive(c *fiber.Ctx, res, id, name string, p liveParams) error {
	select {
	case <-s.done:
		return errShuttingDown
	default:
	}
	if !s.live.acquire() {
		return errLiveLimit
	}
	src, err := s.cfg.startLive(broker.LiveTarget{Kind: liveKinds[res], ID: id}, p.snaplen)
	switch {
	case errors.Is(err, broker.ErrLiveLimit):
		s.live.release()
		return errLiveLimit
	case err != nil:
		s.live.release()
		s.log.Error("start live capture", res+"_id", id, "err", err)
		return &neutronError{Status: fiber.StatusServiceUnavailable, Type: "ServiceUnavailable",
			Message: "The data plane cannot start a live capture now."}
	}
	start := time.Now().UTC()
	c.Set(fiber.HeaderContentType, "application/x-pcapng")
	c.Set(fiber.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="%s-%s-%s.pcapng"`, res, id,
		start.Format("20060102T150405Z")))
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("X-Accel-Buffering", "no")
	log := s.log.With(res+"_id", id)
	log.Info("live capture started", "duration", p.duration, "count", p.count, "snaplen", p.snaplen)
	// The server's write deadline covers one response; the stream moves
	// it on before each flush, as the events stream does.
	conn, writeTimeout := c.Context().Conn(), s.cfg.Limits.WriteTimeout
	ls := &liveStream{src: src, params: p, start: start, done: s.done, gone: peerClosed(conn),
		valid: s.stillValid(c, identity(c)),
		intf: pcapgo.NgInterface{
			Name:        fmt.Sprintf("%s %s (%s)", res, name, id),
			Description: liveDescriptions[res],
			LinkType:    layers.LinkTypeEthernet,
			SnapLength:  uint32(p.snaplen),
		}}
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.live.release()
		defer src.Stop()
		end, written := ls.run(w, func() error {
			if err := conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
				return err
			}
			return w.Flush()
		})
		st := src.Stats()
		log.Info("live capture ended", "reason", end, "written", written, "captured", st.Captured,
			"dropped", st.Dropped, "seconds", time.Since(start).Seconds())
	})
	return nil
}

var errShuttingDown = &neutronError{Status: fiber.StatusServiceUnavailable, Type: "ServiceUnavailable",
	Message: "The server is shutting down."}

// liveDescriptions are the interface descriptions of a capture's IDB.
var liveDescriptions = map[string]string{
	"tap_service": "taasd: the copies the tap service delivers",
	"tap_flow":    "taasd: the frames the tap flow matches",
	"tap_mirror":  "taasd: the inner frames the tap mirror sends",
}

// Why a stream ended, as its log line says.
const (
	liveEndDuration = "duration"
	liveEndCount    = "count"
	liveEndClient   = "client gone"
	liveEndTarget   = "target gone"
	liveEndShutdown = "shutdown"
	liveEndRevoked  = "token no longer valid"
)

// liveStream writes one capture as pcapng.
type liveStream struct {
	src    liveSource
	params liveParams
	start  time.Time
	intf   pcapgo.NgInterface
	// done ends the stream (the server shuts down).
	done <-chan struct{}
	// gone, when set, says at each tick whether the client closed the
	// connection (peerClosed).
	gone func() bool
	// valid, when set, says at each tick, and at least every liveIdle
	// while frames flow, whether the caller's token is still good
	// (Server.stillValid, as the events stream checks): a revoked token's
	// capture ends (review of issue 13: it ran to its 3600 s).
	valid func() bool
}

// run writes the stream to w until it ends, calling flush (which moves
// the write deadline on and flushes w) after each batch; it returns why it
// ended and how many frames it wrote. It stops the source before the
// final statistics block, so that its counts are final; what the source
// still held then is not written (a slow reader would hold the capture
// past its end) and counts as dropped, unless the count ended it.
func (ls *liveStream) run(w io.Writer, flush func() error) (end string, written uint64) {
	ng, err := pcapgo.NewNgWriterInterface(w, ls.intf, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		Application: "taasd", OS: runtime.GOOS, Hardware: runtime.GOARCH}})
	if err != nil {
		ls.src.Stop()
		ls.drain()
		return liveEndClient, 0
	}
	flushAll := func() error {
		if err := ng.Flush(); err != nil {
			return err
		}
		return flush()
	}
	if flushAll() != nil {
		ls.src.Stop()
		ls.drain()
		return liveEndClient, 0
	}
	deadline := time.NewTimer(ls.params.duration)
	defer deadline.Stop()
	tick := time.NewTicker(liveIdle)
	defer tick.Stop()
	pk := ls.src.Packets()
	busy := false // a frame was written since the last tick
	checked := time.Now()
	revoked := func() bool {
		if ls.valid == nil || time.Since(checked) < liveIdle {
			return false
		}
		checked = time.Now()
		return !ls.valid()
	}
	end = func() string {
		for {
			select {
			case p, ok := <-pk:
				if !ok {
					return liveEndTarget
				}
				// This frame, then what is queued, up to a batch.
				for n := 0; ; n++ {
					err := ls.write(ng, p)
					ls.src.Release(p)
					if err != nil {
						return liveEndClient
					}
					written++
					if written == ls.params.count {
						return liveEndCount
					}
					if n == liveBatch {
						break
					}
					select {
					case p, ok = <-pk:
					case <-deadline.C:
						return liveEndDuration
					case <-ls.done:
						return liveEndShutdown
					default:
						ok = false
					}
					if !ok {
						break
					}
				}
				busy = true
				if revoked() {
					return liveEndRevoked
				}
			case <-tick.C:
				if revoked() {
					return liveEndRevoked
				}
				if ls.gone != nil && ls.gone() || !busy && ls.writeStats(ng, ls.src.Stats(), false) != nil {
					return liveEndClient
				}
				busy = false
			case <-deadline.C:
				return liveEndDuration
			case <-ls.done:
				return liveEndShutdown
			}
			if flushAll() != nil {
				return liveEndClient
			}
		}
	}()
	ls.src.Stop()
	left := ls.drain()
	if end == liveEndClient {
		return end, written
	}
	st := ls.src.Stats()
	if end != liveEndCount {
		// Captured within the capture's time but still queued at its end:
		// the client never gets them, so they count as dropped.
		st.Dropped += left
	}
	if ls.writeStats(ng, st, true) == nil {
		_ = flushAll() // the stream ends anyway: nothing to do if the client went
	}
	return end, written
}

// write writes p as an enhanced packet block, cut to the capture's
// snaplen.
func (ls *liveStream) write(ng *pcapgo.NgWriter, p *broker.LivePacket) error {
	data := p.Data
	if len(data) > ls.params.snaplen {
		data = data[:ls.params.snaplen]
	}
	return ng.WritePacket(gopacket.CaptureInfo{Timestamp: p.Time, CaptureLength: len(data),
		Length: max(p.Length, len(data))}, data)
}

// writeStats writes an interface statistics block of st: the frames the
// data plane captured (received) and those it dropped for want of room or
// lost in the kernel, since the start; final adds the end time.
func (ls *liveStream) writeStats(ng *pcapgo.NgWriter, st broker.LiveStats, final bool) error {
	now := time.Now()
	s := pcapgo.NgInterfaceStatistics{LastUpdate: now, StartTime: ls.start, EndTime: now,
		PacketsReceived: st.Captured, PacketsDropped: st.Dropped}
	if !final {
		s.EndTime = time.Time{}
	}
	return ng.WriteInterfaceStats(0, s)
}

// drain hands back what the stopped source still holds, and returns how
// many frames that was.
func (ls *liveStream) drain() uint64 {
	pk := ls.src.Packets()
	var n uint64
	for {
		select {
		case p, ok := <-pk:
			if !ok {
				return n
			}
			ls.src.Release(p)
			n++
		default:
			return n
		}
	}
}

// peerClosed returns a check of whether the client closed conn (its FIN or
// reset arrived), or nil where the socket is out of reach. It peeks at
// the socket without consuming anything: while a response streams,
// fasthttp reads nothing from the connection, and an HTTP/1.1 client
// never half-closes one it still reads from.
func peerClosed(conn net.Conn) func() bool {
	if lc, ok := conn.(*limitedConn); ok {
		conn = lc.Conn
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var buf [1]byte
	return func() bool {
		closed := false
		err := rc.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			closed = n == 0 && err == nil || err != nil && err != syscall.EAGAIN && err != syscall.EINTR
			return true // never wait for readiness
		})
		return closed || err != nil
	}
}

// liveTotals are the live capture counters of /metrics and taas/stats:
// captured and dropped from the data plane, running from the slots (the
// streams this server serves, whatever the data plane).
func (s *Server) liveTotals() broker.LiveTotals {
	t := s.cfg.DataPlane.LiveTotals()
	t.Running = s.live.running()
	return t
}

// LiveMetrics collects the live capture counters, for MetricsHandler.
func (s *Server) LiveMetrics() prometheus.Collector { return liveCollector{s: s} }

var (
	descLiveRunning  = prometheus.NewDesc("taas_live_captures", "Live captures (GET .../capture) running.", nil, nil)
	descLiveCaptured = prometheus.NewDesc("taas_live_captured_packets_total",
		"Frames live captures took from the data plane since start.", nil, nil)
	descLiveDropped = prometheus.NewDesc("taas_live_dropped_packets_total",
		"Frames live captures dropped since start: no room (a slow reader) or lost in the kernel's buffer.", nil, nil)
)

type liveCollector struct{ s *Server }

func (c liveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLiveRunning
	ch <- descLiveCaptured
	ch <- descLiveDropped
}

func (c liveCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.s.liveTotals()
	ch <- prometheus.MustNewConstMetric(descLiveRunning, prometheus.GaugeValue, float64(t.Running))
	ch <- prometheus.MustNewConstMetric(descLiveCaptured, prometheus.CounterValue, float64(t.Captured))
	ch <- prometheus.MustNewConstMetric(descLiveDropped, prometheus.CounterValue, float64(t.Dropped))
}
