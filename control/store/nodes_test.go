package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
)

// TestClaimNode: a name is claimed when free, when its last run's row is
// as the claimant read it (that run stopped heartbeating), or again by the
// same run; a row that changed meanwhile (a live run heartbeat) refuses.
func TestClaimNode(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	a := Node{Name: "node-a", Instance: "run-1", Version: "v1", APIAddress: "10.0.0.1:9696", StartedAt: 1000, LastSeen: 1000}
	for _, tc := range []struct {
		name     string
		node     Node
		lastSeen int64
		err      error
	}{
		{"free name", a, 0, nil},
		{"same run again", a, 0, nil},
		{"another run, stale read", Node{Name: "node-a", Instance: "run-2", StartedAt: 2000, LastSeen: 2000}, 999, ErrNodeTaken},
		{"another run, free of that name", Node{Name: "node-a", Instance: "run-2", StartedAt: 2000, LastSeen: 2000}, 0, ErrNodeTaken},
		{"another run after the last heartbeat it saw", Node{Name: "node-a", Instance: "run-2", StartedAt: 2000, LastSeen: 2000}, 1000, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.ClaimNode(ctx, tc.node, tc.lastSeen); !errors.Is(err, tc.err) {
				t.Fatalf("ClaimNode(%v, %d) = %v, want %v", tc.node, tc.lastSeen, err, tc.err)
			}
		})
	}
	got, err := s.GetNode(ctx, "node-a")
	if want := (Node{Name: "node-a", Instance: "run-2", StartedAt: 2000, LastSeen: 2000}); err != nil || got != want {
		t.Errorf("GetNode = %+v, %v, want %+v", got, err, want)
	}
	// A clean stop marks the row; another run's claim clears the mark.
	if err := s.LeaveNode(ctx, "node-a", "run-1", 2500); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(ctx, "node-a"); got.StoppedAt != 0 {
		t.Errorf("after the old run's LeaveNode StoppedAt = %d, want 0 (not its row)", got.StoppedAt)
	}
	if err := s.LeaveNode(ctx, "node-a", "run-2", 2500); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(ctx, "node-a"); got.StoppedAt != 2500 {
		t.Errorf("after LeaveNode StoppedAt = %d, want 2500", got.StoppedAt)
	}
	if err := s.ClaimNode(ctx, Node{Name: "node-a", Instance: "run-3", StartedAt: 3000, LastSeen: 3000}, 2000); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(ctx, "node-a"); got.StoppedAt != 0 || got.Instance != "run-3" {
		t.Errorf("after a new claim = %+v, want run-3 running", got)
	}
	if _, err := s.GetNode(ctx, "node-b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetNode(node-b) = %v, want ErrNotFound", err)
	}
}

// TestHeartbeat: a run's heartbeat moves its last_seen and replaces its
// published counters; the run that lost its name to another writes
// nothing; ListNodeStats leaves out the caller's own node.
func TestHeartbeat(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	for _, n := range []Node{{Name: "a", Instance: "a1", StartedAt: 1, LastSeen: 1}, {Name: "b", Instance: "b1", StartedAt: 1, LastSeen: 1}} {
		if err := s.ClaimNode(ctx, n, 0); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		node, instance string
		now            int64
		stats          string
		err            error
	}{
		{"a", "a1", 10, `{"n":1}`, nil},
		{"a", "a1", 20, `{"n":2}`, nil},
		{"b", "b1", 21, "", nil},
		{"b", "b2", 30, `{"n":9}`, ErrNodeTaken},
		{"c", "c1", 30, `{"n":9}`, ErrNodeTaken},
	}
	for _, st := range steps {
		var stats []byte
		if st.stats != "" {
			stats = []byte(st.stats)
		}
		if err := s.Heartbeat(ctx, st.node, st.instance, st.now, stats, nil); !errors.Is(err, st.err) {
			t.Errorf("Heartbeat(%s, %s) = %v, want %v", st.node, st.instance, err, st.err)
		}
	}
	nodes, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int64{}
	for _, n := range nodes {
		seen[n.Name] = n.LastSeen
	}
	if want := map[string]int64{"a": 20, "b": 21}; !reflect.DeepEqual(seen, want) {
		t.Errorf("last_seen = %v, want %v", seen, want)
	}
	for _, tc := range []struct {
		except string
		want   []NodeStats
	}{
		{"b", []NodeStats{{Node: "a", UpdatedAt: 20, Stats: []byte(`{"n":2}`)}}},
		{"a", nil},
	} {
		got, err := s.ListNodeStats(ctx, tc.except)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListNodeStats(%q) = %v, %v, want %v", tc.except, got, err, tc.want)
		}
	}
}

// TestHeartbeatQuiet: on PostgreSQL a heartbeat wakes no other taasd's
// reconciler (it would wake every node every second), a claim does; and it
// bumps neither the writer's Generation nor the others' (every node's
// cached lists went N times a second).
func TestHeartbeatQuiet(t *testing.T) {
	ctx := context.Background()
	dsn := testutil.StartPostgres(t)
	a, b := open(t, dsn), open(t, dsn)
	changes, stop := b.Subscribe()
	defer stop()
	if err := a.ClaimNode(ctx, Node{Name: "a", Instance: "a1", StartedAt: 1, LastSeen: 1}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("a claim was not announced")
	}
	genA, genB := a.Generation(), b.Generation()
	for i := range 5 {
		if err := a.Heartbeat(ctx, "a", "a1", int64(10+i), []byte(`{}`), nil); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-changes:
		t.Error("a heartbeat woke a subscriber")
	case <-time.After(500 * time.Millisecond):
	}
	if ga, gb := a.Generation(), b.Generation(); ga != genA || gb != genB {
		t.Errorf("Generation after 5 heartbeats: writer %d -> %d, other %d -> %d, want unchanged", genA, ga, genB, gb)
	}
}
