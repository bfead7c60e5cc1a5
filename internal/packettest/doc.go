// Package packettest injects and captures raw Ethernet frames with AF_PACKET
// sockets inside test network namespaces, for tests of the data plane (the
// broker's, perf's and the dashboard's). Captured frames get their VLAN tag
// back from PACKET_AUXDATA (afxdp-notes gotcha 12), so they compare byte
// for byte with what was sent. Test-only; no production code imports it.
//
// Tcpdump, ReadPcap and TsharkFields (tools.go) capture with tcpdump into a
// pcap file, read it back, and decode it with tshark, for tests that check
// what a real decoder makes of the bytes (tunnel encapsulations).
//
// FilterCorpus, RandomFrames, TagVariants and TcpdumpAccepts (filters.go)
// are the filter differential tests' parts (issue 11): the corpus of
// pcap-filter expressions, random frames that exercise it, each frame with
// 0, 1 and 2 VLAN tags, and the real tcpdump's verdict on the untagged
// frames as the oracle.
//
// Goroutines: each Capture reads its socket in one goroutine until the test
// ends (t.Cleanup stops it); an Injector has none; each Tcpdump drains the
// tcpdump's stderr in one until the tcpdump exits.
package packettest
