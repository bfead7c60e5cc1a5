package broker

// Plan is the whole desired state of the data plane, as control derives it
// from the store. A Plan is immutable once passed to Apply; the broker
// compiles it into its own per-interface lookup structures and swaps them in
// atomically between batches.
type Plan struct {
	// Version increases with every plan control builds; it appears in logs
	// and in Report so that status written back can be matched to a plan.
	Version uint64
	// Services are the tap services: where copies go.
	Services []Service
	// Flows are the tap flows: what is copied, into which service.
	Flows []Flow
}

// Service is one tap service as the data plane sees it.
type Service struct {
	ID string
	// Iface is the monitor interface copies are sent out of; empty when the
	// service's port has no interface binding (the service stays DOWN).
	Iface string
}

// Flow is one tap flow as the data plane sees it.
type Flow struct {
	ID        string
	ServiceID string
	// SourcePortID is the Neutron port whose traffic is mirrored.
	SourcePortID string
	// Iface is the capture interface on which the source port's traffic is
	// seen; empty when the port has no interface binding (the flow stays DOWN).
	Iface string
	// MAC is the source port's MAC address; direction is relative to it.
	MAC [6]byte
	// Direction is IN, OUT or BOTH relative to MAC.
	Direction Direction
	// VLANFilter is the tap flow's vlan_filter exactly as stored; empty means
	// null (every VID matches). Parse it with ParseVLANFilter.
	VLANFilter string
}

// Direction says which frames of a source port a flow wants.
type Direction uint8

const (
	// DirIn wants frames to the port: destination MAC is the port's, or the
	// destination is broadcast/multicast and the source is not the port.
	DirIn Direction = 1 << iota
	// DirOut wants frames from the port: source MAC is the port's.
	DirOut
	// DirBoth wants either.
	DirBoth = DirIn | DirOut
)

// State is the realisation status of a tap service or flow, with the Neutron
// spellings returned by String.
type State uint8

const (
	StateDown State = iota
	StateActive
	StateError
)

func (s State) String() string {
	switch s {
	case StateActive:
		return "ACTIVE"
	case StateError:
		return "ERROR"
	default:
		return "DOWN"
	}
}

// Status is the realisation status of one service or flow, with the reason
// an operator needs when it is not ACTIVE.
type Status struct {
	State  State
	Reason string
}

// Report is what Apply realised: the status of every service and flow of the
// plan, keyed by ID.
type Report struct {
	Version  uint64
	Services map[string]Status
	Flows    map[string]Status
}
