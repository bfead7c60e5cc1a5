package xdpprog

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/internal/testutil"
)

const needBPF = "CAP_BPF and CAP_NET_ADMIN to load XDP programs and run them with BPF_PROG_TEST_RUN"

var (
	macA     = [6]byte{0x02, 0, 0, 0, 0, 0x0a} // wanted as a source (OUT)
	macB     = [6]byte{0x02, 0, 0, 0, 0, 0x0b} // wanted as a destination (IN)
	macC     = [6]byte{0x02, 0, 0, 0, 0, 0x0c} // wanted both ways
	macOther = [6]byte{0x02, 0, 0, 0, 0, 0xee} // wanted by nobody
	macBcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	macMcast = [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
)

// tag is one VLAN tag: its TPID (0x8100 or 0x88a8) and VID.
type tag struct {
	tpid uint16
	vid  uint16
}

// frame builds an Ethernet frame dst <- src with the given tags (outermost
// first) and an IPv4 EtherType, padded to the Ethernet minimum, then cut to
// cut bytes when cut > 0.
func frame(t testing.TB, dst, src [6]byte, tags []tag, payload, cut int) []byte {
	t.Helper()
	eth := &layers.Ethernet{DstMAC: net.HardwareAddr(dst[:]), SrcMAC: net.HardwareAddr(src[:]),
		EthernetType: layers.EthernetTypeIPv4}
	ls := []gopacket.SerializableLayer{eth}
	for i, tg := range tags {
		if i == 0 {
			eth.EthernetType = layers.EthernetType(tg.tpid)
		}
		next := layers.EthernetTypeIPv4
		if i+1 < len(tags) {
			next = layers.EthernetType(tags[i+1].tpid)
		}
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: tg.vid, Type: next})
	}
	ls = append(ls, gopacket.Payload(make([]byte, payload)))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, ls...); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), buf.Bytes()...)
	if cut > 0 {
		b = b[:cut]
	}
	return b
}

// load loads the program and closes it when t ends; then t fails if the
// test left a goroutine, descriptor or mapping behind (testutil.Leaks).
func load(t testing.TB, cfg Config) *Capture {
	t.Helper()
	leaks := testutil.Leaks(t)
	c, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		leaks()
	})
	return c
}

// xskFD opens an AF_XDP socket for an XSKMAP slot. BPF_PROG_TEST_RUN
// returns the XDP_REDIRECT verdict without delivering, so the socket need
// not be bound.
func xskFD(t testing.TB) int {
	t.Helper()
	fd, err := newXSK()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// newXSK opens an unbound AF_XDP socket; the caller closes it.
func newXSK() (int, error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket(AF_XDP): %w", err)
	}
	return fd, nil
}

func counterMap(c Counters) map[string]uint64 {
	m := map[string]uint64{}
	c.Each(func(name string, v uint64) { m[name] = v })
	return m
}

// runFrame runs the program once on frame and returns its verdict and how
// much each counter moved.
func runFrame(t testing.TB, c *Capture, frame []byte) (uint32, map[string]uint64) {
	t.Helper()
	before, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	verdict, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("run xdp program on %d bytes: %v", len(frame), err)
	}
	after, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	delta := counterMap(after)
	for k, v := range counterMap(before) {
		delta[k] -= v
	}
	return verdict, delta
}

// wantDelta is how the counters move for one frame of size bytes with this
// verdict and outcome.
func wantDelta(verdict uint32, outcome Outcome, size int) map[string]uint64 {
	d := counterMap(Counters{})
	d["seen"], d["seen_bytes"] = 1, uint64(size)
	d[outcome.String()] = 1
	switch verdict {
	case xdpPass:
		d["passed"] = 1
	case xdpDrop:
		d["dropped"] = 1
	}
	return d
}

