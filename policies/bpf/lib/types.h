/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Key and value layouts shared by every Plinth map and the Rust mirror in
 * policies/src/abi.rs. Each struct is fixed-width with explicit padding; the
 * layout comment gives byte offsets. Never reuse a retired field: append. */
#ifndef __PLINTH_TYPES_H
#define __PLINTH_TYPES_H

#include <linux/types.h>

/* Directions, seen from the pod. */
#define PLINTH_DIR_INGRESS 1 /* towards the pod: tc egress of the host veth */
#define PLINTH_DIR_EGRESS 2  /* from the pod: tc ingress of the host veth */

/* Reserved identities. Allocated identities start at 256. */
#define PLINTH_ID_ANY 0   /* wildcard peer in policy keys */
#define PLINTH_ID_WORLD 2 /* an address no ipcache prefix covers */

/* Endpoint flags. */
#define PLINTH_EP_ENFORCE_INGRESS (1U << 0)
#define PLINTH_EP_ENFORCE_EGRESS (1U << 1)
#define PLINTH_EP_FAIL_CLOSED (1U << 2) /* a map write for this endpoint failed */
#define PLINTH_EP_RANGES_INGRESS (1U << 3) /* endPort rules exist: consult plinth_polrange */
#define PLINTH_EP_RANGES_EGRESS (1U << 4)
/* Wildcard-peer entries exist in this direction: look up peer 0 too. */
#define PLINTH_EP_ANY_PEER_INGRESS (1U << 5)
#define PLINTH_EP_ANY_PEER_EGRESS (1U << 6)
/* Entries with port 0 or protocol 0 exist in this direction. */
#define PLINTH_EP_WILD_PORT_INGRESS (1U << 7)
#define PLINTH_EP_WILD_PORT_EGRESS (1U << 8)
/* Set in plinth_endpts_slots entries only: the slot holds an endpoint (the
 * array has no absent entries; a zero entry is an empty slot). */
#define PLINTH_EP_PRESENT (1U << 31)

/* Verdicts in flow events. */
#define PLINTH_VERDICT_ALLOWED 1
#define PLINTH_VERDICT_DENIED 2

/* ipcache LPM key: 0 prefixlen(u32) 4 addr(be32); 8 bytes. */
struct plinth_ipcache_key {
	__u32 prefixlen;
	__be32 addr;
};

/* IPv6 ipcache LPM key: 0 prefixlen(u32) 4 addr(16 bytes, network order);
 * 20 bytes. */
struct plinth_ipcache6_key {
	__u32 prefixlen;
	__be32 addr[4];
};

/* ipcache value (both families): 0 identity 4 flags (reserved, 0); 8 bytes. */
struct plinth_ipcache_value {
	__u32 identity;
	__u32 flags;
};

/* endpoint value, keyed by host-side ifindex (u32):
 * 0 ep_id 4 flags; 8 bytes. */
struct plinth_endpoint {
	__u32 ep_id;
	__u32 flags;
};

/* policy hash key: 0 ep_id 4 peer_id 8 dir 9 proto 10 dport(be16); 12 bytes.
 * proto 0 = any protocol and any port; dport 0 = any port of proto. */
struct plinth_policy_key {
	__u32 ep_id;
	__u32 peer_id;
	__u8 dir;
	__u8 proto;
	__be16 dport;
};

/* policy value: 0 policy_id 4 rule 6 flags (reserved, 0); 8 bytes. */
struct plinth_policy_value {
	__u32 policy_id;
	__u16 rule;
	__u16 flags;
};

/* port-range LPM key (endPort): 0 prefixlen 4 ep_id 8 peer_id 12 dir 13 proto
 * 14 dport(be16); 16 bytes. prefixlen counts bits after prefixlen: 80 fixes
 * ep, peer, dir and proto; 80+k fixes the top k bits of the port. */
struct plinth_range_key {
	__u32 prefixlen;
	__u32 ep_id;
	__u32 peer_id;
	__u8 dir;
	__u8 proto;
	__be16 dport;
};

/* conntrack key, per endpoint and direction, in the flow's original
 * orientation: 0 ep_id 4 saddr 8 daddr 12 sport 14 dport 16 proto 17 dir
 * 18 pad; 20 bytes. */
struct plinth_ct_key {
	__u32 ep_id;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

/* IPv6 conntrack key (plinth_ct6), as plinth_ct_key with 16-byte addresses:
 * 0 ep_id 4 saddr 20 daddr 36 sport 38 dport 40 proto 41 dir 42 pad;
 * 44 bytes. */
struct plinth_ct6_key {
	__u32 ep_id;
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

/* conntrack value (plinth_ct4 and plinth_ct6; the retired plinth_ct had 16 bytes without
 * last_event_ns): 0 expires_ns 8 last_event_ns 16 policy_id 20 rule 22 flags
 * 23 pad; 24 bytes. */
struct plinth_ct_value {
	__u64 expires_ns;
	__u64 last_event_ns; /* the flow's last event: its rate limit */
	__u32 policy_id;
	__u16 rule;
	__u8 flags;
	__u8 pad;
};

/* per-CPU counter: 0 packets 8 bytes; 16 bytes. */
struct plinth_counter {
	__u64 packets;
	__u64 bytes;
};

/* plinth_clock: 0 tick_ns 8 offset_ns; 16 bytes. CLOCK_MONOTONIC ns =
 * jiffies * tick_ns + offset_ns (tick_ns 0: not set). */
struct plinth_clock {
	__u64 tick_ns;
	__u64 offset_ns;
};

/* plinth_clock_sample: 0 jiffies 8 coarse_ns; 16 bytes. */
struct plinth_clock_sample {
	__u64 jiffies;
	__u64 coarse_ns;
};

/* Flow event flags. */
#define PLINTH_EVENT_UNTRACKED (1U << 0) /* allowed, but conntrack is full */

/* Address family of a flow event. */
#define PLINTH_FAMILY_IPV4 4
#define PLINTH_FAMILY_IPV6 6

/* ring buffer flow event, either family (the 48-byte IPv4-only layout is
 * retired): 0 ts_ns 8 saddr 24 daddr 40 sport 42 dport 44 ep_id 48 ifindex
 * 52 peer_id 56 policy_id 60 rule 62 proto 63 dir 64 verdict 65 reason
 * 66 flags 67 family 68 pad; 72 bytes. An IPv4 address fills the first 4
 * bytes of its 16, the rest is 0. */
struct plinth_flow_event {
	__u64 ts_ns;
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u32 ep_id;
	__u32 ifindex;
	__u32 peer_id;
	__u32 policy_id;
	__u16 rule;
	__u8 proto;
	__u8 dir;
	__u8 verdict;
	__u8 reason;
	__u8 flags;
	__u8 family; /* PLINTH_FAMILY_ */
	__u8 pad[4];
};

#endif
