/*
 * libvmem kmem -- object caches with magazines (Bonwick 1994, Bonwick &
 * Adams 2001) and the size-class heap kmem_alloc()/kmem_free().
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * An object cache hands out fixed-size buffers cut from slabs that it takes
 * from a vmem arena. Three layers: per-CPU magazines (no shared lock on the
 * fast path), a depot of full and empty magazines, and the slab layer.
 * Names, signatures and flag values follow illumos <sys/kmem.h>.
 *
 * Constructed state lives in the magazine layer, as in illumos since 2001:
 * the constructor runs when a buffer leaves the slab layer, the destructor
 * when it goes back (magazine reaped or purged, or a free that finds no
 * room in any magazine). A reap or destroy therefore destroys every
 * constructed object it gives back.
 */
#ifndef VMEM_KMEM_H
#define VMEM_KMEM_H

#include <stddef.h>
#include <stdint.h>

#include <vmem/vmem.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Allocation flags (kmflag), values as in illumos. */
#define KM_SLEEP        0x0000 /* may wait for memory */
#define KM_NOSLEEP      0x0001 /* return NULL instead of waiting */
#define KM_PANIC        0x0002 /* failure goes to the error handler */
#define KM_PUSHPAGE     0x0004 /* accepted for compatibility */
#define KM_NORMALPRI    0x0008 /* accepted for compatibility */
#define KM_NODEBUG      0x0010 /* accepted for compatibility */
#define KM_VMFLAGS      0x00ff /* the flags passed on to vmem */
#define KM_FLAGS        0xffff

/* Cache creation flags (cflags), values as in illumos. */
#define KMC_NOTOUCH     0x00010000 /* never touch the buffers (not memory) */
#define KMC_NODEBUG     0x00020000 /* no debug checking for this cache */
#define KMC_NOMAGAZINE  0x00040000 /* no CPU or depot layer */
#define KMC_NOHASH      0x00080000 /* accepted; bookkeeping is always external */
#define KMC_QCACHE      0x00100000 /* a vmem quantum cache (slabs by xalloc) */
#define KMC_KMEM_ALLOC  0x00200000 /* a kmem_alloc size-class cache */
/* Set by kmem on the caches of VMC_IDENTIFIER arenas (kmem_reap_idspace);
 * callers need not pass it. */
#define KMC_IDENTIFIER  0x00400000

/*
 * Debug flags (KMF_), per cache, off by default. Set for caches created
 * afterwards with kmem_set_debug_flags(), or on an empty cache with
 * kmem_cache_set_debug(). KMC_NODEBUG caches ignore them; KMC_NOTOUCH caches
 * ignore the ones that write into buffers (KMF_DEADBEEF, KMF_REDZONE).
 */
#define KMF_DEADBEEF    0x00000002 /* poison free buffers, check on alloc */
#define KMF_REDZONE     0x00000004 /* guard bytes after each buffer */
#define KMF_DOUBLEFREE  0x00000800 /* track every buffer: double/bad free */
#define KMF_DEBUG       (KMF_DEADBEEF | KMF_REDZONE | KMF_DOUBLEFREE)

/* Error codes reported through vmem_set_error_handler() (VMEM_E_KMEM + n). */
#define KMEM_E_WRONGCACHE  (VMEM_E_KMEM + 0) /* buffer not from this cache */
#define KMEM_E_DOUBLEFREE  (VMEM_E_KMEM + 1) /* buffer already free */
#define KMEM_E_WRONGSIZE   (VMEM_E_KMEM + 2) /* kmem_free with another size */
#define KMEM_E_REDZONE     (VMEM_E_KMEM + 3) /* write past end of buffer */
#define KMEM_E_MODIFIED    (VMEM_E_KMEM + 4) /* free buffer was written to */
#define KMEM_E_BADARG      (VMEM_E_KMEM + 5) /* invalid argument */
#define KMEM_E_LEAK        (VMEM_E_KMEM + 6) /* warning: destroy, buffers out */
#define KMEM_E_PANIC       (VMEM_E_KMEM + 7) /* KM_PANIC allocation failed */
#define KMEM_E_BUSY        (VMEM_E_KMEM + 8) /* operation needs an empty cache */

