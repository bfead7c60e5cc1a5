package broker

import "net/netip"

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
	// Mirrors are the tap mirrors: a port's frames, per direction,
	// encapsulated to a remote collector.
	Mirrors []Mirror
	// Uplinks are the interfaces declared with role "uplink": the only
	// ones tunnelled copies may leave through. A mirror whose route to its
	// remote IP uses any other interface stays DOWN with a reason.
	Uplinks []string
}

// Service is one tap service as the data plane sees it.
type Service struct {
	ID string
	// Iface is the monitor interface copies are sent out of; empty when the
	// service's port has no interface binding (the service stays DOWN).
	Iface string
	// Snaplen truncates the copies to so many bytes (64..65535); 0 sends
	// whole frames.
	Snaplen int
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
	// Filter is the tap flow's pcap-filter expression exactly as stored;
	// empty means null (every frame). Compile it with pcapfilter.Compile.
	Filter string
}

// Mirror is one tap mirror as the data plane sees it.
type Mirror struct {
	ID string
	// PortID is the Neutron port whose traffic is mirrored.
	PortID string
	// Iface is the capture interface on which the port's traffic is seen;
	// empty when the port has no interface binding (the mirror stays DOWN).
	Iface string
	// MAC is the port's MAC address; direction is relative to it.
	MAC [6]byte
	// Type is the encapsulation.
	Type TunnelType
	// RemoteIP is the collector: the outer destination address, IPv4 or
	// IPv6. The outer source, next hop and egress interface come from the
	// kernel's route to it.
	RemoteIP netip.Addr
	// Tunnels has one entry per key of the mirror's directions, in the
	// order IN, OUT, BOTH.
	Tunnels []Tunnel
	// Snaplen truncates the inner frames to so many bytes (64..65535)
	// before encapsulation; 0 carries whole frames (up to the uplink's MTU).
	Snaplen int
}

// Tunnel is one direction of a tap mirror and its tunnel id: the GRE key,
// the ERSPAN session id (10 bits) or the VXLAN VNI (24 bits).
type Tunnel struct {
	Direction Direction
	ID        uint32
}

// TunnelType is a tap mirror's encapsulation.
type TunnelType uint8

const (
	// TunnelGRE is Ethernet over GRE (protocol 0x6558), key = tunnel id.
	TunnelGRE TunnelType = iota + 1
	// TunnelERSPANv1 is upstream's "erspanv1": ERSPAN Type II (GRE
	// protocol 0x88BE with sequence numbers), session id = tunnel id.
	TunnelERSPANv1
	// TunnelERSPANv3 is ERSPAN Type III (GRE protocol 0x22EB): direction
	// bit and timestamp, session id = tunnel id.
	TunnelERSPANv3
	// TunnelVXLAN is VXLAN (UDP port 4789), VNI = tunnel id.
	TunnelVXLAN
)

// String is the API's mirror_type spelling.
func (t TunnelType) String() string {
	switch t {
	case TunnelGRE:
		return "gre"
	case TunnelERSPANv1:
		return "erspanv1"
	case TunnelERSPANv3:
		return "erspanv3"
	case TunnelVXLAN:
		return "vxlan"
	}
	return "unknown"
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
	Mirrors  map[string]Status
}
