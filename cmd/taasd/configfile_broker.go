package main

import (
	"log/slog"

	"github.com/taas-appliance/taas/broker"
)

// brokerConfig is the data plane's configuration: the file's [broker] table
// and its capture [[interfaces]]. Without a file it is the broker's
// defaults with the fast path on, and every capture interface a plan names
// gets the default settings.
func (c config) brokerConfig(logger *slog.Logger) broker.Config {
	// The fast path is taasd's default; the broker's zero Config keeps the
	// AF_XDP path for library users who do not ask.
	bc := broker.Config{Logger: logger, FastPath: true, PinDir: c.PinDir}
	fc := c.File
	if fc == nil {
		return bc
	}
	bc.FastPath = !fc.isSet("broker.fast_path") || fc.Broker.FastPath
	bc.BatchSize = fc.Broker.BatchSize
	bc.FrameSize = fc.Broker.FrameSize
	bc.RxRingSize = fc.Broker.RxRingSize
	bc.BusyPoll = fc.Broker.BusyPoll
	bc.CPUs = fc.Broker.CPUs
	for _, ifc := range fc.Interfaces {
		if ifc.Role != roleCapture {
			continue
		}
		bc.Interfaces = append(bc.Interfaces, broker.IfaceConfig{Name: ifc.Name, Queues: ifc.Queues, Unmatched: ifc.Unmatched})
	}
	return bc
}
