// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Plinth policy datapath: attached to the host side of each pod's veth.
 * tc ingress there sees the pod's egress, tc egress the pod's ingress.
 * Order: the active generation's maps (gen.h), endpoint (none: fail closed), parse, conntrack (hit: pass), then for a new flow the
 * ipcache identity of the peer and the policy maps; allowed new flows enter
 * conntrack. Every new-flow verdict is counted and reported as an event.
 * IPv6 (__handle6) takes the same steps with its own parser, ipcache and
 * conntrack, and passes neighbour discovery as IPv4 passes ARP (icmp6.h).
 * ICMP errors about a tracked flow pass as its replies do (related.h). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/types.h"
#include "lib/drop_reasons.h"
#include "lib/parse.h"
#include "lib/parse6.h"
#include "lib/icmp6.h"
#include "lib/gen.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/ct.h"
#include "lib/related.h"
#include "lib/events.h"
#include "lib/clock.h"

static __always_inline int __verdict_drop(struct __sk_buff *skb, __u32 reason)
{
	metric_add(reason, skb->len);
	return TC_ACT_SHOT;
}

/* An allowed new flow: remembered in conntrack (its entry rewritten when it
 * has one), counted, and reported: a created entry's first event always, a
 * rewritten one's by the rate limit in the entry, an untracked flow's (table
 * full) by plinth_evrl and flagged. */
static __always_inline int __allow_new(struct __sk_buff *skb, const struct plinth_ct_key *key,
				       struct plinth_ct_value *fwd, __u32 ifindex, __u32 peer_id,
				       __u32 policy_id, __u16 rule, __u8 reason, __u64 now)
{
	long ct = ct_create(key, &fwd, policy_id, rule, now);

	metric_add(reason, skb->len);
	if (ct == PLINTH_CT_CREATED) {
		event_send(key, ifindex, peer_id, policy_id, rule, PLINTH_VERDICT_ALLOWED, reason, 0,
			   now);
	} else if (ct == PLINTH_CT_REWRITTEN) {
		if (fwd && ct_event_due(fwd, event_interval_ns, now))
			event_send(key, ifindex, peer_id, policy_id, rule, PLINTH_VERDICT_ALLOWED,
				   reason, 0, now);
	} else {
		metric_add(ct == -7 /* E2BIG */ ? PLINTH_ERR_CT_FULL : PLINTH_ERR_CT_INSERT, 0);
		event_emit(key, ifindex, peer_id, policy_id, rule, PLINTH_VERDICT_ALLOWED, reason,
			   PLINTH_EVENT_UNTRACKED, now);
	}
	return TC_ACT_OK;
}

/* __allow_new for IPv6 (plinth_ct6, plinth_evrl6). */
static __always_inline int __allow_new6(struct __sk_buff *skb, const struct plinth_ct6_key *key,
					struct plinth_ct_value *fwd, __u32 ifindex, __u32 peer_id,
					__u32 policy_id, __u16 rule, __u8 reason, __u64 now)
{
	long ct = ct_create6(key, &fwd, policy_id, rule, now);

	metric_add(reason, skb->len);
	if (ct == PLINTH_CT_CREATED) {
		event_send6(key, ifindex, peer_id, policy_id, rule, PLINTH_VERDICT_ALLOWED, reason,
			    0, now);
	} else if (ct == PLINTH_CT_REWRITTEN) {
		if (fwd && ct_event_due(fwd, event_interval_ns, now))
			event_send6(key, ifindex, peer_id, policy_id, rule,
				    PLINTH_VERDICT_ALLOWED, reason, 0, now);
	} else {
		metric_add(ct == -7 /* E2BIG */ ? PLINTH_ERR_CT_FULL : PLINTH_ERR_CT_INSERT, 0);
		event_emit6(key, ifindex, peer_id, policy_id, rule, PLINTH_VERDICT_ALLOWED, reason,
			    PLINTH_EVENT_UNTRACKED, now);
	}
	return TC_ACT_OK;
}

/* An IPv6 packet of endpoint @ep: the steps of __handle with plinth_ct6 and
 * the generation's IPv6 ipcache; neighbour discovery passes first. A
 * function of its own (a BPF-to-BPF call), so the IPv4 path's code stays as
 * it was. */
