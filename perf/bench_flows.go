package perf

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/net/bpf"
)

// ErrNoFilter is what a filter scenario returns for a peer that cannot
// express the flow's filter.
var ErrNoFilter = errors.New("cannot express the flow filter")

// setupFlow is one flow a peer realises: the frames from src that filter
// (a pcap-filter expression, "" for all) accepts are copied to the
// monitors Lab.Mons[i] for i in mons.
type setupFlow struct {
	src    net.HardwareAddr
	mons   []int
	filter string
}

// flows are the flows of s that count in the measurement (not the churn
// flow): with Sources one per source, flow i to monitor i % Fanout, the
// first with FlowFilter; otherwise one from PortMAC to the first Fanout
// monitors (in a tunnel scenario, to the collector: mons is then [0]).
func (s Setup) flows() []setupFlow {
	if len(s.Sources) == 0 {
		f := setupFlow{src: s.PortMAC}
		for i := range s.Fanout {
			f.mons = append(f.mons, i)
		}
		return []setupFlow{f}
	}
	var fs []setupFlow
	for i, src := range s.Sources {
		f := setupFlow{src: src, mons: []int{i % s.Fanout}}
		if i == 0 {
			f.filter = s.FlowFilter
		}
		fs = append(fs, f)
	}
	return fs
}

// selects is true when a peer must select frames by source MAC: the
// traffic holds frames of other sources too.
func (s Setup) selects() bool {
	return s.Filter || s.ChurnMAC != nil || len(s.Sources) > 0
}

// pcapExpr is the pcap-filter expression of f alone: its source MAC and
// its filter.
func (f setupFlow) pcapExpr() string {
	e := "ether src " + f.src.String()
	if f.filter != "" {
		e += " and (" + f.filter + ")"
	}
	return e
}

// monitorExpr is the pcap-filter expression of what flows copy to monitor
// mon, for the peers that take one expression per output.
func monitorExpr(flows []setupFlow, mon int) string {
	var parts []string
	for _, f := range flows {
		for _, m := range f.mons {
			if m == mon {
				parts = append(parts, "("+f.pcapExpr()+")")
			}
		}
	}
	return strings.Join(parts, " or ")
}

// compilePcap compiles a pcap-filter expression for Ethernet frames with
// tcpdump -ddd (what a tc user would feed cls_bpf), reading an empty
// capture file rather than opening an interface.
func compilePcap(expr string) ([]bpf.RawInstruction, error) {
	dir, err := os.MkdirTemp("", "taas-pcap-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// A pcap file header and no records: little-endian, version 2.4,
	// snaplen 65535, linktype 1 (EN10MB).
	hdr := []byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0}
	file := filepath.Join(dir, "empty.pcap")
	if err := os.WriteFile(file, hdr, 0o644); err != nil {
		return nil, err
	}
	out, err := exec.Command("tcpdump", "-ddd", "-r", file, expr).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("tcpdump -ddd %q: %w: %s", expr, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("tcpdump -ddd %q: %w", expr, err)
	}
	return parseDDD(strings.Join(strings.Split(strings.TrimSpace(string(out)), "\n"), ","))
}

// parseDDD parses tcpdump -ddd output: a count, then one "code jt jf k"
// per line.
func parseDDD(s string) ([]bpf.RawInstruction, error) {
	rows := strings.Split(strings.Trim(s, ", \n"), ",")
	n, err := strconv.Atoi(strings.TrimSpace(rows[0]))
	if err != nil || n != len(rows)-1 {
		return nil, fmt.Errorf("tcpdump -ddd: %d instructions announced, %d given", n, len(rows)-1)
	}
	prog := make([]bpf.RawInstruction, 0, n)
	for _, r := range rows[1:] {
		var v [4]uint64
		f := strings.Fields(r)
		if len(f) != 4 {
			return nil, fmt.Errorf("tcpdump -ddd: instruction %q", r)
		}
		for i, bits := range []int{16, 8, 8, 32} {
			if v[i], err = strconv.ParseUint(f[i], 10, bits); err != nil {
				return nil, fmt.Errorf("tcpdump -ddd: instruction %q: %w", r, err)
			}
		}
		prog = append(prog, bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])})
	}
	return prog, nil
}

// ddd formats a program as cls_bpf's bytecode argument (tcpdump -ddd's
// lines joined by commas).
func ddd(prog []bpf.RawInstruction) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", len(prog))
	for _, in := range prog {
		fmt.Fprintf(&b, ",%d %d %d %d", in.Op, in.Jt, in.Jf, in.K)
	}
	return b.String()
}

// copiesPerEntry is how many copies each distinct frame of tr (in the
// generator's order) should yield on the counted outputs: the flows
// whose source it comes from and whose filter accepts it, each times its
// monitors. Filters run in x/net/bpf's VM on tcpdump's code.
func copiesPerEntry(tr Traffic, flows []setupFlow) ([]uint64, error) {
	frames, err := tr.Frames()
	if err != nil {
		return nil, err
	}
	vms := make([]*bpf.VM, len(flows))
	for i, f := range flows {
		if f.filter == "" {
			continue
		}
		raw, err := compilePcap(f.filter)
		if err != nil {
			return nil, err
		}
		prog, ok := bpf.Disassemble(raw)
		if !ok {
			return nil, fmt.Errorf("filter %q: tcpdump's code does not disassemble", f.filter)
		}
		if vms[i], err = bpf.NewVM(prog); err != nil {
			return nil, fmt.Errorf("filter %q: %w", f.filter, err)
		}
	}
	out := make([]uint64, len(frames))
	for i, fr := range frames {
		for j, f := range flows {
			if !bytes.Equal(fr[6:12], f.src) {
				continue
			}
			if vms[j] != nil {
				n, err := vms[j].Run(fr)
				if err != nil {
					return nil, fmt.Errorf("filter %q: %w", f.filter, err)
				}
				if n == 0 {
					continue
				}
			}
			out[i] += uint64(len(f.mons))
		}
	}
	return out, nil
}

// wantedCopies is how many copies n frames of a traffic whose entries
// yield per copies each should give (the generator starts at entry 0).
func wantedCopies(per []uint64, n uint64) uint64 {
	var cycle, head uint64
	rest := n % uint64(len(per))
	for i, c := range per {
		cycle += c
		if uint64(i) < rest {
			head += c
		}
	}
	return n/uint64(len(per))*cycle + head
}
