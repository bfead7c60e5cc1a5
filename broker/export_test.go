package broker

// WorkerTIDs are the OS thread ids of the broker's workers, for benchmarks
// that measure their CPU time.
func WorkerTIDs(b *Broker) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var tids []int
	for _, w := range b.allWorkers() {
		tids = append(tids, int(w.tid.Load()))
	}
	return tids
}
