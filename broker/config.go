package broker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/taas-appliance/taas/broker/xsk"
	"github.com/taas-appliance/taas/internal/netdev"
)

// Config shapes the broker. The zero value is valid: every capture
// interface on all of its RX queues, unmatched frames passed to the kernel,
// batches of 256, 2048-byte UMEM frames, workers that sleep in poll(2).
type Config struct {
	// Logger receives lifecycle logs (attach, detach, plan applied); nil
	// discards them. Nothing is logged per frame.
	Logger *slog.Logger
	// Interfaces hold per-interface settings of capture interfaces; an
	// interface a plan names that is not listed gets the defaults.
	Interfaces []IfaceConfig
	// BatchSize is the most RX descriptors a worker takes per batch: 64 to
	// 256, default 256 (afxdp-notes: 64 with the kernel's TX budget halved
	// throughput).
	BatchSize int
	// FrameSize is the UMEM chunk size in bytes, 2048 (default) or 4096.
	// With 2048 the largest frame captured is 1792 bytes (gotcha 6); larger
	// ones are counted as oversize by the XDP program.
	FrameSize int
	// NumFrames is the number of UMEM frames of each socket; default 4096
	// for a monitor's TX socket and twice RxRingSize for a capture socket.
	NumFrames int
	// RxRingSize is the size of a capture socket's fill and RX rings, a
	// power of two; default 4096. Larger rings ride out longer stalls of a
	// worker (preemption on a shared core) before frames are lost to a full
	// RX ring or an empty fill ring (gotcha 5), at 2*RxRingSize UMEM frames
	// (16 MiB of 2048-byte frames by default) per capture queue.
	RxRingSize int
	// BusyPoll makes workers spin on their RX ring instead of sleeping in
	// poll(2). Default false: on a 2-core machine one core serves NAPI and
	// a spinning worker next to it collapses throughput (gotcha 8).
	BusyPoll bool
	// CPUs, when not empty, pins worker i to CPUs[i % len(CPUs)].
	CPUs []int
	// FastPath lets the XDP program of a capture interface decide frames
	// and send their copies in the kernel (DEVMAP redirect, no AF_XDP
	// copy), whenever its plan fits the program's tables and its monitors
	// take redirected frames; otherwise, and when false, frames go through
	// the AF_XDP workers. taasd turns it on by default ([broker]
	// fast_path); the zero Config keeps the AF_XDP path.
	FastPath bool
	// PollTimeout bounds how long an idle worker sleeps before it checks
	// whether it must stop; default 100ms.
	PollTimeout time.Duration
	// PinDir is a directory on a bpffs (such as /sys/fs/bpf/taasd) where
	// Handoff pins the links of captures on the fast path, one file per
	// interface, and where Apply takes them over (handoff.go). Empty (the
	// default): no handoff; Handoff is Close.
	PinDir string
}

// IfaceConfig is the setting of one capture interface.
type IfaceConfig struct {
	// Name is the netdev name.
	Name string
	// Queues is the number of RX queues (0..Queues-1) that get a socket and
	// a worker; 0 means every RX queue of the netdev.
	Queues int
	// Unmatched is what the XDP program does with frames no flow wants:
	// "pass" (default, empty) to the kernel stack, or "drop".
	Unmatched string
}

// Defaults of the zero fields of Config.
const (
	DefaultBatchSize   = 256
	DefaultPollTimeout = 100 * time.Millisecond
	DefaultRxRingSize  = 4096
)

func (c *Config) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.FrameSize == 0 {
		c.FrameSize = 2048
	}
	if c.RxRingSize == 0 {
		c.RxRingSize = DefaultRxRingSize
	}
	if c.PollTimeout == 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports the first setting out of range.
func (c Config) Validate() error {
	c.setDefaults()
	if c.BatchSize < 64 || c.BatchSize > 256 {
		return fmt.Errorf("broker config: batch size %d: want 64..256", c.BatchSize)
	}
	if c.FrameSize != 2048 && c.FrameSize != 4096 {
		return fmt.Errorf("broker config: frame size %d: want 2048 or 4096", c.FrameSize)
	}
	if c.NumFrames < 0 || (c.NumFrames != 0 && c.NumFrames < 2*c.BatchSize) {
		return fmt.Errorf("broker config: %d frames: want 0 (default) or at least twice the batch size", c.NumFrames)
	}
	if c.RxRingSize < 64 || c.RxRingSize > 1<<16 || c.RxRingSize&(c.RxRingSize-1) != 0 {
		return fmt.Errorf("broker config: rx ring size %d: want a power of two from 64 to 65536", c.RxRingSize)
	}
	if c.PollTimeout < 0 {
		return fmt.Errorf("broker config: poll timeout %v: want positive", c.PollTimeout)
	}
	for _, cpu := range c.CPUs {
		if cpu < 0 {
			return fmt.Errorf("broker config: cpu %d: want 0 or more", cpu)
		}
	}
	seen := map[string]bool{}
	for _, ic := range c.Interfaces {
		if err := netdev.CheckName(ic.Name); err != nil {
			return fmt.Errorf("broker config: interface %q: %w", ic.Name, err)
		}
		if seen[ic.Name] {
			return fmt.Errorf("broker config: interface %q listed twice", ic.Name)
		}
		seen[ic.Name] = true
		if ic.Queues < 0 {
			return fmt.Errorf("broker config: interface %s: queues %d: want 0 (all) or more", ic.Name, ic.Queues)
		}
		if _, err := unmatchedAction(ic.Unmatched); err != nil {
			return fmt.Errorf("broker config: interface %s: %w", ic.Name, err)
		}
	}
	return nil
}

// SocketMemory is the UMEM, in bytes, that one capture socket (there is one
// per capture RX queue) and one monitor socket (one per monitor interface)
// lock, as Apply opens them: what RLIMIT_MEMLOCK must cover without
// CAP_IPC_LOCK (gotcha 7). Rings add a little.
func (c Config) SocketMemory() (capture, monitor int) {
	c.setDefaults()
	return c.captureFrames() * c.FrameSize, c.monitorFrames() * c.FrameSize
}

// captureFrames is the UMEM frames of a capture socket: enough for a full
// fill ring and a full RX ring at once, unless NumFrames says otherwise.
func (c *Config) captureFrames() int {
	if c.NumFrames != 0 {
		return c.NumFrames
	}
	return 2 * c.RxRingSize
}

// monitorFrames is the UMEM frames of a monitor's TX socket.
func (c *Config) monitorFrames() int {
	if c.NumFrames != 0 {
		return c.NumFrames
	}
	return xsk.DefaultNumFrames
}

// iface returns the setting of the interface name, or the defaults.
func (c *Config) iface(name string) IfaceConfig {
	for _, ic := range c.Interfaces {
		if ic.Name == name {
			return ic
		}
	}
	return IfaceConfig{Name: name}
}
