/*
 * Object caches with magazines (Bonwick 1994; Bonwick & Adams 2001).
 *
 * Problem: hand out fixed-size buffers fast on many CPUs, keep constructed
 * objects for reuse, and give memory back to the arena when it idles.
 *
 * Layers, top to bottom:
 *  - CPU layer: per CPU slot a "loaded" and a "previous" magazine (arrays
 *    of buffer pointers) and their round counts. Allocation pops from
 *    loaded, else swaps with previous if that one is full; free pushes to
 *    loaded, else swaps with previous if that one is empty. Only when both
 *    fail does the slot go to the depot. Each slot has its own spin lock
 *    (an atomic flag, one atomic exchange per operation): the CPU id is
 *    only a hint (a thread may migrate at any time), the lock makes any
 *    thread on any slot correct. A busy slot is skipped for the next one.
 *  - Depot: lists of full and of empty magazines under one mutex, each with
 *    working-set tracking: the lowest length seen during the current
 *    interval; at the end of an interval (kmem_cache_update) that minimum
 *    becomes the number of magazines that stayed idle, which is what
 *    kmem_reap() frees. A busy depot lock is counted; an interval with
 *    contention above a threshold grows the magazine size (all magazines
 *    are purged and the size changed with every slot lock held).
 *  - Slab layer: slabs of slabsize bytes from the cache's arena, cut into
 *    chunks. All bookkeeping is outside the buffers: a slab record with a
 *    bitmap of free chunks (and, when debugging, a bitmap of chunks held by
 *    callers), found from a buffer address through an open-addressed
 *    table keyed by "block" (address >> blockshift, blocks no larger than
 *    a slab) that holds each slab's base under every block it overlaps:
 *    the buffer's own block finds it, and the free path's ownership check
 *    reads one table line, no slab record. So KMC_NOTOUCH caches (quantum
 *    caches, simulated address spaces) never dereference a buffer.
 *
 * Constructed state lives in the magazine layer (illumos semantics since
 * 2001): the constructor runs when a buffer leaves the slab layer, the
 * destructor when it returns to it. With KMF_DEADBEEF the magazines hold
 * poisoned, unconstructed buffers instead and every alloc/free constructs
 * and destroys.
 *
 * Every free checks that the buffer is a chunk of one of the cache's slabs
 * (wrong-cache frees are reported, in release builds too); KMF_DOUBLEFREE
 * also tracks which chunks callers hold.
 *
 * Locking order: slab_lock -> slot locks (ascending index) -> depot lock
 * -> meta_lock -> kmeta's lock. The slab hash is changed only with
 * slab_lock and every slot lock held, so holding either one slot lock or
 * slab_lock is enough to read it. No cache lock is held across a call into
 * vmem, a constructor, destructor or reclaim callback, or an error report.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "kmem_impl.h"

#include <stdatomic.h>

#include "vmem_string.h"

#include "error.h"
#include "fault.h"
#include "hg.h"
#include "qcache.h"
#include "vmem_impl.h"

#define KMEM_ALIGN_DEFAULT 8
#define KMEM_REDZONE_BYTES 8
#define KMEM_CONTENTION_LIMIT 3 /* depot contention per interval to grow */
/* Between updates: grow when more than KMEM_WINDOW_CONTENDED of the last
 * KMEM_WINDOW depot entries found the depot lock busy. */
#define KMEM_WINDOW 1024
#define KMEM_WINDOW_CONTENDED 16
/* Depot traffic: a slot whose last KMEM_TRAFFIC_WINDOW depot exchanges
 * came in fewer than KMEM_TRAFFIC_OPS operations each asks for the next
 * magazine size, as long as a magazine's buffers stay within
 * KMEM_TRAFFIC_MAXBYTES (illumos bounds its magazine types near there). */
#define KMEM_TRAFFIC_WINDOW 64
#define KMEM_TRAFFIC_OPS 16
#define KMEM_TRAFFIC_MAXBYTES (128 * 1024)
/* Why a resize is wanted (bits of resize_wanted). */
#define KMEM_GROW_CONTENTION 1
#define KMEM_GROW_TRAFFIC 2
#define KMEM_DEADBEEF_WORD 0xdeadbeefdeadbeefULL
#define KMEM_REDZONE_BYTE 0xfe
#define KMEM_CACHELINE 64

#if defined(__GNUC__)
#define KMEM_NOINLINE __attribute__((noinline))
#else
#define KMEM_NOINLINE
#endif

/* Magazine sizes a cache may use (rounds), grown in this order. */
static const unsigned kmem_magsizes[] = { 1, 3, 7, 15, 31, 63, 127, 255 };
#define KMEM_NMAGSIZES (sizeof (kmem_magsizes) / sizeof (kmem_magsizes[0]))

typedef struct kmag {
	struct kmag *next;
	uint32_t cap;
	uint32_t held;     /* kmeta_size(mag_bytes(cap)), for the accounts */
	void *round[];
} kmag_t;

typedef struct kmaglist {
	kmag_t *head;
	size_t count;
	atomic_size_t avail;  /* count, readable without the depot lock */
	size_t min;       /* lowest count in the current interval */
	size_t reaplimit; /* idle through the last interval: may be reaped */
} kmaglist_t;

typedef struct kcpu {
	atomic_int lock;
	unsigned magsize;   /* 0: no magazines */
	unsigned rounds;    /* in loaded */
	unsigned prounds;   /* in prev: 0 or magsize */
	kmag_t *loaded;
	kmag_t *prev;
	uint64_t alloc;     /* served here */
	uint64_t free;      /* taken here */
	unsigned exchanges; /* with the depot, in this window */
	uint64_t ops_mark;  /* alloc + free when the window began */
} kcpu_t;

typedef struct kslab {
	struct kslab *next, *prevp; /* on partial, complete or no list */
	uintptr_t base;
	uint32_t nfree;
	uint32_t hint;              /* no free chunk in words below */
	int list;
	uint64_t *freemap;          /* 1 = chunk free in the slab */
	_Atomic uint64_t *usermap;  /* KMF_DOUBLEFREE: 1 = held by a caller */
	size_t recsize;
} kslab_t;

enum { SL_NONE, SL_PARTIAL, SL_COMPLETE };

/* A slab table entry: base 0 (never a slab: no span holds address 0) is
 * empty; slabidx is the record's address plus which block of the slab
 * the entry is for. */
typedef struct kent {
	uintptr_t base;
	uintptr_t slabidx;
} kent_t;

/*
 * Laid out by who writes what: the first lines hold what the fast paths
 * only read (geometry, the CPU slots, the slab hash), and the depot, the
 * slab layer and the accounts each start a cache line of their own. When
 * the depot lock shared a line with cpustride, every depot entry by one
 * CPU cost the other CPU's next allocation a cache miss.
 */
struct kmem_cache {
	/* Read-mostly: written at creation, or with every lock held. */
	size_t bufsize, chunk, align, slabsize;
	uint32_t nbufs, nwords;
	unsigned blockshift;       /* log2(slabsize), rounded down */
	/* offset / chunk = offset * chunkrecip >> recipshift, exact below
	 * slabsize; chunkrecip 0: divide (slabs of 2 GiB and more). */
	unsigned recipshift;
	uint64_t chunkrecip;
	int cflags, debug;
	int mag_constructed;       /* magazine rounds are constructed */
	int fastpath;              /* magazines and no debugging */
	int use_xalloc;
	unsigned ncpu;
	char *cpumem;              /* ncpu slots of KMEM_CACHELINE multiples */
	size_t cpustride, cpumem_bytes;
	kent_t *hash;              /* the slab table */
	size_t hashsize;           /* entries, a power of two */
	size_t hashused;           /* entries in use */
	unsigned hashshift;

	/*
	 * Zero when no magazine holds a round (set by the first free into a
	 * magazine, cleared when everything is purged): allocation then goes
	 * straight to the slab layer without taking a slot, which is every
	 * allocation of a growing heap. A hint only: a free racing with a
	 * purge can leave rounds behind it, used again after the next free.
	 * Written only when it changes, so it stays with the read-mostly.
	 */
	atomic_int mag_loaded;
	/* KMEM_GROW_* bits: set by the depot (contention) or a slot
	 * (traffic) to ask for bigger magazines; read on every magazine
	 * slow path, so kept off the depot's lines. */
	atomic_int resize_wanted;
	int (*ctor)(void *, void *, int);
	void (*dtor)(void *, void *);
	void (*reclaim)(void *);
	void *priv;
	vmem_t *vmp;

	/* Depot */
	_Alignas(KMEM_CACHELINE) plat_mutex_t depot_lock;
	atomic_int depot_busy;
	kmaglist_t full, empty;
	unsigned magsize;
	unsigned magidx;
	size_t magheld;            /* kmeta_size(mag_bytes(magsize)) */
	uint64_t contention, contention_mark;
	uint64_t depot_enters, window_mark;
	uint64_t depot_alloc, depot_free, mag_resize, mag_grow_traffic;

	/* Slab layer */
	_Alignas(KMEM_CACHELINE) plat_mutex_t slab_lock;
	kslab_t partial, complete; /* sentinels */
	kslab_t *spare;            /* one empty slab kept */
	size_t nslabs;
	unsigned slabs_making;     /* slab_create at work, slab lock dropped */
	size_t out;                /* chunks out of the slab layer */
	/*
	 * Rounds of magazines taken out of the CPU layer or the depot to be
	 * destroyed, not yet back in their slabs: raised under the lock that
	 * took them, lowered under slab_lock with out, so a snapshot holding
	 * every lock counts each such buffer as cached, not in use.
	 */
	atomic_size_t rounds_leaving;
	uint64_t slab_alloc, slab_free, slab_create, slab_destroy;
	uint64_t direct_alloc, direct_free, alloc_fail, reaps;

	/* Bookkeeping accounts, counters, list links: written, never on
	 * the fast path. */
	_Alignas(KMEM_CACHELINE) plat_mutex_t meta_lock;
	size_t meta_bytes;
	void (*charge)(void *, long);
	void *charge_arg;

	atomic_uint_fast64_t construct, destruct;

	kmem_cache_t *gnext, *gprevp;
	unsigned visit_refs;    /* kmem_foreach_cache calls on it (list lock) */
	size_t selfsize;
	char name[KMEM_CACHE_NAMELEN];
};

/* The list of all caches. */
static plat_mutex_t kmem_list_lock;
static plat_cond_t kmem_list_cv;        /* a cache's visit_refs fell to 0 */
static kmem_cache_t *kmem_list_head, *kmem_list_tail;
static atomic_int kmem_init_state;
/* Read by every kmem_cache_create, set by kmem_set_debug_flags. */
static atomic_int kmem_default_debug;

static void kmem_fork_prepare(void);
static void kmem_fork_release(void);
static void kmem_fork_child(void);

static void
kmem_global_init_once(void)
{
	plat_mutex_init(&kmem_list_lock);
	plat_cond_init(&kmem_list_cv);
	/* After vmem's: kmem's prepare handler then runs first. */
	vmem_init();
	plat_atfork(kmem_fork_prepare, kmem_fork_release, kmem_fork_child);
}

void
kmem_global_init(void)
{
	plat_once(&kmem_init_state, kmem_global_init_once);
}

/* ------------------------------------------------------------------ */
/* Small helpers */

