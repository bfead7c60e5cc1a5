package broker

import (
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkWatch follows netlink link messages and calls notify when an
// interface the current plan uses appears, disappears, is renamed (to or
// from a name the plan uses), or changes its ifindex, admin state,
// operational state or MTU, and when any link joins or leaves a bridge or
// bond (the loop guard's input). Other messages (our own XDP
// attach, statistics, unrelated links) are ignored, so a reconcile pass
// never triggers itself. One goroutine reads the netlink socket.
type linkWatch struct {
	notify func()
	log    *slog.Logger
	done   chan struct{}
	exited chan struct{}

	mu      sync.Mutex
	watched map[string]bool
	// indexes are the ifindexes the watched names had at the last Apply: a
	// message for one of them under another name is a rename away.
	indexes map[int]string
	last    map[string]linkKey
	// masters are the bridge or bond (ifindex) of every link seen: a
	// link enslaved or released anywhere may close a loop between a
	// monitor and a capture (loop.go), e.g. the peers of their veths put
	// into one bridge, with no watched link changing otherwise.
	masters map[int]int
}

type linkKey struct {
	index int
	up    bool
	oper  netlink.LinkOperState
	mtu   int
}

func startLinkWatch(notify func(), log *slog.Logger) (*linkWatch, error) {
	lw := &linkWatch{notify: notify, log: log, done: make(chan struct{}), exited: make(chan struct{}),
		watched: map[string]bool{}, indexes: map[int]string{}, last: map[string]linkKey{}, masters: map[int]int{}}
	ch := make(chan netlink.LinkUpdate, 64)
	err := netlink.LinkSubscribeWithOptions(ch, lw.done, netlink.LinkSubscribeOptions{
		ErrorCallback: watchErr(lw.done, log, "link watch", notify),
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	go lw.run(ch)
	return lw, nil
}

func (lw *linkWatch) run(ch <-chan netlink.LinkUpdate) {
	defer close(lw.exited)
	for u := range ch {
		a := u.Link.Attrs()
		k := linkKey{index: a.Index, up: a.Flags&net.FlagUp != 0, oper: a.OperState, mtu: a.MTU}
		lw.mu.Lock()
		changed := false
		if was, ok := lw.indexes[a.Index]; ok && was != a.Name {
			// Renamed away from a name the plan uses (issue 9): the
			// name is gone, and what was attached to it must go too.
			changed = true
			delete(lw.indexes, a.Index)
			delete(lw.last, was)
		}
		// A master change of any link: a link first seen with a master
		// counts as one, an extra reconcile pass at most once per link.
		if u.Header.Type == unix.RTM_DELLINK {
			delete(lw.masters, a.Index)
		} else if m, ok := lw.masters[a.Index]; m != a.MasterIndex && (ok || a.MasterIndex != 0) {
			changed = true
			lw.masters[a.Index] = a.MasterIndex
		} else if !ok {
			lw.masters[a.Index] = a.MasterIndex
		}
		if lw.watched[a.Name] {
			prev, had := lw.last[a.Name]
			if u.Header.Type == unix.RTM_DELLINK {
				changed = true
				delete(lw.last, a.Name)
			} else {
				changed = !had || prev != k
				lw.last[a.Name] = k
			}
		}
		lw.mu.Unlock()
		if changed {
			lw.notify()
		}
	}
}

// setWatched replaces the set of interface names that matter, with the
// ifindexes of those that exist.
func (lw *linkWatch) setWatched(names map[string]bool, indexes map[int]string) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.watched = names
	lw.indexes = indexes
	for n := range lw.last {
		if !names[n] {
			delete(lw.last, n)
		}
	}
}

// watchErr is the ErrorCallback of a netlink subscription that done ends:
// the subscription may have lost messages, so reconcile anyway.
func watchErr(done <-chan struct{}, log *slog.Logger, what string, notify func()) func(error) {
	return func(err error) {
		select {
		case <-done:
			return // stop closed the socket under the reader
		default:
		}
		log.Warn(what, "err", err)
		notify()
	}
}

// stop ends the subscription and waits for the goroutine.
func (lw *linkWatch) stop() {
	close(lw.done)
	<-lw.exited
}
