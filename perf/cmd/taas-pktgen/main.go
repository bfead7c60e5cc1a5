// Command taas-pktgen is a pktgen-style packet generator: it injects UDP
// frames out of a veth (or any link whose peer accepts XDP frames) with XDP
// live frames, at a paced rate or flat out, and prints what it offered.
//
//	taas-pktgen --iface gen0 --duration 5s --size 60 --rate 0
//	taas-pktgen --netns lab --iface gen0 --count 1000000 --rate 1M \
//	    --src-macs 02:00:00:00:00:01,fa:16:3e:00:00:01 --vlan 100-103 --flows 16
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/taas-appliance/taas/perf"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "taas-pktgen:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		c              perf.Config
		rate, src, dst string
		vlan, qinq     string
		asJSON         bool
		batch          uint
	)
	flag.StringVar(&c.Iface, "iface", "", "link to send out of (required); a veth's peer receives the frames")
	flag.StringVar(&c.Netns, "netns", "", "named network namespace of --iface (default: the current one)")
	flag.Uint64Var(&c.Count, "count", 0, "frames to send (0: no count limit)")
	flag.DurationVar(&c.Duration, "duration", 0, "how long to send (0: no time limit); one of --count and --duration is required")
	flag.StringVar(&rate, "rate", "0", "frames per second, with optional k/M/G suffix (0: flat out)")
	flag.IntVar(&c.Traffic.Size, "size", perf.MinFrameSize, fmt.Sprintf("L2 frame size without FCS, %d-%d", perf.MinFrameSize, perf.MaxFrameSize))
	flag.StringVar(&src, "src-macs", "", "source MACs, comma separated, used round-robin (default 02:00:00:00:00:01)")
	flag.StringVar(&dst, "dst-macs", "", "destination MACs, comma separated, used round-robin (default 02:00:00:00:00:02)")
	flag.StringVar(&vlan, "vlan", "", "802.1Q VID or range (e.g. 100-199), round-robin (default: untagged)")
	flag.StringVar(&qinq, "qinq", "", "add an 802.1ad outer tag with this VID or range")
	flag.IntVar(&c.Traffic.Flows, "flows", 1, fmt.Sprintf("distinct UDP source ports, 1-%d", perf.MaxFlows))
	flag.BoolVar(&c.Traffic.Mix, "mix", false, "mixed traffic: TCP and UDP to ten well-known ports in turn, 1 frame in 10 \"tcp port 443\", for every source MAC")
	flag.IntVar(&c.CPU, "cpu", -1, "pin the generator to this CPU (-1: unpinned)")
	flag.UintVar(&batch, "batch", 64, "frames per kernel flush (live frames batch), 1-256")
	flag.Uint64Var(&c.Burst, "burst", 0, fmt.Sprintf("most frames a paced run sends at once (0: 128, chunks of 100 us; larger, up to %d: 1 ms chunks, for a receiver on the generator's CPU)", perf.MaxBurst))
	flag.BoolVar(&c.AFXDP, "afxdp", false, "send with an AF_XDP socket (the ~1 Mpps fallback) instead of XDP live frames")
	flag.BoolVar(&c.Realtime, "rt", false, "run the generating thread SCHED_FIFO, so pacing holds on a busy machine")
	flag.BoolVar(&asJSON, "json", false, "print the result as JSON")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	var err error
	if c.Rate, err = parseRate(rate); err != nil {
		return err
	}
	if c.Traffic.SrcMACs, err = perf.ParseMACList(src); err != nil {
		return fmt.Errorf("--src-macs: %w", err)
	}
	if c.Traffic.DstMACs, err = perf.ParseMACList(dst); err != nil {
		return fmt.Errorf("--dst-macs: %w", err)
	}
	if c.Traffic.VLANs, err = perf.ParseVIDRange(vlan); err != nil {
		return fmt.Errorf("--vlan: %w", err)
	}
	if qinq != "" {
		c.Traffic.OuterTag = true
		if c.Traffic.Outer, err = perf.ParseVIDRange(qinq); err != nil {
			return fmt.Errorf("--qinq: %w", err)
		}
	}
	c.Batch = uint32(batch)
	if err := c.Validate(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := perf.Generate(ctx, c)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"frames": r.Frames, "bytes": r.Bytes, "seconds": r.Elapsed.Seconds(),
			"mpps": r.Mpps(), "gbps": r.Gbps(), "size": c.Traffic.Size,
		})
	}
	fmt.Println(r)
	return nil
}

// parseRate parses "0", "250000", "1.5M", "500k".
func parseRate(s string) (float64, error) {
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1e9, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("--rate %q: want a non-negative number with optional k/M/G", s)
	}
	return v * mult, nil
}
