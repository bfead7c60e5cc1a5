package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/taas-appliance/taas/broker"
	"github.com/taas-appliance/taas/control"
)

// newDataPlane builds the data plane --dataplane names, and what closes it.
// With "xdp" it is the AF_XDP broker; the reconciler applies the store's
// plan to it at start-up, so the data plane is rebuilt from the store alone.
// Its close hands the fast path off (broker.Handoff) when ctx ended with
// errHandoff (SIGUSR2), and detaches everything otherwise.
func newDataPlane(ctx context.Context, cfg config, logger *slog.Logger) (control.DataPlane, func(), error) {
	switch cfg.Dataplane {
	case "xdp":
		b, err := broker.New(cfg.brokerConfig(logger))
		if err != nil {
			return nil, nil, err
		}
		return b, func() {
			closeDP := b.Close
			if errors.Is(context.Cause(ctx), errHandoff) {
				closeDP = b.Handoff
			}
			if err := closeDP(); err != nil {
				logger.Error("close data plane", "err", err)
			}
		}, nil
	default:
		return control.NullDataPlane{}, func() {}, nil
	}
}