static int
is_pow2(size_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

static unsigned
log2_floor(size_t x)
{
	unsigned n = 0;

	while (x > 1) {
		x >>= 1;
		n++;
	}
	return n;
}

static size_t
pow2_ceil(size_t x)
{
	size_t p = 1;

	while (p < x)
		p <<= 1;
	return p;
}

static unsigned
first_set(uint64_t w)
{
#if defined(__GNUC__)
	return (unsigned)__builtin_ctzll(w);
#else
	unsigned n = 0;

	while (!(w & 1)) {
		w >>= 1;
		n++;
	}
	return n;
#endif
}

/* Bookkeeping accounts; the charge hook runs with meta_lock held. */
static void
meta_account(kmem_cache_t *cp, long delta)
{
	plat_mutex_lock(&cp->meta_lock);
	cp->meta_bytes = (size_t)((long)cp->meta_bytes + delta);
	if (cp->charge != NULL)
		cp->charge(cp->charge_arg, delta);
	plat_mutex_unlock(&cp->meta_lock);
}

static void *
meta_alloc(kmem_cache_t *cp, size_t size)
{
	void *p = kmeta_alloc(size);

	if (p != NULL)
		meta_account(cp, (long)kmeta_size(size));
	return p;
}

static void
meta_free(kmem_cache_t *cp, void *p, size_t size)
{
	if (p == NULL)
		return;
	kmeta_free(p, size);
	meta_account(cp, -(long)kmeta_size(size));
}

/* ------------------------------------------------------------------ */
/* Slot locks */

static kcpu_t *
cpu_slot(kmem_cache_t *cp, unsigned i)
{
	return (kcpu_t *)(void *)(cp->cpumem + (size_t)i * cp->cpustride);
}

static int
slot_trylock(kcpu_t *c)
{
	if (atomic_load_explicit(&c->lock, memory_order_relaxed) == 0 &&
	    atomic_exchange_explicit(&c->lock, 1, memory_order_acquire) == 0) {
		HG_LOCK_ACQUIRED(&c->lock);
		return 1;
	}
	return 0;
}

static void
slot_lock(kcpu_t *c)
{
	while (!slot_trylock(c))
		continue;
}

static void
slot_unlock(kcpu_t *c)
{
	HG_LOCK_RELEASED(&c->lock);
	atomic_store_explicit(&c->lock, 0, memory_order_release);
}

/*
 * Lock the slot of the CPU we run on, or the next free one; NULL if every
 * slot was busy once round. With more runnable threads than CPUs, holders
 * are preempted inside their slots: spinning until one runs again costs
 * whole time slices, so the fast paths take the slab layer instead, whose
 * lock sleeps.
 */
static KMEM_NOINLINE kcpu_t *
cpu_try_others(kmem_cache_t *cp, unsigned busy)
{
	unsigned i = busy;

	for (;;) {
		if (++i == cp->ncpu)
			i = 0;
		if (i == busy)
			return NULL;
		kcpu_t *c = cpu_slot(cp, i);
		if (slot_trylock(c))
			return c;
	}
}

static inline kcpu_t *
cpu_try_enter(kmem_cache_t *cp)
{
	unsigned i = plat_cpu_id();
	kcpu_t *c;

	if (i >= cp->ncpu)
		i %= cp->ncpu;
	c = cpu_slot(cp, i);
	return slot_trylock(c) ? c : cpu_try_others(cp, i);
}

/* Lock the slot of the CPU we run on, or the next free one. */
static kcpu_t *
cpu_enter(kmem_cache_t *cp)
{
	unsigned i = plat_cpu_id();

	if (i >= cp->ncpu)
		i %= cp->ncpu;
	for (;;) {
		kcpu_t *c = cpu_slot(cp, i);
		if (slot_trylock(c))
			return c;
		if (++i == cp->ncpu)
			i = 0;
	}
}

static void
cpus_lock_all(kmem_cache_t *cp)
{
	unsigned i;

	for (i = 0; i < cp->ncpu; i++)
		slot_lock(cpu_slot(cp, i));
}

static void
cpus_unlock_all(kmem_cache_t *cp)
{
	unsigned i;

	for (i = 0; i < cp->ncpu; i++)
		slot_unlock(cpu_slot(cp, i));
}

/*
 * Bonwick's magazines grow when the depot lock is contended; illumos
 * checks every 15 seconds (kmem_cache_update). A library has no clock
 * thread of its own, so the depot also judges itself every KMEM_WINDOW
 * entries: two threads hammering one cache get bigger magazines within
 * milliseconds, and a cache nobody contends never changes. The resize
 * itself needs every slot lock, so it is only asked for here and done by
 * the thread after it has left its slot (kmem_resize_if_wanted).
 */
static void
depot_window_end(kmem_cache_t *cp)
{
	if (cp->contention - cp->window_mark > KMEM_WINDOW_CONTENDED &&
	    cp->magidx + 1 < KMEM_NMAGSIZES && cp->magsize != 0)
		(void)atomic_fetch_or_explicit(&cp->resize_wanted,
		    KMEM_GROW_CONTENTION, memory_order_relaxed);
	cp->window_mark = cp->contention;
}

static void
depot_enter(kmem_cache_t *cp)
{
	if (atomic_fetch_add_explicit(&cp->depot_busy, 1,
	    memory_order_relaxed) != 0) {
		plat_mutex_lock(&cp->depot_lock);
		cp->contention++;
	} else {
		plat_mutex_lock(&cp->depot_lock);
	}
	if ((++cp->depot_enters & (KMEM_WINDOW - 1)) == 0)
		depot_window_end(cp);
}

static void
depot_exit(kmem_cache_t *cp)
{
	plat_mutex_unlock(&cp->depot_lock);
	atomic_fetch_sub_explicit(&cp->depot_busy, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Slab table (see the theory statement for who may read and write it) */

/*
 * Open addressing, linear probing. An entry holds a slab's base address,
 * so a lookup reads one line of the table and never the slab record: a
 * free that proves a buffer is the cache's costs one cache miss, not the
 * two to four of a chained hash. A slab is entered once under every block
 * it overlaps (slabs are not block-aligned), so the buffer's own block
 * finds it. The low bits of the slab pointer say which of its blocks an
 * entry is for (records are 16-byte aligned; a slab overlaps at most 3).
 */
#define KENT_IDX_MASK ((uintptr_t)3)

static inline size_t
hash_home(const kmem_cache_t *cp, uintptr_t block)
{
	return (size_t)(((uint64_t)block * 0x9e3779b97f4a7c15ULL) >>
	    cp->hashshift) & (cp->hashsize - 1);
}

static inline kslab_t *
kent_slab(const kent_t *e)
{
	return (kslab_t *)(e->slabidx & ~KENT_IDX_MASK);
}

static inline uintptr_t
kent_block(const kmem_cache_t *cp, const kent_t *e)
{
	return (e->base >> cp->blockshift) + (e->slabidx & KENT_IDX_MASK);
}

/* Blocks slab s overlaps: first s->base >> blockshift, this many. */
static inline unsigned
slab_nblocks(const kmem_cache_t *cp, uintptr_t base)
{
	return (unsigned)(((base + cp->slabsize - 1) >> cp->blockshift) -
	    (base >> cp->blockshift)) + 1;
}

/* The chunk index of addr in the slab at base, or -1 if addr is not a
 * chunk start. */
static inline long
slab_chunk_index(const kmem_cache_t *cp, uintptr_t base, uintptr_t addr)
{
	uintptr_t off = addr - base;
	uint64_t idx;

	/*
	 * One multiply for every chunk size: frees of mixed sizes (a
	 * quantum cache per size) take the same branches whatever the size,
	 * where a shift-or-multiply choice mispredicted every other free.
	 */
	if (cp->chunkrecip != 0)
		idx = ((uint64_t)off * cp->chunkrecip) >> cp->recipshift;
	else
		idx = off / cp->chunk;
	if (idx >= cp->nbufs || idx * cp->chunk != off)
		return -1;
	return (long)idx;
}

/* Find the slab holding addr as a chunk start; *idx gets the chunk. Any
 * entry whose slab covers addr is the one (slabs never overlap). */
static inline kslab_t *
hash_lookup(const kmem_cache_t *cp, uintptr_t addr, long *idx)
{
	size_t mask = cp->hashsize - 1;
	size_t i = hash_home(cp, addr >> cp->blockshift);

	for (;; i = (i + 1) & mask) {
		const kent_t *e = &cp->hash[i];
		if (e->base == 0)
			return NULL;
		if (addr - e->base < cp->slabsize) {
			*idx = slab_chunk_index(cp, e->base, addr);
			return *idx < 0 ? NULL : kent_slab(e);
		}
	}
}

static void
hash_put(kmem_cache_t *cp, uintptr_t base, uintptr_t slabidx)
{
	size_t mask = cp->hashsize - 1;
	size_t i = hash_home(cp, (base >> cp->blockshift) +
	    (slabidx & KENT_IDX_MASK));

	while (cp->hash[i].base != 0)
		i = (i + 1) & mask;
	cp->hash[i].base = base;
	cp->hash[i].slabidx = slabidx;
	cp->hashused++;
}

/* Enter s under each of its blocks (slab_lock and every slot held). */
static void
hash_insert_locked(kmem_cache_t *cp, kslab_t *s)
{
	unsigned n = slab_nblocks(cp, s->base);

	for (unsigned k = 0; k < n; k++)
		hash_put(cp, s->base, (uintptr_t)s | k);
}

/* Empty entry i, moving later entries of the run back so that every
 * entry stays reachable from its home (no tombstones). */
static void
hash_delete_at(kmem_cache_t *cp, size_t i)
{
	size_t mask = cp->hashsize - 1, j = i;

	for (;;) {
		size_t home;
		j = (j + 1) & mask;
		if (cp->hash[j].base == 0)
			break;
		home = hash_home(cp, kent_block(cp, &cp->hash[j]));
		if (((j - home) & mask) >= ((j - i) & mask)) {
			cp->hash[i] = cp->hash[j];
			i = j;
		}
	}
	cp->hash[i].base = 0;
	cp->hash[i].slabidx = 0;
	cp->hashused--;
}

static void
hash_remove_locked(kmem_cache_t *cp, kslab_t *s)
{
	unsigned n = slab_nblocks(cp, s->base);
	size_t mask = cp->hashsize - 1;

	for (unsigned k = 0; k < n; k++) {
		uintptr_t want = (uintptr_t)s | k;
		size_t i = hash_home(cp, (s->base >> cp->blockshift) + k);
		while (cp->hash[i].slabidx != want)
			i = (i + 1) & mask;
		hash_delete_at(cp, i);
	}
}

/*
 * Called with slab_lock held, before entering a slab: keep the table at
 * most half full (doubling it), so probe runs stay short. If no memory is
 * left for a bigger table, the slab may still go in until the table is
 * 7/8 full; past that it fails (-1) and the allocation with it.
 */
static int
hash_make_room(kmem_cache_t *cp)
{
	size_t need = cp->hashused + 3, newsize = cp->hashsize, i;
	size_t oldsize = cp->hashsize;
	kent_t *nt, *old = cp->hash;
	unsigned newshift = cp->hashshift;

	while (need * 2 > newsize) {
		newsize *= 2;
		newshift--;
	}
	if (newsize == oldsize)
		return 0;
	nt = fault_point(FAULT_SLABTABLE) ? NULL :
	    meta_alloc(cp, newsize * sizeof (kent_t));
	if (nt == NULL)
		return need * 8 <= oldsize * 7 ? 0 : -1;
	/* (kmeta memory comes zeroed: every entry empty) */
	cpus_lock_all(cp);
	cp->hash = nt;
	cp->hashsize = newsize;
	cp->hashshift = newshift;
	cp->hashused = 0;
	for (i = 0; i < oldsize; i++)
		if (old[i].base != 0)
			hash_put(cp, old[i].base, old[i].slabidx);
	cpus_unlock_all(cp);
	meta_free(cp, old, oldsize * sizeof (kent_t));
	return 0;
}

/* ------------------------------------------------------------------ */
/* Slab layer */

static void
slist_init(kslab_t *head)
{
	head->next = head->prevp = head;
}

static void
slist_remove(kslab_t *s)
{
	if (s->list == SL_NONE)
		return;
	s->prevp->next = s->next;
	s->next->prevp = s->prevp;
	s->list = SL_NONE;
}

static void
slist_add(kmem_cache_t *cp, kslab_t *s, int list)
{
	kslab_t *head = list == SL_PARTIAL ? &cp->partial : &cp->complete;

	slist_remove(s);
	s->next = head->next;
	s->prevp = head;
	head->next->prevp = s;
	head->next = s;
	s->list = list;
}

static int
kmflag_to_vmflag(int kmflag)
{
	return (kmflag & KM_VMFLAGS) & ~VM_PANIC;
}

static void
fill_words(void *p, size_t len, uint64_t word)
{
	unsigned char *b = p;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8)
		memcpy(b + i, &word, 8);
	for (; i < len; i++)
		b[i] = (unsigned char)(word >> (8 * (i % 8)));
}

static int
check_words(const void *p, size_t len, uint64_t word)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8)
		if (memcmp(b + i, &word, 8) != 0)
			return -1;
	for (; i < len; i++)
		if (b[i] != (unsigned char)(word >> (8 * (i % 8))))
			return -1;
	return 0;
}

