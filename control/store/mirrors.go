package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// TapMirror is upstream's tap mirror (taas-api.md section 5): the traffic
// of a port, per direction, encapsulated to RemoteIP. It has no status:
// upstream has none, and the reconciler keeps the data plane's in memory.
type TapMirror struct {
	ID          string
	ProjectID   string
	Name        string
	Description string
	PortID      string
	Directions  Directions
	// RemoteIP is the collector's address as the API accepted it.
	RemoteIP string
	// MirrorType is gre, erspanv1 (upstream's), erspanv3 or vxlan.
	MirrorType string
	// Snaplen truncates the inner frames to so many bytes; nil (the
	// API's null) carries whole frames.
	Snaplen *int
	// Status and StatusReason are the data plane's, written by the
	// reconciler (SetStatuses); a new mirror is DOWN.
	Status       string
	StatusReason string
}

// MirrorTunnel is one key of a tap mirror's directions and its tunnel id
// exactly as the API received it: a JSON integer (101) or a numeric string
// ("101"), which upstream echoes as sent and never confuses with each other.
type MirrorTunnel struct {
	Direction string          // IN, OUT or BOTH
	ID        json.RawMessage // compact JSON value
}

// Directions are a tap mirror's directions in the order they were given.
// They marshal to, and unmarshal from, the JSON object of the API, with each
// value kept raw. A key given twice keeps its first place and its last value,
// as Python's json (upstream) does.
type Directions []MirrorTunnel

