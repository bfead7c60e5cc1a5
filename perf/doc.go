// Package perf is the appliance's load generator and benchmark harness.
//
// It owns taas-pktgen's generator (Generate: XDP live frames, BPF_PROG_RUN
// with BPF_F_TEST_XDP_LIVE_FRAMES, see afxdp-notes.md gotcha 14), the frames
// it sends (Traffic), a counting XDP sink for the receiving end of monitor
// links (Sink), and the benchmark that puts taasd beside tc mirred,
// daemonlogger and netsniff-ng (perf/cmd/taas-bench).
//
// It never sends anywhere but into a veth whose name it was given: callers
// (tests, the bench) build those links inside namespaces of their own.
//
// Goroutines: Generate runs on the caller's goroutine, locked to its OS
// thread for the whole run (it may enter a network namespace and pin a CPU).
// A LiveCapture (a live capture of taasd, issue 12) is read by a goroutine
// of its own until its stream ends or Close.
package perf
