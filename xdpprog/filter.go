package xdpprog

import (
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
)

// Want says which frames of a MAC address some flow may want; keep the bits
// equal to WANT_SRC / WANT_DST in xdp.c.
type Want uint8

const (
	// WantSrc wants frames from the MAC (its source MAC): OUT flows.
	WantSrc Want = 1 << iota
	// WantDst wants frames to the MAC (its destination MAC): IN flows.
	WantDst
)

// Filter is the early filter of one capture interface: a frame is
// redirected to userspace when (its source MAC has WantSrc, or its
// destination MAC has WantDst, or its destination is broadcast/multicast and
// Multicast is set) and its outer VID is in VLANs. It only needs to keep what
// a flow MAY want: the broker classifies exactly (e.g. it drops multicast
// frames sent by the port itself from IN flows).
type Filter struct {
	// MACs maps a MAC address to the frames of it some flow may want. At
	// most MaxMACs entries; a zero Want is the same as no entry.
	MACs map[[6]byte]Want
	// Multicast is set when broadcast and multicast destinations are wanted
	// (some IN flow exists).
	Multicast bool
	// VLANs are the wanted outer VIDs (0 = untagged); nil wants every VID.
	VLANs *VLANSet
}

// VLANSet is a bitmap of VIDs 0..4095: bit vid%64 of word vid/64. The zero
// value is empty.
type VLANSet [vlanWords]uint64

// Add adds vid; VIDs above 4095 are ignored.
func (s *VLANSet) Add(vid uint16) {
	if vid < 4096 {
		s[vid>>6] |= 1 << (vid & 63)
	}
}

// AddRange adds every VID from lo to hi inclusive, clamped to 0..4095.
func (s *VLANSet) AddRange(lo, hi uint16) {
	for v := uint32(lo); v <= uint32(hi) && v < 4096; v++ {
		s.Add(uint16(v))
	}
}

// Has reports whether vid is in the set.
func (s *VLANSet) Has(vid uint16) bool {
	return vid < 4096 && s[vid>>6]&(1<<(vid&63)) != 0
}

// Len is the number of VIDs in the set.
func (s *VLANSet) Len() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// hintWords is the number of 64-bit words of the MAC hint bitmap of one
// direction; keep equal to HINT_WORDS in xdp.c.
const hintWords = 1024

// macHints are the prefilter bitmaps in front of the macs map: the bit
// macHint(mac) of the first half is set for every MAC wanted as a source,
// of the second half for every MAC wanted as a destination.
type macHints [2 * hintWords]uint64

// macHint is a 16-bit multiplicative hash of a MAC; keep equal to mac_hint
// in xdp.c.
func macHint(a [6]byte) uint32 {
	x := uint64(a[0]) | uint64(a[1])<<8 | uint64(a[2])<<16 | uint64(a[3])<<24 | uint64(a[4])<<32 | uint64(a[5])<<40
	return uint32((x * 0x9E3779B97F4A7C15) >> 48)
}

// hintsOf returns the hint bitmaps of a set of MAC wants.
func hintsOf(macs map[[6]byte]Want) *macHints {
	h := new(macHints)
	for mac, w := range macs {
		bit := macHint(mac)
		if w&WantSrc != 0 {
			h[bit>>6] |= 1 << (bit & 63)
		}
		if w&WantDst != 0 {
			h[hintWords+bit>>6] |= 1 << (bit & 63)
		}
	}
	return h
}

// allVLANs is the bitmap of a nil Filter.VLANs.
var allVLANs = func() (s VLANSet) {
	for i := range s {
		s[i] = ^uint64(0)
	}
	return s
}()

