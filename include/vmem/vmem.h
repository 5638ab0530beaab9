/*
 * libvmem -- the Bonwick & Adams resource allocator with illumos semantics.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * An arena hands out integer ranges ("segments") from a set of spans. The
 * integers are usually addresses, but may be ids, offsets or anything else:
 * the arena never touches the resource it manages. Names, signatures and
 * flag values follow illumos <sys/vmem.h> so that code written against the
 * illumos kernel ports over unchanged.
 */
#ifndef VMEM_VMEM_H
#define VMEM_VMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Allocation flags (the low byte matches the KM_* flags of <vmem/kmem.h>). */
#define VM_SLEEP        0x00000000 /* may wait until the request can be met */
#define VM_NOSLEEP      0x00000001 /* return NULL instead of waiting */
#define VM_PANIC        0x00000002 /* failure goes to the error handler */
#define VM_PUSHPAGE     0x00000004 /* accepted for compatibility; no effect */
#define VM_NORMALPRI    0x00000008 /* accepted for compatibility; no effect */
#define VM_NODEBUG      0x00000010 /* accepted for compatibility; no effect */
#define VM_KMFLAGS      0x000000ff
#define VM_BESTFIT      0x00000100 /* smallest free segment that fits */
#define VM_FIRSTFIT     0x00000200 /* first fit in size-class order */
#define VM_NEXTFIT      0x00000400 /* first free segment after the last one */
#define VM_MEMLOAD      0x00000800 /* accepted for compatibility; no effect */
#define VM_NORELOC      0x00001000 /* pages never move here: always honoured */
#define VM_ABORT        0x00002000 /* on failure: no reap, no wait */
#define VM_ENDALLOC     0x00004000 /* take from the high end of the segment */
#define VM_FLAGS        0x0000ffff

/* Arena creation flags (vmflag argument of vmem_create). */
#define VMC_POPULATOR   0x00010000 /* accepted for compatibility; no effect */
#define VMC_NO_QCACHE   0x00020000 /* no quantum caches; larger minimum import */
#define VMC_IDENTIFIER  0x00040000 /* integer ids, not memory */
#define VMC_XALLOC      0x00080000 /* set by vmem_xcreate: import may grow */
#define VMC_XALIGN      0x00100000 /* import function honours alignment */
#define VMC_DUMPSAFE    0x00200000 /* accepted for compatibility; no effect */
#define VMC_FLAGS       0xffff0000

/* Segment types, for vmem_walk() and vmem_size(). */
#define VMEM_ALLOC      0x01
#define VMEM_FREE       0x02
#define VMEM_SPAN       0x10
#define VMEM_REENTRANT  0x80000000 /* walk: call func without the arena lock */

#define VMEM_NAMELEN    32

typedef struct vmem vmem_t;
typedef void *(vmem_alloc_t)(vmem_t *, size_t, int);
typedef void (vmem_free_t)(vmem_t *, void *, size_t);
typedef void *(vmem_ximport_t)(vmem_t *, size_t *, size_t, int);

vmem_t *vmem_create(const char *name, void *base, size_t size, size_t quantum,
    vmem_alloc_t *afunc, vmem_free_t *ffunc, vmem_t *source,
    size_t qcache_max, int vmflag);
vmem_t *vmem_xcreate(const char *name, void *base, size_t size,
    size_t quantum, vmem_ximport_t *afunc, vmem_free_t *ffunc,
    vmem_t *source, size_t qcache_max, int vmflag);
void vmem_destroy(vmem_t *vmp);
void *vmem_add(vmem_t *vmp, void *vaddr, size_t size, int vmflag);
void *vmem_alloc(vmem_t *vmp, size_t size, int vmflag);
void vmem_free(vmem_t *vmp, void *vaddr, size_t size);
void *vmem_xalloc(vmem_t *vmp, size_t size, size_t align, size_t phase,
    size_t nocross, void *minaddr, void *maxaddr, int vmflag);
void vmem_xfree(vmem_t *vmp, void *vaddr, size_t size);
size_t vmem_size(vmem_t *vmp, int typemask);
int vmem_contains(vmem_t *vmp, void *vaddr, size_t size);
void vmem_walk(vmem_t *vmp, int typemask,
    void (*func)(void *, void *, size_t), void *arg);

