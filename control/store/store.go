package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3" // the sqlite3 driver
)

// Sentinels callers branch on. Every store error that is not one of these
// is an internal failure.
var (
	// ErrNotFound: the row does not exist or is not visible to the project.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a uniqueness rule (a port's MAC on its network) forbids it.
	ErrConflict = errors.New("conflict")
	// ErrLimitReached: the configured cap on tap services is reached.
	ErrLimitReached = errors.New("limit reached")
	// ErrMACInUse: another port bound to the same interface has the MAC
	// (migration 0003).
	ErrMACInUse = errors.New("mac address in use on interface")
	// ErrInvalidText: a value holds a character the database cannot
	// store (NUL, on PostgreSQL).
	ErrInvalidText = errors.New("text holds a NUL character, which the database cannot store")
	// ErrUnavailable: the database server cannot be reached (PostgreSQL:
	// down, restarting, cut off); a later try may succeed.
	ErrUnavailable = errors.New("database unavailable")
	// ErrOutcomeUnknown: the connection to the database was lost while it
	// committed the write, and whether the write committed cannot be
	// learnt now (PostgreSQL); a read later tells.
	ErrOutcomeUnknown = errors.New("database connection lost during commit: outcome unknown")
	// ErrBusy: the write failed to serialize against concurrent writes
	// (PostgreSQL) in every one of its attempts; a later try may succeed.
	ErrBusy = errors.New("database busy: the write conflicted with concurrent writes in every attempt")
	// ErrClosed: the store was closed before the write could run.
	ErrClosed = errors.New("store closed")
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the appliance's configuration database. It is safe for
// concurrent use.
type Store struct {
	// w is the only connection that writes, and only the writer goroutine
	// (tx.go) uses it once Open returns. SQLite serialises writers anyway;
	// one connection with _txlock=immediate never spins in the busy
	// handler.
	w *sql.DB
	// r serves reads. In WAL mode readers never block the writer or each
	// other, so a few connections let lists run in parallel (2 cores here).
	r *sql.DB
	// hb is the heartbeats' own connection (PostgreSQL; nil on SQLite):
	// a heartbeat must not wait behind the writer's batches (Heartbeat).
	hb *sql.DB

	// The writer goroutine takes Write's requests from queue, up to
	// maxBatch at a time, until quit is closed; it closes stopped when it
	// has returned.
	queue chan *writeReq
	// ahead holds the Writes that go before every queued one, each in a
	// transaction of its own: the heartbeats on SQLite (Heartbeat).
	ahead     chan *writeReq
	maxBatch  int
	quit      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
	// batches counts the write transactions the writer began, retries
	// those that failed to serialize and ran again (PostgreSQL).
	batches atomic.Uint64
	retries atomic.Uint64
	// nodeGen counts the changes of the nodes' runs (NodeGeneration).
	nodeGen atomic.Uint64
	// gen counts committed writes (Generation).
	gen atomic.Uint64
	// quotaMemo holds the quota overrides that write transactions read,
	// by project, as committed (Tx.QuotaOverrides). quotaDirty says that a
	// write of the transaction under way changed the quotas: the memo is
	// then empty, and neither read nor filled until the transaction ends.
	// Only the writer goroutine uses them.
	quotaMemo  map[string]Limits
	quotaDirty bool
	// desiredFlows is the number of flows Desired read last, the
	// capacity of the next read's slice.
	desiredFlows atomic.Int64

	// d is the engine: what differs between them is in dialect.go.
	d dialect
	// id names this Store in its change notifications (PostgreSQL), so
	// that it skips its own (notify.go).
	id string
	// listener is the LISTEN connection's goroutine (PostgreSQL), nil on
	// SQLite.
	listener *listener
}

// Queued returns how many Writes wait for the writer to take them: what a
// test waits on to know the order in which Writes will run.
func (s *Store) Queued() int { return len(s.queue) + len(s.ahead) }

// NodeGeneration is a counter that moves when the nodes table gains or
// loses a run (ClaimNode, LeaveNode, DeleteNode) through this Store or,
// on PostgreSQL, once the notification of one through another Store
// arrives (and after the listener reconnects: what happened meanwhile is
// unknown). Heartbeats do not move it. Control rereads the nodes when it
// finds a resource on a node it does not know only if it moved, so that
// ordinary writes never cost a reread.
func (s *Store) NodeGeneration() uint64 { return s.nodeGen.Load() }

// Generation is a counter that every committed write of this Store bumps
// after its commit and before the write method returns: a value read
// after a write was acknowledged differs from every value read before its
// commit, so whatever was computed from the database under one value may
// be reused while Generation still returns it (control's list cache,
// issue 10). On SQLite only this process writes the database. On
// PostgreSQL other taasd write it too (issue 14): their commits bump it
// when their notification arrives (notify.go), typically within a
// millisecond of the commit, and a reconnection of the listener bumps it
// too, since notifications may have been missed meanwhile.
func (s *Store) Generation() uint64 { return s.gen.Load() }

// Engine is "sqlite" or "postgres": what Open opened.
func (s *Store) Engine() string { return s.d.String() }

// Open opens the database dsn names and applies every migration not yet
// recorded in schema_migrations. A postgres:// or postgresql:// URL is a
// PostgreSQL database (created beforehand by its administrator); anything
// else is the path of a SQLite file, created if needed. Errors never hold
// the URL's password.
func Open(ctx context.Context, dsn string) (*Store, error) {
	return openStore(ctx, dsn, defaultMaxBatch)
}

// openStore is Open with at most maxBatch Writes per commit; 1 gives each its
// own, as before group commit (the benchmark compares the two).
func openStore(ctx context.Context, dsn string, maxBatch int) (*Store, error) {
	var (
		s   *Store
		err error
	)
	if IsPostgresURL(dsn) {
		s, err = openPostgres(ctx, dsn)
	} else {
		s, err = openSQLite(ctx, dsn)
	}
	if err != nil {
		return nil, err
	}
	s.queue = make(chan *writeReq, maxBatch)
	s.ahead = make(chan *writeReq, maxAhead)
	s.maxBatch = maxBatch
	s.quit, s.stopped = make(chan struct{}), make(chan struct{})
	go s.writer()
	return s, nil
}

func openSQLite(ctx context.Context, path string) (*Store, error) {
	// synchronous=FULL: a commit is on disk before the API answers, so an
	// acknowledged change survives kill -9 and power loss alike.
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", "10000")
	q.Set("_foreign_keys", "on")
	q.Set("_synchronous", "FULL")
	q.Set("_txlock", "immediate")
	// Each connection keeps its prepared statements: preparing them anew
	// took a third of the CPU time of a create's transaction (issue 10);
	// the store runs a few dozen distinct queries.
	q.Set("_stmt_cache_size", "64")
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	s := &Store{w: w, quotaMemo: map[string]Limits{}, d: sqliteDialect}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	q.Set("_query_only", "1")
	q.Del("_txlock")
	r, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	s.r = r
	return s, nil
}

// openPostgres opens the database of a postgres:// URL through pgx's
// database/sql driver: the store's code stays on database/sql for both
// engines. Guarantees as on SQLite: synchronous_commit stays on (the
// server's default, asked for again here), so a commit is on the server's
// disk before the API answers; write transactions are SERIALIZABLE, so the
// checks a create makes (quotas, limits, MACs, loops) hold against every
// taasd writing the database, and one that loses a race runs again (tx.go).
func openPostgres(ctx context.Context, dsn string) (*Store, error) {
	name := Redact(dsn)
	cfg, err := pgConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["synchronous_commit"] = "on"
	cfg.RuntimeParams["application_name"] = "taasd"
	// One connection writes, as on SQLite: the writer commits its batch
	// at once, and the server sees one transaction of this taasd at a
	// time, so this taasd's writes never conflict with each other.
	w := sql.OpenDB(pgConnector{stdlib.GetConnector(*cfg)})
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	s := &Store{w: w, quotaMemo: map[string]Limits{}, d: postgresDialect, id: newStoreID()}
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrate %s: %w", name, err)
	}
	rcfg := cfg.Copy()
	rcfg.RuntimeParams["default_transaction_read_only"] = "on"
	r := sql.OpenDB(pgConnector{stdlib.GetConnector(*rcfg)})
	// Reads run in parallel on the server's backends: a few per core of
	// this machine's two, as the API's handlers may all list at once.
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	s.r = r
	// The heartbeat writes on a connection of its own, beside the writer's
	// (Heartbeat); it connects at the first heartbeat.
	hb := sql.OpenDB(pgConnector{stdlib.GetConnector(*cfg)})
	hb.SetMaxOpenConns(1)
	hb.SetMaxIdleConns(1)
	s.hb = hb
	if err := s.listen(ctx, cfg); err != nil {
		w.Close()
		r.Close()
		hb.Close()
		return nil, fmt.Errorf("listen on %s: %w", name, err)
	}
	return s, nil
}

