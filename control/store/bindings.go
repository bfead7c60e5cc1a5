package store

import (
	"context"
	"encoding/json"
	"fmt"
)

// BoundInterfaces returns the interfaces in use in role, across every
// project: of tap services' ports (monitors, services true) or of tap
// flows' source ports and tap mirrors' ports (captures), of the ports
// on hosts (binding:host_id; nil: every port, as on a single appliance,
// which realises them all). Control checks a
// new binding or use against them for loops, inside the write transaction
// (and so only there: through the read pool a check would miss the
// uncommitted writes of its own batch, issue 10's review). The query walks
// the ports, not the flows: a create must not cost more with every flow.
func (t *Tx) BoundInterfaces(hosts []string, services bool) ([]string, error) {
	use := `SELECT 1 FROM tap_flows f WHERE f.source_port = p.id
		UNION ALL SELECT 1 FROM tap_mirrors m WHERE m.port_id = p.id`
	if services {
		use = `SELECT 1 FROM tap_services t WHERE t.port_id = p.id`
	}
	where, args := onHosts(t.s.d, hosts)
	out, err := queryStrings(t.ctx, t.tx, `SELECT DISTINCT p.iface FROM ports p WHERE p.iface != ''`+where+
		` AND EXISTS (`+use+`) ORDER BY p.iface`, args...)
	if err != nil {
		return nil, fmt.Errorf("list bound interfaces: %w", err)
	}
	return out, nil
}

// PortUse counts, across every project, the tap services on port id and
// its uses as a source: the tap flows whose source it is and the tap
// mirrors on it (both need the port on a capture interface). Like
// BoundInterfaces it exists only inside the transaction: a rebinding
// checked against the last commit would miss a use added earlier in its
// batch.
func (t *Tx) PortUse(id string) (services, sources int, err error) {
	err = t.tx.QueryRowContext(t.ctx, `SELECT (SELECT count(*) FROM tap_services WHERE port_id = ?1),
		(SELECT count(*) FROM tap_flows WHERE source_port = ?1) + (SELECT count(*) FROM tap_mirrors WHERE port_id = ?1)`,
		id).Scan(&services, &sources)
	if err != nil {
		return 0, 0, fmt.Errorf("count uses of port %s: %w", id, err)
	}
	return services, sources, nil
}

// InterfaceFilters counts, across every project, the distinct filter
// expressions of the tap flows whose source ports are bound to iface on
// hosts (as BoundInterfaces), and
// reports whether expr is one of them: the fast path of a capture
// interface holds a bounded number (xdpprog.MaxFastFilters). Like
// PortUse it exists only inside the transaction, so two creates of one
// batch cannot both take the last place.
func (t *Tx) InterfaceFilters(hosts []string, iface, expr string) (n int, has bool, err error) {
	where, args := onHosts(t.s.d, hosts)
	err = t.tx.QueryRowContext(t.ctx, `SELECT count(DISTINCT f.filter), coalesce(max(CASE WHEN f.filter = ? THEN 1 ELSE 0 END), 0)
		FROM ports p JOIN tap_flows f ON f.source_port = p.id
		WHERE p.iface = ? AND f.filter IS NOT NULL`+where, append([]any{expr, iface}, args...)...).Scan(&n, &has)
	if err != nil {
		return 0, false, fmt.Errorf("count filters on interface %s: %w", iface, err)
	}
	return n, has, nil
}

// FiltersWith counts the distinct filter expressions of the tap flows
// whose source ports are bound to iface on hosts (as InterfaceFilters),
// port's aside (without), and those with the filters of port's flows
// (with): what the capture interface's fast path holds once port is
// bound there. Like PortUse it exists only inside the transaction.
func (t *Tx) FiltersWith(hosts []string, iface, port string) (without, with int, err error) {
	where, args := onHosts(t.s.d, hosts)
	err = t.tx.QueryRowContext(t.ctx, `SELECT count(DISTINCT CASE WHEN p.id <> ? THEN f.filter END), count(DISTINCT f.filter)
		FROM ports p JOIN tap_flows f ON f.source_port = p.id
		WHERE f.filter IS NOT NULL AND (p.id = ? OR p.iface = ?`+where+`)`,
		append([]any{port, port, iface}, args...)...).Scan(&without, &with)
	if err != nil {
		return 0, 0, fmt.Errorf("count filters on interface %s with port %s: %w", iface, port, err)
	}
	return without, with, nil
}

// onHosts is the condition, on ports p, of a port bound to one of hosts
// (binding:host_id), and its argument: none for nil (every port).
func onHosts(d dialect, hosts []string) (string, []any) {
	if hosts == nil {
		return "", nil
	}
	list, _ := json.Marshal(hosts) // a []string always encodes
	return ` AND p.host_id IN (` + d.idsIn("?") + `)`, []any{string(list)}
}

func queryStrings(ctx context.Context, q queryer, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
