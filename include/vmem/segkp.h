/*
 * libvmem -- segkp: guarded stacks (and other pageable kernel memory) in a
 * kernel address space.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * segkp hands out page-multiple allocations, above all thread stacks, each
 * optionally with a redzone: pages at the low end (stacks grow down) that
 * are never mapped, so running off the end of a stack faults instead of
 * silently overwriting the neighbour. The caller gets the address above
 * the redzone.
 *
 * A segment is created in one of two placements, chosen at creation:
 *
 *   SEGKP_FIXED     its own range of the address space, managed by
 *                   vmem_create("segkp", base, size, PAGESIZE, NULL, NULL,
 *                   NULL, 5 * PAGESIZE, VM_SLEEP). Space it does not use is
 *                   lost to everybody else; once it is full, no more stacks.
 *   SEGKP_FROMHEAP  an empty arena importing from the address space's
 *                   heap_arena: vmem_create("segkp", NULL, 0, PAGESIZE,
 *                   vmem_alloc, vmem_free, heap_arena, 5 * PAGESIZE,
 *                   VM_SLEEP), plus one bit per heap page marking the pages
 *                   segkp holds (redzones included). Stacks and the rest of
 *                   the heap share one pool of address space (the 2005
 *                   "dynamic segkp" change for 32-bit x86).
 *
 * With quantum caches (kmem installed as the vmem quantum-cache provider)
 * allocations of 1..5 pages come from 64 KiB slabs: five 2-page stacks with
 * their redzones per slab.
 *
 * Flags and their values follow illumos <vm/seg_kp.h>. Misuse (bad length,
 * KPD_NO_ANON without KPD_LOCKED, releasing an address segkp does not own,
 * double release, an invalid cache cookie) is reported through the library
 * error handler with the codes below; if the handler returns, the call
 * fails (NULL, or no effect) and nothing has changed. Running out of
 * address space, pages or RLIMIT_MEMLOCK is not misuse: the call returns
 * NULL quietly.
 */
#ifndef VMEM_SEGKP_H
#define VMEM_SEGKP_H

#include <stddef.h>
#include <stdint.h>

#include <vmem/segkmem.h>
#include <vmem/vmem.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct segkp segkp_t;

/* Allocation flags (illumos values). */
#define KPD_ZERO        0x01 /* zero-filled pages */
#define KPD_LOCKED      0x02 /* reserve pages up front; mlock on real memory */
#define KPD_NO_ANON     0x04 /* no swap backing: only with KPD_LOCKED */
#define KPD_HASREDZONE  0x08 /* unmapped guard page(s) below the allocation */
#define KPD_NOWAIT      0x10 /* fail instead of waiting for space or pages */
/*
 * Extension: more than one redzone page, against "stack clash" (a frame
 * larger than one page jumps a single guard page). Use with KPD_HASREDZONE:
 * segkp_get(seg, len, KPD_HASREDZONE | KPD_REDZONE_PAGES(4)). 0 or 1 means
 * one page, as in illumos; at most SEGKP_MAX_REDZONE_PAGES.
 */
#define KPD_REDZONE_PAGES(n) (((int)(n) & 0xff) << 8)
#define SEGKP_MAX_REDZONE_PAGES 255
#define KPD_FLAGS       0xff1f

typedef enum segkp_placement {
	SEGKP_FIXED = 0,
	SEGKP_FROMHEAP = 1
} segkp_placement_t;

/*
 * Create a segment in kas. SEGKP_FIXED: [base, base + size) must be
 * page-aligned and inside the address space, outside heap_arena's spans;
 * base NULL takes size bytes from heap_arena at creation, for the life of
 * the segment (the illumos amd64 arrangement, modelled inside one kas).
 * SEGKP_FROMHEAP: base and size must be NULL and 0. Returns NULL after
 * reporting a bad configuration.
 */
segkp_t *segkp_create(kas_t *kas, segkp_placement_t placement, void *base,
    size_t size);
/* Free everything; allocations still in use are reported (warning). */
void segkp_destroy(segkp_t *seg);

