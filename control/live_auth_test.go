package control

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/taas-appliance/taas/broker"
)

// TestLiveRevoked: a capture ends, with its final statistics block, once
// SetTokens removes its token, whether it is idle or frames flow (review
// of issue 13: a revoked token's capture ran to its duration, up to 3600 s).
func TestLiveRevoked(t *testing.T) {
	for _, tc := range []struct {
		name string
		busy bool
	}{{"idle", false}, {"frames flowing", true}} {
		t.Run(tc.name, func(t *testing.T) {
			fd := &feeder{started: make(chan *feedSource, 1)}
			fx := startLiveFixture(t, Config{startLive: fd.start})
			resp := openCapture(t, context.Background(), fx.ts.base,
				"/v2.0/taas/tap_services/"+fx.svc+"/capture?duration=3600", hA)
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("capture = %d, want 200", resp.StatusCode)
			}
			src := <-fd.started
			if tc.busy {
				// A frame every millisecond until the capture stops, for
				// 60 s at most.
				frames, times := liveFrames()
				f, at := frames[0], times[0]
				go func() {
					for i := 0; i < 60_000; i++ {
						select {
						case <-src.stopped:
							return
						default:
						}
						src.offer(&broker.LivePacket{Time: at, Length: len(f), Data: f})
						time.Sleep(time.Millisecond)
					}
				}()
			}
			time.Sleep(2 * liveIdle)
			toks, err := LoadTokens(writeTokens(t, "tadmin ops admin\ntb proj-b member,reader\n"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fx.ts.srv.SetTokens(toks); err != nil {
				t.Fatal(err)
			}
			revoked := time.Now()
			body := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(resp.Body) // the blocks read so far are what is checked
				body <- b
			}()
			select {
			case b := <-body:
				t.Logf("capture ended %v after its token's removal", time.Since(revoked).Round(time.Millisecond))
				isbs := liveISBs(t, b)
				if len(isbs) == 0 || isbs[len(isbs)-1].EndTime.IsZero() {
					t.Errorf("%d statistics blocks, none final (with an end time)", len(isbs))
				}
			case <-time.After(30 * time.Second):
				resp.Body.Close()
				t.Errorf("capture still running %v after its token's removal", time.Since(revoked))
			}
		})
	}
}