func verdictName(v uint32) string {
	switch v {
	case xdpAborted:
		return "XDP_ABORTED"
	case xdpDrop:
		return "XDP_DROP"
	case xdpPass:
		return "XDP_PASS"
	case xdpRedirect:
		return "XDP_REDIRECT"
	}
	return fmt.Sprintf("verdict(%d)", v)
}

// checkFrame runs frame through the program and asserts the verdict and
// counters the model predicts, and that the model predicts want.
func checkFrame(t *testing.T, c *Capture, m *model, frame []byte, wantVerdict uint32, wantOutcome Outcome) {
	t.Helper()
	mv, mo := m.run(frame)
	if mv != wantVerdict || mo != wantOutcome {
		t.Errorf("model.run(% x) = %s, %s; want %s, %s", frame, verdictName(mv), mo, verdictName(wantVerdict), wantOutcome)
	}
	v, delta := runFrame(t, c, frame)
	if v != wantVerdict {
		t.Errorf("xdp_capture(% x) = %s, want %s", frame, verdictName(v), verdictName(wantVerdict))
	}
	want := wantDelta(wantVerdict, wantOutcome, len(frame))
	for name, n := range want {
		if delta[name] != n {
			t.Errorf("xdp_capture(% x): counter %s moved by %d, want %d", frame, name, delta[name], n)
		}
	}
	if o, err := c.Run(frame); err != nil || o != wantOutcome {
		t.Errorf("Run(% x) = %v, %v; want %v", frame, o, err, wantOutcome)
	}
}

// loadFiltered loads the program with cfg and filter f and a socket in
// slot 0, and returns it with the model of the same state.
func loadFiltered(t testing.TB, cfg Config, f Filter) (*Capture, *model) {
	t.Helper()
	c := load(t, cfg)
	if err := c.SetFilter(f); err != nil {
		t.Fatal(err)
	}
	if err := c.SetSocket(0, xskFD(t)); err != nil {
		t.Fatal(err)
	}
	return c, newModel(f, cfg, true)
}

func standardFilter() Filter {
	var vlans VLANSet
	vlans.Add(0)
	vlans.Add(10)
	vlans.AddRange(100, 200)
	return Filter{
		MACs:      map[[6]byte]Want{macA: WantSrc, macB: WantDst, macC: WantSrc | WantDst},
		Multicast: true,
		VLANs:     &vlans,
	}
}