/*
 * A new slab could not be recorded for lack of bookkeeping memory (no lock
 * held). A quantum cache's caller waiting in vmem must hear of it: giving
 * the slab back moves the arena on, which would look like progress worth
 * waiting for. A KM_SLEEP caller gets NULL, which it does not expect: say
 * why (waiting would not bring back pages the platform refused); with
 * KM_PANIC the panic report says it.
 */
static void
slab_nometa(kmem_cache_t *cp, int kmflag)
{
	if (cp->cflags & KMC_QCACHE)
		vmem_count_nometa(cp->vmp);
	else if (!(kmflag & (KM_NOSLEEP | KM_PANIC)))
		vmem_error_report(VMEM_E_NOMEM, 1, "kmem_cache_alloc", NULL,
		    cp->name, 0, cp->bufsize, "KM_SLEEP allocation failed: "
		    "no memory for the cache's bookkeeping");
}

/* Take a slab from the arena and build its record. No lock held. */
static kslab_t *
slab_create(kmem_cache_t *cp, int kmflag)
{
	int vmflag = kmflag_to_vmflag(kmflag);
	size_t words = cp->nwords;
	size_t rec = sizeof (kslab_t) + words * sizeof (uint64_t) *
	    ((cp->debug & KMF_DOUBLEFREE) ? 2 : 1);
	void *mem;
	kslab_t *s;
	uint32_t i;

	if (fault_point(FAULT_SLAB))
		return NULL;
	if (cp->cflags & KMC_QCACHE)
		mem = vmem_qcache_slab_xalloc(cp->vmp, cp->slabsize,
		    cp->align > vmem_quantum(cp->vmp) ? cp->align : 0, vmflag);
	else if (cp->use_xalloc)
		mem = vmem_xalloc(cp->vmp, cp->slabsize,
		    cp->align > vmem_quantum(cp->vmp) ? cp->align : 0, 0, 0,
		    NULL, NULL, vmflag);
	else
		mem = vmem_alloc(cp->vmp, cp->slabsize, vmflag);
	if (mem == NULL)
		return NULL;
	s = meta_alloc(cp, rec);
	if (s == NULL) {
		slab_nometa(cp, kmflag);
		if (cp->use_xalloc)
			vmem_xfree(cp->vmp, mem, cp->slabsize);
		else
			vmem_free(cp->vmp, mem, cp->slabsize);
		return NULL;
	}
	s->recsize = rec;
	s->base = (uintptr_t)mem;
	s->nfree = cp->nbufs;
	s->list = SL_NONE;
	s->freemap = (uint64_t *)(void *)(s + 1);
	if (cp->debug & KMF_DOUBLEFREE)
		s->usermap = (_Atomic uint64_t *)(void *)(s->freemap + words);
	for (i = 0; i < cp->nbufs / 64; i++)
		s->freemap[i] = ~(uint64_t)0;
	if (cp->nbufs % 64 != 0)
		s->freemap[i] = ((uint64_t)1 << (cp->nbufs % 64)) - 1;
	if (cp->debug & KMF_DEADBEEF)
		fill_words(mem, cp->slabsize, KMEM_DEADBEEF_WORD);
	return s;
}

static void
slab_release(kmem_cache_t *cp, kslab_t *s)
{
	if (cp->use_xalloc)
		vmem_xfree(cp->vmp, (void *)s->base, cp->slabsize);
	else
		vmem_free(cp->vmp, (void *)s->base, cp->slabsize);
	meta_free(cp, s, s->recsize);
}

/* Called with slab_lock held: make a new slab visible. -1 if the slab
 * table has no room left (the caller gives the slab back). */
static int
slab_publish(kmem_cache_t *cp, kslab_t *s)
{
	if (hash_make_room(cp) != 0)
		return -1;
	cpus_lock_all(cp);
	hash_insert_locked(cp, s);
	cpus_unlock_all(cp);
	cp->nslabs++;
	cp->slab_create++;
	slist_add(cp, s, SL_PARTIAL);
	return 0;
}

/* Called with slab_lock held: hide a slab about to be released. */
static void
slab_unpublish(kmem_cache_t *cp, kslab_t *s)
{
	slist_remove(s);
	cpus_lock_all(cp);
	hash_remove_locked(cp, s);
	cpus_unlock_all(cp);
	cp->nslabs--;
	cp->slab_destroy++;
}

/*
 * Called with slab_lock held and no partial slab: the spare, or a new slab
 * (the lock is dropped while the arena is asked). Returns a partial slab
 * with the lock held, or NULL with it released. Out of line so the common
 * path of slab_alloc stays small.
 */
static KMEM_NOINLINE kslab_t *
slab_refill(kmem_cache_t *cp, int kmflag)
{
	kslab_t *s;

	for (;;) {
		if (cp->partial.next != &cp->partial)
			return cp->partial.next;
		if (cp->spare != NULL) {
			s = cp->spare;
			cp->spare = NULL;
			slist_add(cp, s, SL_PARTIAL);
			return s;
		}
		/* Cut for the geometry of now: kmem_cache_set_debug waits
		 * for no slab being made (slabs_making) as for none made. */
		cp->slabs_making++;
		plat_mutex_unlock(&cp->slab_lock);
		s = slab_create(cp, kmflag);
		plat_mutex_lock(&cp->slab_lock);
		cp->slabs_making--;
		if (s != NULL && slab_publish(cp, s) != 0) {
			plat_mutex_unlock(&cp->slab_lock);
			slab_release(cp, s);
			slab_nometa(cp, kmflag);
			plat_mutex_lock(&cp->slab_lock);
			s = NULL;
		}
		if (s == NULL) {
			cp->alloc_fail++;
			plat_mutex_unlock(&cp->slab_lock);
			return NULL;
		}
	}
}

/*
 * Take one chunk from the slab layer (unconstructed). to_user: it goes
 * straight to a caller (counted, and marked held when debugging).
 */
static inline void *
slab_alloc(kmem_cache_t *cp, int kmflag, int to_user)
{
	kslab_t *s;
	uint32_t w;
	unsigned bit;
	uintptr_t buf;

	plat_mutex_lock(&cp->slab_lock);
	s = cp->partial.next;
	if (s == &cp->partial && (s = slab_refill(cp, kmflag)) == NULL)
		return NULL;
	for (w = s->hint; s->freemap[w] == 0; w++)
		continue;
	s->hint = w;
	bit = first_set(s->freemap[w]);
	s->freemap[w] &= ~(1ULL << bit);
	if (--s->nfree == 0)
		slist_add(cp, s, SL_COMPLETE);
	buf = s->base + ((size_t)w * 64 + bit) * cp->chunk;
	cp->out++;
	cp->slab_alloc++;
	if (to_user) {
		cp->direct_alloc++;
		if (s->usermap != NULL)
			atomic_fetch_or_explicit(&s->usermap[w], 1ULL << bit,
			    memory_order_relaxed);
	}
	plat_mutex_unlock(&cp->slab_lock);
	return (void *)buf;
}

/* Where a chunk returned to the slab layer comes from. */
enum chunk_origin {
	FROM_CACHE,             /* a buffer the cache took back itself */
	FROM_USER,              /* a caller's free (counted; the caller has
	                         * already cleared the held bit) */
	FROM_LEAVING_MAGAZINE   /* a round of a magazine being destroyed */
};

/*
 * Return one chunk to the slab layer. Returns 0, or an error code to
 * report (nothing changed).
 */
static int
slab_free(kmem_cache_t *cp, void *buf, enum chunk_origin origin)
{
	kslab_t *s, *victim = NULL;
	long idx;
	uint64_t mask;
	int from_user = origin == FROM_USER;

	plat_mutex_lock(&cp->slab_lock);
	if (origin == FROM_LEAVING_MAGAZINE)
		atomic_fetch_sub_explicit(&cp->rounds_leaving, 1,
		    memory_order_relaxed);
	s = hash_lookup(cp, (uintptr_t)buf, &idx);
	if (s == NULL) {
		plat_mutex_unlock(&cp->slab_lock);
		return KMEM_E_WRONGCACHE;
	}
	mask = 1ULL << (idx % 64);
	if (s->freemap[idx / 64] & mask) {
		plat_mutex_unlock(&cp->slab_lock);
		return KMEM_E_DOUBLEFREE;
	}
	if (from_user)
		cp->direct_free++;
	s->freemap[idx / 64] |= mask;
	if ((uint32_t)(idx / 64) < s->hint)
		s->hint = (uint32_t)(idx / 64);
	cp->out--;
	cp->slab_free++;
	if (++s->nfree == cp->nbufs) {
		slist_remove(s);
		if (cp->spare == NULL) {
			cp->spare = s;
		} else {
			slab_unpublish(cp, s);
			victim = s;
		}
	} else if (s->list == SL_COMPLETE) {
		slist_add(cp, s, SL_PARTIAL);
	}
	plat_mutex_unlock(&cp->slab_lock);
	if (victim != NULL)
		slab_release(cp, victim);
	return 0;
}

/* Free the spare empty slab (reaping). */
static void
slab_reap_spare(kmem_cache_t *cp)
{
	kslab_t *s;

	plat_mutex_lock(&cp->slab_lock);
	s = cp->spare;
	cp->spare = NULL;
	if (s != NULL)
		slab_unpublish(cp, s);
	plat_mutex_unlock(&cp->slab_lock);
	if (s != NULL)
		slab_release(cp, s);
}

/* ------------------------------------------------------------------ */
/* Reporting */

static void
report(kmem_cache_t *cp, int code, const char *call, const void *buf,
    const char *detail)
{
	vmem_error_report(code, code == KMEM_E_LEAK, call, NULL, cp->name,
	    (uintptr_t)buf, cp->bufsize, "%s", detail);
}

static void
report_free_error(kmem_cache_t *cp, int code, const char *call,
    const void *buf)
{
	const char *what = "buffer freed to a cache it does not belong to";

	if (code == KMEM_E_DOUBLEFREE)
		what = "double free: buffer is already free";
	report(cp, code, call, buf, what);
}

/* ------------------------------------------------------------------ */
/* Constructing and destroying, debug checks */

static int
construct_slow(kmem_cache_t *cp, void *buf, int kmflag)
{
	atomic_fetch_add_explicit(&cp->construct, 1, memory_order_relaxed);
	if (cp->ctor(buf, cp->priv, kmflag) != 0) {
		atomic_fetch_add_explicit(&cp->destruct, 1,
		    memory_order_relaxed);
		return -1;
	}
	return 0;
}

/* Most caches have no constructor: that check stays inline. */
static inline int
construct(kmem_cache_t *cp, void *buf, int kmflag)
{
	return cp->ctor == NULL ? 0 : construct_slow(cp, buf, kmflag);
}

static void
destruct(kmem_cache_t *cp, void *buf)
{
	if (cp->ctor == NULL && cp->dtor == NULL)
		return;
	atomic_fetch_add_explicit(&cp->destruct, 1, memory_order_relaxed);
	if (cp->dtor != NULL)
		cp->dtor(buf, cp->priv);
}

/* Debug work on a buffer going to a caller; it is unconstructed if
 * !mag_constructed or fresh from a slab. */
static void
alloc_debug(kmem_cache_t *cp, void *buf)
{
	if (cp->debug & KMF_DEADBEEF) {
		if (check_words(buf, cp->bufsize, KMEM_DEADBEEF_WORD) != 0) {
			report(cp, KMEM_E_MODIFIED, "kmem_cache_alloc", buf,
			    "free buffer was modified (use after free)");
			fill_words(buf, cp->bufsize, KMEM_DEADBEEF_WORD);
		}
	}
	if (cp->debug & KMF_REDZONE)
		memset((char *)buf + cp->bufsize, KMEM_REDZONE_BYTE,
		    cp->chunk - cp->bufsize);
}

/* The chunk's held bit (KMF_DOUBLEFREE), set or cleared. Needs a slot lock
 * or slab_lock. Returns the old bit, or -1 if buf is not ours. */
