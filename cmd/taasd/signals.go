package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// How taasd stops (issue 9). SIGTERM and SIGINT stop it for good: every XDP
// program detaches, nothing is left behind. SIGUSR2 stops it for a restart:
// the captures on the fast path stay attached, pinned in --pin-dir, and go
// on copying with their last tables until the next taasd takes them over
// (broker/handoff.go); taasd then exits with exitHandoff, which the unit's
// RestartForceExitStatus turns into a restart. Until a taasd starts again
// they copy with nobody in charge: the next start takes over those of its
// plan and detaches the rest, and `rm /sys/fs/bpf/taasd/*` (unpinning)
// detaches them by hand. A taasd that crashes leaves nothing pinned: it
// pins only on SIGUSR2.
var (
	errStop    = errors.New("stop signal")
	errHandoff = errors.New("restart signal (SIGUSR2): hand the fast path off")
)

// exitHandoff is the exit status after SIGUSR2: EX_TEMPFAIL, "try again".
const exitHandoff = 75

// defaultPinDir is --pin-dir's default: the unit's bpffs directory.
const defaultPinDir = "/sys/fs/bpf/taasd"

// stopContext is cancelled by the first SIGTERM, SIGINT or SIGUSR2, with
// errStop or errHandoff as its cause.
func stopContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGUSR2)
	go func() {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGUSR2 {
				cancel(errHandoff)
			} else {
				cancel(errStop)
			}
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel(context.Canceled)
	}
}

// stopErr is run's error as main reports it: a stop signal that arrives
// while taasd is still starting cancels what it was doing (a migration in
// its transaction, the first plan), which is the stop asked for, not a
// failure to log as an error and exit 1 with.
func stopErr(ctx context.Context, err error) error {
	cause := context.Cause(ctx)
	if errors.Is(err, context.Canceled) && (errors.Is(cause, errStop) || errors.Is(cause, errHandoff)) {
		return nil
	}
	return err
}
