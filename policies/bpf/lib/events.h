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
 * @now: bpf_ktime_get_ns()
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
	e->ts_ns = now;
	e->saddr = key->saddr;
	e->daddr = key->daddr;
	e->sport = key->sport;
	e->dport = key->dport;
	e->ep_id = key->ep_id;
	e->ifindex = ifindex;
	e->peer_id = peer_id;
	e->policy_id = policy_id;
	e->rule = rule;
	e->proto = key->proto;
	e->dir = key->dir;
	e->verdict = verdict;
	e->reason = reason;
	e->flags = flags;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	bpf_ringbuf_submit(e, 0);
}

/**
 * event_due - the per-flow event rate limit of flows without a conntrack
 * entry (denied, or allowed with conntrack full)
 * @key: the flow
 * @now: bpf_ktime_get_ns()
 *
 * Returns: 1 when an event is due (and records it), else 0.
 */
static __always_inline int event_due(const struct plinth_ct_key *key, __u64 now)
{
	__u64 *last = bpf_map_lookup_elem(&plinth_evrl, key);

	if (last) {
		if (now - *last < event_interval_ns)
			return 0;
		*last = now;
		return 1;
	}
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

#endif
