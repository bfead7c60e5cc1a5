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
//       DEVMAP_HASH entry per copy) for several; an output may be a tunnel
//       (the frame first gets tun_meta), whose entry's own program,
//       xdp_tunnel, encapsulates the copy (see "Tunnels" below)
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

#define TUN_COPIES 4 // tunnel copies of one frame, through any uplinks
#define TUN_MAGIC 0x54554e31 // "TUN1": tun_meta is ours

// copies are the copies of a frame that goes to a set of services.
struct copies {
	__u32 target; // nout == 1: fast_tx key (monitor ifindex, tunnel key); > 1: fast_sets slot
	__u16 nout;   // copies sent
	__u8 nsvcs;
	__u8 ntun;
	__u16 svcs[DEC_SVCS]; // service counter slots, SVC_DOWN flagged
	__u16 tun[TUN_COPIES]; // tunnel slots of the copies, for tun_meta
};

// tun_meta is the XDP metadata the capture program puts in front of a frame
// that has tunnel copies: their slots. In native mode the DEVMAP queues a
// CPU's frames per device and runs ONE egress program (the first frame's
// entry's) over all of them, so xdp_tunnel cannot trust its own
// tunnel_slot: it takes the slot of the copy whose uplink is its
// egress_ifindex from here. Several copies of one frame through one uplink
// are byte-identical clones (metadata included), so xdp_tunnel tells them
// apart by their order: frame numbers the frame on its CPU, and the k-th
// copy of it that reaches the uplink takes the k-th of the frame's slots
// through that uplink (tun_order). Generic mode keeps no metadata but runs
// each entry's own program: tunnel_slot is right there.
struct tun_meta {
	__u32 magic;
	__u32 frame; // the capture's seen counter of this CPU: unique per CPU
	__u16 ntun;
	__u16 tun[TUN_COPIES];
	__u16 pad;
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

// fast_tx holds every output a one-copy decision sends to: a monitor keyed
// by its ifindex, or a tunnel keyed by TUNNEL_KEY + its slot whose value
// names the uplink and the tunnel's xdp_tunnel instance.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} fast_tx SEC(".maps");

// fast_sets holds one DEVMAP_HASH per output set of several copies: entry i
// is copy i's output (a monitor or a tunnel, as in fast_tx), so two
// services on one monitor are two entries.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, OUT_SETS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
		__uint(max_entries, SET_SIZE);
		__type(key, __u32);
		__type(value, struct bpf_devmap_val);
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

// put_tun_meta writes the tunnel slots of cp as the frame's metadata. It
// fails only where the driver has no metadata support: in native mode the
// tunnel copies are then counted failed (xdpprog.UnknownTunnel).
static __always_inline void put_tun_meta(struct xdp_md *ctx, struct copies *cp, __u32 frame) {
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct tun_meta)))
		return;
	struct tun_meta *m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return;
	m->magic = TUN_MAGIC;
	m->frame = frame;
	m->ntun = cp->ntun;
	for (int i = 0; i < TUN_COPIES; i++)
		m->tun[i] = cp->tun[i];
}

