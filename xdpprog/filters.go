package xdpprog

import (
	"errors"
	"fmt"
	"reflect"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/net/bpf"
)

// The flow filters of the fast path (issue 11). A decision with filtered
// flows makes xdp_capture stash the decisions' keys in fast_scratch and
// tail-call fast_progs[gen], the filter program of the table's generation,
// generated here from FastTable.Filters:
//
//  1. look up fast_scratch (need: the filters the frame's flows use)
//  2. for each filter i, in table order: when need has bit i, zero the
//     scratch memory it reads, run it (translate.go), and set bit i of
//     result when it accepts
//  3. tail-call xdp_resume (fast_progs[resumeSlot]), which counts flows
//     matched and rejected and sends the copies of the services that
//     matched; should that fail, count fast_failed and take the unmatched
//     action, as xdp_capture does when its own tail call fails
//
// Each filter is emitted once however many flows use it. The program
// belongs to its generation: SetFast loads the next table's beside the
// live one and closes the old one only after the barrier, so a frame
// decided with generation g runs g's filters.

const (
	// MaxFastFilters is the most filters of one FastTable: bits of the
	// need and result masks.
	MaxFastFilters = 64
	// resumeSlot is xdp_resume's slot of fast_progs: RESUME_SLOT.
	resumeSlot = 2
	// noFilter is Decision.ffilt of an unfiltered flow: NO_FILTER.
	noFilter = 0xff
	// keyOff is the stack slot of the map key 0.
	keyOff = memOff - 8
)

// Offsets of the fields the filter program reads and writes.
var (
	needOff    = int16(unsafe.Offsetof(xdpFilterState{}.Need))
	resultOff  = int16(unsafe.Offsetof(xdpFilterState{}.Result))
	actionOff  = int16(unsafe.Offsetof(xdpFilterState{}.Action))
	failedOff  = int16(unsafe.Offsetof(xdpCounters{}.FastFailed))
	passedOff  = int16(unsafe.Offsetof(xdpCounters{}.Passed))
	droppedOff = int16(unsafe.Offsetof(xdpCounters{}.Dropped))
)

// filterInsns is the filter program of filters on c's maps.
func (c *Capture) filterInsns(filters [][]bpf.Instruction) (asm.Instructions, error) {
	e := &emitter{}
	e.emit(
		asm.Mov.Reg(rCtx, asm.R1),
		asm.LoadMem(rData, rCtx, 0, asm.Word),
		asm.LoadMem(rEnd, rCtx, 4, asm.Word),
		asm.StoreImm(asm.RFP, keyOff, 0, asm.Word),
		mapPtr(asm.R1, c.objs.FastScratch),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, keyOff),
		asm.FnMapLookupElem.Call(),
		// Cannot happen (slot 0 of a one-slot array): pass the frame.
		asm.JNE.Imm(asm.R0, 0, "scratch"),
		asm.Mov.Imm(asm.R0, int32(xdpPass)),
		asm.Return(),
	)
	e.label("scratch")
	e.emit(asm.Mov.Reg(rScratch, asm.R0))
	for i, f := range filters {
		next, accept := fmt.Sprintf("next%d", i), fmt.Sprintf("accept%d", i)
		e.emit(
			asm.LoadMem(asm.R1, rScratch, needOff, asm.DWord),
			asm.RSh.Imm(asm.R1, int32(i)),
			asm.And.Imm(asm.R1, 1),
			asm.JEq.Imm(asm.R1, 0, next),
		)
		body := &emitter{}
		mem, err := translate(body, f, fmt.Sprintf("f%d", i), accept, next)
		if err != nil {
			return nil, fmt.Errorf("filter %d: %w", i, err)
		}
		zeroScratch(e, mem)
		e.emit(body.insns...)
		e.label(accept)
		e.emit(
			asm.LoadMem(asm.R1, rScratch, resultOff, asm.DWord),
			asm.Mov.Imm(asm.R5, 1),
			asm.LSh.Imm(asm.R5, int32(i)),
			asm.Or.Reg(asm.R1, asm.R5),
			asm.StoreMem(rScratch, resultOff, asm.R1, asm.DWord),
		)
		e.label(next)
	}
	e.emit(
		asm.Mov.Reg(asm.R1, rCtx),
		mapPtr(asm.R2, c.objs.FastProgs),
		asm.Mov.Imm(asm.R3, resumeSlot),
		asm.FnTailCall.Call(),
		// No xdp_resume: count the frame failed, with the unmatched action.
		mapPtr(asm.R1, c.objs.Stats),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, keyOff),
		asm.FnMapLookupElem.Call(),
		asm.LoadMem(asm.R1, rScratch, actionOff, asm.Word),
		asm.JEq.Imm(asm.R0, 0, "verdict"),
		asm.LoadMem(asm.R2, asm.R0, failedOff, asm.DWord),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R0, failedOff, asm.R2, asm.DWord),
		asm.Mov.Imm(asm.R3, int32(passedOff)),
		asm.JNE.Imm(asm.R1, int32(xdpDrop), "action"),
		asm.Mov.Imm(asm.R3, int32(droppedOff)),
	)
	e.label("action")
	e.emit(
		asm.Add.Reg(asm.R0, asm.R3),
		asm.LoadMem(asm.R2, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R0, 0, asm.R2, asm.DWord),
	)
	e.label("verdict")
	e.emit(asm.Mov.Reg(asm.R0, asm.R1), asm.Return())
	return prune(e.insns)
}

// mapPtr loads a pointer to m into dst.
func mapPtr(dst asm.Register, m *ebpf.Map) asm.Instruction {
	return asm.LoadMapPtr(dst, m.FD())
}

