package xsk

import "sync/atomic"

// Statistics are a socket's counters: the kernel's XDP_STATISTICS, which
// show losses the XDP program never sees (gotcha 5), and this package's own.
// Counters only grow.
type Statistics struct {
	// From getsockopt(XDP_STATISTICS).

	// RxDropped counts frames the kernel dropped for other reasons (in copy
	// mode: a frame larger than MaxRxFrame).
	RxDropped uint64
	// RxInvalidDescs counts invalid fill ring entries.
	RxInvalidDescs uint64
	// TxInvalidDescs counts invalid TX descriptors (bad address or length).
	TxInvalidDescs uint64
	// RxRingFull counts frames dropped because the RX ring was full:
	// userspace did not Receive fast enough.
	RxRingFull uint64
	// RxFillRingEmptyDescs counts frames dropped because the fill ring was
	// empty: userspace did not Fill (or Free) fast enough.
	RxFillRingEmptyDescs uint64
	// TxRingEmptyDescs counts kicks that found the TX ring empty.
	TxRingEmptyDescs uint64

	// This package's own.

	// Received counts descriptors taken from the RX ring.
	Received uint64
	// Transmitted counts descriptors put on the TX ring.
	Transmitted uint64
	// Completed counts TX frames the kernel returned on the completion ring.
	Completed uint64
	// Filled counts frames put on the fill ring.
	Filled uint64
	// TxRingFull counts descriptors Transmit could not put on a full TX ring.
	TxRingFull uint64
	// NoFreeFrame counts frames AllocTx was asked for and the pool did not
	// have (TX frames return only on completion, gotcha 4).
	NoFreeFrame uint64
	// BadFree counts Free or completion addresses that were not frames
	// handed out by this socket (double free, foreign address).
	BadFree uint64
	// Kicks counts sendto(2) calls made by Kick.
	Kicks uint64
	// KickRetries counts sendto(2) calls that returned EAGAIN, EBUSY or
	// ENOBUFS with descriptors still pending (the TX budget, gotcha 3).
	KickRetries uint64
	// KickErrNetDown, KickErrNxio and KickErrOther count errors Kick
	// returned: link down, link gone or socket unbound, anything else.
	KickErrNetDown uint64
	KickErrNxio    uint64
	KickErrOther   uint64
}

// counters are the owner goroutine's counters; Stats reads them from any
// goroutine, so every update is atomic. They are bumped per call with the
// batch's count, never per frame.
type counters struct {
	received, transmitted, completed, filled  atomic.Uint64
	txRingFull, noFreeFrame, badFree          atomic.Uint64
	kicks, kickRetries                        atomic.Uint64
	kickErrNetDown, kickErrNxio, kickErrOther atomic.Uint64
}

func (c *counters) load(st *Statistics) {
	st.Received = c.received.Load()
	st.Transmitted = c.transmitted.Load()
	st.Completed = c.completed.Load()
	st.Filled = c.filled.Load()
	st.TxRingFull = c.txRingFull.Load()
	st.NoFreeFrame = c.noFreeFrame.Load()
	st.BadFree = c.badFree.Load()
	st.Kicks = c.kicks.Load()
	st.KickRetries = c.kickRetries.Load()
	st.KickErrNetDown = c.kickErrNetDown.Load()
	st.KickErrNxio = c.kickErrNxio.Load()
	st.KickErrOther = c.kickErrOther.Load()
}

// Each calls fn for every counter with a stable snake_case name, drop set
// for counters that count lost frames, and op set for counters that count
// calls (kicks) rather than frames or descriptors, so the broker can copy
// them into its IfaceStats Drops and Counters maps, and tell their units,
// without naming each field. No counter here counts bytes.
func (st *Statistics) Each(fn func(name string, value uint64, drop, op bool)) {
	fn("xsk_rx_dropped", st.RxDropped, true, false)
	fn("xsk_rx_invalid_descs", st.RxInvalidDescs, true, false)
	fn("xsk_tx_invalid_descs", st.TxInvalidDescs, true, false)
	fn("xsk_rx_ring_full", st.RxRingFull, true, false)
	fn("xsk_rx_fill_ring_empty", st.RxFillRingEmptyDescs, true, false)
	fn("xsk_tx_ring_empty_descs", st.TxRingEmptyDescs, false, true)
	fn("xsk_received", st.Received, false, false)
	fn("xsk_transmitted", st.Transmitted, false, false)
	fn("xsk_completed", st.Completed, false, false)
	fn("xsk_filled", st.Filled, false, false)
	fn("xsk_tx_ring_full", st.TxRingFull, true, false)
	fn("xsk_no_free_frame", st.NoFreeFrame, true, false)
	fn("xsk_bad_free", st.BadFree, false, false)
	fn("xsk_kicks", st.Kicks, false, true)
	fn("xsk_kick_retries", st.KickRetries, false, true)
	fn("xsk_kick_err_netdown", st.KickErrNetDown, false, true)
	fn("xsk_kick_err_nxio", st.KickErrNxio, false, true)
	fn("xsk_kick_err_other", st.KickErrOther, false, true)
}
