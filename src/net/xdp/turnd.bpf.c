// SPDX-License-Identifier: MIT OR Apache-2.0
//
// turnd's in-kernel data path: ChannelData <-> UDP for the channels turnd's
// core has bound, rewritten in the XDP hook. The program decides nothing:
// every route in its maps was written by the userspace driver from the
// core's ChannelBound/ChannelEnded events. It relays a frame only when the
// stack would have taken it and a relay socket would have sent the same
// datagram: the frame is for this interface's MAC, its IPv4 header (version,
// IHL, checksum, lengths) or IPv6 header is what the stack accepts, its UDP
// checksum is valid, its source passes the reverse-path filter the stack
// applies (net.ipv4.conf.*.rp_filter), and the datagram it sends fits the
// path MTU the kernel knows now. Whatever it does not handle in full (STUN,
// Send/Data indications, unknown or expired routes, odd lengths, IP options,
// fragments, VLAN tags, no route, packets too big for the next hop, anything
// doubtful) goes on to the socket path unchanged (XDP_PASS), counted by
// reason.
//
// Build (src/net/xdp/build, checked by bin/test to give the committed
// object byte for byte):
//   clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c turnd.bpf.c
//
// The structures below are mirrored by src/net/xdp/maps.rs (#[repr(C)]).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define CHANNEL_HEADER 4
// The smallest path MTU IPv6 allows (RFC 8200 §5): a cached next hop is
// reused without a fresh MTU check only for datagrams no larger.
#define IPV6_MIN_MTU 1280
#define IP_DF 0x4000

// ---------------------------------------------------------------- maps

// The next hop toward a route's destination, as bpf_fib_lookup last found
// it, and the interface its source last passed the reverse-path check on.
// Per CPU (no torn reads: a program runs on one CPU without preemption),
// in HOPS at the route's slot; valid only for the route generation `gen`
// it was found for (turnd writes a new one with each route), and for
// HOP_CACHE_NS. A cached hop carries only datagrams no longer than one the
// lookup's MTU check passed and no longer than the smallest path MTU the
// kernel may learn (IPV6_MIN_MTU, net.ipv4.route.min_pmtu): a larger one is
// looked up again, so a path MTU the kernel learns applies at once.
struct hop {
	__u64 until_ns;
	__u64 rp_until_ns;
	__u32 gen;
	__u32 ifindex;
	__u32 rp_ifindex;
	__u16 len_ok;
	__u8 ttl;
	__u8 pad;
	__u8 dmac[6];
	__u8 smac[6];
	__u32 pad2;
};

struct hops {
	struct hop to_peer;
	struct hop to_client;
};

#define HOP_CACHE_NS 1000000000ULL

// client -> peer, keyed by the client's 5-tuple and the channel number.
struct out4_key {
	__u32 client_ip;
	__u32 listener_ip;
	__u16 client_port;
	__u16 listener_port;
	__u16 channel;
	__u16 pad;
};

struct out4_val {
	__u32 relay_ip;
	__u32 peer_ip;
	__u16 relay_port;
	__u16 peer_port;
	__u32 slot;
	__u64 until_ns;
	__u32 gen;
	__u32 pad;
};

// peer -> client, keyed by the peer and the relayed address.
struct in4_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
};

struct in4_val {
	__u32 client_ip;
	__u32 listener_ip;
	__u16 client_port;
	__u16 listener_port;
	__u16 channel;
	__u16 pad;
	__u32 slot;
	__u32 gen;
	__u64 until_ns;
};

struct out6_key {
	__u8 client_ip[16];
	__u8 listener_ip[16];
	__u16 client_port;
	__u16 listener_port;
	__u16 channel;
	__u16 pad;
};

struct out6_val {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__u16 relay_port;
	__u16 peer_port;
	__u32 slot;
	__u64 until_ns;
	__u32 gen;
	__u32 pad;
};

struct in6_key {
	__u8 peer_ip[16];
	__u8 relay_ip[16];
	__u16 peer_port;
	__u16 relay_port;
};

struct in6_val {
	__u8 client_ip[16];
	__u8 listener_ip[16];
	__u16 client_port;
	__u16 listener_port;
	__u16 channel;
	__u16 pad;
	__u32 slot;
	__u32 gen;
	__u64 until_ns;
};

// Per channel, per CPU: what the program relayed (payload bytes, as the
// core counts them).
struct chan_stats {
	__u64 to_peer_packets;
	__u64 to_peer_bytes;
	__u64 to_client_packets;
	__u64 to_client_bytes;
};

// An interface the program is attached to, as the stack sees it (written
// by turnd at start and on reload): its MAC, its IPv4 reverse-path filter
// (the larger of conf.all and conf.<if> rp_filter: 0 off, 1 strict, 2
// loose) and its IPv6 hop limit (conf.<if>.hop_limit). Only these
// interfaces are sent to (a device needs XDP set up to take redirected
// frames); a route out of any other goes to the socket path.
struct iface {
	__u8 mac[ETH_ALEN];
	__u8 rp_filter;
	__u8 hop_limit;
};

// Host-wide settings (one entry): net.ipv4.ip_default_ttl and
// net.ipv4.route.min_pmtu.
struct settings {
	__u8 ttl;
	__u8 pad;
	__u16 min_pmtu4;
};

