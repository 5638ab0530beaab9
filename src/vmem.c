/*
 * vmem: the arena resource allocator.
 *
 * Theory
 * ------
 * An arena manages a set of integers -- addresses, ids, offsets -- as a
 * collection of spans. A span enters the arena from vmem_create(),
 * vmem_add() or an import from a source arena; an imported span goes back
 * to its source the moment all of it is free again. Every result is a
 * multiple of the arena's quantum, and the arena never touches the
 * resource: all bookkeeping lives in boundary tags ("segments") that the
 * library allocates from its own metadata pages.
 *
 * Segments. Each span is represented by a span marker followed, in address
 * order, by the segments that tile it exactly: allocated and free ones.
 * Two free segments are never adjacent within a span (they coalesce at
 * free time), and segments never cross span borders. Spans themselves sit
 * on one list in the order they arrived (imported spans need not be
 * sorted: the source already guarantees that they do not overlap).
 *
 * Free segments are on segregated freelists. A power-of-two class per
 * bit of the size (in quanta) is split into eight linear subclasses, so a
 * class holds sizes within 12.5% of each other and sizes below 16 quanta
 * each have a class of their own. A bitmap of non-empty classes finds the
 * next class with a segment in a handful of instructions.
 *
 *  - Instant fit (the default) takes the first segment of the first
 *    non-empty class whose every member is large enough: O(1). Only when
 *    no such class exists does it look inside the request's own class,
 *    whose members may or may not fit, so a fit that exists is never
 *    missed. Each class keeps an upper bound of its members' sizes,
 *    tightened whenever the class is scanned in full, so a request that
 *    cannot be met fails in O(1) however fragmented the arena is.
 *  - Best fit returns the smallest free segment that fits: the classes are
 *    ordered by size, so the first class holding a fit holds the best one.
 *  - First fit takes the first segment that fits, in class order, starting
 *    with the request's own class.
 *  - Next fit walks forward in address order from the last next-fit
 *    allocation (the rotor). The rotor is a pointer, not a marker in the
 *    segment list, so it never keeps free neighbours from coalescing. The
 *    walk passes allocated segments too, so it asks the freelists first
 *    whether anything can fit, and after a budget that grows with the
 *    free segments it lets them give the walk's answer.
 *
 * Allocated segments are found at free time through a hash table keyed by
 * address; it grows and shrinks inline (by a factor of four, with
 * hysteresis) so chains stay O(1) with no background thread.
 *
 * Constrained allocation (vmem_xalloc) computes, for a candidate segment,
 * the lowest (or with VM_ENDALLOC the highest) address satisfying
 * alignment, phase, nocross and the [minaddr, maxaddr) window, with
 * arithmetic that never wraps at the top of the address space. Candidates
 * start in the first class whose members are large enough for the size
 * plus the worst alignment padding, so constrained requests are O(1) in the
 * common case too. A constrained request can miss every segment of a
 * class, so when none fits the classes are read in full; a memo of what
 * the last failed reading found keeps a repeated failure from reading the
 * same segments again (freelists are newest first, so only the segments
 * that arrived since are read).
 *
 * Imports. When an arena cannot satisfy a request it imports a span from
 * its source. Chains of arenas whose import function is vmem_alloc work to
 * any depth without recursion: the allocation walks down the chain until
 * an arena has room, then walks back up, adding each new span to the arena
 * above and carving the request out of it. The arena lock is never held
 * across an import or release call. VM_SLEEP requests that cannot be met
 * wait on the arena's condition variable (with a timeout as a safety net),
 * woken by frees, vmem_add and imports; a request that no span could ever
 * satisfy in an arena without a source fails at once instead of hanging.
 *
 * Boundary tags. Every operation reserves the tags it may need before it
 * changes anything, under the arena lock, into the arena's private reserve;
 * the reserve is refilled from a global pool of tag pages. An operation
 * that cannot get its tags fails cleanly with the arena unchanged, VM_SLEEP
 * or not: no free is bound to bring back pages the platform refused, so
 * waiting could hang. The stop travels to the outermost caller, through
 * imports and quantum caches (see stop_t), which warns a VM_SLEEP caller.
 *
 * Locking. One mutex per arena protects everything in it. A global lock
 * protects the list of arenas; the tag pool has its own lock, taken (if at
 * all) inside an arena lock. Errors are reported only after the arena lock
 * is dropped, so an error handler may call back into the library. Across
 * fork() every lock is taken and released around the call, so the child
 * can go on using every arena.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdatomic.h>
#include <stdbool.h>
#include "vmem_string.h"

#include <vmem/vmem.h>

#include "error.h"
#include "fault.h"
#include "platform.h"
#include "vmem_impl.h"
#ifdef VMEM_WITH_KMEM
#include "qcache.h"
#endif

/* Segment types. */
enum { SEG_SENTINEL, SEG_SPAN, SEG_ALLOC, SEG_FREE };

typedef struct vseg vseg_t;
struct vseg {
	uintptr_t start;
	size_t size;
	vseg_t *anext, *aprev;  /* address order within spans; spans in order */
	vseg_t *knext, *kprev;  /* FREE: freelist; ALLOC: hash chain; SPAN: span list */
	/* SPAN: arrival number, rising along both lists. FREE: insertion
	 * number, falling along its freelist (the newest is first). */
	uint64_t seq;
	uint8_t type;
	uint8_t imported;       /* SPAN: came from the source */
	uint8_t via_qcache;     /* SPAN: imported through the source's qcache */
	uint16_t cls;           /* FREE: freelist class */
	/*
	 * Padding to 64 bytes: tag pages are page-aligned, so every tag sits
	 * in one cache line (at 56 bytes, 7 tags in 8 straddled two).
	 */
	char pad[64 - 4 * sizeof (void *) - sizeof (uintptr_t) -
	    sizeof (size_t) - sizeof (uint64_t) - 4 - 2];
};

#if defined(__GNUC__)
#define VMEM_ALWAYS_INLINE inline __attribute__((always_inline))
#define VMEM_NOINLINE __attribute__((noinline))
#else
#define VMEM_ALWAYS_INLINE inline
#define VMEM_NOINLINE
#endif

#define NCLASS          496
#define NCLASS_WORDS    ((NCLASS + 63) / 64)
#define HASH_MIN        16
#define TAG_BATCH       16
#define TAG_KEEP        (4 * TAG_BATCH)
#define MAX_QCACHE      16
#define WAIT_MS         100
#define CHAIN_INLINE    16

/*
 * Internal flags in the low byte, which kmem passes on to the slab import
 * of a quantum cache: VM_QCTRY marks a quantum cache's try (its failure is
 * not counted; the caller counts its own), VM_QCABORT carries VM_ABORT
 * (outside the low byte) through kmem.
 */
#define VM_QCABORT      0x40
#define VM_QCTRY        0x80
#define VM_QCINTERNAL   (VM_QCABORT | VM_QCTRY) /* stripped from callers' flags */

struct vmem {
	char name[VMEM_NAMELEN];
	size_t quantum;
	unsigned qshift;
	int cflags;
	size_t qcache_max;
	size_t qcache_limit;       /* qcache_max with caches, else 0 */
	size_t min_import;
	vmem_alloc_t *afunc;
	vmem_ximport_t *xafunc;
	vmem_free_t *ffunc;
	vmem_t *source;
	/* Set by the arena's owner while other threads may look it up (the
	 * reclaimer's kas_of_arena): one atomic word. */
	_Atomic(void *) priv;

	/*
	 * The lock has a cache line of its own: waiting threads spin on it
	 * while the owner writes the arena's state.
	 */
	_Alignas(64) plat_mutex_t lock;
	_Alignas(64) plat_cond_t cv;
	unsigned nwaiters;
	uint64_t gen;           /* bumped by every free, add and import */

	vseg_t seg0;            /* address list sentinel */
	vseg_t span0;           /* span list sentinel */
	uint64_t span_seq;      /* the last span's arrival number */
	uint64_t free_seq;      /* the last free segment's insertion number */
	struct scan_memo *memo; /* what failed constrained scans learned */
	struct best_bounds *bounds; /* what best fit learned of the classes */
	unsigned side_backoff;  /* side table calls to go without pages */
	vseg_t *freelist[NCLASS];
	size_t cmax[NCLASS];    /* upper bound of member sizes, 0 if empty */
	uint64_t freemap[NCLASS_WORDS];
	vseg_t **hash;
	size_t hash_size;       /* buckets, a power of two */
	unsigned hash_bits;
	size_t hash_count;
	vseg_t *hash0[HASH_MIN];
	vseg_t *rotor;
	uintptr_t rotor_addr;   /* end of the last next-fit allocation */

	vseg_t *tag_free;       /* the arena's private tag reserve */
	size_t tag_nfree;
	size_t tags_owned;      /* reserve + in use */
	void (*meta_charge)(void *, long);
	void *meta_arg;

	unsigned nqcache;
	/* Callers waiting in qcache_alloc_wait: a cache free wakes them. */
	atomic_uint qc_sleepers;
	/*
	 * Calls on this arena that had to stop (alloc_stopped) for a reason
	 * that is not the call's own: no metadata (a shortage of the whole
	 * library), or anything that stopped a quantum cache's try (its
	 * waiter is the one to fail). A misuse in a plain call, such as its
	 * import function breaking its contract, ends that call alone. The
	 * low half counts all of them, the high half those for lack of
	 * metadata (each half wraps on its own). Read by a caller waiting on
	 * the arena's quantum caches, and by an arena importing from this
	 * one, to tell a failure that waiting cannot mend from an empty
	 * arena. One word, so the cache's fast path reads one load.
	 */
	atomic_uint stops;
	void *qcache[MAX_QCACHE];

	/* statistics */
	size_t mem_inuse, mem_import, mem_total;
	size_t nspans, nalloc, nfree;
	uint64_t st_alloc, st_free, st_wait, st_fail, st_lookup, st_search;
	uint64_t st_populate_fail, st_contains, st_import, st_release;

	vmem_t *list_next, *list_prev;
	unsigned reap_refs;     /* arena_list_visit at work on it (list lock) */
	unsigned nimporters;    /* listed arenas whose source this is */
};

/* A request, after validation: sizes rounded, bounds made inclusive. */
typedef struct req {
	size_t size;
	size_t align;           /* power of two >= quantum */
	size_t phase;
	size_t nocross;         /* 0 = none */
	uintptr_t lo;           /* lowest allowed address */
	uintptr_t hi;           /* highest allowed byte (inclusive) */
	int flags;
} req_t;

/* Why an allocation must fail at once, without reaping or waiting. */
typedef enum {
	STOP_NONE = 0,
	STOP_NOMETA,    /* no memory for boundary tags or bookkeeping */
	STOP_REPORTED   /* misuse, or no metadata, already reported */
} stop_t;

/* Count a call on vmp that had to stop (see vmem.stops). */
static void
count_stop(vmem_t *vmp, stop_t stop)
{
	unsigned old = atomic_load_explicit(&vmp->stops, memory_order_relaxed);
	unsigned new;

	do {
		unsigned all = (old + 1) & 0xffffu;
		unsigned nometa = (old >> 16) + (stop == STOP_NOMETA);

		new = ((nometa & 0xffffu) << 16) | all;
	} while (!atomic_compare_exchange_weak_explicit(&vmp->stops, &old,
	    new, memory_order_relaxed, memory_order_relaxed));
}

/* vmp's stop counts, read before a call that may stop. */
static inline unsigned
stop_marks(vmem_t *vmp)
{
	return atomic_load_explicit(&vmp->stops, memory_order_relaxed);
}

/* Did a call on vmp stop since marks were read, and why? */
static inline stop_t
stopped_since(vmem_t *vmp, unsigned marks)
{
	unsigned now = stop_marks(vmp);

	if ((now & 0xffffu) == (marks & 0xffffu))
		return STOP_NONE;
	return (now >> 16) != (marks >> 16) ? STOP_NOMETA : STOP_REPORTED;
}

static void vmem_release_span(vmem_t *vmp, uintptr_t addr, size_t size,
    bool via_qcache);

static inline bool
req_constrained(const vmem_t *vmp, const req_t *r)
{
	return r->align > vmp->quantum || r->nocross != 0 || r->lo != 0 ||
	    r->hi != UINTPTR_MAX;
}

/* ------------------------------------------------------------------ */
/* Global state: the arena list, the tag pool, the quantum-cache provider. */

static plat_mutex_t arena_list_lock;
static plat_cond_t arena_list_cv;       /* an arena's reap_refs fell to 0 */
static vmem_t *arena_list_head, *arena_list_tail;
static plat_mutex_t tagpool_lock;
static vseg_t *tagpool_free;
static atomic_int vmem_initialized;
static const vmem_qcache_ops_t *qcache_ops;

#define TAGPOOL_CHUNK   (64 * 1024)

static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

static void
vmem_init_once(void)
{
	plat_mutex_init(&arena_list_lock);
	plat_cond_init(&arena_list_cv);
	plat_mutex_init(&tagpool_lock);
#ifdef VMEM_WITH_KMEM
	if (qcache_ops == NULL)
		qcache_ops = &vmem_kmem_qcache_ops;
#endif
	plat_atfork(fork_prepare, fork_parent, fork_child);
}

/* Not static: layers above call it before registering their fork handlers. */
void
vmem_init(void)
{
	plat_once(&vmem_initialized, vmem_init_once);
}

void
vmem_set_qcache_ops(const vmem_qcache_ops_t *ops)
{
	vmem_init();
	qcache_ops = ops;
}

/* Whole pages, as the platform wants: pages may be larger than a chunk. */
static size_t
tagpool_chunk_bytes(void)
{
	size_t page = plat_pagesize();

	return page > TAGPOOL_CHUNK ? page : TAGPOOL_CHUNK;
}

/* Take n tags from the pool onto *list; false if metadata memory ran out. */
static bool
tagpool_take(vseg_t **list, size_t n)
{
	plat_mutex_lock(&tagpool_lock);
	for (size_t i = 0; i < n; i++) {
		vseg_t *t = tagpool_free;
		if (t == NULL) {
			size_t bytes = tagpool_chunk_bytes();
			char *chunk = meta_pages_alloc(bytes);
			size_t count = bytes / sizeof (vseg_t);
			if (chunk == NULL) {
				/*
				 * Give back what this call took, still under
				 * the lock: other arenas take and give tags
				 * meanwhile.
				 */
				while (i-- > 0) {
					t = *list;
					*list = t->knext;
					t->knext = tagpool_free;
					tagpool_free = t;
				}
				plat_mutex_unlock(&tagpool_lock);
				return false;
			}
			for (size_t k = 0; k < count; k++) {
				vseg_t *c = (vseg_t *)(void *)(chunk +
				    k * sizeof (vseg_t));
				c->knext = tagpool_free;
				tagpool_free = c;
			}
			t = tagpool_free;
		}
		tagpool_free = t->knext;
		t->knext = *list;
		*list = t;
	}
	plat_mutex_unlock(&tagpool_lock);
	return true;
}

static void
tagpool_give(vseg_t *list)
{
	plat_mutex_lock(&tagpool_lock);
	while (list != NULL) {
		vseg_t *next = list->knext;
		list->knext = tagpool_free;
		tagpool_free = list;
		list = next;
	}
	plat_mutex_unlock(&tagpool_lock);
}

static void
meta_charge(vmem_t *vmp, long ntags)
{
	vmp->tags_owned = (size_t)((long)vmp->tags_owned + ntags);
	if (vmp->meta_charge != NULL)
		vmp->meta_charge(vmp->meta_arg, ntags * (long)sizeof (vseg_t));
}

/* Make sure the arena's reserve holds n tags (lock held). */
static bool
tags_reserve(vmem_t *vmp, size_t n)
{
	size_t want;

	if (vmp->tag_nfree >= n)
		return true;
	want = n - vmp->tag_nfree + TAG_BATCH;
	if (!tagpool_take(&vmp->tag_free, want)) {
		vmp->st_populate_fail++;
		return false;
	}
	vmp->tag_nfree += want;
	meta_charge(vmp, (long)want);
	return true;
}

