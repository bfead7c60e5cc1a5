package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Every method taking a project scopes the query to it: a row of another
// project is ErrNotFound. The empty project means "every project" (admin).

// Network is a Neutron network: the minimum ports need.
type Network struct {
	ID           string
	ProjectID    string
	Name         string
	Description  string
	AdminStateUp bool
	Shared       bool
	MTU          int
}

// Port is a Neutron port. Interface is binding:profile's "interface": the
// netdev its traffic is seen on or copies are sent to; "" when unbound.
type Port struct {
	ID                  string
	ProjectID           string
	NetworkID           string
	Name                string
	Description         string
	MACAddress          string
	AdminStateUp        bool
	DeviceOwner         string
	DeviceID            string
	PortSecurityEnabled bool
	HostID              string
	Interface           string
}

// TapService delivers copies to its port's interface.
type TapService struct {
	ID          string
	ProjectID   string
	Name        string
	Description string
	PortID      string
	// Snaplen truncates the copies to so many bytes; nil (the API's
	// null) sends whole frames.
	Snaplen      *int
	Status       string
	StatusReason string
}

// TapFlow copies a source port's traffic into a tap service. VLANFilter and
// Filter are nil for the API's null.
type TapFlow struct {
	ID           string
	ProjectID    string
	Name         string
	Description  string
	TapServiceID string
	SourcePort   string
	Direction    string
	VLANFilter   *string
	// Filter is the pcap-filter expression exactly as the API accepted
	// it.
	Filter       *string
	Status       string
	StatusReason string
}

// Ref names a row removed by a cascade, so callers can announce it.
type Ref struct {
	ID        string
	ProjectID string
}

// Deleted lists what a delete removed besides the row asked for.
type Deleted struct {
	Services []Ref
	Flows    []Ref
	Mirrors  []Ref
}

const networkCols = `id, project_id, name, description, admin_state_up, shared, mtu`

func scanNetwork(sc interface{ Scan(...any) error }) (Network, error) {
	var n Network
	err := sc.Scan(&n.ID, &n.ProjectID, &n.Name, &n.Description, &n.AdminStateUp, &n.Shared, &n.MTU)
	return n, err
}