// Program-wide counters, per CPU (indices mirrored in maps.rs).
enum counter {
	C_TO_PEER_V4,
	C_TO_PEER_V6,
	C_TO_CLIENT_V4,
	C_TO_CLIENT_V6,
	C_PASS_EXPIRED,
	C_PASS_LENGTH,
	C_PASS_NO_ROUTE,
	C_PASS_TOO_BIG,
	C_REDIRECTED,
	C_PASS_NOT_UDP,
	C_PASS_OPTIONS,
	C_PASS_MALFORMED,
	C_PASS_CHECKSUM,
	C_PASS_OTHER_HOST,
	C_PASS_UNKNOWN,
	C_PASS_REVERSE_PATH,
	C_ABORTED,
	C_COUNTERS,
};

// max_entries below are placeholders: the loader sizes every map from
// [xdp] max-channels before loading.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct out4_key);
	__type(value, struct out4_val);
} OUT4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct in4_key);
	__type(value, struct in4_val);
} IN4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct out6_key);
	__type(value, struct out6_val);
} OUT6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct in6_key);
	__type(value, struct in6_val);
} IN6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct chan_stats);
} STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct hops);
} HOPS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct iface);
} IFACES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} SETTINGS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} COUNTERS SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&COUNTERS, &which);
	if (c)
		*c += 1;
}

// Left to the socket path, counted by why.
static __always_inline int pass(__u32 why)
{
	count(why);
	return XDP_PASS;
}

// ---------------------------------------------------------------- checksums

// One's-complement arithmetic on a 32-bit accumulator, folded at the end.
static __always_inline __u32 csum_add16(__u32 sum, __u16 word)
{
	return sum + word;
}

static __always_inline __u32 csum_sub16(__u32 sum, __u16 word)
{
	return sum + (__u16)~word;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline __u32 csum_add_addr(__u32 sum, const void *addr, int words)
{
	const __u16 *w = addr;
#pragma unroll
	for (int i = 0; i < 8; i++)
		if (i < words)
			sum = csum_add16(sum, w[i]);
	return sum;
}

static __always_inline __u32 csum_sub_addr(__u32 sum, const void *addr, int words)
{
	const __u16 *w = addr;
#pragma unroll
	for (int i = 0; i < 8; i++)
		if (i < words)
			sum = csum_sub16(sum, w[i]);
	return sum;
}

// The sum of an IPv4 header's ten words: 0xffff when its checksum holds.
static __always_inline __u16 ipv4_sum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return csum_fold(sum);
}

static __always_inline __u16 ipv4_checksum(struct iphdr *ip)
{
	ip->check = 0;
	return ~ipv4_sum(ip);
}

// Room to sum a datagram in: one block of SUM_BLOCK bytes and three of
// zero padding, per CPU.
#define SUM_BLOCK 512
#define SUM_BLOCKS 16
struct scratch {
	__u8 b[SUM_BLOCK + 4];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} SCRATCH SEC(".maps");

// The one's-complement sum (unfolded, in memory byte order) of `len` bytes
// of the frame from offset `off`, added to `seed`, copied a block at a time
// to SCRATCH (an odd tail padded with zeros); -1 when it cannot be summed
// (longer than SUM_BLOCKS blocks). A function of its own, so the kernel
// verifies it once, not at each caller.
__attribute__((noinline)) int frame_sum(struct xdp_md *ctx, __u32 off, __u32 len, __u32 seed)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&SCRATCH, &zero);
	if (!s || len > SUM_BLOCK * SUM_BLOCKS || off > 0xffff)
		return -1;
	__u64 sum = seed;
	for (int i = 0; i < SUM_BLOCKS; i++) {
		__u64 n = len > SUM_BLOCK ? SUM_BLOCK : len;
		// Bounds the verifier sees on the register passed on.
		asm volatile("" : "+r"(n));
		if (n == 0)
			break;
		if (n > SUM_BLOCK)
			return -1;
		if (bpf_xdp_load_bytes(ctx, off, s->b, n))
			return -1;
		s->b[n] = 0;
		s->b[n + 1] = 0;
		s->b[n + 2] = 0;
		__u64 whole = (n + 3) & ~3ull;
		if (whole > SUM_BLOCK)
			return -1;
		sum = (__u32)bpf_csum_diff(0, 0, (void *)s->b, whole, (__u32)sum);
		off += n;
		len -= n;
	}
	return csum_fold((__u32)sum);
}

struct pseudo4 {
	__u32 saddr;
	__u32 daddr;
	__u8 zero;
	__u8 proto;
	__u16 len;
};

struct pseudo6 {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__u32 len;
	__u8 zero[3];
	__u8 next;
};

// Whether the datagram at `udp` (ending the frame) carries a UDP checksum
// and it holds, as the stack would check it before any socket saw the
// datagram. A datagram without one is left to the stack too: the relay
// socket would send it with one.
static __always_inline int udp4_valid(struct xdp_md *ctx, struct iphdr *ip, struct udphdr *udp)
{
	if (!udp->check)
		return 0;
	struct pseudo4 ph = {ip->saddr, ip->daddr, 0, IPPROTO_UDP, udp->len};
	__u32 sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
	return frame_sum(ctx, sizeof(struct ethhdr) + sizeof(struct iphdr), bpf_ntohs(udp->len), sum) == 0xffff;
}

