/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy counters. The rule maps (exact and wildcard rules in a hash, endPort
 * ranges in an LPM) belong to a generation: gen_map.h. */
#ifndef __PLINTH_POLICY_MAP_H
#define __PLINTH_POLICY_MAP_H

#include <bpf/bpf_helpers.h>
#include "types.h"

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