typedef struct kmem_cache kmem_cache_t;

kmem_cache_t *kmem_cache_create(const char *name, size_t bufsize,
    size_t align, int (*constructor)(void *buf, void *priv, int kmflag),
    void (*destructor)(void *buf, void *priv), void (*reclaim)(void *priv),
    void *priv, vmem_t *vmp, int cflags);
void kmem_cache_destroy(kmem_cache_t *cp);
void *kmem_cache_alloc(kmem_cache_t *cp, int kmflag);
void kmem_cache_free(kmem_cache_t *cp, void *buf);

/* Give back everything the cache holds unused: magazines and free slabs. */
void kmem_cache_reap_now(kmem_cache_t *cp);
/*
 * For every cache: call its reclaim callback, free the depot magazines that
 * stayed idle over the last working-set interval and the free slabs.
 */
void kmem_reap(void);
/* kmem_reap for the caches over identifier arenas (KMC_IDENTIFIER) only:
 * what an identifier arena running short needs (illumos). */
void kmem_reap_idspace(void);
/*
 * On (the default), an allocation that fails or is about to wait has a
 * worker thread run every cache's reclaim callback and purge its idle
 * magazines and free slabs (illumos' kmem_reap from vmem_xalloc). Off, a
 * waiter gets only what is freed, and the caches change only when the
 * program calls in: for simulations whose figures must repeat exactly.
 * Returns the old setting.
 */
int kmem_set_pressure_reap(int on);
/*
 * End a working-set interval (illumos does it every 15 s from a timer; here
 * the program decides): record the working set of each depot, and grow the
 * magazine size of caches whose depot lock saw contention. (Caches also
 * grow their magazines between updates: on contention, and when a CPU's
 * magazines miss every few operations; see docs/KMEM.md.)
 */
void kmem_cache_update(kmem_cache_t *cp);
void kmem_update(void);

/* Debug flags of caches created from now on (returns the old value). */
int kmem_set_debug_flags(int kmflags);
/* Nonzero if caches created from now on get debug flags (illumos). */
int kmem_debugging(void);
/* Change a cache's debug flags; the cache must hold no slabs. 0 or -1. */
int kmem_cache_set_debug(kmem_cache_t *cp, int kmflags);

/*
 * Bookkeeping (cache, slab records, magazines, hash tables) comes from the
 * library's own pages, never from the buffers. charge(arg, delta) is called
 * with every change in bytes the cache holds (at once with the current
 * total, and with minus the total at destroy), with a cache lock held: it
 * must not call into kmem or vmem.
 */
void kmem_cache_set_meta_charge(kmem_cache_t *cp,
    void (*charge)(void *arg, long delta), void *arg);

#define KMEM_CACHE_NAMELEN 48
typedef struct kmem_cache_stats {
	char name[KMEM_CACHE_NAMELEN];
	size_t bufsize;       /* object size asked for */
	size_t chunksize;     /* bytes per object in a slab (align, redzone) */
	size_t align;
	size_t slabsize;
	size_t bufs_per_slab;
	int cflags;           /* KMC_ flags */
	int debug;            /* KMF_ flags in force */
	size_t buf_total;     /* buffers in all slabs */
	size_t buf_inuse;     /* allocated to callers now */
	size_t buf_cached;    /* constructed, in magazines */
	size_t slabs;         /* slabs now */
	size_t mem_total;     /* bytes of slabs now */
	size_t meta_bytes;    /* bookkeeping bytes held now */
	size_t magsize;       /* rounds per magazine now */
	size_t depot_full;    /* full magazines in the depot */
	size_t depot_empty;   /* empty magazines in the depot */
	uint64_t alloc;       /* successful allocations */
	uint64_t alloc_fail;  /* failed allocations */
	uint64_t free;        /* frees */
	uint64_t slab_alloc;  /* allocations that reached the slab layer */
	uint64_t slab_free;   /* buffers that went back to the slab layer */
	uint64_t slab_create; /* slabs taken from the arena */
	uint64_t slab_destroy; /* slabs given back */
	uint64_t depot_alloc; /* full magazines taken from the depot */
	uint64_t depot_free;  /* full magazines given to the depot */
	uint64_t depot_contention; /* depot lock found busy */
	uint64_t mag_resize;  /* magazine size increases */
	uint64_t mag_grow_traffic; /* of those, for depot traffic */
	uint64_t reap;        /* reaps */
	uint64_t construct;   /* constructor calls */
	uint64_t destruct;    /* destructor calls */
} kmem_cache_stats_t;

