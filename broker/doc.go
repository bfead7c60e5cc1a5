// Package broker is the AF_XDP data plane of the appliance.
//
// It owns the capture workers (one per capture interface and RX queue, each
// on a locked OS thread), the immutable compiled plan they classify against,
// the per-output TX batching, the counters, and the watch on link state.
// It knows nothing of HTTP or SQL: control hands it a Plan and reads back a
// Report and Stats. It never imports control, fiber or database/sql.
//
// Goroutines: one worker per (capture interface, RX queue), started by
// Apply and stopped by the Apply that no longer needs it (or by Close); one
// netlink reader for the link watch, one for the routes and neighbours of
// the tap mirrors' remote IPs (the resolver, resolve.go) and one poller of
// the monitors' XDP features (redirectwatch.go), from New to Close; per
// live capture (live.go), a pump that moves its frames to its Packets
// channel, from StartLive to its end, and on the fast path one reader of
// each capture interface's live frames while a live capture wants some of
// them. Apply, Stats and
// Close run in the caller's goroutine and are serialised by one mutex;
// workers never take it. The only lock a worker takes is the mutex of a
// monitor's TX socket, once per batch per monitor.
//
// A frame's path: the XDP program (xdpprog) redirects what some flow may
// want to the socket of its RX queue; the worker parses its MACs and outer
// VID, matches flows in the capture interface's table (direction, VLAN
// set, then the flow's filter, issue 11), sends each service at most one
// copy (cut to the service's snaplen), and counts per flow (matched, and
// rejected by the filter) and per service. worker.go has the step-by-step
// sketch. A flow's filter is a pcapfilter.Filter, compiled once per
// expression and kept across Applies; one that does not compile makes
// its flow ERROR.
//
// Tap mirrors (mirror.go) are compiled into the same table: each
// direction of a mirror is a tunnel with the flows' direction semantics,
// whose copies the workers encapsulate (xdpprog.TunnelHeader) and send out
// of the uplink the kernel's route to the remote IP names, with a TX-only
// socket beside the uplink's own traffic. The outer headers come from the
// kernel's route and neighbour tables (resolve.go). On the fast path the
// uplink's DEVMAP entry runs xdpprog's tunnel program on the copy instead.
//
// The fast path (Config.FastPath, fastpath.go) skips userspace: Apply
// tabulates the same table into the XDP program's decision maps, with the
// filters' programs and the monitors' snaplens, and the program runs the
// filters a frame's decisions need, counts flows and services and sends
// the copies itself with bpf_redirect_map (DEVMAP, BPF_F_BROADCAST for
// several). A capture whose
// plan does not fit the program, or that copies to a monitor refusing
// redirected frames, stays on the AF_XDP path; Stats says which path each
// capture takes and why.
//
// Close detaches everything. Handoff (Config.PinDir, handoff.go) leaves the
// captures on the fast path attached and copying, pinned on a bpffs, for
// the next broker's Apply to take over without a gap.
package broker
