package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
)

// Node is one taasd of a fleet as the nodes table keeps it (issue 14).
// Times are Unix milliseconds, as the node's clock gave them.
type Node struct {
	Name string
	// Instance is a random id of one run of taasd under Name.
	Instance   string
	Version    string
	APIAddress string
	StartedAt  int64
	LastSeen   int64
	// StoppedAt is when the run stopped cleanly; 0 while it runs (or
	// after it died without stopping).
	StoppedAt int64
	// Interfaces is what the node declares of its interfaces, JSON as
	// control wrote it; "" when it published none (migration 0011). Inspect
	// does not read it: its database may predate the column.
	Interfaces string
}

// NodeStats is a node's published data-plane counters: JSON, as control
// wrote it, and when (Unix ms).
type NodeStats struct {
	Node      string
	UpdatedAt int64
	Stats     []byte
}

// ErrNodeTaken: the node's row belongs to another run of taasd (ClaimNode
// lost a race, or a heartbeat found its row claimed by another run).
var ErrNodeTaken = errors.New("node taken by another taasd")

// nodesChanged is the word of the notification that a node's run joined,
// stopped or was deleted (NodeGeneration), beside the write's own.
const nodesChanged = "nodes"

// nodeWrite is s.tx for a write that changes the nodes' runs: on
// PostgreSQL it also notifies the other Stores, and NodeGeneration moves
// once it committed (or its outcome is unknown), before it returns.
func (s *Store) nodeWrite(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := fn(ctx, tx); err != nil {
			return err
		}
		if s.d != postgresDialect {
			return nil
		}
		_, err := tx.ExecContext(ctx, `SELECT pg_notify(?, ?)`, changesChannel, s.id+" "+nodesChanged)
		return err
	})
	s.nodeGen.Add(1)
	return err
}

// GetNode returns the row of the node name, or ErrNotFound.
func (s *Store) GetNode(ctx context.Context, name string) (Node, error) {
	var n Node
	err := scanNodeRow(s.r.QueryRowContext(ctx, `SELECT `+nodeColumns+`, interfaces FROM nodes WHERE name = ?`, name), &n)
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("node %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return n, fmt.Errorf("read node %s: %w", name, err)
	}
	return n, nil
}

// nodeColumns are a node's columns as any schema since 0010 has them, for
// scanNode; nodesQuery reads every node by name with them (Inspect reads
// databases of older versions too). The store's own reads add interfaces
// (0011), for scanNodeRow.
const (
	nodeColumns = `name, instance, version, api_address, started_at, last_seen, stopped_at`
	nodesQuery  = `SELECT ` + nodeColumns + ` FROM nodes ORDER BY name`
)

func scanNode(sc scanner, n *Node) error {
	return sc.Scan(&n.Name, &n.Instance, &n.Version, &n.APIAddress, &n.StartedAt, &n.LastSeen, &n.StoppedAt)
}

func scanNodeRow(sc scanner, n *Node) error {
	return sc.Scan(&n.Name, &n.Instance, &n.Version, &n.APIAddress, &n.StartedAt, &n.LastSeen, &n.StoppedAt, &n.Interfaces)
}

// hasNodes reports whether a database with the migrations applied has
// the nodes table.
func hasNodes(applied []string) bool { return slices.Contains(applied, "0010_nodes.sql") }

