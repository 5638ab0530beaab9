/*
 * libvmem -- the kernel address space object and its page backing
 * ("segkmem").
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * A kas_t is one kernel address space: a contiguous range of addresses, a
 * heap_arena over (parts of) it (quantum PAGESIZE, no quantum caches), a
 * kmem_va arena importing address space from heap_arena (quantum PAGESIZE,
 * quantum caches up to 8 pages), kmem_default importing memory from kmem_va
 * through segkmem_alloc and feeding a kmem heap, kmem_metadata importing
 * memory from heap_arena for charged metadata, a page budget (physmem /
 * availrmem with illumos page_resv semantics) and a page backing:
 *
 *   KAS_REAL  the range is reserved with mmap(PROT_NONE, MAP_NORESERVE);
 *             committing pages makes them read-write, decommitting maps
 *             PROT_NONE over them again so resident memory follows use.
 *   KAS_SIM   the range is a set of integers (for example a 32-bit kernel
 *             layout on a 64-bit host) that is never dereferenced; pages are
 *             only counted and faults are classified by address. Kernel
 *             metadata (vmem boundary tags, kmem slab and cache bookkeeping,
 *             segkp's per-stack records) is charged to the simulated heap
 *             as whole pages, as the kernel would take it from its heap.
 *
 * Several kas_t may exist at once. Every arena a kas creates carries the kas
 * as its vmem private pointer, so import functions (segkmem_alloc/free)
 * find their address space from the arena they are given. kas_default() is
 * a real 1 GiB address space created on first use, for code written against
 * illumos' global names.
 *
 * Addresses in this interface are absolute, except kas_config_t.heap_spans,
 * which are offsets from the base (the base of a real kas is chosen by mmap).
 * All sizes are bytes unless named *_pages.
 */
#ifndef VMEM_SEGKMEM_H
#define VMEM_SEGKMEM_H

#include <stddef.h>
#include <stdint.h>

#include <vmem/vmem.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kas kas_t;
struct kmem_heap; /* <vmem/kmem.h>: kmem_heap_t */

typedef enum kas_backing {
	KAS_REAL = 0,
	KAS_SIM = 1
} kas_backing_t;

/* [start, end) as offsets from the base of the address space. */
typedef struct kas_span {
	size_t start;
	size_t end;
} kas_span_t;

#define KAS_MAX_SPANS 8
#define KAS_NAMELEN 32

typedef struct kas_config {
	kas_backing_t backing;  /* default KAS_REAL */
	const char *name;       /* default "kas" (copied, KAS_NAMELEN) */
	size_t size;            /* bytes of address space; default 1 GiB */
	uintptr_t sim_base;     /* KAS_SIM: first address (default
	                           0xC0000000); ignored for KAS_REAL */
	size_t pagesize;        /* 0: host page size (real), 4096 (sim);
	                           real: must be a multiple of the host's */
	size_t nheap_spans;     /* 0: heap_arena spans the whole range */
	kas_span_t heap_spans[KAS_MAX_SPANS]; /* page-aligned offsets */
	size_t heap_boot_pages; /* pages taken from the bottom of heap_arena
	                           at creation and never freed (illumos: 1) */
	size_t physmem_pages;   /* page budget; 0: host physical pages (real),
	                           1 GiB worth (sim) */
	int charge_metadata;    /* -1 (default): on for KAS_SIM, off for
	                           KAS_REAL; 0 off; 1 on */
	size_t kmem_va_qcache_pages; /* default 8 */
	int create_kmem_heap;   /* default 1: a kmem heap over kmem_default */
} kas_config_t;

/* Fill *cfg with the defaults above. */
void kas_config_init(kas_config_t *cfg);

/*
 * Create an address space. NULL cfg means the defaults. Returns NULL after
 * reporting through the error handler on a bad configuration, or silently
 * when the host cannot give the address range (mmap failure).
 */
