//go:build ignore

// The capture interface's XDP program: the first stage of the path of a frame
// (DESIGN.md, "The path of a frame").
//
//   1. count the frame (seen)
//   2. parse Ethernet and up to two VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8);
//      a runt (< 14 bytes) or a truncated tag is counted and unmatched
//   3. early filter: keep what some flow MAY want (the broker classifies
//      exactly in userspace): a broadcast/multicast destination when some IN
//      flow exists, src MAC wanted as a source, or dst MAC wanted as a
//      destination (a hint bitmap answers most misses without the hash
//      lookup); and the outer VID (0 untagged) in the VLAN bitmap
//   4. a wanted frame larger than the UMEM chunk is counted (oversize)
//   5. redirect to the XSKMAP slot of the frame's RX queue
// Everything not redirected gets the interface's unmatched action (PASS or
// DROP). Every frame lands in exactly one outcome counter, so
// seen == redirected + redirect_failed + unmatched + vlan_filtered + runt +
//         truncated_tag + oversize.
// Userspace (xdpprog/filter.go) owns the maps and updates them in place.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf_helpers.h>
#include <bpf_endian.h>

#define MAX_QUEUES 64
#define MAX_MACS 8192 // twice xdpprog.MaxMACs: SetFilter widens before it narrows
#define VLAN_WORDS 64 // 4096 VIDs / 64 bits
#define HINT_WORDS 1024 // 65536 bits per direction

// want bits of a MAC entry; keep equal to xdpprog.WantSrc / WantDst.
#define WANT_SRC 1
#define WANT_DST 2

// settings slots; keep equal to the setting* constants in xdpprog.go.
#define SETTING_ACTION 0    // XDP_PASS or XDP_DROP for unmatched frames
#define SETTING_MULTICAST 1 // 1: broadcast/multicast destinations wanted
#define SETTING_MAX_FRAME 2 // largest frame that fits a UMEM chunk; 0: no limit
#define SETTINGS 3

// counters is one CPU's slot of the per-CPU counters map. Each frame bumps
// seen, exactly one outcome field, and passed or dropped when the program's
// verdict is XDP_PASS or XDP_DROP.
struct counters {
	__u64 seen;
	__u64 redirected;
	__u64 redirect_failed; // wanted, but no socket in the queue's XSKMAP slot
	__u64 unmatched;       // no flow can want it (MAC/multicast test)
	__u64 vlan_filtered;   // MAC test passed, outer VID not wanted
	__u64 runt;            // shorter than an Ethernet header
	__u64 truncated_tag;   // a VLAN tag cut short by the end of the frame
	__u64 oversize;        // wanted, larger than a UMEM chunk
	__u64 passed;
	__u64 dropped;
};

struct mac_key {
	__u8 addr[ETH_ALEN];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_MACS);
	__type(key, struct mac_key);
	__type(value, __u32);
} macs SEC(".maps");

// hints is a prefilter in front of macs, which costs ~18 ns per lookup:
// words 0..1023 hold a bit per mac_hint() of every MAC wanted as a source,
// words 1024..2047 the same for destinations. A clear bit proves the MAC is
// not wanted that way; a set bit sends the frame on to the exact lookup.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * HINT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} hints SEC(".maps");

// vlans is a bitmap of wanted outer VIDs: bit (vid & 63) of word (vid >> 6).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VLAN_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} vlans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SETTINGS);
	__type(key, __u32);
	__type(value, __u32);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

static __always_inline __u32 setting(__u32 slot) {
	__u32 *v = bpf_map_lookup_elem(&settings, &slot);
	return v ? *v : 0;
}

// mac_hint is a 16-bit multiplicative hash of a MAC; keep equal to
// macHint in filter.go.
static __always_inline __u32 mac_hint(const __u8 *a) {
	__u64 x = (__u64)a[0] | (__u64)a[1] << 8 | (__u64)a[2] << 16 | (__u64)a[3] << 24 | (__u64)a[4] << 32 |
		  (__u64)a[5] << 40;
	return (x * 0x9E3779B97F4A7C15ULL) >> 48;
}

// wants reports whether addr is wanted as bit (WANT_SRC or WANT_DST).
static __always_inline int wants(const __u8 *addr, __u32 bit) {
	__u32 h = mac_hint(addr);
	__u32 word = (bit == WANT_SRC ? 0 : HINT_WORDS) + (h >> 6);
	__u64 *hint = bpf_map_lookup_elem(&hints, &word);
	if (!hint || !(*hint & (1ULL << (h & 63))))
		return 0;
	struct mac_key k = {};
	__builtin_memcpy(k.addr, addr, ETH_ALEN);
	__u32 *w = bpf_map_lookup_elem(&macs, &k);
	return w && (*w & bit);
}

static __always_inline int is_vlan(__be16 proto) {
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

// unmatched applies the interface's action to a frame that is not redirected.
static __always_inline int unmatched(struct counters *c) {
	if (setting(SETTING_ACTION) == XDP_DROP) {
		c->dropped++;
		return XDP_DROP;
	}
	c->passed++;
	return XDP_PASS;
}

SEC("xdp")
int xdp_capture(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct counters *c = bpf_map_lookup_elem(&stats, &zero);
	if (!c)
		return XDP_PASS; // cannot happen: a one-slot array always has slot 0

	c->seen++;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end) {
		c->runt++;
		return unmatched(c);
	}

	// A tag is 2 bytes TCI then the next EtherType; the outer one sits where
	// the EtherType was. Only the outer VID matters; the inner tag is checked
	// for truncation so a cut-short QinQ frame is counted, not classified.
	__u16 vid = 0;
	if (is_vlan(eth->h_proto)) {
		__be16 *tag = (void *)(eth + 1);
		if ((void *)(tag + 2) > data_end) {
			c->truncated_tag++;
			return unmatched(c);
		}
		vid = bpf_ntohs(tag[0]) & 0x0fff;
		if (is_vlan(tag[1]) && (void *)(tag + 4) > data_end) {
			c->truncated_tag++;
			return unmatched(c);
		}
	}

	int want = ((eth->h_dest[0] & 1) && setting(SETTING_MULTICAST)) || wants(eth->h_source, WANT_SRC) ||
		   wants(eth->h_dest, WANT_DST);
	if (!want) {
		c->unmatched++;
		return unmatched(c);
	}

	__u32 word = vid >> 6;
	__u64 *bits = bpf_map_lookup_elem(&vlans, &word);
	if (!bits || !(*bits & (1ULL << (vid & 63)))) {
		c->vlan_filtered++;
		return unmatched(c);
	}

	__u32 max = setting(SETTING_MAX_FRAME);
	if (max && data_end - data > max) {
		c->oversize++;
		return unmatched(c);
	}

	// With no socket in the slot, bpf_redirect_map returns its flags' low
	// bits: the unmatched action, so a frame is never aborted.
	__u32 fallback = setting(SETTING_ACTION) == XDP_DROP ? XDP_DROP : XDP_PASS;
	int ret = bpf_redirect_map(&xsks, ctx->rx_queue_index, fallback);
	if (ret == XDP_REDIRECT) {
		c->redirected++;
		return ret;
	}
	c->redirect_failed++;
	if (ret == XDP_DROP)
		c->dropped++;
	else
		c->passed++;
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
