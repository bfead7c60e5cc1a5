package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/taas-appliance/taas/control"
)

// reloadHook rereads one file SIGHUP covers (issue 9): the tokens file
// today, the TLS certificate when taasd serves TLS. A hook that fails keeps
// what it had and says why; it never stops taasd.
type reloadHook struct {
	what string // what it reloads, for the log: "tokens"
	fn   func() error
}

// reloadHooks are the hooks of a run whose control plane is srv.
func reloadHooks(cfg config, srv *control.Server, certs *certStore, logger *slog.Logger) []reloadHook {
	var hooks []reloadHook
	if certs != nil {
		hooks = append(hooks, reloadHook{what: "TLS certificate", fn: certs.reload})
	}
	if cfg.Auth == control.AuthToken {
		hooks = append(hooks, reloadHook{what: "tokens", fn: func() error {
			t, err := control.LoadTokens(cfg.Tokens, logger)
			if err != nil {
				return err
			}
			ch, err := srv.SetTokens(t)
			if err != nil {
				return err
			}
			logger.Info("tokens reloaded", "file", cfg.Tokens, "tokens", ch.Total,
				"added", ch.Added, "removed", ch.Removed, "changed", ch.Changed)
			return nil
		}})
	}
	return hooks
}

// serveReloads runs every hook on each value of hup until ctx ends.
func serveReloads(ctx context.Context, hup <-chan os.Signal, hooks []reloadHook, logger *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if len(hooks) == 0 {
			logger.Info("SIGHUP: nothing to reload (no tokens file and no TLS certificate)")
			continue
		}
		for _, h := range hooks {
			if err := h.fn(); err != nil {
				logger.Error("reload "+h.what+": kept the previous "+h.what, "err", err)
			}
		}
	}
}
