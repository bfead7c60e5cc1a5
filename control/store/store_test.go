package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const defaultNetwork = "6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10"

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestMigrations: a new database gets every migration once, in order, and
// reopening applies nothing twice (the default network stays single).
func TestMigrations(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	s := open(t, path)
	got, err := s.Migrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[0001_init.sql 0002_default_network.sql 0003_mac_per_interface.sql 0004_quotas.sql 0005_network_quota.sql 0006_tap_mirrors.sql 0007_tap_mirror_tunnels.sql 0008_filter_snaplen.sql 0009_status_reason.sql 0010_nodes.sql 0011_node_interfaces.sql]" {
		t.Errorf("Migrations = %v", got)
	}
	s.Close()
	s = open(t, path)
	nets, err := s.ListNetworks(ctx, "anyone")
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 1 || nets[0].ID != defaultNetwork || nets[0].Name != "appliance" || !nets[0].Shared {
		t.Errorf("networks after reopen = %+v, want the one shared network", nets)
	}
	if onPostgres() {
		return // what follows is SQLite's
	}
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q %v, want wal", mode, err)
	}
	var fk int
	if err := s.w.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d %v, want 1", fk, err)
	}
}

// TestMigrationsRefuseNewer: a database a newer taasd migrated (a
// migration this binary does not know) is refused at Open, naming both
// versions, and is left as it was.
func TestMigrationsRefuseNewer(t *testing.T) {
	sqliteOnly(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "taas.db")
	s := open(t, path)
	known, err := s.Migrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_future.sql')`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, path)
	want := "the database has migration 9999_future.sql, newer than this taasd's newest (0011_node_interfaces.sql): " +
		"a newer taasd wrote it; run that version, or restore the backup taken before the upgrade"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open = %v, want an error saying %q", err, want)
	}
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(known)+1 {
		t.Errorf("%d migrations recorded after the refusal (%v), want the %d it had", n, err, len(known)+1)
	}
}

