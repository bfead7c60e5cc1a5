// Package xsk is the appliance's AF_XDP socket layer, written on
// golang.org/x/sys/unix: one UMEM per socket, the fill, completion, RX and TX
// rings with atomic producer/consumer indices, need_wakeup, the copy-mode TX
// skb budget, an O(1) frame pool, XDP_STATISTICS, and errors instead of
// panics.
//
// What it owns: the socket FD, the UMEM mapping, the four ring mappings and
// the free list of UMEM frames. Close releases all of them.
//
// What it never does: load or attach XDP programs, touch BPF maps (the caller
// puts FD into an XSKMAP, see xdpprog), start goroutines, lock, log, or
// allocate on the per-batch calls (Fill, Receive, Free, AllocTx, Transmit,
// Kick, Complete, Poll). Nothing here panics on a kernel error: a link that
// goes down (ENETDOWN) or disappears (ENXIO) comes back as an error from
// Kick and as counters in Stats. Poll does not notice a deleted link: the
// broker learns that from netlink, closes the socket and opens a new one.
//
// Goroutines: a Socket is used by one goroutine at a time (the worker that
// owns it); its per-batch calls take no locks. Stats and FD may be called
// from any goroutine, also while another closes the socket: the counters are
// atomics, and Close waits for a Stats call in progress. Close must not race
// with the owner's calls: stop the worker first.
//
// Frames: the UMEM is NumFrames chunks of FrameSize bytes (a power of two,
// 2048 or 4096). In copy mode (the only mode veth offers, afxdp-notes gotcha
// 1) the kernel writes a received frame at chunk + 256 (XDP_PACKET_HEADROOM)
// + Config.Headroom, so the largest frame that can be received is
// FrameSize - 256 - Headroom: 1792 bytes with 2048-byte chunks, 3840 with
// 4096 (gotcha 6). MaxRxFrame and MaxTxFrame report the figures for a socket.
//
// Kernel features that are missing (no AF_XDP, no XDP_MAX_TX_SKB_BUDGET, ...)
// come back wrapped around ErrNotSupported.
package xsk
