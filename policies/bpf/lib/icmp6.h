/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ICMPv6 messages that pass without policy, as ARP does for IPv4.
 *
 * Neighbour discovery (RFC 4861) with hop limit 255, which no router
 * forwards, so only on-link senders can produce it:
 *   133 router solicitation, 134 router advertisement,
 *   135 neighbour solicitation, 136 neighbour advertisement.
 * Multicast listener discovery (RFC 2710, RFC 3810) with hop limit 1: on a
 * bridge that snoops multicast, the solicited-node groups that neighbour
 * solicitations go to are only forwarded to listeners that reported them:
 *   130 query, 131 report, 132 done, 143 version 2 report.
 * Everything else, redirects (137) and errors (1-4) and echo (128, 129)
 * included, is an ordinary new flow decided by the rules, like ICMP over
 * IPv4; NetworkPolicy ports never name ICMPv6, so only rules without ports
 * allow it. */
#ifndef __PLINTH_ICMP6_H
#define __PLINTH_ICMP6_H

#include "parse6.h"

/**
 * icmp6_passes - whether an IPv6 packet is neighbour discovery or MLD that
 * passes without policy
 * @t: the parsed packet
 *
 * Returns: 1 to pass, else 0.
 */
static __always_inline int icmp6_passes(const struct plinth_tuple6 *t)
{
	if (t->proto != PLINTH_NEXTHDR_ICMP6)
		return 0;
	switch (t->icmp6_type) {
	case 133: case 134: case 135: case 136:
		return t->hop_limit == 255;
	case 130: case 131: case 132: case 143:
		return t->hop_limit == 1;
	default:
		return 0;
	}
}

#endif
