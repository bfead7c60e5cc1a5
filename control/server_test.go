package control

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestRunStoppedAtOnce stops Run before fasthttp's Serve has taken the
// listener: Run still closes it and returns only once Serve has, leaving
// no goroutine or descriptor behind. fasthttp's Shutdown closes only the
// listeners Serve holds, so Run used to return with Serve accepting on
// (on a closed store), as testutil.Leaks found in TestSetTokens.
func TestRunStoppedAtOnce(t *testing.T) {
	for i := 0; i < 5; i++ {
		leaks := testutil.Leaks(t)
		srv, st := newServer(t, testDB(t), Config{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := srv.Run(ctx, ln); err != nil {
			t.Errorf("Run: %v", err)
		}
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Fatalf("run %d: %s still accepts connections after Run returned", i, ln.Addr())
		}
		st.Close()
		leaks()
	}
}
