package xdpprog

import "encoding/binary"

// model is a pure-Go mirror of xdp.c: the same parse and early filter over
// the same state, so tests and the fuzz target can say what the program
// must do with any bytes, and check that the two agree.
type model struct {
	macs      map[[6]byte]Want
	multicast bool
	vlans     VLANSet
	action    Action
	maxFrame  int
	socket    bool // the queue's XSKMAP slot holds a socket
}

func newModel(f Filter, cfg Config, socket bool) *model {
	m := &model{macs: map[[6]byte]Want{}, multicast: f.Multicast, vlans: allVLANs,
		action: cfg.Unmatched, maxFrame: cfg.MaxFrame, socket: socket}
	for mac, w := range f.MACs {
		if w&(WantSrc|WantDst) != 0 {
			m.macs[mac] = w & (WantSrc | WantDst)
		}
	}
	if f.VLANs != nil {
		m.vlans = *f.VLANs
	}
	return m
}

// run returns the XDP verdict and the outcome for frame.
func (m *model) run(frame []byte) (uint32, Outcome) {
	if len(frame) < 14 {
		return m.action.verdict(), Runt
	}
	var vid uint16
	if isVLAN(binary.BigEndian.Uint16(frame[12:])) {
		if len(frame) < 18 {
			return m.action.verdict(), TruncatedTag
		}
		vid = binary.BigEndian.Uint16(frame[14:]) & 0x0fff
		if isVLAN(binary.BigEndian.Uint16(frame[16:])) && len(frame) < 22 {
			return m.action.verdict(), TruncatedTag
		}
	}
	var dst, src [6]byte
	copy(dst[:], frame[0:6])
	copy(src[:], frame[6:12])
	want := m.macs[src]&WantSrc != 0 || m.macs[dst]&WantDst != 0 || (dst[0]&1 != 0 && m.multicast)
	switch {
	case !want:
		return m.action.verdict(), Unmatched
	case !m.vlans.Has(vid):
		return m.action.verdict(), VLANFiltered
	case m.maxFrame != 0 && len(frame) > m.maxFrame:
		return m.action.verdict(), Oversize
	case !m.socket:
		return m.action.verdict(), RedirectFailed
	}
	return xdpRedirect, Redirected
}
