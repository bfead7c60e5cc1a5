package broker

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

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
	return startLinkWatchWith(notify, log, subscribeLinks)
}

// startLinkWatchWith is startLinkWatch with the subscription to use, which
// tests replace to end it at will.
func startLinkWatchWith(notify func(), log *slog.Logger, subscribe linkSubscribe) (*linkWatch, error) {
	lw := &linkWatch{notify: notify, log: log, done: make(chan struct{}), exited: make(chan struct{}),
		watched: map[string]bool{}, indexes: map[int]string{}, last: map[string]linkKey{}, masters: map[int]int{}}
	var ch <-chan netlink.LinkUpdate
	w := newRewatch("link watch", log, notify, func(done <-chan struct{}, onErr func(error)) error {
		c, err := subscribe(done, onErr)
		ch = c
		return err
	})
	if err := w.subscribe(); err != nil {
		return nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	go func() {
		defer close(lw.exited)
		for {
			select {
			case u, ok := <-ch:
				if !ok {
					ch = nil
					w.lost()
					continue
				}
				lw.update(u)
			case <-w.retry:
				if w.subscribe() == nil {
					// Messages were lost meanwhile: the reconciler
					// compares every link anyway.
					notify()
				}
			case <-lw.done:
				w.end()
				if ch != nil {
					for range ch {
					}
				}
				return
			}
		}
	}()
	return lw, nil
}

// linkSubscribe starts a subscription to link messages that closing done
// ends.
type linkSubscribe func(done <-chan struct{}, onErr func(error)) (<-chan netlink.LinkUpdate, error)

func subscribeLinks(done <-chan struct{}, onErr func(error)) (<-chan netlink.LinkUpdate, error) {
	ch := make(chan netlink.LinkUpdate, 64)
	err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		ErrorCallback: onErr, ReceiveBufferSize: watchRcvBuf, ReceiveBufferForceSize: true,
	})
	return ch, err
}

// update handles one link message.
func (lw *linkWatch) update(u netlink.LinkUpdate) {
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

// watchRcvBuf is the receive buffer of the netlink subscriptions in bytes,
// forced past net.core.rmem_max (the broker has CAP_NET_ADMIN anyway): a
// router's full table churning overflows the default of about 200 KiB.
const watchRcvBuf = 4 << 20

// The backoff between tries to subscribe again: doubled from
// watchRetryMin after each failure up to watchRetryMax, and back to
// watchRetryMin once a subscription lived longer than watchRetryMax.
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 10 * time.Second
)

// rewatch keeps a netlink subscription of a watch goroutine going. A
// failed receive (ENOBUFS after a burst of messages) makes
// vishvananda/netlink close the update channel; a watch that took that for
// its end would stop following the kernel silently (review of issue 10).
// The goroutine calls lost when its channel closes, subscribe when retry
// fires, and end when the watch stops; only it uses the rewatch.
type rewatch struct {
	what   string
	log    *slog.Logger
	notify func()
	sub    func(done <-chan struct{}, onErr func(error)) error

	// done ends the current subscription, nil when there is none.
	done  chan struct{}
	since time.Time
	// retry fires when it is time to subscribe again, nil otherwise.
	retry   <-chan time.Time
	backoff time.Duration
}

func newRewatch(what string, log *slog.Logger, notify func(),
	sub func(done <-chan struct{}, onErr func(error)) error) *rewatch {
	return &rewatch{what: what, log: log, notify: notify, sub: sub, backoff: watchRetryMin}
}

// subscribe starts a subscription, or schedules the next try when it fails.
func (w *rewatch) subscribe() error {
	w.retry = nil
	done := make(chan struct{})
	if err := w.sub(done, watchErr(done, w.log, w.what, w.notify)); err != nil {
		close(done)
		w.again()
		w.log.Warn(w.what+": subscribe", "err", err, "retry_in", w.backoff)
		return err
	}
	if w.since != (time.Time{}) {
		w.log.Info(w.what + ": subscribed again")
	}
	w.done, w.since = done, time.Now()
	return nil
}

// lost ends the current subscription, whose channel closed, and schedules
// another.
func (w *rewatch) lost() {
	close(w.done)
	w.done = nil
	if time.Since(w.since) > watchRetryMax {
		w.backoff = watchRetryMin
	}
	w.log.Warn(w.what+": subscription ended, subscribing again", "retry_in", w.backoff)
	w.again()
}

func (w *rewatch) again() {
	w.retry = time.After(w.backoff)
	w.backoff = min(2*w.backoff, watchRetryMax)
}

// end ends the current subscription for good.
func (w *rewatch) end() {
	if w.done != nil {
		close(w.done)
		w.done = nil
	}
	w.retry = nil
}

// stop ends the subscription and waits for the goroutine.
func (lw *linkWatch) stop() {
	close(lw.done)
	<-lw.exited
}
