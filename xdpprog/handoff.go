package xdpprog

import (
	"errors"
	"fmt"
	"os"
	"strings"

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
//
// The filters of the fast path (filters.go) live in the fast_progs
// program array, which the kernel empties when no file descriptor or pin
// holds it any more (whatever programs still use it): Pin pins it too,
// beside the link (path + ":progs"), and AttachOver holds it until
// Activate, so a handed-over capture goes on filtering.

// progsSuffix names the pin of a capture's fast_progs beside its link's:
// bpffs refuses dots in names, and no interface name holds a colon.
const progsSuffix = ":progs"

// Pin pins c's bpf_link at path, a file on a bpffs that must not exist, so
// that the program stays attached after Close and after the process exits,
// until AttachOver takes it over or RemovePin detaches it. It turns live
// capture off (SetLive(nil, nil, 0)): live captures end with the process.
func (c *Capture) Pin(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("pin xdp link: %w", ErrClosed)
	}
	if c.link == nil {
		return errors.New("pin xdp link: not attached")
	}
	// The pinned program outlives this process's live reader.
	if err := c.setLiveLocked(nil, nil, 0); err != nil {
		return fmt.Errorf("pin xdp link: %w", err)
	}
	if err := c.objs.FastProgs.Pin(path + progsSuffix); err != nil {
		return fmt.Errorf("pin fast path programs at %s: %w", path+progsSuffix, err)
	}
	if err := c.link.Pin(path); err != nil {
		// The link error is the one to report; without it the
		// programs' pin is of no use.
		_ = c.objs.FastProgs.Unpin()
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
	// The old program's filters, held until Activate (nil when there is
	// no pin: a previous owner without filters' pin, or no old program).
	progs, err := takePinnedProgs(path)
	if err != nil {
		if l != nil {
			_ = l.Close() // as below: fail as Attach would
		}
		return nil, false, err
	}
	if l == nil {
		if progs != nil {
			_ = progs.Close() // its program is gone
		}
		c, err := Attach(ifindex, cfg)
		return c, false, err
	}
	if c, err = Load(cfg); err != nil {
		// Closing the taken link detaches the old program: this capture
		// fails as an Attach would, rather than copy with stale tables.
		_ = l.Close()
		if progs != nil {
			_ = progs.Close()
		}
		return nil, false, err
	}
	c.link, c.pending, c.oldProgs = l, true, progs
	return c, true, nil
}

// takePinnedProgs loads and unpins the fast_progs pinned beside the link
// pinned at path: nil, nil when there is none.
func takePinnedProgs(path string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(path+progsSuffix, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load pinned fast path programs %s: %w", path+progsSuffix, err)
	}
	if err := m.Unpin(); err != nil {
		_ = m.Close() // still pinned: the error above is the one to report
		return nil, fmt.Errorf("unpin fast path programs %s: %w", path+progsSuffix, err)
	}
	return m, nil
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
	if c.oldProgs != nil {
		// The old program's last runs may still tail-call its filters.
		if err := c.barrierLocked(); err != nil {
			return fmt.Errorf("take over xdp link: %w", err)
		}
		if err := c.oldProgs.Close(); err != nil {
			return fmt.Errorf("take over xdp link: release old filters: %w", err)
		}
		c.oldProgs = nil
	}
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
// The pin of a capture's fast_progs beside it (Pin) goes with it; given
// that pin's own path, RemovePin removes it.
func RemovePin(path string) error {
	if strings.HasSuffix(path, progsSuffix) {
		m, err := takePinnedProgs(strings.TrimSuffix(path, progsSuffix))
		if m != nil {
			err = errors.Join(err, m.Close())
		}
		return err
	}
	if m, err := takePinnedProgs(path); err != nil || m != nil {
		if m != nil {
			err = m.Close()
		}
		if err != nil {
			return err
		}
	}
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
