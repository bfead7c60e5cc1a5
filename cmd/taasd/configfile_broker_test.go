package main

import (
	"reflect"
	"testing"

	"github.com/taas-appliance/taas/broker"
)

// TestBrokerConfig: [broker] and the capture [[interfaces]] reach
// broker.Config; monitor interfaces do not (the broker needs no settings
// for them); the result passes the broker's own validation.
func TestBrokerConfig(t *testing.T) {
	fc, err := parseConfig(`
[broker]
batch_size = 128
frame_size = 4096
rx_ring_size = 8192
busy_poll = true
cpus = [1]
fast_path = false
[[interfaces]]
name = "eth1"
role = "capture"
queues = 2
unmatched = "drop"
[[interfaces]]
name = "eth2"
role = "monitor"
[[interfaces]]
name = "eth3"
role = "capture"
`)
	if err != nil {
		t.Fatal(err)
	}
	got := config{File: fc}.brokerConfig(nil)
	want := broker.Config{BatchSize: 128, FrameSize: 4096, RxRingSize: 8192, BusyPoll: true, CPUs: []int{1}, Interfaces: []broker.IfaceConfig{
		{Name: "eth1", Queues: 2, Unmatched: "drop"},
		{Name: "eth3"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("brokerConfig = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("brokerConfig().Validate() = %v", err)
	}
	if got := (config{}).brokerConfig(nil); !reflect.DeepEqual(got, broker.Config{FastPath: true}) {
		t.Errorf("brokerConfig without a file = %+v, want the zero Config with the fast path", got)
	}
	fc, err = parseConfig("[broker]\nbatch_size = 128\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := (config{File: fc}).brokerConfig(nil); !got.FastPath {
		t.Errorf("brokerConfig without fast_path = %+v, want FastPath (the default)", got)
	}
}
