/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Conntrack maps, one per address family. */
#ifndef __PLINTH_CT_MAP_H
#define __PLINTH_CT_MAP_H

#include <bpf/bpf_helpers.h>
#include "types.h"

#define PLINTH_CT4_MAX 262144

/* Allowed IPv4 flows per endpoint and direction: replies and established
 * packets pass on a hit without a policy lookup. A preallocated hash, not an
 * LRU: an insert pops a per-CPU free list instead of taking the LRU's locks.
 * Nothing is evicted: the agent deletes expired entries (load/ct_gc.rs), and
 * when the table is full a new flow is still decided by the rules, only not
 * remembered (counter ct-full, events flagged untracked). Replaces the LRU
 * plinth_ct (retired pin). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct plinth_ct_key);
	__type(value, struct plinth_ct_value);
	__uint(max_entries, PLINTH_CT4_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_ct4 SEC(".maps");

#define PLINTH_CT6_MAX 262144

/* Allowed IPv6 flows, as plinth_ct4 (the same lifetimes, collection by the
 * agent, and behaviour when full). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct plinth_ct6_key);
	__type(value, struct plinth_ct_value);
	__uint(max_entries, PLINTH_CT6_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_ct6 SEC(".maps");

#endif