static __noinline int __handle6(struct __sk_buff *skb, const struct plinth_gen_maps *g,
				const struct plinth_endpoint *ep, __u32 dir, __u32 enforce)
{
	__u32 ifindex = skb->ifindex;
	struct plinth_policy_value *rule;
	struct plinth_tuple6 t;
	struct plinth_ct6_key key;
	struct plinth_ct_value *fwd;
	void *ipcache6;
	__u32 peer_id;
	__u64 now;
	int ct;

	switch (parse_ipv6(skb, &t)) {
	case PLINTH_L3_IPV6:
		break;
	case PLINTH_L3_FRAGMENT:
		if (enforce)
			return __verdict_drop(skb, PLINTH_DROP_FRAGMENT);
		metric_add(PLINTH_REASON_ALLOW_NO_POLICY, skb->len);
		return TC_ACT_OK;
	default:
		return __verdict_drop(skb, PLINTH_DROP_MALFORMED);
	}
	if (icmp6_passes(&t)) {
		metric_add(PLINTH_REASON_PASS_ICMP6_ND, skb->len);
		return TC_ACT_OK;
	}

	key.ep_id = ep->ep_id;
	__builtin_memcpy(key.saddr, t.saddr, 16);
	__builtin_memcpy(key.daddr, t.daddr, 16);
	key.sport = t.sport;
	key.dport = t.dport;
	key.proto = t.proto;
	key.dir = dir;
	key.pad = 0;

	/* The tick's time (clock.h): conntrack lifetimes are seconds, and the
	 * precise clock costs a clock-source read on every packet. */
	now = clock_now();
	ct = ct_lookup6(&key, t.tcp_flags, now, &fwd);
	if (ct == PLINTH_CT_ESTABLISHED) {
		metric_add(PLINTH_REASON_ALLOW_ESTABLISHED, skb->len);
		return TC_ACT_OK;
	}
	if (ct == PLINTH_CT_REPLY) {
		metric_add(PLINTH_REASON_ALLOW_REPLY, skb->len);
		return TC_ACT_OK;
	}
	if (enforce && t.proto == PLINTH_NEXTHDR_ICMP6 && icmp6_related(skb, &t, key.ep_id, dir, now)) {
		metric_add(PLINTH_REASON_ALLOW_RELATED, skb->len);
		return TC_ACT_OK;
	}

	ipcache6 = gen_ipcache6(g);
	if ((ep->flags & PLINTH_EP_FAIL_CLOSED) || (enforce && !ipcache6)) {
		event_emit6(&key, ifindex, 0, 0, 0, PLINTH_VERDICT_DENIED,
			    PLINTH_DROP_FAIL_CLOSED, 0, now);
		return __verdict_drop(skb, PLINTH_DROP_FAIL_CLOSED);
	}

	if (!enforce)
		return __allow_new6(skb, &key, fwd, ifindex, 0, 0, 0, PLINTH_REASON_ALLOW_NO_POLICY,
				    now);

	peer_id = ipcache6_identity(ipcache6, dir == PLINTH_DIR_INGRESS ? t.saddr : t.daddr);
	rule = policy_lookup(g, ep, peer_id, dir, t.proto, t.dport);
	if (!rule) {
		event_emit6(&key, ifindex, peer_id, 0, 0, PLINTH_VERDICT_DENIED,
			    PLINTH_DROP_POLICY, 0, now);
		return __verdict_drop(skb, PLINTH_DROP_POLICY);
	}

	{
		__u32 policy_id = rule->policy_id;
		__u16 rule_idx = rule->rule;
		struct plinth_counter *c = bpf_map_lookup_elem(&plinth_polstats, &policy_id);

		if (c) {
			c->packets++;
			c->bytes += skb->len;
		}
		return __allow_new6(skb, &key, fwd, ifindex, peer_id, policy_id, rule_idx,
				    PLINTH_REASON_ALLOW_POLICY, now);
	}
}

/* Bench only: counts runs of plinth_bench_new_flow, each a distinct flow. */
__u32 bench_flow_salt = 0;

/* @salt: 0 for real traffic (the branch compiles away); non-zero makes the
 * conntrack and event key of the packet distinct (benchmarks only). */