static int
user_bit(kmem_cache_t *cp, const void *buf, int set)
{
	long idx;
	kslab_t *s = hash_lookup(cp, (uintptr_t)buf, &idx);
	uint64_t mask, old;

	if (s == NULL)
		return -1;
	mask = 1ULL << (idx % 64);
	if (set)
		old = atomic_fetch_or_explicit(&s->usermap[idx / 64], mask,
		    memory_order_relaxed);
	else
		old = atomic_fetch_and_explicit(&s->usermap[idx / 64], ~mask,
		    memory_order_relaxed);
	return (old & mask) != 0;
}

/* ------------------------------------------------------------------ */
/* Depot */

static kmag_t *
maglist_take(kmaglist_t *l)
{
	kmag_t *m = l->head;

	if (m == NULL)
		return NULL;
	l->head = m->next;
	if (--l->count < l->min)
		l->min = l->count;
	atomic_store_explicit(&l->avail, l->count, memory_order_relaxed);
	return m;
}

static void
maglist_put(kmaglist_t *l, kmag_t *m)
{
	m->next = l->head;
	l->head = m;
	l->count++;
	atomic_store_explicit(&l->avail, l->count, memory_order_relaxed);
}

/* Empty the list (depot lock held); the caller owns the chain. */
static kmag_t *
maglist_clear(kmaglist_t *l)
{
	kmag_t *chain = l->head;

	l->head = NULL;
	l->count = l->min = l->reaplimit = 0;
	atomic_store_explicit(&l->avail, 0, memory_order_relaxed);
	return chain;
}

/*
 * Whether the depot may have a magazine on l, read without its lock. A
 * stale answer is harmless: a missed magazine sends the caller to the slab
 * layer (or to make an empty magazine), as a truly empty depot would; a
 * stale yes costs a locked look. An empty depot -- every allocation of a
 * growing heap -- then costs no depot lock.
 */
static int
maglist_maybe(kmaglist_t *l)
{
	return atomic_load_explicit(&l->avail, memory_order_relaxed) != 0;
}

static size_t
mag_bytes(size_t cap)
{
	return sizeof (kmag_t) + cap * sizeof (void *);
}

/* Set the magazine size (at creation, or with every slot locked). */
static void
set_magsize(kmem_cache_t *cp, unsigned size)
{
	cp->magsize = size;
	cp->magheld = size == 0 ? 0 : kmeta_size(mag_bytes(size));
}

/* Give a magazine's rounds back to the slab layer, then the magazine. */
static void
mag_destroy(kmem_cache_t *cp, kmag_t *m, unsigned rounds)
{
	unsigned i;
	size_t held;

	for (i = 0; i < rounds; i++) {
		if (cp->mag_constructed)
			destruct(cp, m->round[i]);
		(void)slab_free(cp, m->round[i], FROM_LEAVING_MAGAZINE);
	}
	held = m->held;
	kmeta_free(m, mag_bytes(m->cap));
	meta_account(cp, -(long)held);
}

static void
magchain_destroy(kmem_cache_t *cp, kmag_t *m, int full)
{
	while (m != NULL) {
		kmag_t *next = m->next;
		mag_destroy(cp, m, full ? (unsigned)m->cap : 0);
		m = next;
	}
}

/* ------------------------------------------------------------------ */
/* CPU layer */

/* May traffic grow the magazines one more step? (Contention may go on
 * growing them: two CPUs fighting over the depot cost more than the
 * buffers held.) Needs a slot lock or every one: magidx changes only with
 * all of them held. */
static int
traffic_may_grow(const kmem_cache_t *cp)
{
	return cp->magsize != 0 && cp->magidx + 1 < KMEM_NMAGSIZES &&
	    (size_t)kmem_magsizes[cp->magidx + 1] * cp->chunk <=
	    KMEM_TRAFFIC_MAXBYTES;
}

/*
 * Slot c (lock held) just exchanged a magazine with the depot. The paper
 * grows magazines only for depot contention, which one thread never
 * causes; but one thread that allocates and frees in bursts longer than
 * two magazines goes to the depot every few operations all the same (with
 * illumos's 1-round magazines for 16 KiB buffers, every other one). So
 * each slot also judges its own exchanges: many per operation asks for a
 * bigger size. Only exchanges count: a growing heap that goes to the slab
 * layer for every allocation, or a shrinking one that makes new magazines
 * for its frees, would not go to the depot less with bigger magazines.
 */
static void
slot_note_exchange(kmem_cache_t *cp, kcpu_t *c)
{
	uint64_t ops;

	if (++c->exchanges < KMEM_TRAFFIC_WINDOW)
		return;
	ops = c->alloc + c->free - c->ops_mark;
	c->exchanges = 0;
	c->ops_mark = c->alloc + c->free;
	if (ops < (uint64_t)KMEM_TRAFFIC_WINDOW * KMEM_TRAFFIC_OPS &&
	    traffic_may_grow(cp))
		(void)atomic_fetch_or_explicit(&cp->resize_wanted,
		    KMEM_GROW_TRAFFIC, memory_order_relaxed);
}

/* Pop a round, going to the depot if needed. Slot lock held. */
static void *
mag_pop(kmem_cache_t *cp, kcpu_t *c)
{
	kmag_t *full;

	if (c->rounds > 0)
		return c->loaded->round[--c->rounds];
	if (c->prounds > 0) {
		kmag_t *m = c->loaded;
		c->loaded = c->prev;
		c->prev = m;
		c->rounds = c->prounds;
		c->prounds = 0;
		return c->loaded->round[--c->rounds];
	}
	if (c->magsize == 0 || !maglist_maybe(&cp->full))
		return NULL;
	depot_enter(cp);
	full = maglist_take(&cp->full);
	if (full != NULL) {
		if (c->prev != NULL)
			maglist_put(&cp->empty, c->prev);
		c->prev = c->loaded;
		c->prounds = 0;
		c->loaded = full;
		c->rounds = (unsigned)full->cap;
		cp->depot_alloc++;
	}
	depot_exit(cp);
	if (full == NULL)
		return NULL;
	slot_note_exchange(cp, c);
	return c->loaded->round[--c->rounds];
}

/* Push a round, exchanging with the depot if needed. Slot lock held.
 * Returns 0 if there was no room and no empty magazine. */
static int
mag_push(kmem_cache_t *cp, kcpu_t *c, void *buf)
{
	kmag_t *empty;

	if (c->loaded != NULL && c->rounds < c->magsize) {
		c->loaded->round[c->rounds++] = buf;
		return 1;
	}
	if (c->prev != NULL && c->prounds == 0) {
		kmag_t *m = c->loaded;
		c->loaded = c->prev;
		c->prev = m;
		c->prounds = c->rounds;
		c->rounds = 0;
		c->loaded->round[c->rounds++] = buf;
		return 1;
	}
	if (c->magsize == 0 || !maglist_maybe(&cp->empty))
		return 0;
	depot_enter(cp);
	empty = maglist_take(&cp->empty);
	if (empty != NULL) {
		if (c->prev != NULL) {
			maglist_put(&cp->full, c->prev);
			cp->depot_free++;
		}
		c->prev = c->loaded;
		c->prounds = c->rounds;
		c->loaded = empty;
		c->rounds = 0;
	}
	depot_exit(cp);
	if (empty == NULL)
		return 0;
	slot_note_exchange(cp, c);
	c->loaded->round[c->rounds++] = buf;
	return 1;
}

/*
 * The loaded and previous magazines are both full and the depot has no
 * empty one: make one and load it, moving the previous magazine to the
 * depot's full list -- what putting the new magazine in the depot and
 * taking it back at once would do, without the round trip. c's slot lock
 * is held, so the magazine size (changed only with every slot locked) is
 * c->magsize and stays so. 0 if magazines are off or there is no memory.
 */
static int
slot_load_new_empty(kmem_cache_t *cp, kcpu_t *c)
{
	unsigned size = c->magsize;
	kmag_t *m;

	if (size == 0)
		return 0;
	m = kmeta_alloc(mag_bytes(size));
	if (m == NULL)
		return 0;
	meta_account(cp, (long)cp->magheld);
	m->cap = size;
	m->held = (uint32_t)cp->magheld;
	depot_enter(cp);
	if (c->prev != NULL) {
		maglist_put(&cp->full, c->prev);
		cp->depot_free++;
	}
	depot_exit(cp);
	c->prev = c->loaded;
	c->prounds = c->rounds;
	c->loaded = m;
	c->rounds = 0;
	return 1;
}

/* Detach a slot's magazines; slot lock held. */
typedef struct kdetached {
	kmag_t *loaded, *prev;
	unsigned rounds, prounds;
} kdetached_t;

/* n rounds leave for their slabs; taken under the lock that held them. */
static void
rounds_leave(kmem_cache_t *cp, size_t n)
{
	atomic_fetch_add_explicit(&cp->rounds_leaving, n, memory_order_relaxed);
}

/* The depot's full magazines leave (depot lock held). Their own sizes:
 * a resize has already set the new one. */
static kmag_t *
depot_full_leave(kmem_cache_t *cp)
{
	size_t n = 0;

	for (const kmag_t *m = cp->full.head; m != NULL; m = m->next)
		n += m->cap;
	rounds_leave(cp, n);
	return maglist_clear(&cp->full);
}

static void
slot_detach(kmem_cache_t *cp, kcpu_t *c, kdetached_t *d)
{
	rounds_leave(cp, (size_t)c->rounds + c->prounds);
	d->loaded = c->loaded;
	d->prev = c->prev;
	d->rounds = c->rounds;
	d->prounds = c->prounds;
	c->loaded = c->prev = NULL;
	c->rounds = c->prounds = 0;
}

static void
detached_destroy(kmem_cache_t *cp, kdetached_t *d)
{
	if (d->loaded != NULL)
		mag_destroy(cp, d->loaded, d->rounds);
	if (d->prev != NULL)
		mag_destroy(cp, d->prev, d->prounds);
}

