/*
 * The quantum-cache provider: kmem object caches behind vmem's
 * vmem_qcache_ops_t. vmem.c (built with VMEM_WITH_KMEM) calls through this
 * table; kmem implements it in kmem.c. Caches are KMC_QCACHE|KMC_NOTOUCH,
 * cut from slabs that come from the arena itself by vmem_xalloc (a slab is
 * larger than qcache_max, so it bypasses the caches) and go back by
 * vmem_xfree. No cache lock is held across a vmem call, and the arena's
 * lock must not be held when calling in (reap frees slabs to the arena).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_QCACHE_H
#define VMEM_QCACHE_H

#include <vmem/vmem.h>

extern const vmem_qcache_ops_t vmem_kmem_qcache_ops;

/*
 * Set up vmem's global locks and register its fork handlers (idempotent).
 * A layer whose locks are held across vmem calls registers its own fork
 * handlers after calling this: prepare handlers run in reverse order of
 * registration, so its locks are then taken before vmem's.
 */
void vmem_init(void);

#endif
