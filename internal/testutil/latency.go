package testutil

import (
	"slices"
	"testing"
	"time"
)

// ReportLatencies reports, for the latencies of concurrent workers (one
// slice each) measured over elapsed, the operations per second (as unit)
// and the p50 and p99 latency in milliseconds. It reports nothing when no
// operation was measured.
func ReportLatencies(b *testing.B, lats [][]time.Duration, elapsed time.Duration, unit string) {
	lat := slices.Concat(lats...)
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), unit)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
