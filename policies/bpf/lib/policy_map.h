/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy maps: exact and wildcard rules in a hash, endPort ranges in an LPM. */
#ifndef __PLINTH_POLICY_MAP_H
#define __PLINTH_POLICY_MAP_H

#include <bpf/bpf_helpers.h>
#include "types.h"

/* Which endpoint endpoints exist on this node, keyed by host-side ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct plinth_endpoint);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_endpts SEC(".maps");

/* Allowed (endpoint, peer identity, direction, protocol, port). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct plinth_policy_key);
	__type(value, struct plinth_policy_value);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_policy SEC(".maps");

/* endPort ranges, split into port prefixes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct plinth_range_key);
	__type(value, struct plinth_policy_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_polrange SEC(".maps");

/* New flows allowed per policy id (index 0: allowed without policy). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct plinth_counter);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_polstats SEC(".maps");

/* Packets and bytes per verdict reason (drop_reasons.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct plinth_counter);
	__uint(max_entries, PLINTH_METRICS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_metrics SEC(".maps");

#endif
