// Package pcapfilter compiles a tap flow's filter, a pcap-filter expression
// (the syntax of tcpdump and of Wireshark's capture filters), for the data
// path.
//
// libpcap compiles the expression to classic BPF for an Ethernet frame with
// no VLAN tag. The data path sees frames as captured, with up to two
// 802.1Q/802.1ad tags, and the filter must see them with those tags removed,
// as tcpdump does on a Linux interface. Program rewrites libpcap's program
// so that it runs on the frame as captured and decides as libpcap's would on
// the untagged frame. Both data paths run that one program: the AF_XDP
// workers interpret it (Match), the XDP program runs it translated to eBPF
// (xdpprog).
package pcapfilter

import (
	"errors"

	"golang.org/x/net/bpf"
)

// Limits of an expression and of its program.
const (
	// MaxLen is the longest expression accepted, in bytes.
	MaxLen = 1024
	// MaxInstructions is the longest program (after the rewrite) accepted.
	MaxInstructions = 1024
)

// Error is why an expression is refused, in words fit for an API user.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// Filter is a compiled expression. It is immutable and safe for concurrent
// use.
type Filter struct {
	expr string
	prog []bpf.Instruction
}

// Compile validates expr and compiles it. Its errors are *Error.
func Compile(expr string) (*Filter, error) {
	return nil, &Error{Msg: "filter expressions are not implemented yet"}
}

// Expr is the expression exactly as given to Compile.
func (f *Filter) Expr() string { return f.expr }

// Program is the classic BPF program that decides on the frame as captured
// (tags included): a non-zero return accepts it.
func (f *Filter) Program() []bpf.Instruction { return f.prog }

// Match reports whether the frame, as captured, is accepted.
func (f *Filter) Match(frame []byte) bool {
	return false
}

var _ = errors.New
