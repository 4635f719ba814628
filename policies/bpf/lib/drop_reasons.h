/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Verdict reasons: index into plinth_metrics and the reason of a flow event.
 * Allow reasons are below 16, drop reasons 16 and up, program errors 32 and
 * up. Never renumber or reuse a code: dashboards and `plinth flows` keep them. */
#ifndef __PLINTH_DROP_REASONS_H
#define __PLINTH_DROP_REASONS_H

#define PLINTH_REASON_ALLOW_POLICY 1      /* a rule allowed the new flow */
#define PLINTH_REASON_ALLOW_NO_POLICY 2   /* the endpoint is not selected in this direction */
#define PLINTH_REASON_ALLOW_ESTABLISHED 3 /* conntrack hit, original direction */
#define PLINTH_REASON_ALLOW_REPLY 4       /* conntrack hit, reply direction */
#define PLINTH_REASON_PASS_UNMANAGED 5    /* retired: unknown endpoints fail closed */
#define PLINTH_REASON_PASS_NON_IP 6       /* ARP and other non-IP frames */
#define PLINTH_REASON_PASS_ICMP6_ND 7     /* IPv6 neighbour discovery and MLD (icmp6.h) */
#define PLINTH_REASON_ALLOW_RELATED 8     /* an ICMP or ICMPv6 error about a tracked flow (related.h) */

#define PLINTH_DROP_POLICY 16       /* selected endpoint, no rule allows */
#define PLINTH_DROP_FAIL_CLOSED 17  /* a map for this endpoint is full */
#define PLINTH_DROP_UNSUPPORTED_L3 18 /* retired: IPv6 is enforced like IPv4 */
#define PLINTH_DROP_FRAGMENT 19     /* non-first IPv4 or IPv6 fragment without state */
#define PLINTH_DROP_MALFORMED 20    /* truncated headers, too many IPv6 extension headers */

#define PLINTH_ERR_CT_INSERT 32     /* conntrack insert failed, other than full */
#define PLINTH_ERR_EVENTS_LOST 33   /* ring buffer full */
#define PLINTH_ERR_CT_FULL 34       /* conntrack full: an allowed flow is not remembered */

#define PLINTH_METRICS_MAX 64

#endif