// Close stops the writer, once the transaction it runs has committed
// (Writes still queued fail with ErrClosed), and the listener, and closes
// its pools.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.quit) })
	<-s.stopped
	s.stopListening()
	var hb error
	if s.hb != nil {
		hb = s.hb.Close()
	}
	return errors.Join(s.r.Close(), s.w.Close(), hb)
}

// migrate applies migrations/NNNN_*.sql in order, each in its own
// transaction, recording it in schema_migrations. Several taasd may start
// at once on one PostgreSQL database: each migration's transaction takes
// an advisory lock first, and then skips what another applied meanwhile.
func (s *Store) migrate(ctx context.Context) error {
	if err := s.inMigrationTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.d.schemaMigrationsDDL())
		return err
	}); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	versions := make([]int, len(names))
	for i, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return fmt.Errorf("migration %s: name is not NNNN_what.sql", base)
		}
		versions[i] = version
	}
	if err := s.checkNotNewer(ctx, versions[len(versions)-1], strings.TrimPrefix(names[len(names)-1], "migrations/")); err != nil {
		return err
	}
	for i, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		if err := s.applyMigration(ctx, versions[i], name, base); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return nil
}

// inMigrationTx runs fn in a transaction that holds the migration lock.
func (s *Store) inMigrationTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if lock := s.d.migrationLock(); lock != "" {
		if _, err := tx.ExecContext(ctx, lock); err != nil {
			return fmt.Errorf("take the migration lock: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// checkNotNewer refuses a database a newer taasd migrated: its schema may
// hold what this one would misread or lose (a downgrade). known is this
// binary's newest migration, version its number.
func (s *Store) checkNotNewer(ctx context.Context, version int, known string) error {
	var newest sql.NullInt64
	var name sql.NullString
	err := s.w.QueryRowContext(ctx, `SELECT version, name FROM schema_migrations ORDER BY version DESC LIMIT 1`).
		Scan(&newest, &name)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	if newest.Valid && newest.Int64 > int64(version) {
		return fmt.Errorf("the database has migration %s, newer than this taasd's newest (%s): "+
			"a newer taasd wrote it; run that version, or restore the backup taken before the upgrade", name.String, known)
	}
	return nil
}

func (s *Store) applyMigration(ctx context.Context, version int, path, base string) error {
	body, err := migrations.ReadFile(path)
	if err != nil {
		return err
	}
	stmts, err := s.d.migrationSQL(string(body))
	if err != nil {
		return err
	}
	return s.inMigrationTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, stmts); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES (?, ?)`, version, base)
		return err
	})
}

// Migrations lists the applied migrations by version, for tests and
// `taasd check`.
func (s *Store) Migrations(ctx context.Context) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// tx is Write for the store's own methods, which use the *sql.Tx. fn must
// use the ctx it is given, which the caller cannot cancel (see Write),
// rather than the caller's.
func (s *Store) tx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.Write(ctx, func(t *Tx) error { return fn(t.ctx, t.tx) })
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
