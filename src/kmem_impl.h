/*
 * kmem internals shared by kmem.c (object caches), kmem_heap.c (the
 * size-class heap) and kmem_meta.c (the bookkeeping allocator). Not
 * installed.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_KMEM_IMPL_H
#define VMEM_KMEM_IMPL_H

#include <vmem/kmem.h>

#include "platform.h"

/* Link names with the library's prefix (see platform.h). */
#define kmeta_alloc             vmem_kmeta_alloc
#define kmeta_free              vmem_kmeta_free
#define kmeta_size              vmem_kmeta_size
#define kmeta_fork_lock         vmem_kmeta_fork_lock
#define kmeta_fork_unlock       vmem_kmeta_fork_unlock

/* Bookkeeping memory (kmem_meta.c): zeroed; free needs the size. */
void *kmeta_alloc(size_t size);
void kmeta_free(void *p, size_t size);
/* Bytes actually held by kmeta_alloc(size). */
size_t kmeta_size(size_t size);

/* Create a cache with a given slab size (0: chosen by kmem). */
kmem_cache_t *kmem_cache_create_slab(const char *name, size_t bufsize,
    size_t align, int (*constructor)(void *, void *, int),
    void (*destructor)(void *, void *), void (*reclaim)(void *), void *priv,
    vmem_t *vmp, int cflags, size_t slabsize);

/*
 * Free with the caller's name for error reports; returns 0 if freed, -1 if
 * buf does not belong to cp (nothing reported: the caller reports).
 * Other errors (double free, redzone) are reported here.
 */
int kmem_cache_free_quiet(kmem_cache_t *cp, void *buf, const char *call);
/* Nonzero if buf is a buffer (allocated or not) of one of cp's slabs. */
int kmem_cache_owns(kmem_cache_t *cp, const void *buf);
/* Bytes held by the cache but not allocated to callers. */
size_t kmem_cache_idle_bytes(kmem_cache_t *cp);
/* The arena the cache's slabs come from. */
vmem_t *kmem_cache_arena(const kmem_cache_t *cp);
/* What kmem_reap does to each cache: the reclaim callback, the depot
 * magazines idle over the last interval, the spare slab. */
void kmem_cache_reap_idle(kmem_cache_t *cp);

/* Memory is short: the cache's reclaim callback, then every idle magazine
 * and free slab back to the arena. */
void kmem_cache_pressure_purge(kmem_cache_t *cp);
/* vmem's pressure hook: ask for a pass of kmem_cache_pressure_purge over
 * every cache of that kind (identifier arenas apart) on the platform's
 * deferred-work thread. Returns at once. */
void kmem_pressure_request(int identifier);
/* Test hook: pressure passes run so far. */
unsigned kmem_pressure_test_passes(void);

/*
 * Global setup (idempotent): the cache list lock and kmem's fork handlers,
 * which hold every kmem lock across fork() so that the child can go on
 * using every cache whatever other threads were doing.
 */
void kmem_global_init(void);
/* Fork hooks of the other kmem files, called by kmem.c's handlers. */
void kmem_heap_fork_lock(void);
void kmem_heap_fork_unlock(void);
void kmeta_fork_lock(void);
void kmeta_fork_unlock(void);

/* Test hooks (tests include this header). */
/* Pretend the depot lock was found busy n times in this interval. */
void kmem_cache_test_contend(kmem_cache_t *cp, unsigned n);
/* Lock (hold 1) or unlock (0) every CPU slot of cp, as threads preempted
 * inside their slots would hold them. */
void kmem_cache_test_hold_slots(kmem_cache_t *cp, int hold);
/* The slab layer's invariants (slab table, lists, counts): 0, or the
 * number of the first one broken (see kmem.c). */
int kmem_cache_test_check(kmem_cache_t *cp);

#endif