/* The arena's name, quantum and source, as given at creation. */
const char *vmem_name(const vmem_t *vmp);
size_t vmem_quantum(const vmem_t *vmp);
vmem_t *vmem_source(const vmem_t *vmp);

/*
 * A private pointer per arena, for import functions that need to find
 * their context (for example the kernel address space an arena belongs to).
 */
void vmem_set_private(vmem_t *vmp, void *priv);
void *vmem_get_private(const vmem_t *vmp);

/*
 * Metadata accounting. Boundary tags live in memory the library owns (never
 * in the arena's own resource). A simulator that must charge that metadata
 * somewhere, as a kernel charges it to its heap, installs charge(): it is
 * called with the change in bytes of tag memory the arena holds, with the
 * arena lock held, so it must not call into any arena (count and settle
 * later). vmem_meta_bytes() is the arena's current tag memory in bytes
 * (vmem_stats_t.meta_bytes counts its other metadata too).
 */
void vmem_set_meta_charge(vmem_t *vmp, void (*charge)(void *arg, long delta),
    void *arg);
size_t vmem_meta_bytes(const vmem_t *vmp);

/*
 * Errors. Every misuse the library can detect is reported through one
 * handler. The default handler prints one line to stderr naming the call,
 * the arena, the address and the size, then aborts (warnings such as a leak
 * at vmem_destroy are printed and the call goes on). An installed handler
 * that returns makes the failing call return its failure value (NULL, or
 * nothing) with no state changed.
 */
typedef enum vmem_error {
	VMEM_E_NONE = 0,
	VMEM_E_BADARG,       /* invalid argument (quantum, size, flags) */
	VMEM_E_POLICY,       /* more than one allocation policy */
	VMEM_E_XALLOC_ARGS,  /* invalid vmem_xalloc constraints */
	VMEM_E_ZEROADDR,     /* a span would contain address 0 (or wrap) */
	VMEM_E_OVERLAP,      /* vmem_add overlaps an existing span */
	VMEM_E_BADFREE,      /* free of an address that was never allocated */
	VMEM_E_DOUBLEFREE,   /* free of an address that is already free */
	VMEM_E_WRONGSIZE,    /* free with a size other than the allocated one */
	VMEM_E_WRONGARENA,   /* free of an address outside every span */
	VMEM_E_XFREE_QCACHE, /* vmem_xfree of a quantum-cached allocation */
	VMEM_E_LEAK,         /* warning: vmem_destroy with allocations left */
	VMEM_E_PANIC,        /* VM_PANIC allocation failed */
	VMEM_E_CORRUPT,      /* a consistency check failed */
	VMEM_E_NOMEM,        /* the library could not get metadata memory */
	VMEM_E_MISUSE,       /* other misuse, described in detail */
	VMEM_E_KMEM = 64,    /* kmem codes start here (<vmem/kmem.h>) */
	VMEM_E_SEGKP = 96,   /* segkp codes start here (<vmem/segkp.h>) */
	VMEM_E_KVSIM = 128   /* kvsim codes start here */
} vmem_error_t;

typedef struct vmem_error_info {
	int code;             /* a vmem_error_t or a subsystem's code */
	int warning;          /* nonzero: the call goes on after reporting */
	const char *call;     /* "vmem_free", "segkp_release", ... */
	const vmem_t *arena;  /* the arena involved, or NULL */
	const char *name;     /* name of the arena, cache or segment */
	uintptr_t addr;       /* address involved (0 if none) */
	size_t size;          /* size involved (0 if none) */
	const char *detail;   /* human-readable description */
} vmem_error_info_t;

typedef void vmem_error_handler_t(const vmem_error_info_t *info, void *arg);

/* Install a handler (NULL restores the default). Returns the old one. */
vmem_error_handler_t *vmem_set_error_handler(vmem_error_handler_t *handler,
    void *arg);
/* The installed handler and its argument, so that a new handler can pass
 * reports on to the one it replaces (either pointer may be NULL). */
