package xdpprog

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Limits of one program instance, fixed by the map sizes in xdp.c.
const (
	// MaxQueues is the number of XSKMAP slots: RX queues 0..MaxQueues-1.
	MaxQueues = 64
	// MaxMACs is the most MAC entries a Filter may hold. The map holds twice
	// as many so that SetFilter can widen to old+new before it narrows.
	MaxMACs = 4096
	// vlanWords is the number of 64-bit words of the VLAN bitmap.
	vlanWords = 64
)

// Slots of the settings map; keep equal to SETTING_* in xdp.c.
const (
	settingAction uint32 = iota
	settingMulticast
	settingMaxFrame
)

// XDP verdicts, as the program returns them.
const (
	xdpAborted  uint32 = 0
	xdpDrop     uint32 = 1
	xdpPass     uint32 = 2
	xdpRedirect uint32 = 4
)

// Action is what the program does with a frame it does not redirect.
type Action uint8

const (
	// Pass hands the frame to the kernel stack (the default).
	Pass Action = iota
	// Drop drops it in the driver, the cheapest path for a capture-only port.
	Drop
)

// actionNames and modeNames are the String and config-file spellings.
var (
	actionNames = []string{Pass: "pass", Drop: "drop"}
	modeNames   = []string{Native: "native", Generic: "generic"}
)

func (a Action) String() string { return enumString("Action", actionNames, uint8(a)) }

// MarshalText gives the config-file spelling: "pass" or "drop".
func (a Action) MarshalText() ([]byte, error) {
	return enumMarshal("unmatched action", actionNames, uint8(a))
}

// UnmarshalText parses "pass" or "drop"; config files and flags use it.
func (a *Action) UnmarshalText(b []byte) error {
	return enumUnmarshal("unmatched action", actionNames, b, (*uint8)(a))
}

// verdict is the XDP return code of a.
func (a Action) verdict() uint32 {
	if a == Drop {
		return xdpDrop
	}
	return xdpPass
}

// Mode is how the program is attached to the interface.
type Mode uint8

const (
	// Native attaches in the driver (XDP_FLAGS_DRV_MODE), the default.
	Native Mode = iota
	// Generic attaches after the skb is built (XDP_FLAGS_SKB_MODE): slower,
	// but works on any netdev.
	Generic
)

func (m Mode) String() string { return enumString("Mode", modeNames, uint8(m)) }

// MarshalText gives the config-file spelling: "native" or "generic".
func (m Mode) MarshalText() ([]byte, error) { return enumMarshal("xdp mode", modeNames, uint8(m)) }

// UnmarshalText parses "native" or "generic"; config files and flags use it.
func (m *Mode) UnmarshalText(b []byte) error {
	return enumUnmarshal("xdp mode", modeNames, b, (*uint8)(m))
}

func enumString(typ string, names []string, v uint8) string {
	if int(v) < len(names) {
		return names[v]
	}
	return fmt.Sprintf("%s(%d)", typ, v)
}

func enumMarshal(what string, names []string, v uint8) ([]byte, error) {
	if int(v) >= len(names) {
		return nil, fmt.Errorf("%s %d: want %s", what, v, strings.Join(names, " or "))
	}
	return []byte(names[v]), nil
}

func enumUnmarshal(what string, names []string, b []byte, v *uint8) error {
	for i, n := range names {
		if string(b) == n {
			*v = uint8(i)
			return nil
		}
	}
	return fmt.Errorf("%s %q: want %s", what, b, strings.Join(names, " or "))
}

// Config is the per-interface setting of one program instance. The zero
// value is valid: pass unmatched frames, native mode, no frame size limit.
type Config struct {
	// Unmatched is what happens to frames no flow can want (and to runts,
	// truncated tags, oversize frames, frames of a queue without a socket).
	// Default Pass.
	Unmatched Action
	// Mode is the attach mode. Default Native.
	Mode Mode
	// MaxFrame is the largest frame in bytes that fits a UMEM chunk (chunk
	// size minus XDP and UMEM headroom); larger wanted frames are counted as
	// oversize and not redirected. 0 means no limit.
	MaxFrame int
}

