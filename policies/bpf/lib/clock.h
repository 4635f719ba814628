/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The verdict's clock: CLOCK_MONOTONIC in ns at the tick's resolution, read
 * from jiffies. */
#ifndef __PLINTH_CLOCK_H
#define __PLINTH_CLOCK_H

#include <bpf/bpf_helpers.h>
#include "types.h"

/* How jiffies map to CLOCK_MONOTONIC ns; written by the loader after it
 * measured both (plinth_clock_probe) and before any program is attached.
 * Not pinned: every loaded object has its own. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct plinth_clock);
	__uint(max_entries, 1);
} plinth_clock SEC(".maps");

/* One sample of both clocks, for the loader (plinth_clock_probe). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct plinth_clock_sample);
	__uint(max_entries, 1);
} plinth_clock_sample SEC(".maps");

/**
 * clock_now - CLOCK_MONOTONIC now, in ns, at the tick's resolution
 *
 * jiffies * tick + offset: bpf_jiffies64() is inlined by the verifier (one
 * load), where bpf_ktime_get_coarse_ns() is a helper call; the time base is
 * that of bpf_ktime_get_coarse_ns(), within a tick, so conntrack expiry times
 * stay comparable with the agent's CLOCK_MONOTONIC and with entries written
 * by earlier versions. Until the loader has set the clock (never on a
 * packet: it sets it before attaching), the coarse clock itself.
 *
 * Returns: ns.
 */
static __always_inline __u64 clock_now(void)
{
	__u32 zero = 0;
	const struct plinth_clock *c = bpf_map_lookup_elem(&plinth_clock, &zero);

	if (c && c->tick_ns)
		return bpf_jiffies64() * c->tick_ns + c->offset_ns;
	return bpf_ktime_get_coarse_ns();
}

#endif