func TestVerdicts(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	q := []tag{{0x8100, 10}}
	cases := []struct {
		name    string
		frame   func(t testing.TB) []byte
		outcome Outcome
	}{
		{"untagged src wanted", func(t testing.TB) []byte { return frame(t, macOther, macA, nil, 46, 0) }, Redirected},
		{"untagged dst wanted", func(t testing.TB) []byte { return frame(t, macB, macOther, nil, 46, 0) }, Redirected},
		{"both ways as src", func(t testing.TB) []byte { return frame(t, macOther, macC, nil, 46, 0) }, Redirected},
		{"both ways as dst", func(t testing.TB) []byte { return frame(t, macC, macOther, nil, 46, 0) }, Redirected},
		{"src wanted only as dst", func(t testing.TB) []byte { return frame(t, macOther, macB, nil, 46, 0) }, Unmatched},
		{"dst wanted only as src", func(t testing.TB) []byte { return frame(t, macA, macOther, nil, 46, 0) }, Unmatched},
		{"nobody's frame", func(t testing.TB) []byte { return frame(t, macOther, macOther, nil, 46, 0) }, Unmatched},
		{"broadcast", func(t testing.TB) []byte { return frame(t, macBcast, macOther, nil, 46, 0) }, Redirected},
		{"multicast", func(t testing.TB) []byte { return frame(t, macMcast, macOther, nil, 46, 0) }, Redirected},
		{"exactly an ethernet header", func(t testing.TB) []byte { return frame(t, macOther, macA, nil, 0, 14) }, Redirected},
		{"802.1Q wanted vid", func(t testing.TB) []byte { return frame(t, macOther, macA, q, 46, 0) }, Redirected},
		{"802.1Q vid in range", func(t testing.TB) []byte { return frame(t, macOther, macA, []tag{{0x8100, 150}}, 46, 0) }, Redirected},
		{"802.1Q unwanted vid", func(t testing.TB) []byte { return frame(t, macOther, macA, []tag{{0x8100, 11}}, 46, 0) }, VLANFiltered},
		{"802.1Q vid 4095", func(t testing.TB) []byte { return frame(t, macOther, macA, []tag{{0x8100, 4095}}, 46, 0) }, VLANFiltered},
		{"802.1Q unwanted vid and mac", func(t testing.TB) []byte { return frame(t, macOther, macOther, []tag{{0x8100, 11}}, 46, 0) }, Unmatched},
		{"802.1ad wanted vid", func(t testing.TB) []byte { return frame(t, macOther, macA, []tag{{0x88a8, 10}}, 46, 0) }, Redirected},
		{"QinQ outer wanted inner not", func(t testing.TB) []byte {
			return frame(t, macOther, macA, []tag{{0x88a8, 10}, {0x8100, 11}}, 46, 0)
		}, Redirected},
		{"QinQ inner wanted outer not", func(t testing.TB) []byte {
			return frame(t, macOther, macA, []tag{{0x88a8, 11}, {0x8100, 10}}, 46, 0)
		}, VLANFiltered},
		{"double 802.1Q outer wanted", func(t testing.TB) []byte {
			return frame(t, macOther, macA, []tag{{0x8100, 150}, {0x8100, 11}}, 46, 0)
		}, Redirected},
		{"tag cut after TPID", func(t testing.TB) []byte { return frame(t, macOther, macA, q, 46, 14) }, TruncatedTag},
		{"tag cut inside TCI", func(t testing.TB) []byte { return frame(t, macOther, macA, q, 46, 15) }, TruncatedTag},
		{"tag cut before inner type", func(t testing.TB) []byte { return frame(t, macOther, macA, q, 46, 17) }, TruncatedTag},
		{"tag whole, nothing after", func(t testing.TB) []byte { return frame(t, macOther, macA, q, 46, 18) }, Redirected},
		{"QinQ inner tag cut", func(t testing.TB) []byte {
			return frame(t, macOther, macA, []tag{{0x88a8, 10}, {0x8100, 11}}, 46, 21)
		}, TruncatedTag},
		{"QinQ inner tag whole", func(t testing.TB) []byte {
			return frame(t, macOther, macA, []tag{{0x88a8, 10}, {0x8100, 11}}, 46, 22)
		}, Redirected},
		{"truncated tag of nobody's frame", func(t testing.TB) []byte { return frame(t, macOther, macOther, q, 46, 16) }, TruncatedTag},
	}
	for _, action := range []Action{Pass, Drop} {
		c, m := loadFiltered(t, Config{Unmatched: action}, standardFilter())
		for _, tc := range cases {
			t.Run(action.String()+"/"+tc.name, func(t *testing.T) {
				want := action.verdict()
				if tc.outcome == Redirected {
					want = xdpRedirect
				}
				checkFrame(t, c, m, tc.frame(t), want, tc.outcome)
			})
		}
	}
}

func TestRedirectFailedWithoutSocket(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	for _, action := range []Action{Pass, Drop} {
		t.Run(action.String(), func(t *testing.T) {
			cfg := Config{Unmatched: action}
			c := load(t, cfg)
			f := standardFilter()
			if err := c.SetFilter(f); err != nil {
				t.Fatal(err)
			}
			m := newModel(f, cfg, false)
			fr := frame(t, macOther, macA, nil, 46, 0)
			checkFrame(t, c, m, fr, action.verdict(), RedirectFailed)

			// A socket set then cleared leaves the slot empty again.
			if err := c.SetSocket(0, xskFD(t)); err != nil {
				t.Fatal(err)
			}
			m.socket = true
			checkFrame(t, c, m, fr, xdpRedirect, Redirected)
			for range 2 { // clearing an empty slot is not an error
				if err := c.ClearSocket(0); err != nil {
					t.Fatal(err)
				}
			}
			m.socket = false
			checkFrame(t, c, m, fr, action.verdict(), RedirectFailed)
		})
	}
}