// fast decides the frame in the kernel (steps 3f-5f above).
static __always_inline int fast(struct xdp_md *ctx, struct counters *c, struct ethhdr *eth, __u16 vid, __u64 len) {
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
	if (cp->ntun)
		put_tun_meta(ctx, cp, c->seen); // eth is invalid from here on
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
		return fast(ctx, c, eth, vid, data_end - data);

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

// ---- Tunnels (issue 10, "Remote delivery") ----
//
// xdp_tunnel is the DEVMAP egress program of a tunnel output: the kernel
// runs it on each copy redirected to the tunnel's fast_tx or fast_sets
// entry, before the uplink transmits it. It only knows ctx->egress_ifindex
// (the uplink, which several tunnels share), so the capture program passes
// the slots of a frame's tunnel copies in tun_meta, and xdp_tunnel deals
// the copies that reach one uplink out to that uplink's slots in turn.
// That works in native mode, where one instance serves every tunnel
// (tunnel_slot NO_TUNNEL); generic mode keeps no metadata but runs each
// entry's own program, so there SetTunnel loads one instance per tunnel,
// tunnel_slot rewritten (see tun_meta):
//
//   0. find the copy's tunnel slot (tun_meta and tun_order, else
//      tunnel_slot; NO_TUNNEL: the copy is counted failed in that extra
//      slot and dropped)
//   1. read what the outer headers say of the frame: its outer VLAN tag
//      (ERSPAN VLAN, COS, En) and whether its source is the port (ERSPAN III
//      D bit)
//   2. truncate it to the tunnel's max_frame with bpf_xdp_adjust_tail (the
//      outer IP packet fits the uplink's MTU), counted, never dropped
//   3. push the tunnel's prebuilt headers (tunnels, written from
//      xdpprog.TunnelHeader) with bpf_xdp_adjust_head
//   4. patch them as TunnelHeader.Encapsulate does: IP length and IPv4
//      checksum, the ERSPAN sequence number (tunnel_seq, shared by all
//      CPUs), T bit, VLAN/COS/En, the ERSPAN III timestamp (100 us units of
//      boot time + clock_offset) and D bit, the UDP length and, over IPv6,
//      the VXLAN UDP checksum (bpf_csum_diff over the frame)
//   5. count packets and bytes on the wire, truncated, failed (an adjust
//      helper refused: the copy is dropped)

#define TUNNELS 256
#define NO_TUNNEL TUNNELS     // tunnel_slot of the shared instance; tunnel_stats counts its failures
#define TUNNEL_KEY 0x80000000 // fast_tx key of tunnel slot 0; no ifindex reaches it
#define TUN_HDR 76            // xdpprog.MaxTunnelOverhead, rounded up to 4
#define TUN_MAX_FRAME 4096    // the checksum loop's 256-byte chunks cover this much

// encapsulations; keep equal to xdpprog.Encap.
#define ENCAP_GRE 1
#define ENCAP_ERSPAN2 2
#define ENCAP_ERSPAN3 3
#define ENCAP_VXLAN 4

struct tunnel {
	__u8 hdr[TUN_HDR];  // the outer headers
	__u16 len;          // of hdr in use: the overhead
	__u16 max_frame;    // longest frame carried whole
	__u8 encap;         // ENCAP_*, 0: no tunnel in the slot
	__u8 v6;            // IPv6 outer header
	__u8 port[ETH_ALEN]; // the mirrored port's MAC
	__u32 csum;         // IPv6 VXLAN: the fixed part of the UDP checksum, folded, in memory order
	__u32 uplink;       // ifindex the tunnel's copies leave by
};

struct tunnel_counter {
	__u64 packets; // sent on, encapsulated
	__u64 bytes;   // on the wire, outer headers included
	__u64 truncated;
	__u64 failed; // dropped: an adjust helper refused, or an empty slot
};

// tunnels is a hash, not an array, so that SetTunnel replaces a tunnel's
// headers atomically: a hash update swaps in a new element, where an array
// update copies over the value a running program may be reading.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TUNNELS);
	__type(key, __u32);
	__type(value, struct tunnel);
} tunnels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TUNNELS);
	__type(key, __u32);
	__type(value, __u32);
} tunnel_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TUNNELS + 1); // and NO_TUNNEL
	__type(key, __u32);
	__type(value, struct tunnel_counter);
} tunnel_stats SEC(".maps");

// tun_order is, per CPU, the copies of one frame that xdp_tunnel has seen
// go out through one uplink, keyed by the first of the frame's slots
// through it. It relies on how the kernel queues redirected frames (since
// Linux 5.15, kernel/bpf/devmap.c): BPF_F_BROADCAST clones a frame for
// every entry in one loop, each clone goes into its device's per-CPU bulk
// queue, and a queue is flushed in order by the CPU that filled it. So the
// copies of one frame reach one uplink's program one after another on the
// capture's CPU, before any copy of a later frame, even when a full queue
// flushes between them; copies through other uplinks, in other queues,
// count under other keys. Which clone takes which slot does not matter:
// they are the same bytes.
struct tun_order {
	__u32 frame; // tun_meta.frame of the copies counted
	__u32 n;     // how many of them
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TUNNELS);
	__type(key, __u32);
	__type(value, struct tun_order);
} tun_order SEC(".maps");

// clock_offset is the Unix time in ns minus boot time, written by the
// loader: XDP has no real-time clock.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} clock_offset SEC(".maps");

