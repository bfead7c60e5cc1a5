package main

import (
	"log/slog"

	"github.com/taas-appliance/taas/broker"
)

// brokerConfig is the data plane's configuration: the file's [broker] table
// and its capture [[interfaces]]. Without a file it is the broker's
// defaults, and every capture interface a plan names gets the default
// settings.
func (c config) brokerConfig(logger *slog.Logger) broker.Config {
	bc := broker.Config{Logger: logger}
	fc := c.File
	if fc == nil {
		return bc
	}
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