func TestMulticastOff(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	f := standardFilter()
	f.Multicast = false
	c, m := loadFiltered(t, Config{}, f)
	checkFrame(t, c, m, frame(t, macBcast, macOther, nil, 46, 0), xdpPass, Unmatched)
	checkFrame(t, c, m, frame(t, macMcast, macOther, nil, 46, 0), xdpPass, Unmatched)
	// A broadcast from a wanted source is still wanted by its source MAC.
	checkFrame(t, c, m, frame(t, macBcast, macA, nil, 46, 0), xdpRedirect, Redirected)
}

func TestAllVLANsByDefault(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	// VLANs nil: every VID.
	c, m := loadFiltered(t, Config{}, Filter{MACs: map[[6]byte]Want{macA: WantSrc}})
	for _, vid := range []uint16{0, 1, 63, 64, 4094, 4095} {
		tags := []tag{{0x8100, vid}}
		if vid == 0 {
			tags = nil
		}
		checkFrame(t, c, m, frame(t, macOther, macA, tags, 46, 0), xdpRedirect, Redirected)
	}
}

func TestOversize(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, m := loadFiltered(t, Config{Unmatched: Drop, MaxFrame: 100}, standardFilter())
	checkFrame(t, c, m, frame(t, macOther, macA, nil, 100-14, 0), xdpRedirect, Redirected)
	checkFrame(t, c, m, frame(t, macOther, macA, nil, 101-14, 0), xdpDrop, Oversize)
	checkFrame(t, c, m, frame(t, macOther, macA, nil, 1500, 0), xdpDrop, Oversize)
	// An unwanted big frame is unmatched first: oversize counts only loss.
	checkFrame(t, c, m, frame(t, macOther, macOther, nil, 1500, 0), xdpDrop, Unmatched)
}

// TestRuntsNeverReachXDP documents why the runt path of xdp_capture is only
// checked through the model: the kernel refuses to run an XDP program on
// fewer than 14 bytes (BPF_PROG_TEST_RUN says EINVAL, and drivers,
// bpf_xdp_adjust_head and _tail keep at least an Ethernet header). The C
// check is still needed for the verifier and as a defence.
func TestRuntsNeverReachXDP(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c := load(t, Config{})
	for n := 0; n < 14; n++ {
		_, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: make([]byte, n)})
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("run xdp program on %d bytes: err = %v, want EINVAL", n, err)
		}
		if _, err := c.Run(make([]byte, n)); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Run(%d bytes) = %v, want EINVAL", n, err)
		}
	}
	m := newModel(Filter{}, Config{Unmatched: Drop}, true)
	for n := 0; n < 14; n++ {
		if v, o := m.run(make([]byte, n)); v != xdpDrop || o != Runt {
			t.Errorf("model.run(%d bytes) = %s, %s; want XDP_DROP, runt", n, verdictName(v), o)
		}
	}
}

