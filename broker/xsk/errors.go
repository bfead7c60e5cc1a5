package xsk

import (
	"errors"

	"golang.org/x/sys/unix"
)

// ErrNotSupported is wrapped by errors that say the kernel lacks AF_XDP or a
// feature this package needs. Callers branch on it with errors.Is; tests skip
// on it through testutil.SkipIfNotSupported, which recognises any error whose
// chain has a NotSupported() bool method returning true.
var ErrNotSupported error = notSupportedError{}

type notSupportedError struct{}

func (notSupportedError) Error() string      { return "not supported by this kernel" }
func (notSupportedError) NotSupported() bool { return true }

// ErrClosed is returned by calls on a closed Socket.
var ErrClosed = errors.New("xsk socket closed")

// ErrUnbound says the socket's interface is gone (unregistered): the kernel
// unbound the socket and it will never send or receive again. Close it and
// open a new one on the interface's new ifindex when it is back. Poll
// returns it wrapped around ENETDOWN, Kick as a *KickError with ENXIO.
var ErrUnbound = errors.New("xsk socket unbound: its interface is gone")

// KickError is what Kick returns when the kernel refuses to send for a reason
// retrying does not fix: ENETDOWN (the link is down), ENXIO (the link was
// deleted or the socket is unbound), and any errno not expected. It unwraps to
// the unix.Errno, so errors.Is(err, unix.ENETDOWN) works.
type KickError struct {
	Errno unix.Errno
}

func (e *KickError) Error() string { return "xsk kick: " + e.Errno.Error() }

func (e *KickError) Unwrap() error { return e.Errno }

// Is makes errors.Is(err, ErrUnbound) true for ENXIO: the kernel says it when
// the socket is no longer bound to an interface.
func (e *KickError) Is(target error) bool { return target == ErrUnbound && e.Errno == unix.ENXIO }

// Kick errors for the errnos a monitor link produces are built once, so that
// a link flapping under load does not allocate per batch.
var (
	errKickNetDown = &KickError{Errno: unix.ENETDOWN}
	errKickNxio    = &KickError{Errno: unix.ENXIO}
)

func kickError(e unix.Errno) error {
	switch e {
	case unix.ENETDOWN:
		return errKickNetDown
	case unix.ENXIO:
		return errKickNxio
	}
	return &KickError{Errno: e}
}
