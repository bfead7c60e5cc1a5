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
	"sync"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

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
//	           EPBs per batch of what is queued, an ISB every liveIdle, a
//	           final ISB; it ends at duration (a timer stops the source),
//	           at count, when the client goes (a failed flush or a reset),
//	           when the target goes (Packets closed, or its delete event:
//	           liveSlots.deleted) or at shutdown.

// Bounds of a capture's query parameters.
const (
	liveDefaultDuration = 10 * time.Second
	liveMaxDuration     = 3600 // seconds
	liveMaxCount        = 1_000_000_000
	liveMinSnaplen      = 64
	liveMaxSnaplen      = 262144
)

// liveIdle is how often a stream writes an interface statistics block,
// busy or idle, and checks whether its client's connection failed
// (peerClosed). A client that closes gets the next block and answers it
// with a reset, which the check after finds: a closed client ends its
// capture within two ticks. Where the check cannot be made, the writes
// find out, within three: fasthttp's pipe between the stream and the
// connection holds one more.
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
// the data plane (NullDataPlane enforces the limit too), and at most
// liveProjectMax of one project's members and readers (admins are exempt),
// so that one project cannot hold every slot for an hour. It also knows
// each running capture's target, so that deleting the target ends the
// capture even where the data plane never had it in its plan
// (NullDataPlane, a service on an admin-down port).
type liveSlots struct {
	mu sync.Mutex
	n  int
	// projects counts the running captures of non-admin callers, by
	// project.
	projects map[string]int
	// ends closes the channel of each running capture, by target id.
	ends map[string]map[*liveSlot]struct{}
}

// liveProjectMax is the most captures one project's members and readers
// run at once.
const liveProjectMax = broker.MaxLive / 2

// liveSlot is one running capture's hold on the slots.
type liveSlot struct {
	project string // "" for an admin's
	target  string
	// gone is closed when the target is deleted.
	gone chan struct{}
}

// acquire takes a slot for a capture of target by id, or returns the 409.
func (l *liveSlots) acquire(id Identity, target string) (*liveSlot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n >= broker.MaxLive {
		return nil, errLiveLimit
	}
	ls := &liveSlot{target: target, gone: make(chan struct{})}
	if !id.Admin {
		if l.projects[id.ProjectID] >= liveProjectMax {
			return nil, errLiveProjectLimit(id.ProjectID)
		}
		if l.projects == nil {
			l.projects = map[string]int{}
		}
		ls.project = id.ProjectID
		l.projects[ls.project]++
	}
	if l.ends == nil {
		l.ends = map[string]map[*liveSlot]struct{}{}
	}
	if l.ends[target] == nil {
		l.ends[target] = map[*liveSlot]struct{}{}
	}
	l.ends[target][ls] = struct{}{}
	l.n++
	return ls, nil
}

func (l *liveSlots) release(ls *liveSlot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if ls.project != "" {
		if l.projects[ls.project]--; l.projects[ls.project] == 0 {
			delete(l.projects, ls.project)
		}
	}
	if m := l.ends[ls.target]; m != nil {
		delete(m, ls)
		if len(m) == 0 {
			delete(l.ends, ls.target)
		}
	}
}

// deleted ends the captures of the resources evs delete (a cascade's
// included: a port's services, flows and mirrors, a service's flows).
func (l *liveSlots) deleted(evs []Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range evs {
		if e.Action != "delete" {
			continue
		}
		for ls := range l.ends[e.ID] {
			close(ls.gone)
		}
		delete(l.ends, e.ID) // each gone is closed once
	}
}

func (l *liveSlots) running() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

var errLiveLimit = conflict("LiveCaptureLimit", fmt.Sprintf("%d live captures already run, the most the appliance "+
	"serves at once: retry when one ends (each ends at its duration, its count, or when its client disconnects)",
	broker.MaxLive))

