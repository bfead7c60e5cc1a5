// Package broker is the AF_XDP data plane of the appliance.
//
// It owns the capture workers (one per capture interface and RX queue, each
// on a locked OS thread), the immutable compiled plan they classify against,
// the per-output TX batching, the counters, and the watch on link state.
// It knows nothing of HTTP or SQL: control hands it a Plan and reads back a
// Report and Stats. It never imports control, fiber or database/sql.
package broker
