package store

import (
	"context"
	"database/sql"
	"fmt"
)

// Tx is one write transaction, the unit in which a create checks what it
// depends on (the port, the service, their owners, the quota) and inserts:
// a bulk create runs every item in one Tx, so it commits whole or not at
// all, and no other client sees (or builds on) a row of it before it
// commits. Issue 9: a failing bulk used to be undone by deleting what it
// had inserted, and the cascade took acknowledged flows of other clients
// with it.
//
// A Tx is valid only inside the function given to Write, on its goroutine.
type Tx struct {
	ctx context.Context
	tx  *sql.Tx
}

// Write runs fn in one immediate transaction: it commits when fn returns
// nil and rolls back otherwise, returning fn's error as is. Writers queue
// for the one write connection, so fn must not wait for anything but the
// database.
func (s *Store) Write(ctx context.Context, fn func(tx *Tx) error) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return fn(&Tx{ctx: ctx, tx: tx}) })
}

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
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO ports (`+portCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.ProjectID, p.NetworkID, p.Name, p.Description, p.MACAddress, b2i(p.AdminStateUp),
		p.DeviceOwner, p.DeviceID, b2i(p.PortSecurityEnabled), p.HostID, p.Interface)
	if err != nil {
		return fmt.Errorf("insert port: %w", constraintErr(err))
	}
	return nil
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
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO tap_services (`+serviceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		ts.ID, ts.ProjectID, ts.Name, ts.Description, ts.PortID, ts.Status, ts.StatusReason)
	if err != nil {
		return fmt.Errorf("insert tap service: %w", constraintErr(err))
	}
	return nil
}

// CreateTapFlow inserts f. A service or source port that does not exist is
// ErrNotFound.
func (t *Tx) CreateTapFlow(f TapFlow) error {
	var vf sql.NullString
	if f.VLANFilter != nil {
		vf = sql.NullString{String: *f.VLANFilter, Valid: true}
	}
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO tap_flows (`+flowCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		f.ID, f.ProjectID, f.Name, f.Description, f.TapServiceID, f.SourcePort, f.Direction, vf, f.Status, f.StatusReason)
	if err != nil {
		return fmt.Errorf("insert tap flow: %w", constraintErr(err))
	}
	return nil
}