static vseg_t *
tag_get(vmem_t *vmp)
{
	vseg_t *t = vmp->tag_free;

	/* Callers reserved first; running dry here is a library bug. */
	vmp->tag_free = t->knext;
	vmp->tag_nfree--;
	t->knext = t->kprev = NULL;
	t->imported = t->via_qcache = 0;
	return t;
}

static void
tag_put(vmem_t *vmp, vseg_t *t)
{
	t->type = SEG_SENTINEL;
	t->knext = vmp->tag_free;
	vmp->tag_free = t;
	vmp->tag_nfree++;
}

/* Give surplus tags back to the pool (lock held). */
static void
tags_trim(vmem_t *vmp)
{
	vseg_t *list = NULL;
	long n = 0;

	if (vmp->tag_nfree <= TAG_KEEP)
		return;
	while (vmp->tag_nfree > TAG_KEEP / 2) {
		vseg_t *t = vmp->tag_free;
		vmp->tag_free = t->knext;
		vmp->tag_nfree--;
		t->knext = list;
		list = t;
		n++;
	}
	meta_charge(vmp, -n);
	tagpool_give(list);
}

/* ------------------------------------------------------------------ */
/* Size classes and freelists. */

static inline unsigned
flog2(uint64_t x)
{
	return 63u - (unsigned)__builtin_clzll(x);
}

/* Sizes (in quanta) below this have a class of their own, numbered by the
 * size: size_class splits each power of two into 8, so up to 2 x 8 the
 * split is one quantum wide. */
#define CLASS_ONE_SIZE  16

/* Class of a size given in quanta (n >= 1). */
static inline unsigned
size_class(uint64_t n)
{
	unsigned fl;

	if (n < 8)
		return (unsigned)n;
	fl = flog2(n);
	return 8 + (fl - 3) * 8 + (unsigned)((n >> (fl - 3)) & 7);
}

/* Smallest size (in quanta) of class c. */
static inline uint64_t
class_low(unsigned c)
{
	unsigned fl;

	if (c < 8)
		return c;
	fl = (c - 8) / 8 + 3;
	return (uint64_t)(8 + (c - 8) % 8) << (fl - 3);
}

/* First class all of whose members hold n quanta; NCLASS if none. */
static inline unsigned
class_guaranteed(uint64_t n)
{
	unsigned c = size_class(n);

	return class_low(c) == n ? c : c + 1;
}

/* First non-empty class >= c, or NCLASS. */
static inline unsigned
class_next(const vmem_t *vmp, unsigned c)
{
	unsigned w;
	uint64_t m;

	if (c >= NCLASS)
		return NCLASS;
	w = c / 64;
	m = vmp->freemap[w] & (~0ULL << (c % 64));
	while (m == 0) {
		if (++w == NCLASS_WORDS)
			return NCLASS;
		m = vmp->freemap[w];
	}
	return w * 64 + (unsigned)__builtin_ctzll(m);
}

static void
freelist_insert(vmem_t *vmp, vseg_t *s)
{
	unsigned c = size_class(s->size >> vmp->qshift);

	s->type = SEG_FREE;
	s->cls = (uint16_t)c;
	s->seq = ++vmp->free_seq;
	s->kprev = NULL;
	s->knext = vmp->freelist[c];
	if (s->knext != NULL)
		s->knext->kprev = s;
	vmp->freelist[c] = s;
	vmp->freemap[c / 64] |= 1ULL << (c % 64);
	if (s->size > vmp->cmax[c])
		vmp->cmax[c] = s->size;
	vmp->nfree++;
}

static void
freelist_remove(vmem_t *vmp, vseg_t *s)
{
	unsigned c = s->cls;

	if (s->kprev != NULL)
		s->kprev->knext = s->knext;
	else
		vmp->freelist[c] = s->knext;
	if (s->knext != NULL)
		s->knext->kprev = s->kprev;
	if (vmp->freelist[c] == NULL) {
		vmp->freemap[c / 64] &= ~(1ULL << (c % 64));
		vmp->cmax[c] = 0;
	}
	vmp->nfree--;
}

/* ------------------------------------------------------------------ */
/* The address list. */

static inline void
seg_insert_after(vseg_t *prev, vseg_t *s)
{
	s->aprev = prev;
	s->anext = prev->anext;
	prev->anext->aprev = s;
	prev->anext = s;
}

static inline void
seg_unlink(vseg_t *s)
{
	s->aprev->anext = s->anext;
	s->anext->aprev = s->aprev;
}

/* Last byte of a segment (never wraps: segments hold no address 0). */
static inline uintptr_t
seg_last(const vseg_t *s)
{
	return s->start + (s->size - 1);
}

/* bytes rounded up to whole pages (metadata comes in pages). */
static size_t
page_round(size_t bytes)
{
	size_t page = plat_pagesize();

	return (bytes + page - 1) & ~(page - 1);
}

/* ------------------------------------------------------------------ */
/* The allocated-segment hash. */

static inline size_t
hash_index(const vmem_t *vmp, uintptr_t addr)
{
	uint64_t h = (uint64_t)(addr >> vmp->qshift) * 0x9e3779b97f4a7c15ULL;

	return (size_t)(h >> (64 - vmp->hash_bits));
}

static void
hash_resize(vmem_t *vmp, unsigned bits)
{
	size_t nsize = (size_t)1 << bits;
	size_t bytes = page_round(nsize * sizeof (vseg_t *));
	vseg_t **old = vmp->hash, **table;
	size_t osize = vmp->hash_size;

	if (nsize == HASH_MIN) {
		table = vmp->hash0;
		memset(table, 0, sizeof (vmp->hash0));
	} else {
		table = meta_pages_alloc(bytes);
		if (table == NULL)
			return; /* keep the old table: slower, still correct */
	}
	vmp->hash = table;
	vmp->hash_size = nsize;
	vmp->hash_bits = bits;
	for (size_t i = 0; i < osize; i++) {
		vseg_t *s = old[i];
		while (s != NULL) {
			vseg_t *next = s->knext;
			size_t h = hash_index(vmp, s->start);
			s->knext = table[h];
			table[h] = s;
			s = next;
		}
	}
	if (old != vmp->hash0)
		plat_pages_free(old, page_round(osize * sizeof (vseg_t *)));
}

static void
hash_insert(vmem_t *vmp, vseg_t *s)
{
	size_t h = hash_index(vmp, s->start);

	s->type = SEG_ALLOC;
	s->knext = vmp->hash[h];
	vmp->hash[h] = s;
	vmp->hash_count++;
	vmp->nalloc++;
	if (vmp->hash_count > vmp->hash_size && vmp->hash_bits < 40)
		hash_resize(vmp, vmp->hash_bits + 2);
}

/* The hash link that points at the segment starting at addr, or NULL. */
static vseg_t **
hash_slot(vmem_t *vmp, uintptr_t addr)
{
	vseg_t **pp = &vmp->hash[hash_index(vmp, addr)];

	for (vseg_t *s = *pp; s != NULL; pp = &s->knext, s = s->knext) {
		vmp->st_lookup++;
		if (s->start == addr)
			return pp;
	}
	return NULL;
}

static vseg_t *
hash_unlink(vmem_t *vmp, vseg_t **pp)
{
	vseg_t *s = *pp;

	*pp = s->knext;
	vmp->hash_count--;
	vmp->nalloc--;
	if (vmp->hash_size > HASH_MIN && vmp->hash_count < vmp->hash_size / 8)
		hash_resize(vmp, vmp->hash_bits - 2);
	return s;
}

/* ------------------------------------------------------------------ */
/* Fitting a request into a segment. */

/* Lowest a >= x with a % align == phase; false if that would wrap. */
static inline bool
align_up(uintptr_t x, const req_t *r, uintptr_t *out)
{
	uintptr_t base = x - (x & (r->align - 1));
	uintptr_t a = base + r->phase;

	if (a < x) {
		if (a + r->align < a)
			return false;
		a += r->align;
	}
	*out = a;
	return true;
}

/* Highest a <= x with a % align == phase; false if none. */
static inline bool
align_down(uintptr_t x, const req_t *r, uintptr_t *out)
{
	uintptr_t base = x - (x & (r->align - 1));
	uintptr_t a = base + r->phase;

	if (a > x) {
		if (base < r->align)
			return false;
		a -= r->align;
	}
	*out = a;
	return true;
}

static inline bool
crosses(uintptr_t a, size_t size, size_t nocross)
{
	return nocross != 0 &&
	    ((a ^ (a + (size - 1))) & ~(uintptr_t)(nocross - 1)) != 0;
}

/* Lowest placement of r within [lo, hi] (inclusive bounds). */
static bool
place_low(uintptr_t lo, uintptr_t hi, const req_t *r, uintptr_t *out)
{
	uintptr_t a;

	if (!align_up(lo, r, &a))
		return false;
	for (int tries = 0; tries < 3; tries++) {
		if (a > hi || hi - a < r->size - 1)
			return false;
		if (!crosses(a, r->size, r->nocross)) {
			*out = a;
			return true;
		}
		/* Move to the next nocross boundary and align again. */
		uintptr_t boundary = (a | (uintptr_t)(r->nocross - 1)) + 1;
		if (boundary == 0 || !align_up(boundary, r, &a))
			return false;
	}
	return false;
}

/* Highest placement of r within [lo, hi]. */
static bool
place_high(uintptr_t lo, uintptr_t hi, const req_t *r, uintptr_t *out)
{
	uintptr_t a;

	if (hi - lo < r->size - 1)
		return false;
	if (!align_down(hi - (r->size - 1), r, &a))
		return false;
	for (int tries = 0; tries < 3; tries++) {
		if (a < lo)
			return false;
		if (!crosses(a, r->size, r->nocross)) {
			*out = a;
			return true;
		}
		/* End below the boundary the request crossed. */
		uintptr_t boundary = (a + (r->size - 1)) &
		    ~(uintptr_t)(r->nocross - 1);
		if (boundary < r->size || !align_down(boundary - r->size, r, &a))
			return false;
	}
	return false;
}

/* Where r fits in [start, last]; false if it does not. */
static bool
fit_range(uintptr_t start, uintptr_t last, const req_t *r, uintptr_t *out)
{
	uintptr_t lo = start > r->lo ? start : r->lo;
	uintptr_t hi = last < r->hi ? last : r->hi;

	if (lo > hi || hi - lo < r->size - 1)
		return false;
	if (r->flags & VM_ENDALLOC)
		return place_high(lo, hi, r, out);
	return place_low(lo, hi, r, out);
}

static inline bool
seg_fit(const vseg_t *s, const req_t *r, uintptr_t *out)
{
	if (s->size < r->size)
		return false;
	return fit_range(s->start, seg_last(s), r, out);
}

/* seg_fit for a request with no constraint: any segment as large fits. */
static inline bool
seg_fit_plain(const vseg_t *s, const req_t *r, uintptr_t *out)
{
	if (s->size < r->size)
		return false;
	*out = (r->flags & VM_ENDALLOC) ? s->start + (s->size - r->size) :
	    s->start;
	return true;
}

/* ------------------------------------------------------------------ */
/* What failed constrained scans learned. */

/*
 * A constrained request may fit no segment of a class however large its
 * members are (alignment, nocross and the window decide), so a class that
 * cannot serve it is read in full, and in a full arena every such call
 * would read every free segment: O(fragments) per failure, where an
 * unconstrained failure is O(1).
 *
 * The memo remembers, for one set of constraints (the key: the last that
 * failed a full scan), per class: no segment inserted into class c at or
 * before insertion number seq holds a request with these constraints of
 * size or more. It stays true as the arena changes: freelists are newest
 * first, a free segment never grows or moves while listed (it is taken off
 * and inserted again), and a segment that holds a request holds it at any
 * smaller size. So a later scan of c with the same key and at least that
 * size reads only the segments in front of seq: a repeated failure costs
 * O(segments inserted since), not O(all). Allocated at the first failure;
 * without it (no pages) every scan is full.
 */
typedef struct memo_ent {
	uint64_t seq;
	size_t size;
	uint64_t epoch;         /* valid while the memo's epoch */
} memo_ent_t;

typedef struct scan_memo {
	size_t align, phase, nocross;
	uintptr_t lo, hi;
	uint64_t epoch;         /* bumped with the key: old entries lapse */
	memo_ent_t cls[NCLASS];
} scan_memo_t;

static size_t
memo_bytes(void)
{
	return page_round(sizeof (scan_memo_t));
}

static inline bool
memo_key_is(const scan_memo_t *m, const req_t *r)
{
	return m->align == r->align && m->phase == r->phase &&
	    m->nocross == r->nocross && m->lo == r->lo && m->hi == r->hi;
}

/*
 * Pages for a side table (the memo, the bounds), made when first needed.
 * Without them the arena is only slower, so after a refusal the next
 * SIDE_RETRY calls go without, instead of asking the platform again under
 * the arena lock at every failure of a starved system.
 */
#define SIDE_RETRY      1024

static void *
side_table_alloc(vmem_t *vmp, size_t bytes)
{
	void *p;

	if (vmp->side_backoff > 0) {
		vmp->side_backoff--;
		return NULL;
	}
	if ((p = meta_pages_alloc(bytes)) == NULL)
		vmp->side_backoff = SIDE_RETRY;
	return p;
}

/* Class c's entry that applies to r (same key, size at least its), or NULL. */
static memo_ent_t *
memo_find(vmem_t *vmp, unsigned c, const req_t *r)
{
	scan_memo_t *m = vmp->memo;
	memo_ent_t *e;

	if (m == NULL || !memo_key_is(m, r))
		return NULL;
	e = &m->cls[c];
	return e->epoch == m->epoch && r->size >= e->size ? e : NULL;
}

/* A full scan of non-empty class c found no room for r. */
static void
memo_learn(vmem_t *vmp, unsigned c, const req_t *r)
{
	scan_memo_t *m = vmp->memo;

	if (m == NULL) {
		/* (pages come zeroed: epoch 0, no entry valid) */
		if ((m = side_table_alloc(vmp, memo_bytes())) == NULL)
			return;
		vmp->memo = m;
	}
	if (m->epoch == 0 || !memo_key_is(m, r)) {
		m->align = r->align;
		m->phase = r->phase;
		m->nocross = r->nocross;
		m->lo = r->lo;
		m->hi = r->hi;
		m->epoch++;
	}
	m->cls[c] = (memo_ent_t){ vmp->freelist[c]->seq, r->size, m->epoch };
}

/*
 * Best fit's lower bounds, for arenas that use it. min[c] bounds from
 * below the sizes of class c's members inserted up to number seq[c] (the
 * members of its last whole reading); newer members are at the head of
 * the list and read first anyway. So once a class has been read whole, a
 * best-fit request smaller than its members stops at the first member of
 * the least size instead of reading them all. Allocated at the first
 * whole reading by best fit; nothing to maintain on insertion.
 */
typedef struct best_bounds {
	size_t min[NCLASS];
	uint64_t seq[NCLASS];
} best_bounds_t;

static size_t
bounds_bytes(void)
{
	return page_round(sizeof (best_bounds_t));
}

/* Best fit read non-empty class c whole: its least member is min. */
static void
bounds_learn(vmem_t *vmp, unsigned c, size_t min)
{
	if (vmp->bounds == NULL &&
	    (vmp->bounds = side_table_alloc(vmp, bounds_bytes())) == NULL)
		return;
	vmp->bounds->min[c] = min;
	vmp->bounds->seq[c] = vmp->freelist[c]->seq;
}

/* ------------------------------------------------------------------ */
/* Searching the freelists. */

/*
 * Scan class c for a segment that fits. best: the smallest one, else the
 * first. plain: r has no constraint, so size alone decides (inlined with
 * constant flags, each caller gets the loop it needs). A scan that reads
 * the whole class tightens its size bounds, and if it found nothing for a
 * constrained request teaches the memo; a scan the memo shortens reads
 * only the newer segments, and moves the memo on if none of them holds
 * the memo's size. Best fit stops at a fit of the least size the class
 * can hold for r: r's size, or the class's smallest size, or once past
 * the newer members the bound its last whole reading left (so a class
 * full of equal segments larger than r is not read whole every time).
 */
