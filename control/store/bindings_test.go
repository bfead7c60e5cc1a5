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
	if _, err := s.UpdatePort(ctx, "", "p2", func(p *Port) error { p.Name = "renamed"; return nil }); err != nil {
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
			_, err := s.UpdatePort(ctx, "", "p4", func(p *Port) error { p.Interface = "cap0"; return nil })
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
			_, err := s.UpdatePort(ctx, "", "p5", func(p *Port) error { p.MACAddress = mac; return nil })
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
