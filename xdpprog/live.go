package xdpprog

import (
	"errors"
	"time"
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

// MaxLive is how many live captures the kernel's masks tell apart.
const MaxLive = 8

// ErrLiveNotImplemented is returned until the kernel side exists.
var ErrLiveNotImplemented = errors.New("xdpprog: live capture not implemented")

// LiveMeta is what the program puts in front of a captured frame's bytes.
type LiveMeta struct {
	// Mask has bit i set when live capture i wants the frame.
	Mask uint8
	// Len is the frame's length on the wire (the bytes that follow may be
	// fewer: SetLive's snap).
	Len uint32
	// Mono is when the program saw the frame, CLOCK_MONOTONIC nanoseconds
	// (bpf_ktime_get_ns).
	Mono uint64
}

// SetLive sets which live captures want the frames of each fast flow
// counter slot and the copies of each fast service counter slot (the keys
// of FastTable's flows and services, tunnels included), bit i for capture
// i, and how many bytes of a frame the kernel copies (the largest snaplen
// of the running captures; 0: whole frames). Slots absent have no capture.
// Empty maps turn live capture off. Masks apply to both generations of
// the fast tables: a new FastTable keeps them only if the broker sets them
// again for its slots.
func (c *Capture) SetLive(flows, services map[uint16]uint8, snap uint32) error {
	return ErrLiveNotImplemented
}

// LiveReader reads the frames the program hands to live captures.
type LiveReader struct{}

// OpenLive opens a reader of the capture's live frames, with perCPU bytes
// of buffer on each CPU. One reader per Capture.
func (c *Capture) OpenLive(perCPU int) (*LiveReader, error) {
	return nil, ErrLiveNotImplemented
}

// Read waits until deadline for frames and calls fn for each (data is
// valid only during the call); it returns how many frames the kernel lost
// because the buffer was full (they are not in fn's calls). A deadline
// that passes is not an error.
func (r *LiveReader) Read(deadline time.Time, fn func(m LiveMeta, data []byte)) (lost uint64, err error) {
	return 0, ErrLiveNotImplemented
}

// Close ends the reader; a Read in progress returns.
func (r *LiveReader) Close() error { return nil }
