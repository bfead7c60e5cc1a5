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
// or, when the broker loaded a fast table (SETTING_FAST), instead of 3-5:
//   3f. look up what the broker's classifier decided for (generation, VLAN
//       class of the outer VID, port id of the source MAC, port id of the
//       destination MAC): a source-side decision (the source port's OUT
//       flows) and a destination-side one (the destination port's IN
//       flows), or one whole decision for a group destination or a frame
//       from a port to itself; each holds its flows and a bitmask of the
//       capture's services
//   4f. a frame larger than the UMEM chunk is oversize on this path too, so
//       that monitors see the same frames whichever path the broker chose
//   5f. look up the copies of the union of the services (each service once),
//       count flows and services, then redirect through a DEVMAP: one copy
//       to one monitor, or BPF_F_BROADCAST over an output set (one
//       DEVMAP_HASH entry per copy) for several
// Tables stay linear in the ports: decisions per port and side, copies per
// distinct service mask.
// Everything not redirected gets the interface's unmatched action (PASS or
// DROP). Every frame lands in exactly one outcome counter, so
// seen == redirected + redirect_failed + unmatched + vlan_filtered + runt +
//         truncated_tag + oversize + fast_redirected + fast_failed +
//         fast_no_output.
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
#define SETTING_FAST 3      // 1: decide and copy in the kernel (fast tables)
#define SETTING_GEN 4       // the live generation of the fast tables, 0 or 1
#define SETTINGS 5

// Sizes of the fast tables; keep equal to xdpprog/fast.go. Hash maps hold two
// generations: the broker writes the next one beside the live one, flips
// SETTING_GEN, then deletes the old one.
#define VIDS 4096
#define FAST_PORTS 8192      // 2 x MaxFastPorts
#define FAST_DECISIONS 16384 // 2 x MaxFastDecisions
#define FAST_SLOTS 1024      // flow and service counter slots
#define FAST_COPIES 16384    // 2 x MaxFastCopies
#define DEC_FLOWS 8          // flows one decision counts
#define DEC_SVCS 8           // services one frame goes to
#define OUT_SETS 256         // output sets (the last slot is never used: see fast.go)
#define SET_SIZE 64          // copies of one output set
#define MCAST_ID 0xffffffff  // destination "port id" of a group address
#define SVC_DOWN 0x8000      // service slot flag: its monitor is unavailable

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
	__u64 fast_redirected; // copies sent in the kernel through a DEVMAP
	__u64 fast_failed;     // decided, but bpf_redirect_map refused
	__u64 fast_no_output;  // decided, but no service had a usable monitor
};

struct port_key {
	__u32 gen;
	__u8 addr[ETH_ALEN];
	__u8 pad[2];
};

struct decision_key {
	__u32 gen;
	__u32 vclass;
	__u32 src; // port id, 0: any source (a destination-side decision)
	__u32 dst; // port id, 0: any destination (a source-side decision), MCAST_ID: group address
};

// copies are the copies of a frame that goes to a set of services.
struct copies {
	__u32 target; // nout == 1: fast_tx key (monitor ifindex); > 1: fast_sets slot
	__u16 nout;   // copies sent
	__u8 nsvcs;
	__u8 pad;
	__u16 svcs[DEC_SVCS]; // service counter slots, SVC_DOWN flagged
};

// decision is what the broker's classifier makes of the frames of a key:
// the flows they match and the services (bits: the capture's service
// indices) they go to.
struct decision {
	__u64 svcs;
	__u8 nflows;
	__u8 pad;
	__u16 flows[DEC_FLOWS]; // flow counter slots
	struct copies cp;       // the copies of svcs: no second lookup for one side
};

struct copies_key {
	__u32 gen;
	__u32 pad;
	__u64 svcs;
};

struct flow_counter {
	__u64 packets;
	__u64 bytes;
};

struct svc_counter {
	__u64 packets; // copies handed to the DEVMAP
	__u64 bytes;
	__u64 down;   // no usable monitor (monitor_down)
	__u64 failed; // bpf_redirect_map refused (redirect_failed)
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

// fast_vids maps gen * VIDS + outer VID to its VLAN class: VIDs that every
// flow of the interface treats alike share a class.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * VIDS);
	__type(key, __u32);
	__type(value, __u32);
} fast_vids SEC(".maps");

// fast_ports maps (gen, MAC) to the port id of a source port's MAC.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FAST_PORTS);
	__type(key, struct port_key);
	__type(value, __u32);
} fast_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FAST_DECISIONS);
	__type(key, struct decision_key);
	__type(value, struct decision);
} fast_decisions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FAST_COPIES);
	__type(key, struct copies_key);
	__type(value, struct copies);
} fast_copies SEC(".maps");

