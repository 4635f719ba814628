/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IP to security identity: one LPM trie lookup in the generation's ipcache
 * of the packet's family. */
#ifndef __PLINTH_IPCACHE_H
#define __PLINTH_IPCACHE_H

#include <bpf/bpf_helpers.h>
#include "types.h"

/**
 * ipcache_identity - the security identity of an address
 * @ipcache: the generation's ipcache (gen.h)
 * @addr: IPv4 address, network order
 *
 * Returns: the identity of the longest matching prefix, else PLINTH_ID_WORLD.
 */
static __always_inline __u32 ipcache_identity(void *ipcache, __be32 addr)
{
	struct plinth_ipcache_key key = { .prefixlen = 32, .addr = addr };
	struct plinth_ipcache_value *v = bpf_map_lookup_elem(ipcache, &key);

	return v ? v->identity : PLINTH_ID_WORLD;
}

/**
 * ipcache6_identity - the security identity of an IPv6 address
 * @ipcache6: the generation's IPv6 ipcache (gen_ipcache6)
 * @addr: IPv6 address, network order
 *
 * Returns: the identity of the longest matching prefix, else PLINTH_ID_WORLD.
 */
static __always_inline __u32 ipcache6_identity(void *ipcache6, const __be32 addr[4])
{
	struct plinth_ipcache6_key key = { .prefixlen = 128 };
	struct plinth_ipcache_value *v;

	__builtin_memcpy(key.addr, addr, 16);
	v = bpf_map_lookup_elem(ipcache6, &key);
	return v ? v->identity : PLINTH_ID_WORLD;
}

#endif
