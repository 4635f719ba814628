/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of the active generation, fetched once per packet. */
#ifndef __PLINTH_GEN_H
#define __PLINTH_GEN_H

#include <bpf/bpf_helpers.h>
#include "gen_map.h"

/* Inner maps of one generation. */
struct plinth_gen_maps {
	void *ep_slots; /* endpoints by ifindex below PLINTH_EP_SLOTS */
	void *ipcache;
	void *policy;
	void *ranges;
	__u32 slot; /* for the maps fetched later (gen_ipcache6) */
};

/**
 * gen_maps - the inner maps of the active generation
 * @g: filled with the four inner maps
 *
 * All come from one read of plinth_gen, back to back, so a packet never
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
	g->ep_slots = bpf_map_lookup_elem(&plinth_eps_gen, &slot);
	g->ipcache = bpf_map_lookup_elem(&plinth_ipc_gen, &slot);
	g->policy = bpf_map_lookup_elem(&plinth_pol_gen, &slot);
	g->ranges = bpf_map_lookup_elem(&plinth_rng_gen, &slot);
	g->slot = slot;
	if (!g->ep_slots || !g->ipcache || !g->policy || !g->ranges)
		return -1;
	return 0;
}

/**
 * gen_endpoint - the endpoint of host-side interface @ifindex in generation @g
 * @g: filled by gen_maps
 * @ifindex: the packet's interface
 *
 * An ifindex below PLINTH_EP_SLOTS is an index into the generation's slots
 * (the verifier inlines the lookup); a larger one (a node whose interface
 * numbers have grown past it) is looked up in the generation's endpoint hash,
 * from the slot gen_maps read.
 *
 * Returns: the endpoint, or NULL when there is none (fail closed).
 */
static __always_inline struct plinth_endpoint *gen_endpoint(const struct plinth_gen_maps *g,
							    __u32 ifindex)
{
	struct plinth_endpoint *ep = bpf_map_lookup_elem(g->ep_slots, &ifindex);
	__u32 slot = g->slot;
	void *far;

	if (ep)
		return (ep->flags & PLINTH_EP_PRESENT) ? ep : NULL;
	far = bpf_map_lookup_elem(&plinth_ep_gen, &slot);
	return far ? bpf_map_lookup_elem(far, &ifindex) : NULL;
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
