package testutil

import (
	"net"
	"testing"
)

// FreeLoopbackAddr returns "127.0.0.1:PORT" for a port nothing listens on
// right now, for a daemon under test to listen on. Another process could
// take the port before the daemon does; on loopback of a test machine that
// has not been seen, and the daemon's start fails loudly if it happens.
func FreeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
