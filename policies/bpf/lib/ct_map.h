/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Conntrack map. */
#ifndef __PLINTH_CT_MAP_H
#define __PLINTH_CT_MAP_H

#include <bpf/bpf_helpers.h>
#include "types.h"

/* Allowed flows per endpoint and direction: replies and established packets
 * pass on a hit without a policy lookup. LRU: the oldest flows go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct plinth_ct_key);
	__type(value, struct plinth_ct_value);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} plinth_ct SEC(".maps");

#endif
