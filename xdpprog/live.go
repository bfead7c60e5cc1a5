package xdpprog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/perf"
	"golang.org/x/sys/unix"
)

// Live captures (issue 12) on the fast path: frames the kernel decides and
// copies never reach userspace, so the XDP program hands a copy of each
// frame a live capture wants to userspace itself, through a perf event
// array (bpf_perf_event_output with the frame's bytes appended from the
// XDP context, as xdpdump does). Which captures want a frame is a bitmask
// per fast flow counter slot (the frames the flow matched) and per fast
// service counter slot (the copies the service, or a mirror's tunnel, sent);
// the program ORs the masks of the frame and outputs the frame once, with
// the mask, whatever the number of captures. With no mask set (the usual
// case) the program reads one setting per frame and nothing more.
//
// The rule, per frame of the fast path (filtered or not): mask = the masks
// of the flows that matched it (a filtered flow whose filter rejected it
// did not) | the masks of the services whose copy was sent (not down, and
// the redirect accepted). A frame no copy leaves with (every filter
// rejected it, every service is down, the redirect was refused) is not
// handed over, not even to its flows' captures. The frame handed over is
// the frame as it arrived: before a service's snaplen or a tunnel's
// headers. A tunnel's copy counts as sent once its redirect is accepted:
// in native mode on a driver that keeps no XDP metadata, xdp_tunnel then
// cannot tell its tunnel and drops it (UnknownTunnel), yet the frame was
// handed over; the tunnel's failed counter shows it.
//
// Live masks are not part of a handoff (Pin): live captures end with the
// process.

// MaxLive is how many live captures the kernel's masks tell apart.
const MaxLive = 8

// ErrLiveNotImplemented was the stubs' error; nothing returns it any more.
//
// Deprecated: kept for code written against the stubs.
var ErrLiveNotImplemented = errors.New("xdpprog: live capture not implemented")

// Slots of the settings map and sizes; keep equal to SETTING_LIVE,
// SETTING_LIVE_SNAP, struct live_meta and LIVE_MAX_CAP in xdp.c.
const (
	settingLive     uint32 = 5
	settingLiveSnap uint32 = 6
	liveMetaSize           = 24
	// MaxLiveCap is the most bytes of a frame the kernel hands over (a
	// perf sample's size is 16 bits): a longer frame is cut to it
	// whatever SetLive's snap.
	MaxLiveCap = 0xff00
)

// LiveMeta is what the program puts in front of a captured frame's bytes.
type LiveMeta struct {
	// Mask has bit i set when live capture i wants the frame.
	Mask uint8
	// Len is the frame's length on the wire (the bytes that follow may be
	// fewer: SetLive's snap).
	Len uint32
	// Mono is when the program saw the frame, CLOCK_MONOTONIC nanoseconds
	// (bpf_ktime_get_ns; Monotonic reads the same clock).
	Mono uint64
}

