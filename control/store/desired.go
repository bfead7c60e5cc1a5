package store

import (
	"context"
	"database/sql"
	"fmt"
)

// DesiredService is a tap service with what the data plane needs of its
// port.
type DesiredService struct {
	ID        string
	ProjectID string
	PortID    string
	Iface     string
	PortUp    bool // the port's admin_state_up
	Status    Status
}

// DesiredFlow is a tap flow with what the data plane needs of its source
// port.
type DesiredFlow struct {
	ID           string
	ProjectID    string
	ServiceID    string
	SourcePortID string
	Iface        string
	PortUp       bool // the source port's admin_state_up
	MAC          string
	Direction    string
	VLANFilter   string // "" for null
	Status       Status
}

// Status is a realisation status as stored next to a service or flow.
type Status struct {
	State  string // ACTIVE, DOWN or ERROR
	Reason string
}

// Desired reads the whole desired state in one read transaction, so the
// plan built from it is consistent.
func (s *Store) Desired(ctx context.Context) ([]DesiredService, []DesiredFlow, error) {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, nil, fmt.Errorf("read desired state: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	var svcs []DesiredService
	rows, err := tx.QueryContext(ctx, `SELECT s.id, s.project_id, s.port_id, p.iface, p.admin_state_up, s.status, s.status_reason
		FROM tap_services s JOIN ports p ON p.id = s.port_id ORDER BY s.seq`)
	if err != nil {
		return nil, nil, fmt.Errorf("read desired services: %w", err)
	}
	for rows.Next() {
		var d DesiredService
		if err := rows.Scan(&d.ID, &d.ProjectID, &d.PortID, &d.Iface, &d.PortUp, &d.Status.State, &d.Status.Reason); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("read desired services: %w", err)
		}
		svcs = append(svcs, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read desired services: %w", err)
	}
	var flows []DesiredFlow
	rows, err = tx.QueryContext(ctx, `SELECT f.id, f.project_id, f.tap_service_id, f.source_port, p.iface,
		p.admin_state_up, p.mac_address, f.direction, coalesce(f.vlan_filter, ''), f.status, f.status_reason
		FROM tap_flows f JOIN ports p ON p.id = f.source_port ORDER BY f.seq`)
	if err != nil {
		return nil, nil, fmt.Errorf("read desired flows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d DesiredFlow
		if err := rows.Scan(&d.ID, &d.ProjectID, &d.ServiceID, &d.SourcePortID, &d.Iface, &d.PortUp, &d.MAC, &d.Direction,
			&d.VLANFilter, &d.Status.State, &d.Status.Reason); err != nil {
			return nil, nil, fmt.Errorf("read desired flows: %w", err)
		}
		flows = append(flows, d)
	}
	return svcs, flows, rows.Err()
}

// SetStatuses writes the given statuses in one transaction. Rows deleted
// meanwhile are skipped: their status no longer matters.
func (s *Store) SetStatuses(ctx context.Context, services, flows map[string]Status) error {
	if len(services) == 0 && len(flows) == 0 {
		return nil
	}
	return s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for id, st := range services {
			if _, err := tx.ExecContext(ctx, `UPDATE tap_services SET status = ?, status_reason = ? WHERE id = ?`,
				st.State, st.Reason, id); err != nil {
				return fmt.Errorf("set status of tap service %s: %w", id, err)
			}
		}
		for id, st := range flows {
			if _, err := tx.ExecContext(ctx, `UPDATE tap_flows SET status = ?, status_reason = ? WHERE id = ?`,
				st.State, st.Reason, id); err != nil {
				return fmt.Errorf("set status of tap flow %s: %w", id, err)
			}
		}
		return nil
	})
}
