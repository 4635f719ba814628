/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv6 header parsing: the fixed header, extension headers, and the ports of
 * TCP, UDP and SCTP or the type of ICMPv6. */
#ifndef __PLINTH_PARSE6_H
#define __PLINTH_PARSE6_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "parse.h"

/* Extension headers skipped before the upper-layer header, at most this many
 * (Cilium's IPV6_MAX_HEADERS): more is treated as malformed. */
#define PLINTH_IPV6_MAX_EXTHDRS 4

#define PLINTH_NEXTHDR_HOP 0       /* hop-by-hop options */
#define PLINTH_NEXTHDR_ROUTING 43  /* routing header */
#define PLINTH_NEXTHDR_FRAGMENT 44 /* fragment header */
#define PLINTH_NEXTHDR_AUTH 51     /* authentication header */
#define PLINTH_NEXTHDR_DEST 60     /* destination options */
#define PLINTH_NEXTHDR_ICMP6 58

struct plinth_tuple6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;     /* the upper-layer protocol after extension headers */
	__u8 tcp_flags; /* as plinth_tuple */
	__u8 icmp6_type;
	__u8 hop_limit;
	__u32 l4_off;   /* offset of the upper-layer header */
};

static __always_inline int __ipv6_is_exthdr(__u8 nh)
{
	return nh == PLINTH_NEXTHDR_HOP || nh == PLINTH_NEXTHDR_ROUTING ||
	       nh == PLINTH_NEXTHDR_FRAGMENT || nh == PLINTH_NEXTHDR_AUTH ||
	       nh == PLINTH_NEXTHDR_DEST;
}

/**
 * __parse_ipv6_walk - parse_ipv6 with bpf_skb_load_bytes
 * @skb: the packet (its EtherType is IPv6)
 * @t: filled
 *
 * Hop-by-hop, routing, destination options, authentication and fragment
 * headers are skipped, at most PLINTH_IPV6_MAX_EXTHDRS of them. A fragment
 * header with a non-zero offset ends parsing: a non-first fragment carries
 * no upper-layer header (PLINTH_L3_FRAGMENT, like IPv4's). A first fragment
 * is parsed like an unfragmented packet.
 *
 * Returns: PLINTH_L3_IPV6, PLINTH_L3_FRAGMENT or PLINTH_L3_MALFORMED.
 */
static __always_inline int __parse_ipv6_walk(struct __sk_buff *skb, struct plinth_tuple6 *t)
{
	struct ipv6hdr ip6;
	__u32 off = ETH_HLEN + sizeof(struct ipv6hdr);
	__u8 nh;
	int i;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
		return PLINTH_L3_MALFORMED;
	__builtin_memcpy(t->saddr, &ip6.saddr, 16);
	__builtin_memcpy(t->daddr, &ip6.daddr, 16);
	t->hop_limit = ip6.hop_limit;
	t->sport = 0;
	t->dport = 0;
	t->tcp_flags = 0;
	t->icmp6_type = 0;
	nh = ip6.nexthdr;

#pragma unroll
	for (i = 0; i < PLINTH_IPV6_MAX_EXTHDRS; i++) {
		__u8 opt[4];
		__u32 len;

		if (!__ipv6_is_exthdr(nh))
			break;
		/* next header, length, and (fragment header) the offset */
		if (bpf_skb_load_bytes(skb, off, opt, sizeof(opt)) < 0)
			return PLINTH_L3_MALFORMED;
		if (nh == PLINTH_NEXTHDR_FRAGMENT) {
			t->proto = opt[0];
			/* Offset in the top 13 bits of bytes 2-3. */
			if ((opt[2] << 8 | opt[3]) & 0xfff8)
				return PLINTH_L3_FRAGMENT;
			len = 8;
		} else if (nh == PLINTH_NEXTHDR_AUTH) {
			len = ((__u32)opt[1] + 2) << 2;
		} else {
			len = ((__u32)opt[1] + 1) << 3;
		}
		nh = opt[0];
		off += len;
	}
	if (__ipv6_is_exthdr(nh))
		return PLINTH_L3_MALFORMED;
	t->proto = nh;
	t->l4_off = off;

	if (nh == IPPROTO_TCP || nh == IPPROTO_UDP || nh == IPPROTO_SCTP) {
		/* Source and destination port lead all three headers. */
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return PLINTH_L3_MALFORMED;
		t->sport = ports[0];
		t->dport = ports[1];
		if (nh == IPPROTO_TCP &&
		    bpf_skb_load_bytes(skb, off + 13, &t->tcp_flags, 1) < 0)
			return PLINTH_L3_MALFORMED;
	} else if (nh == PLINTH_NEXTHDR_ICMP6) {
		if (bpf_skb_load_bytes(skb, off, &t->icmp6_type, 1) < 0)
			return PLINTH_L3_MALFORMED;
	}
	return PLINTH_L3_IPV6;
}

/**
 * parse_ipv6 - read the flow tuple of an Ethernet frame carrying IPv6
 * @skb: the packet (its EtherType is IPv6)
 * @t: filled
 *
 * The common case, the fixed header followed directly by the upper-layer
 * header, both in the linear area, is read with direct packet access, as
 * parse_packet reads IPv4. Anything else (extension headers, a header
 * beyond the linear area or beyond the packet) takes __parse_ipv6_walk,
 * which decides it the same way with bpf_skb_load_bytes.
 *
 * Returns: PLINTH_L3_IPV6, PLINTH_L3_FRAGMENT or PLINTH_L3_MALFORMED.
 */
static __always_inline int parse_ipv6(struct __sk_buff *skb, struct plinth_tuple6 *t)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u8 *l4 = (void *)(ip6 + 1);
	__u8 nh;

	if ((void *)l4 > data_end)
		return __parse_ipv6_walk(skb, t);
	nh = ip6->nexthdr;
	if (nh == IPPROTO_TCP) {
		/* The ports, and the flags at byte 13. */
		if ((void *)(l4 + 14) > data_end)
			return __parse_ipv6_walk(skb, t);
		t->sport = *(__be16 *)l4;
		t->dport = *(__be16 *)(l4 + 2);
		t->tcp_flags = l4[13];
		t->icmp6_type = 0;
	} else if (nh == IPPROTO_UDP || nh == IPPROTO_SCTP) {
		if ((void *)(l4 + 4) > data_end)
			return __parse_ipv6_walk(skb, t);
		t->sport = *(__be16 *)l4;
		t->dport = *(__be16 *)(l4 + 2);
		t->tcp_flags = 0;
		t->icmp6_type = 0;
	} else if (nh == PLINTH_NEXTHDR_ICMP6) {
		if ((void *)(l4 + 1) > data_end)
			return __parse_ipv6_walk(skb, t);
		t->sport = 0;
		t->dport = 0;
		t->tcp_flags = 0;
		t->icmp6_type = l4[0];
	} else if (__ipv6_is_exthdr(nh)) {
		return __parse_ipv6_walk(skb, t);
	} else {
		/* Another upper-layer protocol: no ports read. */
		t->sport = 0;
		t->dport = 0;
		t->tcp_flags = 0;
		t->icmp6_type = 0;
	}
	__builtin_memcpy(t->saddr, &ip6->saddr, 16);
	__builtin_memcpy(t->daddr, &ip6->daddr, 16);
	t->hop_limit = ip6->hop_limit;
	t->proto = nh;
	t->l4_off = ETH_HLEN + sizeof(struct ipv6hdr);
	return PLINTH_L3_IPV6;
}

#endif