// Monotonic returns CLOCK_MONOTONIC now in nanoseconds, the clock of
// LiveMeta.Mono: with time.Now taken beside it, it converts Mono to wall
// time.
func Monotonic() uint64 {
	var ts unix.Timespec
	// CLOCK_MONOTONIC cannot fail with a valid pointer.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// decodeLive splits a sample of the program into its meta and the frame's
// bytes (perf pads a sample to 8 bytes: the meta says how many are the
// frame's). ok is false for a sample too short for what it claims.
func decodeLive(raw []byte) (m LiveMeta, data []byte, ok bool) {
	if len(raw) < liveMetaSize {
		return LiveMeta{}, nil, false
	}
	caplen := binary.NativeEndian.Uint32(raw[12:16])
	if uint64(caplen) > uint64(len(raw)-liveMetaSize) {
		return LiveMeta{}, nil, false
	}
	m = LiveMeta{
		Mono: binary.NativeEndian.Uint64(raw[0:8]),
		Len:  binary.NativeEndian.Uint32(raw[8:12]),
		Mask: raw[16],
	}
	return m, raw[liveMetaSize : liveMetaSize+caplen], true
}

// liveState mirrors what the live maps and settings hold, so SetLive
// writes only differences.
type liveState struct {
	on          bool
	snap        uint32
	flows, svcs map[uint16]uint8 // the non-zero masks
	reader      *LiveReader      // the open reader, closed with the Capture
}

// SetLive sets which live captures want the frames of each fast flow
// counter slot and the copies of each fast service counter slot (the keys
// of FastTable's flows and services, tunnels included), bit i for capture
// i, and how many bytes of a frame the kernel copies (the largest snaplen
// of the running captures; 0: whole frames, at most MaxLiveCap). Slots
// absent, or with mask 0, have no capture. Empty maps turn live capture
// off. Masks apply to both generations of the fast tables: a new
// FastTable keeps them only if the broker sets them again for its slots.
// Only differences are written; a snap that grows is written before the
// masks and one that shrinks after, so a new capture's first frames are
// not cut short. Frames reach a reader only while one is open (OpenLive);
// without one the kernel counts them in Counters.LiveFailed.
func (c *Capture) SetLive(flows, services map[uint16]uint8, snap uint32) error {
	for _, m := range []map[uint16]uint8{flows, services} {
		for slot := range m {
			if slot >= MaxFastSlots {
				return fmt.Errorf("set live captures: counter slot %d, at most %d", slot, MaxFastSlots-1)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("set live captures: %w", ErrClosed)
	}
	if err := c.setLiveLocked(flows, services, snap); err != nil {
		return fmt.Errorf("set live captures: %w", err)
	}
	return nil
}

func (c *Capture) setLiveLocked(flows, services map[uint16]uint8, snap uint32) error {
	l := &c.live
	if l.flows == nil {
		l.flows, l.svcs = map[uint16]uint8{}, map[uint16]uint8{}
	}
	on := nonZero(flows) || nonZero(services)
	if !on {
		// Off first: the program then reads no mask at all.
		if err := c.liveSwitchLocked(false); err != nil {
			return err
		}
		snap = 0
	}
	// cut is the snap as a length: 0 is whole frames.
	cut := func(s uint32) uint32 {
		if s == 0 {
			return ^uint32(0)
		}
		return s
	}
	if cut(snap) > cut(l.snap) {
		if err := c.liveSnapLocked(snap); err != nil {
			return err
		}
	}
	if err := syncLive(c.objs.LiveFlows, "flow", l.flows, flows); err != nil {
		return err
	}
	if err := syncLive(c.objs.LiveSvcs, "service", l.svcs, services); err != nil {
		return err
	}
	if snap != l.snap {
		if err := c.liveSnapLocked(snap); err != nil {
			return err
		}
	}
	if on {
		return c.liveSwitchLocked(true)
	}
	return nil
}

// liveSwitchLocked turns the program's live capture on or off, when it is
// not already.
func (c *Capture) liveSwitchLocked(on bool) error {
	if c.live.on == on {
		return nil
	}
	v := uint32(0)
	if on {
		v = 1
	}
	if err := c.objs.Settings.Update(settingLive, v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("turn live capture on or off (%d): %w", v, err)
	}
	c.live.on = on
	return nil
}

func (c *Capture) liveSnapLocked(snap uint32) error {
	if err := c.objs.Settings.Update(settingLiveSnap, snap, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("live snap %d: %w", snap, err)
	}
	c.live.snap = snap
	return nil
}

// syncLive brings the masks of array m, mirrored by have, to want.
func syncLive(m *ebpf.Map, what string, have, want map[uint16]uint8) error {
	for slot, mask := range want {
		if mask == 0 || have[slot] == mask {
			continue
		}
		if err := m.Update(uint32(slot), mask, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("%s slot %d: %w", what, slot, err)
		}
		have[slot] = mask
	}
	for slot := range have {
		if want[slot] != 0 {
			continue
		}
		if err := m.Update(uint32(slot), uint8(0), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("clear %s slot %d: %w", what, slot, err)
		}
		delete(have, slot)
	}
	return nil
}

func nonZero(m map[uint16]uint8) bool {
	for _, v := range m {
		if v != 0 {
			return true
		}
	}
	return false
}

// LiveReader reads the frames the program hands to live captures.
type LiveReader struct {
	c   *Capture
	rd  *perf.Reader
	rec perf.Record
}

// ErrLiveOpen is OpenLive's error while the capture has a reader.
var ErrLiveOpen = errors.New("xdp capture already has a live reader")

// OpenLive opens a reader of the capture's live frames, with perCPU bytes
// of buffer on each CPU (rounded up to pages; a frame takes its caplen
// plus 36 bytes, rounded up to 8: a 64-byte frame 104 bytes, 1518 bytes
// 1560). The kernel wakes the reader when a CPU's buffer holds a quarter
// of perCPU or 64 KiB, whichever is less (small wakeups keep a burst within
// the captures' buffers), or Read's deadline makes it look. One reader per Capture
// (ErrLiveOpen); Close on the Capture closes it too.
func (c *Capture) OpenLive(perCPU int) (*LiveReader, error) {
	if perCPU < 1 {
		return nil, fmt.Errorf("open live reader: %d bytes per CPU, want at least 1", perCPU)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("open live reader: %w", ErrClosed)
	}
	if c.live.reader != nil {
		return nil, fmt.Errorf("open live reader: %w", ErrLiveOpen)
	}
	rd, err := perf.NewReaderWithOptions(c.objs.LiveEvents, perCPU, perf.ReaderOptions{Watermark: min(perCPU/4, 64<<10)})
	if err != nil {
		return nil, fmt.Errorf("open live reader: %w", err)
	}
	r := &LiveReader{c: c, rd: rd}
	// Room for the longest sample: ReadInto never grows it.
	r.rec.RawSample = make([]byte, 0, liveMetaSize+MaxLiveCap+8)
	c.live.reader = r
	return r, nil
}

// liveCheckEvery is how many frames Read hands over between looks at its
// deadline while frames keep coming.
const liveCheckEvery = 256

// Read waits until deadline for frames and calls fn for each (data is
// valid only during the call); it returns how many frames the kernel lost
// because the buffer was full (they are not in fn's calls), a sample too
// short for its meta (cannot happen) counted with them. The kernel writes
// its count of lost frames into a CPU's buffer in front of the next frame
// that fits there, so a loss is reported a frame late (Counters.LiveFailed
// counts it at once). A deadline that
// passes is not an error; Read returns at the deadline, even while frames
// keep coming, after handing over at most a few hundred more. A zero
// deadline waits for ever. After Close it returns ErrClosed. It does not
// allocate per frame. One Read at a time.
func (r *LiveReader) Read(deadline time.Time, fn func(m LiveMeta, data []byte)) (lost uint64, err error) {
	r.rd.SetDeadline(deadline)
	for n := 1; ; n++ {
		err := r.rd.ReadInto(&r.rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				return lost, nil
			}
			// An earlier deadline's, left when Read returned before
			// the reader did: wait on.
			continue
		case errors.Is(err, perf.ErrClosed):
			return lost, fmt.Errorf("read live frames: %w", ErrClosed)
		case err != nil:
			return lost, fmt.Errorf("read live frames: %w", err)
		}
		if r.rec.LostSamples > 0 {
			lost += r.rec.LostSamples
		} else if m, data, ok := decodeLive(r.rec.RawSample); ok {
			fn(m, data)
		} else {
			lost++
		}
		if !deadline.IsZero() && (n%liveCheckEvery == 0 || r.rec.Remaining == 0) && !time.Now().Before(deadline) {
			return lost, nil
		}
	}
}

// Close ends the reader; a Read in progress returns. Closing twice is not
// an error.
func (r *LiveReader) Close() error {
	r.c.mu.Lock()
	if r.c.live.reader == r {
		r.c.live.reader = nil
	}
	r.c.mu.Unlock()
	if err := r.rd.Close(); err != nil {
		return fmt.Errorf("close live reader: %w", err)
	}
	return nil
}
