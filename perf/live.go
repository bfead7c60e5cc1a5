package perf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	"github.com/google/gopacket/pcapgo"
)

// LiveCapture is one live capture of taasd (issue 12, GET
// .../{id}/capture) read as fast as it comes: its frames are counted and
// discarded, its interface statistics blocks kept. One goroutine reads it
// from StartLive until the stream ends or Close.
type LiveCapture struct {
	body io.ReadCloser
	done chan struct{}

	// Written by the reader goroutine; read after done is closed.
	frames, bytes     uint64
	received, dropped uint64 // the last statistics block's
	stats, final      bool   // a statistics block came; the last had an end time (the capture's final one)
	err               error
}

// LiveResult is what a live capture delivered.
type LiveResult struct {
	// Frames and Bytes are what the stream held (captured lengths).
	Frames, Bytes uint64
	// Received and Dropped are the last statistics block's isb_ifrecv and
	// isb_ifdrop: the frames the data plane captured, and those it dropped
	// (no room, or lost in the kernel).
	Received, Dropped uint64
	// Final is true when that block was the capture's final one (it has
	// an end time): the capture ended at its duration and its counts are
	// complete.
	Final bool
}

// StartLive starts a live capture of the tap service id for d (whole
// seconds, at least 1) and returns once taasd has answered 200.
func (a API) StartLive(ctx context.Context, id string, d time.Duration) (*LiveCapture, error) {
	secs := max(1, int(math.Ceil(d.Seconds())))
	path := fmt.Sprintf("/v2.0/taas/tap_services/%s/capture?duration=%d", id, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.Base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	// The client's timeout bounds a whole answer, and a capture's lasts d:
	// the stream is bounded by its duration and by Wait instead.
	cl := *a.Client
	cl.Timeout = 0
	resp, err := cl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096)) // the error body, for the message only
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	c := &LiveCapture{body: resp.Body, done: make(chan struct{})}
	go c.read()
	return c, nil
}

func (c *LiveCapture) read() {
	defer close(c.done)
	opts := pcapgo.DefaultNgReaderOptions
	opts.StatisticsCallback = func(_ int, s pcapgo.NgInterfaceStatistics) {
		c.stats = true
		c.received, c.dropped = s.PacketsReceived, s.PacketsDropped
		c.final = !s.EndTime.IsZero()
	}
	r, err := pcapgo.NewNgReader(bufio.NewReaderSize(c.body, 1<<20), opts)
	if err != nil {
		c.err = fmt.Errorf("read live capture: %w", err)
		return
	}
	for {
		data, _, err := r.ZeroCopyReadPacketData()
		if err == io.EOF {
			return
		}
		if err != nil {
			c.err = fmt.Errorf("read live capture, frame %d: %w", c.frames, err)
			return
		}
		c.frames++
		c.bytes += uint64(len(data))
	}
}

// Wait waits up to timeout for the capture to end (its duration) and
// returns what it delivered; it closes the stream.
func (c *LiveCapture) Wait(timeout time.Duration) (LiveResult, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.Close()
		return LiveResult{}, fmt.Errorf("live capture did not end within %v", timeout)
	}
	c.body.Close()
	if c.err != nil {
		return LiveResult{}, c.err
	}
	if !c.stats {
		return LiveResult{}, errors.New("live capture ended without a statistics block")
	}
	return LiveResult{Frames: c.frames, Bytes: c.bytes, Received: c.received, Dropped: c.dropped, Final: c.final}, nil
}

// Close ends the capture (taasd sees the connection close) and waits for
// the reader.
func (c *LiveCapture) Close() {
	c.body.Close()
	<-c.done
}