func TestCountersSum(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c := load(t, Config{})
	if err := c.SetFilter(standardFilter()); err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{
		frame(t, macOther, macA, nil, 46, 0),
		frame(t, macOther, macOther, nil, 46, 0),
		frame(t, macOther, macA, []tag{{0x8100, 11}}, 46, 0),
		frame(t, macOther, macA, []tag{{0x8100, 11}}, 46, 15),
	}
	const repeat = 50
	for _, fr := range frames {
		if _, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: fr, Repeat: repeat}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// Repeat is a minimum: the kernel may run the program more often.
	if got.Seen < uint64(len(frames)*repeat) {
		t.Errorf("seen = %d, want >= %d", got.Seen, len(frames)*repeat)
	}
	outcomes := got.Redirected + got.RedirectFailed + got.Unmatched + got.VLANFiltered + got.Runt + got.TruncatedTag + got.Oversize
	if outcomes != got.Seen {
		t.Errorf("sum of outcomes = %d, want seen = %d (%+v)", outcomes, got.Seen, got)
	}
	if got.Passed != got.Seen-got.Redirected {
		t.Errorf("passed = %d, want seen - redirected = %d", got.Passed, got.Seen-got.Redirected)
	}
	for name, n := range map[string]uint64{"redirect_failed": got.RedirectFailed, "unmatched": got.Unmatched,
		"vlan_filtered": got.VLANFiltered, "truncated_tag": got.TruncatedTag} {
		if n < repeat {
			t.Errorf("%s = %d, want >= %d", name, n, repeat)
		}
	}
}

func TestClosed(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, err := Load(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if err := c.SetFilter(Filter{}); !errors.Is(err, ErrClosed) {
		t.Errorf("SetFilter after Close = %v, want ErrClosed", err)
	}
	if err := c.SetSocket(0, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("SetSocket after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Run(make([]byte, 60)); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Counters(); !errors.Is(err, ErrClosed) {
		t.Errorf("Counters after Close = %v, want ErrClosed", err)
	}
}

func TestBadInput(t *testing.T) {
	// Validation comes before anything touches the kernel: no root needed.
	for _, cfg := range []Config{{Unmatched: 7}, {Mode: 9}, {MaxFrame: -1}, {MaxFrame: 1 << 20}} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("Config%+v.Validate() = nil, want an error", cfg)
		}
		if _, err := Load(cfg); err == nil {
			t.Errorf("Load(%+v) = nil error, want one", cfg)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("Config{}.Validate() = %v, want nil", err)
	}
	c := &Capture{}
	for _, q := range []int{-1, MaxQueues} {
		if err := c.SetSocket(q, 3); err == nil {
			t.Errorf("SetSocket(%d) = nil, want an error", q)
		}
		if err := c.ClearSocket(q); err == nil {
			t.Errorf("ClearSocket(%d) = nil, want an error", q)
		}
	}
	big := Filter{MACs: map[[6]byte]Want{}}
	for i := range MaxMACs + 1 {
		big.MACs[[6]byte{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}] = WantSrc
	}
	if err := c.SetFilter(big); err == nil {
		t.Errorf("SetFilter(%d MACs) = nil, want an error", len(big.MACs))
	}
}

func TestVLANSet(t *testing.T) {
	var s VLANSet
	s.Add(0)
	s.AddRange(4090, 5000) // clamped to 4095
	s.Add(4096)            // ignored
	s.AddRange(64, 65)
	for _, tc := range []struct {
		vid  uint16
		want bool
	}{{0, true}, {1, false}, {63, false}, {64, true}, {65, true}, {66, false}, {4089, false}, {4090, true}, {4095, true}, {4096, false}} {
		if got := s.Has(tc.vid); got != tc.want {
			t.Errorf("Has(%d) = %v, want %v", tc.vid, got, tc.want)
		}
	}
	if got, want := s.Len(), 1+6+2; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	if got := allVLANs.Len(); got != 4096 {
		t.Errorf("allVLANs.Len() = %d, want 4096", got)
	}
}

func TestCounterNames(t *testing.T) {
	c := Counters{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	var names []string
	var sum uint64
	c.Each(func(name string, v uint64) { names = append(names, name); sum += v })
	want := []string{"seen", "seen_bytes", "redirected", "redirect_failed", "unmatched", "vlan_filtered", "runt",
		"truncated_tag", "oversize", "passed", "dropped", "fast_redirected", "fast_failed", "fast_no_output",
		"fast_filtered", "live_failed"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("Each names = %v, want %v", names, want)
	}
	if sum != 136 {
		t.Errorf("Each values sum to %d, want 136 (every field visited once)", sum)
	}
	fn := func(string, uint64) {}
	if n := testing.AllocsPerRun(100, func() { c.Each(fn) }); n != 0 {
		t.Errorf("Each allocates %v times per call, want 0", n)
	}
}

func TestTextSpellings(t *testing.T) {
	for _, tc := range []struct {
		text string
		v    interface {
			UnmarshalText([]byte) error
			MarshalText() ([]byte, error)
		}
	}{{"pass", new(Action)}, {"drop", new(Action)}, {"native", new(Mode)}, {"generic", new(Mode)}} {
		if err := tc.v.UnmarshalText([]byte(tc.text)); err != nil {
			t.Errorf("UnmarshalText(%q) = %v", tc.text, err)
		}
		if b, err := tc.v.MarshalText(); err != nil || string(b) != tc.text {
			t.Errorf("MarshalText() after UnmarshalText(%q) = %q, %v", tc.text, b, err)
		}
	}
	for _, bad := range []string{"", "PASS", "accept", "skb"} {
		if err := new(Action).UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("Action.UnmarshalText(%q) = nil, want an error", bad)
		}
		if err := new(Mode).UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("Mode.UnmarshalText(%q) = nil, want an error", bad)
		}
	}
	if _, err := Action(5).MarshalText(); err == nil {
		t.Error("Action(5).MarshalText() = nil error, want one")
	}
	if _, err := Mode(5).MarshalText(); err == nil {
		t.Error("Mode(5).MarshalText() = nil error, want one")
	}
}

