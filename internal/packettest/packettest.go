package packettest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/taas-appliance/taas/internal/testutil"
)

// htons converts a protocol number to network byte order for AF_PACKET.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacket opens a raw AF_PACKET socket bound to ifname in netns (empty:
// the test's own namespace).
func openPacket(netns, ifname string, proto uint16) (int, int, error) {
	var fd, ifindex int
	open := func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
		if err != nil {
			return fmt.Errorf("socket(AF_PACKET): %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind AF_PACKET to %s: %w", ifname, err)
		}
		return nil
	}
	var err error
	if netns == "" {
		err = open()
	} else {
		err = testutil.InNetns(netns, open)
	}
	return fd, ifindex, err
}

// Injector sends raw frames out of one interface.
type Injector struct {
	fd      int
	ifindex int
}

// NewInjector opens an AF_PACKET socket on ifname in netns; t.Cleanup
// closes it. Frames are sent as given, VLAN tags included.
func NewInjector(t testing.TB, netns, ifname string) *Injector {
	t.Helper()
	fd, ifindex, err := openPacket(netns, ifname, 0)
	if err != nil {
		t.Fatalf("injector on %s/%s: %v", netns, ifname, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &Injector{fd: fd, ifindex: ifindex}
}

// Send sends one frame. ENOBUFS (the qdisc is full) is retried for up to a
// second, so a burst slows down instead of losing frames.
func (in *Injector) Send(frame []byte) error {
	sa := &unix.SockaddrLinklayer{Ifindex: in.ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:min(6, len(frame))])
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.Sendto(in.fd, frame, 0, sa)
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.ENOBUFS) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			continue
		}
		return fmt.Errorf("send %d-byte frame: %w", len(frame), err)
	}
}

// Capture receives every frame that arrives on one interface (not those it
// sends) in a goroutine until the test ends.
type Capture struct {
	fd   int
	keep func([]byte) bool

	mu     sync.Mutex
	frames [][]byte
	notify chan struct{}
	done   chan struct{}
}

// NewCapture starts capturing on ifname in netns. keep, when not nil,
// selects which frames to record (tests use it to ignore the kernel's own
// IPv6 chatter). t.Cleanup stops it.
func NewCapture(t testing.TB, netns, ifname string, keep func(frame []byte) bool) *Capture {
	t.Helper()
	fd, _, err := openPacket(netns, ifname, unix.ETH_P_ALL)
	if err != nil {
		t.Fatalf("capture on %s/%s: %v", netns, ifname, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		t.Fatalf("PACKET_AUXDATA: %v", err)
	}
	// A receive timeout lets the goroutine notice the end of the test.
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatalf("SO_RCVTIMEO: %v", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20); err != nil {
		t.Logf("SO_RCVBUF: %v", err)
	}
	c := &Capture{fd: fd, keep: keep, notify: make(chan struct{}, 1), done: make(chan struct{})}
	stop := make(chan struct{})
	go c.run(stop)
	t.Cleanup(func() {
		close(stop)
		<-c.done
		unix.Close(fd)
	})
	return c
}

func (c *Capture) run(stop <-chan struct{}) {
	defer close(c.done)
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for {
		select {
		case <-stop:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			continue // timeout (EAGAIN) or EINTR
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := restoreTag(buf[:n], oob[:oobn])
		if c.keep != nil && !c.keep(f) {
			continue
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
		select {
		case c.notify <- struct{}{}:
		default:
		}
	}
}

// restoreTag returns a copy of frame with the VLAN tag the kernel moved into
// PACKET_AUXDATA put back after the MAC addresses.
func restoreTag(frame, oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA ||
				len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) || len(frame) < 12 {
				continue
			}
			aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
			if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 {
				break
			}
			tpid := uint16(0x8100)
			if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
				tpid = aux.Vlan_tpid
			}
			out := make([]byte, 0, len(frame)+4)
			out = append(out, frame[:12]...)
			out = binary.BigEndian.AppendUint16(out, tpid)
			out = binary.BigEndian.AppendUint16(out, aux.Vlan_tci)
			return append(out, frame[12:]...)
		}
	}
	return append([]byte(nil), frame...)
}

// Frames returns a copy of the list of frames captured so far.
func (c *Capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
}

// Len is the number of frames captured so far.
func (c *Capture) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

// Reset forgets the frames captured so far.
func (c *Capture) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames = nil
}

// WaitN waits until at least n frames are captured or timeout passes, and
// returns the frames captured by then. Tests use a generous timeout and
// assert on the frames, so a slow machine only makes them slower.
func (c *Capture) WaitN(n int, timeout time.Duration) [][]byte {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for c.Len() < n {
		select {
		case <-c.notify:
		case <-deadline.C:
			return c.Frames()
		}
	}
	return c.Frames()
}

// Quiet waits until no frame has arrived for the given interval (or max
// passes) and returns the frames: after a test expects nothing more, it
// checks that nothing more came.
func (c *Capture) Quiet(interval, max time.Duration) [][]byte {
	end := time.Now().Add(max)
	for time.Now().Before(end) {
		t := time.NewTimer(interval)
		select {
		case <-c.notify:
			t.Stop()
		case <-t.C:
			return c.Frames()
		}
	}
	return c.Frames()
}
