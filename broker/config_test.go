package broker

import (
	"strings"
	"testing"
	"time"
)

// TestConfigProblems: every rule of Config names its field and says what
// it wants; a valid Config has no problem, and Validate joins them all.
func TestConfigProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // "Field: problem", in order
	}{
		{"zero", Config{}, nil},
		{"every field at a bound", Config{BatchSize: 64, FrameSize: 4096, NumFrames: 128, RxRingSize: 65536, CPUs: []int{0, 3},
			Interfaces: []IfaceConfig{{Name: "eth1", Queues: 64, Unmatched: "drop"}, {Name: "eth2", Unmatched: "pass"}}}, nil},
		{"batch size", Config{BatchSize: 32}, []string{"BatchSize: must be 0 (default) or 64 to 256, got 32"}},
		{"frame size", Config{FrameSize: 3000}, []string{"FrameSize: must be 0 (default), 2048 or 4096, got 3000"}},
		{"frames below two batches", Config{BatchSize: 128, NumFrames: 200},
			[]string{"NumFrames: must be 0 (default) or twice the batch size (256) to 4194304, got 200"}},
		{"frames beyond xsk's bound", Config{NumFrames: 1<<22 + 1},
			[]string{"NumFrames: must be 0 (default) or twice the batch size (512) to 4194304, got 4194305"}},
		{"ring not a power of two", Config{RxRingSize: 5000},
			[]string{"RxRingSize: must be 0 (default) or a power of two from 64 to 65536, got 5000"}},
		{"ring too large", Config{RxRingSize: 1 << 17},
			[]string{"RxRingSize: must be 0 (default) or a power of two from 64 to 65536, got 131072"}},
		{"poll timeout", Config{PollTimeout: -time.Second}, []string{"PollTimeout: must be 0 (default) or more, got -1s"}},
		{"cpus", Config{CPUs: []int{1, -1, 1}},
			[]string{"CPUs[1]: must be a CPU number (0 or more), got -1", "CPUs[2]: CPU 1 listed twice"}},
		{"interfaces", Config{Interfaces: []IfaceConfig{{Name: "eth1", Queues: 65}, {Name: "eth1", Unmatched: "foo"}, {Name: "a/b", Queues: -1}}},
			[]string{"Interfaces[0].Queues: must be 0 (all) to 64, got 65", `Interfaces[1].Name: "eth1" listed twice`,
				`Interfaces[1].Unmatched: must be pass or drop, got "foo"`, `Interfaces[2].Name: "a/b" must not contain`,
				"Interfaces[2].Queues: must be 0 (all) to 64, got -1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := tc.cfg.Problems()
			if len(ps) != len(tc.want) {
				t.Fatalf("%+v.Problems() = %q, want %q", tc.cfg, ps, tc.want)
			}
			for i, p := range ps {
				if got := p.Field + ": " + p.Problem; !strings.HasPrefix(got, tc.want[i]) {
					t.Errorf("%+v.Problems()[%d] = %q, want %q", tc.cfg, i, got, tc.want[i])
				}
			}
			err := tc.cfg.Validate()
			if (err == nil) != (len(tc.want) == 0) {
				t.Fatalf("%+v.Validate() = %v, want %d problems", tc.cfg, err, len(tc.want))
			}
			if err != nil && strings.Count(err.Error(), "broker config: ") != len(tc.want) {
				t.Errorf("%+v.Validate() = %q, want one line a problem", tc.cfg, err)
			}
		})
	}
}

// FuzzConfigProblems: whatever the numbers, Problems does not panic, and
// a Config it passes opens sockets that xsk accepts.
func FuzzConfigProblems(f *testing.F) {
	f.Add(0, 0, 0, 0, 0, "eth1", "")
	f.Add(256, 4096, 1024, 65536, 64, "eth1", "drop")
	f.Add(32, 3000, -1, 5000, -1, "a/b", "foo")
	f.Add(0, 0, 1<<22+1, 0, 0, "eth1", "pass")
	f.Fuzz(func(t *testing.T, batch, frameSize, numFrames, ring, queues int, name, unmatched string) {
		c := Config{BatchSize: batch, FrameSize: frameSize, NumFrames: numFrames, RxRingSize: ring,
			Interfaces: []IfaceConfig{{Name: name, Queues: queues, Unmatched: unmatched}}}
		if len(c.Problems()) > 0 {
			return
		}
		c.setDefaults()
		for _, sc := range []struct {
			name string
			err  error
		}{{"capture", c.captureSocket().Validate()}, {"output", c.outputSocket().Validate()}} {
			if sc.err != nil {
				t.Errorf("%+v passes Problems, but its %s socket: %v", c, sc.name, sc.err)
			}
		}
	})
}
