package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Quota resources, named as Neutron's quota engine names them (the keys of
// {"quota": {...}} and of the OverQuota message).
const (
	QuotaNetwork    = "network"
	QuotaPort       = "port"
	QuotaTapService = "tap_service"
	QuotaTapFlow    = "tap_flow"
	QuotaTapMirror  = "tap_mirror"
)

// QuotaResources lists every quota resource in the order answers list them.
var QuotaResources = []string{QuotaNetwork, QuotaPort, QuotaTapService, QuotaTapFlow, QuotaTapMirror}

// Limits maps a quota resource to its limit; -1 is unlimited.
type Limits map[string]int

// Count returns how many rows of resource project has, the rows this
// transaction inserted included: quota_usages, which triggers keep.
func (t *Tx) Count(resource, project string) (int, error) {
	return count(t.ctx, t.tx, resource, project)
}

// QuotaOverrides returns the limits set for project; resources without an
// override are absent.
//
// Every create reads them in its write transaction, and they seldom
// change: the writer keeps them per project (a query per create cost
// about 15 us of the writer's time, issue 10). Only SetQuotas and
// DeleteQuotas change them; they empty the memo and keep it unused until
// their transaction has ended, committed or not, so a read sees what an
// earlier write of the same transaction did and the memo never holds what
// was rolled back.
func (t *Tx) QuotaOverrides(project string) (Limits, error) {
	s := t.s
	if s.d == postgresDialect {
		// Other taasd change them too: read them in the transaction,
		// where SERIALIZABLE sees a concurrent change.
		return overrides(t.ctx, t.tx, project)
	}
	if !s.quotaDirty {
		if l, ok := s.quotaMemo[project]; ok {
			return maps.Clone(l), nil
		}
	}
	l, err := overrides(t.ctx, t.tx, project)
	if err != nil || s.quotaDirty {
		return l, err
	}
	if len(s.quotaMemo) >= maxQuotaMemo {
		clear(s.quotaMemo)
	}
	s.quotaMemo[project] = maps.Clone(l)
	return l, nil
}

// maxQuotaMemo bounds the projects whose overrides the writer keeps.
const maxQuotaMemo = 4096

// changeQuotas marks the transaction under way as one that changes the
// quotas (QuotaOverrides).
func (t *Tx) changeQuotas() {
	t.s.quotaDirty = true
	clear(t.s.quotaMemo)
}

// Usage returns, per quota resource, how many rows project has.
func (s *Store) Usage(ctx context.Context, project string) (map[string]int, error) {
	out := map[string]int{}
	for _, r := range QuotaResources {
		n, err := count(ctx, s.r, r, project)
		if err != nil {
			return nil, err
		}
		out[r] = n
	}
	return out, nil
}

// QuotaOverrides returns the limits set for project.
func (s *Store) QuotaOverrides(ctx context.Context, project string) (Limits, error) {
	return overrides(ctx, s.r, project)
}

// ListQuotaOverrides returns the overrides of every project that has one,
// by project, and the projects in order.
func (s *Store) ListQuotaOverrides(ctx context.Context) (map[string]Limits, []string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT project_id, resource, hard_limit FROM quotas ORDER BY project_id, resource`)
	if err != nil {
		return nil, nil, fmt.Errorf("list quotas: %w", err)
	}
	defer rows.Close()
	out := map[string]Limits{}
	var order []string
	for rows.Next() {
		var (
			project, resource string
			limit             int
		)
		if err := rows.Scan(&project, &resource, &limit); err != nil {
			return nil, nil, fmt.Errorf("list quotas: %w", err)
		}
		if out[project] == nil {
			out[project] = Limits{}
			order = append(order, project)
		}
		out[project][resource] = limit
	}
	return out, order, rows.Err()
}

// SetQuotas sets the overrides of project for the resources in l, in one
// transaction. A non-nil check is called with each resource, its new limit
// and what project uses of it; its error aborts the update.
func (s *Store) SetQuotas(ctx context.Context, project string, l Limits, check func(resource string, limit, used int) error) error {
	return s.Write(ctx, func(tx *Tx) error {
		tx.changeQuotas()
		for _, r := range QuotaResources {
			limit, ok := l[r]
			if !ok {
				continue
			}
			if check != nil {
				used, err := tx.Count(r, project)
				if err != nil {
					return err
				}
				if err := check(r, limit, used); err != nil {
					return err
				}
			}
			if _, err := tx.tx.ExecContext(tx.ctx, `INSERT INTO quotas (project_id, resource, hard_limit) VALUES (?, ?, ?)
				ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit`, project, r, limit); err != nil {
				return fmt.Errorf("set quota %s of %s: %w", r, project, err)
			}
		}
		return nil
	})
}

// DeleteQuotas removes every override of project, which gets the defaults
// back. ErrNotFound: project had none.
func (s *Store) DeleteQuotas(ctx context.Context, project string) error {
	return s.Write(ctx, func(t *Tx) error {
		t.changeQuotas()
		res, err := t.tx.ExecContext(t.ctx, `DELETE FROM quotas WHERE project_id = ?`, project)
		if err != nil {
			return fmt.Errorf("delete quotas of %s: %w", project, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("delete quotas of %s: %w", project, err)
		} else if n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

func count(ctx context.Context, q queryer, resource, project string) (int, error) {
	if !slices.Contains(QuotaResources, resource) {
		return 0, fmt.Errorf("count %s: not a quota resource", resource)
	}
	var n int
	err := q.QueryRowContext(ctx, `SELECT in_use FROM quota_usages WHERE project_id = ? AND resource = ?`,
		project, resource).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("count %s of %s: %w", resource, project, err)
	}
	return n, nil
}

func overrides(ctx context.Context, q queryer, project string) (Limits, error) {
	rows, err := q.QueryContext(ctx, `SELECT resource, hard_limit FROM quotas WHERE project_id = ?`, project)
	if err != nil {
		return nil, fmt.Errorf("quotas of %s: %w", project, err)
	}
	defer rows.Close()
	l := Limits{}
	for rows.Next() {
		var (
			r string
			n int
		)
		if err := rows.Scan(&r, &n); err != nil {
			return nil, fmt.Errorf("quotas of %s: %w", project, err)
		}
		l[r] = n
	}
	return l, rows.Err()
}
