//go:build ignore

// The generator's XDP programs.
//
// pktgen runs under BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: the kernel
// hands it the template frame again and again and sends whatever it returns.
// It rewrites the fields that vary per flow (MACs, VLAN tags, UDP source
// port; for mixed traffic the IPv4 and L4 headers) from the flows map, round-robin, counts what it sent, and redirects
// the frame out of out_ifindex (a veth: its peer then receives it, see
// afxdp-notes.md gotcha 10).
//
// sink is attached to the receiving end of a monitor link in benchmarks: it
// counts frames and bytes per CPU and drops them, the cheapest possible
// receiver, so that the monitor side never limits what is measured.

#include <linux/bpf.h>
#include "bpf_helpers.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define MAX_FLOWS 4096
/* Bytes from the IPv4 header on that differ between the kinds of mixed
 * traffic (traffic.go mixRewrite). */
#define MIX_LEN 40

struct flow {
	__u8 dst[6];
	__u8 src[6];
	__u16 outer_tci; /* network order; written at off_outer when it is not 0 */
	__u16 inner_tci; /* network order; written at off_inner when it is not 0 */
	__u16 sport;     /* network order; written at off_sport when it is not 0 */
	__u16 pad;
	__u8 l34[MIX_LEN]; /* written at off_l3 when it is not 0 (mixed traffic) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_FLOWS);
	__type(key, __u32);
	__type(value, struct flow);
} flows SEC(".maps");

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* sent counts what pktgen returned XDP_REDIRECT for; received what sink saw. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct counter);
} counters SEC(".maps");

#define CNT_SENT 0
#define CNT_SINK 1

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sink_mark SEC(".maps");

/* Longest frame the sink looks into for a mark (jumbo frames included). */
#define SINK_MAX_LEN 16384

/* Set at load time (RewriteConstants); the verifier sees them as constants. */
volatile const __u32 out_ifindex;
volatile const __u32 nflows;
volatile const __u32 off_outer;
volatile const __u32 off_inner;
volatile const __u32 off_sport;
volatile const __u32 off_l3;
volatile const __u32 off_tpid; /* the first tag's TPID: off_outer - 2, or off_inner - 2 with one tag; 0 = untagged */
volatile const __u32 tpid;     /* network order; written at off_tpid */

static __always_inline int put16(void *data, void *end, __u32 off, __u16 v)
{
	if (off == 0)
		return 0;
	if (off > 4096 || data + off + 2 > end)
		return -1;
	*(__u16 *)(data + off) = v;
	return 0;
}

SEC("xdp")
int pktgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = CNT_SENT;
	struct counter *c;

	/* Live frames without a context arrive on loopback; anything else is a
	 * real frame reaching the interface this program is attached to only
	 * to keep it in the XDP dispatcher (see gen.attach). */
	if (ctx->ingress_ifindex != 1)
		return XDP_PASS;
	c = bpf_map_lookup_elem(&counters, &key);
	if (!c)
		return XDP_ABORTED;

	/* A tagged frame is rewritten even with one flow: the receiving stack
	 * may untag it in place (skb_vlan_untag moves the MACs over the first
	 * tag) and give the page back to the live-frames pool as it is, so the
	 * MACs and the first tag (TPID and TCI, whether it is an outer tag or
	 * the only one) must be written again every time. */
	if (nflows > 1 || off_tpid) {
		__u32 idx = (__u32)(c->packets % nflows);
		struct flow *f = bpf_map_lookup_elem(&flows, &idx);
		if (!f)
			return XDP_ABORTED;
		if (data + 12 > end)
			return XDP_ABORTED;
		__builtin_memcpy(data, f->dst, 6);
		__builtin_memcpy(data + 6, f->src, 6);
		if (put16(data, end, off_tpid, (__u16)tpid) ||
		    put16(data, end, off_outer, f->outer_tci) ||
		    put16(data, end, off_inner, f->inner_tci) ||
		    put16(data, end, off_sport, f->sport))
			return XDP_ABORTED;
		if (off_l3) {
			if (off_l3 > 64 || data + off_l3 + MIX_LEN > end)
				return XDP_ABORTED;
			__builtin_memcpy(data + off_l3, f->l34, MIX_LEN);
		}
	}
	c->packets++;
	c->bytes += end - data;
	return bpf_redirect(out_ifindex, 0);
}

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, key = CNT_SINK;
	__u32 *mark = bpf_map_lookup_elem(&sink_mark, &zero);
	struct counter *c;

	if (mark && *mark) {
		__u64 len = end - data;
		__u8 *last;

		if (len < 1 || len > SINK_MAX_LEN)
			return XDP_DROP;
		/* The mask keeps the offset a bounded scalar: clang would
		 * otherwise fold "- 1" into the packet pointer, which the
		 * verifier refuses (negative offset). */
		last = data + ((len - 1) & (SINK_MAX_LEN - 1));
		if ((void *)(last + 1) > end || *last != (__u8)*mark)
			return XDP_DROP;
	}
	c = bpf_map_lookup_elem(&counters, &key);
	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return XDP_DROP;
}