static VMEM_ALWAYS_INLINE vseg_t *
class_scan(vmem_t *vmp, unsigned c, const req_t *r, bool best, bool plain,
    uintptr_t *addrp)
{
	vseg_t *found = NULL, *s;
	uintptr_t found_addr = 0, a;
	size_t seen_max = 0, seen_min = SIZE_MAX;
	size_t least = 0;
	best_bounds_t *bb = best ? vmp->bounds : NULL;
	uint64_t bound_seq = bb != NULL ? bb->seq[c] : 0;
	bool constrained = !plain && req_constrained(vmp, r);
	memo_ent_t *known = constrained ? memo_find(vmp, c, r) : NULL;
	uint64_t known_seq = known != NULL ? known->seq : 0;
	bool moves_on = true;   /* no newer segment holds known->size */
	bool check_smaller = known != NULL && known->size < r->size;
	req_t smaller;

	if (vmp->cmax[c] < r->size)
		return NULL;
	if (check_smaller) {
		smaller = *r;
		smaller.size = known->size;
	}
	if (best) {
		/* (class_low(c) quanta fit in a size: c has members) */
		least = (size_t)class_low(c) << vmp->qshift;
		if (r->size > least)
			least = r->size;
	}
	for (s = vmp->freelist[c]; s != NULL && s->seq > known_seq;
	    s = s->knext) {
		if (best && s->seq <= bound_seq) {
			/* Past the newer members: the bound applies. */
			size_t b = bb->min[c] < seen_min ? bb->min[c] : seen_min;
			bound_seq = 0;
			if (b > least)
				least = b;
			if (found != NULL && found->size == least)
				break;
		}
		vmp->st_search++;
		if (s->size > seen_max)
			seen_max = s->size;
		if (best && s->size < seen_min)
			seen_min = s->size;
		if (!(plain ? seg_fit_plain(s, r, &a) : seg_fit(s, r, &a))) {
			if (check_smaller && moves_on &&
			    seg_fit(s, &smaller, &a))
				moves_on = false;
			continue;
		}
		if (found == NULL || s->size < found->size ||
		    (s->size == found->size && a < found_addr)) {
			found = s;
			found_addr = a;
		}
		if (!best || s->size == least)
			break;
	}
	if (s == NULL && known == NULL) {
		/* read whole: the bounds are exact now */
		vmp->cmax[c] = seen_max;
		if (best)
			bounds_learn(vmp, c, seen_min);
	}
	if (found != NULL) {
		*addrp = found_addr;
		return found;
	}
	if (known == NULL) {
		if (constrained)
			memo_learn(vmp, c, r);
	} else if (moves_on && vmp->freelist[c]->seq > known->seq) {
		known->seq = vmp->freelist[c]->seq;
	}
	return NULL;
}

/* The first segment of class c that fits r, whatever r's constraints. */
static VMEM_NOINLINE vseg_t *
class_first_fit(vmem_t *vmp, unsigned c, const req_t *r, uintptr_t *addrp)
{
	return class_scan(vmp, c, r, false, false, addrp);
}

/*
 * Whether some free segment could hold r, before next fit walks the
 * address list (allocated segments too) for it. Every member of a class
 * above r's own is large enough; when r's own class is the only
 * candidate, read it: its size bound is only an upper bound, and next fit
 * alone would never tighten it (the read does).
 */
static bool
some_free_holds(vmem_t *vmp, const req_t *r)
{
	unsigned own = size_class(r->size >> vmp->qshift);
	unsigned c = class_next(vmp, own);
	uintptr_t a;

	if (c != own || class_next(vmp, own + 1) < NCLASS)
		return c < NCLASS;
	return class_first_fit(vmp, own, r, &a) != NULL;
}

/*
 * Next fit's walk passes allocated segments, so in a nearly full space
 * (a pid arena with a few free ids) it would read them all. After a
 * budget of steps that grows with the number of free segments, the
 * freelists answer instead: of the free segments that hold r, the first
 * in the walk's order. That costs one read per free segment of a class
 * that may hold r, so a call costs O(free segments), never O(segments).
 * The walk's order is the address list's: spans in arrival order (their
 * seq), addresses within a span, a span's marker before its segments.
 * Finding a segment's span reads the span list, or, in an arena of many
 * spans, a temporary index of them sorted by address (if there is no
 * memory for it, the walk goes on).
 */
/* Arenas of more spans than this sort them by address for the answer. */
#define NEXTFIT_SPANS 16

/* Test seam: the walk's budget in steps; -1: the arena's own. */
long vmem_nextfit_test_budget = -1;

typedef struct {
	uint64_t span;          /* its span's arrival number */
	uintptr_t start;
	unsigned inner;         /* 0 for a span's marker, 1 for its segments */
} list_pos_t;

/* A span by address, for finding a segment's span by binary search. */
typedef struct {
	uintptr_t start, last;
	uint64_t seq;
} span_key_t;

typedef struct {
	span_key_t *v;          /* NULL: read the span list instead */
	size_t n, bytes;
} span_index_t;

static void
span_keys_sift(span_key_t *v, size_t root, size_t n)
{
	for (;;) {
		size_t child = 2 * root + 1;
		span_key_t t;

		if (child >= n)
			return;
		if (child + 1 < n && v[child + 1].start > v[child].start)
			child++;
		if (v[root].start >= v[child].start)
			return;
		t = v[root];
		v[root] = v[child];
		v[child] = t;
		root = child;
	}
}

/* Heapsort: no recursion and no memory, as the core has no libc. */
static void
span_keys_sort(span_key_t *v, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		span_keys_sift(v, i, n);
	for (size_t end = n; end-- > 1;) {
		span_key_t t = v[0];

		v[0] = v[end];
		v[end] = t;
		span_keys_sift(v, 0, end);
	}
}

/* Index the spans of an arena of many; false if no memory for it. */
static bool
span_index_make(vmem_t *vmp, span_index_t *ix)
{
	size_t i = 0;

	ix->v = NULL;
	ix->n = vmp->nspans;
	if (ix->n <= NEXTFIT_SPANS)
		return true;
	ix->bytes = page_round(ix->n * sizeof (span_key_t));
	if ((ix->v = meta_pages_alloc(ix->bytes)) == NULL)
		return false;
	for (vseg_t *sp = vmp->span0.knext; sp != &vmp->span0; sp = sp->knext)
		ix->v[i++] = (span_key_t){ sp->start, seg_last(sp), sp->seq };
	span_keys_sort(ix->v, ix->n);
	return true;
}

static void
span_index_free(span_index_t *ix)
{
	if (ix->v != NULL)
		plat_pages_free(ix->v, ix->bytes);
}

/* The arrival number of the span holding addr. */
static uint64_t
span_seq_of(const vmem_t *vmp, const span_index_t *ix, uintptr_t addr)
{
	size_t lo = 0, hi;

	if (ix->v == NULL) {
		for (const vseg_t *sp = vmp->span0.knext; sp != &vmp->span0;
		    sp = sp->knext)
			if (addr >= sp->start && addr <= seg_last(sp))
				return sp->seq;
		return 0;
	}
	/* The last span starting at or below addr. */
	hi = ix->n;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (ix->v[mid].start <= addr)
			lo = mid;
		else
			hi = mid;
	}
	return ix->v[lo].seq;
}

static list_pos_t
list_pos(const vmem_t *vmp, const span_index_t *ix, const vseg_t *s)
{
	list_pos_t p = { 0, s->start, s->type != SEG_SPAN };

	p.span = s->type == SEG_SPAN ? s->seq : span_seq_of(vmp, ix, s->start);
	return p;
}

static bool
list_before(const list_pos_t *a, const list_pos_t *b)
{
	if (a->span != b->span)
		return a->span < b->span;
	if (a->start != b->start)
		return a->start < b->start;
	return a->inner < b->inner;
}

/* Steps before the freelists answer: about what their answer costs. */
static size_t
nextfit_budget(const vmem_t *vmp)
{
	if (vmem_nextfit_test_budget >= 0)
		return (size_t)vmem_nextfit_test_budget;
	return 2 * vmp->nfree + 16 +
	    (vmp->nspans > NEXTFIT_SPANS ? 2 * vmp->nspans : 0);
}

/*
 * The free segment that holds r and comes first in the address list's
 * cyclic order from `from` (the walk's next step; a freed rotor segment
 * the walk skipped comes last in that order, as the walk takes it). Sets
 * *gave_up, and returns NULL, if an arena of many spans had no memory to
 * index them: the caller walks on.
 */
static vseg_t *
nextfit_from_freelists(vmem_t *vmp, const req_t *r, const vseg_t *from,
    uintptr_t *addrp, bool *gave_up)
{
	span_index_t ix;
	list_pos_t here, best_pos, p;
	vseg_t *best = NULL;
	bool best_ahead = false, ahead;
	uintptr_t a, best_addr = 0;
	unsigned c = size_class(r->size >> vmp->qshift);

	if (!span_index_make(vmp, &ix)) {
		*gave_up = true;
		return NULL;
	}
	here = best_pos = list_pos(vmp, &ix, from);
	for (c = class_next(vmp, c); c < NCLASS; c = class_next(vmp, c + 1)) {
		for (vseg_t *s = vmp->freelist[c]; s != NULL; s = s->knext) {
			vmp->st_search++;
			if (!seg_fit(s, r, &a))
				continue;
			p = list_pos(vmp, &ix, s);
			ahead = !list_before(&p, &here);
			if (best == NULL || (ahead && !best_ahead) ||
			    (ahead == best_ahead && list_before(&p, &best_pos))) {
				best = s;
				best_pos = p;
				best_ahead = ahead;
				best_addr = a;
			}
		}
	}
	span_index_free(&ix);
	*addrp = best_addr;
	return best;
}

static vseg_t *
find_nextfit(vmem_t *vmp, const req_t *r, uintptr_t *addrp)
{
	vseg_t *start = vmp->rotor != NULL ? vmp->rotor : vmp->seg0.anext;
	vseg_t *s = start, *found;
	bool resume, behind;
	size_t budget;

	/* The walk passes allocated segments too: in a full id arena it
	 * would read every one to fail. */
	if (s == &vmp->seg0 || !some_free_holds(vmp, r))
		return NULL;
	/*
	 * The last next-fit segment may have been freed and coalesced with
	 * what lies below it: resume after it, so freed ids are not reused
	 * at once, and come back to the part below only at the end.
	 */
	resume = start->type == SEG_FREE && vmp->rotor_addr > start->start &&
	    vmp->rotor_addr <= seg_last(start);
	/* Freed, and nothing after it: the last place to look, not the first. */
	behind = start->type == SEG_FREE && vmp->rotor_addr > seg_last(start);
	if (resume) {
		req_t after = *r;
		if (after.lo < vmp->rotor_addr)
			after.lo = vmp->rotor_addr;
		vmp->st_search++;
		if (seg_fit(start, &after, addrp))
			return start;
		s = start->anext;
		if (s == &vmp->seg0)
			s = s->anext;
	} else if (behind) {
		s = start->anext;
		if (s == &vmp->seg0)
			s = s->anext;
	}
	budget = nextfit_budget(vmp);
	do {
		if (budget-- == 0) {
			/* Nothing fits between the walk's start and s. */
			bool gave_up = false;

			found = nextfit_from_freelists(vmp, r, s, addrp,
			    &gave_up);
			if (found != NULL)
				return found;
			if (!gave_up)
				break;
			budget = SIZE_MAX;      /* walk on */
		}
		vmp->st_search++;
		if (s->type == SEG_FREE && seg_fit(s, r, addrp))
			return s;
		s = s->anext;
		if (s == &vmp->seg0)
			s = s->anext;
	} while (s != start);
	if ((resume || behind) && seg_fit(start, r, addrp))
		return start;
	return NULL;
}

/* Best and first fit: classes in size order from our own. */
static vseg_t *
find_ordered(vmem_t *vmp, const req_t *r, unsigned own, bool best,
    uintptr_t *addrp)
{
	bool plain = !req_constrained(vmp, r);

	for (unsigned c = class_next(vmp, own); c < NCLASS;
	    c = class_next(vmp, c + 1)) {
		vseg_t *s;
		if (plain)
			s = best ? class_scan(vmp, c, r, true, true, addrp) :
			    class_scan(vmp, c, r, false, true, addrp);
		else if (best)
			s = class_scan(vmp, c, r, true, false, addrp);
		else
			s = class_first_fit(vmp, c, r, addrp);
		if (s != NULL)
			return s;
	}
	return NULL;
}

/*
 * Instant fit's first class all of whose members hold r wherever its
 * alignment puts it: a segment of size + align - quantum always has room
 * after padding to the alignment. NCLASS if none can.
 */
static inline unsigned
instant_sure_class(const vmem_t *vmp, const req_t *r)
{
	size_t need = r->size;

	if (r->align > vmp->quantum) {
		need += r->align - vmp->quantum;
		if (need < r->size)
			return NCLASS;
	}
	return class_guaranteed(need >> vmp->qshift);
}

