package broker

import (
	"sync"

	"github.com/taas-appliance/taas/broker/xsk"
	"github.com/taas-appliance/taas/xdpprog"
)

// Unit is what one data-plane counter counts, so that metrics never mix
// frames, bytes and operations under one name (issue 13).
type Unit uint8

const (
	// UnitFrames: frames, copies or ring descriptors (one each).
	UnitFrames Unit = iota
	// UnitBytes: bytes of frames or copies.
	UnitBytes
	// UnitOperations: calls and passes (batches, kicks, polls, their
	// errors), whatever number of frames each one moved.
	UnitOperations
)

var unitNames = [...]string{"frames", "bytes", "operations"}

func (u Unit) String() string { return unitNames[u] }

// Scopes of CounterName: the interface roles of IfaceStats, then the maps
// of ServiceStats, MirrorStats, and the live captures' counters.
const (
	ScopeCapture    = "capture"
	ScopeMonitor    = roleMonitor
	ScopeUplink     = roleUplink
	ScopeTapService = "tap_service"
	ScopeTapMirror  = "tap_mirror"
	ScopeLive       = "live_capture"
)

// CounterName is one name a Stats map (Drops or Counters) can hold.
type CounterName struct {
	Scope string // one of the Scope constants
	Name  string
	Drop  bool // in Drops: frames or copies lost, by reason
	Unit  Unit
}

// CounterNames returns every counter and drop reason name the data plane
// can produce, by scope, with its unit, from the same tables Stats fills
// its maps from. The live captures' only drop is LiveStats.Dropped
// ("dropped"). Callers must not modify the slice.
func CounterNames() []CounterName {
	counterNamesOnce.Do(buildCounterNames)
	return counterNames
}

// CounterUnit returns the unit of an IfaceStats Drops or Counters name (of
// any role); ok is false for a name the data plane never produces.
func CounterUnit(name string) (u Unit, ok bool) {
	counterNamesOnce.Do(buildCounterNames)
	u, ok = ifaceUnits[name]
	return u, ok
}

var (
	counterNamesOnce sync.Once
	counterNames     []CounterName
	ifaceUnits       map[string]Unit
)

func buildCounterNames() {
	ifaceUnits = map[string]Unit{}
	add := func(scope, name string, drop bool, u Unit) {
		counterNames = append(counterNames, CounterName{Scope: scope, Name: name, Drop: drop, Unit: u})
		if scope == ScopeCapture || scope == ScopeMonitor || scope == ScopeUplink {
			ifaceUnits[name] = u
		}
	}
	var sock xsk.Statistics
	sockNames := func(scope string) {
		sock.Each(func(name string, _ uint64, drop, op bool) {
			u := UnitFrames
			if op {
				u = UnitOperations
			}
			add(scope, name, drop, u)
		})
	}
	// Capture: the XDP program's (frames but seen_bytes), the workers',
	// the sockets', the netdev's (as collect.go adds them).
	var xc xdpprog.Counters
	xc.Each(func(name string, _ uint64) { add(ScopeCapture, "xdp_"+name, xdpDrops[name], xdpUnits[name]) })
	add(ScopeCapture, "xdp_tunnel_unknown", true, UnitFrames)
	for i := range numWorkerCounters {
		add(ScopeCapture, workerCounterNames[i], workerCounterIsDrop[i], workerCounterUnits[i])
	}
	sockNames(ScopeCapture)
	add(ScopeCapture, "kernel_rx_dropped", true, UnitFrames)
	add(ScopeCapture, "kernel_tx_dropped", true, UnitFrames)
	for _, scope := range []string{ScopeMonitor, ScopeUplink} {
		for i := range numOutputCounters {
			add(scope, outputCounterNames[i], outputCounterIsDrop[i], outputCounterUnits[i])
		}
		sockNames(scope)
		add(scope, "kernel_rx_dropped", true, UnitFrames)
		add(scope, "kernel_tx_dropped", true, UnitFrames)
	}
	for d := range numServiceDrops {
		add(ScopeTapService, d.String(), true, UnitFrames)
	}
	for d := range numTunnelDrops {
		add(ScopeTapMirror, d.String(), true, UnitFrames)
	}
	add(ScopeLive, "dropped", true, UnitFrames)
}
