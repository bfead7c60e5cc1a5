package testutil

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresCluster is a real PostgreSQL server (Debian's postgresql package,
// whatever major version /usr/lib/postgresql holds) that a test binary
// started in a temporary directory: initdb, then postgres listening on a
// unix socket in that directory only (listen_addresses is empty), with
// fsync and synchronous_commit on, as the store runs in production. Run as
// root, it runs as the postgres user Debian creates (postgres refuses
// root). Trust authentication is safe there: the socket's directory and
// the socket itself are the server user's alone (root reaches them all the
// same).
type PostgresCluster struct {
	// Dir holds the data directory (Dir/data), the socket and the
	// server's log (Dir/postgres.log).
	Dir string
	// Bin is the directory of initdb and postgres.
	Bin string
	// Took is how long initdb and the start took.
	Took time.Duration

	cred *syscall.Credential
	n    atomic.Int64
	// mu guards the server process and templates, the databases
	// Template made, by key.
	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	templates map[string]string
}

// postgresBin returns the bin directory of the newest PostgreSQL under
// /usr/lib/postgresql, or an error saying what is missing.
func postgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres") // a malformed pattern is impossible here
	if len(dirs) == 0 {
		return "", errors.New("no /usr/lib/postgresql/*/bin/postgres: apt-get install postgresql (.ci/run does)")
	}
	version := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p)))) // "15"; not a number sorts first
		return n
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(a) - version(b) })
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

// requirePostgres skips t when PostgreSQL is not installed, except where
// TAAS_REQUIRE_POSTGRES=1 (.ci/run) or CI=true: there it fails t.
func requirePostgres(t testing.TB) string {
	t.Helper()
	bin, err := postgresBin()
	if err != nil {
		if os.Getenv("TAAS_REQUIRE_POSTGRES") == "1" || os.Getenv("CI") == "true" {
			t.Fatalf("required in CI: %v", err)
		}
		t.Skip(err)
	}
	return bin
}

// StartPostgresCluster starts a cluster of t's own, stopped (by its pid)
// and removed when t ends: for a test that stops and restarts the server.
// Other tests share their package's cluster through StartPostgres.
func StartPostgresCluster(t testing.TB) *PostgresCluster {
	t.Helper()
	bin := requirePostgres(t)
	c, err := newPostgresCluster(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.close(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("postgres %s started in %v", c.Dir, c.Took.Round(time.Millisecond))
	return c
}

func newPostgresCluster(bin string) (*PostgresCluster, error) {
	start := time.Now()
	sweepPostgres(time.Hour)
	dir, err := os.MkdirTemp("", "taas-pg-")
	if err != nil {
		return nil, err
	}
	c := &PostgresCluster{Dir: dir, Bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("postgres refuses to run as root, and there is no postgres user to run it as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid) // numeric on Linux
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	// --no-sync: initdb's own files need not reach the disk for a test;
	// the server runs with fsync on.
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, tail(out, 4096))
	}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.Took = time.Since(start)
	return c, nil
}

// sweepPostgres removes the clusters of test binaries that died (a panic,
// a kill: their postgres died with them, Pdeathsig, but their directory
// stayed): those older than age whose server no longer runs.
func sweepPostgres(age time.Duration) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "taas-pg-*")) // a constant, valid pattern
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil || time.Since(fi.ModTime()) < age {
			continue // gone, or maybe still starting
		}
		if b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
			pid, _, _ := strings.Cut(string(b), "\n")
			if n, err := strconv.Atoi(pid); err == nil && syscall.Kill(n, 0) == nil {
				continue // its server runs
			}
		}
		_ = os.RemoveAll(dir) // best effort: another test binary may sweep it at the same time
	}
}

