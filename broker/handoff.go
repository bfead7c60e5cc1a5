package broker

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/taas-appliance/taas/xdpprog"
)

// A handoff (issue 9) lets taasd restart without a gap in the copies of
// captures on the fast path, where the kernel makes every copy:
//
//  1. Handoff pins the bpf_link of each such capture in Config.PinDir
//     (file = interface name) and closes everything else as Close does;
//     the pinned programs go on copying with their last tables.
//  2. The next broker's first Apply, for a capture interface with a pin,
//     loads a fresh program, fills its maps and swaps it into the pinned
//     link (xdpprog.AttachOver, Activate): no frame goes unseen.
//  3. Every Apply then detaches what is still pinned: an interface the new
//     plan no longer captures must not go on copying with nobody in charge.
//
// Captures on the AF_XDP path detach as on Close: their copies are made by
// workers that end with the process. A broker that crashes or closes leaves
// nothing pinned.

// attachProg attaches the capture program to ifindex, taking over the link
// a previous broker pinned for name when there is one.
func (b *Broker) attachProg(name string, ifindex int, cfg xdpprog.Config) (*xdpprog.Capture, error) {
	if b.cfg.PinDir == "" {
		return xdpprog.Attach(ifindex, cfg)
	}
	prog, taken, err := xdpprog.AttachOver(ifindex, cfg, filepath.Join(b.cfg.PinDir, name))
	if taken {
		b.log.Info("capture taken over from the previous process", "iface", name)
	}
	return prog, err
}

// pinFast pins the links of the captures on the fast path, for Handoff. A
// capture whose pin fails detaches, as on Close.
func (b *Broker) pinFast() {
	if err := os.MkdirAll(b.cfg.PinDir, 0o700); err != nil {
		b.log.Error("hand off the fast path: every capture detaches", "err", err)
		return
	}
	for _, c := range b.captures {
		if !c.fast.on {
			continue
		}
		if err := c.prog.Pin(filepath.Join(b.cfg.PinDir, c.name)); err != nil {
			b.log.Error("hand off the fast path: the capture detaches", "iface", c.name, "err", err)
			continue
		}
		b.log.Info("capture handed off: its fast path stays attached", "iface", c.name, "pin", filepath.Join(b.cfg.PinDir, c.name))
	}
}

// removeStalePins detaches every capture program still pinned in
// Config.PinDir: Apply has taken over those of the plan's captures. Links
// of other programs pinned there are left alone (xdpprog.ErrNotCapture).
func (b *Broker) removeStalePins() {
	if b.cfg.PinDir == "" {
		return
	}
	ents, err := os.ReadDir(b.cfg.PinDir)
	if err != nil {
		// No directory, or one this user may not read: nothing of ours
		// is pinned there.
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
			b.log.Error("read pinned captures", "dir", b.cfg.PinDir, "err", err)
		}
		return
	}
	for _, e := range ents {
		err := xdpprog.RemovePin(filepath.Join(b.cfg.PinDir, e.Name()))
		if errors.Is(err, xdpprog.ErrNotCapture) {
			// Another program's link: not ours to detach, nor to
			// complain about at every Apply.
			b.log.Debug("pin left alone: not a capture's", "pin", e.Name())
			continue
		}
		if err != nil {
			b.log.Error("detach a pinned capture", "iface", e.Name(), "err", err)
			continue
		}
		b.log.Info("pinned capture detached: not in the plan", "iface", e.Name())
	}
}
