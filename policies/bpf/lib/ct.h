/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Conntrack lookups and inserts, IPv4 (plinth_ct4) and IPv6 (plinth_ct6). */
#ifndef __PLINTH_CT_H
#define __PLINTH_CT_H

#include <bpf/bpf_helpers.h>
#include "types.h"
#include "ct_map.h"
#include "parse.h"

/* Lifetimes, set by the loader (EbpfLoader::override_global). */
volatile const __u64 ct_lifetime_tcp_ns = 21600ULL * 1000000000ULL;
volatile const __u64 ct_lifetime_other_ns = 60ULL * 1000000000ULL;
/* After a FIN or RST: long enough for the close handshake. */
volatile const __u64 ct_lifetime_close_ns = 10ULL * 1000000000ULL;

#define PLINTH_CT_NEW 0
#define PLINTH_CT_ESTABLISHED 1
#define PLINTH_CT_REPLY 2

static __always_inline __u64 __ct_lifetime(__u8 proto)
{
	return proto == IPPROTO_TCP ? ct_lifetime_tcp_ns : ct_lifetime_other_ns;
}

static __always_inline int __ct_hit(struct plinth_ct_value *v, __u8 proto, __u8 tcp_flags,
				    __u64 now)
{
	__u64 lifetime = __ct_lifetime(proto);

	if (v->expires_ns < now)
		return 0;
	if (tcp_flags & (PLINTH_TCP_FIN | PLINTH_TCP_RST)) {
		/* Closing: keep the entry only for the rest of the handshake. */
		if (v->expires_ns > now + ct_lifetime_close_ns)
			v->expires_ns = now + ct_lifetime_close_ns;
		return 1;
	}
	/* Refresh at most once a second: a write per packet costs. */
	if (now + lifetime - v->expires_ns > 1000000000ULL)
		v->expires_ns = now + lifetime;
	return 1;
}

/**
 * ct_lookup - classify a packet against conntrack
 * @key: the packet's tuple for its endpoint and direction
 * @tcp_flags: TCP flags (0 for other protocols)
 * @now: clock_now() (clock.h)
 * @fwd: set to the flow's own entry when one exists, also an expired one:
 *       a new flow's verdict rewrites it in place (ct_create) instead of a
 *       second map operation; NULL for a bare SYN (not looked up)
 *
 * A bare SYN is not looked up at all: it never counts as established (a new
 * connection on a reused tuple is decided by the rules in force now, not by
 * an old entry), nor as a reply (a SYN opens a connection in its own
 * direction, which the rules of that direction decide; a TCP simultaneous
 * open is decided by the rules too, on both sides). Most SYNs open flows
 * conntrack has never seen: ct_create inserts first and finds an old entry
 * of a reused tuple only when the insert says it exists, which walks the
 * hash bucket once instead of twice.
 *
 * Returns: PLINTH_CT_ESTABLISHED, PLINTH_CT_REPLY or PLINTH_CT_NEW.
 */
static __always_inline int ct_lookup(const struct plinth_ct_key *key, __u8 tcp_flags, __u64 now,
				     struct plinth_ct_value **fwd)
{
	struct plinth_ct_key rev;
	struct plinth_ct_value *v;
	int syn = (tcp_flags & (PLINTH_TCP_SYN | PLINTH_TCP_ACK)) == PLINTH_TCP_SYN;

	*fwd = NULL;
	if (syn)
		return PLINTH_CT_NEW;
	v = bpf_map_lookup_elem(&plinth_ct4, key);
	*fwd = v;
	if (v && __ct_hit(v, key->proto, tcp_flags, now))
		return PLINTH_CT_ESTABLISHED;

	rev.ep_id = key->ep_id;
	rev.saddr = key->daddr;
	rev.daddr = key->saddr;
	rev.sport = key->dport;
	rev.dport = key->sport;
	rev.proto = key->proto;
	rev.dir = key->dir == PLINTH_DIR_INGRESS ? PLINTH_DIR_EGRESS : PLINTH_DIR_INGRESS;
	rev.pad = 0;
	v = bpf_map_lookup_elem(&plinth_ct4, &rev);
	if (v && __ct_hit(v, key->proto, tcp_flags, now))
		return PLINTH_CT_REPLY;
	return PLINTH_CT_NEW;
}

#define PLINTH_CT_CREATED 0  /* a new entry: the flow's first event is due */
#define PLINTH_CT_REWRITTEN 1 /* the flow's entry existed: its rate limit decides */

/**
 * ct_create - remember an allowed new flow
 * @key: the flow's tuple
 * @fwd: the flow's existing entry from ct_lookup, or NULL; set to the entry
 *       rewritten when the insert finds one
 * @policy_id: the deciding policy (0: none)
 * @rule: the deciding rule
 * @now: clock_now() (clock.h)
 *
 * An existing entry is rewritten in place; otherwise one insert, and when
 * the flow has an entry after all (a SYN on a reused tuple, or a concurrent
 * insert on another CPU) that entry is rewritten.
 *
 * Returns: PLINTH_CT_CREATED, PLINTH_CT_REWRITTEN, or a negative error of
 * the insert (-E2BIG: the table is full).
 */
