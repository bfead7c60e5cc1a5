package broker

// Stats is a snapshot of every data-plane counter, summed over workers and
// CPUs. Counters only grow while the broker runs; readers compute rates.
// The JSON names are what the API's taas-stats extension and the dashboard
// expose, so they are part of the public API.
type Stats struct {
	// UnixNano is when the snapshot was taken.
	UnixNano    int64          `json:"time_unix_nano"`
	PlanVersion uint64         `json:"plan_version"`
	Interfaces  []IfaceStats   `json:"interfaces"`
	Services    []ServiceStats `json:"tap_services"`
	Flows       []FlowStats    `json:"tap_flows"`
	Mirrors     []MirrorStats  `json:"tap_mirrors"`
}

// IfaceStats are the counters of one capture or monitor interface.
type IfaceStats struct {
	Name   string `json:"name"`
	Role   string `json:"role"` // "capture", "monitor" or "uplink"
	LinkUp bool   `json:"link_up"`
	// MTU is the netdev's MTU in bytes; a monitor carries copies up to
	// MTU + 18 (Ethernet header and one VLAN tag). 0 when the link is gone.
	MTU    int `json:"mtu"`
	Queues int `json:"queues"`
	// Path is how a capture interface's frames are decided and copied:
	// "fast" (in the XDP program, copies sent by DEVMAP redirect) or
	// "afxdp" (AF_XDP workers); PathReason says why not fast. Empty
	// for monitors.
	Path       string `json:"path,omitempty"`
	PathReason string `json:"path_reason,omitempty"`
	// Frames and bytes received and sent, each frame whole from its
	// destination MAC without FCS (tcpdump's length). A capture's RX are
	// its XDP program's xdp_seen and xdp_seen_bytes (since taasd attached
	// it); the rest are the netdev's counters (ip -s link), which count
	// whole frames on TX. See docs/counters.md.
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	// Drops by reason: XDP program verdicts, socket statistics
	// (XDP_STATISTICS), TX frame exhaustion, TX ring full, kick errors...
	Drops map[string]uint64 `json:"drops"`
	// Counters that are not drops: frames redirected by XDP, received by the
	// sockets, sent, completed...
	Counters map[string]uint64 `json:"counters"`
}

// ServiceStats are the counters of one tap service.
type ServiceStats struct {
	ID               string            `json:"id"`
	DeliveredPackets uint64            `json:"delivered_packets"`
	DeliveredBytes   uint64            `json:"delivered_bytes"`
	Drops            map[string]uint64 `json:"drops"`
}

// FlowStats are the counters of one tap flow.
type FlowStats struct {
	ID             string `json:"id"`
	MatchedPackets uint64 `json:"matched_packets"`
	MatchedBytes   uint64 `json:"matched_bytes"`
	// RejectedPackets were frames the flow's direction and VLAN selection
	// wanted but its filter rejected (0 without a filter).
	RejectedPackets uint64 `json:"rejected_packets"`
}

// MirrorStats are the state and counters of one tap mirror. Tap mirrors
// have no status attribute in the API, so their state is shown here.
type MirrorStats struct {
	ID     string `json:"id"`
	Status string `json:"status"` // ACTIVE, DOWN or ERROR
	Reason string `json:"status_reason,omitempty"`
	// Uplink is the interface the copies leave through; empty while no
	// route is known.
	Uplink string `json:"uplink,omitempty"`
	// Encapsulated copies sent, their bytes on the wire (outer headers
	// included), and how many of them were cut to the mirror's snaplen or
	// to fit the uplink.
	EncapPackets     uint64            `json:"encapsulated_packets"`
	EncapBytes       uint64            `json:"encapsulated_bytes"`
	TruncatedPackets uint64            `json:"truncated_packets"`
	Drops            map[string]uint64 `json:"drops"`
}
