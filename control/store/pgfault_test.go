package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// pgProxy forwards TCP connections on loopback to a test cluster's unix
// socket; its hooks let a test break the connections the way a network
// does.
type pgProxy struct {
	ln net.Listener
	// upstream is called with each chunk a client sends, before it is
	// forwarded; it returns what to do with the connection then.
	upstream func(b []byte) proxyAction
	// epoch counts blackhole calls: a connection born in an earlier epoch
	// passes no byte any more, and never closes (a cut that lost its
	// state: no RST ever comes).
	epoch atomic.Int64
}

type proxyAction int

const (
	forward       proxyAction = iota
	forwardAndCut             // forward, let the server act, then close both sides before its answer
)

// startPGProxy starts a proxy to the cluster of dsn (testutil.StartPostgres)
// and returns it with a DSN that goes through it.
func startPGProxy(t *testing.T, dsn string) (*pgProxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	socks, _ := filepath.Glob(filepath.Join(u.Query().Get("host"), ".s.PGSQL.[0-9]*[0-9]"))
	if len(socks) != 1 {
		t.Fatalf("cluster sockets %v, want one", socks)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &pgProxy{ln: ln, upstream: func([]byte) proxyAction { return forward }}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", socks[0])
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go p.pipe(c, s, true)
			go p.pipe(s, c, false)
		}
	}()
	return p, "postgres://postgres@" + ln.Addr().String() + u.Path + "?sslmode=disable"
}

// blackhole makes every connection open now silent for ever.
func (p *pgProxy) blackhole() { p.epoch.Add(1) }

func (p *pgProxy) pipe(src, dst net.Conn, up bool) {
	born := p.epoch.Load()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && p.epoch.Load() == born {
			act := forward
			if up {
				act = p.upstream(buf[:n])
			}
			if act == forwardAndCut {
				src.Close() // the client hears nothing more
				dst.Write(buf[:n])
				time.Sleep(200 * time.Millisecond) // the server acts on it
				dst.Close()
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// TestPostgresCommitConnectionLost: the connection is lost after the
// COMMIT reached the server and before its answer came back. The write
// committed, so it succeeds (the store asks the server the transaction's
// status); before, it failed with the lost connection's error, a 500 for
// a row that exists.
func TestPostgresCommitConnectionLost(t *testing.T) {
	ctx := context.Background()
	dsn := testutil.StartPostgres(t)
	p, via := startPGProxy(t, dsn)
	a, b := open(t, via), open(t, dsn)
	var armed atomic.Bool
	p.upstream = func(q []byte) proxyAction {
		if armed.Load() && bytes.Contains(bytes.ToLower(q), []byte("commit")) {
			armed.Store(false)
			return forwardAndCut
		}
		return forward
	}
	armed.Store(true)
	err := a.CreateNetwork(ctx, Network{ID: "lost", ProjectID: "x"})
	if armed.Load() {
		t.Fatal("no COMMIT went through the proxy")
	}
	if _, gerr := b.GetNetwork(ctx, "", "lost"); gerr != nil {
		t.Fatalf("the network did not commit (%v); create: %v", gerr, err)
	}
	if err != nil {
		t.Errorf("create = %v, want nil: it committed", err)
	}
	// The store goes on writing on a new connection.
	if err := a.CreateNetwork(ctx, Network{ID: "next", ProjectID: "x"}); err != nil {
		t.Errorf("next create = %v", err)
	}
}

// raiseSerializationFailure makes tx's statement fail as PostgreSQL's
// SERIALIZABLE does when a concurrent transaction conflicts with it.
func raiseSerializationFailure(tx *Tx) error {
	_, err := tx.tx.ExecContext(tx.ctx, `DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$`)
	return err
}

// TestPostgresRetriesRunOut: a write that fails to serialize in every
// attempt ends with ErrBusy (a 503 with Retry-After), not the raw
// serialization failure the API answered as a 500.
func TestPostgresRetriesRunOut(t *testing.T) {
	s := open(t, testutil.StartPostgres(t))
	runs := 0
	err := s.Write(context.Background(), func(tx *Tx) error {
		runs++
		return raiseSerializationFailure(tx)
	})
	if !errors.Is(err, ErrBusy) || runs != maxAttempts {
		t.Errorf("Write = %v after %d runs; want ErrBusy after %d", err, runs, maxAttempts)
	}
}

// TestPostgresConflictRunsAlone: in a batch of Writes, the one fn that
// fails to serialize runs again alone; the others commit with the batch
// and run once. Before, the whole batch ran again.
func TestPostgresConflictRunsAlone(t *testing.T) {
	ctx := context.Background()
	s := open(t, testutil.StartPostgres(t))
	hold, held := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.Write(ctx, func(*Tx) error { close(held); <-hold; return nil })
	}()
	<-held
	var runs [3]atomic.Int32
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			errs <- s.Write(ctx, func(tx *Tx) error {
				if runs[i].Add(1) == 1 && i == 1 {
					return raiseSerializationFailure(tx)
				}
				return tx.CreateNetwork(Network{ID: fmt.Sprint("n", i), ProjectID: "x"})
			})
		}()
	}
	for s.Queued() < 3 {
		time.Sleep(time.Millisecond)
	}
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("Write = %v", err)
		}
	}
	if got := fmt.Sprint(runs[0].Load(), runs[1].Load(), runs[2].Load()); got != "1 2 1" {
		t.Errorf("runs = %s, want 1 2 1: only the fn in conflict runs again", got)
	}
	for i := range 3 {
		if _, err := s.GetNetwork(ctx, "", fmt.Sprint("n", i)); err != nil {
			t.Errorf("network n%d: %v", i, err)
		}
	}
}

