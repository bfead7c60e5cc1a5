package xdpprog

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// A handoff keeps a capture interface's program attached while its owner
// restarts (issue 9: a restart cost the monitors ~200 ms of copies, most of
// it the next process's verifier). The stopping process pins the bpf_link
// on a bpffs (Pin) and exits without detaching, so the kernel goes on
// deciding and copying frames with the tables it had; the next process
// loads its own instance (AttachOver), fills its maps, and swaps it in
// with one BPF_LINK_UPDATE (Activate), so no frame meets the interface
// without a program. Nothing is pinned unless asked for: a process that
// crashes, or closes without pinning, detaches as a bpf_link does (gotcha
// 9), and AttachOver removes the pin as soon as it holds the link.

// Pin pins c's bpf_link at path, a file on a bpffs that must not exist, so
// that the program stays attached after Close and after the process exits,
// until AttachOver takes it over or RemovePin detaches it.
func (c *Capture) Pin(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("pin xdp link: %w", ErrClosed)
	}
	if c.link == nil {
		return errors.New("pin xdp link: not attached")
	}
	if err := c.link.Pin(path); err != nil {
		return fmt.Errorf("pin xdp link at %s: %w", path, err)
	}
	return nil
}

// AttachOver is Attach for an interface whose previous owner may have
// pinned its link at path (Pin): when the pinned link is attached to
// ifindex, c takes it over and taken is true. The link then goes on running
// the previous program, with its tables, until Activate swaps c's in; fill
// c's maps first. The pin is removed at once, so if this process dies
// before Activate, the link and the old program go with it. A pin on
// another interface, or on one that is gone, is removed (detaching it) and
// the interface gets a fresh link, as without a pin.
func AttachOver(ifindex int, cfg Config, path string) (c *Capture, taken bool, err error) {
	l, err := takePinned(path, ifindex)
	if err != nil {
		return nil, false, err
	}
	if l == nil {
		c, err := Attach(ifindex, cfg)
		return c, false, err
	}
	if c, err = Load(cfg); err != nil {
		// Closing the taken link detaches the old program: this capture
		// fails as an Attach would, rather than copy with stale tables.
		_ = l.Close()
		return nil, false, err
	}
	c.link, c.pending = l, true
	return c, true, nil
}

// takePinned loads and unpins the link pinned at path: nil, nil when there
// is none; when it runs another program (left pinned and attached); or
// when it is our capture's but not on ifindex (then unpinned, so detached).
func takePinned(path string, ifindex int) (link.Link, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load pinned xdp link %s: %w", path, err)
	}
	if !isCapture(l) {
		// Another program's: left pinned, and attached.
		_ = l.Close()
		return nil, nil
	}
	if err := l.Unpin(); err != nil {
		_ = l.Close() // still pinned: closing the FD changes nothing
		return nil, fmt.Errorf("unpin xdp link %s: %w", path, err)
	}
	info, err := l.Info()
	if err != nil || info.Type != link.XDPType || info.XDP() == nil || int(info.XDP().Ifindex) != ifindex {
		// Not this interface's (its netdev was deleted, so the link is
		// defunct, or it is another's): unpinned above, it goes with the FD.
		_ = l.Close() // the link is released either way
		return nil, nil
	}
	return l, nil
}

// Activate swaps c's program into the link AttachOver took over: the kernel
// replaces the program atomically, so each frame meets the old or the new
// one. It does nothing for a capture attached afresh.
func (c *Capture) Activate() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("take over xdp link: %w", ErrClosed)
	}
	if !c.pending {
		return nil
	}
	if err := c.link.Update(c.objs.XdpCapture); err != nil {
		return fmt.Errorf("take over xdp link: %w", err)
	}
	c.pending = false
	return nil
}

// ErrNotCapture: a pin is another program's link, which RemovePin and
// AttachOver leave alone.
var ErrNotCapture = errors.New("not a capture's xdp link")

// isCapture reports whether l is an XDP link running a capture program
// (its name is the object's), as opposed to another program's link pinned
// in the same directory.
func isCapture(l link.Link) bool {
	info, err := l.Info()
	if err != nil || info.Type != link.XDPType {
		return false
	}
	p, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return false
	}
	defer p.Close()
	pi, err := p.Info()
	return err == nil && pi.Name == xdpProgXdpCapture
}

// RemovePin detaches the capture program whose link is pinned at path, and
// removes the pin; without a pin it does nothing. Another program's link is
// left pinned and attached: ErrNotCapture.
func RemovePin(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load pinned xdp link %s: %w", path, err)
	}
	if !isCapture(l) {
		_ = l.Close() // still pinned: closing the FD changes nothing
		return fmt.Errorf("remove pin %s: %w", path, ErrNotCapture)
	}
	if err := l.Unpin(); err != nil {
		_ = l.Close() // still pinned: the error above is the one to report
		return fmt.Errorf("unpin xdp link %s: %w", path, err)
	}
	return l.Close()
}
