package testutil

import (
	"errors"
	"runtime"

	"github.com/vishvananda/netns"
)

// InNetns runs fn on an OS thread switched into the named namespace (made
// by Netns) and returns fn's error. Sockets, XDP links and AF_XDP sockets fn
// creates stay in that namespace after it returns, and may be used from any
// goroutine. If the thread cannot be switched back it stays locked, so the
// runtime retires it instead of reusing it in the wrong namespace.
func InNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
