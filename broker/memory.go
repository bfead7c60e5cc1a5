package broker

// Memory is what the data plane of a Config allocates beyond the Go heap's
// small change, figured by the same functions that size the allocations:
// taasd check reports it, and a test holds it to what the kernel charges.
type Memory struct {
	// CaptureSocket is the UMEM, in bytes, of one capture socket; there is
	// one per capture RX queue (CaptureQueues). The kernel pins it and
	// charges it to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK
	// (gotcha 7).
	CaptureSocket int
	// OutputSocket is the UMEM, in bytes, of the TX socket of one monitor
	// or one uplink (one each, on queue 0), charged the same way.
	OutputSocket int
	// LivePerCPU is the perf ring, in bytes per possible CPU, that a
	// capture interface's live reader maps on the fast path while a live
	// capture runs there (xdpprog.OpenLive), its header page not counted:
	// locked memory too, charged to RLIMIT_MEMLOCK beyond the kernel's
	// perf_event_mlock_kb allowance unless the process has CAP_IPC_LOCK.
	LivePerCPU int
	// LiveBuffers is the Go heap, in bytes, each running live capture
	// holds for its frame buffers (at most MaxLive of them).
	LiveBuffers int
}

// Memory is what c's data plane allocates, in the sizes Apply and
// StartLive use.
func (c Config) Memory() Memory {
	c.setDefaults()
	return Memory{
		CaptureSocket: c.captureSocket().UMEMSize(),
		OutputSocket:  c.outputSocket().UMEMSize(),
		LivePerCPU:    livePerCPU,
		LiveBuffers:   liveBudget,
	}
}

// Locked is the UMEM, in bytes, of captureQueues capture sockets and
// outputs monitor and uplink sockets: what RLIMIT_MEMLOCK must cover
// without CAP_IPC_LOCK for the broker to open them all.
func (m Memory) Locked(captureQueues, outputs int) int {
	return captureQueues*m.CaptureSocket + outputs*m.OutputSocket
}
