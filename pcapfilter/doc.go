// Package pcapfilter compiles a tap flow's filter, a pcap-filter expression
// (the syntax of tcpdump and of Wireshark's capture filters), for the data
// path.
//
// libpcap (through gopacket/pcap, cgo) compiles the expression to classic
// BPF for an Ethernet frame with no VLAN tag. The data path sees frames as
// captured, with up to two 802.1Q/802.1ad tags, and the filter must see
// them with those tags removed, as tcpdump does on a Linux interface.
// Compile rewrites libpcap's program so that it runs on the frame as
// captured and decides as libpcap's would on the untagged frame. Both data
// paths run that one program: the AF_XDP workers interpret it (Match), the
// XDP program runs it translated to eBPF (xdpprog).
//
// Compile never makes taasd query a resolver: identifiers libpcap would
// look up (host names by DNS, /etc/ethers, /etc/networks) are refused
// before libpcap sees the expression.
//
// Goroutines: none. libpcap's compiler runs under gopacket's lock.
package pcapfilter