// Validate reports a setting out of range.
func (c Config) Validate() error {
	if _, err := c.Unmatched.MarshalText(); err != nil {
		return err
	}
	if _, err := c.Mode.MarshalText(); err != nil {
		return err
	}
	if c.MaxFrame < 0 || c.MaxFrame > 1<<16 {
		return fmt.Errorf("max frame %d bytes: want 0..65536", c.MaxFrame)
	}
	return nil
}

// captureObjects are what a Capture loads: every map and the capture
// program, not xdp_tunnel, whose instances SetTunnel loads per tunnel
// (verifying it costs about 150 ms).
type captureObjects struct {
	xdpMaps
	XdpCapture *ebpf.Program `ebpf:"xdp_capture"`
	// XdpResume is where the filter program goes on (filters.go).
	XdpResume *ebpf.Program `ebpf:"xdp_resume"`
}

func (o *captureObjects) Close() error {
	return errors.Join(o.XdpCapture.Close(), o.XdpResume.Close(), o.xdpMaps.Close())
}

// Capture is one instance of the XDP program with its own maps, loaded for
// one capture interface and, after Attach, attached to it with a bpf_link.
// Its methods are safe for concurrent use.
type Capture struct {
	cfg Config

	mu   sync.Mutex
	objs captureObjects
	link link.Link // nil until attached, and after Close
	// pending: link was taken over (AttachOver) and still runs the previous
	// owner's program until Activate; oldProgs holds that program's
	// fast_progs until then (handoff.go).
	pending  bool
	oldProgs *ebpf.Map
	// What the kernel maps hold now, so SetFilter writes only differences.
	macs      map[[6]byte]Want
	multicast bool
	hints     macHints
	vlans     VLANSet
	percpu    []xdpCounters        // scratch for Counters
	fast      fastState            // the fast tables (fast.go)
	tunnels   map[int]*tunnelState // by slot (tunnel_xdp.go)
	live      liveState            // live captures (live.go)
	// sharedTunnel is native mode's xdp_tunnel for every slot, loaded by
	// the first SetTunnel.
	sharedTunnel *ebpf.Program
	closed       bool
	// afterWrite, when set (by tests), runs after every single map write of
	// SetFilter, to check the filter in each intermediate state.
	afterWrite func()
}

// Load loads a fresh instance of the program and its maps without attaching
// it: everything is unmatched until SetFilter says otherwise. Attach is Load
// plus the bpf_link; tests and benchmarks run a loaded program on crafted
// frames.
func Load(cfg Config) (*Capture, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Capture{cfg: cfg, macs: map[[6]byte]Want{}, tunnels: map[int]*tunnelState{}}
	c.fast.sets, c.fast.tx, c.fast.snaps = map[string]*outSet{}, map[int]bool{}, map[int]uint32{}
	for g := range c.fast.ports {
		c.fast.ports[g], c.fast.decs[g], c.fast.copies[g] = map[[6]byte]uint32{}, map[FastKey]Decision{}, map[uint64]Copies{}
	}
	spec, err := loadXdp()
	if err != nil {
		return nil, fmt.Errorf("load xdp spec: %w", err)
	}
	if err := spec.LoadAndAssign(&c.objs, nil); err != nil {
		return nil, fmt.Errorf("load xdp program: %w", err)
	}
	if err := c.init(); err != nil {
		// The init error is the one to report; closing fresh objects only
		// releases file descriptors.
		_ = c.objs.Close()
		return nil, err
	}
	return c, nil
}

