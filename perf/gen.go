package perf

// The one generate step: compile pktgen.c for little-endian BPF and write
// pktgenbpf_bpfel.go and pktgenbpf_bpfel.o, both committed so `go build`
// needs no clang. `make generate` pins the compiler (BPF2GO_CC, BPF2GO_CFLAGS);
// the libbpf headers are xdpprog's vendored copy.
//go:generate go tool bpf2go -target bpfel -type flow -type counter pktgenBPF pktgen.c -- -I../xdpprog/headers -I/usr/include/x86_64-linux-gnu