// errLiveProjectLimit is the 409 of a project that runs liveProjectMax
// captures.
func errLiveProjectLimit(project string) error {
	return conflict("LiveCaptureLimit", fmt.Sprintf("project %s already runs %d live captures, the most one "+
		"project runs at once: retry when one ends (each ends at its duration, its count, or when its client "+
		"disconnects)", project, liveProjectMax))
}

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
	slot, err := s.live.acquire(identity(c), id)
	if err != nil {
		return err
	}
	src, err := s.cfg.startLive(broker.LiveTarget{Kind: liveKinds[res], ID: id}, p.snaplen)
	switch {
	case errors.Is(err, broker.ErrLiveLimit):
		s.live.release(slot)
		return errLiveLimit
	case err != nil:
		s.live.release(slot)
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
	ls := &liveStream{src: src, params: p, start: start, done: s.done, deleted: slot.gone, gone: peerClosed(conn),
		valid: s.stillValid(c, identity(c)),
		intf: pcapgo.NgInterface{
			Name:        fmt.Sprintf("%s %s (%s)", res, name, id),
			Description: liveDescriptions[res],
			LinkType:    layers.LinkTypeEthernet,
			SnapLength:  uint32(p.snaplen),
		}}
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.live.release(slot)
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
	// deleted, when set, is closed when the target is deleted.
	deleted <-chan struct{}
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
// ended and how many frames it wrote. The duration's timer stops the
// source itself, so that a reader stalled in a flush does not stretch the
// capture past its duration. The final statistics block holds the
// source's counts after Stop, which are final: what the source still held
// then was never written and counts as dropped (Stop says so), unless the
// count ended the capture: frames beyond the count are no drops, so the
// drops are those counted when the count was reached.
func (ls *liveStream) run(w io.Writer, flush func() error) (end string, written uint64) {
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(ls.src.Stop) } // a second caller waits for the first
	expired := make(chan struct{})
	deadline := time.AfterFunc(ls.params.duration, func() {
		close(expired)
		stop()
	})
	defer deadline.Stop()
	ng, err := pcapgo.NewNgWriterInterface(w, ls.intf, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		Application: "taasd", OS: runtime.GOOS, Hardware: runtime.GOARCH}})
	if err != nil {
		stop()
		return liveEndClient, 0
	}
	flushAll := func() error {
		if err := ng.Flush(); err != nil {
			return err
		}
		return flush()
	}
	if flushAll() != nil {
		stop()
		return liveEndClient, 0
	}
	tick := time.NewTicker(liveIdle)
	defer tick.Stop()
	pk := ls.src.Packets()
	// closed is why Packets closed: the duration's stop, or the target
	// left the data plane.
	closed := func() string {
		select {
		case <-expired:
			return liveEndDuration
		default:
			return liveEndTarget
		}
	}
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
					return closed()
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
						if !ok {
							return closed()
						}
					case <-expired:
						return liveEndDuration
					case <-ls.deleted:
						return liveEndTarget
					case <-ls.done:
						return liveEndShutdown
					default:
						ok = false
					}
					if !ok {
						break
					}
				}
				if revoked() {
					return liveEndRevoked
				}
			case <-tick.C:
				if revoked() {
					return liveEndRevoked
				}
				// A statistics block every tick, busy or not: the
				// dashboard's live drop count reads them.
				if ls.gone != nil && ls.gone() || ls.writeStats(ng, ls.src.Stats(), false) != nil {
					return liveEndClient
				}
			case <-expired:
				return liveEndDuration
			case <-ls.deleted:
				return liveEndTarget
			case <-ls.done:
				return liveEndShutdown
			}
			if flushAll() != nil {
				return liveEndClient
			}
		}
	}()
	counted := ls.src.Stats()
	stop()
	if end == liveEndClient {
		return end, written
	}
	st := ls.src.Stats()
	if end == liveEndCount {
		st.Dropped = counted.Dropped
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
// lost in the kernel, since the start; final adds the end time (and then,
// st being the counts after Stop, received are the frames the stream got
// and dropped include those it never got).
func (ls *liveStream) writeStats(ng *pcapgo.NgWriter, st broker.LiveStats, final bool) error {
	now := time.Now()
	s := pcapgo.NgInterfaceStatistics{LastUpdate: now, StartTime: ls.start, EndTime: now,
		PacketsReceived: st.Captured, PacketsDropped: st.Dropped}
	if !final {
		s.EndTime = time.Time{}
	}
	return ng.WriteInterfaceStats(0, s)
}

// peerClosed returns a check of whether the client's connection failed
// (a reset or another error), or nil where the socket is out of reach. It
// peeks at the socket without consuming anything: while a response
// streams, fasthttp reads nothing from the connection. A clean FIN (the
// peek reads 0 bytes) is no end: a client may half-close after its request
// (`nc -N`, shutdown(SHUT_WR)) and still read; one that closed altogether
// answers the next statistics block with a reset, which the next check
// finds in the connection's state: within two ticks of the close.
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
		failed := false
		err := rc.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			failed = err != nil && err != syscall.EAGAIN && err != syscall.EINTR
			if n == 0 && err == nil {
				// After a FIN, reads say 0 even once a reset has come:
				// the connection's state tells (CLOSE_WAIT while the
				// client still reads, CLOSE after its reset).
				ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
				failed = err == nil && ti.State == tcpClose
			}
			return true // never wait for readiness
		})
		return failed || err != nil
	}
}

// tcpClose is Linux's TCP_CLOSE, the state of a connection a reset ended.
const tcpClose = 7

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