// SetFilter replaces the early filter in place, without ever turning away a
// frame that both the old and the new filter keep: a configuration change
// never stops traffic that it does not touch (DESIGN.md).
//
// It runs in two phases. Widen: every map entry becomes old|new (new MAC
// entries are inserted, wants OR-ed, then their hint bits set, multicast set
// if either wants it, VLAN words OR-ed). Narrow: every entry becomes new
// (wants replaced, removed MACs deleted, then hint words, multicast and VLAN
// words set to the new values). After each single
// map write the filter keeps at least what old∩new keeps. A hash map update
// swaps a whole element under RCU, so a reader sees the old or the new Want,
// never a mix. An array update is a plain copy that a reader on another CPU
// may see half done; that is still fine because every bit that is set in
// both the old and the new value is set in every byte of either, so a torn
// read can only hide bits that are changing.
//
// On an error the maps hold a state between the old and the new filter
// (what Capture records matches the kernel); calling SetFilter again with
// the wanted filter completes the change.
func (c *Capture) SetFilter(f Filter) error {
	if len(f.MACs) > MaxMACs {
		return fmt.Errorf("set xdp filter: %d MACs, at most %d", len(f.MACs), MaxMACs)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("set xdp filter: %w", ErrClosed)
	}
	return c.setFilterLocked(f)
}

func (c *Capture) setFilterLocked(f Filter) error {
	next := allVLANs
	if f.VLANs != nil {
		next = *f.VLANs
	}
	// Widen.
	for mac, w := range f.MACs {
		w &= WantSrc | WantDst
		if old := c.macs[mac]; w != 0 && old|w != old {
			if err := c.putMAC(mac, old|w); err != nil {
				return err
			}
		}
	}
	hints := hintsOf(f.MACs)
	if err := c.putWords(c.objs.Hints, "mac hint", c.hints[:], hints[:], true); err != nil {
		return err
	}
	if f.Multicast && !c.multicast {
		if err := c.putMulticast(true); err != nil {
			return err
		}
	}
	if err := c.putWords(c.objs.Vlans, "vlan", c.vlans[:], next[:], true); err != nil {
		return err
	}
	// Narrow.
	for mac, old := range c.macs {
		w := f.MACs[mac] & (WantSrc | WantDst)
		switch {
		case w == 0:
			if err := c.objs.Macs.Delete(macKey(mac)); err != nil {
				return fmt.Errorf("set xdp filter: delete %x: %w", mac, err)
			}
			delete(c.macs, mac)
			c.wrote()
		case w != old:
			if err := c.putMAC(mac, w); err != nil {
				return err
			}
		}
	}
	if err := c.putWords(c.objs.Hints, "mac hint", c.hints[:], hints[:], false); err != nil {
		return err
	}
	if !f.Multicast && c.multicast {
		if err := c.putMulticast(false); err != nil {
			return err
		}
	}
	return c.putWords(c.objs.Vlans, "vlan", c.vlans[:], next[:], false)
}

func macKey(mac [6]byte) xdpMacKey { return xdpMacKey{Addr: mac} }

// putMAC, putMulticast and putWords write map entries one at a time and
// record each in c, so that after an error c still says what the kernel
// holds.
func (c *Capture) putMAC(mac [6]byte, w Want) error {
	if err := c.objs.Macs.Update(macKey(mac), uint32(w), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set xdp filter: mac %x: %w", mac, err)
	}
	c.macs[mac] = w
	c.wrote()
	return nil
}

func (c *Capture) putMulticast(on bool) error {
	var v uint32
	if on {
		v = 1
	}
	if err := c.objs.Settings.Update(settingMulticast, v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set xdp filter: multicast: %w", err)
	}
	c.multicast = on
	c.wrote()
	return nil
}

// putWords brings the array map m of 64-bit words, which cur mirrors, to
// want, writing only the words that change: to cur|want when widen is set,
// else to want.
func (c *Capture) putWords(m *ebpf.Map, what string, cur, want []uint64, widen bool) error {
	for i, w := range want {
		if widen {
			w |= cur[i]
		}
		if w == cur[i] {
			continue
		}
		if err := m.Update(uint32(i), w, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("set xdp filter: %s word %d: %w", what, i, err)
		}
		cur[i] = w
		c.wrote()
	}
	return nil
}

func (c *Capture) wrote() {
	if c.afterWrite != nil {
		c.afterWrite()
	}
}
