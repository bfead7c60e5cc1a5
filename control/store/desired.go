package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
)

// DesiredService is a tap service with what the data plane needs of its
// port.
type DesiredService struct {
	ID        string
	Name      string
	ProjectID string
	PortID    string
	Iface     string
	HostID    string // the port's binding:host_id: its node (issue 14)
	PortUp    bool   // the port's admin_state_up
	Snaplen   int    // 0 for null
	Status    Status
}

// DesiredFlow is a tap flow with what the data plane needs of its source
// port.
type DesiredFlow struct {
	ID           string
	Name         string
	ProjectID    string
	ServiceID    string
	SourcePortID string
	Iface        string
	HostID       string // the source port's binding:host_id
	PortUp       bool   // the source port's admin_state_up
	MAC          string
	Direction    string
	VLANFilter   string // "" for null
	Filter       string // "" for null
	Status       Status
}

// DesiredMirror is a tap mirror with what the data plane needs of its
// port.
type DesiredMirror struct {
	ID         string
	Name       string
	ProjectID  string
	PortID     string
	Iface      string
	HostID     string // the port's binding:host_id
	PortUp     bool   // the port's admin_state_up
	MAC        string
	Directions Directions
	RemoteIP   string
	MirrorType string
	Snaplen    int // 0 for null
	Status     Status
}

// DesiredState is everything the data plane should realise, read at one
// point in time.
type DesiredState struct {
	Services []DesiredService
	Flows    []DesiredFlow
	Mirrors  []DesiredMirror
}

// Status is a realisation status as stored next to a service or flow.
type Status struct {
	State  string // ACTIVE, DOWN or ERROR
	Reason string
}