// MarshalJSON writes the object, keys in order; nil is {}.
func (d Directions) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, t := range d {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(t.Direction)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		if !json.Valid(t.ID) {
			return nil, fmt.Errorf("directions: %s: value %q is not JSON", t.Direction, t.ID)
		}
		if err := json.Compact(&b, t.ID); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads a JSON object keeping its keys' order and each value
// raw (compacted). It checks the shape only: which keys and values the API
// accepts is the API's business.
func (d *Directions) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("directions: %w", err)
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '{' {
		return errors.New("directions: not a JSON object")
	}
	out := Directions{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("directions: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("directions: key is not a string")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("directions: %s: %w", key, err)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, raw); err != nil {
			return fmt.Errorf("directions: %s: %w", key, err)
		}
		t := MirrorTunnel{Direction: key, ID: c.Bytes()}
		if i := out.index(key); i >= 0 {
			out[i] = t
		} else {
			out = append(out, t)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return fmt.Errorf("directions: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("directions: data after the object")
	}
	*d = out
	return nil
}

func (d Directions) index(key string) int {
	for i, t := range d {
		if t.Direction == key {
			return i
		}
	}
	return -1
}

// Text is the tunnel id as upstream's messages print it: a string without
// its quotes, a number as written.
func (t MirrorTunnel) Text() string {
	var s string
	if json.Unmarshal(t.ID, &s) == nil {
		return s
	}
	return string(t.ID)
}

// Uint32 is the tunnel id as the data plane uses it (GRE key, ERSPAN
// session, VXLAN VNI): a JSON integer or a string holding one, from 0 to
// 2^32-1, as Python's int() reads it: -0 (and "-0", "-00") is 0. Narrower
// fields are the data plane's to check. Conflicts still compare the ids
// as sent, so -0 and 0 are two ids there, as upstream.
func (t MirrorTunnel) Uint32() (uint32, error) {
	text := string(t.ID)
	var s string
	if json.Unmarshal(t.ID, &s) == nil {
		// Upstream converts with Python's int(), which allows blanks and a
		// plus sign around the digits.
		text = strings.TrimPrefix(strings.TrimSpace(s), "+")
	}
	if len(text) > 1 && text[0] == '-' && strings.Trim(text[1:], "0") == "" {
		text = "0"
	}
	n, err := strconv.ParseUint(text, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("tunnel id %s of direction %s: not an integer from 0 to %d", t.Text(), t.Direction, uint32(1<<32-1))
	}
	return uint32(n), nil
}

// TunnelConflictError refuses a tap mirror one of whose tunnel ids a tap
// mirror visible to the creator already uses, in any direction (upstream's
// TapMirrorTunnelConflict). It is ErrConflict.
type TunnelConflictError struct {
	// MirrorID is the mirror that has the tunnel id.
	MirrorID string
	// Tunnel is its direction and id, as stored.
	Tunnel MirrorTunnel
}

func (e *TunnelConflictError) Error() string {
	return fmt.Sprintf("tunnel id %s in use by tap mirror %s", e.Tunnel.ID, e.MirrorID)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *TunnelConflictError) Unwrap() error { return ErrConflict }

const mirrorCols = `id, project_id, name, description, port_id, directions, remote_ip, mirror_type, snaplen`

// mirrorReadCols are mirrorCols and the status the reconciler writes.
const mirrorReadCols = mirrorCols + `, status, status_reason`

func scanMirror(sc interface{ Scan(...any) error }) (TapMirror, error) {
	var (
		m    TapMirror
		dirs []byte
		sl   sql.NullInt64
	)
	if err := sc.Scan(&m.ID, &m.ProjectID, &m.Name, &m.Description, &m.PortID, &dirs, &m.RemoteIP, &m.MirrorType, &sl,
		&m.Status, &m.StatusReason); err != nil {
		return m, err
	}
	m.Snaplen = intPtr(sl)
	if err := m.Directions.UnmarshalJSON(dirs); err != nil {
		return m, fmt.Errorf("tap mirror %s: %w", m.ID, err)
	}
	return m, nil
}

// ListTapMirrors returns the tap mirrors of project in creation order.
func (s *Store) ListTapMirrors(ctx context.Context, project string) ([]TapMirror, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+mirrorReadCols+` FROM tap_mirrors
		WHERE ?1 = '' OR project_id = ?1 ORDER BY seq`, project)
	if err != nil {
		return nil, fmt.Errorf("list tap mirrors: %w", err)
	}
	defer rows.Close()
	var out []TapMirror
	for rows.Next() {
		m, err := scanMirror(rows)
		if err != nil {
			return nil, fmt.Errorf("list tap mirrors: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// GetTapMirror returns one tap mirror of project.
func (s *Store) GetTapMirror(ctx context.Context, project, id string) (TapMirror, error) {
	return getMirror(ctx, s.r, project, id)
}

// GetTapMirror returns one tap mirror of project.
func (t *Tx) GetTapMirror(project, id string) (TapMirror, error) {
	return getMirror(t.ctx, t.tx, project, id)
}

func getMirror(ctx context.Context, q queryer, project, id string) (TapMirror, error) {
	m, err := scanMirror(q.QueryRowContext(ctx, `SELECT `+mirrorReadCols+` FROM tap_mirrors
		WHERE id = ?2 AND (?1 = '' OR project_id = ?1)`, project, id))
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("get tap mirror %s: %w", id, err)
	}
	return m, nil
}

// CreateTapMirror inserts m in a transaction of its own (see
// Tx.CreateTapMirror).
func (s *Store) CreateTapMirror(ctx context.Context, m TapMirror, scope string) error {
	return s.Write(ctx, func(tx *Tx) error { return tx.CreateTapMirror(m, scope) })
}

// CreateTapMirror inserts m unless a tap mirror visible in scope (the
// creator's project; "" for an admin: every project) already uses one of
// its tunnel ids, in any direction: that is a *TunnelConflictError. Ids
// compare as upstream compares them, raw: 101 and "101" differ, and one
// mirror may use an id twice. The check is an index lookup (migration
// 0007's tap_mirror_tunnels), and runs in the transaction that
// inserts, so two concurrent creates cannot both pass it. A port that does
// not exist is ErrNotFound.
func (t *Tx) CreateTapMirror(m TapMirror, scope string) error {
	dirs, err := m.Directions.MarshalJSON()
	if err != nil {
		return fmt.Errorf("insert tap mirror: %w", err)
	}
	var (
		c     TunnelConflictError
		jtype string
		atom  string
	)
	// One index lookup per new id in tap_mirror_tunnels (migration 0007),
	// however many mirrors the scope holds.
	ids, hint := t.s.d.tunnelsOf("?2")
	err = t.tx.QueryRowContext(t.ctx, `SELECT m.id, e.direction, e.type, CAST(e.atom AS TEXT)
		FROM `+ids+` n JOIN tap_mirror_tunnels e`+hint+` ON e.type = n.type AND e.atom = n.atom
		JOIN tap_mirrors m ON m.seq = e.mirror_seq
		WHERE ?1 = '' OR e.project_id = ?1
		ORDER BY e.mirror_seq LIMIT 1`, scope, dirs).Scan(&c.MirrorID, &c.Tunnel.Direction, &jtype, &atom)
	switch {
	case err == nil:
		c.Tunnel.ID = json.RawMessage(atom)
		if jtype == "text" {
			if c.Tunnel.ID, err = json.Marshal(atom); err != nil {
				return err
			}
		}
		return &c
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("check tunnel ids of tap mirror: %w", err)
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO tap_mirrors (`+mirrorCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.ProjectID, m.Name, m.Description, m.PortID, dirs, m.RemoteIP, m.MirrorType, nullInt(m.Snaplen))
	if err != nil {
		return fmt.Errorf("insert tap mirror: %w", constraintErr(err))
	}
	return nil
}

// UpdateTapMirror reads the mirror, lets fn change it and writes name and
// description (the only attributes upstream updates) and snaplen (ours)
// back, in one transaction.
func (s *Store) UpdateTapMirror(ctx context.Context, project, id string, fn func(*TapMirror) error) (TapMirror, error) {
	var m TapMirror
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if m, err = getMirror(ctx, tx, project, id); err != nil {
			return err
		}
		if err := fn(&m); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tap_mirrors SET name = ?, description = ?, snaplen = ? WHERE id = ?`,
			m.Name, m.Description, nullInt(m.Snaplen), m.ID); err != nil {
			return fmt.Errorf("update tap mirror %s: %w", id, err)
		}
		return nil
	})
	return m, err
}

// DeleteTapMirror deletes the mirror of project.
func (s *Store) DeleteTapMirror(ctx context.Context, project, id string) (TapMirror, error) {
	var m TapMirror
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if m, err = getMirror(ctx, tx, project, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tap_mirrors WHERE id = ?`, id); err != nil {
			return fmt.Errorf("delete tap mirror %s: %w", id, err)
		}
		return nil
	})
	return m, err
}