// ListNodes returns every node by name.
func (s *Store) ListNodes(ctx context.Context) ([]Node, error) {
	var out []Node
	err := scanAll(ctx, s.r, &out, `SELECT `+nodeColumns+`, interfaces FROM nodes ORDER BY name`, scanNodeRow)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// ClaimNode registers n (its name, instance, version, address, times and
// interfaces)
// as its name's run, replacing the row of an earlier run only if that
// row's last_seen is still lastSeen (0: there must be no row): the caller
// read the row, waited for a live run's heartbeat, and saw none. A row
// changed meanwhile, by a live run or another claim, is ErrNodeTaken. The
// check and the write are one statement, so two runs that claim at once
// cannot both win.
func (s *Store) ClaimNode(ctx context.Context, n Node, lastSeen int64) error {
	return s.nodeWrite(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO nodes (name, instance, version, api_address, started_at, last_seen, interfaces)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, version = excluded.version,
				api_address = excluded.api_address, started_at = excluded.started_at, last_seen = excluded.last_seen,
				stopped_at = 0, interfaces = excluded.interfaces
			WHERE nodes.last_seen = ? OR nodes.instance = excluded.instance`,
			n.Name, n.Instance, n.Version, n.APIAddress, n.StartedAt, n.LastSeen, n.Interfaces, lastSeen)
		if err != nil {
			return fmt.Errorf("claim node %s: %w", n.Name, err)
		}
		if k, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("claim node %s: %w", n.Name, err)
		} else if k == 0 {
			return fmt.Errorf("claim node %s: %w", n.Name, ErrNodeTaken)
		}
		return nil
	})
}

// Heartbeat sets the last_seen of the run instance of node name to now
// (Unix ms) and, when stats is not nil, replaces the node's published
// counters, and when interfaces is not nil its published interfaces, in
// one transaction. A row another run has claimed is ErrNodeTaken, and
// nothing is written.
//
// It does not wait behind the API's Writes (issue 14: a backlog of creates
// or a slow batch held a busy node's heartbeat, and the others judged it
// dead): on PostgreSQL it runs on a connection of its own (hb), READ
// COMMITTED, since it writes its own node's rows only and so has nothing
// to serialize against; on SQLite, whose one writer the transaction under
// way holds, it goes ahead of every queued Write, in a transaction of its
// own (writeAhead).
func (s *Store) Heartbeat(ctx context.Context, name, instance string, now int64, stats, interfaces []byte) error {
	fn := func(ctx context.Context, tx *sql.Tx) error {
		return heartbeat(ctx, tx, name, instance, now, stats, interfaces)
	}
	if s.hb == nil {
		// Others read heartbeats and stats when they need them (each
		// node rereads the nodes every heartbeat, and a change of
		// liveness drops the cached lists itself): announced, each would
		// wake every node or clear every node's list cache every second,
		// so it goes unannounced (noChange: no NOTIFY, no Generation
		// bump).
		return s.writeAhead(ctx, noChange, func(t *Tx) error { return fn(t.ctx, t.tx) })
	}
	// Outside the writer, nothing announces it either. A closed Store
	// says so as the writer does (ErrClosed).
	closed := func() bool {
		select {
		case <-s.quit:
			return true
		default:
			return false
		}
	}
	if closed() {
		return ErrClosed
	}
	tx, err := s.hb.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil && closed() {
		return ErrClosed
	} else if err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", name, err)
	}
	if err := fn(ctx, tx); err != nil {
		tx.Rollback() //nolint:errcheck // fn's error is the one to report
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("heartbeat of node %s: commit: %w", name, err)
	}
	return nil
}

// heartbeat is Heartbeat's transaction.
func heartbeat(ctx context.Context, tx *sql.Tx, name, instance string, now int64, stats, interfaces []byte) error {
	var published any // NULL: unchanged
	if interfaces != nil {
		published = string(interfaces)
	}
	res, err := tx.ExecContext(ctx, `UPDATE nodes SET last_seen = ?, interfaces = coalesce(?, interfaces)
		WHERE name = ? AND instance = ?`, now, published, name, instance)
	if err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", name, err)
	}
	if k, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", name, err)
	} else if k == 0 {
		return fmt.Errorf("heartbeat of node %s: %w", name, ErrNodeTaken)
	}
	if stats == nil {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO node_stats (node, updated_at, stats) VALUES (?, ?, ?)
		ON CONFLICT (node) DO UPDATE SET updated_at = excluded.updated_at, stats = excluded.stats`,
		name, now, string(stats)); err != nil {
		return fmt.Errorf("publish stats of node %s: %w", name, err)
	}
	return nil
}

// LeaveNode records that the run instance of node name stopped at at
// (Unix ms); a row another run has claimed is left alone.
func (s *Store) LeaveNode(ctx context.Context, name, instance string, at int64) error {
	return s.nodeWrite(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET stopped_at = ? WHERE name = ? AND instance = ?`, at, name, instance); err != nil {
			return fmt.Errorf("leave node %s: %w", name, err)
		}
		return nil
	})
}

// DeleteNode removes node name's row, and with it (ON DELETE CASCADE) its
// published counters, if its last_seen is still lastSeen: the caller
// judged the node gone from that row. A row that moved meanwhile (the
// node came back, or another run claimed it) is ErrNodeTaken, and nothing
// is deleted; no row is ErrNotFound.
func (s *Store) DeleteNode(ctx context.Context, name string, lastSeen int64) error {
	return s.nodeWrite(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE name = ? AND last_seen = ?`, name, lastSeen)
		if err != nil {
			return fmt.Errorf("delete node %s: %w", name, err)
		}
		if k, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("delete node %s: %w", name, err)
		} else if k == 1 {
			return nil
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM nodes WHERE name = ?`, name).Scan(&n); err != nil {
			return fmt.Errorf("delete node %s: %w", name, err)
		}
		if n == 0 {
			return fmt.Errorf("delete node %s: %w", name, ErrNotFound)
		}
		return fmt.Errorf("delete node %s: %w", name, ErrNodeTaken)
	})
}

// ListNodeStats returns every node's published counters but those of
// except (the caller's own node, whose counters it has live).
func (s *Store) ListNodeStats(ctx context.Context, except string) ([]NodeStats, error) {
	var out []NodeStats
	rows, err := s.r.QueryContext(ctx, `SELECT node, updated_at, stats FROM node_stats WHERE node != ? ORDER BY node`, except)
	if err != nil {
		return nil, fmt.Errorf("list node stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ns NodeStats
		var text string
		if err := rows.Scan(&ns.Node, &ns.UpdatedAt, &text); err != nil {
			return nil, fmt.Errorf("list node stats: %w", err)
		}
		ns.Stats = []byte(text)
		out = append(out, ns)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list node stats: %w", err)
	}
	return out, nil
}
