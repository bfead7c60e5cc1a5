package packettest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"
)

// Tcpdump captures what ifname in netns receives that matches filter into
// a pcap file. stop waits (at most 10 s) until the file holds n frames
// that keep accepts, ends the tcpdump this started (by pid) and returns the
// file: a tcpdump stopped early loses what it has not written yet.
func Tcpdump(t testing.TB, netns, ifname, filter string) (stop func(n int, keep func([]byte) bool) string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), ifname+".pcap")
	cmd := exec.Command("ip", "netns", "exec", netns, "tcpdump", "-Z", "root", "-i", ifname, "-n", "--immediate-mode", "-U",
		"-s", "0", "-w", file, "-Q", "in", filter)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	done := false
	wait := func() {
		if !done {
			done = true
			_ = cmd.Process.Signal(syscall.SIGINT) // the tcpdump started above
			_ = cmd.Wait()                         // exits on SIGINT; its status says nothing more
		}
	}
	t.Cleanup(wait)
	var seen []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Contains(seen, []byte("listening on")) {
		n, err := stderr.Read(buf)
		seen = append(seen, buf[:n]...)
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("tcpdump on %s did not start: %v: %s", ifname, err, seen)
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }() // so tcpdump never blocks on it
	return func(n int, keep func([]byte) bool) string {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			frames, _ := readPcap(file) // a record being written ends the read early
			k := 0
			for _, f := range frames {
				if keep(f) {
					k++
				}
			}
			if k >= n {
				break
			}
		}
		wait()
		return file
	}
}

// ReadPcap returns the frames of a pcap file.
func ReadPcap(t testing.TB, file string) [][]byte {
	t.Helper()
	frames, err := readPcap(file)
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

// readPcap returns the frames of a pcap file, and those before an error.
func readPcap(file string) ([][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	var frames [][]byte
	for {
		b, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return frames, nil
		}
		if err != nil {
			return frames, fmt.Errorf("read %s: %w", file, err)
		}
		frames = append(frames, b)
	}
}

// TsharkFields decodes file with tshark and returns, per frame, the
// values of fields (several occurrences joined by ",").
func TsharkFields(t testing.TB, file string, fields ...string) []map[string]string {
	t.Helper()
	return TsharkFieldsOpts(t, file, nil, fields...)
}

// TsharkFieldsOpts is TsharkFields with tshark preferences, each
// "name:value" (such as "ip.check_checksum:TRUE"), given as -o.
func TsharkFieldsOpts(t testing.TB, file string, prefs []string, fields ...string) []map[string]string {
	t.Helper()
	args := []string{"-r", file, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, p := range prefs {
		args = append(args, "-o", p)
	}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	// stdout only: tshark warns on stderr when it runs as root.
	outb, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark %s: %v", strings.Join(args, " "), err)
	}
	out := string(outb)
	var rows []map[string]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		vals := strings.Split(line, "\t")
		row := map[string]string{}
		for i, f := range fields {
			if i < len(vals) {
				row[f] = vals[i]
			}
		}
		rows = append(rows, row)
	}
	return rows
}