static __always_inline int udp6_valid(struct xdp_md *ctx, struct ipv6hdr *ip, struct udphdr *udp)
{
	if (!udp->check)
		return 0;
	struct pseudo6 ph = {.saddr = ip->saddr, .daddr = ip->daddr, .len = bpf_htonl(bpf_ntohs(udp->len)),
			     .next = IPPROTO_UDP};
	__u32 sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
	return frame_sum(ctx, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), bpf_ntohs(udp->len), sum) == 0xffff;
}

// A datagram rewritten: its addresses, ports and length replaced and its
// ChannelData header added or removed. The UDP checksum follows from the
// old one (verified first) without reading the payload again (RFC 1624);
// the header keeps the payload's 16-bit alignment, so the payload's words
// are unchanged.
struct rewrite {
	const void *old_src, *old_dst, *new_src, *new_dst;
	int words; // 16-bit words per address: 2 (IPv4) or 8 (IPv6)
	__u16 old_sport, old_dport, new_sport, new_dport;
	__u16 old_len, new_len; // network order
	__u16 cd[2];		// the ChannelData header's two words
	int adding;
};

// The updated sum, still unfolded (more can be taken out before
// csum_finish).
static __always_inline __u32 csum_rewrite(__u16 old, const struct rewrite *w)
{
	__u32 sum = (__u16)~old;
	sum = csum_sub_addr(sum, w->old_src, w->words);
	sum = csum_sub_addr(sum, w->old_dst, w->words);
	sum = csum_add_addr(sum, w->new_src, w->words);
	sum = csum_add_addr(sum, w->new_dst, w->words);
	sum = csum_sub16(sum, w->old_sport);
	sum = csum_sub16(sum, w->old_dport);
	sum = csum_add16(sum, w->new_sport);
	sum = csum_add16(sum, w->new_dport);
	// The length is in the pseudo-header and in the UDP header.
	sum = csum_sub16(sum, w->old_len);
	sum = csum_sub16(sum, w->old_len);
	sum = csum_add16(sum, w->new_len);
	sum = csum_add16(sum, w->new_len);
	if (w->adding) {
		sum = csum_add16(sum, w->cd[0]);
		sum = csum_add16(sum, w->cd[1]);
	} else {
		sum = csum_sub16(sum, w->cd[0]);
		sum = csum_sub16(sum, w->cd[1]);
	}
	return sum;
}

// The checksum field for `sum` (0 means "none" in IPv4 and is invalid in
// IPv6: its one's-complement twin 0xffff is sent instead).
static __always_inline __u16 csum_finish(__u32 sum)
{
	__u16 c = ~csum_fold(sum);
	return c ? c : 0xffff;
}

// ---------------------------------------------------------------- forwarding

// The route's per-CPU hop cache, reset when the route was written anew.
static __always_inline struct hop *hop_of(__u32 slot, int to_peer, __u32 gen)
{
	struct hops *hs = bpf_map_lookup_elem(&HOPS, &slot);
	if (!hs)
		return 0;
	struct hop *h = to_peer ? &hs->to_peer : &hs->to_client;
	if (h->gen != gen) {
		__builtin_memset(h, 0, sizeof(*h));
		h->gen = gen;
	}
	return h;
}

// The stack's IPv4 reverse-path filter (fib_validate_source) for a frame
// from `src` to `dst` that came in on this interface: strict (1) wants the
// route back to `src` to leave by the same interface, loose (2) any route
// back. IPv6 has none in the stack. Cached per route for HOP_CACHE_NS.
static __always_inline int reverse_path4(struct xdp_md *ctx, const struct iface *in, struct hop *h, __u64 now,
					 __u32 src, __u32 dst)
{
	if (!in->rp_filter)
		return 1;
	if (h->rp_ifindex == ctx->ingress_ifindex && now < h->rp_until_ns)
		return 1;
	struct bpf_fib_lookup p = {
		.family = AF_INET,
		.l4_protocol = IPPROTO_UDP,
		.ifindex = ctx->ingress_ifindex,
		.ipv4_src = dst,
		.ipv4_dst = src,
	};
	long rc = bpf_fib_lookup(ctx, &p, sizeof(p), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || (in->rp_filter == 1 && p.ifindex != ctx->ingress_ifindex)) {
		count(C_PASS_REVERSE_PATH);
		return 0;
	}
	h->rp_ifindex = ctx->ingress_ifindex;
	h->rp_until_ns = now + HOP_CACHE_NS;
	return 1;
}

// Where a rewritten frame goes: the next hop's MAC, ours, the interface,
// and the TTL / hop limit a relay socket's datagram would leave with.
struct nh {
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
	__u32 ifindex;
	__u8 ttl;
};

// The route's cached next hop, while fresh, for a datagram no longer than
// one the lookup passed and than the smallest path MTU (`safe`).
static __always_inline int cached(const struct hop *h, __u64 now, __u16 len, __u16 safe, struct nh *out)
{
	if (now >= h->until_ns || len > h->len_ok || len > safe)
		return 0;
	__builtin_memcpy(out->dmac, h->dmac, ETH_ALEN);
	__builtin_memcpy(out->smac, h->smac, ETH_ALEN);
	out->ifindex = h->ifindex;
	out->ttl = h->ttl;
	return 1;
}