// tunnel_slot is rewritten per loaded instance (NO_TUNNEL: the shared
// instance of native mode); test_run is 1 in an
// instance loaded as plain XDP for BPF_PROG_RUN, which may not read
// egress_ifindex (the verifier skips the branch it prunes).
volatile const __u32 tunnel_slot = 0;
volatile const __u32 test_run = 0;

// which_tunnel is the slot of the copy ctx carries (see tun_meta).
static __always_inline __u32 which_tunnel(struct xdp_md *ctx) {
	if (test_run)
		return tunnel_slot;
	struct tun_meta *m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data || m->magic != TUN_MAGIC)
		return tunnel_slot;
	__u32 egress = ctx->egress_ifindex;
	__u32 mine = 0; // bit i: the frame's copy i leaves by egress
	__u32 n = 0, first = 0;
	for (int i = 0; i < TUN_COPIES; i++) {
		if (i >= m->ntun)
			break;
		__u32 slot = m->tun[i];
		struct tunnel *t = bpf_map_lookup_elem(&tunnels, &slot);
		if (t && t->uplink == egress) {
			if (!n++)
				first = slot;
			mine |= 1 << i;
		}
	}
	if (n == 0)
		return tunnel_slot;
	if (n == 1)
		return first;
	// Several: the k-th copy of the frame here takes the k-th slot.
	struct tun_order *o = bpf_map_lookup_elem(&tun_order, &first);
	if (!o)
		return tunnel_slot; // cannot happen: a slot < TUNNELS
	if (o->frame != m->frame) {
		o->frame = m->frame;
		o->n = 0;
	}
	__u32 k = o->n++;
	for (int i = 0; i < TUN_COPIES; i++) {
		if (!(mine & (1 << i)))
			continue;
		if (!k--)
			return m->tun[i];
	}
	return tunnel_slot; // more copies than slots: cannot happen
}

#define CSUM_TOO_LONG (1ULL << 63) // no sum reaches it

// csum_frame returns the ones'-complement sum (not folded) of the bytes of
// ctx's packet from off on, as 16-bit words in memory order (an odd last
// byte padded with zero), or CSUM_TOO_LONG past TUN_MAX_FRAME + 255 bytes
// (more than a linear XDP frame holds with 4 KB pages). A global function: the verifier checks it once,
// not once per path of xdp_tunnel, which cut the program's load time.
__attribute__((noinline)) __u64 csum_frame(struct xdp_md *ctx, __u32 off) {
	void *p = (void *)(long)ctx->data + (off & 0x7f);
	void *end = (void *)(long)ctx->data_end;
	__u32 s = 0;
	__u64 sum = 0;
	for (int i = 0; i < TUN_MAX_FRAME / 256; i++) {
		if (p + 256 > end)
			break;
		s = bpf_csum_diff(0, 0, p, 256, s);
		p += 256;
	}
	if (p + 256 <= end)
		return CSUM_TOO_LONG;
#define CHUNK(n)                                    \
	if (p + (n) <= end) {                       \
		s = bpf_csum_diff(0, 0, p, (n), s); \
		p += (n);                           \
	}
	CHUNK(128) CHUNK(64) CHUNK(32) CHUNK(16) CHUNK(8) CHUNK(4)
#undef CHUNK
	sum += s;
	if (p + 2 <= end) {
		sum += *(__u16 *)p;
		p += 2;
	}
	if (p + 1 <= end)
		sum += *(__u8 *)p;
	return sum;
}

