/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow events to user space through a ring buffer, rate-limited per flow. */
#ifndef __PLINTH_EVENTS_H
#define __PLINTH_EVENTS_H

#include <bpf/bpf_helpers.h>
#include "types.h"
#include "drop_reasons.h"
#include "policy_map.h"

/* Minimum gap between two events of one flow; set by the loader. */
volatile const __u64 event_interval_ns = 1000000000ULL;

/* Verdicts of new flows for `plinth flows`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_events SEC(".maps");

/* Last event time per flow without a conntrack entry (denied, or conntrack
 * full): a flood of one flow yields one event a gap. Allowed flows keep the
 * time in their conntrack entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct plinth_ct_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_evrl SEC(".maps");

/* IPv6 counterpart of plinth_evrl. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct plinth_ct6_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_evrl6 SEC(".maps");

/**
 * metric_add - count a packet under a reason
 * @reason: a PLINTH_REASON_, PLINTH_DROP_ or PLINTH_ERR_ code
 * @len: packet length
 */
static __always_inline void metric_add(__u32 reason, __u32 len)
{
	struct plinth_counter *c = bpf_map_lookup_elem(&plinth_metrics, &reason);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

/* Everything of an event but the addresses, then submit it. */
static __always_inline void __event_submit(struct plinth_flow_event *e, __u32 ep_id, __be16 sport,
					   __be16 dport, __u8 proto, __u8 dir, __u8 family,
					   __u32 ifindex, __u32 peer_id, __u32 policy_id,
					   __u16 rule, __u8 verdict, __u8 reason, __u8 flags,
					   __u64 now)
{
	e->ts_ns = bpf_ktime_get_ns(); /* precise, unlike the tick-resolution @now of the verdict */
	e->sport = sport;
	e->dport = dport;
	e->ep_id = ep_id;
	e->ifindex = ifindex;
	e->peer_id = peer_id;
	e->policy_id = policy_id;
	e->rule = rule;
	e->proto = proto;
	e->dir = dir;
	e->verdict = verdict;
	e->reason = reason;
	e->flags = flags;
	e->family = family;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	bpf_ringbuf_submit(e, 0);
}

/**
 * event_send - send a flow event
 * @key: the flow
 * @ifindex: interface the packet was seen on
 * @peer_id: identity of the remote address (0 when not looked up)
 * @policy_id: deciding policy (0: none)
 * @rule: deciding rule
 * @verdict: PLINTH_VERDICT_
 * @reason: PLINTH_REASON_ or PLINTH_DROP_
 * @flags: PLINTH_EVENT_
 * @now: clock_now() (clock.h)
 */
static __always_inline void event_send(const struct plinth_ct_key *key, __u32 ifindex,
				       __u32 peer_id, __u32 policy_id, __u16 rule,
				       __u8 verdict, __u8 reason, __u8 flags, __u64 now)
{
	struct plinth_flow_event *e = bpf_ringbuf_reserve(&plinth_events, sizeof(*e), 0);

	if (!e) {
		metric_add(PLINTH_ERR_EVENTS_LOST, 0);
		return;
	}
	e->saddr[0] = key->saddr;
	e->saddr[1] = 0;
	e->saddr[2] = 0;
	e->saddr[3] = 0;
	e->daddr[0] = key->daddr;
	e->daddr[1] = 0;
	e->daddr[2] = 0;
	e->daddr[3] = 0;
	__event_submit(e, key->ep_id, key->sport, key->dport, key->proto, key->dir,
		       PLINTH_FAMILY_IPV4, ifindex, peer_id, policy_id, rule, verdict, reason, flags,
		       now);
}

/**
 * event_send6 - event_send for an IPv6 flow; arguments as event_send
 */
static __always_inline void event_send6(const struct plinth_ct6_key *key, __u32 ifindex,
					__u32 peer_id, __u32 policy_id, __u16 rule,
					__u8 verdict, __u8 reason, __u8 flags, __u64 now)
{
	struct plinth_flow_event *e = bpf_ringbuf_reserve(&plinth_events, sizeof(*e), 0);

	if (!e) {
		metric_add(PLINTH_ERR_EVENTS_LOST, 0);
		return;
	}
	__builtin_memcpy(e->saddr, key->saddr, 16);
	__builtin_memcpy(e->daddr, key->daddr, 16);
	__event_submit(e, key->ep_id, key->sport, key->dport, key->proto, key->dir,
		       PLINTH_FAMILY_IPV6, ifindex, peer_id, policy_id, rule, verdict, reason, flags,
		       now);
}

/* The rate limit of flows without a conntrack entry, given the time of the
 * flow's last event in plinth_evrl or plinth_evrl6: records @now when due. */
static __always_inline int __event_due(__u64 *last, __u64 now)
{
	if (now - *last < event_interval_ns)
		return 0;
	*last = now;
	return 1;
}

/**
 * event_due - the per-flow event rate limit of flows without a conntrack
 * entry (denied, or allowed with conntrack full)
 * @key: the flow
 * @now: clock_now() (clock.h)
 *
 * Returns: 1 when an event is due (and records it), else 0.
 */
static __always_inline int event_due(const struct plinth_ct_key *key, __u64 now)
{
	__u64 *last = bpf_map_lookup_elem(&plinth_evrl, key);

	if (last)
		return __event_due(last, now);
	bpf_map_update_elem(&plinth_evrl, key, &now, BPF_ANY);
	return 1;
}

/**
 * event_emit - send a flow event unless this flow sent one recently
 * (plinth_evrl); arguments as event_send
 */
static __always_inline void event_emit(const struct plinth_ct_key *key, __u32 ifindex,
				       __u32 peer_id, __u32 policy_id, __u16 rule,
				       __u8 verdict, __u8 reason, __u8 flags, __u64 now)
{
	if (event_due(key, now))
		event_send(key, ifindex, peer_id, policy_id, rule, verdict, reason, flags, now);
}

/**
 * event_emit6 - event_emit for an IPv6 flow (plinth_evrl6); arguments as
 * event_send
 */
static __always_inline void event_emit6(const struct plinth_ct6_key *key, __u32 ifindex,
					__u32 peer_id, __u32 policy_id, __u16 rule,
					__u8 verdict, __u8 reason, __u8 flags, __u64 now)
{
	__u64 *last = bpf_map_lookup_elem(&plinth_evrl6, key);

	if (last) {
		if (!__event_due(last, now))
			return;
	} else {
		bpf_map_update_elem(&plinth_evrl6, key, &now, BPF_ANY);
	}
	event_send6(key, ifindex, peer_id, policy_id, rule, verdict, reason, flags, now);
}

#endif