// The next hop from the kernel's tables (route, neighbour, path MTU),
// cached in the route. The frame is untouched on anything but success.
static __always_inline int lookup(struct xdp_md *ctx, struct bpf_fib_lookup *p, struct hop *h, __u64 now,
				  struct nh *out)
{
	__u16 len = p->tot_len;
	long rc = bpf_fib_lookup(ctx, p, sizeof(*p), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		count(C_PASS_TOO_BIG);
		return -1;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		count(C_PASS_NO_ROUTE);
		return -1;
	}
	__u32 ifindex = p->ifindex;
	struct iface *out_if = bpf_map_lookup_elem(&IFACES, &ifindex);
	if (!out_if) {
		count(C_PASS_NO_ROUTE);
		return -1;
	}
	__u8 ttl = out_if->hop_limit;
	if (p->family == AF_INET) {
		__u32 zero = 0;
		struct settings *s = bpf_map_lookup_elem(&SETTINGS, &zero);
		ttl = s ? s->ttl : 0;
	}
	if (!ttl) {
		count(C_PASS_NO_ROUTE);
		return -1;
	}
	__builtin_memcpy(out->dmac, p->dmac, ETH_ALEN);
	__builtin_memcpy(out->smac, p->smac, ETH_ALEN);
	out->ifindex = ifindex;
	out->ttl = ttl;
	__builtin_memcpy(h->dmac, p->dmac, ETH_ALEN);
	__builtin_memcpy(h->smac, p->smac, ETH_ALEN);
	h->ifindex = ifindex;
	h->ttl = ttl;
	h->len_ok = now < h->until_ns && h->len_ok > len ? h->len_ok : len;
	h->until_ns = now + HOP_CACHE_NS;
	return 0;
}

static __always_inline int send(struct xdp_md *ctx, const struct nh *nh)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	if (nh->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	count(C_REDIRECTED);
	return bpf_redirect(nh->ifindex, 0);
}

// `now` is the coarse clock (CLOCK_MONOTONIC as of the last tick, Linux
// 5.11): cheaper per packet than bpf_ktime_get_ns; a route outlives its
// expiry by at most one tick, and turnd removes it on expiry anyway.
static __always_inline int live(__u64 now, __u64 until_ns)
{
	if (now < until_ns)
		return 1;
	count(C_PASS_EXPIRED);
	return 0;
}

// What a relayed packet is charged to its channel, once it is past the
// point of no return.
static __always_inline void charge(__u32 slot, int to_peer, __u64 bytes)
{
	struct chan_stats *s = bpf_map_lookup_elem(&STATS, &slot);
	if (!s)
		return;
	if (to_peer) {
		s->to_peer_packets += 1;
		s->to_peer_bytes += bytes;
	} else {
		s->to_client_packets += 1;
		s->to_client_bytes += bytes;
	}
}

// The payload length of ChannelData filling a datagram whose UDP payload is
// `room` bytes: exact, or padded to a multiple of 4 (RFC 8656 §12.5 allows
// padding over UDP). Returns the padding to trim, or -1 to leave it to the
// socket path.
static __always_inline int channel_padding(__u16 len, __u32 room)
{
	__u32 whole = CHANNEL_HEADER + (__u32)len;
	if (room == whole)
		return 0;
	if (room == ((whole + 3) & ~3u) && room > whole)
		return room - whole;
	return -1;
}

// The IPv4 header a relay socket sends: no options, TOS 0 (DSCP best
// effort, Not-ECT: RFC 8656 §14's alternate behaviours, as the socket path
// sends), DF set (a datagram that fits the path MTU from a socket in
// IP_PMTUDISC_WANT), a fresh identification per datagram (Linux draws one
// from a hashed per-destination counter, never constant: a random one
// here), the host's default TTL.
static __always_inline void ipv4_header(struct iphdr *ip, __u16 tot_len, __u8 ttl, __u32 src, __u32 dst)
{
	__u16 id = bpf_get_prandom_u32();
	*(__u16 *)ip = bpf_htons(0x4500);
	ip->tot_len = bpf_htons(tot_len);
	ip->id = id ? id : 1;
	ip->frag_off = bpf_htons(IP_DF);
	ip->ttl = ttl;
	ip->protocol = IPPROTO_UDP;
	ip->saddr = src;
	ip->daddr = dst;
	ip->check = ipv4_checksum(ip);
}

// The IPv6 header a relay socket sends: traffic class 0 and flow label 0
// (RFC 8656 §14; turnd's sockets turn automatic flow labels off), the
// egress interface's hop limit.
static __always_inline void ipv6_header(struct ipv6hdr *ip, __u16 payload_len, __u8 hop_limit)
{
	*(__u32 *)ip = bpf_htonl(0x60000000);
	ip->payload_len = bpf_htons(payload_len);
	ip->nexthdr = IPPROTO_UDP;
	ip->hop_limit = hop_limit;
}