kas_t *kas_create(const kas_config_t *cfg);
/* Tear down: leaks are reported (warning) by the arenas' vmem_destroy.
 * While arenas outside the kas import from its arenas (fromheap segkp
 * segments, kthread's segment in kas_default) or are registered with it
 * (fixed segkp segments), it warns and keeps the kas: destroy those
 * first. */
void kas_destroy(kas_t *kas);
/* The process-wide default: real backing, 1 GiB, created on first use. */
kas_t *kas_default(void);

const char *kas_name(const kas_t *kas);
kas_backing_t kas_backing(const kas_t *kas);
uintptr_t kas_base(const kas_t *kas);
size_t kas_size(const kas_t *kas);
size_t kas_pagesize(const kas_t *kas);

/* The arenas of the address space, and its kmem heap (NULL if none). */
vmem_t *kas_heap_arena(kas_t *kas);
vmem_t *kas_kmem_va(kas_t *kas);
vmem_t *kas_kmem_default(kas_t *kas);   /* memory; the kmem heap's source */
vmem_t *kas_metadata_arena(kas_t *kas); /* "kmem_metadata" */
struct kmem_heap *kas_heap(kas_t *kas);

/*
 * The address space an arena belongs to: its private pointer if that is a
 * live kas, otherwise the kas of its source, recursively; NULL if none.
 */
kas_t *kas_of_arena(const vmem_t *vmp);

/*
 * kmem_reap() and kmem_update() for one address space: the same work on
 * every object cache and quantum cache whose arena belongs to kas (its
 * kmem heap, its arenas' quantum caches, caches a program made over its
 * arenas), none of another kas or of none.
 */
void kas_kmem_reap(kas_t *kas);
void kas_kmem_update(kas_t *kas);

/*
 * Create an arena that belongs to the address space (same arguments as
 * vmem_create): its private pointer is set to the kas and, when metadata
 * is charged, its boundary tags are charged to the heap. kas_arena_adopt
 * does the same for an arena created elsewhere (its private pointer is
 * overwritten: use it only for arenas whose private pointer is unused);
 * kas_arena_register records an arena for fault classification and tag
 * charging without touching its private pointer (kas_of_arena then finds
 * the kas through the arena's source). kas_arena_destroy forgets and
 * destroys; kas_arena_forget only forgets (call before vmem_destroy).
 * Both wait for kas_classify calls that may still be walking the arena,
 * so neither may be called from inside a fault classifier.
 */
vmem_t *kas_arena_create(kas_t *kas, const char *name, void *base,
    size_t size, size_t quantum, vmem_alloc_t *afunc, vmem_free_t *ffunc,
    vmem_t *source, size_t qcache_max, int vmflag);
void kas_arena_adopt(kas_t *kas, vmem_t *vmp);
void kas_arena_register(kas_t *kas, vmem_t *vmp);
void kas_arena_forget(kas_t *kas, vmem_t *vmp);
void kas_arena_destroy(kas_t *kas, vmem_t *vmp);

/*
 * vmem import / release functions. segkmem_alloc takes size bytes of
 * address space from vmp (vmem_alloc with vmflag), reserves the pages from
 * the page budget (VM_NOSLEEP: fail when exhausted; VM_SLEEP: wait) and
 * commits them read-write (zero-filled). segkmem_free decommits (one
 * mmap(MAP_FIXED|MAP_NORESERVE, PROT_NONE) over the range on real memory,
 * which also drops any mlock), unreserves and vmem_frees. vmp must belong
 * to a kas (kas_of_arena); any arena importing through these is memory.
 */
void *segkmem_alloc(vmem_t *vmp, size_t size, int vmflag);
void segkmem_free(vmem_t *vmp, void *addr, size_t size);