kas_t *segkp_kas(const segkp_t *seg);
vmem_t *segkp_arena(const segkp_t *seg);
segkp_placement_t segkp_placement(const segkp_t *seg);
size_t segkp_pagesize(const segkp_t *seg);

/*
 * Allocate len bytes (a page multiple, not 0). With KPD_HASREDZONE the
 * redzone page(s) are added below and the address above them is returned.
 * Without KPD_NOWAIT the call waits for address space (fixed placement)
 * and, with KPD_LOCKED, for pages of the page budget.
 */
void *segkp_get(segkp_t *seg, size_t len, int flags);
/* Release what segkp_get or segkp_cache_get returned. */
void segkp_release(segkp_t *seg, void *addr);

/*
 * Stack caches: up to SEGKP_MAX_CACHES per segment. A cache keeps up to
 * maxsize released allocations of len bytes with flags, LIFO, with their
 * address space, pages and mappings, so that the next segkp_cache_get is a
 * list pop. segkp_release puts an allocation that came from a cache back
 * on it if the cache is not full. The cookie is checked on every use.
 */
#define SEGKP_MAX_CACHES 8
void *segkp_cache_init(segkp_t *seg, int maxsize, size_t len, int flags);
void *segkp_cache_get(void *cookie);
/* Free the stacks held by every cache of seg (NULL: of every segment);
 * the caches stay usable. The arena's quantum caches are reaped too, so
 * in fromheap mode the address space goes back to heap_arena. */
void segkp_cache_free_seg(segkp_t *seg);
/* illumos' segkp_cache_free(): the same for every segment. */
void segkp_cache_free(void);
/* Empty one cache and forget its cookie. Stacks of the cache still in use
 * are released normally (not cached) when they come back. */
void segkp_cache_destroy(void *cookie);

/*
 * Reap: give the pages of idle cached stacks back to the system, keeping
 * their address space (the next get from the cache maps fresh zero pages,
 * one system call). SEGKP_REAP_IDLE takes the stacks that stayed in their
 * cache during the whole interval since the previous reap (the bottom of
 * each LIFO, below its low-water mark); SEGKP_REAP_ALL takes every cached
 * stack. Also reaps the arena's quantum caches (vmem_reap), which hold
 * only free address space. Returns the number of pages given back.
 */
#define SEGKP_REAP_IDLE 0
#define SEGKP_REAP_ALL  1
size_t segkp_cache_reap(segkp_t *seg, int how);

/* An allocation, as segkp_find describes it. */
typedef struct segkp_info {
	uintptr_t base;      /* start of the allocation, redzone included */
	size_t size;         /* redzone included */
	uintptr_t addr;      /* what segkp_get returned: base + redzone */
	size_t len;          /* the len asked for */
	size_t redzone;      /* bytes of redzone */
	int flags;           /* KPD_* */
	int cached;          /* 1: idle in a stack cache */
	int resident;        /* 0: pages reaped (cached stack) */
	void *tag;           /* segkp_set_tag */
} segkp_info_t;

/*
 * The allocation whose range (redzone included) holds addr: returns 1 and
 * fills *info (may be NULL), or 0. O(1): a range check (fixed) or the heap
 * bitmap (fromheap) says whether segkp holds the page, a bitmap of
 * allocation starts finds the start below it, a hash finds the record.
 */
int segkp_find(segkp_t *seg, const void *addr, segkp_info_t *info);

/* An opaque word kept with an allocation (e.g. its owner) until release. */
int segkp_set_tag(segkp_t *seg, const void *addr, void *tag);

/* Fault classification. */
typedef enum segkp_fault {
	SEGKP_FAULT_NOTSEGKP = 0, /* not segkp's address */
	SEGKP_FAULT_REDZONE,      /* the redzone of an allocation: overflow */
	SEGKP_FAULT_MAPPED,       /* the usable part of an allocation */
	SEGKP_FAULT_NOMAPPING     /* segkp's range, outside every allocation */
} segkp_fault_t;
segkp_fault_t segkp_classify(segkp_t *seg, const void *addr,
    segkp_info_t *info);
