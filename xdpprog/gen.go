package xdpprog

// The one generate step: compile xdp.c for little-endian BPF and write
// xdp_bpfel.go and xdp_bpfel.o, both committed so `go build` needs no clang.
// `make generate` pins the compiler through BPF2GO_CC and BPF2GO_CFLAGS.
//go:generate go tool bpf2go -target bpfel -type counters -type decision -type copies -type copies_key -type flow_counter -type svc_counter -type port_key -type decision_key -type tunnel -type tunnel_counter -type bpf_devmap_val -type filter_state xdp xdp.c -- -I./headers -I/usr/include/x86_64-linux-gnu
