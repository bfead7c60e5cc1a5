package xdpprog

import "fmt"

// Counters are the program's counters summed over CPUs; they only grow while
// the program is loaded. All count frames but SeenBytes. Every frame counts
// in Seen (and its length in SeenBytes) and in exactly one
// outcome: Redirected, RedirectFailed, Unmatched, VLANFiltered, Runt,
// TruncatedTag, Oversize, or, on the fast path (SetFast), FastRedirected,
// FastFailed, FastNoOutput or FastFiltered. Passed and Dropped count the verdicts of
// frames that were not redirected; LiveFailed is not an outcome either.
type Counters struct {
	// Seen is every frame the program ran on.
	Seen uint64
	// SeenBytes are the bytes of those frames, each whole from its
	// destination MAC without FCS (tcpdump's length), whatever the driver
	// counts in the netdev's rx_bytes.
	SeenBytes uint64
	// Redirected frames went to the XSKMAP slot of their RX queue.
	Redirected uint64
	// RedirectFailed frames were wanted but their queue had no socket.
	RedirectFailed uint64
	// Unmatched frames were wanted by no flow (MAC and multicast test).
	Unmatched uint64
	// VLANFiltered frames passed the MAC test but their outer VID is not
	// wanted.
	VLANFiltered uint64
	// Runt frames are shorter than an Ethernet header (14 bytes).
	Runt uint64
	// TruncatedTag frames end inside a VLAN tag.
	TruncatedTag uint64
	// Oversize frames were wanted but are larger than Config.MaxFrame.
	Oversize uint64
	// Passed and Dropped count the unmatched action taken.
	Passed  uint64
	Dropped uint64
	// FastRedirected frames were decided in the kernel and their copies
	// handed to a DEVMAP (one per service).
	FastRedirected uint64
	// FastFailed frames were decided but bpf_redirect_map refused them, or
	// the tail call to the filters failed (no copy was sent).
	FastFailed uint64
	// FastNoOutput frames matched flows none of whose services had a usable
	// monitor.
	FastNoOutput uint64
	// FastFiltered frames were decided, but every flow's filter rejected
	// them: they got the unmatched action.
	FastFiltered uint64
	// LiveFailed frames a live capture wanted were refused by the perf
	// buffer: no reader open (OpenLive), or its CPU's buffer full (the
	// reader counts those as lost too). Not an outcome: the frame
	// went on.
	LiveFailed uint64
}

// Each calls fn with every counter's stable snake_case name (what metrics
// and the stats API export) and value, in a fixed order. It does not
// allocate.
func (c *Counters) Each(fn func(name string, v uint64)) {
	fn("seen", c.Seen)
	fn("seen_bytes", c.SeenBytes)
	fn("redirected", c.Redirected)
	fn("redirect_failed", c.RedirectFailed)
	fn("unmatched", c.Unmatched)
	fn("vlan_filtered", c.VLANFiltered)
	fn("runt", c.Runt)
	fn("truncated_tag", c.TruncatedTag)
	fn("oversize", c.Oversize)
	fn("passed", c.Passed)
	fn("dropped", c.Dropped)
	fn("fast_redirected", c.FastRedirected)
	fn("fast_failed", c.FastFailed)
	fn("fast_no_output", c.FastNoOutput)
	fn("fast_filtered", c.FastFiltered)
	fn("live_failed", c.LiveFailed)
}

// Counters returns the program's counters summed over CPUs.
func (c *Capture) Counters() (Counters, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Counters{}, fmt.Errorf("read xdp counters: %w", ErrClosed)
	}
	return c.countersLocked()
}

func (c *Capture) countersLocked() (Counters, error) {
	if err := c.objs.Stats.Lookup(uint32(0), &c.percpu); err != nil {
		return Counters{}, fmt.Errorf("read xdp counters: %w", err)
	}
	var s Counters
	for _, p := range c.percpu {
		s.Seen += p.Seen
		s.SeenBytes += p.SeenBytes
		s.Redirected += p.Redirected
		s.RedirectFailed += p.RedirectFailed
		s.Unmatched += p.Unmatched
		s.VLANFiltered += p.VlanFiltered
		s.Runt += p.Runt
		s.TruncatedTag += p.TruncatedTag
		s.Oversize += p.Oversize
		s.Passed += p.Passed
		s.Dropped += p.Dropped
		s.FastRedirected += p.FastRedirected
		s.FastFailed += p.FastFailed
		s.FastNoOutput += p.FastNoOutput
		s.FastFiltered += p.FastFiltered
		s.LiveFailed += p.LiveFailed
	}
	return s, nil
}