// TestPostgresHalfOpen: the network loses the state of a Store's
// connections (no reset ever comes: the proxy swallows every byte). Its
// listener finds out by pinging and reconnects, so a write through
// another Store wakes it again; its writer gives the batch up at the
// deadline (ErrUnavailable) and the next write runs on a new connection;
// Close returns. Before, the listener waited for ever (the Store was deaf
// to other taasd) and the write hung.
func TestPostgresHalfOpen(t *testing.T) {
	for v, short := range map[*time.Duration]time.Duration{&pingEvery: 500 * time.Millisecond, &pingWait: 500 * time.Millisecond, &writeDeadline: 2 * time.Second} {
		old := *v
		*v = short
		t.Cleanup(func() { *v = old })
	}
	ctx := context.Background()
	dsn := testutil.StartPostgres(t)
	p, via := startPGProxy(t, dsn)
	a, err := Open(ctx, via)
	if err != nil {
		t.Fatal(err)
	}
	b := open(t, dsn)
	wake, stop := a.Subscribe()
	defer stop()
	if err := a.CreateNetwork(ctx, Network{ID: "before", ProjectID: "x"}); err != nil {
		t.Fatal(err)
	}
	p.blackhole()
	start := time.Now()
	written := make(chan error, 1)
	go func() { written <- a.CreateNetwork(ctx, Network{ID: "cut", ProjectID: "x"}) }()
	select {
	case err := <-written:
		t.Logf("write through A on its cut connection: %v after %v", err, time.Since(start))
		if err != nil && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("write on a cut connection = %v, want ErrUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("write through A on its cut connection still hangs after 20 s")
	}
	if err := a.CreateNetwork(ctx, Network{ID: "after", ProjectID: "x"}); err != nil {
		t.Errorf("next write through A = %v, want nil on a new connection", err)
	}
	// Drain the wakeups so far (the reconnection's), then B writes.
	time.Sleep(2 * pingEvery)
	select {
	case <-wake:
	default:
	}
	if err := b.CreateNetwork(ctx, Network{ID: "viaB", ProjectID: "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
		t.Logf("A woken by B's write %v after the cut", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Error("A not woken by B's write after the cut: its listener is deaf")
	}
	closed := make(chan error, 1)
	start = time.Now()
	go func() { closed <- a.Close() }()
	select {
	case <-closed:
		t.Logf("Close after the cut took %v", time.Since(start))
	case <-time.After(30 * time.Second):
		t.Error("Close after the cut hangs")
	}
}