/* Describe addr in buf: "redzone of segkp stack [0x..,0x..)" etc. */
segkp_fault_t segkp_describe(segkp_t *seg, const void *addr, char *buf,
    size_t len);

/*
 * Consistency check: the heap bitmap and the start bitmap match the live
 * allocations exactly, the hash holds every allocation once, the caches'
 * counts match their lists, the statistics match. Returns 0, or -1 after
 * reporting SEGKP_E_CORRUPT.
 */
int segkp_check(segkp_t *seg);
/* Nonzero if segkp holds the page of addr (its bit in the bitmap). */
int segkp_page_held(segkp_t *seg, const void *addr);

typedef struct segkp_stats {
	segkp_placement_t placement;
	kas_backing_t backing;
	size_t pagesize;
	uint64_t gets;          /* allocations made (segkp_get, cache misses) */
	uint64_t releases;      /* allocations freed (not cached) */
	uint64_t get_fail;      /* allocations that failed */
	uint64_t cache_hits;    /* segkp_cache_get served from a cache */
	uint64_t cache_misses;  /* segkp_cache_get that had to allocate */
	uint64_t cache_puts;    /* releases kept by a cache */
	uint64_t cache_full;    /* releases a full cache refused */
	uint64_t reaped_pages;  /* pages given back by segkp_cache_reap */
	uint64_t lock_fail;     /* KPD_LOCKED gets refused (RLIMIT_MEMLOCK) */
	size_t inuse;           /* allocations handed out now */
	size_t cached;          /* allocations idle in caches now */
	size_t pages_committed; /* usable pages backed now (not redzones) */
	size_t pages_locked;    /* of which locked (KPD_LOCKED) */
	size_t redzone_pages;   /* redzone pages of live allocations */
	size_t va_allocated;    /* bytes of live allocations, redzones incl. */
	size_t va_held;         /* bytes of address space segkp holds: the
	                           whole range (fixed) or what it imported
	                           from heap_arena (fromheap) */
	size_t fixed_size;      /* the fixed range (0 fromheap) */
	size_t meta_bytes;      /* records, hash, bitmaps */
	size_t vmas;            /* kernel memory mappings the allocations
	                           cost on real memory: one for the usable
	                           part, one for the unmapped gap below it */
	size_t max_map_count;   /* /proc/sys/vm/max_map_count (0 if unknown) */
	size_t guarded_ceiling; /* guarded stacks that fit under it: 
	                           max_map_count / 2 */
} segkp_stats_t;
void segkp_get_stats(segkp_t *seg, segkp_stats_t *st);
void segkp_print_stats(segkp_t *seg, void *stdio_file);
/*
 * Exact number of mappings (VMAs) in the segment's part of the address
 * space, read from /proc/self/maps (real backing on Linux; -1 otherwise).
 */
long segkp_count_vmas(segkp_t *seg);

/* Error codes (VMEM_E_SEGKP = 96 and up). */
enum {
	SEGKP_E_BADLEN = VMEM_E_SEGKP, /* 96: len 0 or not a page multiple */
	SEGKP_E_BADFLAGS,    /* unknown flags, KPD_NO_ANON w/o KPD_LOCKED */
	SEGKP_E_NOTOWNED,    /* release of an address segkp does not own */
	SEGKP_E_DOUBLE,      /* double release */
	SEGKP_E_BADCOOKIE,   /* invalid stack-cache cookie */
	SEGKP_E_BADCONFIG,   /* segkp_create arguments */
	SEGKP_E_TOOMANY,     /* cache table full */
	SEGKP_E_BUSY,        /* warning: destroy with allocations in use */
	SEGKP_E_CORRUPT,     /* segkp_check found a broken invariant */
	SEGKP_E_KTHREAD = VMEM_E_SEGKP + 16 /* 112: <vmem/kthread.h> codes */
};

#ifdef __cplusplus
}
#endif
#endif /* VMEM_SEGKP_H */