/* Find a free segment and placement for r (lock held). */
static vseg_t *
find_fit(vmem_t *vmp, const req_t *r, uintptr_t *addrp)
{
	uint64_t n = r->size >> vmp->qshift;
	int policy = r->flags & (VM_BESTFIT | VM_FIRSTFIT | VM_NEXTFIT);
	unsigned own = size_class(n), sure, c;
	vseg_t *s;

	if (policy == VM_NEXTFIT)
		return find_nextfit(vmp, r, addrp);
	if (policy != 0)
		return find_ordered(vmp, r, own, policy == VM_BESTFIT, addrp);
	sure = instant_sure_class(vmp, r);
	c = class_next(vmp, sure);
	if (c < NCLASS && !req_constrained(vmp, r)) {
		/* The hot path: every member of class c fits. */
		s = vmp->freelist[c];
		vmp->st_search++;
		*addrp = (r->flags & VM_ENDALLOC) ?
		    s->start + (s->size - r->size) : s->start;
		return s;
	}
	for (; c < NCLASS; c = class_next(vmp, c + 1)) {
		s = class_first_fit(vmp, c, r, addrp);
		if (s != NULL)
			return s;
	}
	/* The classes that might hold a fit. */
	for (c = class_next(vmp, own); c < sure && c < NCLASS;
	    c = class_next(vmp, c + 1)) {
		s = class_first_fit(vmp, c, r, addrp);
		if (s != NULL)
			return s;
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Carving and freeing segments (lock held, tags reserved). */

/*
 * The rotor's free segment was cut into front, s and back (either may be
 * NULL): the rotor stays with the first piece that reaches its address,
 * or the last piece, so next fit goes on from where it was.
 */
static void
rotor_follow(vmem_t *vmp, vseg_t *front, vseg_t *s, vseg_t *back)
{
	uintptr_t ra = vmp->rotor_addr;

	if (front != NULL && ra <= seg_last(front))
		vmp->rotor = front;
	else if (ra <= seg_last(s) || back == NULL)
		vmp->rotor = s;
	else
		vmp->rotor = back;
}

/* Allocate [addr, addr + size) out of free segment s; returns the ALLOC seg. */
static vseg_t *
seg_carve(vmem_t *vmp, vseg_t *s, uintptr_t addr, size_t size)
{
	uintptr_t end = addr + size;        /* may be 0 at the very top */
	size_t tail = s->start + s->size - end;
	vseg_t *front = NULL, *back = NULL;

	freelist_remove(vmp, s);
	if (addr != s->start) {
		front = tag_get(vmp);
		front->start = s->start;
		front->size = addr - s->start;
		seg_insert_after(s->aprev, front);
		freelist_insert(vmp, front);
	}
	if (tail != 0) {
		back = tag_get(vmp);
		back->start = end;
		back->size = tail;
		seg_insert_after(s, back);
		freelist_insert(vmp, back);
	}
	s->start = addr;
	s->size = size;
	if (vmp->rotor == s)
		rotor_follow(vmp, front, s, back);
	hash_insert(vmp, s);
	vmp->mem_inuse += size;
	vmp->st_alloc++;
	return s;
}

/* Carve r at addr out of s; a next-fit request moves the rotor past it. */
static inline void
carve_request(vmem_t *vmp, vseg_t *s, uintptr_t addr, const req_t *r)
{
	s = seg_carve(vmp, s, addr, r->size);
	if (r->flags & VM_NEXTFIT) {
		vmp->rotor = s;
		vmp->rotor_addr = s->start + s->size;
	}
}

static void
span_unlink(vmem_t *vmp, vseg_t *span)
{
	span->kprev->knext = span->knext;
	span->knext->kprev = span->kprev;
	seg_unlink(span);
	vmp->nspans--;
	vmp->mem_total -= span->size;
	if (span->imported)
		vmp->mem_import -= span->size;
}

/*
 * Free allocated segment s (already out of the hash). Coalesces with free
 * neighbours; if that frees a whole imported span, removes the span and
 * returns true with its range in *span_addr and *span_size (and whether it came
 * through the source's quantum cache) for release after unlocking.
 */
static bool
seg_free(vmem_t *vmp, vseg_t *s, uintptr_t *span_addr, size_t *span_size,
    bool *via_qcache)
{
	vseg_t *prev = s->aprev, *next = s->anext, *span;

	vmp->mem_inuse -= s->size;
	vmp->st_free++;
	vmp->gen++;
	if (prev->type == SEG_FREE) {
		freelist_remove(vmp, prev);
		seg_unlink(prev);
		s->start = prev->start;
		s->size += prev->size;
		if (vmp->rotor == prev)
			vmp->rotor = s;
		tag_put(vmp, prev);
	}
	if (next->type == SEG_FREE) {
		freelist_remove(vmp, next);
		seg_unlink(next);
		s->size += next->size;
		if (vmp->rotor == next)
			vmp->rotor = s;
		tag_put(vmp, next);
	}
	span = s->aprev;
	if (span->type == SEG_SPAN && span->imported &&
	    span->start == s->start && span->size == s->size) {
		*span_addr = span->start;
		*span_size = span->size;
		*via_qcache = span->via_qcache;
		if (vmp->rotor == s || vmp->rotor == span)
			vmp->rotor = NULL;
		seg_unlink(s);
		span_unlink(vmp, span);
		tag_put(vmp, s);
		tag_put(vmp, span);
		vmp->st_release++;
		return true;
	}
	s->type = SEG_FREE;
	freelist_insert(vmp, s);
	return false;
}

/* Add span [addr, addr + size) with one free segment; returns the free seg. */
static vseg_t *
span_add(vmem_t *vmp, uintptr_t addr, size_t size, bool imported,
    bool via_qcache)
{
	vseg_t *span = tag_get(vmp), *s = tag_get(vmp);

	span->type = SEG_SPAN;
	span->start = addr;
	span->size = size;
	span->imported = imported;
	span->via_qcache = via_qcache;
	span->seq = ++vmp->span_seq;
	/* Spans go to the end of both lists, in arrival order. */
	span->knext = &vmp->span0;
	span->kprev = vmp->span0.kprev;
	vmp->span0.kprev->knext = span;
	vmp->span0.kprev = span;
	seg_insert_after(vmp->seg0.aprev, span);
	s->start = addr;
	s->size = size;
	seg_insert_after(span, s);
	freelist_insert(vmp, s);
	vmp->nspans++;
	vmp->mem_total += size;
	if (imported) {
		vmp->mem_import += size;
		vmp->st_import++;
	}
	vmp->gen++;
	if (vmp->nwaiters > 0)
		plat_cond_broadcast(&vmp->cv);
	return s;
}

/* ------------------------------------------------------------------ */
/* Allocation: one arena, then the import chain. */

static inline bool
chain_internal(const vmem_t *vmp)
{
	return vmp->source != NULL && vmp->afunc == vmem_alloc &&
	    vmp->ffunc == vmem_free;
}

/*
 * An arena's generation now. After an import that could not be used (the
 * span did not hold the request and went back), a waiter waits from here:
 * importing again at once would fetch the same span, in a loop.
 */
static uint64_t
arena_gen(vmem_t *vmp)
{
	uint64_t gen;

	plat_mutex_lock(&vmp->lock);
	gen = vmp->gen;
	plat_mutex_unlock(&vmp->lock);
	return gen;
}

/*
 * Try to satisfy r from vmp's free segments. 0 if no room; sets *stop when
 * the call must fail at once (here: no memory for boundary tags).
 */
static uintptr_t
arena_try(vmem_t *vmp, const req_t *r, uint64_t *genp, stop_t *stop)
{
	uintptr_t addr = 0;
	vseg_t *s;

	plat_mutex_lock(&vmp->lock);
	if (!tags_reserve(vmp, 2)) {
		*stop = STOP_NOMETA;
	} else if ((s = find_fit(vmp, r, &addr)) != NULL) {
		carve_request(vmp, s, addr, r);
	} else {
		addr = 0;
	}
	*genp = vmp->gen;
	plat_mutex_unlock(&vmp->lock);
	return addr;
}

/*
 * Add an imported span to vmp and carve r out of it. On failure the span
 * is released to the source again and 0 is returned; *stop is set when
 * there were no tags to record the span (a retry would fetch it again).
 */
static uintptr_t
arena_take_import(vmem_t *vmp, const req_t *r, uintptr_t span_addr,
    size_t span_size, bool via_qcache, stop_t *stop)
{
	uintptr_t addr = 0, raddr;
	size_t rsize;
	bool rq, released = false;
	vseg_t *s;

	plat_mutex_lock(&vmp->lock);
	if (tags_reserve(vmp, 4) && (s = find_fit(vmp, r, &addr)) != NULL) {
		/* A racing import made room meanwhile: this span goes back. */
		carve_request(vmp, s, addr, r);
		released = true;
	} else if (vmp->tag_nfree >= 4) {
		s = span_add(vmp, span_addr, span_size, true, via_qcache);
		if (seg_fit(s, r, &addr)) {
			carve_request(vmp, s, addr, r);
		} else {
			/* The span cannot hold the request: give it back. */
			addr = 0;
			freelist_remove(vmp, s);
			s->type = SEG_ALLOC;
			vmp->mem_inuse += s->size;
			released = seg_free(vmp, s, &raddr, &rsize, &rq);
			vmp->st_free--;
		}
	} else {
		*stop = STOP_NOMETA;
		released = true;
	}
	plat_mutex_unlock(&vmp->lock);
	if (released)
		vmem_release_span(vmp, span_addr, span_size, via_qcache);
	return addr;
}

/*
 * Whether an import may help r. A user's import function is told the size
 * and alignment only, so a span it returns meets an address window only
 * by chance: as in illumos, a request with minaddr or maxaddr does not
 * import through one (a VM_SLEEP call retried every 100 ms, for ever, when
 * the chance never came). Chains of vmem_alloc pass the window down.
 */
static bool
import_may_help(const vmem_t *vmp, const req_t *r)
{
	if (vmp->afunc == NULL && vmp->xafunc == NULL)
		return false;
	return chain_internal(vmp) || (r->lo == 0 && r->hi == UINTPTR_MAX);
}

/* Import request for vmp's source on behalf of r; false if it overflows. */
static bool
import_req(const vmem_t *vmp, const req_t *r, req_t *out)
{
	const vmem_t *src = vmp->source;
	size_t srcq = src != NULL ? src->quantum : vmp->quantum;
	size_t unit = srcq > vmp->quantum ? srcq : vmp->quantum;
	size_t size = r->size, pad = 0;

	/*
	 * Pad so that any placement of the span can hold the request. An
	 * import function that aligns (VMC_XALIGN) needs only the phase.
	 */
	if (r->align > vmp->quantum)
		pad = (vmp->cflags & VMC_XALIGN) ? r->phase :
		    r->align - vmp->quantum;
	if (size + pad < size)
		return false;
	size += pad;
	memset(out, 0, sizeof (*out));
	/* The window: round inward to the source's quantum. */
	out->lo = r->lo;
	if (out->lo & (srcq - 1)) {
		out->lo = (out->lo | (srcq - 1)) + 1;
		if (out->lo == 0)
			return false;
	}
	out->hi = r->hi;
	if (out->hi != UINTPTR_MAX && ((out->hi + 1) & (srcq - 1)))
		out->hi = ((out->hi + 1) & ~(uintptr_t)(srcq - 1)) - 1;
	if (out->hi < out->lo)
		return false;
	/* The minimum import, where the window leaves room for it. */
	if (size < vmp->min_import && out->hi - out->lo >= vmp->min_import - 1)
		size = vmp->min_import;
	if (size + (unit - 1) < size)
		return false;
	size = (size + (unit - 1)) & ~(unit - 1);
	out->size = size;
	out->align = unit;
	out->phase = 0;
	out->flags = r->flags & (VM_NOSLEEP | VM_ABORT);
	if ((r->nocross != 0 || r->align > unit) && chain_internal(vmp) &&
	    r->align >= unit &&
	    ((r->phase | r->nocross | r->size) & (unit - 1)) == 0 &&
	    r->size >= vmp->min_import) {
		/*
		 * Aligned or kept inside a nocross window: ask the source for
		 * the request's own placement, which every span it can return
		 * satisfies. The source may manage that where the padded span
		 * (size + align - quantum contiguous bytes, inside one window)
		 * is not free: a 1 MiB-aligned page in a 1 MiB source with one
		 * page taken failed, or waited for ever, and so did a page at
		 * phase 4 KiB of 8 KiB, not crossing 8 KiB, in a source whose
		 * only free page was such a page.
		 */
		out->size = r->size;
		out->align = r->align;
		out->phase = r->phase;
		out->nocross = r->nocross;
	} else if (r->nocross >= srcq && size <= r->nocross) {
		/* A whole span inside one nocross window keeps any part
		 * inside it. */
		out->nocross = r->nocross;
	} else if (r->nocross >= unit && r->align <= r->nocross &&
	    chain_internal(vmp) &&
	    out->size - r->size < r->nocross - vmp->quantum) {
		/*
		 * Kept inside a nocross window where the request is not in the
		 * source's units or is below the minimum import, and the span
		 * is not inside one window: a padded span shorter than
		 * nocross + size - quantum may hold no placement that does
		 * not cross (7 pages aligned to 4 in 8-page windows, in a
		 * 10-page span 2 pages past a boundary), and a VM_SLEEP call
		 * imported it, gave it back and waited, for ever. Below the
		 * minimum import, import that much: it holds the placement
		 * at the start of a whole window wherever it lies. Otherwise
		 * (or if the window has no room for it) ask for the placement
		 * rounded out to the source's quantum: the span s holds the
		 * request at s + phase % unit, inside the window
		 * (phase % nocross + size <= nocross, and nocross is a
		 * multiple of unit).
		 */
		size_t in = r->phase & (unit - 1);
		size_t whole = (r->size + (r->nocross - vmp->quantum) +
		    (unit - 1)) & ~(unit - 1);

		if (r->size < vmp->min_import && whole > r->size &&
		    out->hi - out->lo >= whole - 1) {
			out->size = whole;
		} else {
			out->size = (in + r->size + (unit - 1)) & ~(unit - 1);
			out->align = r->align > unit ? r->align : unit;
			out->phase = r->phase & ~(unit - 1);
			out->nocross = r->nocross;
		}
	}
	if (out->hi < out->lo || out->hi - out->lo < out->size - 1)
		return false;
	return true;
}

static void *qcache_alloc(vmem_t *vmp, size_t size, int vmflag);

/*
 * A cache is asked without sleeping or panicking, as a try (its slab
 * import's failure is the caller's to count), and with VM_ABORT carried
 * in the low byte kmem passes on.
 */
static inline int
qcache_try_flags(int vmflag)
{
	return (vmflag & ~(VM_PANIC | VM_ABORT)) | VM_NOSLEEP | VM_QCTRY |
	    ((vmflag & VM_ABORT) ? VM_QCABORT : 0);
}

/*
 * An import that failed because a call on the source stopped (no
 * metadata, or misuse) must end the call: waiting would import again and
 * stop again, for ever. A VM_SLEEP call on the source warned already.
 */
static stop_t
import_stop(vmem_t *src, unsigned marks, int flags)
{
	stop_t stop = stopped_since(src, marks);

	if (stop == STOP_NOMETA && !(flags & VM_NOSLEEP))
		stop = STOP_REPORTED;
	return stop;
}

/*
 * Whether an import function broke its contract with the span [p, +size)
 * it returned for asked bytes; if so, reported and handed back. The span
 * is unusable here but is the source's: it goes back as it was given (a
 * size that wraps the address space cannot be, so it goes back as asked),
 * so the source does not leak it.
 */
static bool
import_broken(vmem_t *vmp, uintptr_t p, size_t size, size_t asked,
    size_t align)
{
	bool wraps = size != 0 && p + (size - 1) < p;

	if (!wraps && size >= asked && (p & (align - 1)) == 0 &&
	    (size & (vmp->quantum - 1)) == 0)
		return false;
	vmp->ffunc(vmp->source, (void *)p, wraps ? asked : size);
	vmem_error_report(VMEM_E_MISUSE, 0, "vmem_import", vmp, NULL, p, size,
	    "import returned %s (asked for %lu)", wraps ? "a span that wraps "
	    "the address space" : "a misaligned or short span",
	    (unsigned long)asked);
	return true;
}

/* Call a user-supplied import function (lock not held). */
static uintptr_t
user_import(vmem_t *vmp, const req_t *r, const req_t *ir, size_t *sizep,
    stop_t *stop)
{
	int flags = ir->flags & VM_NOSLEEP;
	/* An import function with no source arena counts its stops on the
	 * importer (vmem_count_nometa). */
	vmem_t *watch = vmp->source != NULL ? vmp->source : vmp;
	unsigned marks = stop_marks(watch);
	size_t align = vmp->quantum;
	void *p;

	*sizep = ir->size;
	if (vmp->xafunc != NULL) {
		/* VMC_XALIGN: the import function aligns, so the span was
		 * not padded for the alignment (import_req). */
		if (vmp->cflags & VMC_XALIGN)
			align = r->align;
		p = vmp->xafunc(vmp->source, sizep, align, flags);
	} else {
		p = vmp->afunc(vmp->source, ir->size, flags);
	}
	if (p != NULL && import_broken(vmp, (uintptr_t)p, *sizep, ir->size,
	    align)) {
		/* Reported: the call fails, as every reported call does. */
		*stop = STOP_REPORTED;
		return 0;
	}
	if (p == NULL)
		*stop = watch == vmp ? stopped_since(vmp, marks) :
		    import_stop(watch, marks, flags);
	return (uintptr_t)p;
}

typedef struct level {
	vmem_t *vmp;
	req_t req;
} level_t;

/*
 * Allocate r from vmp, importing through the chain as needed, without
 * waiting. On failure returns 0 and says which arena ran out (*failp), with
 * the request it could not meet (*failreq) and its generation then (*genp);
 * *stop if the call must fail without reaping or waiting (no metadata
 * memory, or an import function broke its contract and was reported).
 */
static uintptr_t
chain_alloc(vmem_t *vmp, const req_t *r, vmem_t **failp, req_t *failreq,
    uint64_t *genp, stop_t *stop)
{
	level_t inline_levels[CHAIN_INLINE], *lv = inline_levels;
	size_t depth = 1, lv_bytes = 0, i, k;
	uintptr_t addr = 0;
	bool via_qcache = false;

	for (vmem_t *a = vmp; chain_internal(a); a = a->source)
		depth++;
	if (depth > CHAIN_INLINE) {
		size_t page = plat_pagesize();
		lv_bytes = (depth * sizeof (level_t) + page - 1) & ~(page - 1);
		lv = meta_pages_alloc(lv_bytes);
		if (lv == NULL) {
			*stop = STOP_NOMETA;
			return 0;
		}
	}
	lv[0].vmp = vmp;
	lv[0].req = *r;
	*genp = 0;
	for (i = 0;; i++) {
		vmem_t *a = lv[i].vmp;
		req_t ir;

		*failp = a;
		*failreq = lv[i].req;
		addr = arena_try(a, &lv[i].req, genp, stop);
		if (addr != 0 || *stop)
			break;
		if (!import_may_help(a, &lv[i].req) ||
		    !import_req(a, &lv[i].req, &ir) ||
		    fault_point(FAULT_IMPORT))
			break;
		if (!chain_internal(a)) {
			size_t got;
			uintptr_t span = user_import(a, &lv[i].req, &ir, &got,
			    stop);
			if (span != 0 && (addr = arena_take_import(a,
			    &lv[i].req, span, got, false, stop)) == 0)
				*genp = arena_gen(a);
			break;
		}
		vmem_t *src = a->source;
		lv[i + 1].vmp = src;
		lv[i + 1].req = ir;
		if (src->nqcache > 0 && ir.size <= src->qcache_max &&
		    !req_constrained(src, &ir)) {
			unsigned marks = stop_marks(src);

			*failp = src;
			*failreq = ir;
			*genp = arena_gen(src);
			addr = (uintptr_t)qcache_alloc(src, ir.size,
			    qcache_try_flags(ir.flags));
			if (addr != 0) {
				i++;
				via_qcache = true;
			} else {
				*stop = import_stop(src, marks, VM_NOSLEEP);
			}
			break;
		}
	}
	/* Walk back up: each arena above gets the span below as an import. */
	for (k = i; addr != 0 && k > 0; k--) {
		level_t *up = &lv[k - 1];
		addr = arena_take_import(up->vmp, &up->req, addr,
		    lv[k].req.size, via_qcache && k == i, stop);
		if (addr == 0) {
			*failp = up->vmp;
			*failreq = up->req;
			*genp = arena_gen(up->vmp);
		}
	}
	if (lv != inline_levels)
		plat_pages_free(lv, lv_bytes);
	return addr;
}

/* Could r ever be met by vmp's spans if all of them were free? */
static bool
could_ever_fit(vmem_t *vmp, const req_t *r)
{
	req_t cur = *r, ir;

	for (;;) {
		uintptr_t a;
		bool ok = false;

		plat_mutex_lock(&vmp->lock);
		for (vseg_t *sp = vmp->span0.knext; sp != &vmp->span0;
		    sp = sp->knext) {
			if (sp->size >= cur.size &&
			    fit_range(sp->start, seg_last(sp), &cur, &a)) {
				ok = true;
				break;
			}
		}
		plat_mutex_unlock(&vmp->lock);
		if (ok)
			return true;
		/* No span of its own: only an import can help, if any can. */
		if (!import_may_help(vmp, &cur) || !import_req(vmp, &cur, &ir))
			return false;
		if (!chain_internal(vmp))
			return true;    /* a user's import function: who knows */
		vmp = vmp->source;
		cur = ir;
	}
}

static void
qcache_reap_arena(vmem_t *vmp)
{
	for (unsigned i = 0; i < vmp->nqcache; i++)
		qcache_ops->reap(vmp->qcache[i]);
}

void
vmem_reap(vmem_t *vmp)
{
	qcache_reap_arena(vmp);
}

/*
 * Call func(v, arg) for every listed arena, without holding
 * the list lock during the call: a reap calls release functions, which may
 * create or destroy arenas, and a statistics callback takes kmem's locks,
 * which kmem's fork handler holds while it waits for the list lock. The
 * reference keeps the arena, and so its place in the list, alive:
 * vmem_destroy waits for it (so func must not destroy the arena it is given).
 */
static void
arena_list_visit(void (*func)(vmem_t *, void *), void *arg)
{
	plat_mutex_lock(&arena_list_lock);
	for (vmem_t *v = arena_list_head; v != NULL; v = v->list_next) {
		v->reap_refs++;
		plat_mutex_unlock(&arena_list_lock);
		func(v, arg);
		plat_mutex_lock(&arena_list_lock);
		/* 0 already if func forked: the child drops every pin. */
		if (v->reap_refs != 0 && --v->reap_refs == 0)
			plat_cond_broadcast(&arena_list_cv);
	}
	plat_mutex_unlock(&arena_list_lock);
}

static void
qcache_reap_visit(vmem_t *vmp, void *arg)
{
	(void)arg;
	qcache_reap_arena(vmp);
}

/* Reap every arena's caches (VM_SLEEP is about to wait). */
static void
qcache_reap_all(void)
{
	arena_list_visit(qcache_reap_visit, NULL);
}

static void *
alloc_fail(vmem_t *vmp, const req_t *r, const char *call)
{
	if (!(r->flags & VM_QCTRY)) {
		plat_mutex_lock(&vmp->lock);
		vmp->st_fail++;
		plat_mutex_unlock(&vmp->lock);
	}
	if (r->flags & VM_PANIC)
		vmem_error_report(VMEM_E_PANIC, 0, call, vmp, NULL, 0, r->size,
		    "allocation of %lu failed", (unsigned long)r->size);
	return NULL;
}

/* A VM_SLEEP caller gets NULL, which it does not expect: say why. */
static void
warn_nometa(vmem_t *vmp, const char *call, uintptr_t addr, size_t size)
{
	vmem_error_report(VMEM_E_NOMEM, 1, call, vmp, NULL, addr, size,
	    "VM_SLEEP %s failed: no memory for the library's metadata", call);
}

void
vmem_count_nometa(vmem_t *vmp)
{
	count_stop(vmp, STOP_NOMETA);
}

/*
 * A failure that waiting cannot mend: no metadata (no free is bound to
 * return pages the platform refused), or a broken import (reported). A
 * quantum cache's try is not warned about: the caller waiting on the
 * cache is, once.
 */
static void *
alloc_stopped(vmem_t *vmp, const req_t *r, const char *call, stop_t stop)
{
	if (stop == STOP_NOMETA || (r->flags & VM_QCTRY))
		count_stop(vmp, stop);
	if (stop == STOP_NOMETA &&
	    !(r->flags & (VM_NOSLEEP | VM_ABORT | VM_PANIC | VM_QCTRY)))
		warn_nometa(vmp, call, 0, r->size);
	return alloc_fail(vmp, r, call);
}

/*
 * Wait on vmp for at most WAIT_MS unless its generation has moved past
 * gen (a free, add or import since the caller looked). count: count the
 * wait in vmp's statistics.
 */
static void
arena_wait(vmem_t *vmp, uint64_t gen, bool count)
{
	plat_mutex_lock(&vmp->lock);
	if (vmp->gen == gen) {
		if (count)
			vmp->st_wait++;
		vmp->nwaiters++;
		plat_cond_timedwait(&vmp->cv, &vmp->lock, WAIT_MS);
		vmp->nwaiters--;
	}
	plat_mutex_unlock(&vmp->lock);
}

/* Does an arena from vmp down its sources to failed have quantum caches? */
static bool
chain_has_qcache(vmem_t *vmp, const vmem_t *failed)
{
	for (vmem_t *a = vmp; a != NULL; a = a->source) {
		if (a->nqcache > 0)
			return true;
		if (a == failed)
			break;
	}
	return false;
}

/*
 * vmp is short (its quantum caches already reaped): as illumos calls
 * kmem_reap before an allocation fails or waits, ask the cache layer to
 * have every cache give back what it holds idle. Asynchronous: the
 * caller may hold a lock that a destructor or reclaim callback takes.
 */
static void
arena_pressure(const vmem_t *vmp)
{
	if (qcache_ops != NULL && qcache_ops->pressure != NULL)
		qcache_ops->pressure((vmp->cflags & VMC_IDENTIFIER) != 0);
}

static void *
xalloc_impl(vmem_t *vmp, const req_t *r, const char *call)
{
	bool can_wait = !(r->flags & (VM_NOSLEEP | VM_ABORT));
	bool reaped = false;

	for (;;) {
		vmem_t *failed = vmp;
		req_t failreq = *r;
		uint64_t gen = 0;
		stop_t stop = STOP_NONE;
		uintptr_t addr = arena_try(vmp, r, &gen, &stop);

		if (addr == 0 && !stop && (vmp->afunc != NULL ||
		    vmp->xafunc != NULL))
			addr = chain_alloc(vmp, r, &failed, &failreq, &gen,
			    &stop);

		if (addr != 0)
			return (void *)addr;
		if (stop)
			return alloc_stopped(vmp, r, call, stop);
		if (r->flags & VM_ABORT)
			return alloc_fail(vmp, r, call);
		if (!reaped && chain_has_qcache(vmp, failed)) {
			for (vmem_t *a = vmp; a != NULL; a = a->source) {
				qcache_reap_arena(a);
				if (a == failed)
					break;
			}
			reaped = true;
			continue;
		}
		arena_pressure(failed);
		if (!can_wait || !could_ever_fit(failed, &failreq))
			return alloc_fail(vmp, r, call);
		if (qcache_ops != NULL)
			qcache_reap_all();
		if (failed != vmp) {
			/* Waiting on the source: count it under our lock. */
			plat_mutex_lock(&vmp->lock);
			vmp->st_wait++;
			plat_mutex_unlock(&vmp->lock);
		}
		arena_wait(failed, gen, failed == vmp);
		reaped = false;
	}
}

/* ------------------------------------------------------------------ */
/* Freeing. */

static void qcache_free(vmem_t *vmp, void *addr, size_t size);

/*
 * Free the allocated segment *slot points to (lock held), wake waiters,
 * trim the tag reserve and drop the lock. Returns seg_free()'s answer: true
 * if a whole imported span, now in *span_addr and *span_size, must go.
 */
static bool
free_and_unlock(vmem_t *vmp, vseg_t **slot, uintptr_t *span_addr,
    size_t *span_size, bool *via_qcache)
{
	vseg_t *s = hash_unlink(vmp, slot);
	bool release = seg_free(vmp, s, span_addr, span_size, via_qcache);

	if (vmp->nwaiters > 0)
		plat_cond_broadcast(&vmp->cv);
	tags_trim(vmp);
	plat_mutex_unlock(&vmp->lock);
	return release;
}

/*
 * Release a span that became entirely free to the source of vmp, following
 * the chain down without recursion. An arena without a source (its import
 * function gets memory elsewhere, from the OS say) hands the span to its
 * release function all the same, with a NULL source, as it was imported.
 */
static void
vmem_release_span(vmem_t *vmp, uintptr_t addr, size_t size, bool via_qcache)
{
	for (;;) {
		vmem_t *src = vmp->source;
		vseg_t *s;
		bool more, q = false;

		if (!chain_internal(vmp)) {
			vmp->ffunc(src, (void *)addr, size);
			return;
		}
		if (via_qcache) {
			qcache_free(src, (void *)addr, size);
			return;
		}
		plat_mutex_lock(&src->lock);
		vseg_t **slot = hash_slot(src, addr);
		s = slot != NULL ? *slot : NULL;
		if (s == NULL || s->size != size) {
			/* Cannot happen unless the source was corrupted. */
			plat_mutex_unlock(&src->lock);
			vmem_error_report(VMEM_E_CORRUPT, 0, "vmem_free", src,
			    NULL, addr, size, "imported span not allocated in "
			    "its source");
			return;
		}
		more = free_and_unlock(src, slot, &addr, &size, &q);
		if (!more)
			return;
		vmp = src;
		via_qcache = q;
	}
}

/* The segment a refused free's address lies in, for the report. */
typedef struct {
	uintptr_t start;
	size_t size;
} bad_free_t;

static size_t qcache_slabsize(size_t qcache_max);

/* A quantum cache's slab: allocated in the arena at the slab size. */
static bool
is_qcache_slab(const vmem_t *vmp, const vseg_t *s, size_t size)
{
	return vmp->nqcache > 0 && size <= vmp->qcache_max &&
	    s->size == qcache_slabsize(vmp->qcache_max);
}

/*
 * Why addr (not a segment start) cannot be freed, and the segment it lies
 * in (lock held). A free segment: freed already, or never allocated; the
 * arena cannot tell which.
 */
static int
classify_bad_free(vmem_t *vmp, uintptr_t addr, size_t size, bad_free_t *in)
{
	if (addr == 0)
		return VMEM_E_BADFREE; /* no span holds address 0 */
	for (vseg_t *sp = vmp->span0.knext; sp != &vmp->span0; sp = sp->knext) {
		if (addr < sp->start || addr > seg_last(sp))
			continue;
		for (vseg_t *s = sp->anext; s->type == SEG_ALLOC ||
		    s->type == SEG_FREE; s = s->anext) {
			if (addr < s->start || addr > seg_last(s))
				continue;
			in->start = s->start;
			in->size = s->size;
			if (s->type == SEG_FREE)
				return VMEM_E_DOUBLEFREE;
			if (is_qcache_slab(vmp, s, size))
				return VMEM_E_XFREE_QCACHE;
			return VMEM_E_BADFREE;
		}
	}
	return VMEM_E_WRONGARENA;
}

static void
report_bad_free(vmem_t *vmp, int err, const char *call, uintptr_t addr,
    size_t size, const bad_free_t *in)
{
	const char *what = "";

	if (addr == 0) {
		vmem_error_report(err, 0, call, vmp, NULL, addr, size,
		    "free of NULL: no allocation has address 0");
		return;
	}
	switch (err) {
	case VMEM_E_DOUBLEFREE:
		what = "double free, or free of an address never allocated: "
		    "it lies in free segment";
		break;
	case VMEM_E_BADFREE:
		what = "free of an address never allocated: it lies inside "
		    "allocated segment";
		break;
	case VMEM_E_WRONGSIZE:
		vmem_error_report(err, 0, call, vmp, NULL, addr, size,
		    "free with the wrong size: allocated with size %lu, "
		    "segment [0x%lx, +0x%lx)", (unsigned long)in->size,
		    (unsigned long)in->start, (unsigned long)in->size);
		return;
	case VMEM_E_XFREE_QCACHE:
		what = "vmem_xfree of a quantum-cached allocation: it lies in "
		    "cache slab";
		break;
	default:
		/* An importer gives a span back as soon as it is all free. */
		vmem_error_report(err, 0, call, vmp, NULL, addr, size, "%s%s",
		    vmem_strerror(err), vmp->afunc == NULL && vmp->xafunc ==
		    NULL ? "" : ", or a double free whose span already went "
		    "back to the source");
		return;
	}
	vmem_error_report(err, 0, call, vmp, NULL, addr, size,
	    "%s [0x%lx, +0x%lx)", what, (unsigned long)in->start,
	    (unsigned long)in->size);
}

static void
xfree_impl(vmem_t *vmp, void *vaddr, size_t size, const char *call)
{
	uintptr_t addr = (uintptr_t)vaddr, span_addr = 0;
	size_t rsize = (size + vmp->quantum - 1) & ~(vmp->quantum - 1);
	size_t span_size = 0;
	bad_free_t in = { 0, 0 };
	vseg_t *s;
	bool release, via_qcache = false;
	int err = 0;

	if (size == 0 || rsize < size) {
		vmem_error_report(VMEM_E_BADARG, 0, call, vmp, NULL, addr,
		    size, "invalid size");
		return;
	}
	plat_mutex_lock(&vmp->lock);
	vseg_t **slot = hash_slot(vmp, addr);
	s = slot != NULL ? *slot : NULL;
	if (s == NULL) {
		err = classify_bad_free(vmp, addr, rsize, &in);
	} else if (s->size != rsize) {
		err = is_qcache_slab(vmp, s, rsize) ? VMEM_E_XFREE_QCACHE :
		    VMEM_E_WRONGSIZE;
		in.start = s->start;
		in.size = s->size;
	}
	if (err != 0) {
		plat_mutex_unlock(&vmp->lock);
		report_bad_free(vmp, err, call, addr, size, &in);
		return;
	}
	release = free_and_unlock(vmp, slot, &span_addr, &span_size,
	    &via_qcache);
	if (release)
		vmem_release_span(vmp, span_addr, span_size, via_qcache);
}

/* ------------------------------------------------------------------ */
/* Quantum caches. */

static void *
qcache_alloc(vmem_t *vmp, size_t size, int vmflag)
{
	void *p = qcache_ops->alloc(vmp->qcache[(size - 1) >> vmp->qshift],
	    vmflag);

	return p;
}

/* Free into a cache while callers wait for one: wake them to ask again. */
static VMEM_NOINLINE void
qcache_free_wake(vmem_t *vmp, void *cache, void *addr)
{
	qcache_ops->free(cache, addr);
	plat_mutex_lock(&vmp->lock);
	vmp->gen++;
	if (vmp->nwaiters > 0)
		plat_cond_broadcast(&vmp->cv);
	plat_mutex_unlock(&vmp->lock);
}

/*
 * A caller that starts waiting just after the check below is not woken by
 * this free; it finds the buffer one WAIT_MS poll later. Checking first
 * keeps the common free a tail call.
 */
static inline void
qcache_free(vmem_t *vmp, void *addr, size_t size)
{
	void *cache = vmp->qcache[(size - 1) >> vmp->qshift];

	if (atomic_load_explicit(&vmp->qc_sleepers, memory_order_relaxed) != 0)
		qcache_free_wake(vmp, cache, addr);
	else
		qcache_ops->free(cache, addr);
}

/* illumos' VMEM_QCACHE_SLABSIZE: MAX(1 << highbit(3 * max), 64), the
 * smallest power of two above three of the largest, and at least 64
 * (small identifier arenas). */
static size_t
qcache_slabsize(size_t qcache_max)
{
	size_t slab = 64;

	while (slab <= 3 * qcache_max)
		slab <<= 1;
	return slab;
}

static bool
qcache_setup(vmem_t *vmp, size_t qcache_max)
{
	unsigned n;
	size_t slab;

	if (qcache_max == 0)
		return true;
	n = (unsigned)(qcache_max >> vmp->qshift);
	if (n > MAX_QCACHE)
		n = MAX_QCACHE;
	/*
	 * The slab is a power of two above 3 * qcache_max: with a quantum
	 * of 2^58 or more it may not be representable, and the search for
	 * it never ended. Fewer caches then, down to none.
	 */
	while (n > 0 && ((size_t)n << vmp->qshift) > SIZE_MAX / 2 / 3)
		n--;
	slab = qcache_slabsize((size_t)n << vmp->qshift);
	if (vmp->cflags & VMC_NO_QCACHE || qcache_ops == NULL || n == 0) {
		/* No caches: import what their slabs would have taken. */
		if (vmp->cflags & VMC_NO_QCACHE && n > 0)
			vmp->min_import = slab;
		vmp->qcache_max = qcache_max;
		return true;
	}
	vmp->qcache_max = (size_t)n << vmp->qshift;
	for (unsigned i = 0; i < n; i++) {
		char name[VMEM_NAMELEN + 24];
		vmem_snprintf(name, sizeof (name), "%s_%lu", vmp->name,
		    (unsigned long)((size_t)(i + 1) << vmp->qshift));
		vmp->qcache[i] = qcache_ops->create(vmp, name,
		    (size_t)(i + 1) << vmp->qshift, slab);
		if (vmp->qcache[i] == NULL) {
			while (i-- > 0)
				qcache_ops->destroy(vmp->qcache[i]);
			return false;
		}
	}
	vmp->nqcache = n;
	vmp->qcache_limit = vmp->qcache_max;
	return true;
}

/* ------------------------------------------------------------------ */
/* Argument checking. */

static bool
is_pow2(size_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

static bool
check_policy(vmem_t *vmp, int vmflag, size_t size, bool xalloc,
    const char *call)
{
	int policy = vmflag & (VM_BESTFIT | VM_FIRSTFIT | VM_NEXTFIT);

	if ((policy & (policy - 1)) != 0 || (xalloc && policy == VM_NEXTFIT)) {
		vmem_error_report(VMEM_E_POLICY, 0, call, vmp, NULL, 0, size,
		    "%s (flags 0x%x)", xalloc && policy == VM_NEXTFIT ?
		    "VM_NEXTFIT is not a vmem_xalloc policy" :
		    "more than one allocation policy", (unsigned)vmflag);
		return false;
	}
	return true;
}

/* Round a size up to the quantum; false (no report) if it overflows. */
static bool
round_size(const vmem_t *vmp, size_t size, size_t *out)
{
	size_t r = (size + vmp->quantum - 1) & ~(vmp->quantum - 1);

	if (r < size)
		return false;
	*out = r;
	return true;
}

/* vmp is NULL when checking vmem_create's span before the arena exists. */
static bool
span_valid(vmem_t *vmp, const char *name, size_t quantum, uintptr_t base,
    size_t size, const char *call)
{
	if (size == 0) {
		vmem_error_report(VMEM_E_BADARG, 0, call, vmp, name, base,
		    size, "empty span");
		return false;
	}
	if ((base & (quantum - 1)) || (size & (quantum - 1))) {
		vmem_error_report(VMEM_E_BADARG, 0, call, vmp, name, base,
		    size, "span not aligned to the quantum %lu",
		    (unsigned long)quantum);
		return false;
	}
	if (base == 0 || base + (size - 1) < base) {
		vmem_error_report(VMEM_E_ZEROADDR, 0, call, vmp, name, base,
		    size, "span would contain address 0");
		return false;
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* Public entry points. */

static void
arena_list_add(vmem_t *vmp)
{
	plat_mutex_lock(&arena_list_lock);
	vmp->list_prev = arena_list_tail;
	vmp->list_next = NULL;
	if (arena_list_tail != NULL)
		arena_list_tail->list_next = vmp;
	else
		arena_list_head = vmp;
	arena_list_tail = vmp;
	if (vmp->source != NULL)
		vmp->source->nimporters++;
	plat_mutex_unlock(&arena_list_lock);
}

/*
 * Take vmp off the list, unless arenas still import from it: their spans
 * would go back to a freed arena. Returns how many there are (0: done).
 */
static unsigned
arena_list_remove(vmem_t *vmp)
{
	unsigned importers;

	plat_mutex_lock(&arena_list_lock);
	importers = vmp->nimporters;
	if (importers != 0) {
		plat_mutex_unlock(&arena_list_lock);
		return importers;
	}
	while (vmp->reap_refs > 0)
		plat_cond_timedwait(&arena_list_cv, &arena_list_lock, WAIT_MS);
	if (vmp->source != NULL)
		vmp->source->nimporters--;
	if (vmp->list_prev != NULL)
		vmp->list_prev->list_next = vmp->list_next;
	else
		arena_list_head = vmp->list_next;
	if (vmp->list_next != NULL)
		vmp->list_next->list_prev = vmp->list_prev;
	else
		arena_list_tail = vmp->list_prev;
	plat_mutex_unlock(&arena_list_lock);
	return 0;
}

unsigned
vmem_importer_count(const vmem_t *vmp)
{
	unsigned n;

	plat_mutex_lock(&arena_list_lock);
	n = vmp->nimporters;
	plat_mutex_unlock(&arena_list_lock);
	return n;
}

static size_t
arena_bytes(void)
{
	return page_round(sizeof (vmem_t));
}

static vmem_t *
create_common(const char *name, void *base, size_t size, size_t quantum,
    vmem_alloc_t *afunc, vmem_ximport_t *xafunc, vmem_free_t *ffunc,
    vmem_t *source, size_t qcache_max, int vmflag, const char *call)
{
	vmem_t *vmp;

	vmem_init();
	if (!is_pow2(quantum) || ((afunc != NULL || xafunc != NULL) !=
	    (ffunc != NULL)) || ((afunc != NULL || xafunc != NULL) &&
	    source == NULL && afunc == vmem_alloc)) {
		vmem_error_report(VMEM_E_BADARG, 0, call, NULL,
		    name != NULL ? name : "(null)", (uintptr_t)base, size,
		    "invalid arguments (quantum %lu, import functions and "
		    "source must come together)", (unsigned long)quantum);
		return NULL;
	}
	if (size != 0 && !span_valid(NULL, name != NULL ? name : "(null)",
	    quantum, (uintptr_t)base, size, call))
		return NULL;
	vmp = meta_pages_alloc(arena_bytes());
	if (vmp == NULL) {
		vmem_error_report(VMEM_E_NOMEM, 1, call, NULL, name,
		    (uintptr_t)base, size, "no memory for the arena");
		return NULL;
	}
	vmem_snprintf(vmp->name, sizeof (vmp->name), "%s",
	    name != NULL ? name : "(anon)");
	vmp->quantum = quantum;
	vmp->qshift = flog2(quantum);
	vmp->cflags = vmflag & VMC_FLAGS;
	vmp->afunc = afunc;
	vmp->xafunc = xafunc;
	vmp->ffunc = ffunc;
	vmp->source = source;
	plat_mutex_init(&vmp->lock);
	plat_cond_init(&vmp->cv);
	vmp->seg0.type = SEG_SENTINEL;
	vmp->seg0.anext = vmp->seg0.aprev = &vmp->seg0;
	vmp->span0.type = SEG_SENTINEL;
	vmp->span0.knext = vmp->span0.kprev = &vmp->span0;
	vmp->hash = vmp->hash0;
	vmp->hash_size = HASH_MIN;
	vmp->hash_bits = 4;
	if (!qcache_setup(vmp, qcache_max)) {
		plat_mutex_destroy(&vmp->lock);
		plat_cond_destroy(&vmp->cv);
		plat_pages_free(vmp, arena_bytes());
		return NULL;
	}
	arena_list_add(vmp);
	if (size != 0 && vmem_add(vmp, base, size, vmflag & ~VMC_FLAGS) ==
	    NULL) {
		vmem_destroy(vmp);
		return NULL;
	}
	return vmp;
}

vmem_t *
vmem_create(const char *name, void *base, size_t size, size_t quantum,
    vmem_alloc_t *afunc, vmem_free_t *ffunc, vmem_t *source,
    size_t qcache_max, int vmflag)
{
	return create_common(name, base, size, quantum, afunc, NULL, ffunc,
	    source, qcache_max, vmflag & ~(VMC_XALLOC | VMC_XALIGN),
	    "vmem_create");
}

vmem_t *
vmem_xcreate(const char *name, void *base, size_t size, size_t quantum,
    vmem_ximport_t *afunc, vmem_free_t *ffunc, vmem_t *source,
    size_t qcache_max, int vmflag)
{
	return create_common(name, base, size, quantum, NULL, afunc, ffunc,
	    source, qcache_max, vmflag | VMC_XALLOC, "vmem_xcreate");
}

void *
vmem_add(vmem_t *vmp, void *vaddr, size_t size, int vmflag)
{
	uintptr_t base = (uintptr_t)vaddr;

	if (!span_valid(vmp, NULL, vmp->quantum, base, size, "vmem_add"))
		return NULL;
	plat_mutex_lock(&vmp->lock);
	for (vseg_t *sp = vmp->span0.knext; sp != &vmp->span0; sp = sp->knext) {
		if (base <= seg_last(sp) && sp->start <= base + (size - 1)) {
			uintptr_t s0 = sp->start;
			size_t s1 = sp->size;
			plat_mutex_unlock(&vmp->lock);
			vmem_error_report(VMEM_E_OVERLAP, 0, "vmem_add", vmp,
			    NULL, base, size, "overlaps span [0x%lx, +0x%lx)",
			    (unsigned long)s0, (unsigned long)s1);
			return NULL;
		}
	}
	if (!tags_reserve(vmp, 2)) {
		plat_mutex_unlock(&vmp->lock);
		if (!(vmflag & VM_NOSLEEP))
			warn_nometa(vmp, "vmem_add", base, size);
		return NULL;
	}
	(void)span_add(vmp, base, size, false, false);
	plat_mutex_unlock(&vmp->lock);
	return vaddr;
}

/*
 * A class whose first segment is the answer, or NCLASS (lock held). With
 * no constraint: instant fit takes the first class whose members all fit;
 * best and first fit take their own class when it holds only their size
 * (below CLASS_ONE_SIZE) and is not empty, since its
 * first segment is then exactly what their scan would return.
 */
static inline unsigned
head_fit_class(const vmem_t *vmp, const req_t *r)
{
	int policy = r->flags & (VM_BESTFIT | VM_FIRSTFIT | VM_NEXTFIT);
	uint64_t n = r->size >> vmp->qshift;

	if (req_constrained(vmp, r))
		return NCLASS;
	if (policy == 0)
		return class_next(vmp, class_guaranteed(n));
	if (policy != VM_NEXTFIT && n < CLASS_ONE_SIZE &&
	    vmp->freelist[n] != NULL)
		return (unsigned)n;
	return NCLASS;
}

/*
 * Instant fit with alignment or nocross but no address range: the head of
 * its sure class, the first segment find_fit would test, if the placement
 * there holds (nocross may refuse it); else NULL and find_fit decides.
 */
static inline vseg_t *
head_fit_aligned(vmem_t *vmp, const req_t *r, uintptr_t *addrp)
{
	unsigned c;
	vseg_t *s;
	uintptr_t a;
	bool placed;

	if ((r->flags & (VM_BESTFIT | VM_FIRSTFIT | VM_NEXTFIT)) != 0 ||
	    r->lo != 0 || r->hi != UINTPTR_MAX || !req_constrained(vmp, r))
		return NULL;
	c = class_next(vmp, instant_sure_class(vmp, r));
	if (c >= NCLASS)
		return NULL;
	s = vmp->freelist[c];
	/* Its size guarantees room at the first aligned address. */
	if (!(r->flags & VM_ENDALLOC) && align_up(s->start, r, &a) &&
	    !crosses(a, r->size, r->nocross)) {
		*addrp = a;
		return s;
	}
	placed = (r->flags & VM_ENDALLOC) ?
	    place_high(s->start, seg_last(s), r, addrp) :
	    place_low(s->start, seg_last(s), r, addrp);
	return placed ? s : NULL;
}

/*
 * The common case of vmem_alloc and vmem_xalloc: any policy and
 * constraint, in one critical section.
 * xalloc: r may be constrained (vmem_alloc's requests never are).
 * Returns the address; or 0 with *failed set when the request has failed
 * for good (no room, nothing to import, no waiting), so the failure path
 * costs one lock too; or 0 to send the caller down the general path.
 */
static VMEM_ALWAYS_INLINE uintptr_t
alloc_instant(vmem_t *vmp, const req_t *r, bool xalloc, bool *failed)
{
	uintptr_t addr = 0;
	unsigned c;
	vseg_t *s;

	plat_mutex_lock(&vmp->lock);
	if (vmp->tag_nfree >= 2) {
		c = head_fit_class(vmp, r);
		if (c < NCLASS) {
			s = vmp->freelist[c];
			vmp->st_search++;
			addr = (r->flags & VM_ENDALLOC) ?
			    s->start + (s->size - r->size) : s->start;
			(void)seg_carve(vmp, s, addr, r->size);
		} else if (xalloc &&
		    (s = head_fit_aligned(vmp, r, &addr)) != NULL) {
			vmp->st_search++;
			(void)seg_carve(vmp, s, addr, r->size);
		} else if ((s = find_fit(vmp, r, &addr)) != NULL) {
			carve_request(vmp, s, addr, r);
		} else {
			addr = 0;       /* a failed search may have left a guess */
			if ((r->flags & (VM_NOSLEEP | VM_ABORT)) &&
			    vmp->afunc == NULL && vmp->xafunc == NULL &&
			    vmp->nqcache == 0 && !(r->flags & VM_PANIC)) {
				vmp->st_fail++;
				*failed = true;
			}
		}
	}
	plat_mutex_unlock(&vmp->lock);
	return addr;
}

/* alloc_instant failed for good: as any failure, ask for a pressure pass
 * (kept off alloc_instant's inline path). */
static VMEM_NOINLINE void *
instant_failed(vmem_t *vmp, const req_t *r)
{
	if (!(r->flags & VM_ABORT))
		arena_pressure(vmp);
	return NULL;
}

static void *
xalloc_entry(vmem_t *vmp, size_t size, size_t align, size_t phase,
    size_t nocross, void *minaddr, void *maxaddr, int vmflag)
{
	uintptr_t lo = (uintptr_t)minaddr, hi = (uintptr_t)maxaddr;
	size_t q = vmp->quantum;
	req_t r;

	if (vmflag & VM_QCABORT)
		vmflag |= VM_ABORT;
	if (!check_policy(vmp, vmflag, size, true, "vmem_xalloc"))
		return NULL;
	if (align == 0)
		align = q;
	if (size == 0 || ((align | phase | nocross) & (q - 1)) ||
	    !is_pow2(align) || (nocross != 0 && !is_pow2(nocross)) ||
	    phase >= align || (hi != 0 && lo >= hi)) {
		vmem_error_report(VMEM_E_XALLOC_ARGS, 0, "vmem_xalloc", vmp,
		    NULL, lo, size, "invalid constraints: align 0x%lx phase "
		    "0x%lx nocross 0x%lx min 0x%lx max 0x%lx",
		    (unsigned long)align, (unsigned long)phase,
		    (unsigned long)nocross, (unsigned long)lo,
		    (unsigned long)hi);
		return NULL;
	}
	memset(&r, 0, sizeof (r));
	if (!round_size(vmp, size, &r.size))
		return alloc_fail(vmp, &(req_t){ .size = size,
		    .flags = vmflag }, "vmem_xalloc");
	if (nocross != 0 && (r.size > nocross ||
	    (phase & (nocross - 1)) > nocross - r.size)) {
		vmem_error_report(VMEM_E_XALLOC_ARGS, 0, "vmem_xalloc", vmp,
		    NULL, lo, size, "over-constrained: size 0x%lx with phase "
		    "0x%lx cannot avoid crossing 0x%lx", (unsigned long)r.size,
		    (unsigned long)phase, (unsigned long)nocross);
		return NULL;
	}
	r.align = align;
	r.phase = phase;
	r.nocross = nocross;
	/*
	 * The bounds need not be quantum multiples: illumos takes any (its
	 * DVMA code passes dma_attr_addr_lo, and dma_attr_addr_hi + 1, or
	 * dma_attr_addr_hi itself when that wraps). Every result is a
	 * quantum multiple, so round them inward; a window that holds no
	 * whole quantum fails like any window too small.
	 */
	r.flags = vmflag;
	r.lo = (lo + (q - 1)) & ~(uintptr_t)(q - 1);
	r.hi = hi != 0 ? (hi & ~(uintptr_t)(q - 1)) - 1 : UINTPTR_MAX;
	if ((lo != 0 && r.lo == 0) || (hi != 0 && hi < q) ||
	    r.hi < r.lo || r.hi - r.lo < r.size - 1)
		return alloc_fail(vmp, &r, "vmem_xalloc");
	bool failed = false;
	uintptr_t addr = alloc_instant(vmp, &r, true, &failed);
	if (addr != 0)
		return (void *)addr;
	if (failed)
		return instant_failed(vmp, &r);
	return xalloc_impl(vmp, &r, "vmem_xalloc");
}

void *
vmem_xalloc(vmem_t *vmp, size_t size, size_t align, size_t phase,
    size_t nocross, void *minaddr, void *maxaddr, int vmflag)
{
	return xalloc_entry(vmp, size, align, phase, nocross, minaddr, maxaddr,
	    vmflag & ~VM_QCINTERNAL);
}

/* A quantum cache's slab import: the one caller whose internal flags
 * (VM_QCTRY, VM_QCABORT) count. */
void *
vmem_qcache_slab_xalloc(vmem_t *vmp, size_t size, size_t align, int vmflag)
{
	return xalloc_entry(vmp, size, align, 0, 0, NULL, NULL, vmflag);
}

static void *alloc_from_qcache(vmem_t *vmp, size_t size, int vmflag);
static void *alloc_arena(vmem_t *vmp, size_t size, int vmflag);

void *
vmem_alloc(vmem_t *vmp, size_t size, int vmflag)
{
	/* A small request goes to its quantum cache before anything else
	 * (size - 1 wraps for 0, which then takes the checked path). The
	 * cache index of size is that of size rounded to the quantum. Both
	 * ways are functions of their own: this one is two tests and a jump,
	 * and neither pays for the other's stack frame. */
	vmflag &= ~VM_QCINTERNAL;
	if (size - 1 < vmp->qcache_limit &&
	    !(vmflag & (VM_BESTFIT | VM_FIRSTFIT | VM_NEXTFIT)))
		return alloc_from_qcache(vmp, size, vmflag);
	return alloc_arena(vmp, size, vmflag);
}

/* A quantum cache could not serve. Its slab import from this arena has
 * already reaped, waited or failed as the flags ask; what is left is to
 * count the failure (and report it for VM_PANIC). */
static VMEM_NOINLINE void *
qcache_alloc_failed(vmem_t *vmp, size_t size, int vmflag)
{
	req_t r;

	r.flags = vmflag;
	r.size = (size + vmp->quantum - 1) & ~(vmp->quantum - 1);
	return alloc_fail(vmp, &r, "vmem_alloc");
}



/*
 * A caller that may wait, after the cache could not serve it: wait on the
 * arena, and between waits empty every cache into its slabs (rounds in
 * other CPUs' magazines become reachable, idle slabs go back to their
 * arenas) and ask again. Woken by arena frees and imports and by frees
 * into this arena's caches; WAIT_MS bounds a missed wake-up, and frees in
 * a source arena, which do not wake this one.
 */
static VMEM_NOINLINE void *
qcache_alloc_wait(vmem_t *vmp, size_t size, int vmflag, unsigned marks)
{
	int try_flags = qcache_try_flags(vmflag);
	req_t slab = { .size = qcache_slabsize(vmp->qcache_max),
	    .align = vmp->quantum, .hi = UINTPTR_MAX };
	/* A free segment of this class or above holds a slab. */
	unsigned slab_class = class_guaranteed(slab.size >> vmp->qshift);
	unsigned room_fails = 0;
	uint64_t gen = 0;
	bool reaped = false;
	stop_t stopped;
	void *p;

	atomic_fetch_add_explicit(&vmp->qc_sleepers, 1, memory_order_seq_cst);
	for (p = NULL;;) {
		bool room;

		/* marks and gen were read before the try that just failed. */
		stopped = stopped_since(vmp, marks);

		plat_mutex_lock(&vmp->lock);
		room = class_next(vmp, slab_class) < NCLASS;
		plat_mutex_unlock(&vmp->lock);
		/*
		 * Stopped: no metadata, or a broken import (reported). Room
		 * for a slab, yet no buffer three times running: the cache
		 * itself cannot grow (its own bookkeeping memory).
		 */
		if (stopped || (room && ++room_fails == 3))
			break;
		if (!room) {
			room_fails = 0;
			if (!could_ever_fit(vmp, &slab))
				break;
			if (reaped)
				arena_wait(vmp, gen, true);
		}
		gen = arena_gen(vmp);
		marks = stop_marks(vmp);
		qcache_reap_all();
		arena_pressure(vmp);
		reaped = true;
		if ((p = qcache_alloc(vmp, size, try_flags)) != NULL)
			break;
	}
	atomic_fetch_sub_explicit(&vmp->qc_sleepers, 1, memory_order_relaxed);
	if (p == NULL && stopped == STOP_NOMETA && !(vmflag & VM_PANIC))
		warn_nometa(vmp, "vmem_alloc", 0, size);
	return p != NULL ? p : qcache_alloc_failed(vmp, size, vmflag);
}

/*
 * The cache is always asked without sleeping. A cache out of rounds
 * imports a slab, and a slab import that slept in the arena would wait
 * for a whole slab of contiguous space while the buffers callers free
 * into the cache went unseen: with the arena fragmented, for ever.
 */
static VMEM_NOINLINE void *
alloc_from_qcache(vmem_t *vmp, size_t size, int vmflag)
{
	unsigned marks = stop_marks(vmp);
	void *p = qcache_alloc(vmp, size, qcache_try_flags(vmflag));

	if (p != NULL)
		return p;
	if (!(vmflag & (VM_NOSLEEP | VM_ABORT)))
		return qcache_alloc_wait(vmp, size, vmflag, marks);
	return qcache_alloc_failed(vmp, size, vmflag);
}

/* vmem_alloc of the arena itself: validation, instant fit inline (the
 * common case), everything else in xalloc_impl. */
static VMEM_NOINLINE void *
alloc_arena(vmem_t *vmp, size_t size, int vmflag)
{
	req_t r;

	if (vmflag & (VM_BESTFIT | VM_FIRSTFIT | VM_NEXTFIT)) {
		if (!check_policy(vmp, vmflag, size, false, "vmem_alloc"))
			return NULL;
		/* (quantum caches have no policy) */
		if (size - 1 < vmp->qcache_limit)
			return alloc_from_qcache(vmp, size, vmflag);
		/* As in illumos, VM_ENDALLOC has no effect with next fit:
		 * the rotor moves up, ids are not handed out downwards. */
		if (vmflag & VM_NEXTFIT)
			vmflag &= ~VM_ENDALLOC;
	}
	if (size == 0) {
		vmem_error_report(VMEM_E_BADARG, 0, "vmem_alloc", vmp, NULL, 0,
		    size, "size 0");
		return NULL;
	}
	r.flags = vmflag;
	if (!round_size(vmp, size, &r.size)) {
		r.size = size;
		return alloc_fail(vmp, &r, "vmem_alloc");
	}
	r.align = vmp->quantum;
	r.phase = 0;
	r.nocross = 0;
	r.lo = 0;
	r.hi = UINTPTR_MAX;
	{
		bool failed = false;
		uintptr_t addr = alloc_instant(vmp, &r, false, &failed);
		if (addr != 0)
			return (void *)addr;
		if (failed)
			return instant_failed(vmp, &r);
	}
	return xalloc_impl(vmp, &r, "vmem_alloc");
}

void
vmem_free(vmem_t *vmp, void *vaddr, size_t size)
{
	if (size - 1 < vmp->qcache_limit) {
		qcache_free(vmp, vaddr, size);
		return;
	}
	xfree_impl(vmp, vaddr, size, "vmem_free");
}

void
vmem_xfree(vmem_t *vmp, void *vaddr, size_t size)
{
	xfree_impl(vmp, vaddr, size, "vmem_xfree");
}

void
vmem_destroy(vmem_t *vmp)
{
	size_t leaked;
	unsigned importers;

	if (vmp == NULL)
		return;
	/* Off the list first: a walk of all arenas (statistics, printing)
	 * must never reach caches being destroyed. */
	importers = arena_list_remove(vmp);
	if (importers != 0) {
		vmem_error_report(VMEM_E_MISUSE, 0, "vmem_destroy", vmp, NULL,
		    0, 0, "%u arena%s still import%s from it: destroy %s "
		    "first", importers, importers == 1 ? "" : "s",
		    importers == 1 ? "s" : "", importers == 1 ? "it" : "them");
		return;
	}
	for (unsigned i = 0; i < vmp->nqcache; i++)
		qcache_ops->destroy(vmp->qcache[i]);
	vmp->nqcache = 0;
	vmp->qcache_limit = 0;
	plat_mutex_lock(&vmp->lock);
	leaked = vmp->mem_inuse;
	plat_mutex_unlock(&vmp->lock);
	if (leaked != 0)
		vmem_error_report(VMEM_E_LEAK, 1, "vmem_destroy", vmp, NULL, 0,
		    leaked, "leaked %lu %s", (unsigned long)leaked,
		    (vmp->cflags & VMC_IDENTIFIER) ? "identifiers" : "bytes");
	/*
	 * Give imported spans back, whatever is still allocated in them, and
	 * every tag the arena owns back to the pool.
	 */
	vseg_t *list = vmp->tag_free;
	long owned = (long)vmp->tags_owned;
	for (vseg_t *s = vmp->seg0.anext; s != &vmp->seg0; ) {
		vseg_t *next = s->anext;
		if (s->type == SEG_SPAN && s->imported)
			vmem_release_span(vmp, s->start, s->size,
			    s->via_qcache);
		s->knext = list;
		list = s;
		s = next;
	}
	tagpool_give(list);
	meta_charge(vmp, -owned);
	if (vmp->memo != NULL)
		plat_pages_free(vmp->memo, memo_bytes());
	if (vmp->bounds != NULL)
		plat_pages_free(vmp->bounds, bounds_bytes());
	if (vmp->hash != vmp->hash0) {
		plat_pages_free(vmp->hash,
		    page_round(vmp->hash_size * sizeof (vseg_t *)));
	}
	plat_cond_destroy(&vmp->cv);
	plat_mutex_destroy(&vmp->lock);
	plat_pages_free(vmp, arena_bytes());
}

size_t
vmem_size(vmem_t *vmp, int typemask)
{
	size_t idle = 0, size = 0;

	for (unsigned i = 0; i < vmp->nqcache; i++)
		if (qcache_ops->idle != NULL)
			idle += qcache_ops->idle(vmp->qcache[i]);
	plat_mutex_lock(&vmp->lock);
	if (idle > vmp->mem_inuse)
		idle = vmp->mem_inuse;
	if (typemask & VMEM_ALLOC)
		size += vmp->mem_inuse - idle;
	if (typemask & VMEM_FREE)
		size += vmp->mem_total - vmp->mem_inuse + idle;
	if ((typemask & VMEM_SPAN) && !(typemask & (VMEM_ALLOC | VMEM_FREE)))
		size = vmp->mem_total;
	plat_mutex_unlock(&vmp->lock);
	return size;
}

int
vmem_contains(vmem_t *vmp, void *vaddr, size_t size)
{
	uintptr_t addr = (uintptr_t)vaddr;
	int found = 0;

	plat_mutex_lock(&vmp->lock);
	vmp->st_contains++;
	for (vseg_t *sp = vmp->span0.knext; sp != &vmp->span0; sp = sp->knext) {
		if (addr >= sp->start && addr <= seg_last(sp) &&
		    (size == 0 || seg_last(sp) - addr >= size - 1)) {
			found = 1;
			break;
		}
	}
	plat_mutex_unlock(&vmp->lock);
	return found;
}

static int
seg_typebit(const vseg_t *s)
{
	switch (s->type) {
	case SEG_SPAN: return VMEM_SPAN;
	case SEG_ALLOC: return VMEM_ALLOC;
	case SEG_FREE: return VMEM_FREE;
	default: return 0;
	}
}

typedef struct walk_item {
	uintptr_t start;
	size_t size;
} walk_item_t;

/*
 * Where a chunked walk stands: in the span with arrival number seq (or the
 * first later one, if that span has gone), its own tag done if in_span,
 * and, if any_seg, the span's addresses up to last (inclusive) done.
 */
typedef struct walk_pos {
	uint64_t seq;
	bool in_span, any_seg;
	uintptr_t last;
} walk_pos_t;

/*
 * Under the lock: copy up to cap matching segments from *pos on into
 * items, advancing *pos past them. Returns how many; *done at the end.
 */
static size_t
walk_chunk(vmem_t *vmp, int typemask, walk_pos_t *pos, walk_item_t *items,
    size_t cap, bool *done)
{
	vseg_t *sp = vmp->span0.knext;
	size_t n = 0;

	while (sp != &vmp->span0 && sp->seq < pos->seq)
		sp = sp->knext;
	for (; sp != &vmp->span0; sp = sp->knext) {
		if (sp->seq != pos->seq)
			*pos = (walk_pos_t){ sp->seq, false, false, 0 };
		if (!pos->in_span) {
			if (n == cap)
				return n;
			if (typemask & VMEM_SPAN)
				items[n++] = (walk_item_t){ sp->start, sp->size };
			pos->in_span = true;
		}
		for (vseg_t *s = sp->anext; s->type == SEG_ALLOC ||
		    s->type == SEG_FREE; s = s->anext) {
			uintptr_t from = s->start;

			if (!(seg_typebit(s) & typemask))
				continue;
			if (pos->any_seg && s->start <= pos->last) {
				/* Behind the walk; or free space that merged
				 * across it, whose part ahead is still due. */
				if (seg_last(s) <= pos->last ||
				    s->type != SEG_FREE)
					continue;
				from = pos->last + 1;
			}
			if (n == cap)
				return n;
			items[n++] = (walk_item_t){ from, seg_last(s) - from + 1 };
			pos->any_seg = true;
			pos->last = seg_last(s);
		}
		*pos = (walk_pos_t){ sp->seq + 1, false, false, 0 };
	}
	*done = true;
	return n;
}

/*
 * A reentrant walk with no memory to snapshot into: a small buffer at a
 * time, resuming by position. Segments freed or allocated behind the
 * position are not revisited, those ahead are seen as they are then (the
 * way illumos walks with a marker); free space that has merged across the
 * position is reported from the position on, as a marker between the two
 * would have kept it apart. Each chunk finds its place again from the
 * first span, so this costs O(n^2 / chunk): a fallback only.
 */
static void
walk_chunked(vmem_t *vmp, int typemask, void (*func)(void *, void *, size_t),
    void *arg, walk_item_t *items, size_t cap)
{
	walk_pos_t pos = { 0, false, false, 0 };
	bool done = false;

	while (!done) {
		plat_mutex_lock(&vmp->lock);
		size_t n = walk_chunk(vmp, typemask, &pos, items, cap, &done);
		plat_mutex_unlock(&vmp->lock);
		for (size_t i = 0; i < n; i++)
			func(arg, (void *)items[i].start, items[i].size);
	}
}

/* How many segments of the types in typemask the arena holds. */
static size_t
walk_count(vmem_t *vmp, int typemask)
{
	size_t n = 0;

	for (vseg_t *s = vmp->seg0.anext; s != &vmp->seg0; s = s->anext)
		if (seg_typebit(s) & typemask)
			n++;
	return n;
}

void
vmem_walk(vmem_t *vmp, int typemask, void (*func)(void *, void *, size_t),
    void *arg)
{
	walk_item_t local[64], *items = local;
	size_t n = 0, cap = 64, bytes = 0, page = plat_pagesize();

	if (func == NULL) {
		vmem_error_report(VMEM_E_BADARG, 0, "vmem_walk", vmp, NULL, 0,
		    0, "no function to call");
		return;
	}
	if (!((unsigned)typemask & VMEM_REENTRANT)) {
		plat_mutex_lock(&vmp->lock);
		for (vseg_t *s = vmp->seg0.anext; s != &vmp->seg0; s = s->anext)
			if (seg_typebit(s) & typemask)
				func(arg, (void *)s->start, s->size);
		plat_mutex_unlock(&vmp->lock);
		return;
	}
	/*
	 * Reentrant: snapshot the matching segments, then call func with the
	 * lock dropped, so func may allocate and free in this arena.
	 */
	for (;;) {
		bool done = false;

		plat_mutex_lock(&vmp->lock);
		size_t need = walk_count(vmp, typemask);
		if (need <= cap) {
			walk_pos_t pos = { 0, false, false, 0 };
			n = walk_chunk(vmp, typemask, &pos, items, cap, &done);
			plat_mutex_unlock(&vmp->lock);
			break;
		}
		plat_mutex_unlock(&vmp->lock);
		if (items != local)
			plat_pages_free(items, bytes);
		bytes = ((need + 16) * sizeof (walk_item_t) + page - 1) &
		    ~(page - 1);
		items = meta_pages_alloc(bytes);
		if (items == NULL) {
			walk_chunked(vmp, typemask, func, arg, local, 64);
			return;
		}
		cap = bytes / sizeof (walk_item_t);
	}
	for (size_t i = 0; i < n; i++)
		func(arg, (void *)items[i].start, items[i].size);
	if (items != local)
		plat_pages_free(items, bytes);
}

const char *vmem_name(const vmem_t *vmp) { return vmp->name; }
size_t vmem_quantum(const vmem_t *vmp) { return vmp->quantum; }

int
vmem_is_identifier(const vmem_t *vmp)
{
	return (vmp->cflags & VMC_IDENTIFIER) != 0;
}
vmem_t *vmem_source(const vmem_t *vmp) { return vmp->source; }
void
vmem_set_private(vmem_t *vmp, void *priv)
{
	atomic_store_explicit(&vmp->priv, priv, memory_order_release);
}

void *
vmem_get_private(const vmem_t *vmp)
{
	return atomic_load_explicit(&vmp->priv, memory_order_acquire);
}

void
vmem_set_meta_charge(vmem_t *vmp, void (*charge)(void *, long), void *arg)
{
	plat_mutex_lock(&vmp->lock);
	if (vmp->meta_charge != NULL)
		vmp->meta_charge(vmp->meta_arg,
		    -(long)(vmp->tags_owned * sizeof (vseg_t)));
	vmp->meta_charge = charge;
	vmp->meta_arg = arg;
	if (charge != NULL)
		charge(arg, (long)(vmp->tags_owned * sizeof (vseg_t)));
	plat_mutex_unlock(&vmp->lock);
}

size_t
vmem_meta_bytes(const vmem_t *vmp)
{
	/* The arena is not const to its lock: the count changes under it. */
	vmem_t *v = (vmem_t *)(uintptr_t)vmp;
	size_t owned;

	plat_mutex_lock(&v->lock);
	owned = v->tags_owned;
	plat_mutex_unlock(&v->lock);
	return owned * sizeof (vseg_t);
}

void
vmem_get_stats(vmem_t *vmp, vmem_stats_t *st)
{
	memset(st, 0, sizeof (*st));
	plat_mutex_lock(&vmp->lock);
	memcpy(st->name, vmp->name, sizeof (st->name));
	st->quantum = vmp->quantum;
	st->qcache_max = vmp->qcache_max;
	st->mem_inuse = vmp->mem_inuse;
	st->mem_import = vmp->mem_import;
	st->mem_total = vmp->mem_total;
	st->alloc = vmp->st_alloc;
	st->free = vmp->st_free;
	st->wait = vmp->st_wait;
	st->fail = vmp->st_fail;
	st->lookup = vmp->st_lookup;
	st->search = vmp->st_search;
	st->populate_fail = vmp->st_populate_fail;
	st->contains = vmp->st_contains;
	st->import = vmp->st_import;
	st->release = vmp->st_release;
	st->nspans = vmp->nspans;
	st->nalloc_segs = vmp->nalloc;
	st->nfree_segs = vmp->nfree;
	st->hash_buckets = vmp->hash_size;
	st->tags = vmp->tags_owned;
	st->meta_bytes = arena_bytes() + vmp->tags_owned * sizeof (vseg_t) +
	    (vmp->hash != vmp->hash0 ?
	    page_round(vmp->hash_size * sizeof (vseg_t *)) : 0) +
	    (vmp->memo != NULL ? memo_bytes() : 0) +
	    (vmp->bounds != NULL ? bounds_bytes() : 0);
	for (unsigned c = 0; c < NCLASS; c++)
		for (vseg_t *s = vmp->freelist[c]; s != NULL; s = s->knext) {
			st->free_by_class[flog2(s->size)]++;
			if (s->size > st->largest_free)
				st->largest_free = s->size;
		}
	plat_mutex_unlock(&vmp->lock);
	/* Quantum caches count their own traffic (no shared counter here). */
	for (unsigned i = 0; i < vmp->nqcache; i++) {
		uint64_t a = 0, f = 0;
		if (qcache_ops->counts == NULL)
			break;
		qcache_ops->counts(vmp->qcache[i], &a, &f);
		st->qcache_alloc += a;
		st->qcache_free += f;
	}
}

void
vmem_foreach_arena(void (*func)(vmem_t *, void *), void *arg)
{
	vmem_init();
	arena_list_visit(func, arg);
}

/* ------------------------------------------------------------------ */
/* Consistency checking. */

/* Class c's memo entry, if any, is true: no segment it covers fits. */
static bool
memo_holds(const vmem_t *vmp, unsigned c)
{
	const scan_memo_t *m = vmp->memo;
	const memo_ent_t *e;
	req_t r;
	uintptr_t a;

	if (m == NULL || m->cls[c].epoch != m->epoch || m->epoch == 0)
		return true;
	e = &m->cls[c];
	if (e->seq > vmp->free_seq)
		return false;
	r = (req_t){ .size = e->size, .align = m->align, .phase = m->phase,
	    .nocross = m->nocross, .lo = m->lo, .hi = m->hi };
	for (const vseg_t *s = vmp->freelist[c]; s != NULL; s = s->knext)
		if (s->seq <= e->seq && seg_fit(s, &r, &a))
			return false;
	return true;
}

static int
check_fail(vmem_t *vmp, const vseg_t *s, const char *what)
{
	char detail[160];

	vmem_snprintf(detail, sizeof (detail), "%s", what);
	plat_mutex_unlock(&vmp->lock);
	vmem_error_report(VMEM_E_CORRUPT, 0, "vmem_check", vmp, NULL,
	    s != NULL ? s->start : 0, s != NULL ? s->size : 0, "%s", detail);
	return -1;
}

int
vmem_check(vmem_t *vmp)
{
	size_t total = 0, import = 0, inuse = 0, nalloc = 0, nfree = 0;
	size_t nspans = 0, nhash = 0, nlisted = 0;
	uintptr_t local[2 * 32], *starts = NULL;
	bool rotor_seen = false;

	plat_mutex_lock(&vmp->lock);
	/* Address list: spans tiled exactly by ALLOC/FREE segments. */
	for (vseg_t *s = vmp->seg0.anext; s != &vmp->seg0; ) {
		vseg_t *span = s;
		uintptr_t next = span->start;
		bool all_free = true;

		if (span->type != SEG_SPAN)
			return check_fail(vmp, s, "segment outside a span");
		if (span->size == 0 || span->start == 0 ||
		    seg_last(span) < span->start)
			return check_fail(vmp, s, "bad span bounds");
		nspans++;
		total += span->size;
		if (span->imported)
			import += span->size;
		if (span == vmp->rotor)
			rotor_seen = true;
		for (s = span->anext; s->type == SEG_ALLOC ||
		    s->type == SEG_FREE; s = s->anext) {
			if (s->aprev->anext != s || s->anext->aprev != s)
				return check_fail(vmp, s,
				    "address list links broken");
			if (s->start != next || s->size == 0 ||
			    (s->start & (vmp->quantum - 1)) ||
			    (s->size & (vmp->quantum - 1)))
				return check_fail(vmp, s,
				    "segments do not tile the span");
			if (s == vmp->rotor)
				rotor_seen = true;
			next = s->start + s->size;
			if (s->type == SEG_FREE) {
				unsigned c = size_class(s->size >> vmp->qshift);
				if (s->aprev->type == SEG_FREE)
					return check_fail(vmp, s,
					    "adjacent free segments not coalesced");
				if (s->cls != c)
					return check_fail(vmp, s,
					    "free segment in the wrong class");
				if (vmp->cmax[c] < s->size)
					return check_fail(vmp, s,
					    "class size bound too small");
				if (vmp->bounds != NULL &&
				    s->seq <= vmp->bounds->seq[c] &&
				    s->size < vmp->bounds->min[c])
					return check_fail(vmp, s,
					    "class lower size bound too large");
				nfree++;
				continue;
			}
			vseg_t *h = vmp->hash[hash_index(vmp, s->start)];
			while (h != NULL && h != s)
				h = h->knext;
			if (h == NULL)
				return check_fail(vmp, s,
				    "allocated segment not in the hash");
			all_free = false;
			nalloc++;
			inuse += s->size;
		}
		if (next != span->start + span->size)
			return check_fail(vmp, span, "span not fully tiled");
		if (span->imported && all_free)
			return check_fail(vmp, span,
			    "free imported span not released");
	}
	/* Span list matches the spans on the address list, in the same
	 * order, their arrival numbers rising (walks resume by them). */
	vseg_t *on_alist = vmp->seg0.anext;
	uint64_t last_seq = 0;
	for (vseg_t *sp = vmp->span0.knext; sp != &vmp->span0; sp = sp->knext) {
		if (sp->type != SEG_SPAN)
			return check_fail(vmp, sp, "span list holds a non-span");
		if (sp != on_alist || sp->seq <= last_seq ||
		    sp->seq > vmp->span_seq)
			return check_fail(vmp, sp, "span list out of order");
		last_seq = sp->seq;
		do
			on_alist = on_alist->anext;
		while (on_alist->type == SEG_ALLOC || on_alist->type == SEG_FREE);
		nlisted++;
	}
	if (nlisted != nspans || nspans != vmp->nspans)
		return check_fail(vmp, NULL, "span count mismatch");
	/* Spans must not overlap (sorted copy). */
	if (nspans > 1) {
		size_t page = plat_pagesize(), i = 0;
		size_t bytes = (nspans * 2 * sizeof (uintptr_t) + page - 1) &
		    ~(page - 1);
		starts = nspans <= 32 ? local : meta_pages_alloc(bytes);
		if (starts != NULL) {
			for (vseg_t *sp = vmp->span0.knext; sp != &vmp->span0;
			    sp = sp->knext, i++) {
				starts[2 * i] = sp->start;
				starts[2 * i + 1] = seg_last(sp);
			}
			/* Insertion sort by start on pairs: checker, not hot. */
			for (size_t a = 1; a < nspans; a++) {
				uintptr_t k0 = starts[2 * a], k1 = starts[2 * a + 1];
				size_t b = a;
				while (b > 0 && starts[2 * (b - 1)] > k0) {
					starts[2 * b] = starts[2 * (b - 1)];
					starts[2 * b + 1] = starts[2 * (b - 1) + 1];
					b--;
				}
				starts[2 * b] = k0;
				starts[2 * b + 1] = k1;
				if (nspans > 4096)
					break; /* quadratic beyond this */
			}
			bool overlap = false;
			if (nspans <= 4096)
				for (size_t a = 1; a < nspans; a++)
					if (starts[2 * a] <= starts[2 * a - 1])
						overlap = true;
			if (starts != local)
				plat_pages_free(starts, bytes);
			if (overlap)
				return check_fail(vmp, NULL, "spans overlap");
		}
	}
	/* Freelists and bitmap. */
	for (unsigned c = 0; c < NCLASS; c++) {
		bool bit = (vmp->freemap[c / 64] >> (c % 64)) & 1;
		if (bit != (vmp->freelist[c] != NULL))
			return check_fail(vmp, vmp->freelist[c],
			    "bitmap disagrees with freelist");
		for (vseg_t *s = vmp->freelist[c]; s != NULL; s = s->knext) {
			if (s->type != SEG_FREE || s->cls != c)
				return check_fail(vmp, s,
				    "freelist holds a segment of another kind");
			if (s->knext != NULL && s->knext->kprev != s)
				return check_fail(vmp, s, "freelist links broken");
			if (s->seq == 0 || s->seq > vmp->free_seq ||
			    (s->knext != NULL && s->knext->seq >= s->seq))
				return check_fail(vmp, s,
				    "freelist not newest first");
			nlisted++;
		}
		if (!memo_holds(vmp, c))
			return check_fail(vmp, vmp->freelist[c],
			    "scan memo claims a segment that fits");
	}
	if (nlisted - nspans != nfree || nfree != vmp->nfree)
		return check_fail(vmp, NULL, "free segment count mismatch");
	/* Hash: exactly the allocated segments, each in its bucket. */
	for (size_t h = 0; h < vmp->hash_size; h++)
		for (vseg_t *s = vmp->hash[h]; s != NULL; s = s->knext) {
			if (s->type != SEG_ALLOC || hash_index(vmp, s->start) != h)
				return check_fail(vmp, s, "hash chain corrupt");
			nhash++;
		}
	if (nhash != nalloc || nhash != vmp->hash_count || nalloc != vmp->nalloc)
		return check_fail(vmp, NULL, "hash count mismatch");
	/* Accounting. */
	if (total != vmp->mem_total || import != vmp->mem_import ||
	    inuse != vmp->mem_inuse)
		return check_fail(vmp, NULL, "span or in-use accounting wrong");
	if (vmp->st_alloc - vmp->st_free != nalloc)
		return check_fail(vmp, NULL,
		    "alloc - free statistics disagree with live segments");
	if (vmp->rotor != NULL && !rotor_seen)
		return check_fail(vmp, NULL, "rotor points to a dead segment");
	if (vmp->tag_nfree > vmp->tags_owned ||
	    vmp->tags_owned != vmp->tag_nfree + nspans + nalloc + nfree)
		return check_fail(vmp, NULL, "boundary tag accounting wrong");
	plat_mutex_unlock(&vmp->lock);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Fork: hold every lock across fork() so the child inherits a sane state. */

static void
fork_prepare(void)
{
	plat_mutex_lock(&arena_list_lock);
	for (vmem_t *v = arena_list_head; v != NULL; v = v->list_next)
		plat_mutex_lock(&v->lock);
	plat_mutex_lock(&tagpool_lock);
}

static void
fork_release(void)
{
	plat_mutex_unlock(&tagpool_lock);
	for (vmem_t *v = arena_list_tail; v != NULL; v = v->list_prev)
		plat_mutex_unlock(&v->lock);
	plat_mutex_unlock(&arena_list_lock);
}

static void fork_parent(void) { fork_release(); }
static void
fork_child(void)
{
	/* The threads that were reaping are not in the child. */
	for (vmem_t *v = arena_list_head; v != NULL; v = v->list_next)
		v->reap_refs = 0;
	fork_release();
}
