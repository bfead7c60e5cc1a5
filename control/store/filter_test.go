package store

import (
	"context"
	"path/filepath"
	"testing"
)

// TestFilterSnaplenOnOldDatabase: rows written before migration 0008 read
// a null filter and snaplen (nil, and "" and 0 in the desired state);
// afterwards both are stored, updated (snaplen) and read back, and the
// column refuses a snaplen out of range.
func TestFilterSnaplenOnOldDatabase(t *testing.T) {
	sqliteOnly(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "taas.db")
	s := open(t, path)
	// Make it the database 0007 left, holding a row of each kind.
	if _, err := s.w.ExecContext(ctx, `ALTER TABLE tap_flows DROP COLUMN filter;
		ALTER TABLE tap_services DROP COLUMN snaplen; ALTER TABLE tap_mirrors DROP COLUMN snaplen;
		DELETE FROM schema_migrations WHERE version = 8;
		INSERT INTO ports (id, project_id, network_id, mac_address) VALUES
			('src', 'a', '`+defaultNetwork+`', 'fa:16:3e:00:08:01'), ('mon', 'a', '`+defaultNetwork+`', 'fa:16:3e:00:08:02');
		INSERT INTO tap_services (id, project_id, port_id, status) VALUES ('svc', 'a', 'mon', 'DOWN');
		INSERT INTO tap_flows (id, project_id, tap_service_id, source_port, direction, status)
			VALUES ('flow', 'a', 'svc', 'src', 'IN', 'DOWN');
		INSERT INTO tap_mirrors (id, project_id, port_id, directions, remote_ip, mirror_type)
			VALUES ('mir', 'a', 'src', '{"IN": 1}', '198.51.100.1', 'gre')`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	svc, err := s.GetTapService(ctx, "a", "svc")
	if err != nil || svc.Snaplen != nil {
		t.Errorf("old service = %+v %v, want snaplen nil", svc, err)
	}
	flow, err := s.GetTapFlow(ctx, "a", "flow")
	if err != nil || flow.Filter != nil {
		t.Errorf("old flow = %+v %v, want filter nil", flow, err)
	}
	mir, err := s.GetTapMirror(ctx, "a", "mir")
	if err != nil || mir.Snaplen != nil {
		t.Errorf("old mirror = %+v %v, want snaplen nil", mir, err)
	}
	d, err := s.Desired(ctx)
	if err != nil || len(d.Services) != 1 || d.Services[0].Snaplen != 0 || len(d.Flows) != 1 || d.Flows[0].Filter != "" ||
		len(d.Mirrors) != 1 || d.Mirrors[0].Snaplen != 0 {
		t.Errorf("Desired = %+v %v, want one of each, null as 0 and \"\"", d, err)
	}

	n, expr := 128, "tcp port 443"
	if _, err := s.UpdateTapService(ctx, "a", "svc", func(t *TapService) error { t.Snaplen = &n; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateTapMirror(ctx, "a", "mir", func(m *TapMirror) error { m.Snaplen = &n; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTapFlow(ctx, TapFlow{ID: "f2", ProjectID: "a", TapServiceID: "svc", SourcePort: "src",
		Direction: "OUT", Filter: &expr}); err != nil {
		t.Fatal(err)
	}
	d, err = s.Desired(ctx)
	if err != nil || d.Services[0].Snaplen != 128 || d.Mirrors[0].Snaplen != 128 || d.Flows[1].Filter != expr {
		t.Errorf("Desired after updates = %+v %v, want snaplens 128 and f2's filter", d, err)
	}
	if f, err := s.GetTapFlow(ctx, "a", "f2"); err != nil || f.Filter == nil || *f.Filter != expr {
		t.Errorf("GetTapFlow(f2) = %+v %v, want filter %q", f, err, expr)
	}
	bad := 63
	if _, err := s.UpdateTapService(ctx, "a", "svc", func(t *TapService) error { t.Snaplen = &bad; return nil }); err == nil {
		t.Errorf("snaplen 63 stored, want the CHECK constraint to refuse it")
	}
}
