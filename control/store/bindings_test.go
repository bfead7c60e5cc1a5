package store

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

// TestMACPerInterfaceOnOldDatabase: a database from before migration 0003
// that holds two ports with one MAC on one interface still opens, its
// ports can still be renamed, and no new duplicate can be made, on insert
// or update.
func TestMACPerInterfaceOnOldDatabase(t *testing.T) {
	sqliteOnly(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "taas.db")
	// Build the database as 0001 and 0002 left it, with the duplicates.
	s := open(t, path)
	if _, err := s.w.ExecContext(ctx, `DROP TRIGGER ports_iface_mac_insert; DROP TRIGGER ports_iface_mac_update;
		DROP INDEX ports_iface_mac; DELETE FROM schema_migrations WHERE version = 3`); err != nil {
		t.Fatal(err)
	}
	const mac = "fa:16:3e:00:00:0a"
	old := []Port{
		{ID: "p1", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: mac, Interface: "cap0"},
		{ID: "p2", ProjectID: "b", NetworkID: "n2", MACAddress: mac, Interface: "cap0"},
	}
	if err := s.CreateNetwork(ctx, Network{ID: "n2", ProjectID: "b"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range old {
		if err := s.CreatePort(ctx, p); err != nil {
			t.Fatalf("CreatePort(%s) before 0003: %v", p.ID, err)
		}
	}
	s.Close()

	s = open(t, path)
	if got, err := s.Migrations(ctx); err != nil || !slices.Contains(got, "0003_mac_per_interface.sql") {
		t.Fatalf("Migrations = %v, %v: want 0003 applied over the duplicates", got, err)
	}
	if _, err := s.UpdatePort(ctx, "", "p2", func(_ *Tx, p *Port) error { p.Name = "renamed"; return nil }); err != nil {
		t.Errorf("renaming a port of an old duplicate: %v", err)
	}
	if err := s.CreateNetwork(ctx, Network{ID: "n3", ProjectID: "c"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"insert", func() error {
			return s.CreatePort(ctx, Port{ID: "p3", ProjectID: "c", NetworkID: "n3", MACAddress: mac, Interface: "cap0"})
		}},
		{"rebind", func() error {
			if err := s.CreatePort(ctx, Port{ID: "p4", ProjectID: "c", NetworkID: "n3", MACAddress: mac}); err != nil {
				return err
			}
			_, err := s.UpdatePort(ctx, "", "p4", func(_ *Tx, p *Port) error { p.Interface = "cap0"; return nil })
			return err
		}},
		{"mac change", func() error {
			if err := s.CreateNetwork(ctx, Network{ID: "n5", ProjectID: "c"}); err != nil {
				return err
			}
			if err := s.CreatePort(ctx, Port{ID: "p5", ProjectID: "c", NetworkID: "n5", MACAddress: "fa:16:3e:00:00:0b",
				Interface: "cap0"}); err != nil {
				return err
			}
			_, err := s.UpdatePort(ctx, "", "p5", func(_ *Tx, p *Port) error { p.MACAddress = mac; return nil })
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, ErrMACInUse) {
				t.Errorf("%s of a MAC bound to cap0 = %v, want ErrMACInUse", tc.name, err)
			}
		})
	}
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM ports WHERE mac_address = ? AND iface = 'cap0'`, mac).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("%d ports with the MAC on cap0, want the 2 old ones", n)
	}
}

// TestTxSeesItsBatch: a rebinding's check reads, through its Tx, the uses
// of the port that an earlier Write of the same batch added (issue 10's
// review: read through the read pool it saw none, so a tap service on an
// unbound port and a rebinding of that port onto a capture both passed).
func TestTxSeesItsBatch(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	for _, p := range []Port{
		{ID: "p", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:01:01"},
		{ID: "m", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:01:02", Interface: "mon0"},
	} {
		if err := s.CreatePort(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	release, held := holdWriter(t, s)
	first := make(chan error, 1)
	go func() {
		first <- s.Write(ctx, func(tx *Tx) error {
			if err := tx.CreateTapService(TapService{ID: "s1", ProjectID: "a", PortID: "p"}, 0); err != nil {
				return err
			}
			return tx.CreateTapService(TapService{ID: "s2", ProjectID: "a", PortID: "m"}, 0)
		})
	}()
	waitQueued(t, s, 1)
	var (
		svcs, sources int
		bound         []string
		stale         int
	)
	second := make(chan error, 1)
	go func() {
		_, err := s.UpdatePort(ctx, "", "p", func(tx *Tx, p *Port) error {
			var err error
			if svcs, sources, err = tx.PortUse(p.ID); err != nil {
				return err
			}
			if bound, err = tx.BoundInterfaces(nil, true); err != nil {
				return err
			}
			// The read pool, for contrast: the last commit, without s1.
			return s.r.QueryRowContext(ctx, `SELECT count(*) FROM tap_services WHERE port_id = 'p'`).Scan(&stale)
		})
		second <- err
	}()
	waitQueued(t, s, 2)
	before := s.batches.Load()
	release()
	if err := held(); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if n := s.batches.Load() - before; n != 1 {
		t.Fatalf("the two Writes took %d batches, want 1 (the test needs them in one)", n)
	}
	if svcs != 1 || sources != 0 {
		t.Errorf("Tx.PortUse(p) = %d, %d, want 1, 0 (the batch's earlier tap service)", svcs, sources)
	}
	if !slices.Equal(bound, []string{"mon0"}) {
		t.Errorf("Tx.BoundInterfaces(true) = %v, want [mon0]", bound)
	}
	if stale != 0 {
		t.Errorf("the read pool saw %d services on p before the commit, want 0", stale)
	}
}

// TestBindingsPerNode: in a fleet eth names repeat on every node, and
// what a binding is checked against is the ports of its own node: the
// interfaces in use and the filters of a capture interface are counted
// per binding:host_id (nil: every port, a single appliance). One MAC on
// one interface is one node's rule on PostgreSQL (a fleet's database),
// and stays per interface on SQLite (a single appliance realises every
// port whatever its host_id).
func TestBindingsPerNode(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	if err := s.CreateNetwork(ctx, Network{ID: "n2", ProjectID: "a"}); err != nil {
		t.Fatal(err)
	}
	const mac = "fa:16:3e:00:00:0c"
	for _, p := range []Port{
		{ID: "ca", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: mac, Interface: "cap0", HostID: "a"},
		{ID: "ma", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:01", Interface: "mon0", HostID: "a"},
		{ID: "cb", ProjectID: "a", NetworkID: "n2", MACAddress: "fa:16:3e:00:00:02", Interface: "cap0", HostID: "b"},
		{ID: "mb", ProjectID: "a", NetworkID: "n2", MACAddress: "fa:16:3e:00:00:03", Interface: "mon1", HostID: "b"},
	} {
		if err := s.CreatePort(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	filter := func(f string) *string { return &f }
	if err := s.Write(ctx, func(tx *Tx) error {
		for _, sv := range []TapService{{ID: "sa", ProjectID: "a", PortID: "ma"}, {ID: "sb", ProjectID: "a", PortID: "mb"}} {
			if err := tx.CreateTapService(sv, 0); err != nil {
				return err
			}
		}
		for _, f := range []TapFlow{
			{ID: "fa", ProjectID: "a", TapServiceID: "sa", SourcePort: "ca", Direction: "BOTH", Filter: filter("tcp")},
			{ID: "fb1", ProjectID: "a", TapServiceID: "sb", SourcePort: "cb", Direction: "BOTH", Filter: filter("udp")},
			{ID: "fb2", ProjectID: "a", TapServiceID: "sb", SourcePort: "cb", Direction: "BOTH", Filter: filter("icmp")},
		} {
			if err := tx.CreateTapFlow(f); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	type filters struct {
		n   int
		has bool
	}
	for _, tc := range []struct {
		hosts                   []string
		monitors, captures      []string
		cap0Filters, cap0HasTCP filters
	}{
		{nil, []string{"mon0", "mon1"}, []string{"cap0"}, filters{3, false}, filters{3, true}},
		{[]string{"a"}, []string{"mon0"}, []string{"cap0"}, filters{1, false}, filters{1, true}},
		{[]string{"b"}, []string{"mon1"}, []string{"cap0"}, filters{2, false}, filters{2, false}},
		{[]string{"c", ""}, nil, nil, filters{0, false}, filters{0, false}},
	} {
		if err := s.Write(ctx, func(tx *Tx) error {
			mons, err := tx.BoundInterfaces(tc.hosts, true)
			if err != nil {
				return err
			}
			caps, err := tx.BoundInterfaces(tc.hosts, false)
			if err != nil {
				return err
			}
			if !slices.Equal(mons, tc.monitors) || !slices.Equal(caps, tc.captures) {
				t.Errorf("BoundInterfaces(%q) = %v (monitors), %v (captures), want %v, %v", tc.hosts, mons, caps, tc.monitors, tc.captures)
			}
			for expr, want := range map[string]filters{"arp": tc.cap0Filters, "tcp": tc.cap0HasTCP} {
				n, has, err := tx.InterfaceFilters(tc.hosts, "cap0", expr)
				if err != nil {
					return err
				}
				if (filters{n, has}) != want {
					t.Errorf("InterfaceFilters(%q, cap0, %s) = %d, %v, want %v", tc.hosts, expr, n, has, want)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// The MAC of port ca (cap0 of node a) on cap0 of node b.
	if err := s.CreateNetwork(ctx, Network{ID: "n3", ProjectID: "a"}); err != nil {
		t.Fatal(err)
	}
	err := s.CreatePort(ctx, Port{ID: "cb2", ProjectID: "a", NetworkID: "n3", MACAddress: mac, Interface: "cap0", HostID: "b"})
	if onPostgres() {
		if err != nil {
			t.Fatalf("one MAC on cap0 of nodes a and b: %v, want both (two netdevs)", err)
		}
		_, err := s.UpdatePort(ctx, "", "cb2", func(_ *Tx, p *Port) error { p.HostID = "a"; return nil })
		if !errors.Is(err, ErrMACInUse) {
			t.Errorf("moving port cb2 to node a, where cap0 has its MAC: %v, want ErrMACInUse", err)
		}
		if err := s.CreateNetwork(ctx, Network{ID: "n4", ProjectID: "a"}); err != nil {
			t.Fatal(err)
		}
		err = s.CreatePort(ctx, Port{ID: "cb3", ProjectID: "a", NetworkID: "n4", MACAddress: mac, Interface: "cap0", HostID: "b"})
		if !errors.Is(err, ErrMACInUse) {
			t.Errorf("the MAC twice on cap0 of node b: %v, want ErrMACInUse", err)
		}
	} else if !errors.Is(err, ErrMACInUse) {
		t.Errorf("one MAC on cap0 of hosts a and b on SQLite: %v, want ErrMACInUse (one appliance)", err)
	}
}