void vmem_get_error_handler(vmem_error_handler_t **handler, void **arg);
/* The default handler, for handlers that want to chain to it. */
void vmem_default_error_handler(const vmem_error_info_t *info, void *arg);
/* A short name for an error code ("double free", ...). */
const char *vmem_strerror(int code);
/* Format info as the default handler's line (no newline); returns length. */
int vmem_format_error(const vmem_error_info_t *info, char *buf, size_t len);

/*
 * Statistics. Counters are cumulative since creation; sizes are current.
 * Sizes are in the arena's units (bytes for memory, count for ids).
 */
#define VMEM_NCLASS_POW2 64
typedef struct vmem_stats {
	char name[VMEM_NAMELEN];
	size_t quantum;
	size_t qcache_max;    /* as given to vmem_create (whole quanta, at most
	                       * 16 caches' worth, when caches exist); recorded
	                       * also when the arena has none (VMC_NO_QCACHE,
	                       * no provider): then nothing is cached */
	size_t mem_inuse;     /* allocated, including quantum-cache slabs */
	size_t mem_import;    /* in spans imported from the source */
	size_t mem_total;     /* in all spans */
	uint64_t alloc;       /* successful allocations */
	uint64_t free;        /* frees */
	uint64_t wait;        /* VM_SLEEP waits: one per wake-up or 100 ms */
	uint64_t fail;        /* failed allocations */
	uint64_t lookup;      /* hash chain steps at free time */
	uint64_t search;      /* free segments examined by allocations (next
	                       * fit: every segment its walk passes) */
	uint64_t populate_fail; /* metadata (tag) allocation failures */
	uint64_t contains;    /* vmem_contains calls */
	uint64_t import;      /* spans imported */
	uint64_t release;     /* spans released to the source */
	uint64_t qcache_alloc; /* allocations served by quantum caches */
	uint64_t qcache_free;  /* frees taken by quantum caches */
	size_t nspans;        /* spans now */
	size_t nalloc_segs;   /* allocated segments now */
	size_t nfree_segs;    /* free segments now */
	size_t largest_free;  /* largest free segment now */
	size_t hash_buckets;  /* allocated-segment hash size now */
	size_t tags;          /* boundary tags owned by the arena now */
	size_t meta_bytes;    /* all the arena's own metadata now: its
	                       * structure, tags, hash table and search
	                       * tables (its quantum caches report theirs:
	                       * kmem_cache_get_stats) */
	size_t free_by_class[VMEM_NCLASS_POW2]; /* free segs, size in [2^i, 2^(i+1)) */
} vmem_stats_t;

/* Fill *st with the arena's statistics. */
void vmem_get_stats(vmem_t *vmp, vmem_stats_t *st);

/*
 * Consistency check, O(number of segments): address order, coalescing,
 * freelist membership and class, bitmap, hash, span accounting and the
 * statistics totals. Returns 0 if the arena is consistent; otherwise
 * reports the first broken invariant through the error handler
 * (VMEM_E_CORRUPT) and returns -1.
 */
int vmem_check(vmem_t *vmp);

/*
 * Call func for every arena in the process (in creation order). The list
 * is not locked during a call, so func may create arenas (those created
 * meanwhile are visited too) and destroy arenas other than the one it is
 * given; that one stays alive until func returns (destroying it from func
 * would wait for ever).
 */
void vmem_foreach_arena(void (*func)(vmem_t *, void *), void *arg);

/*
 * Print all arenas as a table, like mdb's ::vmem, through out() one line
 * at a time (lines end in '\n'). vmem_print_arenas() writes to a stdio
 * FILE * passed as void * (stdout if NULL), to keep <stdio.h> out of this
 * header.
 */
void vmem_dump_arenas(void (*out)(void *arg, const char *line), void *arg);
void vmem_print_arenas(void *stdio_file);

/*
 * The same statistics as JSON, through out() one '\n'-ended line at a
 * time (one line per arena or cache): vmem_dump_arenas_json gives
 * {"arenas":[...]} with every vmem_stats_t field under its C name plus
 * "source"; vmem_dump_stats_json gives
 * {"arenas":[...],"caches":[...]} (caches as kmem_dump_caches_json in
 * <vmem/kmem.h>). vmem_print_stats_json writes the latter to a stdio
 * FILE * (stdout if NULL).
 */
