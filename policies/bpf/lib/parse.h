/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing: Ethernet, IPv4, and the ports of TCP, UDP and SCTP
 * (IPv6: parse6.h). */
#ifndef __PLINTH_PARSE_H
#define __PLINTH_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "types.h"

#define PLINTH_L3_IPV4 1
#define PLINTH_L3_IPV6 2
#define PLINTH_L3_OTHER 3
#define PLINTH_L3_MALFORMED 4
#define PLINTH_L3_FRAGMENT 5

struct plinth_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10 */
};

#define PLINTH_TCP_FIN 0x01
#define PLINTH_TCP_SYN 0x02
#define PLINTH_TCP_RST 0x04
#define PLINTH_TCP_ACK 0x10

/**
 * parse_packet - read the flow tuple of an Ethernet frame
 * @skb: the packet
 * @t: filled for IPv4
 *
 * Returns: a PLINTH_L3_ code; @t is valid for PLINTH_L3_IPV4 only. For
 * PLINTH_L3_IPV6 (the EtherType alone) parse_ipv6 reads the packet.
 */
static __always_inline int parse_packet(struct __sk_buff *skb, struct plinth_tuple *t)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl;

	if ((void *)(eth + 1) > data_end)
		return PLINTH_L3_MALFORMED;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return PLINTH_L3_IPV6;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PLINTH_L3_OTHER;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PLINTH_L3_MALFORMED;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return PLINTH_L3_MALFORMED;
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	t->sport = 0;
	t->dport = 0;
	t->tcp_flags = 0;
	/* Fragment offset set: no L4 header here. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return PLINTH_L3_FRAGMENT;

	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP ||
	    ip->protocol == IPPROTO_SCTP) {
		/* Source and destination port lead all three headers. */
		__be16 *ports = (void *)ip + ihl;

		if ((void *)(ports + 2) > data_end)
			return PLINTH_L3_MALFORMED;
		t->sport = ports[0];
		t->dport = ports[1];
		if (ip->protocol == IPPROTO_TCP) {
			__u8 *flags = (void *)ip + ihl + 13;

			if ((void *)(flags + 1) > data_end)
				return PLINTH_L3_MALFORMED;
			t->tcp_flags = *flags;
		}
	}
	return PLINTH_L3_IPV4;
}

#endif