static __always_inline __u16 csum_fold(__u64 s) {
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

// push_header copies the tunnel's n header bytes to data; n is one of the
// overheads of the formats (constant copies for the verifier).
static __always_inline int push_header(void *data, void *end, struct tunnel *t) {
#define COPY(n)                                                  \
	case n:                                                  \
		if (data + (n) > end)                            \
			return -1;                               \
		__builtin_memcpy(data, t->hdr, (n));             \
		return 0;
	switch (t->len) {
		COPY(42) COPY(50) COPY(54) COPY(62) COPY(70) COPY(74)
	}
#undef COPY
	return -1;
}

SEC("xdp/devmap")
int xdp_tunnel(struct xdp_md *ctx) {
	__u32 slot = which_tunnel(ctx);
	struct tunnel_counter *tc = bpf_map_lookup_elem(&tunnel_stats, &slot);
	struct tunnel *t = bpf_map_lookup_elem(&tunnels, &slot);
	if (!tc)
		return XDP_DROP; // cannot happen: slot <= NO_TUNNEL
	if (!t || !t->encap)
		goto fail; // NO_TUNNEL, or a cleared slot

	// 1. What the headers say of the frame.
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		goto fail; // a runt is never fast-redirected
	__u32 vlan = 0; // ERSPAN word bits: VLAN, COS, En
	if (is_vlan(eth->h_proto) && data + 16 <= data_end) {
		__u16 tci = bpf_ntohs(*(__be16 *)(eth + 1));
		vlan = (__u32)(tci & 0x0fff) << 16 | (__u32)(tci >> 13) << 13;
		if (t->encap == ENCAP_ERSPAN2)
			vlan |= 3 << 11;
	}
	int egress = 1;
	for (int i = 0; i < ETH_ALEN; i++)
		egress &= eth->h_source[i] == t->port[i];

	// 2. Truncate.
	__u32 len = data_end - data;
	__u32 max = t->max_frame;
	int trunc = 0;
	if (len > max) {
		if (bpf_xdp_adjust_tail(ctx, -(int)(len - max)))
			goto fail;
		len = max;
		trunc = 1;
	}

	// 3. Push.
	__u32 hlen = t->len;
	if (bpf_xdp_adjust_head(ctx, -(int)hlen))
		goto fail;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (push_header(data, data_end, t))
		goto fail;
	__u32 wire = hlen + len;

	// 4. Patch. Every frame is at least 14 bytes, so the packet holds the
	// IP header and 20 bytes of GRE/ERSPAN or UDP/VXLAN.
	void *l4;
	if (t->v6) {
		l4 = data + 14 + 40;
		if (l4 + 20 > data_end)
			goto fail;
		*(__be16 *)(data + 14 + 4) = bpf_htons(wire - 14 - 40);
	} else {
		l4 = data + 14 + 20;
		if (l4 + 20 > data_end)
			goto fail;
		__u16 *ip = data + 14;
		ip[1] = bpf_htons(wire - 14);
		__u64 s = 0;
		for (int i = 0; i < 10; i++)
			s += ip[i];
		ip[5] = ~csum_fold(s);
	}
	if (t->encap == ENCAP_ERSPAN2 || t->encap == ENCAP_ERSPAN3) {
		__u32 *seq = bpf_map_lookup_elem(&tunnel_seq, &slot);
		__u32 n = seq ? __sync_fetch_and_add(seq, 1) : 0;
		*(__be32 *)(l4 + 4) = bpf_htonl(n);
		__u32 w = bpf_ntohl(*(__be32 *)(l4 + 8)) | vlan;
		if (trunc)
			w |= 1 << 10;
		*(__be32 *)(l4 + 8) = bpf_htonl(w);
		if (t->encap == ENCAP_ERSPAN3) {
			__u32 zero = 0;
			__u64 *off = bpf_map_lookup_elem(&clock_offset, &zero);
			__u64 now = bpf_ktime_get_boot_ns() + (off ? *off : 0);
			*(__be32 *)(l4 + 12) = bpf_htonl((__u32)(now / 100000));
			if (egress)
				*(__u8 *)(l4 + 19) |= 0x08;
		}
	} else if (t->encap == ENCAP_VXLAN) {
		__u16 udp = wire - (l4 - data);
		*(__be16 *)(l4 + 4) = bpf_htons(udp);
		if (t->v6) {
			__u64 f = csum_frame(ctx, hlen);
			if (f == CSUM_TOO_LONG)
				goto fail;
			__u16 c = ~csum_fold(f + t->csum + 2 * (__u64)bpf_htons(udp));
			// The call may have moved the packet, as far as the
			// verifier knows: find the UDP header again.
			data = (void *)(long)ctx->data;
			if (data + 14 + 40 + 8 > (void *)(long)ctx->data_end)
				goto fail;
			*(__u16 *)(data + 14 + 40 + 6) = c ? c : 0xffff;
		}
	}

	// 5. Count.
	tc->packets++;
	tc->bytes += wire;
	if (trunc)
		tc->truncated++;
	return XDP_PASS;
fail:
	tc->failed++;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