// Start starts the server (again, after Stop) and returns once it accepts
// connections.
func (c *PostgresCluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	log, err := os.OpenFile(filepath.Join(c.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// max_connections: each Store holds a few (a writer, readers, the
	// listener) and a test may open several.
	cmd := exec.Command(filepath.Join(c.Bin, "postgres"), "-D", filepath.Join(c.Dir, "data"),
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+c.Dir, "-c", "unix_socket_permissions=0700",
		"-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=300", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// As startGroup, as the server's user: a group of its own, killed
	// with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: c.cred}
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		log.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // Stop wants it stopped; an early exit shows in the wait below
		log.Close()
		close(exited)
	}()
	c.cmd, c.exited = cmd, exited
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(c.Dir, "postgres.log"))
			return fmt.Errorf("postgres exited: %s", tail(b, 4096))
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready within 60 s: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop stops the server (a fast shutdown: SIGINT to its pid, SIGKILL to
// its group after 10 s) and waits for it to exit.
func (c *PostgresCluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT) // it may have exited already: the wait below returns at once
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		killGroup(c.cmd)
		<-c.exited
	}
	c.cmd = nil
}

func (c *PostgresCluster) close() error {
	c.Stop()
	return os.RemoveAll(c.Dir)
}

// DSN is the URL of database name on the cluster, as taasd's --db takes
// it.
func (c *PostgresCluster) DSN(name string) string {
	q := url.Values{"host": {c.Dir}, "user": {"postgres"}, "sslmode": {"disable"}}
	return "postgres:///" + name + "?" + q.Encode()
}

// CreateDB creates a fresh database for t and returns its URL. It is not
// dropped when t ends: a drop forces a checkpoint, which took 0.5 to 1 s
// on a busy machine with fsync on, more than most tests; the databases
// (8 MB each) go with the cluster's directory when the package's tests
// end.
func (c *PostgresCluster) CreateDB(t testing.TB) string {
	t.Helper()
	return c.createDB(t, "template1")
}

// createDB creates a database for t as a copy of template.
func (c *PostgresCluster) createDB(t testing.TB, template string) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", c.n.Add(1), strings.ToLower(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, t.Name())))
	name = name[:min(len(name), 63)]
	if err := c.exec(fmt.Sprintf(`CREATE DATABASE %q TEMPLATE %q`, name, template)); err != nil {
		t.Fatal(err)
	}
	return c.DSN(name)
}

// Template returns a database that prepare made from a fresh one, once per
// key and cluster, for CreateDBFrom to copy: copying a migrated database
// costs less than migrating each (a template must have no connections
// left when prepare returns).
func (c *PostgresCluster) Template(key string, prepare func(dsn string) error) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name, ok := c.templates[key]; ok {
		return name, nil
	}
	name := "template_" + key
	if err := c.exec(fmt.Sprintf(`CREATE DATABASE %q`, name)); err != nil {
		return "", err
	}
	if err := prepare(c.DSN(name)); err != nil {
		return "", fmt.Errorf("prepare template %s: %w", key, err)
	}
	if c.templates == nil {
		c.templates = map[string]string{}
	}
	c.templates[key] = name
	return name, nil
}

// exec runs one statement on the postgres database.
func (c *PostgresCluster) exec(stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	return nil
}

// The package's shared cluster, started by the first StartPostgres and
// stopped by RunWithPostgres once every test has run.
var (
	sharedPG    *PostgresCluster
	sharedPGErr error
	sharedOnce  sync.Once
	sharedMain  atomic.Bool
)

// RunWithPostgres runs the package's tests and then stops the cluster
// StartPostgres started, if any. A package whose tests call StartPostgres
// has TestMain call it: os.Exit(testutil.RunWithPostgres(m)).
func RunWithPostgres(m *testing.M) int {
	sharedMain.Store(true)
	code := m.Run()
	if sharedPG != nil {
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "testutil: %d databases on the package's postgres cluster\n", sharedPG.n.Load())
		}
		if err := sharedPG.close(); err != nil {
			fmt.Fprintf(os.Stderr, "stop postgres: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// StartPostgres returns the URL of a fresh database for t, on the
// package's PostgreSQL cluster, which the first call starts (initdb and
// start cost about 2 s; a database about 0.2 s). It skips t when
// PostgreSQL is not installed, except where TAAS_REQUIRE_POSTGRES=1
// (.ci/run) or CI=true.
func StartPostgres(t testing.TB) string {
	t.Helper()
	return sharedCluster(t).CreateDB(t)
}

// StartPostgresFrom is StartPostgres with a copy of the package's template
// key (PostgresCluster.Template), which prepare makes on first use.
func StartPostgresFrom(t testing.TB, key string, prepare func(dsn string) error) string {
	t.Helper()
	c := sharedCluster(t)
	name, err := c.Template(key, prepare)
	if err != nil {
		t.Fatal(err)
	}
	return c.createDB(t, name)
}

// sharedCluster returns the package's cluster, started on first use.
func sharedCluster(t testing.TB) *PostgresCluster {
	t.Helper()
	bin := requirePostgres(t)
	if !sharedMain.Load() {
		t.Fatal("StartPostgres: the package's TestMain must run the tests through testutil.RunWithPostgres, which stops the cluster")
	}
	sharedOnce.Do(func() {
		sharedPG, sharedPGErr = newPostgresCluster(bin)
		if sharedPGErr == nil {
			t.Logf("postgres %s started in %v", sharedPG.Dir, sharedPG.Took.Round(time.Millisecond))
		}
	})
	if sharedPGErr != nil {
		t.Fatal(sharedPGErr)
	}
	return sharedPG
}