static __always_inline long ct_create(const struct plinth_ct_key *key,
				      struct plinth_ct_value **fwd, __u32 policy_id, __u16 rule,
				      __u64 now)
{
	struct plinth_ct_value v = {
		.expires_ns = now + __ct_lifetime(key->proto),
		.last_event_ns = now,
		.policy_id = policy_id,
		.rule = rule,
	};
	long err;

	if (!*fwd) {
		err = bpf_map_update_elem(&plinth_ct4, key, &v, BPF_NOEXIST);
		if (err != -17 /* EEXIST */)
			return err;
		/* A reused tuple (a SYN is not looked up), or a concurrent
		 * insert of the same flow on another CPU. */
		*fwd = bpf_map_lookup_elem(&plinth_ct4, key);
		if (!*fwd)
			return PLINTH_CT_CREATED;
	}
	(*fwd)->expires_ns = v.expires_ns;
	(*fwd)->policy_id = policy_id;
	(*fwd)->rule = rule;
	return PLINTH_CT_REWRITTEN;
}

/**
 * ct_lookup6 - ct_lookup for IPv6 (plinth_ct6)
 * @key: the packet's tuple for its endpoint and direction
 * @tcp_flags: TCP flags (0 for other protocols)
 * @now: clock_now() (clock.h)
 * @fwd: as ct_lookup
 *
 * Returns: PLINTH_CT_ESTABLISHED, PLINTH_CT_REPLY or PLINTH_CT_NEW.
 */
static __always_inline int ct_lookup6(const struct plinth_ct6_key *key, __u8 tcp_flags, __u64 now,
				      struct plinth_ct_value **fwd)
{
	struct plinth_ct6_key rev;
	struct plinth_ct_value *v;
	int syn = (tcp_flags & (PLINTH_TCP_SYN | PLINTH_TCP_ACK)) == PLINTH_TCP_SYN;

	*fwd = NULL;
	if (syn)
		return PLINTH_CT_NEW;
	v = bpf_map_lookup_elem(&plinth_ct6, key);
	*fwd = v;
	if (v && __ct_hit(v, key->proto, tcp_flags, now))
		return PLINTH_CT_ESTABLISHED;

	rev.ep_id = key->ep_id;
	__builtin_memcpy(rev.saddr, key->daddr, 16);
	__builtin_memcpy(rev.daddr, key->saddr, 16);
	rev.sport = key->dport;
	rev.dport = key->sport;
	rev.proto = key->proto;
	rev.dir = key->dir == PLINTH_DIR_INGRESS ? PLINTH_DIR_EGRESS : PLINTH_DIR_INGRESS;
	rev.pad = 0;
	v = bpf_map_lookup_elem(&plinth_ct6, &rev);
	if (v && __ct_hit(v, key->proto, tcp_flags, now))
		return PLINTH_CT_REPLY;
	return PLINTH_CT_NEW;
}

/**
 * ct_create6 - ct_create for IPv6 (plinth_ct6); arguments and return values
 * as ct_create
 */
static __always_inline long ct_create6(const struct plinth_ct6_key *key,
				       struct plinth_ct_value **fwd, __u32 policy_id, __u16 rule,
				       __u64 now)
{
	struct plinth_ct_value v = {
		.expires_ns = now + __ct_lifetime(key->proto),
		.last_event_ns = now,
		.policy_id = policy_id,
		.rule = rule,
	};
	long err;

	if (!*fwd) {
		err = bpf_map_update_elem(&plinth_ct6, key, &v, BPF_NOEXIST);
		if (err != -17 /* EEXIST */)
			return err;
		/* A reused tuple (a SYN is not looked up), or a concurrent
		 * insert of the same flow on another CPU. */
		*fwd = bpf_map_lookup_elem(&plinth_ct6, key);
		if (!*fwd)
			return PLINTH_CT_CREATED;
	}
	(*fwd)->expires_ns = v.expires_ns;
	(*fwd)->policy_id = policy_id;
	(*fwd)->rule = rule;
	return PLINTH_CT_REWRITTEN;
}

/**
 * ct_event_due - the per-flow event rate limit kept in the flow's entry
 * @v: the flow's entry
 * @interval: minimum gap between two events of the flow
 * @now: clock_now() (clock.h)
 *
 * Returns: 1 when an event is due (and records it), else 0.
 */
static __always_inline int ct_event_due(struct plinth_ct_value *v, __u64 interval, __u64 now)
{
	if (now - v->last_event_ns < interval)
		return 0;
	v->last_event_ns = now;
	return 1;
}

#endif