// The smallest path MTU the kernel may learn for an IPv4 destination.
static __always_inline __u16 min_pmtu4(void)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&SETTINGS, &zero);
	return s ? s->min_pmtu4 : 0;
}

// ---------------------------------------------------------------- IPv4

#define H4 (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

static __always_inline int v4_to_peer(struct xdp_md *ctx, const struct iface *in, struct iphdr *ip,
				      struct udphdr *udp, void *end, __u16 channel, __u16 len, int pad)
{
	struct out4_key k = {
		.client_ip = ip->saddr,
		.listener_ip = ip->daddr,
		.client_port = udp->source,
		.listener_port = udp->dest,
		.channel = channel,
	};
	struct out4_val *r = bpf_map_lookup_elem(&OUT4, &k);
	if (!r)
		return -1;
	if (pad < 0)
		return pass(C_PASS_LENGTH);
	__u64 now = bpf_ktime_get_coarse_ns();
	if (!live(now, r->until_ns))
		return XDP_PASS;
	__u32 slot = r->slot;
	struct hop *h = hop_of(slot, 1, r->gen);
	if (!h)
		return pass(C_PASS_NO_ROUTE);
	if (!reverse_path4(ctx, in, h, now, ip->saddr, ip->daddr))
		return XDP_PASS;
	__u16 new_len = sizeof(struct udphdr) + len;
	__u16 tot = sizeof(struct iphdr) + new_len;
	struct nh nh;
	if (!cached(h, now, tot, min_pmtu4(), &nh)) {
		struct bpf_fib_lookup p = {
			.family = AF_INET,
			.l4_protocol = IPPROTO_UDP,
			.sport = r->relay_port,
			.dport = r->peer_port,
			.tot_len = tot,
			.ifindex = ctx->ingress_ifindex,
			.ipv4_src = r->relay_ip,
			.ipv4_dst = r->peer_ip,
		};
		if (lookup(ctx, &p, h, now, &nh) < 0)
			return XDP_PASS;
	}
	if (!udp4_valid(ctx, ip, udp))
		return pass(C_PASS_CHECKSUM);

	// Everything the new headers need, read before they move.
	__u32 old_saddr = ip->saddr, old_daddr = ip->daddr;
	__u32 relay_ip = r->relay_ip, peer_ip = r->peer_ip;
	__u16 relay_port = r->relay_port, peer_port = r->peer_port;
	__u16 ulen = bpf_htons(new_len);
	struct rewrite w = {
		&old_saddr, &old_daddr, &relay_ip, &peer_ip, 2,
		udp->source, udp->dest, relay_port, peer_port,
		udp->len, ulen, {channel, bpf_htons(len)}, 0,
	};
	__u32 sum = csum_rewrite(udp->check, &w);
	if (pad > 0) {
		// Padding is not data: trimmed, it leaves the checksum too. It
		// ends the datagram: read its last three bytes.
		__u8 tail[3];
		if (bpf_xdp_load_bytes(ctx, H4 + CHANNEL_HEADER + len + pad - 3, tail, 3))
			return pass(C_PASS_LENGTH);
		__u8 pb[3] = {};
		switch (pad) {
		case 1:
			pb[0] = tail[2];
			break;
		case 2:
			pb[0] = tail[1];
			pb[1] = tail[2];
			break;
		default:
			pb[0] = tail[0];
			pb[1] = tail[1];
			pb[2] = tail[2];
		}
		// Each padding byte is the high or the low half of a 16-bit
		// word, by its offset in the UDP payload.
#pragma unroll
		for (int i = 0; i < 3; i++) {
			__u16 word = ((len + i) & 1) == 0 ? (__u16)pb[i] << 8 : pb[i];
			sum = csum_sub16(sum, bpf_htons(word));
		}
	}
	__u16 check = csum_finish(sum);

	// Untouched if this fails (it cannot with the lengths checked above).
	if (bpf_xdp_adjust_head(ctx, CHANNEL_HEADER))
		return pass(C_PASS_LENGTH);
	// The point of no return.
	if (pad > 0 && bpf_xdp_adjust_tail(ctx, -pad)) {
		count(C_ABORTED);
		return XDP_ABORTED;
	}
	void *data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + H4 > end) {
		count(C_ABORTED);
		return XDP_ABORTED;
	}
	struct iphdr *nip = data + sizeof(struct ethhdr);
	struct udphdr *nudp = (void *)(nip + 1);
	((struct ethhdr *)data)->h_proto = bpf_htons(ETH_P_IP);
	ipv4_header(nip, tot, nh.ttl, relay_ip, peer_ip);
	nudp->source = relay_port;
	nudp->dest = peer_port;
	nudp->len = ulen;
	nudp->check = check;
	charge(slot, 1, len);
	count(C_TO_PEER_V4);
	return send(ctx, &nh);
}

