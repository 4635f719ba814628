/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Generations: the maps a policy change replaces as one.
 *
 * Endpoints, ipcache (IPv4 and IPv6), policy and port ranges live in inner maps, two
 * generations of each, in arrays of maps indexed by generation. plinth_gen
 * holds the active generation. The loader fills a whole new generation in
 * fresh inner maps, installs them in the inactive slot and then flips
 * plinth_gen with one write: a packet reads plinth_gen once and every map it
 * consults belongs to that generation, so it sees the old policy or the new
 * one, never a mixture. Small rule-only changes are written in place into
 * the active generation (rules first, deletions last), which keeps every
 * verdict that of the old or the new policy as well. */
#ifndef __PLINTH_GEN_MAP_H
#define __PLINTH_GEN_MAP_H

#include <bpf/bpf_helpers.h>
#include "types.h"

#define PLINTH_GENERATIONS 2

/* The active generation, 0 or 1, at index 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_gen SEC(".maps");

/* Inner map shapes; entries are allocated as they are written (a new
 * generation costs no memory up front). The loader creates the inner maps (and chooses their
 * sizes) for every generation. Sizes, not types: the loader parses the
 * outer map's BTF, where these types may appear only as forward declarations. */

/* Endpoints by host-side ifindex below PLINTH_EP_SLOTS, one array slot each
 * (PLINTH_EP_PRESENT marks a used slot): a packet finds its endpoint with an
 * array index instead of a hash lookup. Preallocated, 8 bytes a slot
 * (512 KiB a generation); the size is fixed, so the verifier inlines the
 * lookup. */
#define PLINTH_EP_SLOTS 65536
struct plinth_endpts_slots_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct plinth_endpoint));
	__uint(max_entries, PLINTH_EP_SLOTS);
};

/* Every endpoint on this node, keyed by host-side ifindex: read by the
 * datapath for ifindexes of PLINTH_EP_SLOTS and above (and by the programs
 * of earlier versions for all). */
struct plinth_endpts_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct plinth_endpoint));
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

/* Pod /32s and the prefixes of every ipBlock cidr and except. The compiler
 * gives each prefix the identity of the addresses it alone covers. */
struct plinth_ipcache_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(key_size, sizeof(struct plinth_ipcache_key));
	__uint(value_size, sizeof(struct plinth_ipcache_value));
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

/* IPv6 pod /128s and ipBlock prefixes, as plinth_ipcache_inner. */
struct plinth_ipcache6_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(key_size, sizeof(struct plinth_ipcache6_key));
	__uint(value_size, sizeof(struct plinth_ipcache_value));
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

/* Allowed (endpoint, peer identity, direction, protocol, port). */
struct plinth_policy_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(struct plinth_policy_key));
	__uint(value_size, sizeof(struct plinth_policy_value));
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

/* endPort ranges, split into port prefixes. */
struct plinth_polrange_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(key_size, sizeof(struct plinth_range_key));
	__uint(value_size, sizeof(struct plinth_policy_value));
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

/* Endpoints of each generation, all of them (the slots above copy those
 * below PLINTH_EP_SLOTS). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, PLINTH_GENERATIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct plinth_endpts_inner);
} plinth_ep_gen SEC(".maps");

/* Endpoint slots of each generation (ifindex below PLINTH_EP_SLOTS). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, PLINTH_GENERATIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct plinth_endpts_slots_inner);
} plinth_eps_gen SEC(".maps");

/* ipcache of each generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, PLINTH_GENERATIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct plinth_ipcache_inner);
} plinth_ipc_gen SEC(".maps");

/* IPv6 ipcache of each generation: fetched only for IPv6 packets, from the
 * slot the packet read (gen.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, PLINTH_GENERATIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct plinth_ipcache6_inner);
} plinth_ipc6_gen SEC(".maps");

/* Exact and wildcard rules of each generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, PLINTH_GENERATIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct plinth_policy_inner);
} plinth_pol_gen SEC(".maps");

/* endPort rules of each generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, PLINTH_GENERATIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct plinth_polrange_inner);
} plinth_rng_gen SEC(".maps");

#endif
