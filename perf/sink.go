package perf

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Sink counts and drops every frame that reaches an interface, with an XDP
// program (pktgen.c sink). On the receiving end of a monitor link it is the
// cheapest possible receiver, and its count is the kernel's, not the
// appliance's own.
type Sink struct {
	objs pktgenBPFObjects
	link link.Link
}

// AttachSink attaches a counting sink to iface in the named namespace ("" is
// the caller's). Close detaches it.
func AttachSink(netnsName, iface string) (*Sink, error) {
	var s *Sink
	err := inLockedThread(netnsName, func() (err error) {
		s, err = attachSink(iface)
		return err
	})
	return s, err
}

func attachSink(iface string) (*Sink, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("sink on %s: %w", iface, err)
	}
	spec, err := loadPktgenBPF()
	if err != nil {
		return nil, fmt.Errorf("load sink spec: %w", err)
	}
	s := &Sink{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("load sink: %w", err)
	}
	// Native mode: on veth it runs in the peer's NAPI, before any skb.
	s.link, err = link.AttachXDP(link.XDPOptions{Program: s.objs.Sink, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		_ = s.objs.Close() // the attach error is the one to report
		return nil, fmt.Errorf("attach sink to %s: %w", iface, err)
	}
	return s, nil
}

// Count returns the frames and bytes the sink has received so far.
func (s *Sink) Count() (frames, bytes uint64, err error) {
	return readCounter(s.objs.Counters, cntSink)
}

// Reset zeroes the sink's counters.
func (s *Sink) Reset() error {
	zero := make([]pktgenBPFCounter, ebpf.MustPossibleCPU())
	return s.objs.Counters.Put(cntSink, zero)
}

// SetMark makes the sink count only frames whose last byte is mark (see
// Traffic.Mark); 0 counts every frame.
func (s *Sink) SetMark(mark byte) error {
	return s.objs.SinkMark.Put(uint32(0), uint32(mark))
}

// Close detaches the sink and releases its maps.
func (s *Sink) Close() error {
	return errors.Join(s.link.Close(), s.objs.Close())
}