static __always_inline int v4_to_client(struct xdp_md *ctx, const struct iface *in, __u16 payload)
{
	// Parsed again: the verifier forgets packet pointers across the
	// client-side attempt.
	void *start = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (start + H4 > end)
		return pass(C_PASS_MALFORMED);
	struct iphdr *ip = start + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip + 1);
	struct in4_key k = {
		.peer_ip = ip->saddr,
		.relay_ip = ip->daddr,
		.peer_port = udp->source,
		.relay_port = udp->dest,
	};
	struct in4_val *r = bpf_map_lookup_elem(&IN4, &k);
	if (!r)
		return pass(C_PASS_UNKNOWN);
	__u64 now = bpf_ktime_get_coarse_ns();
	if (!live(now, r->until_ns))
		return XDP_PASS;
	__u32 slot = r->slot;
	struct hop *h = hop_of(slot, 0, r->gen);
	if (!h)
		return pass(C_PASS_NO_ROUTE);
	if (!reverse_path4(ctx, in, h, now, ip->saddr, ip->daddr))
		return XDP_PASS;
	__u16 new_len = sizeof(struct udphdr) + CHANNEL_HEADER + payload;
	__u16 tot = sizeof(struct iphdr) + new_len;
	struct nh nh;
	if (!cached(h, now, tot, min_pmtu4(), &nh)) {
		struct bpf_fib_lookup p = {
			.family = AF_INET,
			.l4_protocol = IPPROTO_UDP,
			.sport = r->listener_port,
			.dport = r->client_port,
			.tot_len = tot,
			.ifindex = ctx->ingress_ifindex,
			.ipv4_src = r->listener_ip,
			.ipv4_dst = r->client_ip,
		};
		if (lookup(ctx, &p, h, now, &nh) < 0)
			return XDP_PASS;
	}
	if (!udp4_valid(ctx, ip, udp))
		return pass(C_PASS_CHECKSUM);

	__u32 old_saddr = ip->saddr, old_daddr = ip->daddr;
	__u32 client_ip = r->client_ip, listener_ip = r->listener_ip;
	__u16 client_port = r->client_port, listener_port = r->listener_port;
	__u16 cd_words[2] = {r->channel, bpf_htons(payload)};
	__u16 ulen = bpf_htons(new_len);
	struct rewrite w = {
		&old_saddr, &old_daddr, &listener_ip, &client_ip, 2,
		udp->source, udp->dest, listener_port, client_port,
		udp->len, ulen, {cd_words[0], cd_words[1]}, 1,
	};
	__u16 check = csum_finish(csum_rewrite(udp->check, &w));

	// Untouched if this fails (XDP keeps 256 bytes of headroom).
	if (bpf_xdp_adjust_head(ctx, -CHANNEL_HEADER))
		return pass(C_PASS_LENGTH);
	void *data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + H4 + CHANNEL_HEADER > end) {
		count(C_ABORTED);
		return XDP_ABORTED;
	}
	struct iphdr *nip = data + sizeof(struct ethhdr);
	struct udphdr *nudp = (void *)(nip + 1);
	__u16 *cd = (void *)(nudp + 1);
	((struct ethhdr *)data)->h_proto = bpf_htons(ETH_P_IP);
	ipv4_header(nip, tot, nh.ttl, listener_ip, client_ip);
	nudp->source = listener_port;
	nudp->dest = client_port;
	nudp->len = ulen;
	nudp->check = check;
	cd[0] = cd_words[0];
	cd[1] = cd_words[1];
	charge(slot, 0, payload);
	count(C_TO_CLIENT_V4);
	return send(ctx, &nh);
}

static __always_inline int v4(struct xdp_md *ctx, const struct iface *in, void *data, void *end)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return pass(C_PASS_MALFORMED);
	// What ip_rcv_core drops: the stack's to drop, and count.
	if (ip->version != 4 || ip->ihl < 5)
		return pass(C_PASS_MALFORMED);
	if (ip->protocol != IPPROTO_UDP)
		return pass(C_PASS_NOT_UDP);
	// Options and fragments: the socket path.
	if (ip->ihl != 5 || ip->frag_off & bpf_htons(0x3fff))
		return pass(C_PASS_OPTIONS);
	if (ipv4_sum(ip) != 0xffff)
		return pass(C_PASS_MALFORMED);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return pass(C_PASS_MALFORMED);
	__u32 tot = bpf_ntohs(ip->tot_len);
	__u32 ulen = bpf_ntohs(udp->len);
	if (tot < sizeof(struct iphdr) + sizeof(struct udphdr) || tot > 0xffff ||
	    (void *)ip + tot > end || ulen < sizeof(struct udphdr) || ulen > tot - sizeof(struct iphdr))
		return pass(C_PASS_MALFORMED);
	// Ethernet padding after the datagram, or a UDP length short of the
	// IP payload: the socket path.
	if (ulen != tot - sizeof(struct iphdr) || (void *)ip + tot != end)
		return pass(C_PASS_LENGTH);
	__u32 room = ulen - sizeof(struct udphdr);
	__u8 *cd = (void *)(udp + 1);
	if (room >= CHANNEL_HEADER && (void *)(cd + CHANNEL_HEADER) <= end && (cd[0] >> 6) == 1) {
		__u16 len = ((__u16)cd[2] << 8) | cd[3];
		__u16 channel = *(__u16 *)cd;
		int rc = v4_to_peer(ctx, in, ip, udp, end, channel, len, channel_padding(len, room));
		if (rc >= 0)
			return rc;
	}
	if (room > 0xffff - sizeof(struct iphdr) - sizeof(struct udphdr) - CHANNEL_HEADER)
		return pass(C_PASS_LENGTH);
	return v4_to_client(ctx, in, room);
}

