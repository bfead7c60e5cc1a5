package broker

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/taas-appliance/taas/internal/packettest"
	"github.com/taas-appliance/taas/internal/testutil"
)

// TestBrokerHandoff: Handoff leaves a capture on the fast path attached and
// copying with no broker running; the next broker takes it over (the pin
// goes, copies go on); a capture on the AF_XDP path is not pinned; a pin
// the next plan does not take over is detached by its first Apply.
func TestBrokerHandoff(t *testing.T) {
	tp := newTopo(t, 1, 1)
	dir := testutil.BPFFS(t)
	pin := filepath.Join(dir, tp.capIf)
	plan := &Plan{Version: 1, Services: []Service{{ID: "s", Iface: tp.mons[0]}},
		Flows: []Flow{{ID: "f", ServiceID: "s", SourcePortID: "p", Iface: tp.capIf, MAC: mac6(hwA), Direction: DirOut}}}
	attached := func() bool { return xdpAttached(t, tp.capIf) }
	pinned := func() bool {
		_, err := os.Stat(pin)
		return !errors.Is(err, os.ErrNotExist)
	}
	seq := uint32(0)
	roundTrip := func(what string) {
		t.Helper()
		tp.reset()
		seq++
		sent := map[uint32][]byte{seq: packettest.Frame(hwB, hwA, nil, seq, 60)}
		tp.send(t, sent[seq])
		expect(t, tp.caps[0], what, sent, seq)
	}

	b1 := newBroker(t, Config{FastPath: true, PinDir: dir})
	wantActive(t, apply(t, b1, plan))
	wantPath(t, b1, tp.capIf, true)
	if err := b1.Handoff(); err != nil {
		t.Fatal(err)
	}
	if !pinned() || !attached() {
		t.Fatalf("after Handoff: pinned %v, attached %v; want both", pinned(), attached())
	}
	roundTrip("with no broker, after a handoff")

	// Taken over by a broker on the AF_XDP path: copies go on, and its
	// Handoff pins nothing.
	b2 := newBroker(t, Config{PinDir: dir})
	wantActive(t, apply(t, b2, plan))
	if pinned() {
		t.Error("pin still there after the next broker's Apply took it over")
	}
	roundTrip("after the takeover")
	if err := b2.Handoff(); err != nil {
		t.Fatal(err)
	}
	if pinned() || attached() {
		t.Errorf("Handoff on the AF_XDP path: pinned %v, attached %v; want neither", pinned(), attached())
	}

	// A pin the next plan does not take over is detached.
	b3 := newBroker(t, Config{FastPath: true, PinDir: dir})
	wantActive(t, apply(t, b3, plan))
	if err := b3.Handoff(); err != nil {
		t.Fatal(err)
	}
	b4 := newBroker(t, Config{FastPath: true, PinDir: dir})
	wantActive(t, apply(t, b4, &Plan{Version: 1, Services: plan.Services}))
	if pinned() || attached() {
		t.Errorf("a pin outside the plan after Apply: pinned %v, attached %v; want neither", pinned(), attached())
	}
}