// fast_tx holds every monitor a one-copy decision sends to, keyed by its
// ifindex.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} fast_tx SEC(".maps");

// fast_sets holds one DEVMAP_HASH per output set of several copies: entry i
// is copy i's monitor, so two services on one monitor are two entries.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, OUT_SETS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
		__uint(max_entries, SET_SIZE);
		__type(key, __u32);
		__type(value, __u32);
	});
} fast_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FAST_SLOTS);
	__type(key, __u32);
	__type(value, struct flow_counter);
} fast_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FAST_SLOTS);
	__type(key, __u32);
	__type(value, struct svc_counter);
} fast_svcs SEC(".maps");

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

// port_id is the fast-table port id of addr in generation gen, 0 if none.
static __always_inline __u32 port_id(__u32 gen, const __u8 *addr) {
	struct port_key k = {.gen = gen};
	__builtin_memcpy(k.addr, addr, ETH_ALEN);
	__u32 *id = bpf_map_lookup_elem(&fast_ports, &k);
	return id ? *id : 0;
}

static __always_inline struct decision *decision(__u32 gen, __u32 vclass, __u32 src, __u32 dst) {
	struct decision_key k = {.gen = gen, .vclass = vclass, .src = src, .dst = dst};
	return bpf_map_lookup_elem(&fast_decisions, &k);
}

static __always_inline void count_flows(struct decision *d, __u64 len) {
	if (!d)
		return;
	for (int i = 0; i < DEC_FLOWS; i++) {
		if (i >= d->nflows)
			break;
		__u32 slot = d->flows[i];
		struct flow_counter *fc = bpf_map_lookup_elem(&fast_flows, &slot);
		if (fc) {
			fc->packets++;
			fc->bytes += len;
		}
	}
}

// fast decides the frame in the kernel (steps 3f-5f above).
static __always_inline int fast(struct counters *c, struct ethhdr *eth, __u16 vid, __u64 len) {
	__u32 gen = setting(SETTING_GEN) & 1;
	__u32 vk = gen * VIDS + vid;
	__u32 *vclass = bpf_map_lookup_elem(&fast_vids, &vk);
	if (!vclass) {
		c->unmatched++;
		return unmatched(c);
	}
	__u32 class = *vclass;
	__u32 src = port_id(gen, eth->h_source);
	struct decision *d1 = 0, *d2 = 0;
	if (eth->h_dest[0] & 1) {
		d1 = decision(gen, class, src, MCAST_ID);
	} else {
		__u32 dst = port_id(gen, eth->h_dest);
		if (src && src == dst) {
			d1 = decision(gen, class, src, src);
		} else {
			if (src)
				d1 = decision(gen, class, src, 0);
			if (dst)
				d2 = decision(gen, class, 0, dst);
		}
	}
	// One side: its own copies. Both: the copies of the union.
	struct copies *cp = 0;
	if (d1 && d2) {
		struct copies_key ck = {.gen = gen, .svcs = d1->svcs | d2->svcs};
		cp = bpf_map_lookup_elem(&fast_copies, &ck);
	} else if (d1) {
		cp = &d1->cp;
	} else if (d2) {
		cp = &d2->cp;
	}
	if (!cp) {
		c->unmatched++;
		return unmatched(c);
	}
	__u32 max = setting(SETTING_MAX_FRAME);
	if (max && len > max) {
		c->oversize++;
		return unmatched(c);
	}
	count_flows(d1, len);
	count_flows(d2, len);
	int ret = XDP_ABORTED;
	if (cp->nout == 1) {
		ret = bpf_redirect_map(&fast_tx, cp->target, 0);
	} else if (cp->nout > 1) {
		__u32 target = cp->target;
		void *set = bpf_map_lookup_elem(&fast_sets, &target);
		if (set)
			ret = bpf_redirect_map(set, 0, BPF_F_BROADCAST);
	}
	int ok = ret == XDP_REDIRECT;
	for (int i = 0; i < DEC_SVCS; i++) {
		if (i >= cp->nsvcs)
			break;
		__u32 slot = cp->svcs[i] & ~SVC_DOWN;
		struct svc_counter *sc = bpf_map_lookup_elem(&fast_svcs, &slot);
		if (!sc)
			continue;
		if (cp->svcs[i] & SVC_DOWN) {
			sc->down++;
		} else if (ok) {
			sc->packets++;
			sc->bytes += len;
		} else {
			sc->failed++;
		}
	}
	if (ok) {
		c->fast_redirected++;
		return XDP_REDIRECT;
	}
	if (cp->nout == 0)
		c->fast_no_output++;
	else
		c->fast_failed++;
	return unmatched(c);
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

	if (setting(SETTING_FAST))
		return fast(c, eth, vid, data_end - data);

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