void kmem_cache_get_stats(kmem_cache_t *cp, kmem_cache_stats_t *st);
/*
 * One figure by its illumos kstat name, as illumos' kmem_cache_stat:
 * buf_size, align, chunk_size, slab_size, alloc, alloc_fail, free,
 * depot_alloc, depot_free, depot_contention, slab_alloc, slab_free,
 * buf_constructed, buf_avail, buf_inuse, buf_total, slab_create,
 * slab_destroy, full_magazines, empty_magazines, magazine_size, reap.
 * 0 for any other name.
 */
uint64_t kmem_cache_stat(kmem_cache_t *cp, const char *name);
const char *kmem_cache_name(const kmem_cache_t *cp);
size_t kmem_cache_bufsize(const kmem_cache_t *cp);

/*
 * Call func for every cache (creation order). The list is not locked
 * during a call: func may create caches and destroy caches other than the
 * one it is given (that one stays alive until func returns).
 */
void kmem_foreach_cache(void (*func)(kmem_cache_t *, void *), void *arg);

/*
 * Print all caches as a table, like mdb's ::kmastat, through out() one line
 * at a time (lines end in '\n'); kmem_print_caches() writes to a stdio
 * FILE * passed as void * (stdout if NULL).
 */
void kmem_dump_caches(void (*out)(void *arg, const char *line), void *arg);
void kmem_print_caches(void *stdio_file);
/* The caches as JSON: {"caches":[...]}, one line per cache with every
 * kmem_cache_stats_t field under its C name (see vmem_dump_stats_json). */
void kmem_dump_caches_json(void (*out)(void *arg, const char *line),
    void *arg);

/*
 * The kmem heap: size-class caches (8 bytes to 8 KiB, four classes per
 * power of two above 64 bytes) over an arena, requests above 8 KiB straight
 * from the arena. kmem_free() must be given the size passed to kmem_alloc();
 * another size is reported (KMEM_E_WRONGSIZE).
 */
typedef struct kmem_heap kmem_heap_t;
#define KMEM_HEAP_MAXCACHED 8192

kmem_heap_t *kmem_heap_create(const char *name, vmem_t *arena);
/* As kmem_heap_create; cflags KMC_NOTOUCH for arenas that are not memory
 * (kmem_heap_zalloc then does not zero). */
kmem_heap_t *kmem_heap_create_flags(const char *name, vmem_t *arena,
    int cflags);
void kmem_heap_destroy(kmem_heap_t *heap);
void *kmem_heap_alloc(kmem_heap_t *heap, size_t size, int kmflag);
void *kmem_heap_zalloc(kmem_heap_t *heap, size_t size, int kmflag);
void kmem_heap_free(kmem_heap_t *heap, void *buf, size_t size);
vmem_t *kmem_heap_arena(const kmem_heap_t *heap);
/* Reap every cache of the heap (kmem_cache_reap_now on each). */
void kmem_heap_reap(kmem_heap_t *heap);

/*
 * The default heap used by kmem_alloc/kmem_zalloc/kmem_free. If none is set,
 * the first kmem_alloc creates one over a private arena whose pages come
 * from the platform. Set it before any kmem_alloc (returns the old one).
 */
kmem_heap_t *kmem_set_default_heap(kmem_heap_t *heap);
kmem_heap_t *kmem_default_heap(void);
void *kmem_alloc(size_t size, int kmflag);
void *kmem_zalloc(size_t size, int kmflag);
void kmem_free(void *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif /* VMEM_KMEM_H */