/*
 * Page operations on parts of the range (for segkp, which leaves redzones
 * unmapped). addr and size must be page-aligned and inside the kas.
 * Commit makes the pages read-write and zero-filled if they were not
 * committed (already committed pages keep their contents); with
 * KAS_COMMIT_LOCK it also locks them (on failure nothing stays committed
 * that was not before). Returns 0, or -1 if the host refused (mmap/mprotect
 * or mlock failure; nothing reported: resource exhaustion is not misuse).
 * Decommit discards contents and drops locks. Lock fails cleanly (-1) when
 * RLIMIT_MEMLOCK is exceeded. On KAS_SIM all of these only count.
 */
#define KAS_COMMIT_LOCK 0x01
int kas_pages_commit(kas_t *kas, void *addr, size_t size, int flags);
void kas_pages_decommit(kas_t *kas, void *addr, size_t size);
int kas_pages_lock(kas_t *kas, void *addr, size_t size);
void kas_pages_unlock(kas_t *kas, void *addr, size_t size);
/* Nonzero if the page holding addr is committed. */
int kas_page_is_committed(kas_t *kas, const void *addr);

/*
 * The page budget (illumos page_resv / page_unresv): availrmem starts at
 * physmem. kas_page_resv returns 1 and takes npages, or 0: VM_NOSLEEP
 * fails at once when fewer than npages are available; VM_SLEEP waits until
 * a kas_page_unresv makes them available (a request larger than physmem
 * fails at once). Unreserving more than is reserved is reported.
 */
int kas_page_resv(kas_t *kas, size_t npages, int vmflag);
void kas_page_unresv(kas_t *kas, size_t npages);
size_t kas_physmem(const kas_t *kas);
size_t kas_availrmem(kas_t *kas);

/*
 * Metadata charging (charge_metadata on). kas_charge_metadata only counts
 * (lock-free, callable with any lock held); the count is charged to the
 * heap as whole pages per kind, taken from the "kmem_metadata" arena
 * (which imports from heap_arena with segkmem_alloc), when it is settled:
 * at the end of every kas-level call that allocates or frees, and by
 * kas_settle_metadata(). Settling never sleeps: if the heap or page budget
 * is exhausted the remaining debt stays unsettled (see kas_stats_t).
 * With charging off the calls count but never settle.
 */
typedef enum kas_meta_kind {
	KAS_META_TAGS = 0,  /* vmem boundary tags of the kas' arenas */
	KAS_META_KMEM,      /* kmem slab and cache bookkeeping */
	KAS_META_SEGKP,     /* segkp per-allocation records */
	KAS_META_OTHER,
	KAS_META_NKINDS
} kas_meta_kind_t;
void kas_charge_metadata(kas_t *kas, kas_meta_kind_t kind, long delta_bytes);
void kas_settle_metadata(kas_t *kas);
/* A charge callback for vmem_set_meta_charge / kmem_cache_set_meta_charge
 * (arg is the kas): charges KAS_META_TAGS or KAS_META_KMEM. */
void kas_charge_tags_cb(void *kas, long delta_bytes);
void kas_charge_kmem_cb(void *kas, long delta_bytes);

/*
 * Fault classification by address (both backings; the simulator's page
 * fault). Registered classifiers are asked first (in registration order):
 * one returns KAS_FAULT_NONE for addresses it does not own, or a kind and
 * a description in buf. Then fixed regions, then the kas' arenas: the
 * innermost arena whose spans hold the address names it.
 */
typedef enum kas_fault {
	KAS_FAULT_NONE = 0, /* classifier: not mine */
	KAS_FAULT_OUTSIDE,  /* outside the kas and every region */
	KAS_FAULT_REGION,   /* in a registered fixed region */
	KAS_FAULT_FREE,     /* in the heap, not allocated: "no mapping" */
	KAS_FAULT_UNBACKED, /* allocated, page not committed */
	KAS_FAULT_VALID,    /* allocated and committed: access succeeds */
	KAS_FAULT_REDZONE,  /* a guard page (from a classifier, e.g. segkp) */
	KAS_FAULT_NKINDS
} kas_fault_t;
typedef kas_fault_t kas_classifier_t(void *arg, uintptr_t addr, char *buf,
    size_t len);
