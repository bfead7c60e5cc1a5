package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestBrokerConfig: [broker] and the capture [[interfaces]] reach
// broker.Config; monitor interfaces do not (the broker needs no settings
// for them); the result passes the broker's own validation.
func TestBrokerConfig(t *testing.T) {
	fc, err := parseConfig(`
[broker]
batch_size = 128
frame_size = 4096
rx_ring_size = 8192
busy_poll = true
cpus = [1]
fast_path = false
[[interfaces]]
name = "eth1"
role = "capture"
queues = 2
unmatched = "drop"
[[interfaces]]
name = "eth2"
role = "monitor"
[[interfaces]]
name = "eth3"
role = "capture"
`)
	if err != nil {
		t.Fatal(err)
	}
	got := config{File: fc}.brokerConfig(nil)
	want := broker.Config{BatchSize: 128, FrameSize: 4096, RxRingSize: 8192, BusyPoll: true, CPUs: []int{1}, Interfaces: []broker.IfaceConfig{
		{Name: "eth1", Queues: 2, Unmatched: "drop"},
		{Name: "eth3"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("brokerConfig = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("brokerConfig().Validate() = %v", err)
	}
	if got := (config{}).brokerConfig(nil); !reflect.DeepEqual(got, broker.Config{FastPath: true}) {
		t.Errorf("brokerConfig without a file = %+v, want the zero Config with the fast path", got)
	}
	fc, err = parseConfig("[broker]\nbatch_size = 128\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := (config{File: fc}).brokerConfig(nil); !got.FastPath {
		t.Errorf("brokerConfig without fast_path = %+v, want FastPath (the default)", got)
	}
}

// TestBrokerProblems: the broker's rules judge the [broker] table and the
// capture interfaces, and each problem names the file's key, the index
// that of [[interfaces]] (monitors included), never the broker's field.
func TestBrokerProblems(t *testing.T) {
	fc, err := parseConfig(`
[broker]
batch_size = 32
frame_size = 1000
rx_ring_size = 100
cpus = [2, -1, 2]
[[interfaces]]
name = "eth0"
role = "monitor"
[[interfaces]]
name = "eth1"
role = "capture"
queues = 65
[[interfaces]]
name = "eth2"
role = "uplink"
[[interfaces]]
name = "eth3/x"
role = "capture"
unmatched = "foo"
[[interfaces]]
name = "eth1"
role = "capture"
`)
	if err == nil {
		t.Fatalf("parseConfig accepted %+v", fc)
	}
	want := []string{
		"broker.batch_size: must be 0 (default) or 64 to 256, got 32",
		"broker.frame_size: must be 0 (default), 2048 or 4096, got 1000",
		"broker.rx_ring_size: must be 0 (default) or a power of two from 64 to 65536, got 100",
		"broker.cpus[1]: must be a CPU number (0 or more), got -1",
		"broker.cpus[2]: CPU 2 listed twice",
		"interfaces[1].queues: must be 0 (all) to 64, got 65",
		`interfaces[3].name: "eth3/x" must not contain '/', ':', NUL or whitespace`,
		`interfaces[3].unmatched: must be pass or drop, got "foo"`,
		// The file's rule; the broker's own "listed twice" is not repeated.
		`interfaces[4].name: "eth1" already listed as interfaces[1]`,
	}
	got := strings.Split(err.Error(), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestFileKey(t *testing.T) {
	from := []int{1, 3}
	for _, tc := range []struct{ field, want string }{
		{"BatchSize", "broker.batch_size"},
		{"FrameSize", "broker.frame_size"},
		{"RxRingSize", "broker.rx_ring_size"},
		{"CPUs[4]", "broker.cpus[4]"},
		{"Interfaces[0].Name", "interfaces[1].name"},
		{"Interfaces[1].Queues", "interfaces[3].queues"},
		{"Interfaces[1].Unmatched", "interfaces[3].unmatched"},
		// Not set by the file: the broker's name, said to be the broker's.
		{"NumFrames", "broker NumFrames"},
		{"Interfaces[2].Name", "broker Interfaces[2].Name"},
	} {
		if got := fileKey(tc.field, from); got != tc.want {
			t.Errorf("fileKey(%q, %v) = %q, want %q", tc.field, from, got, tc.want)
		}
	}
}

// TestBadBrokerConfigRejectedAlike runs the taasd binary: `taasd check`
// and a start of taasd reject each bad value with the same line, naming
// the file's key, in the broker's own words (broker.Config.Problems).
func TestBadBrokerConfigRejectedAlike(t *testing.T) {
	if testing.Short() {
		t.Skip("builds taasd: not in -short")
	}
	bin := testutil.BuildTaasd(t)
	dir := t.TempDir()
	const capture = "[[interfaces]]\nname = \"eth9\"\nrole = \"monitor\"\n[[interfaces]]\nname = \"eth1\"\nrole = \"capture\"\n"
	for _, tc := range []struct {
		name, text, key string
		bad             broker.Config // the same value, as the broker sees it
	}{
		{"batch size", "[broker]\nbatch_size = 32\n", "broker.batch_size", broker.Config{BatchSize: 32}},
		{"frame size", "[broker]\nframe_size = 3000\n", "broker.frame_size", broker.Config{FrameSize: 3000}},
		{"rx ring not a power of two", "[broker]\nrx_ring_size = 5000\n", "broker.rx_ring_size", broker.Config{RxRingSize: 5000}},
		{"a CPU twice", "[broker]\ncpus = [0, 0]\n", "broker.cpus[1]", broker.Config{CPUs: []int{0, 0}}},
		{"too many queues", capture + "queues = 65\n", "interfaces[1].queues",
			broker.Config{Interfaces: []broker.IfaceConfig{{Name: "eth1", Queues: 65}}}},
		{"unmatched", capture + "unmatched = \"forward\"\n", "interfaces[1].unmatched",
			broker.Config{Interfaces: []broker.IfaceConfig{{Name: "eth1", Unmatched: "forward"}}}},
		{"capture name", "[[interfaces]]\nname = \"eth1:0\"\nrole = \"capture\"\n", "interfaces[0].name",
			broker.Config{Interfaces: []broker.IfaceConfig{{Name: "eth1:0"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".toml")
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			ps := tc.bad.Problems()
			if len(ps) != 1 {
				t.Fatalf("%+v.Problems() = %v, want one", tc.bad, ps)
			}
			want := fmt.Sprintf("config %s: %s: %s", path, tc.key, ps[0].Problem)
			for _, args := range [][]string{
				{"check", "--config", path},
				{"--config", path, "--dataplane", "xdp", "--listen", "127.0.0.1:0", "--db", filepath.Join(dir, "taas.db")},
			} {
				cmd := exec.Command(bin, args...)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				err := cmd.Run()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 2 {
					t.Errorf("taasd %s: %v, want exit status 2\n%s", strings.Join(args, " "), err, stderr.String())
				}
				if !slices.Contains(strings.Split(strings.TrimPrefix(stderr.String(), "taasd: "), "\n"), want) {
					t.Errorf("taasd %s said:\n%s\nwant the line %q", strings.Join(args, " "), stderr.String(), want)
				}
			}
		})
	}
}
