package pcapfilter

import (
	"syscall"
	"testing"
	"time"
)

// frame64 is a 64-byte IPv4/TCP frame to port 443 with one 802.1Q tag
// (what a trunk port's SPAN feed carries).
func frame64(t testing.TB) []byte {
	fr := tagged(tcpFrame(t, 443, true), 0x8100)
	if len(fr) > 64 {
		return fr[:64]
	}
	return append(fr, make([]byte, 64-len(fr))...)
}

// cpuTime is the process's user CPU time: on a shared machine it measures
// the work better than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano())
}

// BenchmarkMatch reports ns/frame (wall) and cpu-ns/frame (user CPU time,
// steadier when other work shares the cores).
func BenchmarkMatch(b *testing.B) {
	for _, expr := range []string{"tcp port 443", "net 198.51.100.0/24 and not icmp", "ip6 protochain 6"} {
		b.Run(expr, func(b *testing.B) {
			f, err := Compile(expr)
			if err != nil {
				b.Fatal(err)
			}
			fr := frame64(b)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for range b.N {
				f.Match(fr)
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/frame")
		})
	}
}

func TestMatchAllocs(t *testing.T) {
	f, err := Compile("tcp port 443 or ip6 protochain 6")
	if err != nil {
		t.Fatal(err)
	}
	fr := frame64(t)
	if n := testing.AllocsPerRun(100, func() { f.Match(fr) }); n != 0 {
		t.Errorf("Match allocates %v times per call, want 0", n)
	}
}
