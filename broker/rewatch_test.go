package broker

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taas-appliance/taas/internal/testutil"
	"github.com/vishvananda/netlink"
)

// watchLab is a veth pair whose end P+"up" in the test's namespace holds a
// TEST-NET /29 and a permanent neighbour, for the watches to follow.
type watchLab struct {
	uplink string
	peer   netip.Addr
}

func newWatchLab(t *testing.T) watchLab {
	t.Helper()
	testutil.RequireRoot(t, "CAP_NET_ADMIN for a veth pair, a namespace and netlink subscriptions")
	p := testutil.Prefix(t)
	ns := testutil.Netns(t, p+"rt")
	l := watchLab{uplink: p + "up"}
	testutil.Veth(t, l.uplink, p+"upr", testutil.VethOpts{NetnsB: ns})
	n := rand.IntN(32)
	l.peer = netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", 8*n+2))
	testutil.Run(t, "ip", "addr", "add", fmt.Sprintf("198.51.100.%d/29", 8*n+1), "dev", l.uplink)
	l.setNeigh(t, "02:00:5e:10:00:01")
	testutil.WaitOperUp(t, "", l.uplink)
	return l
}

func (l watchLab) setNeigh(t *testing.T, mac string) {
	t.Helper()
	testutil.Run(t, "ip", "neigh", "replace", l.peer.String(), "lladdr", mac, "dev", l.uplink, "nud", "permanent")
}

// endFirst is a subscription whose first attempt ends at once, as
// vishvananda/netlink ends one whose receive failed (ENOBUFS): it closes the
// channels. It counts the attempts.
func endFirst[T any](calls *atomic.Int32, real func(done <-chan struct{}, onErr func(error)) (T, error),
	closed func() T) func(done <-chan struct{}, onErr func(error)) (T, error) {
	return func(done <-chan struct{}, onErr func(error)) (T, error) {
		if calls.Add(1) == 1 {
			return closed(), nil
		}
		return real(done, onErr)
	}
}

func waitCalls(t *testing.T, calls *atomic.Int32, want int32) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); calls.Load() < want; {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions, want %d", calls.Load(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func notifyChan() (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	return ch, func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// settle drains the notifications until none came for 200 ms, so that
// the next one is about the next change.
func settle(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		case <-time.After(200 * time.Millisecond):
			return
		}
	}
}

func waitNotify(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	start := time.Now()
	select {
	case <-ch:
		t.Logf("%s: notified after %v", what, time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no notification in 5 s", what)
	}
}

// TestResolverResubscribes ends the resolver's first subscription as a
// failed receive does, and checks that a later neighbour change is still
// noticed. The tick is an hour: only the new subscription can tell.
func TestResolverResubscribes(t *testing.T) {
	l := newWatchLab(t)
	var calls atomic.Int32
	type pair struct {
		routes <-chan netlink.RouteUpdate
		neighs <-chan netlink.NeighUpdate
	}
	sub := endFirst(&calls, func(done <-chan struct{}, onErr func(error)) (pair, error) {
		rs, ns, err := subscribeRouting(done, onErr)
		return pair{rs, ns}, err
	}, func() pair {
		rs, ns := make(chan netlink.RouteUpdate), make(chan netlink.NeighUpdate)
		close(rs)
		close(ns)
		return pair{rs, ns}
	})
	var logs testutil.LogBuffer
	events, notify := notifyChan()
	r, err := startResolverWith(notify, nil, slog.New(slog.NewTextHandler(&logs, nil)), time.Hour,
		func(done <-chan struct{}, onErr func(error)) (<-chan netlink.RouteUpdate, <-chan netlink.NeighUpdate, error) {
			p, err := sub(done, onErr)
			return p.routes, p.neighs, err
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	uplinks := []string{l.uplink}
	res := resolve(l.peer, uplinks, neighCache{})
	if !res.ok() {
		t.Fatalf("resolve(%s) = %q, want usable", l.peer, res.why)
	}
	r.set(map[netip.Addr]resolution{l.peer: res}, uplinks)
	waitCalls(t, &calls, 2)
	// Subscribing again checks everything and has the reconciler apply.
	waitNotify(t, events, "subscribed again")
	if !strings.Contains(logs.String(), "subscription ended") {
		t.Errorf("logs say nothing of the ended subscription:\n%s", logs.String())
	}

	settle(events)
	l.setNeigh(t, "02:00:5e:10:00:02")
	waitNotify(t, events, "neighbour MAC changed")
}

// TestLinkWatchResubscribes does the same for the link watch: a watched
// link's MTU changes after its first subscription ended.
func TestLinkWatchResubscribes(t *testing.T) {
	l := newWatchLab(t)
	var calls atomic.Int32
	sub := endFirst(&calls, subscribeLinks, func() <-chan netlink.LinkUpdate {
		ch := make(chan netlink.LinkUpdate)
		close(ch)
		return ch
	})
	var logs testutil.LogBuffer
	events, notify := notifyChan()
	lw, err := startLinkWatchWith(notify, slog.New(slog.NewTextHandler(&logs, nil)), sub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lw.stop)
	lw.setWatched(map[string]bool{l.uplink: true}, nil)
	waitCalls(t, &calls, 2)
	waitNotify(t, events, "subscribed again")
	// A first message about the uplink makes it known.
	testutil.Run(t, "ip", "link", "set", l.uplink, "alias", "uplink")
	waitNotify(t, events, "uplink seen")
	settle(events)

	testutil.Run(t, "ip", "link", "set", l.uplink, "mtu", "1400")
	waitNotify(t, events, "uplink MTU changed")
}

// TestResolverTicks checks the resolver runs its tick hook (the broker
// keeps its XDP programs' clocks in step there) on every tick.
func TestResolverTicks(t *testing.T) {
	testutil.RequireRoot(t, "CAP_NET_ADMIN for netlink subscriptions")
	var ticks atomic.Int32
	r, err := startResolverWith(func() {}, func() { ticks.Add(1) }, slog.New(slog.DiscardHandler),
		10*time.Millisecond, subscribeRouting)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	waitCalls(t, &ticks, 3)
}