void vmem_dump_arenas_json(void (*out)(void *arg, const char *line),
    void *arg);
void vmem_dump_stats_json(void (*out)(void *arg, const char *line),
    void *arg);
void vmem_print_stats_json(void *stdio_file);

/*
 * Print the arena and cache tables to file descriptor fd whenever the
 * process receives signal signo (for example SIGUSR1), as text or as the
 * JSON document of vmem_dump_stats_json. The signal handler only wakes a
 * helper thread, which prints. signo 0 turns the trigger off and restores
 * the previous disposition; a new call replaces the previous trigger.
 * Returns 0, or -1 with errno set (an uncatchable signal or a negative
 * fd is also reported to the error handler as VMEM_E_BADARG).
 */
int vmem_stats_on_signal(int signo, int fd);
int vmem_stats_on_signal_json(int signo, int fd);

/*
 * Quantum caches are object caches provided by a higher layer (kmem). vmem
 * calls through this table, so the core builds and is tested without kmem.
 * Without a provider, qcache_max is recorded and requests go to the arena.
 */
/*
 * Rules for a provider: alloc() gets its slabs with
 * vmem_xalloc(vmp, slabsize, 0, 0, 0, NULL, NULL, flags) and returns them
 * with vmem_xfree(vmp, slab, slabsize). It must hold none of its locks
 * while doing so: when the arena is short, vmem reaps the arena's caches
 * (calling reap() on any of them, from inside that vmem_xalloc) before it
 * fails or waits.
 */
typedef struct vmem_qcache_ops {
	/* Create a cache of size-byte objects cut from slabsize-byte slabs
	 * taken from vmp with vmem_xalloc. */
	void *(*create)(vmem_t *vmp, const char *name, size_t size,
	    size_t slabsize);
	void *(*alloc)(void *cache, int vmflag);
	void (*free)(void *cache, void *addr);
	/* Give everything unused back to the arena. */
	void (*reap)(void *cache);
	void (*destroy)(void *cache);
	/* Bytes held by the cache but not allocated to users (for vmem_size). */
	size_t (*idle)(void *cache);
	/* Allocations and frees the cache served (for vmem_get_stats); may be
	 * NULL. Counting stays in the cache, off vmem's hot path. */
	void (*counts)(void *cache, uint64_t *allocs, uint64_t *frees);
	/* An allocation from an arena is failing or about to wait (after
	 * the arena's own quantum caches were reaped): ask, on a thread
	 * other than the caller's, every cache that may hold the arena's
	 * space idle to give it back (illumos' kmem_reap, or
	 * kmem_reap_idspace when identifier is nonzero: the arena is
	 * VMC_IDENTIFIER). Must return at once; may be NULL. */
	void (*pressure)(int identifier);
} vmem_qcache_ops_t;
void vmem_set_qcache_ops(const vmem_qcache_ops_t *ops);

/*
 * Empty the arena's quantum caches back into it (what an allocation about
 * to fail does by itself), so that imported spans can go back to the
 * source. No effect on an arena without quantum caches.
 */
void vmem_reap(vmem_t *vmp);

/*
 * Fault injection (for tests). hook(site, arg) is called at every point
 * where the library depends on a resource that can run out; a nonzero
 * return makes that point fail exactly as if the resource were exhausted.
 * Sites: "metadata" (a page of library metadata), "import" (a span
 * imported from a source arena), "slab" (a kmem cache taking a slab),
 * "slabtable" (a kmem cache growing the table that finds its slabs),
 * "commit", "resv" and "mlock" (a kernel address space committing pages,
 * reserving them from its page budget, locking them). Every such failure
 * is clean: the call returns its failure value with nothing leaked. NULL
 * removes the hook. Install it while no other thread uses the library.
 * The hook may be called with library locks held: it must not call the
 * library.
 */
typedef int vmem_fault_hook_t(const char *site, void *arg);
void vmem_set_fault_hook(vmem_fault_hook_t *hook, void *arg);

#ifdef __cplusplus
}
#endif
#endif /* VMEM_VMEM_H */
