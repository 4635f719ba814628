/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Policy verdict for a new flow: one hash lookup per peer (the peer, and the
 * wildcard peer only if the endpoint has wildcard-peer rules), three when
 * the endpoint has port or protocol wildcards; at most six. Two LPM lookups
 * more when the endpoint has endPort ranges in this direction. */
#ifndef __PLINTH_POLICY_H
#define __PLINTH_POLICY_H

#include <bpf/bpf_helpers.h>
#include "types.h"
#include "drop_reasons.h"
#include "policy_map.h"
#include "gen.h"

static __always_inline struct plinth_policy_value *
__policy_lookup_peer(void *policy, __u32 ep_id, __u32 peer, __u8 dir, __u8 proto, __be16 dport, int wild)
{
	struct plinth_policy_key key = {
		.ep_id = ep_id, .peer_id = peer, .dir = dir, .proto = proto, .dport = dport,
	};
	struct plinth_policy_value *v;

	v = bpf_map_lookup_elem(policy, &key);
	if (v || !wild)
		return v;
	if (dport) {
		key.dport = 0;
		v = bpf_map_lookup_elem(policy, &key);
		if (v)
			return v;
	}
	key.proto = 0;
	key.dport = 0;
	return bpf_map_lookup_elem(policy, &key);
}

static __always_inline struct plinth_policy_value *
__policy_lookup_range(void *ranges, __u32 ep_id, __u32 peer, __u8 dir, __u8 proto, __be16 dport)
{
	struct plinth_range_key key = {
		.prefixlen = 96, .ep_id = ep_id, .peer_id = peer, .dir = dir,
		.proto = proto, .dport = dport,
	};

	return bpf_map_lookup_elem(ranges, &key);
}

/**
 * policy_lookup - find the rule that allows a new flow
 * @g: the generation's maps (gen.h)
 * @ep: the local endpoint
 * @peer: identity of the remote address
 * @dir: PLINTH_DIR_INGRESS or PLINTH_DIR_EGRESS
 * @proto: IP protocol
 * @dport: destination port, network order (0 without ports)
 *
 * Returns: the allowing rule, or NULL (default deny).
 */
static __always_inline struct plinth_policy_value *
policy_lookup(const struct plinth_gen_maps *g, const struct plinth_endpoint *ep, __u32 peer, __u8 dir, __u8 proto, __be16 dport)
{
	struct plinth_policy_value *v;
	int in = dir == PLINTH_DIR_INGRESS;
	__u32 ranges = in ? PLINTH_EP_RANGES_INGRESS : PLINTH_EP_RANGES_EGRESS;
	__u32 any = in ? PLINTH_EP_ANY_PEER_INGRESS : PLINTH_EP_ANY_PEER_EGRESS;
	int wild = !!(ep->flags & (in ? PLINTH_EP_WILD_PORT_INGRESS : PLINTH_EP_WILD_PORT_EGRESS));

	v = __policy_lookup_peer(g->policy, ep->ep_id, peer, dir, proto, dport, wild);
	if (v)
		return v;
	if (ep->flags & any) {
		v = __policy_lookup_peer(g->policy, ep->ep_id, PLINTH_ID_ANY, dir, proto, dport, wild);
		if (v)
			return v;
	}
	if (!(ep->flags & ranges) || !dport)
		return NULL;
	v = __policy_lookup_range(g->ranges, ep->ep_id, peer, dir, proto, dport);
	if (v)
		return v;
	return __policy_lookup_range(g->ranges, ep->ep_id, PLINTH_ID_ANY, dir, proto, dport);
}

#endif
