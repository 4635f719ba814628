/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IP to security identity: one LPM trie lookup. */
#ifndef __PLINTH_IPCACHE_H
#define __PLINTH_IPCACHE_H

#include <bpf/bpf_helpers.h>
#include "types.h"

/* Pod /32s and the prefixes of every ipBlock cidr and except. The compiler
 * gives each prefix the identity of the addresses it alone covers. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct plinth_ipcache_key);
	__type(value, struct plinth_ipcache_value);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_ipcache SEC(".maps");

/**
 * ipcache_identity - the security identity of an address
 * @addr: IPv4 address, network order
 *
 * Returns: the identity of the longest matching prefix, else PLINTH_ID_WORLD.
 */
static __always_inline __u32 ipcache_identity(__be32 addr)
{
	struct plinth_ipcache_key key = { .prefixlen = 32, .addr = addr };
	struct plinth_ipcache_value *v = bpf_map_lookup_elem(&plinth_ipcache, &key);

	return v ? v->identity : PLINTH_ID_WORLD;
}

#endif
