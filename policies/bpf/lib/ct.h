/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Conntrack lookups and inserts. */
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
 * @now: bpf_ktime_get_ns()
 *
 * A bare SYN never counts as established: a new connection on a reused
 * tuple is decided by the rules in force now, not by an old entry.
 *
 * Returns: PLINTH_CT_ESTABLISHED, PLINTH_CT_REPLY or PLINTH_CT_NEW.
 */
static __always_inline int ct_lookup(const struct plinth_ct_key *key, __u8 tcp_flags, __u64 now)
{
	struct plinth_ct_key rev;
	struct plinth_ct_value *v;
	int syn = (tcp_flags & (PLINTH_TCP_SYN | PLINTH_TCP_ACK)) == PLINTH_TCP_SYN;

	if (!syn) {
		v = bpf_map_lookup_elem(&plinth_ct, key);
		if (v && __ct_hit(v, key->proto, tcp_flags, now))
			return PLINTH_CT_ESTABLISHED;
	}

	rev.ep_id = key->ep_id;
	rev.saddr = key->daddr;
	rev.daddr = key->saddr;
	rev.sport = key->dport;
	rev.dport = key->sport;
	rev.proto = key->proto;
	rev.dir = key->dir == PLINTH_DIR_INGRESS ? PLINTH_DIR_EGRESS : PLINTH_DIR_INGRESS;
	rev.pad = 0;
	v = bpf_map_lookup_elem(&plinth_ct, &rev);
	if (v && __ct_hit(v, key->proto, tcp_flags, now))
		return PLINTH_CT_REPLY;
	return PLINTH_CT_NEW;
}

/**
 * ct_create - remember an allowed new flow
 * @key: the flow's tuple
 * @policy_id: the deciding policy (0: none)
 * @rule: the deciding rule
 * @now: bpf_ktime_get_ns()
 *
 * Returns: 0, or a negative error from the map update.
 */
static __always_inline long ct_create(const struct plinth_ct_key *key, __u32 policy_id,
				      __u16 rule, __u64 now)
{
	struct plinth_ct_value v = {
		.expires_ns = now + __ct_lifetime(key->proto),
		.policy_id = policy_id,
		.rule = rule,
	};

	return bpf_map_update_elem(&plinth_ct, key, &v, BPF_ANY);
}

#endif
