/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of the active generation, fetched once per packet. */
#ifndef __PLINTH_GEN_H
#define __PLINTH_GEN_H

#include <bpf/bpf_helpers.h>
#include "gen_map.h"

/* Inner maps of one generation. */
struct plinth_gen_maps {
	void *endpts;
	void *ipcache;
	void *policy;
	void *ranges;
	__u32 slot; /* for the maps fetched later (gen_ipcache6) */
};

/**
 * gen_maps - the inner maps of the active generation
 * @g: filled with the four inner maps
 *
 * All four come from one read of plinth_gen, back to back, so a packet never
 * mixes generations.
 *
 * Returns: 0, or -1 when a generation is incomplete (never loaded: fail closed).
 */
static __always_inline int gen_maps(struct plinth_gen_maps *g)
{
	__u32 zero = 0, slot = 0;
	__u32 *active = bpf_map_lookup_elem(&plinth_gen, &zero);

	if (active)
		slot = *active & (PLINTH_GENERATIONS - 1);
	g->endpts = bpf_map_lookup_elem(&plinth_ep_gen, &slot);
	g->ipcache = bpf_map_lookup_elem(&plinth_ipc_gen, &slot);
	g->policy = bpf_map_lookup_elem(&plinth_pol_gen, &slot);
	g->ranges = bpf_map_lookup_elem(&plinth_rng_gen, &slot);
	g->slot = slot;
	if (!g->endpts || !g->ipcache || !g->policy || !g->ranges)
		return -1;
	return 0;
}

/**
 * gen_ipcache6 - the IPv6 ipcache of the generation @g belongs to
 * @g: filled by gen_maps
 *
 * Fetched only for IPv6 packets, so IPv4 packets pay nothing for it; from the
 * slot gen_maps read, so the packet stays within one generation.
 *
 * Returns: the inner map, or NULL when the slot has none (fail closed).
 */
static __always_inline void *gen_ipcache6(const struct plinth_gen_maps *g)
{
	__u32 slot = g->slot;

	return bpf_map_lookup_elem(&plinth_ipc6_gen, &slot);
}

#endif