// ListNetworks returns the networks of project and the shared ones.
func (s *Store) ListNetworks(ctx context.Context, project string) ([]Network, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+networkCols+` FROM networks
		WHERE ?1 = '' OR project_id = ?1 OR shared != 0 ORDER BY seq`, project)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	defer rows.Close()
	var out []Network
	for rows.Next() {
		n, err := scanNetwork(rows)
		if err != nil {
			return nil, fmt.Errorf("list networks: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// GetNetwork returns one network visible to project.
func (s *Store) GetNetwork(ctx context.Context, project, id string) (Network, error) {
	return getNetwork(ctx, s.r, project, id)
}

func getNetwork(ctx context.Context, q queryer, project, id string) (Network, error) {
	n, err := scanNetwork(q.QueryRowContext(ctx, `SELECT `+networkCols+` FROM networks
		WHERE id = ?2 AND (?1 = '' OR project_id = ?1 OR shared != 0)`, project, id))
	if errors.Is(err, sql.ErrNoRows) {
		return n, ErrNotFound
	}
	if err != nil {
		return n, fmt.Errorf("get network %s: %w", id, err)
	}
	return n, nil
}

// CreateNetwork inserts n.
func (s *Store) CreateNetwork(ctx context.Context, n Network) error {
	return s.Write(ctx, func(tx *Tx) error { return tx.CreateNetwork(n) })
}

const portCols = `id, project_id, network_id, name, description, mac_address, admin_state_up,
	device_owner, device_id, port_security_enabled, host_id, iface`

func scanPort(sc interface{ Scan(...any) error }) (Port, error) {
	var p Port
	err := sc.Scan(&p.ID, &p.ProjectID, &p.NetworkID, &p.Name, &p.Description, &p.MACAddress, &p.AdminStateUp,
		&p.DeviceOwner, &p.DeviceID, &p.PortSecurityEnabled, &p.HostID, &p.Interface)
	return p, err
}

// ListPorts returns the ports of project in creation order.
func (s *Store) ListPorts(ctx context.Context, project string) ([]Port, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+portCols+` FROM ports
		WHERE ?1 = '' OR project_id = ?1 ORDER BY seq`, project)
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	defer rows.Close()
	var out []Port
	for rows.Next() {
		p, err := scanPort(rows)
		if err != nil {
			return nil, fmt.Errorf("list ports: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// GetPort returns one port of project.
func (s *Store) GetPort(ctx context.Context, project, id string) (Port, error) {
	return getPort(ctx, s.r, project, id)
}

// queryer is what *sql.DB (the read pool) and *sql.Tx share.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getPort(ctx context.Context, q queryer, project, id string) (Port, error) {
	p, err := scanPort(q.QueryRowContext(ctx, `SELECT `+portCols+` FROM ports
		WHERE id = ?2 AND (?1 = '' OR project_id = ?1)`, project, id))
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("get port %s: %w", id, err)
	}
	return p, nil
}

// CreatePort inserts p in a transaction of its own (see Tx.CreatePort).
func (s *Store) CreatePort(ctx context.Context, p Port) error {
	return s.Write(ctx, func(tx *Tx) error { return tx.CreatePort(p) })
}

// UpdatePort reads the port, lets fn change it and writes it back, in one
// transaction. fn's error aborts the update and is returned as is; fn
// reads what it checks through tx (see Write).
func (s *Store) UpdatePort(ctx context.Context, project, id string, fn func(*Tx, *Port) error) (Port, error) {
	var p Port
	err := s.Write(ctx, func(t *Tx) error {
		var err error
		if p, err = getPort(t.ctx, t.tx, project, id); err != nil {
			return err
		}
		if err := fn(t, &p); err != nil {
			return err
		}
		_, err = t.tx.ExecContext(t.ctx, `UPDATE ports SET name = ?, description = ?, mac_address = ?,
			admin_state_up = ?, device_owner = ?, device_id = ?, port_security_enabled = ?, host_id = ?, iface = ?
			WHERE id = ?`, p.Name, p.Description, p.MACAddress, b2i(p.AdminStateUp), p.DeviceOwner, p.DeviceID,
			b2i(p.PortSecurityEnabled), p.HostID, p.Interface, p.ID)
		if err != nil {
			return fmt.Errorf("update port %s: %w", id, constraintErr(err))
		}
		return nil
	})
	return p, err
}

// DeletePort deletes the port of project with, as upstream's port-delete
// callbacks do, the tap services on it (and their flows), the flows whose
// source it is and the tap mirrors on it. It returns what the cascade
// removed.
func (s *Store) DeletePort(ctx context.Context, project, id string) (Port, Deleted, error) {
	var (
		p Port
		d Deleted
	)
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if p, err = getPort(ctx, tx, project, id); err != nil {
			return err
		}
		if d.Services, err = refs(ctx, tx, `SELECT id, project_id FROM tap_services WHERE port_id = ?`, id); err != nil {
			return err
		}
		if d.Flows, err = refs(ctx, tx, `SELECT f.id, f.project_id FROM tap_flows f
			JOIN tap_services s ON s.id = f.tap_service_id
			WHERE f.source_port = ?1 OR s.port_id = ?1`, id); err != nil {
			return err
		}
		if d.Mirrors, err = refs(ctx, tx, `SELECT id, project_id FROM tap_mirrors WHERE port_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM ports WHERE id = ?`, id); err != nil {
			return fmt.Errorf("delete port %s: %w", id, err)
		}
		return nil
	})
	return p, d, err
}

func refs(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]Ref, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Ref
	for rows.Next() {
		var r Ref
		if err := rows.Scan(&r.ID, &r.ProjectID); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

const serviceCols = `id, project_id, name, description, port_id, status, status_reason, snaplen`

func scanService(sc interface{ Scan(...any) error }) (TapService, error) {
	var (
		t  TapService
		sl sql.NullInt64
	)
	err := sc.Scan(&t.ID, &t.ProjectID, &t.Name, &t.Description, &t.PortID, &t.Status, &t.StatusReason, &sl)
	t.Snaplen = intPtr(sl)
	return t, err
}

// nullInt and intPtr convert a nullable integer column (snaplen).
func nullInt(p *int) sql.NullInt64 {
	if p == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(*p), Valid: true}
}

func intPtr(n sql.NullInt64) *int {
	if !n.Valid {
		return nil
	}
	v := int(n.Int64)
	return &v
}

// nullString and strPtr convert a nullable text column (vlan_filter,
// filter).
func nullString(p *string) sql.NullString {
	if p == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: *p, Valid: true}
}

func strPtr(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

// ListTapServices returns the tap services of project in creation order.
func (s *Store) ListTapServices(ctx context.Context, project string) ([]TapService, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+serviceCols+` FROM tap_services
		WHERE ?1 = '' OR project_id = ?1 ORDER BY seq`, project)
	if err != nil {
		return nil, fmt.Errorf("list tap services: %w", err)
	}
	defer rows.Close()
	var out []TapService
	for rows.Next() {
		t, err := scanService(rows)
		if err != nil {
			return nil, fmt.Errorf("list tap services: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// GetTapService returns one tap service of project.
func (s *Store) GetTapService(ctx context.Context, project, id string) (TapService, error) {
	return getService(ctx, s.r, project, id)
}

func getService(ctx context.Context, q queryer, project, id string) (TapService, error) {
	t, err := scanService(q.QueryRowContext(ctx, `SELECT `+serviceCols+` FROM tap_services
		WHERE id = ?2 AND (?1 = '' OR project_id = ?1)`, project, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("get tap service %s: %w", id, err)
	}
	return t, nil
}

// CreateTapService inserts t in a transaction of its own (see
// Tx.CreateTapService).
func (s *Store) CreateTapService(ctx context.Context, t TapService, max int) error {
	return s.Write(ctx, func(tx *Tx) error { return tx.CreateTapService(t, max) })
}

// UpdateTapService reads the service, lets fn change it and writes name,
// description and snaplen back, in one transaction.
func (s *Store) UpdateTapService(ctx context.Context, project, id string, fn func(*TapService) error) (TapService, error) {
	var t TapService
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if t, err = getService(ctx, tx, project, id); err != nil {
			return err
		}
		if err := fn(&t); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tap_services SET name = ?, description = ?, snaplen = ? WHERE id = ?`,
			t.Name, t.Description, nullInt(t.Snaplen), t.ID); err != nil {
			return fmt.Errorf("update tap service %s: %w", id, err)
		}
		return nil
	})
	return t, err
}

// DeleteTapService deletes the service of project and its flows, which it
// returns.
func (s *Store) DeleteTapService(ctx context.Context, project, id string) (TapService, Deleted, error) {
	var (
		t TapService
		d Deleted
	)
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if t, err = getService(ctx, tx, project, id); err != nil {
			return err
		}
		if d.Flows, err = refs(ctx, tx, `SELECT id, project_id FROM tap_flows WHERE tap_service_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tap_services WHERE id = ?`, id); err != nil {
			return fmt.Errorf("delete tap service %s: %w", id, err)
		}
		return nil
	})
	return t, d, err
}

const flowCols = `id, project_id, name, description, tap_service_id, source_port, direction, vlan_filter,
	status, status_reason, filter`

func scanFlow(sc interface{ Scan(...any) error }) (TapFlow, error) {
	var (
		f          TapFlow
		vf, filter sql.NullString
	)
	err := sc.Scan(&f.ID, &f.ProjectID, &f.Name, &f.Description, &f.TapServiceID, &f.SourcePort, &f.Direction, &vf,
		&f.Status, &f.StatusReason, &filter)
	f.VLANFilter, f.Filter = strPtr(vf), strPtr(filter)
	return f, err
}

// ListTapFlows returns the tap flows of project in creation order.
func (s *Store) ListTapFlows(ctx context.Context, project string) ([]TapFlow, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+flowCols+` FROM tap_flows
		WHERE ?1 = '' OR project_id = ?1 ORDER BY seq`, project)
	if err != nil {
		return nil, fmt.Errorf("list tap flows: %w", err)
	}
	defer rows.Close()
	var out []TapFlow
	for rows.Next() {
		f, err := scanFlow(rows)
		if err != nil {
			return nil, fmt.Errorf("list tap flows: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// GetTapFlow returns one tap flow of project.
func (s *Store) GetTapFlow(ctx context.Context, project, id string) (TapFlow, error) {
	return getFlow(ctx, s.r, project, id)
}

func getFlow(ctx context.Context, q queryer, project, id string) (TapFlow, error) {
	f, err := scanFlow(q.QueryRowContext(ctx, `SELECT `+flowCols+` FROM tap_flows
		WHERE id = ?2 AND (?1 = '' OR project_id = ?1)`, project, id))
	if errors.Is(err, sql.ErrNoRows) {
		return f, ErrNotFound
	}
	if err != nil {
		return f, fmt.Errorf("get tap flow %s: %w", id, err)
	}
	return f, nil
}

// CreateTapFlow inserts f in a transaction of its own (see
// Tx.CreateTapFlow).
func (s *Store) CreateTapFlow(ctx context.Context, f TapFlow) error {
	return s.Write(ctx, func(tx *Tx) error { return tx.CreateTapFlow(f) })
}

// UpdateTapFlow reads the flow, lets fn change it and writes name and
// description back, in one transaction.
func (s *Store) UpdateTapFlow(ctx context.Context, project, id string, fn func(*TapFlow) error) (TapFlow, error) {
	var f TapFlow
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if f, err = getFlow(ctx, tx, project, id); err != nil {
			return err
		}
		if err := fn(&f); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tap_flows SET name = ?, description = ? WHERE id = ?`,
			f.Name, f.Description, f.ID); err != nil {
			return fmt.Errorf("update tap flow %s: %w", id, err)
		}
		return nil
	})
	return f, err
}

// DeleteTapFlow deletes the flow of project.
func (s *Store) DeleteTapFlow(ctx context.Context, project, id string) (TapFlow, error) {
	var f TapFlow
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if f, err = getFlow(ctx, tx, project, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tap_flows WHERE id = ?`, id); err != nil {
			return fmt.Errorf("delete tap flow %s: %w", id, err)
		}
		return nil
	})
	return f, err
}