// loadFiltersLocked loads the filter program of filters; a filter the
// translator or the verifier refuses wraps ErrFastLimit (the broker keeps
// the capture on the AF_XDP path).
func (c *Capture) loadFiltersLocked(filters [][]bpf.Instruction) (*ebpf.Program, error) {
	f := &c.fast
	if f.refusedErr != nil && reflect.DeepEqual(f.refused, filters) {
		return nil, f.refusedErr
	}
	prog, err := c.newFilterProg(filters)
	if err != nil {
		f.refused, f.refusedErr = filters, err
	}
	return prog, err
}

// MaxFilterInstructions bounds the eBPF instructions of one capture's filter
// program. The verifier's work grows with the program (and gives up at a
// million instructions processed, after tens of seconds); past this budget
// the table is refused at once instead.
const MaxFilterInstructions = 64 << 10

func (c *Capture) newFilterProg(filters [][]bpf.Instruction) (*ebpf.Program, error) {
	insns, err := c.filterInsns(filters)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrFastLimit)
	}
	if len(insns) > MaxFilterInstructions {
		return nil, fmt.Errorf("the filter program of %d filters has %d eBPF instructions, at most %d: %w",
			len(filters), len(insns), MaxFilterInstructions, ErrFastLimit)
	}
	cs, err := loadXdp()
	if err != nil {
		return nil, fmt.Errorf("load xdp spec: %w", err)
	}
	// A tail call needs the program's type and attach type to be those of
	// the programs that call it.
	spec := &ebpf.ProgramSpec{Name: "xdp_filters", Type: ebpf.XDP, License: "Dual BSD/GPL", Instructions: insns,
		AttachType: cs.Programs[xdpProgXdpCapture].AttachType}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, fmt.Errorf("load filter program of %d filters: %w: %w", len(filters), err, ErrFastLimit)
	}
	return prog, nil
}

// filtersLocked makes the filter program of t the one of generation g in
// fast_progs (none when t has no filters): the live generation's when its
// filters are the same, else a new one.
func (c *Capture) filtersLocked(g uint32, t *FastTable) error {
	f := &c.fast
	var prog *ebpf.Program
	switch {
	case len(t.Filters) == 0:
	case f.progs[g^1] != nil && reflect.DeepEqual(f.filters[g^1], t.Filters):
		prog = f.progs[g^1]
	default:
		var err error
		if prog, err = c.loadFiltersLocked(t.Filters); err != nil {
			return err
		}
	}
	if prog == nil {
		if err := c.objs.FastProgs.Delete(g); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete filter program: %w", err)
		}
	} else if err := c.objs.FastProgs.Update(g, prog, ebpf.UpdateAny); err != nil {
		if prog != f.progs[g^1] {
			_ = prog.Close() // never used; the update error is the one to report
		}
		return fmt.Errorf("write filter program: %w", err)
	}
	old := f.progs[g]
	f.progs[g], f.filters[g] = prog, t.Filters
	if old != nil && old != prog && old != f.progs[g^1] {
		return old.Close()
	}
	return nil
}

// MinSnaplen is the shortest snaplen of a monitor or tunnel: an Ethernet
// header.
const MinSnaplen = 14

// maxSnaplens is the size of the snaplens map.
const maxSnaplens = 256

// snaplensLocked brings the snaplens map to want (monitor ifindex ->
// bytes, 0: whole frames) and gives the DEVMAP entries of a monitor
// xdp_snap while it has a snaplen, and no program otherwise (a copy to a
// monitor without one costs no program run).
func (c *Capture) snaplensLocked(want map[int]uint32) error {
	f := &c.fast
	for ifindex, n := range want {
		if n == 0 || f.snaps[ifindex] == n {
			continue
		}
		if f.snap == nil {
			prog, err := c.loadSnapProg()
			if err != nil {
				return err
			}
			f.snap = prog
		}
		if err := c.objs.Snaplens.Update(uint32(ifindex), n, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("snaplen of monitor %d: %w", ifindex, err)
		}
		had := f.snaps[ifindex] != 0
		f.snaps[ifindex] = n
		if !had {
			if err := c.retargetLocked(ifindex); err != nil {
				return err
			}
		}
	}
	for ifindex := range f.snaps {
		if want[ifindex] != 0 {
			continue
		}
		delete(f.snaps, ifindex)
		if err := c.retargetLocked(ifindex); err != nil {
			return err
		}
		if err := c.objs.Snaplens.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete snaplen of monitor %d: %w", ifindex, err)
		}
	}
	return nil
}

// sameSnaplens reports whether two snaplen tables truncate alike.
func sameSnaplens(a, b map[int]uint32) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// loadSnapProg loads xdp_snap on c's snaplens map, as a DEVMAP program.
func (c *Capture) loadSnapProg() (*ebpf.Program, error) {
	spec, err := loadXdp()
	if err != nil {
		return nil, fmt.Errorf("load xdp spec: %w", err)
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"xdp_snap"`
	}
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		xdpMapSnaplens: c.objs.Snaplens,
	}})
	if err != nil {
		return nil, fmt.Errorf("load snaplen program: %w", err)
	}
	return objs.Prog, nil
}

// closeFastProgsLocked closes the filter and snaplen programs (Close).
func (c *Capture) closeFastProgsLocked() error {
	f := &c.fast
	var errs []error
	for g, p := range f.progs {
		if p != nil && (g == 0 || p != f.progs[0]) {
			errs = append(errs, p.Close())
		}
	}
	f.progs = [2]*ebpf.Program{}
	if f.snap != nil {
		errs = append(errs, f.snap.Close())
		f.snap = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close fast programs: %w", err)
	}
	return nil
}