/* Empty every slot and the whole depot into the slab layer. */
static void
magazines_purge(kmem_cache_t *cp)
{
	kmag_t *full, *empty;
	unsigned i;

	for (i = 0; i < cp->ncpu; i++) {
		kcpu_t *c = cpu_slot(cp, i);
		kdetached_t d;
		slot_lock(c);
		slot_detach(cp, c, &d);
		slot_unlock(c);
		detached_destroy(cp, &d);
	}
	depot_enter(cp);
	full = depot_full_leave(cp);
	empty = maglist_clear(&cp->empty);
	depot_exit(cp);
	magchain_destroy(cp, full, 1);
	magchain_destroy(cp, empty, 0);
	atomic_store_explicit(&cp->mag_loaded, 0, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Allocation and free */

static void *
alloc_failed(kmem_cache_t *cp, int kmflag)
{
	if (kmflag & KM_PANIC)
		report(cp, KMEM_E_PANIC, "kmem_cache_alloc", NULL,
		    "allocation failed (KM_PANIC)");
	return NULL;
}

/* A buffer fresh from the slab layer meets the constructor; undone if it
 * fails. */
static KMEM_NOINLINE void *
alloc_construct(kmem_cache_t *cp, void *buf, int kmflag)
{
	if (construct(cp, buf, kmflag) != 0) {
		if (cp->debug & KMF_DEADBEEF)
			fill_words(buf, cp->bufsize, KMEM_DEADBEEF_WORD);
		plat_mutex_lock(&cp->slab_lock);
		if (cp->debug & KMF_DOUBLEFREE)
			(void)user_bit(cp, buf, 0);
		cp->direct_alloc--;
		cp->alloc_fail++;
		plat_mutex_unlock(&cp->slab_lock);
		(void)slab_free(cp, buf, FROM_CACHE);
		return alloc_failed(cp, kmflag);
	}
	return buf;
}

/* Out of line: the fast path that calls it then needs no stack frame. */
static KMEM_NOINLINE void *
alloc_from_slab(kmem_cache_t *cp, int kmflag)
{
	void *buf = slab_alloc(cp, kmflag, 1);

	if (buf == NULL)
		return alloc_failed(cp, kmflag);
	if (cp->debug)
		alloc_debug(cp, buf);
	if (cp->ctor != NULL)
		return alloc_construct(cp, buf, kmflag);
	return buf;
}

static void magazine_resize(kmem_cache_t *cp, int why);

/* Do the resize the depot or a slot asked for (depot_window_end,
 * slot_note_exchange); no lock held. */
static inline void
resize_if_wanted(kmem_cache_t *cp)
{
	int why;

	if (atomic_load_explicit(&cp->resize_wanted, memory_order_relaxed) &&
	    (why = atomic_exchange_explicit(&cp->resize_wanted, 0,
	    memory_order_relaxed)) != 0)
		magazine_resize(cp, why);
}

/* The magazine layer's allocation, slot c held (falls back to the slab
 * layer). */
static KMEM_NOINLINE void *
alloc_from_magazine(kmem_cache_t *cp, kcpu_t *c, int kmflag)
{
	void *buf = mag_pop(cp, c);

	if (buf == NULL) {
		slot_unlock(c);
		resize_if_wanted(cp);
		return alloc_from_slab(cp, kmflag);
	}
	c->alloc++;
	if (cp->debug & KMF_DOUBLEFREE)
		(void)user_bit(cp, buf, 1);
	slot_unlock(c);
	resize_if_wanted(cp);
	if (cp->debug)
		alloc_debug(cp, buf);
	if (!cp->mag_constructed && construct(cp, buf, kmflag) != 0) {
		/* Undo: the buffer goes back unconstructed, poisoned. */
		if (cp->debug & KMF_DEADBEEF)
			fill_words(buf, cp->bufsize, KMEM_DEADBEEF_WORD);
		c = cpu_enter(cp);
		c->alloc--;
		if (cp->debug & KMF_DOUBLEFREE)
			(void)user_bit(cp, buf, 0);
		slot_unlock(c);
		plat_mutex_lock(&cp->slab_lock);
		cp->alloc_fail++;       /* as when a slab buffer's fails */
		plat_mutex_unlock(&cp->slab_lock);
		(void)slab_free(cp, buf, FROM_CACHE);
		return alloc_failed(cp, kmflag);
	}
	return buf;
}

/*
 * The fast path is a round in the loaded magazine of a cache without
 * debugging: one slot lock, one pop. Magazine rounds are constructed, so
 * nothing else is owed to the caller.
 */
static inline void *
cache_alloc(kmem_cache_t *cp, int kmflag)
{
	kcpu_t *c;

	if ((cp->cflags & KMC_NOMAGAZINE) ||
	    !atomic_load_explicit(&cp->mag_loaded, memory_order_relaxed) ||
	    (c = cpu_try_enter(cp)) == NULL)
		return alloc_from_slab(cp, kmflag);
	if (cp->fastpath && c->rounds > 0) {
		void *buf = c->loaded->round[--c->rounds];
		c->alloc++;
		slot_unlock(c);
		return buf;
	}
	return alloc_from_magazine(cp, c, kmflag);
}

void *
kmem_cache_alloc(kmem_cache_t *cp, int kmflag)
{
	return cache_alloc(cp, kmflag);
}

/* Debug work on a buffer a caller frees: redzone, destructor, poison.
 * Returns 0, or -1 after reporting (the buffer stays the caller's). */
static int
free_debug(kmem_cache_t *cp, void *buf, const char *call)
{
	if (cp->debug & KMF_REDZONE) {
		const unsigned char *rz = (const unsigned char *)buf +
		    cp->bufsize;
		size_t i;
		for (i = 0; i < cp->chunk - cp->bufsize; i++) {
			if (rz[i] != KMEM_REDZONE_BYTE) {
				report(cp, KMEM_E_REDZONE, call, buf,
				    "redzone overwritten: write past the end"
				    " of the buffer");
				return -1;
			}
		}
	}
	if (!cp->mag_constructed) {
		destruct(cp, buf);
		if (cp->debug & KMF_DEADBEEF)
			fill_words(buf, cp->bufsize, KMEM_DEADBEEF_WORD);
	}
	return 0;
}

/* Undo the held-bit clearing after a failed debug check. */
static void
rehold(kmem_cache_t *cp, void *buf)
{
	kcpu_t *c;

	if (!(cp->debug & KMF_DOUBLEFREE))
		return;
	if (cp->cflags & KMC_NOMAGAZINE) {
		plat_mutex_lock(&cp->slab_lock);
		(void)user_bit(cp, buf, 1);
		plat_mutex_unlock(&cp->slab_lock);
		return;
	}
	c = cpu_enter(cp);
	(void)user_bit(cp, buf, 1);
	slot_unlock(c);
}

/* A freed buffer leaves the magazine layer: destroy it if rounds are
 * constructed, return it to its slab, report what the slab layer finds. */
static int
free_to_slab(kmem_cache_t *cp, void *buf, const char *call)
{
	int code;

	if (cp->mag_constructed)
		destruct(cp, buf);
	code = slab_free(cp, buf, FROM_USER);
	if (code != 0)
		report_free_error(cp, code, call, buf);
	return 0;
}

static int
free_nomagazine(kmem_cache_t *cp, void *buf, const char *call)
{
	kslab_t *s;
	long idx;
	int code = 0;

	plat_mutex_lock(&cp->slab_lock);
	s = hash_lookup(cp, (uintptr_t)buf, &idx);
	if (s == NULL) {
		plat_mutex_unlock(&cp->slab_lock);
		return -1;
	}
	if (s->freemap[idx / 64] & (1ULL << (idx % 64)))
		code = KMEM_E_DOUBLEFREE;
	else if ((cp->debug & KMF_DOUBLEFREE) && user_bit(cp, buf, 0) == 0)
		code = KMEM_E_DOUBLEFREE;
	plat_mutex_unlock(&cp->slab_lock);
	if (code != 0) {
		report_free_error(cp, code, call, buf);
		return 0;
	}
	if (free_debug(cp, buf, call) != 0) {
		rehold(cp, buf);
		return 0;
	}
	return free_to_slab(cp, buf, call);
}

/* A magazine holds a round again. The flag is cleared only by a purge, so
 * a load first keeps its line shared between CPUs. */
static inline void
note_rounds_loaded(kmem_cache_t *cp)
{
	if (!atomic_load_explicit(&cp->mag_loaded, memory_order_relaxed))
		atomic_store_explicit(&cp->mag_loaded, 1, memory_order_relaxed);
}

/* A free that is not the fast path: debugging, or no room in the loaded
 * magazine. Slot c held; the buffer is a chunk of this cache. */
static KMEM_NOINLINE int
free_to_magazine(kmem_cache_t *cp, kcpu_t *c, void *buf, const char *call)
{
	int pushed;

	if ((cp->debug & KMF_DOUBLEFREE) && user_bit(cp, buf, 0) == 0) {
		slot_unlock(c);
		report_free_error(cp, KMEM_E_DOUBLEFREE, call, buf);
		return 0;
	}
	if (cp->debug & (KMF_REDZONE | KMF_DEADBEEF)) {
		slot_unlock(c);
		if (free_debug(cp, buf, call) != 0) {
			rehold(cp, buf);
			return 0;
		}
		c = cpu_enter(cp);
	}
	/*
	 * Push; if both magazines are full and the depot has no empty one,
	 * load a new empty magazine with the slot still locked (slot ->
	 * depot -> meta_lock -> kmeta is the lock order).
	 */
	pushed = mag_push(cp, c, buf);
	if (!pushed && slot_load_new_empty(cp, c)) {
		c->loaded->round[c->rounds++] = buf;
		pushed = 1;
	}
	if (pushed) {
		c->free++;
		slot_unlock(c);
		note_rounds_loaded(cp);
		resize_if_wanted(cp);
		return 0;
	}
	slot_unlock(c);
	resize_if_wanted(cp);
	/* No magazine room: back to the slab layer. */
	return free_to_slab(cp, buf, call);
}

/*
 * Every free first proves the buffer is a chunk of this cache (the slab
 * hash, read under the slot lock); the fast path then pushes it into the
 * loaded magazine. Returns -1, changing nothing, for a foreign buffer.
 */
static inline int
cache_free(kmem_cache_t *cp, void *buf, const char *call)
{
	kcpu_t *c;
	long idx;

	if ((cp->cflags & KMC_NOMAGAZINE) || (c = cpu_try_enter(cp)) == NULL)
		return free_nomagazine(cp, buf, call);
	if (hash_lookup(cp, (uintptr_t)buf, &idx) == NULL) {
		slot_unlock(c);
		return -1;
	}
	if (cp->fastpath && c->loaded != NULL && c->rounds < c->magsize) {
		c->loaded->round[c->rounds++] = buf;
		c->free++;
		slot_unlock(c);
		note_rounds_loaded(cp);
		return 0;
	}
	return free_to_magazine(cp, c, buf, call);
}

int
kmem_cache_free_quiet(kmem_cache_t *cp, void *buf, const char *call)
{
	return cache_free(cp, buf, call);
}

void
kmem_cache_free(kmem_cache_t *cp, void *buf)
{
	if (cache_free(cp, buf, "kmem_cache_free") != 0)
		report_free_error(cp, KMEM_E_WRONGCACHE, "kmem_cache_free",
		    buf);
}

int
kmem_cache_owns(kmem_cache_t *cp, const void *buf)
{
	long idx;
	int found;

	plat_mutex_lock(&cp->slab_lock);
	found = hash_lookup(cp, (uintptr_t)buf, &idx) != NULL;
	plat_mutex_unlock(&cp->slab_lock);
	return found;
}

/* ------------------------------------------------------------------ */
/* Creation and destruction */

static void
cache_choose_geometry(kmem_cache_t *cp, size_t slabsize)
{
	size_t quantum = vmem_quantum(cp->vmp);
	size_t chunk = cp->bufsize;

	if (cp->debug & KMF_REDZONE)
		chunk += KMEM_REDZONE_BYTES;
	chunk = (chunk + cp->align - 1) / cp->align * cp->align;
	cp->chunk = chunk;
	if (slabsize == 0) {
		size_t want = chunk <= 512 ? chunk * 64 : chunk * 8;
		if (!(cp->cflags & KMC_NOTOUCH) && want < 4 * plat_pagesize())
			want = 4 * plat_pagesize();
		slabsize = pow2_ceil(want);
		if (quantum > 0 && slabsize % quantum != 0)
			slabsize = (slabsize + quantum - 1) / quantum * quantum;
	}
	cp->slabsize = slabsize;
	cp->nbufs = (uint32_t)(slabsize / chunk);
	cp->nwords = (cp->nbufs + 63) / 64;
	cp->blockshift = log2_floor(slabsize);
	cp->recipshift = 0;
	cp->chunkrecip = 0;
	if (is_pow2(chunk)) {
		cp->recipshift = log2_floor(chunk);
		cp->chunkrecip = 1;
	} else if (slabsize < ((size_t)1 << 31)) {
		/* idx = off * ceil(2^s / chunk) >> s is exact for
		 * off < 2^n when s = n + ceil(log2 chunk) (n = 31). */
		unsigned l = log2_floor(chunk) + 1;
		cp->recipshift = 31 + l;
		cp->chunkrecip = (((uint64_t)1 << cp->recipshift) + chunk - 1) /
		    chunk;
	}
}

static unsigned
initial_magidx(const kmem_cache_t *cp)
{
	if (cp->chunk <= 64)
		return 3;  /* 15 rounds */
	if (cp->chunk <= 1024)
		return 2;  /* 7 */
	if (cp->chunk <= 8192)
		return 1;  /* 3 */
	return 0;
}

#define KMC_KNOWN (KMC_NOTOUCH | KMC_NODEBUG | KMC_NOMAGAZINE | KMC_NOHASH | \
	KMC_QCACHE | KMC_KMEM_ALLOC | KMC_IDENTIFIER)

static int
cache_check_args(const char *name, size_t bufsize, size_t align,
    vmem_t *vmp, int cflags)
{
	const char *why = NULL;

	if (name == NULL)
		why = "no name";
	else if (bufsize == 0)
		why = "bufsize is 0";
	else if (align != 0 && !is_pow2(align))
		why = "align is not a power of two";
	else if (vmp == NULL)
		why = "no arena";
	else if (cflags & ~KMC_KNOWN)
		why = "unknown cflags";
	if (why == NULL)
		return 0;
	if (cflags & ~KMC_KNOWN)
		vmem_error_report(KMEM_E_BADARG, 0, "kmem_cache_create", vmp,
		    name, 0, bufsize, "unknown cflags 0x%x (known: 0x%x)",
		    (unsigned)(cflags & ~KMC_KNOWN), (unsigned)KMC_KNOWN);
	else
		vmem_error_report(KMEM_E_BADARG, 0, "kmem_cache_create", vmp,
		    name, 0, bufsize, "%s", why);
	return -1;
}

kmem_cache_t *
kmem_cache_create_slab(const char *name, size_t bufsize, size_t align,
    int (*constructor)(void *, void *, int), void (*destructor)(void *, void *),
    void (*reclaim)(void *), void *priv, vmem_t *vmp, int cflags,
    size_t slabsize)
{
	kmem_cache_t *cp;
	size_t hashbytes;
	unsigned i;

	/* As in illumos, no arena means the one kmem_alloc's caches use. */
	if (vmp == NULL && name != NULL && bufsize != 0) {
		kmem_heap_t *heap = kmem_default_heap();

		vmp = heap != NULL ? kmem_heap_arena(heap) : NULL;
	}
	if (cache_check_args(name, bufsize, align, vmp, cflags) != 0)
		return NULL;
	/* As in illumos, derived from the arena (kmem_reap_idspace). */
	cflags &= ~KMC_IDENTIFIER;
	if (vmem_is_identifier(vmp))
		cflags |= KMC_IDENTIFIER;
	kmem_global_init();
	cp = kmeta_alloc(sizeof (*cp));
	if (cp == NULL)
		return NULL;
	cp->selfsize = sizeof (*cp);
	plat_mutex_init(&cp->meta_lock);
	plat_mutex_init(&cp->depot_lock);
	plat_mutex_init(&cp->slab_lock);
	cp->meta_bytes = kmeta_size(sizeof (*cp));
	(void)vmem_snprintf(cp->name, sizeof (cp->name), "%s", name);
	cp->bufsize = bufsize;
	cp->align = align != 0 ? align : KMEM_ALIGN_DEFAULT;
	/* Quantum caches hand out whole quanta; other caches pack objects. */
	if ((cflags & KMC_QCACHE) && cp->align < vmem_quantum(vmp))
		cp->align = vmem_quantum(vmp);
	cp->ctor = constructor;
	cp->dtor = destructor;
	cp->reclaim = reclaim;
	cp->priv = priv;
	cp->vmp = vmp;
	cp->cflags = cflags;
	if (!(cflags & KMC_NODEBUG))
		cp->debug = atomic_load_explicit(&kmem_default_debug,
		    memory_order_relaxed);
	if (cflags & KMC_NOTOUCH)
		cp->debug &= ~(KMF_DEADBEEF | KMF_REDZONE);
	cp->mag_constructed = !(cp->debug & KMF_DEADBEEF);
	cp->fastpath = cp->debug == 0 && !(cflags & KMC_NOMAGAZINE);
	cp->use_xalloc = (cflags & KMC_QCACHE) ||
	    cp->align > vmem_quantum(vmp);
	cache_choose_geometry(cp, slabsize);
	slist_init(&cp->partial);
	slist_init(&cp->complete);
	atomic_init(&cp->depot_busy, 0);
	atomic_init(&cp->full.avail, 0);
	atomic_init(&cp->mag_loaded, 0);
	atomic_init(&cp->empty.avail, 0);
	atomic_init(&cp->construct, 0);
	atomic_init(&cp->destruct, 0);
	atomic_init(&cp->resize_wanted, 0);
	/* Hints read without a lock on purpose (see their declarations). */
	HG_BENIGN(&cp->mag_loaded, "hint: rounds may be in magazines");
	HG_BENIGN(&cp->resize_wanted, "hint: the depot asks for a resize");
	HG_BENIGN(&cp->depot_busy, "contention counter");
	HG_BENIGN(&cp->full.avail, "hint: full magazines in the depot");
	HG_BENIGN(&cp->empty.avail, "hint: empty magazines in the depot");

	cp->ncpu = plat_ncpus();
	cp->cpustride = (sizeof (kcpu_t) + KMEM_CACHELINE - 1) /
	    KMEM_CACHELINE * KMEM_CACHELINE;
	cp->cpumem_bytes = cp->cpustride * cp->ncpu;
	cp->hashsize = 8;   /* 128 bytes: room for one slab */
	cp->hashshift = 64 - 3;
	hashbytes = cp->hashsize * sizeof (kent_t);
	cp->cpumem = meta_alloc(cp, cp->cpumem_bytes);
	cp->hash = meta_alloc(cp, hashbytes);
	if (cp->cpumem == NULL || cp->hash == NULL) {
		kmeta_free(cp->cpumem, cp->cpumem_bytes);
		kmeta_free(cp->hash, hashbytes);
		kmeta_free(cp, sizeof (*cp));
		return NULL;
	}
	cp->magidx = initial_magidx(cp);
	set_magsize(cp, (cflags & KMC_NOMAGAZINE) ? 0 :
	    kmem_magsizes[cp->magidx]);
	for (i = 0; i < cp->ncpu; i++) {
		kcpu_t *c = cpu_slot(cp, i);
		atomic_init(&c->lock, 0);
		/* The word itself is the lock (HG_LOCK_* on taking and
		 * dropping it): its atomic accesses are not races. */
		HG_BENIGN(&c->lock, "slot lock word");
		c->magsize = cp->magsize;
	}

	plat_mutex_lock(&kmem_list_lock);
	cp->gprevp = kmem_list_tail;
	if (kmem_list_tail != NULL)
		kmem_list_tail->gnext = cp;
	else
		kmem_list_head = cp;
	kmem_list_tail = cp;
	plat_mutex_unlock(&kmem_list_lock);
	return cp;
}

kmem_cache_t *
kmem_cache_create(const char *name, size_t bufsize, size_t align,
    int (*constructor)(void *, void *, int), void (*destructor)(void *, void *),
    void (*reclaim)(void *), void *priv, vmem_t *vmp, int cflags)
{
	return kmem_cache_create_slab(name, bufsize, align, constructor,
	    destructor, reclaim, priv, vmp, cflags & ~KMC_QCACHE, 0);
}

static void
slabchain_release(kmem_cache_t *cp, kslab_t *head)
{
	while (head->next != head) {
		kslab_t *s = head->next;
		slist_remove(s);
		slab_release(cp, s);
	}
}

void
kmem_cache_destroy(kmem_cache_t *cp)
{
	size_t out;

	if (cp == NULL)
		return;
	plat_mutex_lock(&kmem_list_lock);
	while (cp->visit_refs > 0)
		plat_cond_timedwait(&kmem_list_cv, &kmem_list_lock, 100);
	if (cp->gprevp != NULL)
		cp->gprevp->gnext = cp->gnext;
	else
		kmem_list_head = cp->gnext;
	if (cp->gnext != NULL)
		cp->gnext->gprevp = cp->gprevp;
	else
		kmem_list_tail = cp->gprevp;
	plat_mutex_unlock(&kmem_list_lock);

	magazines_purge(cp);
	slab_reap_spare(cp);
	plat_mutex_lock(&cp->slab_lock);
	out = cp->out;
	plat_mutex_unlock(&cp->slab_lock);
	if (out != 0)
		vmem_error_report(KMEM_E_LEAK, 1, "kmem_cache_destroy",
		    NULL, cp->name, 0, cp->bufsize,
		    "cache destroyed with %zu buffers allocated", out);
	slabchain_release(cp, &cp->partial);
	slabchain_release(cp, &cp->complete);
	meta_free(cp, cp->hash, cp->hashsize * sizeof (kent_t));
	/* Helgrind keeps a lock's ordering history by address: a cache
	 * created later on this memory has new locks, not these. */
	for (unsigned i = 0; i < cp->ncpu; i++)
		HG_LOCK_DESTROY(&cpu_slot(cp, i)->lock);
	meta_free(cp, cp->cpumem, cp->cpumem_bytes);
	meta_account(cp, -(long)kmeta_size(sizeof (*cp)));
	plat_mutex_destroy(&cp->meta_lock);
	plat_mutex_destroy(&cp->depot_lock);
	plat_mutex_destroy(&cp->slab_lock);
	kmeta_free(cp, sizeof (*cp));
}

/* ------------------------------------------------------------------ */
/* Reaping, working set, magazine resizing */

void
kmem_cache_reap_now(kmem_cache_t *cp)
{
	magazines_purge(cp);
	slab_reap_spare(cp);
	depot_enter(cp);
	cp->reaps++;
	depot_exit(cp);
}

/*
 * How many of l's magazines stayed idle: untouched through the last
 * interval (reaplimit) and through this one so far (min). A burst now
 * that emptied the list and filled it again is the working set, not idle.
 */
static size_t
maglist_idle(const kmaglist_t *l)
{
	return l->reaplimit < l->min ? l->reaplimit : l->min;
}

/* Free the depot magazines that stayed idle over the last interval. */
static void
depot_ws_reap(kmem_cache_t *cp)
{
	kmag_t *full = NULL, *empty = NULL, *m;
	size_t n;

	depot_enter(cp);
	for (n = maglist_idle(&cp->full); n > 0; n--) {
		if ((m = maglist_take(&cp->full)) == NULL)
			break;
		rounds_leave(cp, m->cap);
		m->next = full;
		full = m;
	}
	for (n = maglist_idle(&cp->empty); n > 0; n--) {
		if ((m = maglist_take(&cp->empty)) == NULL)
			break;
		m->next = empty;
		empty = m;
	}
	cp->full.reaplimit = cp->empty.reaplimit = 0;
	cp->reaps++;
	depot_exit(cp);
	magchain_destroy(cp, full, 1);
	magchain_destroy(cp, empty, 0);
}

void
kmem_cache_reap_idle(kmem_cache_t *cp)
{
	if (cp->reclaim != NULL)
		cp->reclaim(cp->priv);
	depot_ws_reap(cp);
	slab_reap_spare(cp);
}

/* Grow the magazine size one step for why (KMEM_GROW_* bits): purge
 * everything with every slot locked. */
static void
magazine_resize(kmem_cache_t *cp, int why)
{
	kdetached_t *det = NULL;
	size_t detbytes = cp->ncpu * sizeof (kdetached_t);
	kmag_t *full, *empty;
	unsigned i, newsize;

	det = kmeta_alloc(detbytes);
	if (det == NULL)
		return;
	cpus_lock_all(cp);
	depot_enter(cp);
	if (cp->magidx + 1 >= KMEM_NMAGSIZES || cp->magsize == 0 ||
	    (why == KMEM_GROW_TRAFFIC && !traffic_may_grow(cp))) {
		depot_exit(cp);
		cpus_unlock_all(cp);
		kmeta_free(det, detbytes);
		return;
	}
	cp->magidx++;
	cp->window_mark = cp->contention;
	newsize = kmem_magsizes[cp->magidx];
	set_magsize(cp, newsize);
	cp->mag_resize++;
	if (why == KMEM_GROW_TRAFFIC)
		cp->mag_grow_traffic++;
	full = depot_full_leave(cp);
	empty = maglist_clear(&cp->empty);
	for (i = 0; i < cp->ncpu; i++) {
		kcpu_t *c = cpu_slot(cp, i);
		slot_detach(cp, c, &det[i]);
		c->magsize = newsize;
		c->exchanges = 0;  /* the new size gets a window of its own */
		c->ops_mark = c->alloc + c->free;
	}
	depot_exit(cp);
	/* Every magazine is gone: allocations take the slab layer directly
	 * until a free loads one again. */
	atomic_store_explicit(&cp->mag_loaded, 0, memory_order_relaxed);
	cpus_unlock_all(cp);
	for (i = 0; i < cp->ncpu; i++)
		detached_destroy(cp, &det[i]);
	magchain_destroy(cp, full, 1);
	magchain_destroy(cp, empty, 0);
	kmeta_free(det, detbytes);
}

void
kmem_cache_update(kmem_cache_t *cp)
{
	int grow;

	depot_enter(cp);
	cp->full.reaplimit = cp->full.min;
	cp->full.min = cp->full.count;
	cp->empty.reaplimit = cp->empty.min;
	cp->empty.min = cp->empty.count;
	grow = cp->contention - cp->contention_mark > KMEM_CONTENTION_LIMIT;
	cp->contention_mark = cp->contention;
	depot_exit(cp);
	if (grow)
		magazine_resize(cp, KMEM_GROW_CONTENTION);
}

void
kmem_cache_test_contend(kmem_cache_t *cp, unsigned n)
{
	depot_enter(cp);
	cp->contention += n;
	depot_exit(cp);
}

void
kmem_cache_test_hold_slots(kmem_cache_t *cp, int hold)
{
	if (hold)
		cpus_lock_all(cp);
	else
		cpus_unlock_all(cp);
}

/* Free chunks in s according to its bitmap. */
static uint32_t
slab_count_free(const kmem_cache_t *cp, const kslab_t *s)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < cp->nbufs; i++)
		n += (uint32_t)((s->freemap[i / 64] >> (i % 64)) & 1);
	return n;
}