// ---------------------------------------------------------------- IPv6

#define H6 (sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct udphdr))

static __always_inline int v6_to_peer(struct xdp_md *ctx, struct ipv6hdr *ip, struct udphdr *udp, void *end,
				      __u16 channel, __u16 len, int pad)
{
	struct out6_key k = {
		.client_port = udp->source,
		.listener_port = udp->dest,
		.channel = channel,
	};
	__builtin_memcpy(k.client_ip, &ip->saddr, 16);
	__builtin_memcpy(k.listener_ip, &ip->daddr, 16);
	struct out6_val *r = bpf_map_lookup_elem(&OUT6, &k);
	if (!r)
		return -1;
	// Padding is left to the socket path here (one less branch for the
	// verifier; no client pads).
	if (pad != 0)
		return pass(C_PASS_LENGTH);
	__u64 now = bpf_ktime_get_coarse_ns();
	if (!live(now, r->until_ns))
		return XDP_PASS;
	__u32 slot = r->slot;
	struct hop *h = hop_of(slot, 1, r->gen);
	if (!h)
		return pass(C_PASS_NO_ROUTE);
	__u16 new_len = sizeof(struct udphdr) + len;
	struct nh nh;
	if (!cached(h, now, sizeof(struct ipv6hdr) + new_len, IPV6_MIN_MTU, &nh)) {
		struct bpf_fib_lookup p = {
			.family = AF_INET6,
			.l4_protocol = IPPROTO_UDP,
			.sport = r->relay_port,
			.dport = r->peer_port,
			.tot_len = sizeof(struct ipv6hdr) + new_len,
			.ifindex = ctx->ingress_ifindex,
		};
		__builtin_memcpy(p.ipv6_src, r->relay_ip, 16);
		__builtin_memcpy(p.ipv6_dst, r->peer_ip, 16);
		if (lookup(ctx, &p, h, now, &nh) < 0)
			return XDP_PASS;
	}
	if (!udp6_valid(ctx, ip, udp))
		return pass(C_PASS_CHECKSUM);

	struct in6_addr old_src = ip->saddr, old_dst = ip->daddr;
	__u16 ulen = bpf_htons(new_len);
	struct rewrite w = {
		&old_src, &old_dst, r->relay_ip, r->peer_ip, 8,
		udp->source, udp->dest, r->relay_port, r->peer_port,
		udp->len, ulen, {channel, bpf_htons(len)}, 0,
	};
	__u16 check = csum_finish(csum_rewrite(udp->check, &w));

	if (bpf_xdp_adjust_head(ctx, CHANNEL_HEADER))
		return pass(C_PASS_LENGTH);
	void *data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + H6 > end) {
		count(C_ABORTED);
		return XDP_ABORTED;
	}
	struct ipv6hdr *nip = data + sizeof(struct ethhdr);
	struct udphdr *nudp = (void *)(nip + 1);
	((struct ethhdr *)data)->h_proto = bpf_htons(ETH_P_IPV6);
	ipv6_header(nip, new_len, nh.ttl);
	__builtin_memcpy(&nip->saddr, r->relay_ip, 16);
	__builtin_memcpy(&nip->daddr, r->peer_ip, 16);
	nudp->source = r->relay_port;
	nudp->dest = r->peer_port;
	nudp->len = ulen;
	nudp->check = check;
	charge(slot, 1, len);
	count(C_TO_PEER_V6);
	return send(ctx, &nh);
}

