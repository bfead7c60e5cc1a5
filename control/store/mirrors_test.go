package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
)

// dirs parses a directions object for the tests.
func dirs(t testing.TB, s string) Directions {
	t.Helper()
	var d Directions
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		t.Fatalf("Directions %s: %v", s, err)
	}
	return d
}

// mirrorPorts opens a store with ports p0..p(n-1) in project.
func mirrorPorts(t *testing.T, project string, n int) *Store {
	t.Helper()
	s := open(t, testDB(t))
	for i := range n {
		if err := s.CreatePort(context.Background(), Port{ID: fmt.Sprint(project, "p", i), ProjectID: project,
			NetworkID: defaultNetwork, MACAddress: fmt.Sprintf("fa:16:3e:00:01:%02x", i), Interface: "cap0"}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// TestTapMirrors: a mirror reads back with its directions in the order and
// the JSON types they were given, is scoped to its project, updates name
// and description only, and goes with its port.
func TestTapMirrors(t *testing.T) {
	ctx := context.Background()
	s := mirrorPorts(t, "a", 2)
	m := TapMirror{ID: "m1", ProjectID: "a", Name: "n", Description: "d", PortID: "ap0",
		Directions: dirs(t, `{"OUT": "102", "IN": 101, "BOTH": " 7"}`), RemoteIP: "2001:db8::1", MirrorType: "erspanv1"}
	if err := s.CreateTapMirror(ctx, m, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTapMirror(ctx, TapMirror{ID: "m2", ProjectID: "a", PortID: "ap1", RemoteIP: "192.0.2.1",
		MirrorType: "gre"}, "a"); err != nil {
		t.Fatalf("mirror with no directions: %v", err)
	}
	if err := s.CreateTapMirror(ctx, TapMirror{ID: "m3", ProjectID: "a", PortID: "gone", RemoteIP: "192.0.2.1",
		MirrorType: "gre"}, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("mirror on a missing port: %v, want ErrNotFound", err)
	}
	got, err := s.GetTapMirror(ctx, "a", "m1")
	if err != nil {
		t.Fatal(err)
	}
	want := m
	want.Status = "DOWN" // until the reconciler writes one
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetTapMirror = %+v, want %+v", got, want)
	}
	if b, err := json.Marshal(got.Directions); err != nil || string(b) != `{"OUT":"102","IN":101,"BOTH":" 7"}` {
		t.Errorf("directions marshal to %s %v", b, err)
	}
	if _, err := s.GetTapMirror(ctx, "b", "m1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("project b reads a's mirror: %v, want ErrNotFound", err)
	}
	for project, want := range map[string]int{"a": 2, "": 2, "b": 0} {
		if ms, err := s.ListTapMirrors(ctx, project); err != nil || len(ms) != want {
			t.Errorf("ListTapMirrors(%q) = %d mirrors %v, want %d", project, len(ms), err, want)
		}
	}
	up, err := s.UpdateTapMirror(ctx, "a", "m1", func(m *TapMirror) error {
		m.Name, m.Description, m.RemoteIP = "n2", "d2", "198.51.100.1"
		return nil
	})
	if err != nil || up.Name != "n2" {
		t.Fatalf("UpdateTapMirror = %+v %v", up, err)
	}
	if got, _ := s.GetTapMirror(ctx, "", "m1"); got.Name != "n2" || got.Description != "d2" || got.RemoteIP != m.RemoteIP {
		t.Errorf("after update: %+v, want name and description changed, remote_ip kept", got)
	}
	if _, err := s.UpdateTapMirror(ctx, "b", "m1", func(*TapMirror) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("project b updates a's mirror: %v, want ErrNotFound", err)
	}
	if u, _ := s.Usage(ctx, "a"); u[QuotaTapMirror] != 2 {
		t.Errorf("usage = %v, want 2 tap mirrors", u)
	}
	_, d, err := s.DeletePort(ctx, "a", "ap0")
	if err != nil || len(d.Mirrors) != 1 || d.Mirrors[0] != (Ref{"m1", "a"}) {
		t.Errorf("DeletePort = %+v %v, want mirror m1 removed", d, err)
	}
	if _, err := s.GetTapMirror(ctx, "a", "m1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("mirror of a deleted port: %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteTapMirror(ctx, "b", "m2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("project b deletes a's mirror: %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteTapMirror(ctx, "a", "m2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPort(ctx, "a", "ap1"); err != nil {
		t.Errorf("the port of a deleted mirror: %v, want it kept", err)
	}
	if u, _ := s.Usage(ctx, "a"); u[QuotaTapMirror] != 0 {
		t.Errorf("usage = %v, want no tap mirrors", u)
	}
}

// TestTunnelConflict: a tunnel id already used by a mirror the creator can
// see, in any direction, is refused with the id as stored; ids compare
// raw, and other projects' mirrors never conflict.
func TestTunnelConflict(t *testing.T) {
	ctx := context.Background()
	s := mirrorPorts(t, "a", 3)
	if err := s.CreatePort(ctx, Port{ID: "bp0", ProjectID: "b", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:02:00"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []TapMirror{
		{ID: "a1", ProjectID: "a", PortID: "ap0", Directions: dirs(t, `{"IN": 101}`)},
		{ID: "a2", ProjectID: "a", PortID: "ap0", Directions: dirs(t, `{"IN": 5, "OUT": "102"}`)},
		{ID: "b1", ProjectID: "b", PortID: "bp0", Directions: dirs(t, `{"BOTH": 103}`)},
	} {
		m.RemoteIP, m.MirrorType = "192.0.2.9", "gre"
		if err := s.CreateTapMirror(ctx, m, m.ProjectID); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range []struct {
		name       string
		project    string
		scope      string
		directions string
		mirror     string // the conflicting mirror, "" for none
		tunnel     string // its tunnel as stored
		text       string // as the 409 message prints it
	}{
		{"same id other direction", "a", "a", `{"OUT": 101}`, "a1", `101`, "101"},
		{"string does not match int", "a", "a", `{"IN": "101"}`, "", "", ""},
		{"int does not match string", "a", "a", `{"IN": 102}`, "", "", ""},
		{"string matches string", "a", "a", `{"BOTH": "102"}`, "a2", `"102"`, "102"},
		{"second key conflicts", "a", "a", `{"IN": 1, "OUT": 5}`, "a2", `5`, "5"},
		{"one id twice in one mirror", "a", "a", `{"IN": 7, "OUT": 7}`, "", "", ""},
		{"other project's id", "a", "a", `{"IN": 103}`, "", "", ""},
		{"other project reuses a's id", "b", "b", `{"OUT": 101}`, "", "", ""},
		{"admin sees every project", "a", "", `{"IN": 103}`, "b1", `103`, "103"},
		{"no directions", "a", "a", `{}`, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := map[string]string{"a": "ap1", "b": "bp0"}[tc.project]
			m := TapMirror{ID: fmt.Sprint("new", i), ProjectID: tc.project, PortID: port,
				Directions: dirs(t, tc.directions), RemoteIP: "198.51.100.7", MirrorType: "erspanv1"}
			err := s.Write(ctx, func(tx *Tx) error {
				if err := tx.CreateTapMirror(m, tc.scope); err != nil {
					return err
				}
				return errors.New("roll back") // keep the table as it was for the next case
			})
			var c *TunnelConflictError
			switch {
			case tc.mirror == "" && err.Error() != "roll back":
				t.Errorf("CreateTapMirror(%s) = %v, want no conflict", tc.directions, err)
			case tc.mirror != "" && !errors.As(err, &c):
				t.Errorf("CreateTapMirror(%s) = %v, want a conflict with %s", tc.directions, err, tc.mirror)
			case tc.mirror != "":
				if c.MirrorID != tc.mirror || string(c.Tunnel.ID) != tc.tunnel || c.Tunnel.Text() != tc.text || !errors.Is(err, ErrConflict) {
					t.Errorf("conflict = %+v (%q), want mirror %s tunnel %s (%q)", c, c.Tunnel.Text(), tc.mirror, tc.tunnel, tc.text)
				}
			}
		})
	}
}

// TestTunnelConflictConcurrent: of concurrent creates that use one tunnel
// id, exactly one passes the check.
func TestTunnelConflictConcurrent(t *testing.T) {
	const n = 8
	ctx := context.Background()
	s := mirrorPorts(t, "a", n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.CreateTapMirror(ctx, TapMirror{ID: fmt.Sprint("m", i), ProjectID: "a", PortID: fmt.Sprint("ap", i),
				Directions: dirs(t, `{"IN": 42}`), RemoteIP: "192.0.2.1", MirrorType: "gre"}, "a")
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		var c *TunnelConflictError
		switch {
		case err == nil:
			ok++
		case !errors.As(err, &c):
			t.Errorf("create %d: %v, want a tunnel conflict", i, err)
		}
	}
	if ms, err := s.ListTapMirrors(ctx, "a"); ok != 1 || err != nil || len(ms) != 1 {
		t.Errorf("%d creates passed, %d mirrors stored (%v), want 1", ok, len(ms), err)
	}
}

// TestDirections: the JSON object keeps its keys' order and raw values.
func TestDirections(t *testing.T) {
	for _, tc := range []struct {
		in, out string // out "" for an error
	}{
		{`{"IN": 101, "OUT": "102"}`, `{"IN":101,"OUT":"102"}`},
		{`{"OUT":1,"IN":2,"BOTH":3}`, `{"OUT":1,"IN":2,"BOTH":3}`},
		{` { } `, `{}`},
		{`{"IN": 1, "OUT": 2, "IN": 3}`, `{"IN":3,"OUT":2}`},
		{`{"IN": [1, 2]}`, `{"IN":[1,2]}`},
		{`{"IN": "\u0031"}`, `{"IN":"\u0031"}`},
		{`{"IN": 1e2}`, `{"IN":1e2}`},
		{`[]`, ``},
		{`"IN"`, ``},
		{`{"IN": }`, ``},
		{`{"IN": 1} x`, ``},
		{`{"IN": 1}{}`, ``},
		{`{"IN" 1}`, ``},
		{``, ``},
	} {
		var d Directions
		err := d.UnmarshalJSON([]byte(tc.in))
		if tc.out == "" {
			if err == nil {
				t.Errorf("UnmarshalJSON(%s) = %v, want an error", tc.in, d)
			}
			continue
		}
		if err != nil {
			t.Errorf("UnmarshalJSON(%s) = %v", tc.in, err)
			continue
		}
		if b, err := d.MarshalJSON(); err != nil || string(b) != tc.out {
			t.Errorf("MarshalJSON(UnmarshalJSON(%s)) = %s %v, want %s", tc.in, b, err, tc.out)
		}
	}
	if b, err := Directions(nil).MarshalJSON(); err != nil || string(b) != "{}" {
		t.Errorf("nil directions marshal to %s %v, want {}", b, err)
	}
}

// TestTunnelUint32: what the data plane makes of a stored tunnel id.
func TestTunnelUint32(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want uint32
		ok   bool
	}{
		{`101`, 101, true}, {`"102"`, 102, true}, {`" +7 "`, 7, true}, {`0`, 0, true},
		{`4294967295`, 1<<32 - 1, true}, {`"4294967295"`, 1<<32 - 1, true},
		{`4294967296`, 0, false}, {`-1`, 0, false}, {`"x"`, 0, false}, {`1.5`, 0, false},
		{`null`, 0, false}, {`true`, 0, false}, {`""`, 0, false}, {`1e2`, 0, false},
		// Python's int() reads a negative zero as 0.
		{`-0`, 0, true}, {`"-0"`, 0, true}, {`" -00 "`, 0, true}, {`"-"`, 0, false}, {`"--0"`, 0, false}, {`"-01"`, 0, false},
	} {
		got, err := MirrorTunnel{Direction: "IN", ID: json.RawMessage(tc.raw)}.Uint32()
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("Uint32(%s) = %d %v, want %d ok %v", tc.raw, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzDirections: whatever UnmarshalJSON accepts is a JSON object that
// encoding/json reads to the same keys and values, and marshals back to
// what it read.
func FuzzDirections(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		var d Directions
		if err := d.UnmarshalJSON([]byte(s)); err != nil {
			var m map[string]any
			if json.Unmarshal([]byte(s), &m) == nil && m != nil {
				t.Fatalf("UnmarshalJSON(%q) = %v, but encoding/json reads an object", s, err)
			}
			return
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("UnmarshalJSON(%q) accepted what encoding/json refuses: %v", s, err)
		}
		if len(m) != len(d) {
			t.Fatalf("UnmarshalJSON(%q) = %d keys, encoding/json %d", s, len(d), len(m))
		}
		for _, tun := range d {
			var v any
			if err := json.Unmarshal(tun.ID, &v); err != nil || !reflect.DeepEqual(v, m[tun.Direction]) {
				t.Fatalf("UnmarshalJSON(%q)[%q] = %s, encoding/json %v", s, tun.Direction, tun.ID, m[tun.Direction])
			}
		}
		b, err := d.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var d2 Directions
		if err := d2.UnmarshalJSON(b); err != nil || !reflect.DeepEqual(d, d2) {
			t.Fatalf("round trip of %q: %s -> %v %v", s, b, d2, err)
		}
	})
}

// TestTunnelTableOnOldDatabase: migration 0007 fills tap_mirror_tunnels
// from the mirrors a database already holds, so their ids still conflict,
// and its triggers keep the table to the mirrors: a new mirror adds its
// ids, deleting a mirror or its port removes them.
func TestTunnelTableOnOldDatabase(t *testing.T) {
	sqliteOnly(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "taas.db")
	s := open(t, path)
	for i, p := range []string{"p0", "p1", "p2"} {
		if err := s.CreatePort(ctx, Port{ID: p, ProjectID: "a", NetworkID: defaultNetwork,
			MACAddress: fmt.Sprintf("fa:16:3e:00:03:%02x", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []TapMirror{
		{ID: "old1", PortID: "p0", Directions: dirs(t, `{"IN": 101, "OUT": "102"}`)},
		{ID: "old2", PortID: "p1", Directions: dirs(t, `{"BOTH": 1.5e1}`)},
	} {
		m.ProjectID, m.RemoteIP, m.MirrorType = "a", "192.0.2.9", "gre"
		if err := s.CreateTapMirror(ctx, m, "a"); err != nil {
			t.Fatal(err)
		}
	}
	// Make it the database 0006 left.
	if _, err := s.w.ExecContext(ctx, `DROP TABLE tap_mirror_tunnels; DROP TRIGGER tap_mirror_tunnels_insert;
		DROP TRIGGER tap_mirror_tunnels_update; DELETE FROM schema_migrations WHERE version = 7`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	rows := func() string {
		t.Helper()
		var got string
		if err := s.r.QueryRowContext(ctx, `SELECT coalesce(group_concat(m.id || ' ' || e.direction || ' ' || e.type || ' ' || e.atom, ', '), '')
			FROM (SELECT * FROM tap_mirror_tunnels ORDER BY mirror_seq, direction) e JOIN tap_mirrors m ON m.seq = e.mirror_seq`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got, want := rows(), "old1 IN integer 101, old1 OUT text 102, old2 BOTH real 15.0"; got != want {
		t.Errorf("tap_mirror_tunnels after 0007 = %q, want %q", got, want)
	}
	conflict := func(d string) string {
		t.Helper()
		err := s.CreateTapMirror(ctx, TapMirror{ID: "new", ProjectID: "a", PortID: "p2", Directions: dirs(t, d),
			RemoteIP: "192.0.2.9", MirrorType: "gre"}, "")
		var c *TunnelConflictError
		switch {
		case errors.As(err, &c):
			return c.MirrorID + " " + c.Tunnel.Direction + " " + string(c.Tunnel.ID)
		case err != nil:
			t.Fatalf("CreateTapMirror(%s) = %v", d, err)
		}
		if _, err := s.DeleteTapMirror(ctx, "", "new"); err != nil {
			t.Fatal(err)
		}
		return ""
	}
	for _, tc := range []struct{ dirs, want string }{
		{`{"OUT": 101}`, "old1 IN 101"},
		{`{"IN": "102"}`, `old1 OUT "102"`},
		{`{"IN": 102}`, ""},
		{`{"IN": 15}`, ""}, // 15 is an integer, 1.5e1 a real: raw, as upstream
		{`{"IN": 1.5e1}`, "old2 BOTH 15.0"},
	} {
		if got := conflict(tc.dirs); got != tc.want {
			t.Errorf("conflict of %s = %q, want %q", tc.dirs, got, tc.want)
		}
	}
	if _, err := s.DeleteTapMirror(ctx, "a", "old1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DeletePort(ctx, "a", "p1"); err != nil {
		t.Fatal(err)
	}
	if got := rows(); got != "" {
		t.Errorf("tap_mirror_tunnels after deleting every mirror = %q, want none", got)
	}
	if got := conflict(`{"IN": 101, "OUT": 1.5e1}`); got != "" {
		t.Errorf("a deleted mirror's ids conflict: %s", got)
	}
}