/* Is slab s entered under its block k (reachable from the block's home)? */
static int
hash_has(const kmem_cache_t *cp, const kslab_t *s, unsigned k)
{
	size_t mask = cp->hashsize - 1;
	size_t i = hash_home(cp, (s->base >> cp->blockshift) + k);

	for (; cp->hash[i].base != 0; i = (i + 1) & mask)
		if (cp->hash[i].slabidx == ((uintptr_t)s | k))
			return cp->hash[i].base == s->base;
	return 0;
}

/* Check one slab against the table and its list; adds to the totals. */
static int
check_slab(const kmem_cache_t *cp, const kslab_t *s, int list,
    size_t *nslabs, size_t *entries, size_t *out)
{
	uint32_t nfree = slab_count_free(cp, s);
	unsigned n = slab_nblocks(cp, s->base);

	if (s->list != list || nfree != s->nfree)
		return 5;
	if ((list == SL_COMPLETE) != (nfree == 0) ||
	    (list == SL_NONE && nfree != cp->nbufs))
		return 6;
	for (unsigned k = 0; k < n; k++)
		if (!hash_has(cp, s, k))
			return 7;
	(*nslabs)++;
	*entries += n;
	*out += cp->nbufs - nfree;
	return 0;
}

/*
 * Test hook: the slab layer's invariants, O(slabs + table). Returns 0, or
 * the first one broken: 1 table use miscounted, 2 table fuller than 7/8,
 * 3 an entry not reachable from its home block, 4 an entry whose slab
 * does not start at its base, 5 a slab's free count or list field wrong,
 * 6 a slab on the wrong list, 7 a slab missing under one of its blocks,
 * 8 slab or entry totals wrong, 9 chunks out miscounted.
 */