func TestOutcome(t *testing.T) {
	for o, want := range []string{"redirected", "redirect_failed", "unmatched", "vlan_filtered", "runt", "truncated_tag", "oversize",
		"fast_redirected", "fast_failed", "fast_no_output", "fast_filtered", "Outcome(11)"} {
		if got := Outcome(o).String(); got != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", o, got, want)
		}
		if got, want := Outcome(o).Kept(), o <= 1; got != want {
			t.Errorf("Outcome(%d).Kept() = %v, want %v", o, got, want)
		}
	}
}

// TestCountersSumOverCPUs runs the program pinned to each CPU in turn, so
// that every CPU's slot of the per-CPU counters holds frames, and checks
// that Counters adds them all up.
func TestCountersSumOverCPUs(t *testing.T) {
	testutil.RequireRoot(t, needBPF)
	c, _ := loadFiltered(t, Config{}, standardFilter())
	fr := frame(t, macOther, macA, nil, 46, 0)
	const repeat = 100
	var cpus []int
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	for cpu := range runtime.NumCPU() {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	for _, cpu := range cpus {
		errc := make(chan error, 1)
		go func() {
			// The thread keeps its pinning and dies with this goroutine.
			runtime.LockOSThread()
			var one unix.CPUSet
			one.Set(cpu)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				errc <- err
				return
			}
			_, err := c.objs.XdpCapture.Run(&ebpf.RunOptions{Data: fr, Repeat: repeat})
			errc <- err
		}()
		if err := <-errc; err != nil {
			t.Fatalf("run on CPU %d: %v", cpu, err)
		}
	}
	var per []xdpCounters
	if err := c.objs.Stats.Lookup(uint32(0), &per); err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, cpu := range cpus {
		if per[cpu].Redirected < repeat {
			t.Errorf("CPU %d counted %d redirects, want >= %d", cpu, per[cpu].Redirected, repeat)
		}
	}
	for _, p := range per {
		sum += p.Redirected
	}
	got, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got.Redirected != sum || got.Seen != sum {
		t.Errorf("Counters() = %+v, want redirected = seen = %d (the sum over %d CPUs)", got, sum, len(per))
	}
}
