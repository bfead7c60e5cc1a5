package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Change propagation on PostgreSQL (issue 14): several taasd write one
// database, and each must learn of the others' writes (its list cache, its
// reconciler) without polling. Every write transaction sends
// pg_notify(changesChannel, "<its Store's id> <change>") before it
// commits; PostgreSQL delivers the notification to every listener when,
// and only if, the transaction commits. Each Store LISTENs on a connection
// of its own: a notification from another Store bumps Generation and, when
// it changed the desired state ("data"), wakes the subscribers
// (Subscribe). A status write ("status", SetStatuses) wakes nobody: it
// changes no data plane's plan, and two taasd whose reconcilers woke for
// each other's statuses would pass and write in turn for ever. When that
// connection drops, or stops answering (readNotifications), the listener
// reconnects with a backoff and, once listening again, bumps Generation and
// wakes the subscribers: what it missed meanwhile is unknown, so they read
// the whole state again.

// changesChannel is the channel of the change notifications.
const changesChannel = "taas_changes"

// newStoreID returns a random id for a Store's notifications.
func newStoreID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b)
}

// listener is the goroutine that holds a Store's LISTEN connection.
type listener struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// Subscribe returns a channel that receives a value soon after another
// taasd's write to the desired state (not a status: SetStatuses) commits
// on the database, or after the store reconnected to it (then the whole
// state may have changed), and a function that ends the subscription. Values coalesce: one pending value stands for every
// change since it was sent. On SQLite no other process writes: the channel
// never receives. The changes of this Store's own writes are not sent:
// their callers know of them.
func (s *Store) Subscribe() (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	l := s.listener
	if l == nil {
		return c, func() {}
	}
	l.mu.Lock()
	l.subs[c] = struct{}{}
	l.mu.Unlock()
	return c, func() {
		l.mu.Lock()
		delete(l.subs, c)
		l.mu.Unlock()
	}
}

// changed bumps Generation and, unless the change was a status write,
// wakes every subscriber.
func (s *Store) changed(c change) {
	s.gen.Add(1)
	if c == statusChange {
		return
	}
	l := s.listener
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.subs {
		select {
		case c <- struct{}{}:
		default: // a wakeup is pending: it covers this change too
		}
	}
}

// Listener reconnection backoff.
const (
	minRelisten = 100 * time.Millisecond
	maxRelisten = 5 * time.Second
)

// listen opens the LISTEN connection and starts the goroutine that reads
// it. The first connection is made before listen returns, so no write
// committed after Open returned goes unnoticed.
func (s *Store) listen(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := listenConn(ctx, cfg)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &listener{cancel: cancel, done: make(chan struct{}), subs: map[chan struct{}]struct{}{}}
	s.listener = l
	go func() {
		defer close(l.done)
		wait := minRelisten
		for {
			if conn != nil {
				s.readNotifications(lctx, conn)
				closeConn(conn)
				conn = nil
			}
			if lctx.Err() != nil {
				return
			}
			select {
			case <-lctx.Done():
				return
			case <-time.After(wait):
			}
			c, err := listenConn(lctx, cfg)
			if err != nil {
				wait = min(2*wait, maxRelisten)
				continue
			}
			conn, wait = c, minRelisten
			s.nodeGen.Add(1) // back: whatever happened meanwhile is unknown
			s.changed(dataChange)
		}
	}()
	return nil
}

// listenConn connects and LISTENs.
func listenConn(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(cctx, "LISTEN "+changesChannel); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

// readNotifications handles conn's notifications until it fails or ctx
// ends. A connection cut off without a reset (a network cut that lost its
// state) would wait for ever: after pingEvery without a notification it
// must answer a ping within pingWait, or it is given up.
func (s *Store) readNotifications(ctx context.Context, conn *pgx.Conn) {
	for {
		wctx, cancel := context.WithTimeout(ctx, pingEvery)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !pgconn.Timeout(err) {
				return
			}
			pctx, cancel := context.WithTimeout(ctx, pingWait)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
			continue
		}
		id, what, _ := strings.Cut(n.Payload, " ")
		switch {
		case id == s.id: // this Store's own write: its callers know
		case what == statusChange.String():
			s.changed(statusChange)
		case what == nodesChanged:
			// The write's own notification follows, and wakes.
			s.nodeGen.Add(1)
		default:
			s.changed(dataChange)
		}
	}
}

// How often a quiet LISTEN connection is pinged, and how long it has to
// answer: a cut-off listener is found within some 5 s and reconnects (tests
// shorten them).
var (
	pingEvery = 3 * time.Second
	pingWait  = 2 * time.Second
)

// closeWait bounds the goodbye to a connection being given up: one cut off
// never answers.
const closeWait = time.Second

// closeConn closes conn within closeWait.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	conn.Close(ctx) //nolint:errcheck // the connection is dead or no longer wanted
}

// stopListening ends the listener, if any, and waits for it.
func (s *Store) stopListening() {
	if l := s.listener; l != nil {
		l.cancel()
		<-l.done
	}
}
