// Package pcapfilter compiles a tap flow's filter, a pcap-filter expression
// (the syntax of tcpdump and of Wireshark's capture filters), for the data
// path (issue 11).
//
// # What a filter sees
//
// A filter decides on the frame as captured with its VLAN tags removed:
// what tcpdump shows on a Linux interface, where the kernel strips the tag.
// Selecting VLANs stays vlan_filter's job, so an expression that uses vlan
// is refused.
//
// # How
//
// libpcap (gopacket/pcap, cgo) compiles the expression to classic BPF for
// an untagged Ethernet frame (DLT_EN10MB). The data path sees frames with
// up to two 802.1Q/802.1ad tags, so Compile rewrites libpcap's program to
// run on the frame as captured and decide exactly as libpcap's program
// would on the untagged frame:
//
//   - a prologue computes the tag length t into M[15], as xdpprog/xdp.c
//     parses tags: 4 when the EtherType is 0x8100 or 0x88a8, 8 when the
//     next one is too, never more (a frame shorter than its tags is
//     rejected; the XDP program counts those before any filter);
//   - every load at an untagged offset >= 12 (past the MAC addresses)
//     reads t bytes further: absolute loads become indirect loads with
//     X = t; indirect loads x+k add t (checked at run time when k < 12);
//     the MSH load (IPv4 header length) reads its byte t further and, when
//     only indirect loads use its X, adds t to X once so those loads run
//     unchanged; a load straddling offset 12 is assembled byte by byte;
//     len is len - t;
//   - the inserted code keeps A and X as the original expects, saving them
//     in M[13] and M[14] when they are live (a program that uses M[13..15]
//     itself is refused as too complex), and skips the setup where X
//     already holds t;
//   - conditional jumps that outgrow their 8-bit offsets jump through a
//     "ja" placed after them, as libpcap itself does.
//
// Rewriting one program, rather than stripping tags before the filter,
// lets the XDP program decide in place on the frame it must copy
// unchanged, and gives both data paths one program: the AF_XDP workers
// interpret it (Match), xdpprog translates Program to eBPF.
//
// # Running Program
//
// Program follows libpcap's semantics (bpf_filter.c), which Match
// implements and the tests hold against tcpdump: A, X and M[] start at 0;
// a load past the end of the frame, or an indirect load whose x+k
// overflows, rejects the frame (returns 0); division by X = 0 returns 0;
// shifts by X >= 32 give 0; len is the frame's length. A non-zero return
// accepts. Programs may jump backwards (Jump with a negative Skip as
// int32): libpcap's protochain loops over extension headers, one backward
// jump per header it steps over. A run takes at most MaxBackJumps (16) of
// them: a frame that needs more is rejected, on both data paths (xdpprog
// unrolls the loop that many times). This is the one place where the data
// path decides otherwise than tcpdump, which follows any number: a frame
// whose protocol sits behind more than 16 extension headers (a conforming
// chain has at most 6) does not match "ip6 protochain N".
//
// # What Compile refuses
//
// Everything with an *Error whose message the API returns verbatim: an
// empty or blank expression (null selects every frame), more than MaxLen
// bytes, control characters, vlan and the tags' EtherTypes after ether
// proto (0x8100, 0x88a8), inbound/outbound/ifindex (packet
// metadata the data path does not have), names libpcap would resolve
// (host names by DNS, /etc/ethers, /etc/networks; service names by
// getaddrinfo), unknown protocol names (IP protocol names come from a
// fixed table and reach libpcap as numbers), libpcap's own errors
// ("invalid filter expression: ..."), more than MaxTerms host, net, port
// and portrange terms (libpcap's optimizer is superlinear in them), and
// programs longer than MaxInstructions after the rewrite. Compile opens
// no socket and no file.
//
// Goroutines: none. libpcap's compiler runs under gopacket's lock; a
// Filter is immutable and Match is safe for concurrent use.
package pcapfilter
