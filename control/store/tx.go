package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"
)

// Tx is one write's share of a write transaction, the unit in which a
// create checks what it depends on (the port, the service, their owners,
// the quota) and inserts: a bulk create runs every item in one Tx, so it
// commits whole or not at all, and no other client sees (or builds on) a
// row of it before it commits. Issue 9: a failing bulk used to be undone by
// deleting what it had inserted, and the cascade took acknowledged flows of
// other clients with it.
//
// A Tx is valid only inside the function given to Write.
type Tx struct {
	ctx context.Context
	tx  *sql.Tx
	s   *Store
}

// defaultMaxBatch bounds the Writes one commit carries. Every caller of a
// batch waits for all of its fns and the one commit; 128 is far more than
// the clients that queue during one fsync, so it only caps a burst.
const defaultMaxBatch = 128

// Write runs fn in a write transaction and returns fn's error as is, or
// nil once what fn wrote is durable (synchronous=FULL: on disk, surviving
// kill -9 and power loss; on PostgreSQL, synchronous_commit: on the
// server's disk). fn's writes are undone when it returns an error (or
// panics: the panic is raised again in Write's caller). On PostgreSQL fn
// may run more than once (commit: a transaction that fails to serialize
// runs again), so it must only read and write through tx and set what it
// returns anew each time.
//
// Group commit (issue 10: 8 clients creating flows waited 16 ms at p99,
// one fsync each in a row): one writer goroutine takes the Writes queued
// while it committed the last batch, runs each fn inside a SAVEPOINT of
// one transaction, rolling back to it the work of an fn that fails, and
// commits once for all. So one fn's error or panic never touches the
// others' work, and no caller hears of success before the commit that
// carries its writes is on disk. Were SQLite itself to abandon the
// transaction (an I/O error, a full disk), the fns that had succeeded in it
// get that error, and those not yet run run in the next one.
//
// A ctx cancelled before fn starts drops the Write (ctx's error); once fn
// has started it runs to its end, on a context that keeps ctx's values but
// is not cancelled: interrupting a statement mid-way would make SQLite roll
// back the whole transaction, other callers' work with it. fn runs on the
// writer goroutine while the other Writes wait, so it must not wait for
// anything but the database, and must not call Write.
//
// Inside fn, read only through tx: the Store's own reads go to the read
// pool, which sees the last commit and not the batch's earlier, still
// uncommitted writes, so a check made there can pass against a use another
// Write of the same batch just added (issue 10's review: a tap service
// created on a port and a rebinding of it both succeeded).
func (s *Store) Write(ctx context.Context, fn func(tx *Tx) error) error {
	return s.write(ctx, dataChange, fn)
}

// write is Write; kind says what fn changes (statusChange: statuses only;
// noChange: nothing any other taasd or cache reads as state, such as a
// heartbeat).
func (s *Store) write(ctx context.Context, kind change, fn func(tx *Tx) error) error {
	return s.writeVia(ctx, s.queue, kind, fn)
}

// writeAhead is write for a Write that goes before every queued one, in a
// transaction of its own, once the writer's transaction under way ends.
func (s *Store) writeAhead(ctx context.Context, kind change, fn func(tx *Tx) error) error {
	return s.writeVia(ctx, s.ahead, kind, fn)
}

// maxAhead is the room of the writer's ahead queue: the heartbeats of the
// nodes that share one Store (tests) at most.
const maxAhead = 16

// writeVia is write through queue (s.queue or s.ahead).
func (s *Store) writeVia(ctx context.Context, queue chan *writeReq, kind change, fn func(tx *Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{ctx: ctx, fn: fn, kind: kind, done: make(chan struct{})}
	select {
	case queue <- r:
	case <-s.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqDropped) {
			return ctx.Err()
		}
		<-r.done // the writer has it: wait for its outcome
	case <-s.stopped:
		if r.state.CompareAndSwap(reqQueued, reqDropped) {
			return ErrClosed
		}
		<-r.done
	}
	if r.panicked != nil {
		panic(r.panicked)
	}
	return r.err
}

