package xsk_test

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/broker/xsk"
)

// A capture worker: one socket per (interface, RX queue), its FD in the
// XDP program's XSKMAP, then a batched loop. The frames are read in place
// and freed once per batch; Fill refills the ring once per batch.
func ExampleOpen() {
	const ifindex, queue = 2, 0
	s, err := xsk.Open(ifindex, queue, xsk.Config{RxOnly: true})
	if errors.Is(err, xsk.ErrNotSupported) {
		fmt.Println("no AF_XDP on this kernel")
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	// xskmap.Put(uint32(queue), uint32(s.FD())) with the XDP program's map.

	descs := make([]xsk.Desc, 64) // sized once, before the loop
	for batch := 0; batch < 10; batch++ {
		s.Fill()
		if _, err := s.Poll(100 * time.Millisecond); err != nil {
			fmt.Println(err)
			return
		}
		n := s.Receive(descs)
		for _, d := range descs[:n] {
			frame := s.Frame(d) // valid until Free below
			_ = frame
		}
		s.Free(descs[:n])
	}
	st, _ := s.Stats()
	fmt.Println(st.Received, st.RxFillRingEmptyDescs)
}

// A monitor output: take free frames, write copies into them, put them on
// the TX ring and kick once per batch. Frames come back to the pool on
// completion (AllocTx reaps the completion ring when the pool runs short).
// A link that goes down is an error from Kick, never a panic.
func ExampleSocket_Kick() {
	const ifindex = 3
	s, err := xsk.Open(ifindex, 0, xsk.Config{TxOnly: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	copies := [][]byte{make([]byte, 60), make([]byte, 1514)}
	descs := make([]xsk.Desc, len(copies))
	n := s.AllocTx(descs)
	for i := range descs[:n] {
		descs[i].Len = uint32(copy(s.Frame(descs[i]), copies[i]))
	}
	sent := s.Transmit(descs[:n])
	s.Free(descs[sent:n]) // the TX ring was full: count them as drops
	switch err := s.Kick(); {
	case errors.Is(err, unix.ENETDOWN):
		fmt.Println("monitor link down; frames stay queued")
	case errors.Is(err, unix.ENXIO):
		fmt.Println("monitor link gone; close and reopen the socket")
	case err != nil:
		fmt.Println(err)
	}
	s.Complete()
}