// TestCascadeAndScope: deleting a port removes the services on it, their
// flows and the flows it sources, and reports them; other projects see
// nothing.
func TestCascadeAndScope(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	mk := func(id, mac string) Port {
		p := Port{ID: id, ProjectID: "a", NetworkID: defaultNetwork, MACAddress: mac, AdminStateUp: true}
		if err := s.CreatePort(ctx, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mon, src, other := mk("p-mon", "fa:16:3e:00:00:01"), mk("p-src", "fa:16:3e:00:00:02"), mk("p-oth", "fa:16:3e:00:00:03")
	if err := s.CreatePort(ctx, Port{ID: "dup", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:01"}); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate MAC: %v, want ErrConflict", err)
	}
	if err := s.CreatePort(ctx, Port{ID: "x", ProjectID: "a", NetworkID: "nope", MACAddress: "fa:16:3e:00:00:09"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown network: %v, want ErrNotFound", err)
	}
	for _, ts := range []TapService{{ID: "s1", ProjectID: "a", PortID: mon.ID, Status: "DOWN"}, {ID: "s2", ProjectID: "a", PortID: other.ID, Status: "DOWN"}} {
		if err := s.CreateTapService(ctx, ts, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateTapService(ctx, TapService{ID: "s3", ProjectID: "a", PortID: mon.ID}, 2); !errors.Is(err, ErrLimitReached) {
		t.Errorf("third service with max 2: %v, want ErrLimitReached", err)
	}
	vf := "1-5"
	for _, f := range []TapFlow{
		{ID: "f1", ProjectID: "a", TapServiceID: "s1", SourcePort: src.ID, Direction: "IN", VLANFilter: &vf},
		{ID: "f2", ProjectID: "a", TapServiceID: "s2", SourcePort: src.ID, Direction: "OUT"},
		{ID: "f3", ProjectID: "a", TapServiceID: "s2", SourcePort: other.ID, Direction: "BOTH"},
	} {
		if err := s.CreateTapFlow(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateTapFlow(ctx, TapFlow{ID: "f4", ProjectID: "a", TapServiceID: "gone", SourcePort: src.ID, Direction: "IN"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("flow into a missing service: %v, want ErrNotFound", err)
	}
	if _, err := s.GetTapFlow(ctx, "b", "f1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("project b reads a's flow: %v, want ErrNotFound", err)
	}
	if f, err := s.GetTapFlow(ctx, "a", "f1"); err != nil || *f.VLANFilter != "1-5" {
		t.Errorf("GetTapFlow = %+v %v", f, err)
	}
	_, d, err := s.DeletePort(ctx, "a", src.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Services) != 0 || len(d.Flows) != 2 {
		t.Errorf("deleting the source port removed %+v, want flows f1 f2", d)
	}
	_, d, err = s.DeletePort(ctx, "", mon.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Services) != 1 || d.Services[0].ID != "s1" {
		t.Errorf("deleting the monitor port removed %+v, want s1", d)
	}
	flows, _ := s.ListTapFlows(ctx, "")
	svcs, _ := s.ListTapServices(ctx, "")
	if len(flows) != 1 || flows[0].ID != "f3" || len(svcs) != 1 || svcs[0].ID != "s2" {
		t.Errorf("left: services %+v flows %+v, want s2 and f3", svcs, flows)
	}
	_, d, err = s.DeleteTapService(ctx, "a", "s2")
	if err != nil || len(d.Flows) != 1 {
		t.Errorf("DeleteTapService = %+v %v, want f3 removed", d, err)
	}
}

// TestStatuses: SetStatuses writes, Desired reads the joins (a mirror's
// with its port's interface and MAC).
func TestStatuses(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	if err := s.CreatePort(ctx, Port{ID: "p", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:01", Interface: "eth1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTapService(ctx, TapService{ID: "s", ProjectID: "a", PortID: "p", Status: "DOWN"}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTapFlow(ctx, TapFlow{ID: "f", ProjectID: "a", TapServiceID: "s", SourcePort: "p", Direction: "BOTH", Status: "DOWN"}); err != nil {
		t.Fatal(err)
	}
	// f3 comes from another port: each flow carries its own source's
	// binding, MAC and admin state.
	if err := s.CreatePort(ctx, Port{ID: "q", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:02",
		Interface: "eth2", AdminStateUp: true}); err != nil {
		t.Fatal(err)
	}
	for _, f := range [][2]string{{"f2", "p"}, {"f3", "q"}} {
		if err := s.CreateTapFlow(ctx, TapFlow{ID: f[0], ProjectID: "a", TapServiceID: "s", SourcePort: f[1], Direction: "IN", Status: "DOWN"}); err != nil {
			t.Fatal(err)
		}
	}
	// One UPDATE per distinct status: f and f3 share one, f2 has its own.
	if err := s.SetStatuses(ctx, map[string]Status{"s": {"ACTIVE", ""}, "gone": {"ACTIVE", ""}},
		map[string]Status{"f": {"ERROR", "boom"}, "f2": {"ACTIVE", ""}, "f3": {"ERROR", "boom"}, "gone": {"DOWN", "x"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTapMirror(ctx, TapMirror{ID: "m", ProjectID: "a", PortID: "p", Directions: Directions{{"OUT", json.RawMessage(`"9"`)}},
		RemoteIP: "192.0.2.7", MirrorType: "vxlan"}, "a"); err != nil {
		t.Fatal(err)
	}
	// A new mirror is DOWN; its status is written like the others'.
	if m, err := s.GetTapMirror(ctx, "", "m"); err != nil || m.Status != "DOWN" || m.StatusReason != "" {
		t.Errorf("new mirror = %+v, %v, want DOWN without reason", m, err)
	}
	if err := s.SetStatuses(ctx, nil, nil, map[string]Status{"m": {"ERROR", "no route"}, "gone": {"DOWN", "x"}}); err != nil {
		t.Fatal(err)
	}
	if m, err := s.GetTapMirror(ctx, "", "m"); err != nil || m.Status != "ERROR" || m.StatusReason != "no route" {
		t.Errorf("mirror = %+v, %v, want ERROR no route", m, err)
	}
	d, err := s.Desired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	svcs, flows := d.Services, d.Flows
	want := DesiredMirror{ID: "m", ProjectID: "a", PortID: "p", Iface: "eth1", MAC: "fa:16:3e:00:00:01",
		Directions: Directions{{"OUT", json.RawMessage(`"9"`)}}, RemoteIP: "192.0.2.7", MirrorType: "vxlan",
		Status: Status{"ERROR", "no route"}}
	if len(d.Mirrors) != 1 || !reflect.DeepEqual(d.Mirrors[0], want) {
		t.Errorf("desired mirrors = %+v, want %+v", d.Mirrors, want)
	}
	if len(svcs) != 1 || svcs[0].Iface != "eth1" || svcs[0].Status != (Status{"ACTIVE", ""}) {
		t.Errorf("desired services = %+v", svcs)
	}
	if len(flows) != 3 || flows[0].MAC != "fa:16:3e:00:00:01" || flows[0].VLANFilter != "" || flows[0].Status != (Status{"ERROR", "boom"}) ||
		flows[1].Status != (Status{"ACTIVE", ""}) || flows[2].Status != (Status{"ERROR", "boom"}) ||
		flows[0].Iface != "eth1" || flows[0].PortUp || flows[2].Iface != "eth2" || flows[2].MAC != "fa:16:3e:00:00:02" || !flows[2].PortUp {
		t.Errorf("desired flows = %+v", flows)
	}
}

// TestSetOwnStatusesWritten: SetOwnStatuses writes the rows whose port is
// on one of the nodes given, and says which: not those of another node's
// port, nor those deleted meanwhile.
func TestSetOwnStatusesWritten(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	for _, p := range []Port{
		{ID: "pa", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:01", HostID: "a"},
		{ID: "pb", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:02", HostID: "b"},
		{ID: "pn", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:03"},
	} {
		if err := s.CreatePort(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, ts := range []TapService{{ID: "sa", ProjectID: "a", PortID: "pa"}, {ID: "sb", ProjectID: "a", PortID: "pb"}, {ID: "sn", ProjectID: "a", PortID: "pn"}} {
		ts.Status = "DOWN"
		if err := s.CreateTapService(ctx, ts, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []TapFlow{{ID: "fa", SourcePort: "pa"}, {ID: "fb", SourcePort: "pb"}} {
		f.ProjectID, f.TapServiceID, f.Direction, f.Status = "a", "sa", "BOTH", "DOWN"
		if err := s.CreateTapFlow(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	active, down := Status{"ACTIVE", ""}, Status{"DOWN", "x"}
	for _, tc := range []struct {
		name  string
		nodes []string
		want  map[string]bool
	}{
		{"node a", []string{"a", ""}, map[string]bool{"sa": true, "sn": true, "fa": true}},
		{"node c", []string{"c"}, map[string]bool{}},
		{"every node", nil, map[string]bool{"sa": true, "sb": true, "sn": true, "fa": true, "fb": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.SetOwnStatuses(ctx, tc.nodes, map[string]Status{"sa": active, "sb": down, "sn": active, "gone": active},
				map[string]Status{"fa": down, "fb": active, "gone": down}, nil)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("SetOwnStatuses(%q) = %v, %v, want %v", tc.nodes, got, err, tc.want)
			}
		})
	}
}

// TestGeneration: every write method bumps Generation before it returns,
// and reads do not (control caches lists under it, issue 10).
func TestGeneration(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	port := Port{ID: "11111111-1111-1111-1111-111111111111", ProjectID: "p", NetworkID: defaultNetwork,
		MACAddress: "fa:16:3e:00:00:01"}
	svc := TapService{ID: "22222222-2222-2222-2222-222222222222", ProjectID: "p", PortID: port.ID, Status: "DOWN"}
	flow := TapFlow{ID: "33333333-3333-3333-3333-333333333333", ProjectID: "p", TapServiceID: svc.ID,
		SourcePort: port.ID, Direction: "IN", Status: "DOWN"}
	tests := []struct {
		name  string
		write bool
		run   func() error
	}{
		{"create network", true, func() error {
			return s.CreateNetwork(ctx, Network{ID: "44444444-4444-4444-4444-444444444444", ProjectID: "p"})
		}},
		{"create port", true, func() error { return s.CreatePort(ctx, port) }},
		{"list ports", false, func() error { _, err := s.ListPorts(ctx, ""); return err }},
		{"create tap service", true, func() error { return s.CreateTapService(ctx, svc, 0) }},
		{"create tap flow", true, func() error { return s.CreateTapFlow(ctx, flow) }},
		{"list tap flows", false, func() error { _, err := s.ListTapFlows(ctx, ""); return err }},
		{"set statuses", true, func() error {
			return s.SetStatuses(ctx, nil, map[string]Status{flow.ID: {State: "ACTIVE"}}, nil)
		}},
		{"update tap flow", true, func() error {
			_, err := s.UpdateTapFlow(ctx, "", flow.ID, func(f *TapFlow) error { f.Name = "x"; return nil })
			return err
		}},
		{"set quotas", true, func() error { return s.SetQuotas(ctx, "p", Limits{QuotaPort: 5}, nil) }},
		{"delete quotas", true, func() error { return s.DeleteQuotas(ctx, "p") }},
		{"delete port", true, func() error { _, _, err := s.DeletePort(ctx, "", port.ID); return err }},
	}
	for _, tc := range tests {
		before := s.Generation()
		if err := tc.run(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if changed := s.Generation() != before; changed != tc.write {
			t.Errorf("%s: Generation changed = %v, want %v", tc.name, changed, tc.write)
		}
	}
}
