package store

import (
	"bufio"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	sqlite3 "github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
)

// Every difference between the two engines the store runs on is in this
// file (issue 14): the store's SQL is written once, in SQLite's spelling
// (? and ?N parameters), and the PostgreSQL driver rewrites the parameters
// as it sends each query (rebind); the few statements that really differ
// are picked here (the dialect's methods), and the migrations carry
// marked blocks for each engine (migrationSQL).

// dialect is the engine a Store runs on.
type dialect int

const (
	sqliteDialect dialect = iota
	postgresDialect
)

func (d dialect) String() string {
	if d == postgresDialect {
		return "postgres"
	}
	return "sqlite"
}

// IsPostgresURL reports whether dsn names a PostgreSQL database rather
// than a SQLite file: a URL of scheme postgres:// or postgresql:// (in any
// case), or libpq's keyword/value form ("host=db1 user=taasd dbname=taas",
// which pgx reads as libpq does). A SQLite path never starts with one of
// libpq's keywords and "=".
func IsPostgresURL(dsn string) bool {
	return pgScheme(dsn) != "" || isKeywordDSN(dsn)
}

// pgScheme returns dsn's scheme as written when it is postgres or
// postgresql in any case, else "".
func pgScheme(dsn string) string {
	scheme, _, ok := strings.Cut(dsn, "://")
	if ok && (strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql")) {
		return scheme
	}
	return ""
}

// libpqKeywords are the keywords of libpq's connection strings a
// keyword/value DSN starts with in practice.
var libpqKeywords = map[string]bool{
	"host": true, "hostaddr": true, "port": true, "dbname": true, "user": true, "password": true,
	"passfile": true, "service": true, "sslmode": true, "connect_timeout": true, "application_name": true,
	"options": true, "target_session_attrs": true, "sslrootcert": true, "sslcert": true, "sslkey": true,
}

// spaces are the white space of libpq's connection strings.
const spaces = " \t\n\r\v\f"

// isKeywordDSN reports whether dsn starts with a libpq keyword and "=".
func isKeywordDSN(dsn string) bool {
	key, _, ok := strings.Cut(strings.TrimLeft(dsn, spaces), "=")
	return ok && libpqKeywords[strings.ToLower(strings.TrimRight(key, spaces))]
}

