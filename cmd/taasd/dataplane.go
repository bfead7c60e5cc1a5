package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/taas-appliance/taas/control"
)

// newDataPlane builds the data plane --dataplane names, and what closes it.
// The broker engineer wires "xdp" here.
func newDataPlane(_ context.Context, cfg config, _ *slog.Logger) (control.DataPlane, func(), error) {
	switch cfg.Dataplane {
	case "xdp":
		return nil, nil, errors.New("--dataplane xdp: not wired yet")
	default:
		return control.NullDataPlane{}, func() {}, nil
	}
}