int
kmem_cache_test_check(kmem_cache_t *cp)
{
	size_t used = 0, nslabs = 0, entries = 0, out = 0;
	size_t mask, i;
	int err = 0;
	const kslab_t *s;

	plat_mutex_lock(&cp->slab_lock);
	cpus_lock_all(cp);
	mask = cp->hashsize - 1;
	for (i = 0; i <= mask && err == 0; i++) {
		const kent_t *e = &cp->hash[i];
		size_t j;
		if (e->base == 0)
			continue;
		used++;
		for (j = hash_home(cp, kent_block(cp, e)); j != i;
		    j = (j + 1) & mask)
			if (cp->hash[j].base == 0)
				err = 3;
		if (kent_slab(e)->base != e->base)
			err = 4;
	}
	if (err == 0 && used != cp->hashused)
		err = 1;
	if (err == 0 && used * 8 > cp->hashsize * 7)
		err = 2;
	for (s = cp->partial.next; err == 0 && s != &cp->partial;
	    s = s->next)
		err = check_slab(cp, s, SL_PARTIAL, &nslabs, &entries, &out);
	for (s = cp->complete.next; err == 0 && s != &cp->complete;
	    s = s->next)
		err = check_slab(cp, s, SL_COMPLETE, &nslabs, &entries, &out);
	if (err == 0 && cp->spare != NULL)
		err = check_slab(cp, cp->spare, SL_NONE, &nslabs, &entries,
		    &out);
	if (err == 0 && (nslabs != cp->nslabs || entries != cp->hashused))
		err = 8;
	if (err == 0 && out != cp->out)
		err = 9;
	cpus_unlock_all(cp);
	plat_mutex_unlock(&cp->slab_lock);
	return err;
}

static void
reap_one(kmem_cache_t *cp, void *arg)
{
	(void)arg;
	kmem_cache_reap_idle(cp);
}

static void
update_one(kmem_cache_t *cp, void *arg)
{
	(void)arg;
	kmem_cache_update(cp);
}

/*
 * Without the list lock during func: reaping frees slabs into arenas and
 * address spaces whose fork handlers hold their locks while kmem's waits
 * for the list lock. The reference keeps the cache, and its place in the
 * list, alive: kmem_cache_destroy waits for it.
 */
void
kmem_foreach_cache(void (*func)(kmem_cache_t *, void *), void *arg)
{
	kmem_cache_t *cp;

	kmem_global_init();
	plat_mutex_lock(&kmem_list_lock);
	for (cp = kmem_list_head; cp != NULL; cp = cp->gnext) {
		cp->visit_refs++;
		plat_mutex_unlock(&kmem_list_lock);
		func(cp, arg);
		plat_mutex_lock(&kmem_list_lock);
		/* 0 already if func forked: the child drops every pin. */
		if (cp->visit_refs != 0 && --cp->visit_refs == 0)
			plat_cond_broadcast(&kmem_list_cv);
	}
	plat_mutex_unlock(&kmem_list_lock);
}

void
kmem_reap(void)
{
	kmem_foreach_cache(reap_one, NULL);
}

void
kmem_update(void)
{
	kmem_foreach_cache(update_one, NULL);
}

static void
reap_one_identifier(kmem_cache_t *cp, void *arg)
{
	if (cp->cflags & KMC_IDENTIFIER)
		reap_one(cp, arg);
}

void
kmem_reap_idspace(void)
{
	kmem_foreach_cache(reap_one_identifier, NULL);
}

int
kmem_debugging(void)
{
	kmem_global_init();
	return atomic_load_explicit(&kmem_default_debug,
	    memory_order_relaxed) != 0;
}

/*
 * Memory pressure. An allocation that is failing or about to wait asks
 * (vmem's pressure hook) for every cache that may hold the short resource
 * idle to give it back: its client first (the reclaim callback), then
 * every magazine and free slab. illumos' kmem_reap reaps only what stayed
 * idle through a 15-second interval, and its vmem_update wakes waiters
 * to try again; a library has no such clock, so without a purge a KM_SLEEP
 * caller would sleep for ever beside space another cache holds idle.
 *
 * The pass runs on the platform's deferred-work thread (plat_defer), as
 * illumos' reap runs on a taskq: destructors, reclaim callbacks and
 * release functions may take a lock the waiting caller holds. Running
 * short of ids says nothing about memory: an identifier arena's pressure
 * purges only the caches over identifier arenas (illumos'
 * kmem_reap_idspace). The frees wake the waiters.
 */
#define PRESSURE_MEMORY   1u
#define PRESSURE_IDSPACE  2u

static atomic_uint pressure_wanted;     /* kinds asked for, not yet served */
static atomic_int pressure_off;         /* kmem_set_pressure_reap(0) */
static atomic_uint pressure_passes;     /* passes run (for tests) */

void
kmem_cache_pressure_purge(kmem_cache_t *cp)
{
	if (cp->reclaim != NULL)
		cp->reclaim(cp->priv);
	kmem_cache_reap_now(cp);
}

/* Memory pressure purges every cache (their magazines and bookkeeping
 * are memory too), identifier pressure only the KMC_IDENTIFIER ones. */
static void
pressure_one(kmem_cache_t *cp, void *arg)
{
	unsigned kinds = *(const unsigned *)arg;

	if ((kinds & PRESSURE_MEMORY) ||
	    (cp->cflags & KMC_IDENTIFIER))
		kmem_cache_pressure_purge(cp);
}

static void
pressure_pass(void)
{
	unsigned kinds = atomic_exchange_explicit(&pressure_wanted, 0,
	    memory_order_acq_rel);

	if (kinds != 0)
		kmem_foreach_cache(pressure_one, &kinds);
	atomic_fetch_add_explicit(&pressure_passes, 1, memory_order_release);
}

void
kmem_pressure_request(int identifier)
{
	unsigned kind = identifier ? PRESSURE_IDSPACE : PRESSURE_MEMORY;

	if (atomic_load_explicit(&pressure_off, memory_order_relaxed))
		return;
	/* Asked already: a failing loop costs one load per call. */
	if (atomic_load_explicit(&pressure_wanted, memory_order_relaxed) & kind)
		return;
	if (atomic_fetch_or_explicit(&pressure_wanted, kind,
	    memory_order_acq_rel) & kind)
		return;
	/* No pass will run (the platform could not start its worker): the
	 * bit, left set, would turn every later request away for good. */
	if (plat_defer(pressure_pass) != 0)
		atomic_fetch_and_explicit(&pressure_wanted, ~kind,
		    memory_order_relaxed);
}

int
kmem_set_pressure_reap(int on)
{
	return !atomic_exchange_explicit(&pressure_off, !on,
	    memory_order_relaxed);
}

unsigned
kmem_pressure_test_passes(void)
{
	return atomic_load_explicit(&pressure_passes, memory_order_acquire);
}

/* ------------------------------------------------------------------ */
/* Settings, statistics, printing */

int
kmem_set_debug_flags(int kmflags)
{
	kmem_global_init();
	return atomic_exchange_explicit(&kmem_default_debug,
	    kmflags & KMF_DEBUG, memory_order_relaxed);
}

int
kmem_cache_set_debug(kmem_cache_t *cp, int kmflags)
{
	int busy;

	kmem_cache_reap_now(cp);
	if (cp->cflags & KMC_NODEBUG)
		kmflags = 0;
	if (cp->cflags & KMC_NOTOUCH)
		kmflags &= ~(KMF_DEADBEEF | KMF_REDZONE);
	/*
	 * No slabs, so no buffers and no magazines: nobody else may look at
	 * the geometry. Checked with every lock held (slab lock first, as
	 * everywhere), or a slab made between the check and the change
	 * would get a geometry it was not cut for.
	 */
	plat_mutex_lock(&cp->slab_lock);
	cpus_lock_all(cp);
	busy = cp->nslabs != 0 || cp->slabs_making != 0;
	if (!busy) {
		cp->debug = kmflags & KMF_DEBUG;
		cp->mag_constructed = !(cp->debug & KMF_DEADBEEF);
		cp->fastpath = cp->debug == 0 &&
		    !(cp->cflags & KMC_NOMAGAZINE);
		cache_choose_geometry(cp, (cp->cflags & KMC_QCACHE) ?
		    cp->slabsize : 0);
	}
	cpus_unlock_all(cp);
	plat_mutex_unlock(&cp->slab_lock);
	if (busy) {
		report(cp, KMEM_E_BUSY, "kmem_cache_set_debug", NULL,
		    "cache still holds slabs (buffers allocated)");
		return -1;
	}
	return 0;
}

void
kmem_cache_set_meta_charge(kmem_cache_t *cp,
    void (*charge)(void *arg, long delta), void *arg)
{
	plat_mutex_lock(&cp->meta_lock);
	if (cp->charge != NULL)
		cp->charge(cp->charge_arg, -(long)cp->meta_bytes);
	cp->charge = charge;
	cp->charge_arg = arg;
	if (charge != NULL)
		charge(arg, (long)cp->meta_bytes);
	plat_mutex_unlock(&cp->meta_lock);
}

const char *
kmem_cache_name(const kmem_cache_t *cp)
{
	return cp->name;
}

size_t
kmem_cache_bufsize(const kmem_cache_t *cp)
{
	return cp->bufsize;
}

/*
 * Hold every lock of the cache (in the order of the rest of kmem: slab,
 * CPU slots, depot), so that a statistics snapshot sees each buffer in
 * exactly one place: read under separate locks, a magazine moving between
 * a slot and the depot was counted twice or not at all.
 */
