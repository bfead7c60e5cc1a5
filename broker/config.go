package broker

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/taas-appliance/taas/broker/xsk"
	"github.com/taas-appliance/taas/internal/netdev"
	"github.com/taas-appliance/taas/xdpprog"
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
		c.FrameSize = xsk.DefaultFrameSize
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

// MaxQueues is the most RX queues of a capture interface that get a socket
// (IfaceConfig.Queues): the XSKMAP's slots.
const MaxQueues = xdpprog.MaxQueues

// FieldError is one setting of a Config out of range: the field as Go
// spells it ("BatchSize", "CPUs[1]", "Interfaces[0].Queues") and what is
// wrong with it, worded for an operator ("must be 0 (default) or 64 to 256,
// got 32"). cmd/taasd renames the field to its configuration file's key, so
// each rule and its wording live here only.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return "broker config: " + e.Field + ": " + e.Problem }

// Validate reports every setting out of range (Problems), joined.
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.Problems() {
		errs = append(errs, p)
	}
	return errors.Join(errs...)
}

// Problems lists every setting of c out of range, in field order; none
// when c is valid. A zero field means its default and is always valid.
func (c Config) Problems() []*FieldError {
	var ps []*FieldError
	bad := func(field, format string, args ...any) {
		ps = append(ps, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	if b := c.BatchSize; b != 0 && (b < 64 || b > 256) {
		bad("BatchSize", "must be 0 (default) or 64 to 256, got %d", b)
	}
	if f := c.FrameSize; f != 0 && f != 2048 && f != 4096 {
		bad("FrameSize", "must be 0 (default), 2048 or 4096, got %d", f)
	}
	batch := cmp.Or(c.BatchSize, DefaultBatchSize)
	if n := c.NumFrames; n < 0 || n != 0 && (n < 2*batch || n > xsk.MaxNumFrames) {
		bad("NumFrames", "must be 0 (default) or twice the batch size (%d) to %d, got %d", 2*batch, xsk.MaxNumFrames, n)
	}
	if r := c.RxRingSize; r != 0 && (r < 64 || r > 1<<16 || r&(r-1) != 0) {
		bad("RxRingSize", "must be 0 (default) or a power of two from 64 to 65536, got %d", r)
	}
	if c.PollTimeout < 0 {
		bad("PollTimeout", "must be 0 (default) or more, got %v", c.PollTimeout)
	}
	seenCPU := map[int]bool{}
	for i, cpu := range c.CPUs {
		field := fmt.Sprintf("CPUs[%d]", i)
		switch {
		case cpu < 0:
			bad(field, "must be a CPU number (0 or more), got %d", cpu)
		case seenCPU[cpu]:
			bad(field, "CPU %d listed twice", cpu)
		}
		seenCPU[cpu] = true
	}
	seen := map[string]bool{}
	for i, ic := range c.Interfaces {
		field := func(name string) string { return fmt.Sprintf("Interfaces[%d].%s", i, name) }
		if err := netdev.CheckName(ic.Name); err != nil {
			bad(field("Name"), "%v", err)
		} else if seen[ic.Name] {
			bad(field("Name"), "%q listed twice", ic.Name)
		}
		seen[ic.Name] = true
		if ic.Queues < 0 || ic.Queues > MaxQueues {
			bad(field("Queues"), "must be 0 (all) to %d, got %d", MaxQueues, ic.Queues)
		}
		if _, err := unmatchedAction(ic.Unmatched); err != nil {
			bad(field("Unmatched"), "%v", err)
		}
	}
	return ps
}

// captureSocket is the socket Apply opens on each RX queue of a capture
// interface: its fill and RX rings RxRingSize entries, and enough UMEM
// frames for both full at once, unless NumFrames says otherwise. c has its
// defaults set.
func (c *Config) captureSocket() xsk.Config {
	frames := c.NumFrames
	if frames == 0 {
		frames = 2 * c.RxRingSize
	}
	return xsk.Config{RxOnly: true, FrameSize: c.FrameSize, NumFrames: frames, FillSize: c.RxRingSize, RxSize: c.RxRingSize}
}

// outputSocket is the TX socket Apply opens on queue 0 of each monitor
// and each uplink. c has its defaults set.
func (c *Config) outputSocket() xsk.Config {
	return xsk.Config{TxOnly: true, FrameSize: c.FrameSize, NumFrames: c.NumFrames}
}

// CaptureQueues is how many RX queues of capture interface name get a
// socket and a worker when the netdev has rxQueues of them: its
// IfaceConfig.Queues, or every one (at least one).
func (c Config) CaptureQueues(name string, rxQueues int) int {
	if q := c.iface(name).Queues; q != 0 {
		return q
	}
	return max(rxQueues, 1)
}

// MaxFrame is the largest frame, in bytes, a capture interface passes on:
// what a capture socket's UMEM chunk holds after the headroom copy mode
// puts before it (gotcha 6), 1792 with 2048-byte frames. The XDP program
// counts larger ones xdp_oversize, on both paths.
func (c Config) MaxFrame() int {
	c.setDefaults()
	return c.captureSocket().MaxRxFrame()
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