// init writes the settings of c.cfg and the filter Filter{} into fresh maps.
func (c *Capture) init() error {
	settings := []struct {
		slot, value uint32
	}{
		{settingAction, c.cfg.Unmatched.verdict()},
		{settingMulticast, 0},
		{settingMaxFrame, uint32(c.cfg.MaxFrame)},
	}
	for _, s := range settings {
		if err := c.objs.Settings.Update(s.slot, s.value, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write xdp setting %d: %w", s.slot, err)
		}
	}
	if err := c.writeClockLocked(); err != nil {
		return err
	}
	if err := c.objs.FastProgs.Update(uint32(resumeSlot), c.objs.XdpResume, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write resume program: %w", err)
	}
	// Filter{} wants every VLAN (nil VLANs): the bitmap starts full.
	return c.setFilterLocked(Filter{})
}

// Attach loads a fresh instance of the program and attaches it to the
// interface with a bpf_link, which detaches on Close or when the process
// exits and never silently replaces another program (afxdp-notes gotcha 9).
func Attach(ifindex int, cfg Config) (*Capture, error) {
	c, err := Load(cfg)
	if err != nil {
		return nil, err
	}
	flags := link.XDPDriverMode
	if cfg.Mode == Generic {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: c.objs.XdpCapture, Interface: ifindex, Flags: flags})
	if err != nil {
		// The attach error is the one to report; c was never attached.
		_ = c.Close()
		return nil, fmt.Errorf("attach xdp to ifindex %d (%v mode): %w", ifindex, cfg.Mode, err)
	}
	c.link = l
	return c, nil
}

// SetSocket puts the AF_XDP socket fd into the XSKMAP slot of RX queue
// queue: frames of that queue that pass the filter are redirected to it.
// The socket must be bound to the same interface and queue.
func (c *Capture) SetSocket(queue int, fd int) error {
	return c.withSlot("set xsk", queue, func(key uint32) error {
		return c.objs.Xsks.Update(key, uint32(fd), ebpf.UpdateAny)
	})
}

// ClearSocket empties the XSKMAP slot of queue; its wanted frames are then
// counted as redirect_failed and get the unmatched action. Clearing an empty
// slot is not an error.
func (c *Capture) ClearSocket(queue int) error {
	return c.withSlot("clear xsk", queue, func(key uint32) error {
		if err := c.objs.Xsks.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		return nil
	})
}

// withSlot checks queue and runs fn on its XSKMAP key with c.mu held.
func (c *Capture) withSlot(op string, queue int, fn func(key uint32) error) error {
	return c.withKey(op+" of queue", "queue", queue, MaxQueues, fn)
}

// withKey checks that i is in 0..n-1 and runs fn on it with c.mu held;
// errors read "<what> <i>: ...".
func (c *Capture) withKey(what, noun string, i, n int, fn func(key uint32) error) error {
	if i < 0 || i >= n {
		return fmt.Errorf("%s %d: %s out of range 0..%d", what, i, noun, n-1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("%s %d: %w", what, i, ErrClosed)
	}
	if err := fn(uint32(i)); err != nil {
		return fmt.Errorf("%s %d: %w", what, i, err)
	}
	return nil
}

// ErrClosed is returned by methods of a closed Capture.
var ErrClosed = errors.New("xdp capture closed")

// Close detaches the program (when attached, unless its link is pinned:
// see Pin) and frees its maps. Closing twice is not an error.
func (c *Capture) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.link != nil {
		if err := c.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach xdp: %w", err))
		}
		c.link = nil
	}
	if r := c.live.reader; r != nil {
		if err := r.rd.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close live reader: %w", err))
		}
		c.live.reader = nil
	}
	if err := c.closeTunnelsLocked(); err != nil {
		errs = append(errs, err)
	}
	for key, set := range c.fast.sets {
		if err := set.m.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close output set %d: %w", set.slot, err))
		}
		delete(c.fast.sets, key)
	}
	if err := c.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close xdp objects: %w", err))
	}
	if err := c.closeFastProgsLocked(); err != nil {
		errs = append(errs, err)
	}
	if c.oldProgs != nil {
		if err := c.oldProgs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close old filters: %w", err))
		}
		c.oldProgs = nil
	}
	if c.fast.barrier != nil {
		if err := c.fast.barrier.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close barrier map: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Config returns the configuration the capture was loaded with.
func (c *Capture) Config() Config { return c.cfg }
