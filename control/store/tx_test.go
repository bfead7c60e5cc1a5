package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestWrite: a Write whose fn fails leaves nothing, a conflicting insert
// inside it undoes only itself, and its rows are invisible to readers
// until it commits.
func TestWrite(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	boom := errors.New("boom")
	err := s.Write(ctx, func(tx *Tx) error {
		for i := range 3 {
			if err := tx.CreatePort(Port{ID: fmt.Sprint("p", i), ProjectID: "a", NetworkID: defaultNetwork,
				MACAddress: fmt.Sprintf("fa:16:3e:00:00:%02x", i)}); err != nil {
				return err
			}
		}
		if n, err := tx.Count(QuotaPort, "a"); err != nil || n != 3 {
			t.Errorf("Count inside the transaction = %d %v, want 3", n, err)
		}
		if ps, err := s.ListPorts(ctx, ""); err != nil || len(ps) != 0 {
			t.Errorf("a reader sees %d ports %v before commit, want 0", len(ps), err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write = %v, want fn's error", err)
	}
	if ps, err := s.ListPorts(ctx, ""); err != nil || len(ps) != 0 {
		t.Errorf("after a failed Write: %d ports %v, want 0", len(ps), err)
	}
	err = s.Write(ctx, func(tx *Tx) error {
		p := Port{ID: "a1", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:01"}
		if err := tx.CreatePort(p); err != nil {
			return err
		}
		p.ID = "a2"
		if err := tx.CreatePort(p); !errors.Is(err, ErrConflict) {
			t.Errorf("same MAC twice: %v, want ErrConflict", err)
		}
		p.MACAddress = "fa:16:3e:00:00:02"
		return tx.CreatePort(p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if ps, err := s.ListPorts(ctx, ""); err != nil || len(ps) != 2 {
		t.Errorf("after a retried insert: %d ports %v, want 2", len(ps), err)
	}
}

// TestQuotaOverrides: set, list, read and delete a project's overrides.
func TestQuotaOverrides(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	if err := s.DeleteQuotas(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteQuotas without overrides = %v, want ErrNotFound", err)
	}
	if err := s.SetQuotas(ctx, "a", Limits{QuotaPort: 5, QuotaTapFlow: -1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuotas(ctx, "a", Limits{QuotaPort: 7}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuotas(ctx, "b", Limits{QuotaTapService: 0}, nil); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := s.SetQuotas(ctx, "c", Limits{QuotaTapService: 1}, func(string, int, int) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("SetQuotas with a refusing check = %v, want its error", err)
	}
	all, order, err := s.ListQuotaOverrides(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(order, all); got != "[a b] map[a:map[port:7 tap_flow:-1] b:map[tap_service:0]]" {
		t.Errorf("ListQuotaOverrides = %s", got)
	}
	if err := s.DeleteQuotas(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if l, err := s.QuotaOverrides(ctx, "a"); err != nil || len(l) != 0 {
		t.Errorf("overrides after delete = %v %v, want none", l, err)
	}
}

// TestUsage: the usage the triggers keep follows creates, rolled-back
// creates and cascaded deletes, per project.
func TestUsage(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	for _, project := range []string{"a", "b"} {
		err := s.Write(ctx, func(tx *Tx) error {
			for i := range 3 {
				id := fmt.Sprint(project, "p", i)
				if err := tx.CreatePort(Port{ID: id, ProjectID: project, NetworkID: defaultNetwork,
					MACAddress: fmt.Sprintf("fa:16:3e:%s:00:%02x", map[string]string{"a": "0a", "b": "0b"}[project], i)}); err != nil {
					return err
				}
			}
			if err := tx.CreateTapService(TapService{ID: project + "s", ProjectID: project, PortID: project + "p0"}, 0); err != nil {
				return err
			}
			for i := range 2 {
				if err := tx.CreateTapFlow(TapFlow{ID: fmt.Sprint(project, "f", i), ProjectID: project,
					TapServiceID: project + "s", SourcePort: fmt.Sprint(project, "p", i+1), Direction: "IN"}); err != nil {
					return err
				}
				if err := tx.CreateTapMirror(TapMirror{ID: fmt.Sprint(project, "m", i), ProjectID: project,
					PortID: fmt.Sprint(project, "p", i), Directions: Directions{{"IN", json.RawMessage(fmt.Sprint(i))}},
					RemoteIP: "192.0.2.1", MirrorType: "gre"}, project); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	boom := errors.New("boom")
	if err := s.Write(ctx, func(tx *Tx) error {
		if err := tx.CreatePort(Port{ID: "gone", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:99"}); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	// Deleting a's monitor port cascades to its service, both flows and
	// mirror m0; deleting b's source port p1 to one flow and mirror m1.
	if _, _, err := s.DeletePort(ctx, "a", "ap0"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DeletePort(ctx, "b", "bp1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNetwork(ctx, Network{ID: "bn", ProjectID: "b"}); err != nil {
		t.Fatal(err)
	}
	for project, want := range map[string]string{"a": "map[network:0 port:2 tap_flow:0 tap_mirror:1 tap_service:0]",
		"b":       "map[network:1 port:2 tap_flow:1 tap_mirror:1 tap_service:1]",
		"c":       "map[network:0 port:0 tap_flow:0 tap_mirror:0 tap_service:0]",
		"default": "map[network:1 port:0 tap_flow:0 tap_mirror:0 tap_service:0]"} {
		u, err := s.Usage(ctx, project)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(u) != want {
			t.Errorf("Usage(%s) = %v, want %s", project, u, want)
		}
	}
}

// TestNetworkUsageOnOldDatabase: migration 0005 counts the networks a
// database from before it holds, per project, and the triggers count
// those created and deleted after it.
func TestNetworkUsageOnOldDatabase(t *testing.T) {
	sqliteOnly(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "taas.db")
	// Build the database as 0004 left it, with networks of two projects.
	s := open(t, path)
	if _, err := s.w.ExecContext(ctx, `DROP TRIGGER networks_usage_insert; DROP TRIGGER networks_usage_delete;
		DELETE FROM quota_usages WHERE resource = 'network'; DELETE FROM schema_migrations WHERE version = 5`); err != nil {
		t.Fatal(err)
	}
	for _, n := range []Network{{ID: "a1", ProjectID: "a"}, {ID: "a2", ProjectID: "a"}, {ID: "b1", ProjectID: "b"}} {
		if err := s.CreateNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if u, err := s.Usage(ctx, "a"); err != nil || u[QuotaNetwork] != 0 {
		t.Fatalf("Usage(a) before 0005 = %v %v, want no networks counted", u, err)
	}
	s.Close()

	s = open(t, path)
	if err := s.CreateNetwork(ctx, Network{ID: "b2", ProjectID: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `DELETE FROM networks WHERE id = 'a1'`); err != nil {
		t.Fatal(err)
	}
	for project, want := range map[string]int{"a": 1, "b": 2, "default": 1, "c": 0} {
		u, err := s.Usage(ctx, project)
		if err != nil {
			t.Fatal(err)
		}
		if u[QuotaNetwork] != want {
			t.Errorf("Usage(%s)[network] = %d, want %d", project, u[QuotaNetwork], want)
		}
	}
}

// holdWriter queues a Write whose fn waits for the returned release, so
// that the Writes queued meanwhile go into the writer's next batch. It
// returns once the writer runs that fn; wait returns the held Write's
// error.
func holdWriter(t *testing.T, s *Store) (release func(), wait func() error) {
	t.Helper()
	running, rel, res := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		res <- s.Write(context.Background(), func(tx *Tx) error {
			close(running)
			<-rel
			return tx.CreatePort(Port{ID: "held", ProjectID: "a", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:0f:00"})
		})
	}()
	<-running
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return release, func() error { return <-res }
}

// waitQueued waits until n Writes are queued for the writer.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(s.queue) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d Writes queued after 10s, want %d", len(s.queue), n)
		}
	}
}

// TestGroupCommit: Writes queued while one commits share the next commit,
// and each gets its own outcome: one fn's error, constraint violation or
// panic undoes its own work only, and a Write whose ctx ends while it
// waits returns at once and never runs.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	port := func(id, mac string) Port {
		return Port{ID: id, ProjectID: "a", NetworkID: defaultNetwork, MACAddress: mac}
	}
	before := s.batches.Load()
	release, held := holdWriter(t, s)

	boom := errors.New("boom")
	cases := []struct {
		name string
		fn   func(tx *Tx) error
		want error // nil: committed
		rows []string
	}{
		{"ok", func(tx *Tx) error { return tx.CreatePort(port("ok1", "fa:16:3e:00:00:01")) }, nil, []string{"ok1"}},
		{"fails after a write", func(tx *Tx) error {
			if err := tx.CreatePort(port("gone1", "fa:16:3e:00:00:02")); err != nil {
				return err
			}
			return boom
		}, boom, nil},
		{"ok with two rows", func(tx *Tx) error {
			if err := tx.CreatePort(port("ok2", "fa:16:3e:00:00:03")); err != nil {
				return err
			}
			return tx.CreatePort(port("ok3", "fa:16:3e:00:00:04"))
		}, nil, []string{"ok2", "ok3"}},
		{"constraint after a write", func(tx *Tx) error {
			if err := tx.CreatePort(port("gone2", "fa:16:3e:00:00:05")); err != nil {
				return err
			}
			return tx.CreatePort(port("gone3", "fa:16:3e:00:00:01")) // ok1's MAC, in the batch before it
		}, ErrConflict, nil},
		{"sees the batch's earlier writes", func(tx *Tx) error {
			if _, err := tx.GetPort("a", "ok1"); err != nil {
				return err
			}
			return tx.CreatePort(port("ok4", "fa:16:3e:00:00:05")) // gone2's MAC: rolled back
		}, nil, []string{"ok4"}},
	}
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Write(ctx, tc.fn)
		}()
		waitQueued(t, s, i+1) // keep the order of the table
	}
	// A panic, raised again in its caller.
	wg.Add(1)
	var panicked any
	go func() {
		defer wg.Done()
		defer func() { panicked = recover() }()
		s.Write(ctx, func(tx *Tx) error { //nolint:errcheck // it panics
			if err := tx.CreatePort(port("gone4", "fa:16:3e:00:00:06")); err != nil {
				return err
			}
			panic("fn panics")
		})
	}()
	waitQueued(t, s, len(cases)+1)
	// Cancelled while queued: returns at once, with the writer held.
	cctx, cancel := context.WithCancel(ctx)
	ran := false
	cancelled := make(chan error)
	go func() { cancelled <- s.Write(cctx, func(*Tx) error { ran = true; return nil }) }()
	waitQueued(t, s, len(cases)+2)
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("Write cancelled while queued = %v, want context.Canceled", err)
	}

	release()
	if err := held(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if got := s.batches.Load() - before; got != 2 {
		t.Errorf("%d write transactions, want 2: the held one and one for every Write queued meanwhile", got)
	}
	var want []string
	for i, tc := range cases {
		if !errors.Is(errs[i], tc.want) || (tc.want == nil) != (errs[i] == nil) {
			t.Errorf("%s: Write = %v, want %v", tc.name, errs[i], tc.want)
		}
		want = append(want, tc.rows...)
	}
	if panicked != "fn panics" {
		t.Errorf("a panicking fn: the caller recovered %v, want its panic", panicked)
	}
	if ran {
		t.Error("the cancelled Write's fn ran")
	}
	ps, err := s.ListPorts(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, p := range ps {
		got = append(got, p.ID)
	}
	want = append([]string{"held"}, want...)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ports after the batch = %v, want %v", got, want)
	}
	if u, err := s.Usage(ctx, "a"); err != nil || u[QuotaPort] != len(want) {
		t.Errorf("port usage = %v %v, want %d", u, err, len(want))
	}
}

// TestWriteAfterClose: a Write on a closed store, or queued when it
// closes, fails with ErrClosed.
func TestWriteAfterClose(t *testing.T) {
	s := open(t, testDB(t))
	release, held := holdWriter(t, s)
	queued := make(chan error)
	go func() { queued <- s.Write(context.Background(), func(*Tx) error { return nil }) }()
	waitQueued(t, s, 1)
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	for {
		select {
		case <-s.quit:
		default:
			time.Sleep(time.Millisecond)
			continue
		}
		break
	}
	release()
	if err := held(); err != nil {
		t.Errorf("the Write running at Close = %v, want it committed", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := <-queued; !errors.Is(err, ErrClosed) && err != nil {
		t.Errorf("a Write queued at Close = %v, want ErrClosed (or nil, had it been taken)", err)
	}
	if err := s.Write(context.Background(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}

// TestQuotaOverridesMemo: the writer's memo of quota overrides (issue 10)
// never hides a change. A read after SetQuotas or DeleteQuotas sees it, in
// a later transaction or later in the same one, and a SetQuotas that its
// check refuses leaves nothing behind, in the transaction or the memo.
func TestQuotaOverridesMemo(t *testing.T) {
	ctx := context.Background()
	s := open(t, testDB(t))
	readIn := func(got *Limits) func(tx *Tx) error {
		return func(tx *Tx) (err error) {
			*got, err = tx.QuotaOverrides("a")
			return err
		}
	}
	read := func() Limits {
		t.Helper()
		var l Limits
		if err := s.Write(ctx, readIn(&l)); err != nil {
			t.Fatal(err)
		}
		return l
	}
	flows := func(n int) Limits { return Limits{QuotaTapFlow: n} }
	if l := read(); len(l) != 0 { // the memo now holds a's none
		t.Fatalf("QuotaOverrides before any = %v, want none", l)
	}
	if err := s.SetQuotas(ctx, "a", flows(5), nil); err != nil {
		t.Fatal(err)
	}
	if l := read(); !maps.Equal(l, flows(5)) {
		t.Errorf("QuotaOverrides after SetQuotas = %v, want %v", l, flows(5))
	}

	// One transaction: set 7, read, a refused set of 9, read.
	release, held := holdWriter(t, s)
	refused := errors.New("refused")
	var first, second Limits
	errs := make([]error, 4)
	fns := []func() error{
		func() error { return s.SetQuotas(ctx, "a", flows(7), nil) },
		func() error { return s.Write(ctx, readIn(&first)) },
		func() error {
			return s.SetQuotas(ctx, "a", flows(9), func(string, int, int) error { return refused })
		},
		func() error { return s.Write(ctx, readIn(&second)) },
	}
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
		waitQueued(t, s, i+1)
	}
	batches := s.batches.Load()
	release()
	wg.Wait()
	if err := held(); err != nil {
		t.Fatal(err)
	}
	if n := s.batches.Load() - batches; n != 1 {
		t.Fatalf("%d transactions, want the 4 writes in one", n)
	}
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], refused) || errs[3] != nil {
		t.Fatalf("Write errors = %v, want nil, nil, %v, nil", errs, refused)
	}
	if !maps.Equal(first, flows(7)) || !maps.Equal(second, flows(7)) {
		t.Errorf("QuotaOverrides in the transaction = %v then %v, want %v both", first, second, flows(7))
	}
	if l := read(); !maps.Equal(l, flows(7)) {
		t.Errorf("QuotaOverrides after it = %v, want %v", l, flows(7))
	}
	if err := s.DeleteQuotas(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if l := read(); len(l) != 0 {
		t.Errorf("QuotaOverrides after DeleteQuotas = %v, want none", l)
	}
}
