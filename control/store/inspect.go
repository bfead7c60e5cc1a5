package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	sqlite3 "github.com/mattn/go-sqlite3"
)

// Info is what Inspect found of a database, for `taasd check`.
type Info struct {
	// Engine is "sqlite" or "postgres".
	Engine string
	// Name is the database as printed: the SQLite path, or the URL
	// without its password (Redact).
	Name string
	// Server is the engine's version: PostgreSQL's server_version, or the
	// SQLite library's.
	Server string
	// Missing: the SQLite file does not exist yet (the first start creates
	// it).
	Missing bool
	// Applied are the migrations the database records, in order.
	Applied []string
	// Known is this binary's newest migration.
	Known string
	// Nodes are the nodes registered in the database (issue 14), when
	// its schema has them.
	Nodes []Node
}

// Inspect connects to the database dsn names (as Open takes it) and reads
// which migrations it has, without creating or changing anything: a
// SQLite file is opened read-only, a PostgreSQL database in a read-only
// session. Errors never hold the URL's password.
func Inspect(ctx context.Context, dsn string) (Info, error) {
	info := Info{Engine: sqliteDialect.String(), Name: Redact(dsn), Known: newestMigration()}
	var db *sql.DB
	if IsPostgresURL(dsn) {
		info.Engine = postgresDialect.String()
		cfg, err := pgConfig(dsn)
		if err != nil {
			return info, err
		}
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
		cfg.RuntimeParams["application_name"] = "taasd check"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return info, fmt.Errorf("connect: %w", err)
		}
		defer conn.Close(context.Background()) //nolint:errcheck // read-only session
		if err := conn.QueryRow(ctx, `SHOW server_version`).Scan(&info.Server); err != nil {
			return info, fmt.Errorf("read the server's version: %w", err)
		}
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
			return info, fmt.Errorf("look for schema_migrations: %w", err)
		}
		if !exists {
			return info, nil
		}
		rows, err := conn.Query(ctx, `SELECT name FROM schema_migrations ORDER BY version`)
		if err != nil {
			return info, fmt.Errorf("read schema_migrations: %w", err)
		}
		info.Applied, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return info, fmt.Errorf("read schema_migrations: %w", err)
		}
		if hasNodes(info.Applied) {
			rows, err := conn.Query(ctx, nodesQuery)
			if err != nil {
				return info, fmt.Errorf("read nodes: %w", err)
			}
			if info.Nodes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Node, error) {
				var n Node
				return n, scanNode(r, &n)
			}); err != nil {
				return info, fmt.Errorf("read nodes: %w", err)
			}
		}
		return info, nil
	}
	info.Server, _, _ = sqlite3.Version()
	if _, err := os.Stat(dsn); errors.Is(err, fs.ErrNotExist) {
		info.Missing = true
		return info, nil
	} else if err != nil {
		return info, err
	}
	db, err := sql.Open("sqlite3", "file:"+dsn+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		return info, err
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'`).Scan(&n); err != nil {
		return info, fmt.Errorf("read %s: %w", dsn, err)
	}
	if n == 0 {
		return info, nil
	}
	applied, err := queryStrings(ctx, db, `SELECT name FROM schema_migrations ORDER BY version`)
	if err != nil {
		return info, fmt.Errorf("read schema_migrations: %w", err)
	}
	info.Applied = applied
	if hasNodes(applied) {
		if err := scanAll(ctx, db, &info.Nodes, nodesQuery, scanNode); err != nil {
			return info, fmt.Errorf("read nodes: %w", err)
		}
	}
	return info, nil
}

// newestMigration returns the name of this binary's newest migration.
func newestMigration() string {
	names, _ := fs.Glob(migrations, "migrations/*.sql") // a constant, valid pattern
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return strings.TrimPrefix(names[len(names)-1], "migrations/")
}
