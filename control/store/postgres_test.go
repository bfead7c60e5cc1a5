package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/internal/testutil"
)

// The tests of several Stores on one PostgreSQL database, as several taasd
// of a fleet hold it (issue 14): each Store has its own pools and writer,
// so they stand for processes. They run in every pass.

// openTwo opens two Stores on one fresh PostgreSQL database.
func openTwo(t *testing.T) (a, b *Store, dsn string) {
	t.Helper()
	dsn = testutil.StartPostgres(t)
	return open(t, dsn), open(t, dsn), dsn
}

// errOverQuota is what the test's quota check returns, as control's does.
var errOverQuota = errors.New("over quota")

// TestPostgresConcurrentStores: creates from two Stores at once, which
// together exceed a quota, the tap service limit, or collide on a MAC:
// exactly the allowed number succeed, every other gets its sentinel (no
// other error), and the counts the triggers keep match the rows.
func TestPostgresConcurrentStores(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTwo(t)
	stores := []*Store{a, b}
	if err := a.CreatePort(ctx, Port{ID: "mon", ProjectID: "q", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetQuotas(ctx, "q", Limits{QuotaPort: 11}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if err := a.CreateNetwork(ctx, Network{ID: fmt.Sprint("n", i), ProjectID: "q"}); err != nil {
			t.Fatal(err)
		}
	}
	const workers, each = 4, 5 // per store
	// run calls create from workers goroutines per store, each times, and
	// counts the outcomes: nil, the sentinels in want, anything else.
	run := func(t *testing.T, create func(s *Store, w, i int) error, want ...error) (ok int, by map[error]int) {
		t.Helper()
		var (
			mu    sync.Mutex
			wg    sync.WaitGroup
			other []error
		)
		by = map[error]int{}
		for si, s := range stores {
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						err := create(s, si*workers+w, i)
						mu.Lock()
						switch i := slices.IndexFunc(want, func(e error) bool { return errors.Is(err, e) }); {
						case err == nil:
							ok++
						case i >= 0:
							by[want[i]]++
						default:
							other = append(other, err)
						}
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		for _, err := range other {
			t.Errorf("create: %v, want nil or one of %v", err, want)
		}
		return ok, by
	}
	before := a.retries.Load() + b.retries.Load()
	t.Run("quota", func(t *testing.T) {
		// As control's create checks a quota: the override and the use,
		// read in the transaction that inserts.
		ok, by := run(t, func(s *Store, w, i int) error {
			return s.Write(ctx, func(tx *Tx) error {
				l, err := tx.QuotaOverrides("q")
				if err != nil {
					return err
				}
				n, err := tx.Count(QuotaPort, "q")
				if err != nil {
					return err
				}
				if n >= l[QuotaPort] {
					return errOverQuota
				}
				return tx.CreatePort(Port{ID: fmt.Sprintf("q-%d-%d", w, i), ProjectID: "q", NetworkID: defaultNetwork,
					MACAddress: fmt.Sprintf("fa:16:3e:01:%02x:%02x", w, i)})
			})
		}, errOverQuota)
		if ok != 10 || by[errOverQuota] != 2*workers*each-10 {
			t.Errorf("%d created, %d over quota; want 10 (the quota of 11, one port there before) and %d", ok, by[errOverQuota], 2*workers*each-10)
		}
	})
	t.Run("tap service limit", func(t *testing.T) {
		ok, by := run(t, func(s *Store, w, i int) error {
			return s.CreateTapService(ctx, TapService{ID: fmt.Sprintf("s-%d-%d", w, i), ProjectID: "q", PortID: "mon", Status: "DOWN"}, 7)
		}, ErrLimitReached)
		if ok != 7 || by[ErrLimitReached] != 2*workers*each-7 {
			t.Errorf("%d created, %d ErrLimitReached; want 7 and %d", ok, by[ErrLimitReached], 2*workers*each-7)
		}
	})
	t.Run("MAC on interface", func(t *testing.T) {
		// One MAC on one interface, each worker on a network of its own:
		// migration 0003's trigger, racing itself across the stores.
		ok, by := run(t, func(s *Store, w, i int) error {
			return s.CreatePort(ctx, Port{ID: fmt.Sprintf("m-%d-%d", w, i), ProjectID: "m", NetworkID: fmt.Sprint("n", w),
				MACAddress: "fa:16:3e:02:00:01", Interface: "cap0"})
		}, ErrMACInUse, ErrConflict)
		if ok != 1 || by[ErrMACInUse]+by[ErrConflict] != 2*workers*each-1 {
			t.Errorf("%d created, %v refused; want 1 and the rest ErrMACInUse or ErrConflict", ok, by)
		}
	})
	t.Run("MAC on network", func(t *testing.T) {
		ok, by := run(t, func(s *Store, w, i int) error {
			return s.CreatePort(ctx, Port{ID: fmt.Sprintf("u-%d-%d", w, i), ProjectID: "m", NetworkID: defaultNetwork,
				MACAddress: "fa:16:3e:03:00:01"})
		}, ErrConflict)
		if ok != 1 || by[ErrConflict] != 2*workers*each-1 {
			t.Errorf("%d created, %d ErrConflict; want 1 and %d", ok, by[ErrConflict], 2*workers*each-1)
		}
	})
	t.Logf("%d write transactions ran again after a serialization failure", a.retries.Load()+b.retries.Load()-before)
	checkIntegrity(t, a)
}

// TestPostgresConcurrentCascade: one Store deletes ports while the other
// creates services and flows on them; afterwards no flow or service
// outlives its port (checked in SQL, against the foreign keys' intent),
// and the usage the triggers keep matches the rows.
func TestPostgresConcurrentCascade(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTwo(t)
	const ports = 12
	for i := range ports {
		for k, kind := range []string{"src", "mon"} {
			if err := a.CreatePort(ctx, Port{ID: fmt.Sprintf("%s%d", kind, i), ProjectID: "c", NetworkID: defaultNetwork,
				MACAddress: fmt.Sprintf("fa:16:3e:04:%02x:%02x", k, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*ports*4)
	for i := range ports {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range 3 {
				err := b.Write(ctx, func(tx *Tx) error {
					svc := fmt.Sprintf("svc%d-%d", i, j)
					if err := tx.CreateTapService(TapService{ID: svc, ProjectID: "c", PortID: fmt.Sprint("mon", i), Status: "DOWN"}, 0); err != nil {
						return err
					}
					return tx.CreateTapFlow(TapFlow{ID: fmt.Sprintf("flow%d-%d", i, j), ProjectID: "c", TapServiceID: svc,
						SourcePort: fmt.Sprint("src", i), Direction: "BOTH", Status: "DOWN"})
				})
				if err != nil && !errors.Is(err, ErrNotFound) {
					errs <- fmt.Errorf("create on port %d: %w", i, err)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for _, kind := range []string{"src", "mon"} {
				if _, _, err := a.DeletePort(ctx, "", fmt.Sprint(kind, i)); err != nil {
					errs <- fmt.Errorf("delete port %s%d: %w", kind, i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var left int
	if err := a.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM tap_services) + (SELECT count(*) FROM tap_flows)
		+ (SELECT count(*) FROM ports WHERE project_id = 'c')`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d ports, services and flows left after deleting every port (%v), want 0", left, err)
	}
	checkIntegrity(t, a)
}

// checkIntegrity checks in SQL that every reference resolves and that
// quota_usages counts the rows.
func checkIntegrity(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`SELECT count(*) FROM tap_flows f WHERE NOT EXISTS (SELECT 1 FROM tap_services s WHERE s.id = f.tap_service_id)
			OR NOT EXISTS (SELECT 1 FROM ports p WHERE p.id = f.source_port)`,
		`SELECT count(*) FROM tap_services s WHERE NOT EXISTS (SELECT 1 FROM ports p WHERE p.id = s.port_id)`,
		`SELECT count(*) FROM tap_mirrors m WHERE NOT EXISTS (SELECT 1 FROM ports p WHERE p.id = m.port_id)`,
		`SELECT count(*) FROM quota_usages u WHERE u.in_use <> CASE u.resource
			WHEN 'network' THEN (SELECT count(*) FROM networks WHERE project_id = u.project_id)
			WHEN 'port' THEN (SELECT count(*) FROM ports WHERE project_id = u.project_id)
			WHEN 'tap_service' THEN (SELECT count(*) FROM tap_services WHERE project_id = u.project_id)
			WHEN 'tap_flow' THEN (SELECT count(*) FROM tap_flows WHERE project_id = u.project_id)
			WHEN 'tap_mirror' THEN (SELECT count(*) FROM tap_mirrors WHERE project_id = u.project_id) END`,
	} {
		var n int
		if err := s.r.QueryRowContext(ctx, q).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d rows break integrity (%v): %s", n, err, q)
		}
	}
}

// TestPostgresNotify: a write through one Store bumps the other's
// Generation and wakes its subscribers, in well under a second; its own
// subscribers are not woken by its own writes (their callers know), and a
// status write bumps the other's Generation without waking anybody.
func TestPostgresNotify(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTwo(t)
	wakeB, stopB := b.Subscribe()
	defer stopB()
	wakeA, stopA := a.Subscribe()
	defer stopA()
	var took []time.Duration
	for i := range 20 {
		gen := b.Generation()
		start := time.Now()
		if err := a.CreateNetwork(ctx, Network{ID: fmt.Sprint("n", i), ProjectID: "x"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-wakeB:
			took = append(took, time.Since(start))
		case <-time.After(10 * time.Second):
			t.Fatalf("write %d through A: B's subscriber not woken within 10 s", i)
		}
		if b.Generation() == gen {
			t.Errorf("write %d through A: B's Generation still %d once woken", i, gen)
		}
	}
	slices.Sort(took)
	t.Logf("write through A -> B woken (commit included): median %v, max %v of %d", took[len(took)/2], took[len(took)-1], len(took))
	select {
	case <-wakeA:
		t.Error("A's subscriber woken by A's own writes")
	default:
	}
	// A status write bumps B's Generation (its lists show statuses) but
	// wakes nobody: B's reconciler would answer with its own.
	if err := a.Write(ctx, func(tx *Tx) error {
		if err := tx.CreatePort(Port{ID: "p", ProjectID: "x", NetworkID: defaultNetwork, MACAddress: "fa:16:3e:05:00:01"}); err != nil {
			return err
		}
		return tx.CreateTapService(TapService{ID: "s", ProjectID: "x", PortID: "p", Status: "DOWN"}, 0)
	}); err != nil {
		t.Fatal(err)
	}
	<-wakeB // one transaction, one notification
	gen := b.Generation()
	if err := a.SetStatuses(ctx, map[string]Status{"s": {State: "ACTIVE"}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Generation() == gen && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if b.Generation() == gen {
		t.Error("a status write through A did not bump B's Generation within 10 s")
	}
	select {
	case <-wakeB:
		t.Error("a status write through A woke B's subscriber")
	default:
	}
}

// TestPostgresRelisten: when a Store's LISTEN connection drops, it
// reconnects and then wakes its subscribers (a full resync: it may have
// missed changes), and notifications flow again.
func TestPostgresRelisten(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTwo(t)
	wake, stop := b.Subscribe()
	defer stop()
	gen := b.Generation()
	// Kill every LISTEN backend of the database: A's and B's listeners.
	var killed int
	if err := a.w.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&killed); err != nil || killed != 2 {
		t.Fatalf("terminated %d listeners (%v), want 2", killed, err)
	}
	start := time.Now()
	select {
	case <-wake:
		t.Logf("listener back and subscriber woken %v after its connection was killed", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("subscriber not woken within 30 s of the listener's connection drop")
	}
	if b.Generation() == gen {
		t.Error("Generation unchanged after the listener reconnected")
	}
	if err := a.CreateNetwork(ctx, Network{ID: "after", ProjectID: "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("a write after the reconnection did not wake the subscriber within 10 s")
	}
}

// TestPostgresConcurrentOpen: taasd started at once on a new database
// migrate it once: every Open succeeds and each migration is recorded
// once.
func TestPostgresConcurrentOpen(t *testing.T) {
	ctx := context.Background()
	dsn := testutil.StartPostgres(t)
	var wg sync.WaitGroup
	stores := make([]*Store, 4)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(ctx, dsn)
		}()
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { s.Close() })
	}
	if t.Failed() {
		return
	}
	got, err := stores[0].Migrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := migrations.ReadDir("migrations") // embedded: cannot fail
	if len(got) != len(names) {
		t.Errorf("%d migrations recorded, want %d: %v", len(got), len(names), got)
	}
	if nets, err := stores[1].ListNetworks(ctx, ""); err != nil || len(nets) != 1 {
		t.Errorf("%d networks (%v), want the one default network", len(nets), err)
	}
}

// TestPostgresOpenRedacts: an error opening a PostgreSQL URL never holds
// its password.
func TestPostgresOpenRedacts(t *testing.T) {
	dir := t.TempDir() // no server there
	for _, dsn := range []string{
		"postgres://taas:s3cretpw@/taas?host=" + dir,
		"postgresql:///taas?host=" + dir + "&user=taas&password=s3cretpw",
		"postgres://taas:s3cretpw@[::1/taas", // does not parse
		// These two were SQLite files named after the DSN, password
		// and all.
		"POSTGRES://taas:s3cretpw@/taas?host=" + dir,
		"host=" + dir + " user=taas password=s3cretpw dbname=taas",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := Open(ctx, dsn)
		cancel()
		if err == nil || strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("Open(%s) = %v, want an error without the password", Redact(dsn), err)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"/var/lib/taas/taas.db", "/var/lib/taas/taas.db"},
		{"postgres://taas:pw@db1:5432/taas", "postgres://taas:xxxxx@db1:5432/taas"},
		{"postgres://taas@db1/taas?sslmode=verify-full", "postgres://taas@db1/taas?sslmode=verify-full"},
		{"postgresql:///taas?host=/run/pg&password=pw", "postgresql:///taas?host=%2Frun%2Fpg&password=xxxxx"},
		{"postgres://taas:pw@[::1/taas", "postgres://(unparsable URL)"},
		{"PostgreSQL://taas:pw@db1/taas", "postgresql://taas:xxxxx@db1/taas"},
		{"postgres://taas:pw@h1:5432,h2:5432/taas", "postgres://taas:xxxxx@h1:5432,h2:5432/taas"},
		{"postgres://taas@db1/taas?Password=pw", "postgres://taas@db1/taas?Password=xxxxx"},
		{"host=db1 user=taas password=pw dbname=taas", "host=db1 user=taas password=xxxxx dbname=taas"},
		{" host = db1  password = 'p w\\' x' ", "host=db1 password=xxxxx"},
		{`password=p\ w host=db1`, "password=xxxxx host=db1"},
		{"host=db1 password='unterminated", "(unparsable keyword/value DSN)"},
	}
	for _, tc := range tests {
		if got := Redact(tc.dsn); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}

// TestIsPostgresURL: which --db values are PostgreSQL: a URL's scheme in
// any case, and libpq's keyword/value form, were SQLite file names.
func TestIsPostgresURL(t *testing.T) {
	for dsn, want := range map[string]bool{
		"/var/lib/taas/taas.db":        false,
		"taas.db":                      false,
		"file:taas.db?_foreign_keys=1": false,
		"data=1.db":                    false,
		"postgres://db1/taas":          true,
		"postgresql://db1/taas":        true,
		"POSTGRES://db1/taas":          true,
		"host=db1 dbname=taas":         true,
		" dbname = taas":               true,
		"Host=db1":                     true,
	} {
		if got := IsPostgresURL(dsn); got != want {
			t.Errorf("IsPostgresURL(%q) = %v, want %v", dsn, got, want)
		}
	}
}

func TestRebind(t *testing.T) {
	tests := []struct{ q, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`INSERT INTO t VALUES (?, ?, ?)`, `INSERT INTO t VALUES ($1, $2, $3)`},
		{`WHERE id = ?2 AND (?1 = '' OR project_id = ?1)`, `WHERE id = $2 AND ($1 = '' OR project_id = $1)`},
		{`SELECT ?2, ?`, `SELECT $2, $3`},
		{`SELECT '?', "a?b", ? -- why?` + "\n" + `, ?`, `SELECT '?', "a?b", $1 -- why?` + "\n" + `, $2`},
		{`AS $$ SELECT '?' $$; SELECT ?`, `AS $$ SELECT '?' $$; SELECT $1`},
		{`AS $body$ ? $body$ ?`, `AS $body$ ? $body$ $1`},
		{`SELECT '`, `SELECT '`},
		// Block comments, nested as PostgreSQL nests them, and dollar
		// quotes with any identifier for a tag.
		{`SELECT /* why? */ ?`, `SELECT /* why? */ $1`},
		{`/* a /* ? */ ? */ ?`, `/* a /* ? */ ? */ $1`},
		{`SELECT ? /* ?`, `SELECT $1 /* ?`},
		{`AS $Body_1$ ? $Body_1$ ?`, `AS $Body_1$ ? $Body_1$ $1`},
		{`AS $_$ ? $_$ ?`, `AS $_$ ? $_$ $1`},
		{`SELECT a$b, ?, $c ? $`, `SELECT a$b, $1, $c $2 $`},
	}
	for _, tc := range tests {
		if got := rebind(tc.q); got != tc.want {
			t.Errorf("rebind(%q) = %q, want %q", tc.q, got, tc.want)
		}
	}
}

// FuzzRebind: rebind never panics, keeps every byte outside the
// parameters, and is idempotent.
func FuzzRebind(f *testing.F) {
	for _, s := range []string{`SELECT ?1, ?`, `'?' ? "?" -- ?`, `$$ ? $$ ?`, `$a$ ?`, `?99999999999999999999`, `/* ? /* ? */ */ ?`, `$T_1$ ? $T_1$ ?`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		got := rebind(q)
		// A ? right after $ or an identifier becomes $N there, which
		// makes a dollar quote's tag of what was not one: such input
		// (never the store's SQL) need not rebind to itself again.
		glued := false
		for i := 1; i < len(q); i++ {
			glued = glued || q[i] == '?' && (q[i-1] == '$' || identByte(q[i-1]))
		}
		if again := rebind(got); again != got && !glued {
			t.Errorf("rebind(rebind(%q)) = %q, want %q", q, again, got)
		}
		if strings.Count(got, "?") > strings.Count(q, "?") {
			t.Errorf("rebind(%q) = %q adds question marks", q, got)
		}
	})
}

// FuzzRedact: a password never survives Redact, in whichever form the
// DSN holds it: a URL's user info or password parameter (any case of the
// scheme), a keyword/value DSN's password, quoted or not.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{"pw", "p%40w", "s3cret", "a:b", "it's", `b\s`} {
		for form := range uint8(5) {
			f.Add(s, "db1:5432/taas?sslmode=disable", form)
		}
	}
	f.Fuzz(func(t *testing.T, pw, rest string, form uint8) {
		if len(pw) < 4 || strings.Contains("xxxxx (unparsable URL) (unparsable keyword/value DSN)", pw) {
			return // too short to tell from the rest
		}
		var dsn, without string
		quote := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
		switch form % 5 {
		case 0:
			dsn, without = "postgres://taas:"+url.PathEscape(pw)+"@"+rest, "postgres://taas:@"+rest
		case 1:
			dsn, without = "POSTGRESQL://taas:"+url.PathEscape(pw)+"@"+rest, "POSTGRESQL://taas:@"+rest
		case 2:
			dsn, without = "postgres:///taas?host="+rest+"&password="+url.QueryEscape(pw), "postgres:///taas?host="+rest+"&password="
		case 3, 4:
			if rest == "" || strings.ContainsAny(rest, spaces+`'\=`) {
				return // not one value: the DSN means something else
			}
		}
		switch form % 5 {
		case 3:
			dsn, without = "host="+rest+" password='"+quote.Replace(pw)+"' dbname=taas", "host="+rest+" password='' dbname=taas"
		case 4:
			if strings.ContainsAny(pw, spaces+`'\`) {
				return // needs quotes: case 3
			}
			dsn, without = "user=taas password="+pw+" host="+rest, "user=taas password= host="+rest
		}
		got := Redact(dsn)
		for _, leak := range []string{pw, url.PathEscape(pw), url.QueryEscape(pw), quote.Replace(pw)} {
			if strings.Contains(got, leak) && !strings.Contains(without, leak) && !strings.Contains(Redact(without), leak) {
				t.Errorf("Redact(%q) = %q holds the password", dsn, got)
			}
		}
	})
}

func TestMigrationSQL(t *testing.T) {
	body := "a\n-- [sqlite]\nb\n-- [end]\n-- [postgres]\nc\n-- [end]\nd\n"
	for d, want := range map[dialect]string{sqliteDialect: "a\nb\nd\n", postgresDialect: "a\nc\nd\n"} {
		if got, err := d.migrationSQL(body); err != nil || got != want {
			t.Errorf("%s: migrationSQL = %q %v, want %q", d, got, err, want)
		}
	}
	for _, bad := range []string{"-- [sqlite]\n-- [postgres]\n", "-- [end]\n", "-- [sqlite]\na\n"} {
		if _, err := sqliteDialect.migrationSQL(bad); err == nil {
			t.Errorf("migrationSQL(%q) = nil error, want one", bad)
		}
	}
}

// TestPostgresUnavailable: while the server is down, reads and writes fail
// with ErrUnavailable (the API's 503); once it is back, they succeed again
// on new connections, and the listener's return wakes subscribers.
func TestPostgresUnavailable(t *testing.T) {
	ctx := context.Background()
	c := testutil.StartPostgresCluster(t)
	s := open(t, c.CreateDB(t))
	wake, stop := s.Subscribe()
	defer stop()
	if err := s.CreateNetwork(ctx, Network{ID: "before", ProjectID: "x"}); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if err := s.CreateNetwork(ctx, Network{ID: "during", ProjectID: "x"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("CreateNetwork with the server down = %v, want ErrUnavailable", err)
	}
	if _, err := s.GetNetwork(ctx, "", "before"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("GetNetwork with the server down = %v, want ErrUnavailable", err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNetwork(ctx, Network{ID: "after", ProjectID: "x"}); err != nil {
		t.Errorf("CreateNetwork once the server is back = %v", err)
	}
	if n, err := s.GetNetwork(ctx, "", "before"); err != nil || n.ID != "before" {
		t.Errorf("GetNetwork once the server is back = %+v %v", n, err)
	}
	select {
	case <-wake:
	case <-time.After(30 * time.Second):
		t.Error("the listener's return did not wake the subscriber within 30 s")
	}
}

// TestPostgresRetry: a write transaction that loses a race with another
// Store's (it read a row the other then changed, and writes it) fails to
// serialize and runs again: fn runs twice, and only the second run's
// writes are committed.
func TestPostgresRetry(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTwo(t)
	if err := a.CreateNetwork(ctx, Network{ID: "first", ProjectID: "r"}); err != nil {
		t.Fatal(err)
	}
	var (
		runs     int
		read     = make(chan struct{})
		release  = make(chan struct{})
		errA     = make(chan error, 1)
		firstRun = true
	)
	go func() {
		errA <- a.Write(ctx, func(tx *Tx) error {
			runs++
			// Reads the project's network usage, which B changes next.
			if _, err := tx.Count(QuotaNetwork, "r"); err != nil {
				return err
			}
			if firstRun {
				firstRun = false
				close(read)
				<-release
			}
			return tx.CreateNetwork(Network{ID: fmt.Sprint("a", runs), ProjectID: "r"})
		})
	}()
	<-read
	if err := b.CreateNetwork(ctx, Network{ID: "b", ProjectID: "r"}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-errA; err != nil {
		t.Fatalf("A's write = %v, want nil after a retry", err)
	}
	if runs != 2 {
		t.Errorf("A's fn ran %d times, want 2 (a serialization failure, then success)", runs)
	}
	nets, err := a.ListNetworks(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range nets {
		if n.ProjectID == "r" {
			ids = append(ids, n.ID)
		}
	}
	if fmt.Sprint(ids) != "[first b a2]" {
		t.Errorf("networks of r = %v, want [first b a2]: the first run's a1 rolled back", ids)
	}
	checkIntegrity(t, a)
}

// TestPostgresDialTimeouts: a TCP connection to PostgreSQL gives up on a
// silent server within userTimeout (TCP_USER_TIMEOUT) and probes an idle
// one (keepalives): a taasd cut off from the database answers 503 in
// seconds, not after the kernel's minutes.
func TestPostgresDialTimeouts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			time.Sleep(time.Second) // hold it while the test reads its options
		}
	}()
	cfg, err := pgConfig("postgres://taasd@" + ln.Addr().String() + "/taas")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.DialFunc(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var user, alive int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		user, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		if gerr == nil {
			alive, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		}
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if time.Duration(user)*time.Millisecond != userTimeout || alive != 1 {
		t.Errorf("TCP_USER_TIMEOUT %d ms, SO_KEEPALIVE %d; want %v and 1", user, alive, userTimeout)
	}
	if cfg.ConnectTimeout != 5*time.Second {
		t.Errorf("ConnectTimeout = %v, want 5s by default", cfg.ConnectTimeout)
	}
}
