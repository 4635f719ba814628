// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Layout of every shared struct, for the Rust ABI test (policies/src/abi.rs):
 * per struct its size, then the offset of each field in declaration order.
 * Not loaded into the kernel. */
#include <stddef.h>
#include "lib/types.h"

#define S(t) sizeof(struct t)
#define O(t, f) offsetof(struct t, f)

__attribute__((section(".plinth_abi"), used))
const unsigned int plinth_abi_layout[] = {
	S(plinth_ipcache_key), O(plinth_ipcache_key, prefixlen), O(plinth_ipcache_key, addr),
	S(plinth_ipcache6_key), O(plinth_ipcache6_key, prefixlen), O(plinth_ipcache6_key, addr),
	S(plinth_ipcache_value), O(plinth_ipcache_value, identity), O(plinth_ipcache_value, flags),
	S(plinth_endpoint), O(plinth_endpoint, ep_id), O(plinth_endpoint, flags),
	S(plinth_policy_key), O(plinth_policy_key, ep_id), O(plinth_policy_key, peer_id),
	O(plinth_policy_key, dir), O(plinth_policy_key, proto), O(plinth_policy_key, dport),
	S(plinth_policy_value), O(plinth_policy_value, policy_id), O(plinth_policy_value, rule),
	O(plinth_policy_value, flags),
	S(plinth_range_key), O(plinth_range_key, prefixlen), O(plinth_range_key, ep_id),
	O(plinth_range_key, peer_id), O(plinth_range_key, dir), O(plinth_range_key, proto),
	O(plinth_range_key, dport),
	S(plinth_ct_key), O(plinth_ct_key, ep_id), O(plinth_ct_key, saddr), O(plinth_ct_key, daddr),
	O(plinth_ct_key, sport), O(plinth_ct_key, dport), O(plinth_ct_key, proto),
	O(plinth_ct_key, dir), O(plinth_ct_key, pad),
	S(plinth_ct6_key), O(plinth_ct6_key, ep_id), O(plinth_ct6_key, saddr), O(plinth_ct6_key, daddr),
	O(plinth_ct6_key, sport), O(plinth_ct6_key, dport), O(plinth_ct6_key, proto),
	O(plinth_ct6_key, dir), O(plinth_ct6_key, pad),
	S(plinth_ct_value), O(plinth_ct_value, expires_ns), O(plinth_ct_value, last_event_ns),
	O(plinth_ct_value, policy_id),
	O(plinth_ct_value, rule), O(plinth_ct_value, flags), O(plinth_ct_value, pad),
	S(plinth_counter), O(plinth_counter, packets), O(plinth_counter, bytes),
	S(plinth_clock), O(plinth_clock, tick_ns), O(plinth_clock, offset_ns),
	S(plinth_clock_sample), O(plinth_clock_sample, jiffies), O(plinth_clock_sample, coarse_ns),
	S(plinth_flow_event), O(plinth_flow_event, ts_ns), O(plinth_flow_event, saddr),
	O(plinth_flow_event, daddr), O(plinth_flow_event, sport), O(plinth_flow_event, dport),
	O(plinth_flow_event, ep_id), O(plinth_flow_event, ifindex), O(plinth_flow_event, peer_id),
	O(plinth_flow_event, policy_id), O(plinth_flow_event, rule), O(plinth_flow_event, proto),
	O(plinth_flow_event, dir), O(plinth_flow_event, verdict), O(plinth_flow_event, reason),
	O(plinth_flow_event, flags), O(plinth_flow_event, family), O(plinth_flow_event, pad),
};