// Redact returns dsn with its password, in the URL's user info, its
// password parameter or a keyword/value DSN's password, replaced by
// "xxxxx": what errors and logs print.
func Redact(dsn string) string {
	if isKeywordDSN(dsn) && pgScheme(dsn) == "" {
		return redactKeywords(dsn)
	}
	scheme := pgScheme(dsn)
	if scheme == "" {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// A URL that does not parse (several hosts, a stray
		// character) may still hold a password: print only its scheme.
		return scheme + "://(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	u.Fragment, u.RawFragment = "", "" // pgx ignores it; a stray '#' puts the rest there
	q := u.Query()
	for k := range q {
		if strings.EqualFold(k, "password") {
			q[k] = []string{"xxxxx"}
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

// redactKeywords is Redact of a keyword/value DSN, read as pgx and libpq
// read it: each value is quoted ('...', with \ escapes) or runs to the
// next white space (with \ escapes).
func redactKeywords(dsn string) string {
	var b strings.Builder
	s := strings.TrimLeft(dsn, spaces)
	for len(s) > 0 {
		key, rest, ok := strings.Cut(s, "=")
		if !ok {
			return "(unparsable keyword/value DSN)"
		}
		rest = strings.TrimLeft(rest, spaces)
		end, quoted := 0, len(rest) > 0 && rest[0] == '\''
		if quoted {
			end = 1
		}
		for ; end < len(rest); end++ {
			c := rest[end]
			if quoted && c == '\'' || !quoted && strings.IndexByte(spaces, c) >= 0 {
				break
			}
			if c == '\\' {
				end++
			}
		}
		if quoted {
			if end >= len(rest) {
				return "(unparsable keyword/value DSN)"
			}
			end++ // the closing quote
		}
		end = min(end, len(rest))
		value := rest[:end]
		if strings.EqualFold(strings.Trim(key, spaces), "password") {
			value = "xxxxx"
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strings.Trim(key, spaces) + "=" + value)
		s = strings.TrimLeft(rest[end:], spaces)
	}
	return b.String()
}

// idsIn is a subquery of the values of the JSON array of strings given as
// the parameter param (e.g. "?3").
func (d dialect) idsIn(param string) string {
	if d == postgresDialect {
		return `SELECT jsonb_array_elements_text(` + param + `::jsonb)`
	}
	return `SELECT value FROM json_each(` + param + `)`
}

// tunnelsOf is a table of the tunnel ids of a tap mirror's directions
// given as the parameter param, with the type and atom columns of
// tap_mirror_tunnels (migration 0007), and the hint that makes SQLite look
// them up by that table's index (PostgreSQL's planner needs none).
func (d dialect) tunnelsOf(param string) (table, hint string) {
	if d == postgresDialect {
		return `taas_tunnels(` + param + `)`, ``
	}
	return `json_each(` + param + `)`, ` INDEXED BY tap_mirror_tunnels_id`
}

// schemaMigrationsDDL creates schema_migrations.
func (d dialect) schemaMigrationsDDL() string {
	if d == postgresDialect {
		return `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, name TEXT NOT NULL,
			applied_at TEXT NOT NULL DEFAULT (to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))`
	}
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL,
		applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))`
}

// migrationLock is the statement that makes a migrating transaction wait
// for any other taasd migrating the same database (several start at
// once); "" where the transaction's own lock does it (SQLite's
// _txlock=immediate takes the database's write lock at BEGIN). The key is
// a constant of ours: "taas" in ASCII.
func (d dialect) migrationLock() string {
	if d == postgresDialect {
		return `SELECT pg_advisory_xact_lock(1952539507)`
	}
	return ``
}

// Migration blocks: in a migration file, the lines between a "-- [sqlite]"
// or "-- [postgres]" line and the next "-- [end]" line are that engine's
// only; every other line is both's.
const (
	blockSQLite   = "-- [sqlite]"
	blockPostgres = "-- [postgres]"
	blockEnd      = "-- [end]"
)

// migrationSQL returns the statements of a migration file for d.
func (d dialect) migrationSQL(body string) (string, error) {
	var (
		out   strings.Builder
		in    string // the block's marker; "" outside blocks
		line  int
		lines = bufio.NewScanner(strings.NewReader(body))
	)
	lines.Buffer(nil, len(body)+1)
	for lines.Scan() {
		line++
		text := lines.Text()
		switch strings.TrimSpace(text) {
		case blockSQLite, blockPostgres:
			if in != "" {
				return "", fmt.Errorf("line %d: block in block", line)
			}
			in = strings.TrimSpace(text)
			continue
		case blockEnd:
			if in == "" {
				return "", fmt.Errorf("line %d: %s outside a block", line, blockEnd)
			}
			in = ""
			continue
		}
		if in == blockSQLite && d != sqliteDialect || in == blockPostgres && d != postgresDialect {
			continue
		}
		out.WriteString(text)
		out.WriteByte('\n')
	}
	if in != "" {
		return "", fmt.Errorf("block %s not ended", in)
	}
	return out.String(), lines.Err()
}

// rebinds caches rebind's answers: the store's queries are constants, a
// few dozen of them.
var rebinds sync.Map

// rebind rewrites SQLite's parameters (? and ?N) as PostgreSQL's ($N):
// each ? takes the number after the largest given so far, as SQLite
// numbers them. Quoted strings, quoted names, comments (-- and /* */,
// nested) and dollar-quoted bodies ($$ or $tag$, tag any identifier)
// are left as they are.
func rebind(q string) string {
	if v, ok := rebinds.Load(q); ok {
		return v.(string)
	}
	var (
		b    strings.Builder
		next int // the largest parameter number so far
	)
	b.Grow(len(q) + 8)
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(q[i+1:], c)
			if j < 0 { // not closed: the rest is quoted
				b.WriteString(q[i:])
				i = len(q)
				break
			}
			b.WriteString(q[i : i+j+2])
			i += j + 2
		case c == '-' && strings.HasPrefix(q[i:], "--"):
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				j = len(q) - i
			}
			b.WriteString(q[i : i+j])
			i += j
		case c == '/' && strings.HasPrefix(q[i:], "/*"):
			j := blockComment(q[i:])
			b.WriteString(q[i : i+j])
			i += j
		case c == '$' && dollarTag(q, i) != "":
			// A dollar-quoted body: $$...$$ or $tag$...$tag$.
			tag := dollarTag(q, i)
			j := strings.Index(q[i+len(tag):], tag)
			if j < 0 { // not closed: the rest is quoted
				j = len(q) - i - len(tag)
			} else {
				j += len(tag)
			}
			b.WriteString(q[i : i+len(tag)+j])
			i += len(tag) + j
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			n := next + 1
			if j > i+1 {
				n, _ = strconv.Atoi(q[i+1 : j]) // digits only
			}
			next = max(next, n)
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	out := b.String()
	rebinds.Store(q, out)
	return out
}

// blockComment returns the length of the /* */ comment q starts with,
// nested as PostgreSQL nests them; all of q if it is not closed.
func blockComment(q string) int {
	depth := 0
	for i := 0; i+1 < len(q); i++ {
		switch q[i : i+2] {
		case "/*":
			depth++
			i++
		case "*/":
			depth--
			i++
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(q)
}

// dollarTag returns the dollar quote's opening tag ("$$" or "$tag$")
// that starts at q[i], or "" when none does: the tag is an identifier
// not starting with a digit ($1 is a parameter), and a $ inside an
// identifier (a$b) starts none.
func dollarTag(q string, i int) string {
	if i > 0 && identByte(q[i-1]) && !(q[i-1] >= '0' && q[i-1] <= '9') {
		return "" // a digit before may be a parameter's: ?1$a$ is one
	}
	j := i + 1
	for j < len(q) && identByte(q[j]) {
		if j == i+1 && q[j] >= '0' && q[j] <= '9' {
			return ""
		}
		j++
	}
	if j < len(q) && q[j] == '$' {
		return q[i : j+1]
	}
	return ""
}

// identByte reports whether c may be part of an unquoted identifier
// (bytes of non-ASCII letters included).
func identByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// pgConn is a connection of pgx's database/sql driver that rebinds every
// query it is given; its other methods are pgx's.
type pgConn struct{ *stdlib.Conn }

func (c pgConn) Prepare(q string) (driver.Stmt, error) {
	st, err := c.Conn.Prepare(rebind(q))
	return st, unavailable(err)
}

func (c pgConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	st, err := c.Conn.PrepareContext(ctx, rebind(q))
	return st, unavailable(err)
}

func (c pgConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tx, err := c.Conn.BeginTx(ctx, opts)
	return tx, unavailable(err)
}

func (c pgConn) Ping(ctx context.Context) error { return unavailable(c.Conn.Ping(ctx)) }

func (c pgConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	if err := storable(args); err != nil {
		return nil, err
	}
	res, err := c.Conn.ExecContext(ctx, rebind(q), args)
	return res, unavailable(err)
}

func (c pgConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	if err := storable(args); err != nil {
		return nil, err
	}
	rows, err := c.Conn.QueryContext(ctx, rebind(q), args)
	return rows, unavailable(err)
}

// unavailable marks err ErrUnavailable when it says the server cannot be
// reached: the connection failed, was lost or did not answer in time, or the server is shutting
// down or starting (SQLSTATE class 08, 57P01-57P03). The error stays in the
// chain: database/sql retries driver.ErrBadConn on another connection.
func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	var (
		ce *pgconn.ConnectError
		ne net.Error
	)
	state := pgState(err)
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) ||
		strings.HasPrefix(state, "08") || state == "57P01" || state == "57P02" || state == "57P03" {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// storable refuses a string holding a NUL character, which PostgreSQL's
// text cannot hold (SQLite's can): the API answers 400 rather than the
// server's encoding error as a 500.
func storable(args []driver.NamedValue) error {
	for _, a := range args {
		if v, ok := a.Value.(string); ok && strings.IndexByte(v, 0) >= 0 {
			return ErrInvalidText
		}
	}
	return nil
}

// pgConnector opens pgConns.
type pgConnector struct{ driver.Connector }

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	sc, ok := conn.(*stdlib.Conn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("pgx stdlib returned a %T", conn)
	}
	return pgConn{sc}, nil
}

// pgConfig parses a postgres:// URL or a keyword/value DSN. pgx reads what the URL leaves out
// from libpq's environment (PGHOST, PGPASSWORD, ...) and the password from
// PGPASSFILE or ~/.pgpass, as libpq does. Its errors never hold the
// password.
func pgConfig(dsn string) (*pgx.ConnConfig, error) {
	if scheme := pgScheme(dsn); scheme != "" {
		dsn = strings.ToLower(scheme) + dsn[len(scheme):] // pgx knows the lower case only
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors redact the password themselves; say which
		// URL, redacted, all the same.
		return nil, fmt.Errorf("parse %s: %w", Redact(dsn), err)
	}
	if cfg.ConnectTimeout == 0 {
		// A server cut off by the network must not hold a request for
		// the kernel's TCP timeout (minutes): the API answers 503 soon.
		// connect_timeout in the URL (or PGCONNECT_TIMEOUT) sets another.
		cfg.ConnectTimeout = 5 * time.Second
	}
	cfg.DialFunc = (&net.Dialer{
		Timeout: cfg.ConnectTimeout,
		// A connection whose server went silent (a network cut, a
		// host gone) fails within some 20 s, not after the kernel's
		// 15 minutes of retransmissions: keepalives find it idle,
		// TCP_USER_TIMEOUT while it waits for an answer (the writer's
		// transaction, which every write waits for).
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3},
		Control:         tcpUserTimeout,
	}).DialContext
	return cfg, nil
}

// userTimeout is how long a TCP connection to PostgreSQL may hold data the
// server has not acknowledged.
const userTimeout = 20 * time.Second

// tcpUserTimeout sets TCP_USER_TIMEOUT on TCP sockets (unix sockets have
// none).
func tcpUserTimeout(network, _ string, c syscall.RawConn) error {
	if !strings.HasPrefix(network, "tcp") {
		return nil
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
	}); err != nil {
		return err
	}
	return serr
}

// pgState returns the SQLSTATE of a PostgreSQL error in err's chain, or
// "".
func pgState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// retryable reports whether err ends the transaction in a way that running
// it again may cure: a serialization failure (SERIALIZABLE found the
// transaction conflicting with a concurrent one, of this taasd or
// another), a deadlock, or a statement refused because an earlier one of
// the transaction failed so (an fn that swallowed the error).
func retryable(err error) bool {
	switch pgState(err) {
	case "40001", "40P01", "25P02":
		return true
	}
	return false
}

// constraintErr maps constraint failures to the sentinels: a dangling
// reference is ErrNotFound (the parent went away meanwhile), a duplicate
// is ErrConflict, migration 0003's trigger is ErrMACInUse.
func constraintErr(err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrConstraint {
		switch se.ExtendedCode {
		case sqlite3.ErrConstraintForeignKey:
			return fmt.Errorf("%w: %v", ErrNotFound, err)
		case sqlite3.ErrConstraintUnique, sqlite3.ErrConstraintPrimaryKey:
			return fmt.Errorf("%w: %v", ErrConflict, err)
		case sqlite3.ErrConstraintTrigger:
			if strings.Contains(se.Error(), ErrMACInUse.Error()) {
				return fmt.Errorf("%w: %v", ErrMACInUse, err)
			}
		}
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23503": // foreign_key_violation
			return fmt.Errorf("%w: %v", ErrNotFound, err)
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%w: %v", ErrConflict, err)
		case pe.Code == "P0001" && pe.Message == ErrMACInUse.Error(): // raise_exception, migration 0003
			return fmt.Errorf("%w: %v", ErrMACInUse, err)
		}
	}
	return err
}

// writeTx is how the writer begins its transactions. On PostgreSQL they
// are SERIALIZABLE: a create checks what it depends on (a quota, the
// limit on tap services, a MAC on an interface, a loop) and then inserts,
// and another taasd may do the same at the same moment; SERIALIZABLE fails
// one of two such transactions (40001), which then runs again and sees
// the other's row. SQLite serialises writers by itself.
func (d dialect) writeTx() *sql.TxOptions {
	if d == postgresDialect {
		return &sql.TxOptions{Isolation: sql.LevelSerializable}
	}
	return nil
}

// readTx is how Desired begins its read transaction: one snapshot for
// every query. SQLite's read transaction is one; PostgreSQL's default
// (READ COMMITTED) takes a snapshot per statement.
func (d dialect) readTx() *sql.TxOptions {
	if d == postgresDialect {
		return &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	return &sql.TxOptions{ReadOnly: true}
}
