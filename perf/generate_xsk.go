package perf

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taas-appliance/taas/broker/xsk"
)

// generateXSK is the fallback sender: an AF_XDP socket in copy mode, TX
// only, on queue 0 of ifindex (about 1 Mpps of 60-byte frames here, against
// 6-7 Mpps for live frames; afxdp-notes gotcha 14). It sends the same
// frames in the same order, with the same pacing, and counts a frame as
// offered once the kernel has completed it.
func generateXSK(ctx context.Context, ifindex int, c Config) (Result, error) {
	frames, err := c.Traffic.Frames()
	if err != nil {
		return Result{}, err
	}
	cfg := xsk.Config{TxOnly: true}
	if len(frames[0]) > 2048 {
		cfg.FrameSize = 4096
	}
	s, err := xsk.Open(ifindex, 0, cfg)
	if err != nil {
		return Result{}, fmt.Errorf("afxdp fallback: %w", err)
	}
	defer s.Close()

	const batch = 64
	descs := make([]xsk.Desc, batch)
	var (
		queued, done, bytes uint64
		next                int // index into frames of the next frame
	)
	start := time.Now()
	var deadline time.Time
	if c.Duration > 0 {
		deadline = start.Add(c.Duration)
	}
	pace := newPacer(c.Rate, batch, 0, start) // Burst is for live frames; the TX ring bounds these
	for {
		if c.Count > 0 && queued >= c.Count || !deadline.IsZero() && !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		limit := uint64(batch) // descs holds one batch
		if c.Count > 0 {
			limit = min(limit, c.Count-queued)
		}
		n, ok := pace.next(limit, deadline)
		if !ok {
			break
		}
		got := s.AllocTx(descs[:n])
		for i := range got {
			f := frames[next]
			next = (next + 1) % len(frames)
			copy(s.Frame(descs[i]), f)
			descs[i].Len = uint32(len(f))
			bytes += uint64(len(f))
		}
		sent := s.Transmit(descs[:got])
		if sent < got {
			// Ring full: take back the frames that did not fit and the
			// bytes and sequence positions they would have used.
			s.Free(descs[sent:got])
			for i := sent; i < got; i++ {
				bytes -= uint64(descs[i].Len)
			}
			next = (next - (got - sent) + len(frames)*batch) % len(frames)
		}
		queued += uint64(sent)
		if err := s.Kick(); err != nil {
			return Result{}, fmt.Errorf("afxdp fallback: %w", err)
		}
		done += uint64(s.Complete())
	}
	// Wait (bounded) for the kernel to complete what is queued.
	for t := time.Now(); done < queued && time.Since(t) < time.Second; {
		if err := s.Kick(); err != nil && !errors.Is(err, xsk.ErrClosed) {
			return Result{}, fmt.Errorf("afxdp fallback: %w", err)
		}
		if n := s.Complete(); n > 0 {
			done += uint64(n)
		} else {
			sleep(100 * time.Microsecond)
		}
	}
	// Bytes were counted as queued; scale to the completed frames.
	if queued > 0 {
		bytes = bytes * done / queued
	}
	return Result{Frames: done, Bytes: bytes, Elapsed: time.Since(start)}, nil
}
