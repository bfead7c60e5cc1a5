package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taas-appliance/taas/control/store"
)

// TestCheckNode: `taasd check` reports this node's name and whether a
// live taasd of the fleet heartbeats under it.
func TestCheckNode(t *testing.T) {
	now := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	fleet := config{DB: "postgres:///taas", Node: "n1"}
	nodes := func(ns ...store.Node) store.Info { return store.Info{Nodes: ns} }
	for _, tc := range []struct {
		name   string
		cfg    config
		info   store.Info
		want   verdict
		detail string
	}{
		{"not registered", fleet, nodes(store.Node{Name: "n2", LastSeen: ms(0)}), pass, "n1: not registered yet"},
		{"alive", fleet, nodes(store.Node{Name: "n1", Version: "v1", APIAddress: "10.0.0.1:9696", LastSeen: ms(-2 * time.Second)}), warn,
			`n1: a live taasd uses it (version "v1", API 10.0.0.1:9696, started 1970-01-01T00:00:00Z, seen 2026-12-03T16:59:58Z)`},
		{"silent", fleet, nodes(store.Node{Name: "n1", LastSeen: ms(-11 * time.Second)}), pass, "not seen since 2026-12-03T16:59:49Z"},
		{"silent, longer timeout", config{DB: fleet.DB, Node: "n1", NodeTimeout: 30},
			nodes(store.Node{Name: "n1", LastSeen: ms(-11 * time.Second)}), warn, "a live taasd uses it"},
		{"stopped", fleet, nodes(store.Node{Name: "n1", LastSeen: ms(-time.Second), StoppedAt: ms(-time.Second)}), pass, "stopped at"},
		{"single appliance", config{DB: "/var/lib/taasd/taas.db", Node: "n1"},
			nodes(store.Node{Name: "n1", StartedAt: ms(-time.Hour), LastSeen: ms(0)}), pass, "n1: registered, last started 2026-12-03T16:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := nodeResult(tc.cfg, tc.info, now)
			if r.Name != "node" || r.Verdict != tc.want || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("nodeResult = %v %q, want %v and %q", r.Verdict, r.Detail, tc.want, tc.detail)
			}
		})
	}

	// The file's node, registered in a real database.
	db := filepath.Join(t.TempDir(), "taas.db")
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ClaimNode(context.Background(), store.Node{Name: "rack1-a", Instance: "x", StartedAt: 1, LastSeen: 1}, 0); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if rs := checkNode(loadConfigText(t, fmt.Sprintf("db = %q\nnode = \"rack1-a\"\n", db))); len(rs) != 1 || rs[0].Verdict != pass || !strings.Contains(rs[0].Detail, "rack1-a: registered") {
		t.Errorf("checkNode = %+v, want rack1-a registered", rs)
	}
}