// A writeReq is one Write on its way through the writer.
type writeReq struct {
	ctx context.Context
	fn  func(*Tx) error
	// kind is what fn changes, once it succeeded.
	kind change
	// state moves from reqQueued to reqTaken (the writer) or reqDropped
	// (the caller, whose ctx ended): whoever moves it first decides.
	state atomic.Int32
	// err and panicked are the outcome, written before done is closed.
	err      error
	panicked any
	done     chan struct{}
}

const (
	reqQueued int32 = iota
	reqTaken
	reqDropped
)

func (r *writeReq) finish(err error) {
	r.err = err
	close(r.done)
}

// call runs the request's fn on tx; a panic is kept for the caller.
func (r *writeReq) call(ctx context.Context, s *Store, tx *sql.Tx) (err error) {
	r.panicked = nil // a retry (commit) runs fn again
	tctx := context.WithoutCancel(r.ctx)
	if d, ok := ctx.Deadline(); ok { // the batch's (batchContext)
		var cancel context.CancelFunc
		tctx, cancel = context.WithDeadline(tctx, d)
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			r.panicked = p
			err = fmt.Errorf("write fn panicked: %v", p)
		}
	}()
	return r.fn(&Tx{ctx: tctx, tx: tx, s: s})
}

// writer is the goroutine that runs every Write: it takes what is queued,
// up to maxBatch, and commits it as one transaction, until quit. A Write
// of the ahead queue goes first, alone in its transaction.
func (s *Store) writer() {
	defer close(s.stopped)
	batch := make([]*writeReq, 0, s.maxBatch)
	for {
		select {
		case r := <-s.ahead:
			s.runBatch(append(batch[:0], r))
			continue
		default:
		}
		select {
		case r := <-s.ahead:
			s.runBatch(append(batch[:0], r))
			continue
		case r := <-s.queue:
			batch = append(batch[:0], r)
		case <-s.quit:
			return
		}
	fill:
		for len(batch) < s.maxBatch {
			select {
			case r := <-s.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.runBatch(batch)
	}
}

// runBatch runs the Writes of batch that are still wanted, in as few
// transactions as it can, and clears batch.
func (s *Store) runBatch(batch []*writeReq) {
	run := batch[:0]
	for _, r := range batch {
		if !r.state.CompareAndSwap(reqQueued, reqTaken) {
			continue // its caller has given up and returned
		}
		if err := r.ctx.Err(); err != nil {
			r.finish(err)
			continue
		}
		run = append(run, r)
	}
	for len(run) > 0 {
		run = s.commit(run)
	}
	clear(batch[:cap(batch)])
}

// commit runs the fns of run in one transaction, each in a savepoint when
// there are several, and commits once. It answers at least one request,
// every one it ran, and returns those it did not run because the engine
// abandoned the transaction.
//
// No request hears its outcome before the transaction's end is known: on
// PostgreSQL a transaction may fail to serialize (SQLSTATE 40001: another
// taasd's transaction conflicted with it) at any statement or at the
// commit, and then every fn of the batch runs again in a new transaction,
// up to maxAttempts times; when the attempts run out, the fns hear
// ErrBusy. An fn whose own statement failed so is rolled back to its
// savepoint, the others commit, and it runs again alone: one fn in
// conflict does not run its whole batch again and again (nor, as it once
// did, a batch that had committed). An fn's failure is part of the outcome too: it
// may come from a row an earlier fn of the batch wrote, which the retry
// may no longer write (a limit reached by a create that in the end lost
// its place).
func (s *Store) commit(run []*writeReq) (rest []*writeReq) {
	for attempt := 1; ; attempt++ {
		o := s.commitOnce(run)
		if s.d == postgresDialect && o.retry() {
			if o.err == nil && len(run) > 1 {
				// The batch committed without the fns that failed to
				// serialize (rolled back to their savepoints): they
				// run again, each alone, so that one fn in conflict
				// does not run its whole batch again and again.
				s.retries.Add(1)
				for i, r := range run[:o.ran] {
					if !retryable(o.errs[i]) {
						r.finish(o.errs[i])
					}
				}
				for i, r := range run[:o.ran] {
					if retryable(o.errs[i]) {
						time.Sleep(retryWait(1))
						s.commit([]*writeReq{r}) // one fn: it always runs
					}
				}
				return run[o.ran:]
			}
			if attempt < maxAttempts {
				s.retries.Add(1)
				time.Sleep(retryWait(attempt))
				continue
			}
		}
		for i, r := range run[:o.ran] {
			if o.errs[i] != nil {
				r.finish(busy(o.errs[i]))
			} else {
				r.finish(busy(o.err))
			}
		}
		return run[o.ran:]
	}
}

// busy marks err ErrBusy when it is a failure to serialize: what is left
// of one when the attempts ran out.
func busy(err error) error {
	if retryable(err) {
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	return err
}

// maxAttempts bounds the transactions a batch of Writes runs in when they
// fail to serialize. Each retry waits retryWait: 50 attempts take some
// 0.8 s in all, far beyond what two taasd creating flat out at each other
// needed (TestPostgresConcurrentStores logs the retries); 20 ran out once
// in TestFleetChurn (three taasd, nine writers in one project's quota, on
// a machine with a load average of 10), which answered 503.
const maxAttempts = 50

// retryWait is a random wait before attempt+1: up to 1 ms after the first,
// doubling to at most 32 ms, so that two writers that collided seldom
// collide again.
func retryWait(attempt int) time.Duration {
	limit := time.Millisecond << min(attempt-1, 5)
	return time.Duration(mrand.Int64N(int64(limit))) + 50*time.Microsecond
}

// outcome is what one transaction made of a batch.
type outcome struct {
	// ran is how many of the batch ran; the others run in the next
	// transaction.
	ran int
	// errs holds the error of each fn that ran, nil for those that
	// succeeded.
	errs []error
	// err is, for those that succeeded, why their writes are not
	// committed (nil once committed).
	err error
}

// retry reports whether the transaction failed to serialize: then none of
// it is committed, and every fn runs again.
func (o outcome) retry() bool {
	if retryable(o.err) {
		return true
	}
	for _, err := range o.errs[:o.ran] {
		if retryable(err) {
			return true
		}
	}
	return false
}

func (s *Store) commitOnce(run []*writeReq) outcome {
	s.batches.Add(1)
	o := outcome{errs: make([]error, len(run))}
	// Whatever this transaction does to the quotas, its end settles it.
	defer func() { s.quotaDirty = false }()
	ctx, cancel := s.batchContext()
	defer cancel()
	tx, err := s.w.BeginTx(ctx, s.d.writeTx())
	if err != nil {
		o.ran, o.err = len(run), fmt.Errorf("begin write transaction: %w", unavailable(err))
		return o
	}
	if len(run) == 1 { // nothing to keep apart: no savepoint
		o.ran = 1
		if o.errs[0] = run[0].call(ctx, s, tx); o.errs[0] != nil {
			tx.Rollback() //nolint:errcheck // fn's error is the one to report
			return o
		}
		o.err = s.commitTx(ctx, tx, changeOf(run[0]))
		return o
	}
	var (
		exec  = func(q string) error { _, err := tx.ExecContext(ctx, q); return err }
		state = func(err error) error { return fmt.Errorf("write transaction abandoned: %w", err) }
		wrote change
	)
	for i, r := range run {
		o.ran = i + 1
		if err := exec(`SAVEPOINT w`); err != nil {
			o.errs[i], o.err = state(err), state(err)
			break
		}
		if err := r.call(ctx, s, tx); err != nil {
			o.errs[i] = err
			if rerr := errors.Join(exec(`ROLLBACK TO w`), exec(`RELEASE w`)); rerr != nil {
				o.err = state(rerr)
				break
			}
			continue
		}
		if err := exec(`RELEASE w`); err != nil {
			o.errs[i], o.err = state(err), state(err)
			break
		}
		wrote = max(wrote, changeOf(r))
	}
	if o.err != nil {
		tx.Rollback() //nolint:errcheck // o.err is the error to report
		return o
	}
	o.err = s.commitTx(ctx, tx, wrote)
	return o
}

// writeDeadline bounds a write transaction on PostgreSQL, from BEGIN to
// COMMIT: a connection cut off without a reset (a network cut that lost its
// state) must not hold every Write for the kernel's TCP timeout. The
// batch's fns then fail with ErrUnavailable (a 503), and the next batch
// runs on a new connection. SQLite has no deadline: interrupting a
// statement would roll back the batch, and its disk does not go away.
var writeDeadline = 10 * time.Second

// batchContext is the context of one write transaction.
func (s *Store) batchContext() (context.Context, context.CancelFunc) {
	if s.d != postgresDialect {
		return context.Background(), func() {}
	}
	return context.WithTimeout(context.Background(), writeDeadline)
}

// commitTx commits tx, announcing what it wrote to the other taasd on
// PostgreSQL (notify.go). Generation is bumped before any caller hears of
// the commit, and even when it failed: its outcome is then unknown, and a
// needless bump costs only a cache miss (Generation). A noChange write
// (a heartbeat) neither notifies nor bumps it.
//
// On PostgreSQL a COMMIT whose connection is lost before the answer
// arrives may have committed or not: commitTx reads the transaction's id
// before and asks the server its status on another connection after
// (commitOutcome), so a write that committed is never reported as failed.
func (s *Store) commitTx(ctx context.Context, tx *sql.Tx, wrote change) error {
	var xid int64
	if s.d == postgresDialect && wrote != noChange {
		err := tx.QueryRowContext(ctx, `SELECT txid_current(), pg_notify(?, ?)`, changesChannel, s.id+" "+wrote.String()).Scan(&xid, new(any))
		if err != nil {
			tx.Rollback() //nolint:errcheck // the notify's error is the one to report
			return fmt.Errorf("notify: %w", unavailable(err))
		}
	}
	if err := ctx.Err(); err != nil {
		// The deadline passed (database/sql rolls back): no COMMIT
		// was sent.
		tx.Rollback() //nolint:errcheck // the deadline is the error to report
		if wrote != noChange {
			s.gen.Add(1)
		}
		return fmt.Errorf("commit: %w", unavailable(err))
	}
	err := tx.Commit()
	if err != nil && xid != 0 && pgState(err) == "" {
		// The server did not answer (it would have said why): the
		// connection was lost before or during the COMMIT.
		err = s.commitOutcome(xid, err)
	}
	if wrote != noChange {
		s.gen.Add(1)
	}
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// commitOutcome asks the server, on a new connection, whether transaction
// xid, whose COMMIT failed with err without an answer, committed: nil if it
// did, err as ErrUnavailable if it did not (the write may be tried again),
// ErrOutcomeUnknown if the server cannot tell now.
func (s *Store) commitOutcome(xid int64, err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), outcomeWait)
	defer cancel()
	for {
		var status sql.NullString
		qerr := s.r.QueryRowContext(ctx, `SELECT txid_status(?)`, xid).Scan(&status)
		switch {
		case qerr == nil && status.String == "committed":
			return nil
		case qerr == nil && status.String == "aborted":
			return unavailable(fmt.Errorf("%w (the transaction was rolled back)", err))
		case qerr == nil && status.String == "in progress":
			// The server has not yet seen the connection go.
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w (status of transaction %d: %v %v)", ErrOutcomeUnknown, err, xid, status.String, qerr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// outcomeWait bounds how long commitOutcome asks.
const outcomeWait = 5 * time.Second

// GetNetwork returns one network visible to project.
func (t *Tx) GetNetwork(project, id string) (Network, error) {
	return getNetwork(t.ctx, t.tx, project, id)
}

// GetPort returns one port of project.
func (t *Tx) GetPort(project, id string) (Port, error) {
	return getPort(t.ctx, t.tx, project, id)
}

// GetTapService returns one tap service of project.
func (t *Tx) GetTapService(project, id string) (TapService, error) {
	return getService(t.ctx, t.tx, project, id)
}

// CreateNetwork inserts n.
func (t *Tx) CreateNetwork(n Network) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO networks (`+networkCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		n.ID, n.ProjectID, n.Name, n.Description, b2i(n.AdminStateUp), b2i(n.Shared), n.MTU)
	if err != nil {
		return fmt.Errorf("insert network: %w", constraintErr(err))
	}
	return nil
}

// CreatePort inserts p. A MAC already on the network is ErrConflict, and
// the transaction stays usable (SQLite undoes the statement only), so the
// caller may retry with another MAC; a network that does not exist is
// ErrNotFound.
func (t *Tx) CreatePort(p Port) error {
	err := t.undoable(func() error {
		_, err := t.tx.ExecContext(t.ctx, `INSERT INTO ports (`+portCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			p.ID, p.ProjectID, p.NetworkID, p.Name, p.Description, p.MACAddress, b2i(p.AdminStateUp),
			p.DeviceOwner, p.DeviceID, b2i(p.PortSecurityEnabled), p.HostID, p.Interface)
		return err
	})
	if err != nil {
		return fmt.Errorf("insert port: %w", constraintErr(err))
	}
	return nil
}

// undoable runs the statement exec runs so that its failure undoes only
// itself. SQLite does so by itself; PostgreSQL fails the whole
// transaction, unless the statement runs in a savepoint of its own.
func (t *Tx) undoable(exec func() error) error {
	if t.s.d != postgresDialect {
		return exec()
	}
	if _, err := t.tx.ExecContext(t.ctx, `SAVEPOINT stmt`); err != nil {
		return err
	}
	if err := exec(); err != nil {
		if _, rerr := t.tx.ExecContext(t.ctx, `ROLLBACK TO stmt`); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	_, err := t.tx.ExecContext(t.ctx, `RELEASE stmt`)
	return err
}

// CreateTapService inserts ts. With max > 0 it fails with ErrLimitReached
// when max tap services exist already (across all projects). A port that
// does not exist is ErrNotFound.
func (t *Tx) CreateTapService(ts TapService, max int) error {
	if max > 0 {
		var n int
		if err := t.tx.QueryRowContext(t.ctx, `SELECT count(*) FROM tap_services`).Scan(&n); err != nil {
			return fmt.Errorf("count tap services: %w", err)
		}
		if n >= max {
			return ErrLimitReached
		}
	}
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO tap_services (`+serviceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		ts.ID, ts.ProjectID, ts.Name, ts.Description, ts.PortID, ts.Status, ts.StatusReason, nullInt(ts.Snaplen))
	if err != nil {
		return fmt.Errorf("insert tap service: %w", constraintErr(err))
	}
	return nil
}

// CreateTapFlow inserts f. A service or source port that does not exist is
// ErrNotFound.
func (t *Tx) CreateTapFlow(f TapFlow) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO tap_flows (`+flowCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		f.ID, f.ProjectID, f.Name, f.Description, f.TapServiceID, f.SourcePort, f.Direction, nullString(f.VLANFilter),
		f.Status, f.StatusReason, nullString(f.Filter))
	if err != nil {
		return fmt.Errorf("insert tap flow: %w", constraintErr(err))
	}
	return nil
}

// change is what a write transaction changed, as its notification says
// (notify.go), from least to most.
type change int

const (
	noChange     change = iota // heartbeats and published counters
	statusChange               // the data plane's statuses only
	dataChange                 // the desired state
)

func (c change) String() string {
	switch c {
	case statusChange:
		return "status"
	case dataChange:
		return "data"
	}
	return "none"
}

// changeOf is what r's fn changed, once it succeeded.
func changeOf(r *writeReq) change {
	return r.kind
}
