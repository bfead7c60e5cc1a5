package xdpprog

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Outcome is the one outcome counter a frame bumps (see Counters).
type Outcome uint8

const (
	Redirected Outcome = iota
	RedirectFailed
	Unmatched
	VLANFiltered
	Runt
	TruncatedTag
	Oversize
	FastRedirected
	FastFailed
	FastNoOutput
	FastFiltered
)

var outcomeNames = []string{Redirected: "redirected", RedirectFailed: "redirect_failed", Unmatched: "unmatched",
	VLANFiltered: "vlan_filtered", Runt: "runt", TruncatedTag: "truncated_tag", Oversize: "oversize",
	FastRedirected: "fast_redirected", FastFailed: "fast_failed", FastNoOutput: "fast_no_output",
	FastFiltered: "fast_filtered"}

// String is the outcome's counter name.
func (o Outcome) String() string { return enumString("Outcome", outcomeNames, uint8(o)) }

// Kept reports whether the early filter kept the frame for userspace: it
// was redirected, or would have been had its queue had a socket. Fast-path
// outcomes are not Kept: the kernel decided those frames.
func (o Outcome) Kept() bool { return o == Redirected || o == RedirectFailed }

// Run runs the loaded program once on frame with BPF_PROG_TEST_RUN, as if
// it arrived on RX queue 0, and returns its outcome: what the program makes
// of a frame, for tests and benchmarks of other packages (e.g. that the
// early filter keeps every frame the broker's classifier wants). A redirect
// is not delivered. The counters move as for a real frame, so do not Run
// frames through a Capture whose counters are being exported. The kernel
// refuses frames shorter than 14 bytes or larger than about 3.5 KB.
func (c *Capture) Run(frame []byte) (Outcome, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, fmt.Errorf("run xdp program: %w", ErrClosed)
	}
	before, err := c.countersLocked()
	if err != nil {
		return 0, err
	}
	if _, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: frame}); err != nil {
		return 0, fmt.Errorf("run xdp program on %d bytes: %w", len(frame), err)
	}
	after, err := c.countersLocked()
	if err != nil {
		return 0, err
	}
	for o, n := range []uint64{
		Redirected:     after.Redirected - before.Redirected,
		RedirectFailed: after.RedirectFailed - before.RedirectFailed,
		Unmatched:      after.Unmatched - before.Unmatched,
		VLANFiltered:   after.VLANFiltered - before.VLANFiltered,
		Runt:           after.Runt - before.Runt,
		TruncatedTag:   after.TruncatedTag - before.TruncatedTag,
		Oversize:       after.Oversize - before.Oversize,
		FastRedirected: after.FastRedirected - before.FastRedirected,
		FastFailed:     after.FastFailed - before.FastFailed,
		FastNoOutput:   after.FastNoOutput - before.FastNoOutput,
		FastFiltered:   after.FastFiltered - before.FastFiltered,
	} {
		if n == 1 {
			return Outcome(o), nil
		}
	}
	return 0, fmt.Errorf("run xdp program: no outcome counter moved by one (%+v -> %+v)", before, after)
}
