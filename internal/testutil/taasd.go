package testutil

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Taasd is one run of the taasd binary that a test started. It is stopped
// (SIGTERM, then SIGKILL after 15 s), by its own pid, when the test ends.
type Taasd struct {
	// URL is the API's base, "http://" + Addr ("https://" with --tls-cert).
	URL, Addr string
	// DB is the SQLite file; LogPath what the process writes (stdout and
	// stderr).
	DB, LogPath string
	// Args are the arguments it was started with, --listen and --db included.
	Args []string
	Cmd  *exec.Cmd
	// Netns is the network namespace it runs in (StartTaasdIn); "" is the
	// test's own.
	Netns string

	bin    string
	client *http.Client // Client's, once made
	exited chan struct{}
	err    error // the exit error, once exited is closed
}

// StartTaasd runs the taasd binary bin (see BuildTaasd) with args until the
// test ends, and returns once GET / answers 200. It adds --listen (a free
// loopback port) and --db (in a temporary directory) unless args name them;
// given as flags they override a --config file's. A start that fails, or
// takes over 60 s, fails the test with the log.
func StartTaasd(t testing.TB, bin string, args ...string) *Taasd {
	t.Helper()
	return StartTaasdIn(t, "", bin, args...)
}

// StartTaasdIn is StartTaasd in the network namespace netns (made by
// Netns; "" is the test's own), as a machine of its own: its API is on
// that namespace's loopback (127.0.0.1:9696 unless args say), which only
// Client reaches, and its netdevs are that namespace's.
func StartTaasdIn(t testing.TB, netns, bin string, args ...string) *Taasd {
	t.Helper()
	dir := t.TempDir()
	// flag returns the value args give flag, as "--flag V" or "--flag=V".
	flag := func(name string) (string, bool) {
		for i, a := range args {
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v, true
			}
			if a == name && i+1 < len(args) {
				return args[i+1], true
			}
		}
		return "", false
	}
	d := &Taasd{bin: bin, LogPath: filepath.Join(dir, "taasd.log"), Netns: netns}
	var ok bool
	if d.Addr, ok = flag("--listen"); !ok {
		d.Addr = "127.0.0.1:9696" // a namespace of its own: free
		if netns == "" {
			d.Addr = FreeLoopbackAddr(t)
		}
		args = append([]string{"--listen", d.Addr}, args...)
	}
	if d.DB, ok = flag("--db"); !ok {
		d.DB = filepath.Join(dir, "taas.db")
		args = append([]string{"--db", d.DB}, args...)
	}
	d.URL = "http://" + d.Addr
	if _, ok := flag("--tls-cert"); ok {
		d.URL = "https://" + d.Addr
	}
	d.Args = args
	d.start(t)
	return d
}

func (d *Taasd) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	d.Cmd = exec.Command(d.bin, d.Args...)
	if d.Netns != "" {
		// ip execs taasd in place: the pid is taasd's.
		d.Cmd = exec.Command("ip", append([]string{"netns", "exec", d.Netns, d.bin}, d.Args...)...)
	}
	d.Cmd.Stdout, d.Cmd.Stderr = logf, logf
	if err := d.Cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start taasd: %v", err)
	}
	d.exited = make(chan struct{})
	go func() {
		d.err = d.Cmd.Wait()
		logf.Close()
		close(d.exited)
	}()
	t.Cleanup(func() {
		if d.client != nil {
			d.client.CloseIdleConnections()
		}
		select {
		case <-d.exited:
		default:
			// Only the process this test started, by its pid.
			_ = d.Cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(15 * time.Second):
				_ = d.Cmd.Process.Kill()
				<-d.exited
			}
		}
		if t.Failed() {
			t.Logf("taasd %s log:\n%s", strings.Join(d.Args, " "), d.Logs())
		}
	})
	waitOK(t, d.Client(), d.URL+"/", 60*time.Second, d.exited, func() string {
		return fmt.Sprintf("taasd %s: %v\n%s", strings.Join(d.Args, " "), d.err, d.Logs())
	})
}

// Client reaches taasd's API: it connects from inside taasd's network
// namespace (StartTaasdIn). Over HTTPS, with --tls-cert, it trusts
// whatever certificate taasd serves (its own child, on loopback); tests
// check the certificate with their own clients.
func (d *Taasd) Client() *http.Client {
	if !strings.HasPrefix(d.URL, "https://") && d.Netns == "" {
		return http.DefaultClient
	}
	if d.client != nil {
		return d.client
	}
	tr := &http.Transport{}
	if strings.HasPrefix(d.URL, "https://") {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	if d.Netns != "" {
		tr.DialContext = func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = InNetns(d.Netns, func() error {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}
	}
	d.client = &http.Client{Transport: tr}
	return d.client
}

// waitOK polls url with c until it answers 200. It fails t with what
// exitLog says when exited is closed first, or after timeout.
func waitOK(t testing.TB, c *http.Client, url string, timeout time.Duration, exited <-chan struct{}, exitLog func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		res, err := c.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("exited before %s answered: %s", url, exitLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within %v (last: %v): %s", url, timeout, err, exitLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is the process id.
func (d *Taasd) Pid() int { return d.Cmd.Process.Pid }

// Signal sends sig to the process.
func (d *Taasd) Signal(sig os.Signal) error { return d.Cmd.Process.Signal(sig) }

// Exited is closed once the process has exited and been reaped.
func (d *Taasd) Exited() <-chan struct{} { return d.exited }

// Kill sends SIGKILL and waits for the process to be gone.
func (d *Taasd) Kill(t testing.TB) {
	t.Helper()
	if err := d.Cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill taasd: %v", err)
	}
	<-d.exited
}

// Stop sends SIGTERM and waits up to 15 s; it returns the exit error (nil
// for a clean exit 0) and fails the test if the process did not exit.
func (d *Taasd) Stop(t testing.TB) error {
	t.Helper()
	if err := d.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("stop taasd: %v", err)
	}
	select {
	case <-d.exited:
		return d.err
	case <-time.After(15 * time.Second):
		t.Fatalf("taasd did not exit within 15s of SIGTERM\n%s", d.Logs())
		return nil
	}
}

// Restart starts the binary again with the same arguments (database and
// address), once the previous process has exited, and returns the new run.
func (d *Taasd) Restart(t testing.TB) *Taasd {
	t.Helper()
	<-d.exited
	n := &Taasd{URL: d.URL, Addr: d.Addr, DB: d.DB, LogPath: d.LogPath, Args: d.Args, bin: d.bin, Netns: d.Netns}
	n.start(t)
	return n
}

// Logs is what the process has written so far (every run sharing LogPath).
func (d *Taasd) Logs() string {
	b, err := os.ReadFile(d.LogPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return string(b)
}
