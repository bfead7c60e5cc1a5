package pcapfilter

import (
	"fmt"
	"strings"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcap"
	"golang.org/x/net/bpf"
)

// Limits of an expression and of its program.
const (
	// MaxLen is the longest expression accepted, in bytes.
	MaxLen = 1024
	// MaxInstructions is the longest program (after the rewrite) accepted.
	MaxInstructions = 1024
)

// snaplen is the capture length libpcap compiles for: the program returns
// it to accept (any non-zero value accepts).
const snaplen = 262144

// Error is why an expression is refused, in words fit for an API user.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// Filter is a compiled expression. It is immutable and safe for concurrent
// use.
type Filter struct {
	expr string
	prog []bpf.Instruction
	vm   []vmInsn
}

// Compile validates expr and compiles it. Its errors are *Error. It never
// queries a resolver: names libpcap would look up are refused first.
func Compile(expr string) (*Filter, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, &Error{Msg: "filter expression is empty: use null to select every frame"}
	}
	if len(expr) > MaxLen {
		return nil, &Error{Msg: fmt.Sprintf("filter expression is %d bytes long: the limit is %d", len(expr), MaxLen)}
	}
	for i := 0; i < len(expr); i++ {
		if c := expr[i]; c < 0x20 || c == 0x7f {
			return nil, &Error{Msg: fmt.Sprintf("filter expression has a control character (%#02x) at byte %d", c, i)}
		}
	}
	toks := scan(expr)
	text, err := checkNames(expr, toks)
	if err != nil {
		return nil, err
	}
	if err := checkShape(toks); err != nil {
		return nil, err
	}
	insns, err := pcap.CompileBPFFilter(layers.LinkTypeEthernet, snaplen, text)
	if err != nil {
		return nil, &Error{Msg: "invalid filter expression: " + err.Error()}
	}
	orig := make([]bpf.RawInstruction, len(insns))
	for i, in := range insns {
		orig[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	raw, err := rewrite(orig)
	if err != nil {
		if e, ok := err.(*Error); ok {
			return nil, e
		}
		return nil, &Error{Msg: "filter expression cannot run on the data path: " + err.Error()}
	}
	if len(raw) > MaxInstructions {
		return nil, &Error{Msg: fmt.Sprintf("filter expression is too complex for the data path: "+
			"%d instructions, the limit is %d", len(raw), MaxInstructions)}
	}
	// Match runs exactly what Program hands out: the instructions
	// assembled back, then decoded.
	prog, typed := bpf.Disassemble(raw)
	if !typed { // libpcap and the rewrite emit nothing x/net/bpf lacks a type for
		return nil, &Error{Msg: "filter expression cannot run on the data path: an instruction x/net/bpf does not know"}
	}
	back, err := bpf.Assemble(prog)
	if err != nil { // the rewrite's own output: a bug, reported as a refusal, never a panic
		return nil, &Error{Msg: "filter expression cannot run on the data path: " + err.Error()}
	}
	vm, err := decode(back, true)
	if err != nil {
		return nil, &Error{Msg: "filter expression cannot run on the data path: " + err.Error()}
	}
	return &Filter{expr: expr, prog: prog, vm: vm}, nil
}

// Expr is the expression exactly as given to Compile.
func (f *Filter) Expr() string { return f.expr }

// Program is the classic BPF program that decides on the frame as captured
// (tags included): a non-zero return accepts it. Every instruction is one
// of x/net/bpf's types (no RawInstruction; len is LoadExtension ExtLen).
// Run it with libpcap's semantics (see the package doc). It may jump
// backwards (libpcap's protochain loops over IPv6 extension headers): a run
// that takes more than MaxBackJumps backward jumps rejects the frame. The
// slice is the caller's.
func (f *Filter) Program() []bpf.Instruction { return append([]bpf.Instruction(nil), f.prog...) }

// Match reports whether the frame, as captured, is accepted. It never
// allocates. Frames too short for their tags are rejected.
func (f *Filter) Match(frame []byte) bool {
	return run(f.vm, frame) != 0
}