static void
cache_freeze(kmem_cache_t *cp)
{
	plat_mutex_lock(&cp->slab_lock);
	cpus_lock_all(cp);
	depot_enter(cp);
}

static void
cache_thaw(kmem_cache_t *cp)
{
	depot_exit(cp);
	cpus_unlock_all(cp);
	plat_mutex_unlock(&cp->slab_lock);
}

/* Buffers in magazines (CPU slots and the depot); the cache is frozen. */
static size_t
cache_rounds(kmem_cache_t *cp)
{
	size_t cached = cp->full.count * cp->magsize +
	    atomic_load_explicit(&cp->rounds_leaving, memory_order_relaxed);

	for (unsigned i = 0; i < cp->ncpu; i++) {
		kcpu_t *c = cpu_slot(cp, i);
		cached += c->rounds + c->prounds;
	}
	return cached;
}

void
kmem_cache_get_stats(kmem_cache_t *cp, kmem_cache_stats_t *st)
{
	uint64_t alloc = 0, frees = 0;
	size_t cached;
	unsigned i;

	memset(st, 0, sizeof (*st));
	cache_freeze(cp);
	for (i = 0; i < cp->ncpu; i++) {
		kcpu_t *c = cpu_slot(cp, i);
		alloc += c->alloc;
		frees += c->free;
	}
	cached = cache_rounds(cp);
	st->magsize = cp->magsize;
	st->depot_full = cp->full.count;
	st->depot_empty = cp->empty.count;
	st->depot_alloc = cp->depot_alloc;
	st->depot_free = cp->depot_free;
	st->depot_contention = cp->contention;
	st->mag_resize = cp->mag_resize;
	st->mag_grow_traffic = cp->mag_grow_traffic;
	st->reap = cp->reaps;
	(void)vmem_snprintf(st->name, sizeof (st->name), "%s", cp->name);
	st->bufsize = cp->bufsize;
	st->chunksize = cp->chunk;
	st->align = cp->align;
	st->slabsize = cp->slabsize;
	st->bufs_per_slab = cp->nbufs;
	st->cflags = cp->cflags;
	st->debug = cp->debug;
	st->slabs = cp->nslabs;
	st->buf_total = cp->nslabs * cp->nbufs;
	st->mem_total = cp->nslabs * cp->slabsize;
	st->alloc = alloc + cp->direct_alloc;
	st->free = frees + cp->direct_free;
	st->alloc_fail = cp->alloc_fail;
	st->slab_alloc = cp->slab_alloc;
	st->slab_free = cp->slab_free;
	st->slab_create = cp->slab_create;
	st->slab_destroy = cp->slab_destroy;
	st->buf_cached = cached;
	st->buf_inuse = cp->out >= cached ? cp->out - cached : 0;
	cache_thaw(cp);
	plat_mutex_lock(&cp->meta_lock);
	st->meta_bytes = cp->meta_bytes;
	plat_mutex_unlock(&cp->meta_lock);
	st->construct = atomic_load(&cp->construct);
	st->destruct = atomic_load(&cp->destruct);
}

/* illumos' kstat names for the figures kmem_cache_get_stats fills in. */
enum stat_name {
	ST_BUF_SIZE, ST_ALIGN, ST_CHUNK_SIZE, ST_SLAB_SIZE, ST_ALLOC,
	ST_ALLOC_FAIL, ST_FREE, ST_DEPOT_ALLOC, ST_DEPOT_FREE,
	ST_DEPOT_CONTENTION, ST_SLAB_ALLOC, ST_SLAB_FREE, ST_BUF_CONSTRUCTED,
	ST_BUF_AVAIL, ST_BUF_INUSE, ST_BUF_TOTAL, ST_SLAB_CREATE,
	ST_SLAB_DESTROY, ST_FULL_MAGAZINES, ST_EMPTY_MAGAZINES,
	ST_MAGAZINE_SIZE, ST_REAP, ST_COUNT
};

static const char *const stat_names[ST_COUNT] = {
	"buf_size", "align", "chunk_size", "slab_size", "alloc", "alloc_fail",
	"free", "depot_alloc", "depot_free", "depot_contention", "slab_alloc",
	"slab_free", "buf_constructed", "buf_avail", "buf_inuse", "buf_total",
	"slab_create", "slab_destroy", "full_magazines", "empty_magazines",
	"magazine_size", "reap"
};

static int
name_is(const char *a, const char *b)
{
	while (*a != '\0' && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

static uint64_t
stat_value(const kmem_cache_stats_t *st, enum stat_name which)
{
	switch (which) {
	case ST_BUF_SIZE: return st->bufsize;
	case ST_ALIGN: return st->align;
	case ST_CHUNK_SIZE: return st->chunksize;
	case ST_SLAB_SIZE: return st->slabsize;
	case ST_ALLOC: return st->alloc;
	case ST_ALLOC_FAIL: return st->alloc_fail;
	case ST_FREE: return st->free;
	case ST_DEPOT_ALLOC: return st->depot_alloc;
	case ST_DEPOT_FREE: return st->depot_free;
	case ST_DEPOT_CONTENTION: return st->depot_contention;
	case ST_SLAB_ALLOC: return st->slab_alloc;
	case ST_SLAB_FREE: return st->slab_free;
	case ST_BUF_CONSTRUCTED: return st->buf_cached;
	case ST_BUF_AVAIL: return st->buf_total - st->buf_inuse;
	case ST_BUF_INUSE: return st->buf_inuse;
	case ST_BUF_TOTAL: return st->buf_total;
	case ST_SLAB_CREATE: return st->slab_create;
	case ST_SLAB_DESTROY: return st->slab_destroy;
	case ST_FULL_MAGAZINES: return st->depot_full;
	case ST_EMPTY_MAGAZINES: return st->depot_empty;
	case ST_MAGAZINE_SIZE: return st->magsize;
	case ST_REAP: return st->reap;
	case ST_COUNT: break;
	}
	return 0;
}

uint64_t
kmem_cache_stat(kmem_cache_t *cp, const char *name)
{
	kmem_cache_stats_t st;

	if (cp == NULL || name == NULL)
		return 0;
	for (int i = 0; i < ST_COUNT; i++) {
		if (name_is(name, stat_names[i])) {
			kmem_cache_get_stats(cp, &st);
			return stat_value(&st, (enum stat_name)i);
		}
	}
	return 0;
}

vmem_t *
kmem_cache_arena(const kmem_cache_t *cp)
{
	return cp->vmp;
}

/* What kmem_cache_get_stats would give as mem_total - buf_inuse *
 * bufsize, without the rest (vmem_size asks every quantum cache). */
size_t
kmem_cache_idle_bytes(kmem_cache_t *cp)
{
	size_t cached, total, out;

	cache_freeze(cp);
	cached = cache_rounds(cp);
	total = cp->nslabs * cp->slabsize;
	out = cp->out;
	cache_thaw(cp);
	return total - (out >= cached ? out - cached : 0) * cp->bufsize;
}

typedef struct kmem_dump_ctx {
	void (*out)(void *, const char *);
	void *arg;
	size_t mem_total, meta_total;
} kmem_dump_ctx_t;

static void
dump_one(kmem_cache_t *cp, void *arg)
{
	kmem_dump_ctx_t *ctx = arg;
	kmem_cache_stats_t st;
	char line[200];

	kmem_cache_get_stats(cp, &st);
	ctx->mem_total += st.mem_total;
	ctx->meta_total += st.meta_bytes;
	(void)vmem_snprintf(line, sizeof (line),
	    "%-26s %6zu %7zu %7zu %9zu %10llu %5llu %4zu %8zu\n",
	    st.name, st.bufsize, st.buf_inuse, st.buf_total, st.mem_total,
	    (unsigned long long)st.alloc,
	    (unsigned long long)st.alloc_fail, st.magsize, st.meta_bytes);
	ctx->out(ctx->arg, line);
}

void
kmem_dump_caches(void (*out)(void *arg, const char *line), void *arg)
{
	kmem_dump_ctx_t ctx = { out, arg, 0, 0 };
	char line[200];

	out(arg, "cache                         buf     buf     buf    memory"
	    "      alloc alloc  mag     meta\n");
	out(arg, "name                         size  in use   total    in use"
	    "    succeed  fail size    bytes\n");
	out(arg, "-------------------------- ------ ------- ------- ---------"
	    " ---------- ----- ---- --------\n");
	kmem_foreach_cache(dump_one, &ctx);
	out(arg, "-------------------------- ------ ------- ------- ---------"
	    " ---------- ----- ---- --------\n");
	(void)vmem_snprintf(line, sizeof (line),
	    "%-26s %6s %7s %7s %9zu %10s %5s %4s %8zu\n", "Total", "", "", "",
	    ctx.mem_total, "", "", "", ctx.meta_total);
	out(arg, line);
}

/* ------------------------------------------------------------------ */
/* The quantum-cache provider for vmem */

static void *
qc_create(vmem_t *vmp, const char *name, size_t size, size_t slabsize)
{
	return kmem_cache_create_slab(name, size, vmem_quantum(vmp), NULL,
	    NULL, NULL, NULL, vmp, KMC_QCACHE | KMC_NOTOUCH, slabsize);
}

static void *
qc_alloc(void *cache, int vmflag)
{
	return cache_alloc(cache, vmflag & KM_VMFLAGS);
}

static void
qc_free(void *cache, void *addr)
{
	kmem_cache_t *cp = cache;

	if (cache_free(cp, addr, "vmem_free") != 0)
		vmem_error_report(VMEM_E_BADFREE, 0, "vmem_free", cp->vmp,
		    NULL, (uintptr_t)addr, cp->bufsize,
		    "free of an address not allocated from quantum cache %s",
		    cp->name);
}

static void
qc_reap(void *cache)
{
	kmem_cache_reap_now(cache);
}

static void
qc_destroy(void *cache)
{
	kmem_cache_destroy(cache);
}

static size_t
qc_idle(void *cache)
{
	return kmem_cache_idle_bytes(cache);
}

static void
qc_counts(void *cache, uint64_t *allocs, uint64_t *frees)
{
	kmem_cache_stats_t st;

	kmem_cache_get_stats(cache, &st);
	*allocs = st.alloc;
	*frees = st.free;
}

const vmem_qcache_ops_t vmem_kmem_qcache_ops = {
	qc_create, qc_alloc, qc_free, qc_reap, qc_destroy, qc_idle, qc_counts,
	kmem_pressure_request
};

/* ------------------------------------------------------------------ */
/* Fork */

/*
 * Hold every kmem lock across fork(), in the locking order (the default
 * heap's creation lock, the cache list, then per cache slab_lock, slot
 * locks, depot and meta locks, and kmeta's lock last), so the child finds
 * none of them held by a thread that does not exist there. No thread
 * holds two caches' locks at once, so taking them cache after cache
 * cannot deadlock.
 */
static void
kmem_fork_prepare(void)
{
	kmem_cache_t *cp;

	kmem_heap_fork_lock();
	plat_mutex_lock(&kmem_list_lock);
	for (cp = kmem_list_head; cp != NULL; cp = cp->gnext) {
		plat_mutex_lock(&cp->slab_lock);
		cpus_lock_all(cp);
		plat_mutex_lock(&cp->depot_lock);
		plat_mutex_lock(&cp->meta_lock);
	}
	kmeta_fork_lock();
}

static void
kmem_fork_release(void)
{
	kmem_cache_t *cp;

	kmeta_fork_unlock();
	for (cp = kmem_list_head; cp != NULL; cp = cp->gnext) {
		plat_mutex_unlock(&cp->meta_lock);
		plat_mutex_unlock(&cp->depot_lock);
		cpus_unlock_all(cp);
		plat_mutex_unlock(&cp->slab_lock);
	}
	plat_mutex_unlock(&kmem_list_lock);
	kmem_heap_fork_unlock();
}

/* The threads that were visiting caches are not in the child. */
static void
kmem_fork_child(void)
{
	for (kmem_cache_t *cp = kmem_list_head; cp != NULL; cp = cp->gnext)
		cp->visit_refs = 0;
	/* The platform's worker, and what it had pending, stayed behind. */
	atomic_store_explicit(&pressure_wanted, 0, memory_order_relaxed);
	kmem_fork_release();
}