static __always_inline int v6_to_client(struct xdp_md *ctx, __u16 payload)
{
	// Parsed again: the verifier forgets packet pointers across the
	// client-side attempt.
	void *start = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (start + H6 > end)
		return pass(C_PASS_MALFORMED);
	struct ipv6hdr *ip = start + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip + 1);
	struct in6_key k = {
		.peer_port = udp->source,
		.relay_port = udp->dest,
	};
	__builtin_memcpy(k.peer_ip, &ip->saddr, 16);
	__builtin_memcpy(k.relay_ip, &ip->daddr, 16);
	struct in6_val *r = bpf_map_lookup_elem(&IN6, &k);
	if (!r)
		return pass(C_PASS_UNKNOWN);
	__u64 now = bpf_ktime_get_coarse_ns();
	if (!live(now, r->until_ns))
		return XDP_PASS;
	__u32 slot = r->slot;
	struct hop *h = hop_of(slot, 0, r->gen);
	if (!h)
		return pass(C_PASS_NO_ROUTE);
	__u16 new_len = sizeof(struct udphdr) + CHANNEL_HEADER + payload;
	struct nh nh;
	if (!cached(h, now, sizeof(struct ipv6hdr) + new_len, IPV6_MIN_MTU, &nh)) {
		struct bpf_fib_lookup p = {
			.family = AF_INET6,
			.l4_protocol = IPPROTO_UDP,
			.sport = r->listener_port,
			.dport = r->client_port,
			.tot_len = sizeof(struct ipv6hdr) + new_len,
			.ifindex = ctx->ingress_ifindex,
		};
		__builtin_memcpy(p.ipv6_src, r->listener_ip, 16);
		__builtin_memcpy(p.ipv6_dst, r->client_ip, 16);
		if (lookup(ctx, &p, h, now, &nh) < 0)
			return XDP_PASS;
	}
	if (!udp6_valid(ctx, ip, udp))
		return pass(C_PASS_CHECKSUM);

	struct in6_addr old_src = ip->saddr, old_dst = ip->daddr;
	__u16 ulen = bpf_htons(new_len);
	__u16 cd_words[2] = {r->channel, bpf_htons(payload)};
	struct rewrite w = {
		&old_src, &old_dst, r->listener_ip, r->client_ip, 8,
		udp->source, udp->dest, r->listener_port, r->client_port,
		udp->len, ulen, {cd_words[0], cd_words[1]}, 1,
	};
	__u16 check = csum_finish(csum_rewrite(udp->check, &w));

	if (bpf_xdp_adjust_head(ctx, -CHANNEL_HEADER))
		return pass(C_PASS_LENGTH);
	void *data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + H6 + CHANNEL_HEADER > end) {
		count(C_ABORTED);
		return XDP_ABORTED;
	}
	struct ipv6hdr *nip = data + sizeof(struct ethhdr);
	struct udphdr *nudp = (void *)(nip + 1);
	__u16 *cd = (void *)(nudp + 1);
	((struct ethhdr *)data)->h_proto = bpf_htons(ETH_P_IPV6);
	ipv6_header(nip, new_len, nh.ttl);
	__builtin_memcpy(&nip->saddr, r->listener_ip, 16);
	__builtin_memcpy(&nip->daddr, r->client_ip, 16);
	nudp->source = r->listener_port;
	nudp->dest = r->client_port;
	nudp->len = ulen;
	nudp->check = check;
	cd[0] = cd_words[0];
	cd[1] = cd_words[1];
	charge(slot, 0, payload);
	count(C_TO_CLIENT_V6);
	return send(ctx, &nh);
}

static __always_inline int v6(struct xdp_md *ctx, void *data, void *end)
{
	struct ipv6hdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return pass(C_PASS_MALFORMED);
	if (ip->version != 6)
		return pass(C_PASS_MALFORMED);
	// Extension headers (fragments among them): the socket path.
	switch (ip->nexthdr) {
	case IPPROTO_UDP:
		break;
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_FRAGMENT:
	case IPPROTO_DSTOPTS:
		return pass(C_PASS_OPTIONS);
	default:
		return pass(C_PASS_NOT_UDP);
	}
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return pass(C_PASS_MALFORMED);
	__u32 plen = bpf_ntohs(ip->payload_len);
	__u32 ulen = bpf_ntohs(udp->len);
	if ((void *)(ip + 1) + plen > end || ulen < sizeof(struct udphdr) || ulen > plen)
		return pass(C_PASS_MALFORMED);
	if (ulen != plen || (void *)(ip + 1) + plen != end)
		return pass(C_PASS_LENGTH);
	// IPv6 never carries a zero UDP checksum (RFC 8200 §8.1).
	if (!udp->check)
		return pass(C_PASS_CHECKSUM);
	__u32 room = ulen - sizeof(struct udphdr);
	__u8 *cd = (void *)(udp + 1);
	if (room >= CHANNEL_HEADER && (void *)(cd + CHANNEL_HEADER) <= end && (cd[0] >> 6) == 1) {
		__u16 len = ((__u16)cd[2] << 8) | cd[3];
		__u16 channel = *(__u16 *)cd;
		int rc = v6_to_peer(ctx, ip, udp, end, channel, len, channel_padding(len, room));
		if (rc >= 0)
			return rc;
	}
	if (room > 0xffff - sizeof(struct udphdr) - CHANNEL_HEADER)
		return pass(C_PASS_LENGTH);
	return v6_to_client(ctx, room);
}

SEC("xdp")
int turnd_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return pass(C_PASS_MALFORMED);
	if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
		return pass(C_PASS_NOT_UDP);
	// A frame for another host's MAC (a flooding switch, a promiscuous
	// port) or a broadcast or multicast one: the stack's to judge.
	__u32 ifindex = ctx->ingress_ifindex;
	const struct iface *in = bpf_map_lookup_elem(&IFACES, &ifindex);
	if (!in || *(__u32 *)eth->h_dest != *(const __u32 *)in->mac ||
	    *(__u16 *)&eth->h_dest[4] != *(const __u16 *)&in->mac[4])
		return pass(C_PASS_OTHER_HOST);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return v4(ctx, in, data, end);
	return v6(ctx, data, end);
}

// The floor for the microbenchmark: a bare UDP reflector (swap the
// addresses and ports, send back out), no lookup, no checksum work beyond
// what a swap leaves valid.
SEC("xdp")
int turnd_reflect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	struct udphdr *udp;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
			return XDP_PASS;
		__u32 a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
		udp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->nexthdr != IPPROTO_UDP)
			return XDP_PASS;
		struct in6_addr a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
		udp = (void *)(ip + 1);
	} else {
		return XDP_PASS;
	}
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	__u16 p = udp->source;
	udp->source = udp->dest;
	udp->dest = p;
	return XDP_TX;
}

// For the other end of a test's veth pair: XDP_TX and redirects into a veth
// need an XDP program on its peer.
SEC("xdp")
int turnd_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
