/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP and ICMPv6 errors about tracked flows ("related"): a Destination
 * Unreachable, Packet Too Big, Time Exceeded or Parameter Problem quotes the
 * packet it is about. That packet crossed this endpoint in the other
 * direction, as the flow's first direction or as its reply; when conntrack
 * holds the flow, the error passes like the flow's replies (path MTU
 * discovery through an enforced pod needs no rule). An error goes back to
 * the quoted packet's sender: one addressed elsewhere is not related (else a
 * pod could send anything anywhere, quoting a flow it has). Looked up without
 * refreshing the entry: an error never keeps a flow alive. A quoted IPv6
 * packet with extension headers before its ports is not followed. */
#ifndef __PLINTH_RELATED_H
#define __PLINTH_RELATED_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "ct_map.h"
#include "parse6.h"

/* ICMP error types (RFC 792) and ICMPv6 error types (RFC 4443). */
#define PLINTH_ICMP_DEST_UNREACH 3
#define PLINTH_ICMP_TIME_EXCEEDED 11
#define PLINTH_ICMP_PARAMETERPROB 12
#define PLINTH_ICMP6_ERROR_MAX 4 /* 1 unreachable, 2 too big, 3 time exceeded, 4 parameter */

/* The ports of a quoted packet: TCP, UDP and SCTP lead with them; ICMP and
 * ICMPv6 flows are tracked without ports. Returns 0, or -1 for a protocol
 * conntrack does not track this way. */
static __always_inline int __quoted_ports(struct __sk_buff *skb, __u32 off, __u8 proto, __be16 ports[2])
{
	ports[0] = 0;
	ports[1] = 0;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP)
		return bpf_skb_load_bytes(skb, off, ports, 4) < 0 ? -1 : 0;
	return proto == IPPROTO_ICMP || proto == PLINTH_NEXTHDR_ICMP6 ? 0 : -1;
}

static __always_inline int __ct4_live(const struct plinth_ct_key *k, __u64 now)
{
	struct plinth_ct_value *v = bpf_map_lookup_elem(&plinth_ct4, k);

	return v && v->expires_ns >= now;
}

static __always_inline int __ct6_live(const struct plinth_ct6_key *k, __u64 now)
{
	struct plinth_ct_value *v = bpf_map_lookup_elem(&plinth_ct6, k);

	return v && v->expires_ns >= now;
}

/**
 * icmp_related - whether an IPv4 ICMP packet is an error about a tracked flow
 * @skb: the packet (IPv4, protocol ICMP)
 * @daddr: its destination
 * @ep_id: its endpoint
 * @dir: its direction at the endpoint
 * @now: clock_now() (clock.h)
 */
static __always_inline int icmp_related(struct __sk_buff *skb, __be32 daddr, __u32 ep_id, __u8 dir, __u64 now)
{
	struct plinth_ct_key k = {};
	struct iphdr inner;
	__be16 ports[2];
	__u8 vihl, type;
	__u32 off;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1) < 0)
		return 0;
	off = ETH_HLEN + (vihl & 0xf) * 4;
	if (bpf_skb_load_bytes(skb, off, &type, 1) < 0)
		return 0;
	if (type != PLINTH_ICMP_DEST_UNREACH && type != PLINTH_ICMP_TIME_EXCEEDED &&
	    type != PLINTH_ICMP_PARAMETERPROB)
		return 0;
	off += 8; /* type, code, checksum, and 4 bytes the type defines */
	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
		return 0;
	if (inner.ihl < 5 || (inner.frag_off & bpf_htons(0x1fff)) || inner.saddr != daddr)
		return 0;
	if (__quoted_ports(skb, off + inner.ihl * 4, inner.protocol, ports) < 0)
		return 0;

	/* The quoted packet in its own direction: the flow's first direction. */
	k.ep_id = ep_id;
	k.saddr = inner.saddr;
	k.daddr = inner.daddr;
	k.sport = ports[0];
	k.dport = ports[1];
	k.proto = inner.protocol;
	k.dir = dir == PLINTH_DIR_INGRESS ? PLINTH_DIR_EGRESS : PLINTH_DIR_INGRESS;
	if (__ct4_live(&k, now))
		return 1;
	/* The quoted packet was a reply: the flow came in this direction. */
	k.saddr = inner.daddr;
	k.daddr = inner.saddr;
	k.sport = ports[1];
	k.dport = ports[0];
	k.dir = dir;
	return __ct4_live(&k, now);
}

/**
 * icmp6_related - icmp_related for ICMPv6
 * @skb: the packet (IPv6, upper-layer protocol ICMPv6)
 * @t: its parsed tuple (destination, type and the ICMPv6 header's offset)
 * @ep_id, @dir, @now: as icmp_related
 */
static __always_inline int icmp6_related(struct __sk_buff *skb, const struct plinth_tuple6 *t, __u32 ep_id,
					 __u8 dir, __u64 now)
{
	struct plinth_ct6_key k = {};
	struct ipv6hdr inner;
	__be16 ports[2];
	__u32 off;

	if (t->icmp6_type < 1 || t->icmp6_type > PLINTH_ICMP6_ERROR_MAX)
		return 0;
	off = t->l4_off + 8;
	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
		return 0;
	if (inner.saddr.in6_u.u6_addr32[0] != t->daddr[0] || inner.saddr.in6_u.u6_addr32[1] != t->daddr[1] ||
	    inner.saddr.in6_u.u6_addr32[2] != t->daddr[2] || inner.saddr.in6_u.u6_addr32[3] != t->daddr[3])
		return 0;
	if (__quoted_ports(skb, off + sizeof(inner), inner.nexthdr, ports) < 0)
		return 0;

	k.ep_id = ep_id;
	__builtin_memcpy(k.saddr, &inner.saddr, 16);
	__builtin_memcpy(k.daddr, &inner.daddr, 16);
	k.sport = ports[0];
	k.dport = ports[1];
	k.proto = inner.nexthdr;
	k.dir = dir == PLINTH_DIR_INGRESS ? PLINTH_DIR_EGRESS : PLINTH_DIR_INGRESS;
	if (__ct6_live(&k, now))
		return 1;
	__builtin_memcpy(k.saddr, &inner.daddr, 16);
	__builtin_memcpy(k.daddr, &inner.saddr, 16);
	k.sport = ports[1];
	k.dport = ports[0];
	k.dir = dir;
	return __ct6_live(&k, now);
}

#endif