static __always_inline int __handle(struct __sk_buff *skb, __u8 dir, __u32 salt)
{
	__u32 ifindex = skb->ifindex;
	struct plinth_endpoint *ep = NULL;
	struct plinth_policy_value *rule;
	struct plinth_gen_maps g;
	struct plinth_tuple t = {};
	struct plinth_ct_key key;
	struct plinth_ct_value *fwd;
	__u32 enforce, peer_id;
	__u64 now;
	int l3, ct;

	/* Attached only to endpoints whose entry was written first: a missing
	 * entry means the endpoint map was full. Fail closed. */
	if (!gen_maps(&g))
		ep = gen_endpoint(&g, ifindex);
	if (!ep)
		return __verdict_drop(skb, PLINTH_DROP_FAIL_CLOSED);
	enforce = ep->flags & (dir == PLINTH_DIR_INGRESS ? PLINTH_EP_ENFORCE_INGRESS
							  : PLINTH_EP_ENFORCE_EGRESS);

	l3 = parse_packet(skb, &t);
	switch (l3) {
	case PLINTH_L3_IPV4:
		break;
	case PLINTH_L3_OTHER:
		metric_add(PLINTH_REASON_PASS_NON_IP, skb->len);
		return TC_ACT_OK;
	case PLINTH_L3_IPV6:
		return __handle6(skb, &g, ep, dir, enforce);
	case PLINTH_L3_FRAGMENT:
		if (enforce)
			return __verdict_drop(skb, PLINTH_DROP_FRAGMENT);
		metric_add(PLINTH_REASON_ALLOW_NO_POLICY, skb->len);
		return TC_ACT_OK;
	default:
		return __verdict_drop(skb, PLINTH_DROP_MALFORMED);
	}

	key.ep_id = ep->ep_id;
	key.saddr = t.saddr;
	key.daddr = t.daddr;
	key.sport = t.sport;
	key.dport = t.dport;
	key.proto = t.proto;
	key.dir = dir;
	key.pad = 0;
	if (salt) {
		key.sport = (__be16)salt;
		key.ep_id += salt & 0xffff0000;
	}

	/* The tick's time (clock.h): conntrack lifetimes are seconds, and the
	 * precise clock costs a clock-source read on every packet. */
	now = clock_now();
	ct = ct_lookup(&key, t.tcp_flags, now, &fwd);
	if (ct == PLINTH_CT_ESTABLISHED) {
		metric_add(PLINTH_REASON_ALLOW_ESTABLISHED, skb->len);
		return TC_ACT_OK;
	}
	if (ct == PLINTH_CT_REPLY) {
		metric_add(PLINTH_REASON_ALLOW_REPLY, skb->len);
		return TC_ACT_OK;
	}
	if (enforce && t.proto == IPPROTO_ICMP && icmp_related(skb, t.daddr, key.ep_id, dir, now)) {
		metric_add(PLINTH_REASON_ALLOW_RELATED, skb->len);
		return TC_ACT_OK;
	}

	if (ep->flags & PLINTH_EP_FAIL_CLOSED) {
		event_emit(&key, ifindex, 0, 0, 0, PLINTH_VERDICT_DENIED,
			   PLINTH_DROP_FAIL_CLOSED, 0, now);
		return __verdict_drop(skb, PLINTH_DROP_FAIL_CLOSED);
	}

	if (!enforce)
		return __allow_new(skb, &key, fwd, ifindex, 0, 0, 0, PLINTH_REASON_ALLOW_NO_POLICY, now);

	peer_id = ipcache_identity(g.ipcache, dir == PLINTH_DIR_INGRESS ? t.saddr : t.daddr);
	rule = policy_lookup(&g, ep, peer_id, dir, t.proto, t.dport);
	if (!rule) {
		event_emit(&key, ifindex, peer_id, 0, 0, PLINTH_VERDICT_DENIED,
			   PLINTH_DROP_POLICY, 0, now);
		return __verdict_drop(skb, PLINTH_DROP_POLICY);
	}

	{
		__u32 policy_id = rule->policy_id;
		__u16 rule_idx = rule->rule;
		struct plinth_counter *c = bpf_map_lookup_elem(&plinth_polstats, &policy_id);

		if (c) {
			c->packets++;
			c->bytes += skb->len;
		}
		return __allow_new(skb, &key, fwd, ifindex, peer_id, policy_id, rule_idx,
				   PLINTH_REASON_ALLOW_POLICY, now);
	}
}

/**
 * plinth_to_pod - tc egress of the host veth: the pod's ingress
 * @skb: the packet
 *
 * Returns: TC_ACT_OK or TC_ACT_SHOT.
 */
SEC("classifier")
int plinth_to_pod(struct __sk_buff *skb)
{
	return __handle(skb, PLINTH_DIR_INGRESS, 0);
}

/**
 * plinth_from_pod - tc ingress of the host veth: the pod's egress
 * @skb: the packet
 *
 * Returns: TC_ACT_OK or TC_ACT_SHOT.
 */
SEC("classifier")
int plinth_from_pod(struct __sk_buff *skb)
{
	return __handle(skb, PLINTH_DIR_EGRESS, 0);
}

/**
 * plinth_bench_nop - the cost of BPF_PROG_TEST_RUN itself, for benchmarks;
 * never attached
 * @skb: the packet
 *
 * Returns: TC_ACT_OK.
 */
SEC("classifier")
int plinth_bench_nop(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

/**
 * plinth_bench_new_flow - plinth_to_pod where every run is a new flow: the
 * packet's conntrack and event key change per run, so a repeated test run
 * measures real conntrack inserts; for benchmarks, never attached
 * @skb: the packet
 *
 * Returns: TC_ACT_OK or TC_ACT_SHOT.
 */
SEC("classifier")
int plinth_bench_new_flow(struct __sk_buff *skb)
{
	return __handle(skb, PLINTH_DIR_INGRESS, ++bench_flow_salt);
}

/**
 * plinth_clock_probe - samples jiffies and the coarse clock together into
 * plinth_clock_sample, for the loader's calibration of clock_now; never
 * attached
 * @skb: unused
 *
 * Returns: TC_ACT_OK.
 */
SEC("classifier")
int plinth_clock_probe(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct plinth_clock_sample *s = bpf_map_lookup_elem(&plinth_clock_sample, &zero);

	if (s) {
		s->jiffies = bpf_jiffies64();
		s->coarse_ns = bpf_ktime_get_coarse_ns();
	}
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual BSD/GPL";