// Desired reads the whole desired state in one read transaction, so the
// plan built from it is consistent.
func (s *Store) Desired(ctx context.Context) (DesiredState, error) {
	var d DesiredState
	tx, err := s.r.BeginTx(ctx, s.d.readTx())
	if err != nil {
		return d, fmt.Errorf("read desired state: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	err = scanAll(ctx, tx, &d.Services, `SELECT s.id, s.name, s.project_id, s.port_id, p.iface, p.host_id, p.admin_state_up, coalesce(s.snaplen, 0),
		s.status, s.status_reason
		FROM tap_services s JOIN ports p ON p.id = s.port_id ORDER BY s.seq`,
		func(sc scanner, x *DesiredService) error {
			return sc.Scan(&x.ID, &x.Name, &x.ProjectID, &x.PortID, &x.Iface, &x.HostID, &x.PortUp, &x.Snaplen, &x.Status.State, &x.Status.Reason)
		})
	if err != nil {
		return d, fmt.Errorf("read desired services: %w", err)
	}
	// Flows are joined to their source ports here, from one read of
	// the ports in use: every pass of a burst of creates reads every flow,
	// and the join's two index searches a row, with a slice grown from
	// nothing, made that read a third dearer (issue 10, BenchmarkDesired).
	type src struct {
		id, iface, mac, host string
		up                   bool
	}
	var srcs []src
	err = scanAll(ctx, tx, &srcs, `SELECT id, iface, mac_address, host_id, admin_state_up FROM ports
		WHERE id IN (SELECT source_port FROM tap_flows)`,
		func(sc scanner, x *src) error { return sc.Scan(&x.id, &x.iface, &x.mac, &x.host, &x.up) })
	if err != nil {
		return d, fmt.Errorf("read source ports: %w", err)
	}
	bySrc := make(map[string]*src, len(srcs))
	for i := range srcs {
		bySrc[srcs[i].id] = &srcs[i]
	}
	d.Flows = make([]DesiredFlow, 0, s.desiredFlows.Load())
	err = scanAll(ctx, tx, &d.Flows, `SELECT id, name, project_id, tap_service_id, source_port, direction,
		coalesce(vlan_filter, ''), coalesce(filter, ''), status, status_reason FROM tap_flows ORDER BY seq`,
		func(sc scanner, x *DesiredFlow) error {
			if err := sc.Scan(&x.ID, &x.Name, &x.ProjectID, &x.ServiceID, &x.SourcePortID, &x.Direction,
				&x.VLANFilter, &x.Filter, &x.Status.State, &x.Status.Reason); err != nil {
				return err
			}
			if p := bySrc[x.SourcePortID]; p != nil {
				x.Iface, x.MAC, x.HostID, x.PortUp = p.iface, p.mac, p.host, p.up
			}
			return nil
		})
	if err != nil {
		return d, fmt.Errorf("read desired flows: %w", err)
	}
	// The foreign key keeps every source port; were one missing, the flow
	// would be left out, as a join would.
	d.Flows = slices.DeleteFunc(d.Flows, func(f DesiredFlow) bool { return bySrc[f.SourcePortID] == nil })
	s.desiredFlows.Store(int64(len(d.Flows)))
	err = scanAll(ctx, tx, &d.Mirrors, `SELECT m.id, m.name, m.project_id, m.port_id, p.iface, p.host_id, p.admin_state_up, p.mac_address,
		m.directions, m.remote_ip, m.mirror_type, coalesce(m.snaplen, 0), m.status, m.status_reason
		FROM tap_mirrors m JOIN ports p ON p.id = m.port_id ORDER BY m.seq`,
		func(sc scanner, x *DesiredMirror) error {
			var dirs []byte
			if err := sc.Scan(&x.ID, &x.Name, &x.ProjectID, &x.PortID, &x.Iface, &x.HostID, &x.PortUp, &x.MAC, &dirs, &x.RemoteIP,
				&x.MirrorType, &x.Snaplen, &x.Status.State, &x.Status.Reason); err != nil {
				return err
			}
			return x.Directions.UnmarshalJSON(dirs)
		})
	if err != nil {
		return d, fmt.Errorf("read desired tap mirrors: %w", err)
	}
	return d, nil
}

// scanner is what *sql.Row and *sql.Rows share.
type scanner interface{ Scan(...any) error }

// scanAll appends to out one T per row of query, filled by scan.
func scanAll[T any](ctx context.Context, q queryer, out *[]T, query string, scan func(scanner, *T) error) error {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var x T
		if err := scan(rows, &x); err != nil {
			return err
		}
		*out = append(*out, x)
	}
	return rows.Err()
}

// SetStatuses writes the given statuses in one transaction. Rows deleted
// meanwhile are skipped: their status no longer matters.
//
// It runs one UPDATE per distinct status and table, over the ids as a JSON
// array: after a burst of creates a pass finds hundreds of new flows that
// all take the same status, and one statement per row held the writer,
// and the API's creates committing with it, about 12 us a row (issue 10).
func (s *Store) SetStatuses(ctx context.Context, services, flows, mirrors map[string]Status) error {
	_, err := s.SetOwnStatuses(ctx, nil, services, flows, mirrors)
	return err
}

// SetOwnStatuses is SetStatuses for a node of a fleet (issue 14): a row is
// written only if its port (a flow's source port) is bound, when the
// statement runs, to one of nodes (binding:host_id values; nil writes
// every row). Ownership is so checked in the statement that writes, not
// by the pass that computed the status: a pass that read the desired state
// before a port moved to another node must not write its stale status over
// that node's. It returns the ids of the rows it wrote, so that the caller
// announces those statuses only: a row it skipped holds another node's.
func (s *Store) SetOwnStatuses(ctx context.Context, nodes []string, services, flows, mirrors map[string]Status) (map[string]bool, error) {
	if len(services) == 0 && len(flows) == 0 && len(mirrors) == 0 {
		return map[string]bool{}, nil
	}
	var written map[string]bool
	// A status write does not change what any data plane should realise:
	// other taasd are not woken for it (notify.go).
	err := s.write(ctx, statusChange, func(t *Tx) error {
		ctx, tx := t.ctx, t.tx
		written = map[string]bool{} // anew: on PostgreSQL fn may run again
		if err := setStatuses(ctx, tx, s.d, "tap_services", "port_id", nodes, services, written); err != nil {
			return fmt.Errorf("set status of tap services: %w", err)
		}
		if err := setStatuses(ctx, tx, s.d, "tap_flows", "source_port", nodes, flows, written); err != nil {
			return fmt.Errorf("set status of tap flows: %w", err)
		}
		if err := setStatuses(ctx, tx, s.d, "tap_mirrors", "port_id", nodes, mirrors, written); err != nil {
			return fmt.Errorf("set status of tap mirrors: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return written, nil
}

// setStatuses sets the status of the rows of table named by ids; with
// nodes, only of those whose port (column portCol) is bound to one of them.
// It adds the id of each row it wrote to written.
func setStatuses(ctx context.Context, tx *sql.Tx, d dialect, table, portCol string, nodes []string, ids map[string]Status,
	written map[string]bool) error {
	owned := ""
	args := []any{nil, nil, nil}
	if nodes != nil {
		list, err := json.Marshal(nodes)
		if err != nil {
			return err
		}
		owned = ` AND (SELECT p.host_id FROM ports p WHERE p.id = ` + table + `.` + portCol + `) IN (` + d.idsIn("?") + `)`
		args = append(args, string(list))
	}
	byStatus := map[Status][]string{}
	for id, st := range ids {
		byStatus[st] = append(byStatus[st], id)
	}
	for st, ids := range byStatus {
		list, err := json.Marshal(ids)
		if err != nil {
			return err
		}
		args[0], args[1], args[2] = st.State, st.Reason, string(list)
		done, err := queryStrings(ctx, tx, `UPDATE `+table+` SET status = ?, status_reason = ?
			WHERE id IN (`+d.idsIn("?")+`)`+owned+` RETURNING id`, args...)
		if err != nil {
			return err
		}
		for _, id := range done {
			written[id] = true
		}
	}
	return nil
}
