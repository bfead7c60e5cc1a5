package broker_test

import (
	"context"
	"fmt"
	"log"

	"github.com/taas-appliance/taas/broker"
)

// A broker realises a plan: copies of what port fa:16:3e:00:00:0a sends on
// eth1 go out of eth2. Apply reports each service's and flow's status;
// run it again (with the same or a new plan) on every LinkEvents value.
func ExampleBroker_Apply() {
	b, err := broker.New(broker.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	plan := &broker.Plan{Version: 1,
		Services: []broker.Service{{ID: "svc", Iface: "eth2"}},
		Flows: []broker.Flow{{ID: "flow", ServiceID: "svc", SourcePortID: "port", Iface: "eth1",
			MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 0x0a}, Direction: broker.DirOut, VLANFilter: "0,100-199"}}}
	rep, err := b.Apply(context.Background(), plan)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rep.Flows["flow"].State, rep.Flows["flow"].Reason)
}

func ExampleParseVLANFilter() {
	set, err := broker.ParseVLANFilter("0,100-199,5000")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(set.Has(0), set.Has(150), set.Has(200), set.Len())
	// Output: true true false 101
}

// A live capture reads the copies tap service svc delivers, cut to 256
// bytes, until the broker has none left for it (Stop, the service leaves
// the plan, Close); a reader too slow for the data path loses frames,
// counted in Stats, never slows it.
func ExampleBroker_StartLive() {
	b, err := broker.New(broker.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	c, err := b.StartLive(broker.LiveTarget{Kind: broker.LiveService, ID: "svc"}, 256)
	if err != nil {
		log.Fatal(err) // broker.ErrLiveLimit when broker.MaxLive run
	}
	defer c.Stop()
	for p := range c.Packets() {
		fmt.Println(p.Time, p.Length, len(p.Data))
		c.Release(p) // p.Data is the capture's buffer: valid until here
		if c.Stats().Captured == 10 {
			break
		}
	}
	fmt.Println(c.Stats().Dropped, "dropped")
}

// Memory is what a Config's sockets lock: what RLIMIT_MEMLOCK must cover
// without CAP_IPC_LOCK.
func ExampleConfig_Memory() {
	m := broker.Config{}.Memory()
	fmt.Println(m.CaptureSocket>>20, "MiB a capture queue,", m.OutputSocket>>20, "MiB a monitor or uplink")
	fmt.Println(m.Locked(2, 1)>>20, "MiB for two capture queues and a monitor")
	// Output:
	// 16 MiB a capture queue, 8 MiB a monitor or uplink
	// 40 MiB for two capture queues and a monitor
}

// Problems names each field out of range; a program with its own names
// for them (taasd's configuration file) renames the field, keeps the words.
func ExampleConfig_Problems() {
	c := broker.Config{BatchSize: 32, RxRingSize: 5000, Interfaces: []broker.IfaceConfig{{Name: "eth1", Unmatched: "forward"}}}
	for _, p := range c.Problems() {
		fmt.Printf("%s: %s\n", p.Field, p.Problem)
	}
	// Output:
	// BatchSize: must be 0 (default) or 64 to 256, got 32
	// RxRingSize: must be 0 (default) or a power of two from 64 to 65536, got 5000
	// Interfaces[0].Unmatched: must be pass or drop, got "forward"
}