/* Returns 0, or -1 (reported) if the table of 8 classifiers is full. */
int kas_register_fault_classifier(kas_t *kas, kas_classifier_t *fn,
    void *arg);
/* Once it returns, fn is not running and will not be called with arg
 * again, so arg may be freed. Not from inside a classifier. */
void kas_unregister_fault_classifier(kas_t *kas, kas_classifier_t *fn,
    void *arg);
/* A named fixed region [start, end) (e.g. segmap, kernel text); up to 16. */
int kas_register_region(kas_t *kas, const char *name, uintptr_t start,
    uintptr_t end);
/* Classify addr; buf (may be NULL) gets e.g. "heap_arena > kmem_va:
 * allocated, not committed". kas_fault also counts it in the stats. */
kas_fault_t kas_classify(kas_t *kas, uintptr_t addr, char *buf, size_t len);
kas_fault_t kas_fault(kas_t *kas, uintptr_t addr, char *buf, size_t len);
const char *kas_fault_name(kas_fault_t kind);

/* Statistics: sizes are current, counters cumulative. */
typedef struct kas_stats {
	char name[KAS_NAMELEN];
	kas_backing_t backing;
	uintptr_t base;
	size_t size;
	size_t pagesize;
	size_t heap_size;     /* bytes in heap_arena's spans */
	size_t heap_inuse;    /* bytes allocated from heap_arena */
	size_t heap_boot;     /* of which taken at boot */
	size_t meta_bytes[KAS_META_NKINDS];   /* metadata bytes counted now */
	size_t meta_pages[KAS_META_NKINDS];   /* pages charged to the heap now */
	size_t meta_pages_needed[KAS_META_NKINDS]; /* ceil(bytes / pagesize) */
	size_t meta_bytes_total;
	size_t meta_pages_total;      /* charged: the heap is short this much */
	size_t meta_pages_unsettled;  /* needed - charged (may be < 0: 0) */
	size_t meta_heap_bytes;       /* heap bytes held by kmem_metadata */
	int charge_metadata;
	size_t pages_committed;
	size_t pages_locked;
	size_t pages_reserved;  /* physmem - availrmem */
	size_t physmem;
	size_t availrmem;
	uint64_t resv_fail;     /* kas_page_resv failures */
	uint64_t resv_wait;     /* kas_page_resv waits */
	uint64_t commit_fail;   /* host refused a commit */
	uint64_t lock_fail;     /* host refused a lock (RLIMIT_MEMLOCK) */
	uint64_t faults;        /* kas_fault calls */
	uint64_t faults_by_kind[KAS_FAULT_NKINDS];
} kas_stats_t;
void kas_get_stats(kas_t *kas, kas_stats_t *st);
/* Print the stats through out() one '\n'-terminated line at a time, or to
 * a stdio FILE * (stdout if NULL). */
void kas_dump_stats(kas_t *kas, void (*out)(void *arg, const char *line),
    void *arg);
void kas_print_stats(kas_t *kas, void *stdio_file);

/* Error codes (reported through vmem_set_error_handler's handler). */
enum {
	SEGKMEM_E_BADCONFIG = VMEM_E_KMEM + 16, /* 80: invalid kas_config_t */
	SEGKMEM_E_BADRANGE,   /* unaligned, empty or outside the kas */
	SEGKMEM_E_NOTKAS,     /* arena belongs to no address space */
	SEGKMEM_E_UNRESV,     /* unreserve more pages than reserved */
	SEGKMEM_E_TABLEFULL,  /* classifier or region table full */
	SEGKMEM_E_BUSY        /* warning: destroy with pages still in use */
};

#ifdef __cplusplus
}
#endif
#endif /* VMEM_SEGKMEM_H */
