package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/taas-appliance/taas/broker"
)

// brokerConfig is the data plane's configuration: the file's [broker] table
// and its capture [[interfaces]]. Without a file it is the broker's
// defaults with the fast path on, and every capture interface a plan names
// gets the default settings.
func (c config) brokerConfig(logger *slog.Logger) broker.Config {
	bc, _ := c.File.brokerConfig()
	bc.Logger, bc.PinDir = logger, c.PinDir
	return bc
}

// brokerConfig is the broker.Config the file describes, and for each of
// its Interfaces the index of the [[interfaces]] entry it comes from.
// Without a file (fc nil) it is the zero Config with the fast path on:
// the fast path is taasd's default, while the broker's zero Config keeps
// the AF_XDP path for library users who do not ask.
func (fc *fileConfig) brokerConfig() (broker.Config, []int) {
	bc := broker.Config{FastPath: true}
	if fc == nil {
		return bc, nil
	}
	bc.FastPath = !fc.isSet("broker.fast_path") || fc.Broker.FastPath
	bc.BatchSize = fc.Broker.BatchSize
	bc.FrameSize = fc.Broker.FrameSize
	bc.RxRingSize = fc.Broker.RxRingSize
	bc.BusyPoll = fc.Broker.BusyPoll
	bc.CPUs = fc.Broker.CPUs
	var from []int
	for i, ifc := range fc.Interfaces {
		if ifc.Role != roleCapture {
			continue
		}
		bc.Interfaces = append(bc.Interfaces, broker.IfaceConfig{Name: ifc.Name, Queues: ifc.Queues, Unmatched: ifc.Unmatched})
		from = append(from, i)
	}
	return bc, from
}

// brokerKeys and ifaceKeys map the broker.Config and broker.IfaceConfig
// fields the file sets to the file's keys.
var (
	brokerKeys = map[string]string{"BatchSize": "broker.batch_size", "FrameSize": "broker.frame_size",
		"RxRingSize": "broker.rx_ring_size", "CPUs": "broker.cpus"}
	ifaceKeys = map[string]string{"Name": "name", "Queues": "queues", "Unmatched": "unmatched"}
)

// brokerProblems is what the broker's own validation says of the file's
// [broker] table and capture interfaces, each problem naming the file's
// key: broker.Config.Problems holds the rules (ranges, powers of two,
// interface names, unmatched), this only renames "Interfaces[0].Queues" to
// "interfaces[2].queues" (from maps the broker's interfaces to the file's).
func brokerProblems(bc broker.Config, from []int) []error {
	var errs []error
	for _, p := range bc.Problems() {
		errs = append(errs, fmt.Errorf("%s: %s", fileKey(p.Field, from), p.Problem))
	}
	return errs
}

// fileKey is the file's key of broker.Config field f ("CPUs[1]" is
// "broker.cpus[1]", "Interfaces[0].Queues" "interfaces[2].queues"); a field
// the file does not set keeps the broker's name, after "broker ".
func fileKey(f string, from []int) string {
	var i int
	var field string
	if n, _ := fmt.Sscanf(f, "Interfaces[%d].%s", &i, &field); n == 2 && i >= 0 && i < len(from) {
		if k, ok := ifaceKeys[field]; ok {
			return fmt.Sprintf("interfaces[%d].%s", from[i], k)
		}
	}
	name, index, indexed := strings.Cut(f, "[")
	if k, ok := brokerKeys[name]; ok {
		if indexed {
			return k + "[" + index
		}
		return k
	}
	return "broker " + f
}
