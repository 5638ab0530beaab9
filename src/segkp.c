/*
 * segkp: guarded stacks in a kernel address space, in a fixed segment or
 * imported from the heap.
 *
 * Theory
 * ------
 * A segment is a vmem arena plus a record per live allocation. The arena
 * is either over a fixed range of the kas (SEGKP_FIXED) or empty and
 * importing from heap_arena with vmem_alloc/vmem_free (SEGKP_FROMHEAP),
 * exactly as illumos creates it; both have quantum caches up to 5 pages.
 * An allocation is [base, base + size): redzone pages at the bottom that
 * are never committed, then the usable pages the caller gets.
 *
 * Finding the allocation that holds an address is O(1) without walking
 * records: two bitmaps over the pages segkp can hold (the whole kas range
 * in fromheap mode -- one bit per heap page, as in illumos -- or the fixed
 * range) say whether a page belongs to a live allocation ("held") and
 * whether it is the first page of one ("starts"). From a held page, the
 * nearest start bit at or below it is the allocation's base (a scan
 * bounded by the allocation's size, a word at a time); a hash keyed by
 * base finds the record.
 *
 * Invariants (checked by segkp_check): a page's held bit is set iff it
 * lies in a live record (in use or cached), redzones included; a start
 * bit is set iff a live record begins there; the hash holds every live
 * record once; a cache's list holds exactly its count of CACHED records.
 *
 * Stack caches live in a process-wide static table of slots, so a cookie
 * (slot index and generation) can be checked without dereferencing
 * anything the caller made up. A cache is LIFO; its low-water mark since
 * the last reap tells how many stacks at its bottom stayed idle for the
 * whole interval: those are the ones segkp_cache_reap(IDLE) decommits.
 *
 * Records come from blocks that are only freed when the segment is
 * destroyed; each live record is charged to the kas as segkp metadata
 * (simulated backing: the heap pays for it, as in the kernel).
 *
 * Locking. One mutex per segment (the platform's futex lock, a quarter of
 * pthread_mutex_lock's cost; every get and release takes it once) protects
 * its records, the free-record list, hash, bitmaps, statistics, the
 * segment's metadata charge and the lists of its caches. It is never held across a call
 * into vmem or the kas (page work happens outside it), so the kas may ask
 * segkp's fault classifier with its own locks held. The slot table has a
 * global lock taken only to create or destroy caches; the list of
 * segments has another. Errors are reported with no lock held.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmem/segkp.h>

#include "error.h"
#include "platform.h"
#include "segkmem_impl.h"
#include "segkp_impl.h"

#define SEGKP_MAGIC     0x5345474bu /* "SEGK" */
#define NSLOTS          256
#define NTOMBS          64
#define REC_BLOCK       64
#define HASH_MIN        64
#define QCACHE_PAGES    5

/*
 * REC_DETACHED: a cached stack taken off its cache's list by a reap or a
 * cache free, which work on it with the lock dropped. It still counts as
 * cached (st_cached) and against its cache's capacity (reaping) until it
 * goes back on the list or is freed, so the statistics and the checker
 * stay exact while that happens.
 */
enum { REC_FREE = 0, REC_INUSE, REC_CACHED, REC_DETACHED };

typedef struct kp_rec kp_rec_t;
struct kp_rec {
	uintptr_t base;       /* redzone included */
	size_t size;          /* redzone included */
	size_t redzone;
	int flags;
	uint8_t state;
	uint8_t resident;     /* usable pages committed */
	uint16_t slot;        /* cache slot + 1, or 0 */
	unsigned slot_gen;
	kp_rec_t *hnext;      /* hash chain */
	kp_rec_t *next;       /* cache list, or the free-record list */
	void *tag;
};

typedef struct kp_block {
	struct kp_block *next;
	kp_rec_t recs[REC_BLOCK];
} kp_block_t;

/* A stack cache: a slot of the global table (static storage). */
typedef struct kp_cache {
	segkp_t *seg;         /* NULL: slot free (written under both locks) */
	_Atomic unsigned gen; /* bumped at init and destroy */
	size_t len;
	int flags;
	int maxsize;
	int count;            /* on the list */
	int reaping;          /* off the list being reaped, coming back */
	int low;              /* low-water mark of count since last reap */
	kp_rec_t *head;       /* LIFO */
} kp_cache_t;

struct segkp {
	unsigned magic;
	kas_t *kas;
	vmem_t *arena;
	vmem_t *heap;
	segkp_placement_t placement;
	kas_backing_t backing;
	size_t pagesize;
	unsigned pshift;
	uintptr_t fixed_base;
	size_t fixed_size;
	bool fixed_from_heap;

	/* The pages the bitmaps describe. */
	uintptr_t map_base;
	size_t map_pages;
	size_t map_words;
	uint64_t *held;
	uint64_t *starts;

	kp_rec_t **hash;
	size_t hash_size;     /* power of two */
	size_t nrecs;         /* live records */
	kp_rec_t *rec_free;
	kp_block_t *blocks;

	uintptr_t tombs[NTOMBS]; /* recently released addresses */
	unsigned tomb_next;

	int slots[SEGKP_MAX_CACHES]; /* global slot index, or -1 */

	plat_mutex_t lock;
	segkp_t *list_next;

	/* Statistics (under lock). */
	uint64_t st_gets, st_releases, st_get_fail, st_hits, st_misses;
	uint64_t st_puts, st_full, st_reaped, st_lock_fail;
	size_t st_inuse, st_cached, st_committed, st_locked, st_redzone;
	size_t st_resident_allocs, st_va;
	size_t ndetached;     /* REC_DETACHED records (part of st_cached) */
	size_t meta_bytes;
};

static kp_cache_t cache_slots[NSLOTS];
void (*segkp_reap_window_hook)(segkp_t *seg);
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t segs_lock = PTHREAD_MUTEX_INITIALIZER;
static segkp_t *segs_head;
/*
 * Held while a segment joins or leaves the list, so that an address space
 * gets its one segkp classifier with its first segment and loses it with
 * its last (see kas_segs_classifier). Taken before segs_lock, never while
 * a classification runs: unregistering waits for those.
 */
static pthread_mutex_t classifier_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/*
 * Detached stacks are on no list but the local one of the thread working
 * on them: a child forked meanwhile would keep them detached (cached, and
 * holding cache capacity) forever, with no thread to finish the job. So
 * the work on a detached list is a "detach window", fork() waits until
 * none is open, and none opens while it runs. Windows are short (a few
 * page operations per stack) and open before any segkp lock is taken
 * (fork's prepare handler takes detach_lock first).
 */
static pthread_mutex_t detach_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t detach_cv = PTHREAD_COND_INITIALIZER;
static unsigned detach_windows;

/* ------------------------------------------------------------------ */
/* Small helpers. */

static unsigned
log2_exact(size_t x)
{
	unsigned s = 0;

	while (((size_t)1 << s) < x)
		s++;
	return s;
}

static bool
seg_valid(const segkp_t *seg)
{
	return seg != NULL && seg->magic == SEGKP_MAGIC;
}

static size_t
redzone_pages_of(int flags)
{
	size_t n;

	if (!(flags & KPD_HASREDZONE))
		return 0;
	n = (size_t)((flags >> 8) & 0xff);
	return n == 0 ? 1 : n;
}

static void
charge(segkp_t *seg, long delta)
{
	seg->meta_bytes = (size_t)((long)seg->meta_bytes + delta);
	kas_charge_metadata(seg->kas, KAS_META_SEGKP, delta);
}

static size_t
read_max_map_count(void)
{
	static _Atomic size_t cached;
	size_t v = atomic_load(&cached);
	FILE *f;
	unsigned long n;

	if (v != 0)
		return v;
	f = fopen("/proc/sys/vm/max_map_count", "r");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%lu", &n) == 1)
		v = n;
	fclose(f);
	atomic_store(&cached, v);
	return v;
}

/* ------------------------------------------------------------------ */
/* Bitmaps: bit i describes page map_base + i * pagesize. */

static bool
page_index(const segkp_t *seg, uintptr_t addr, size_t *idx)
{
	if (addr < seg->map_base)
		return false;
	*idx = (addr - seg->map_base) >> seg->pshift;
	return *idx < seg->map_pages;
}

static bool
bit_test(const uint64_t *map, size_t i)
{
	return (map[i / 64] >> (i % 64)) & 1;
}

/* Set or clear bits [first, first + n), a word at a time. */
static void
bits_assign_words(uint64_t *map, size_t first, size_t n, bool on)
{
	while (n > 0) {
		unsigned b = (unsigned)(first % 64);
		size_t take = 64 - b < n ? 64 - b : n;
		uint64_t m = (take == 64 ? ~(uint64_t)0 :
		    (((uint64_t)1 << take) - 1)) << b;

		if (on)
			map[first / 64] |= m;
		else
			map[first / 64] &= ~m;
		first += take;
		n -= take;
	}
}

/* The common case -- a stack inside one word -- inline. */
static inline void
bits_assign(uint64_t *map, size_t first, size_t n, bool on)
{
	unsigned b = (unsigned)(first % 64);

	if (b + n < 64) {
		uint64_t m = (((uint64_t)1 << n) - 1) << b;

		if (on)
			map[first / 64] |= m;
		else
			map[first / 64] &= ~m;
		return;
	}
	bits_assign_words(map, first, n, on);
}

static unsigned
highest_bit(uint64_t w)
{
#if defined(__GNUC__)
	return 63u - (unsigned)__builtin_clzll(w);
#else
	unsigned b = 63;

	while (!((w >> b) & 1))
		b--;
	return b;
#endif
}

/* The highest start bit at or below page i (the page must be held). */
static bool
start_at_or_below(const segkp_t *seg, size_t i, size_t *out)
{
	size_t w = i / 64;
	uint64_t bits = seg->starts[w];
	unsigned b = (unsigned)(i % 64);

	if (b < 63)
		bits &= ((uint64_t)1 << (b + 1)) - 1;
	for (;;) {
		if (bits != 0) {
			*out = w * 64 + highest_bit(bits);
			return true;
		}
		if (w == 0)
			return false;
		bits = seg->starts[--w];
	}
}

/* ------------------------------------------------------------------ */
/* The hash of live records, keyed by base. */

static size_t
hash_index(const segkp_t *seg, uintptr_t base)
{
	uintptr_t p = base >> seg->pshift;

	return (size_t)((p ^ (p >> 7) ^ (p >> 17)) & (seg->hash_size - 1));
}

static kp_rec_t *
hash_find(const segkp_t *seg, uintptr_t base)
{
	for (kp_rec_t *r = seg->hash[hash_index(seg, base)]; r != NULL;
	    r = r->hnext)
		if (r->base == base)
			return r;
	return NULL;
}

/* Grow the table when chains would get long; failure keeps the old one. */
static void
hash_maybe_grow(segkp_t *seg)
{
	size_t nsize = seg->hash_size * 2;
	kp_rec_t **nh, **old = seg->hash;
	size_t osize = seg->hash_size;

	if (seg->nrecs < 2 * seg->hash_size)
		return;
	nh = calloc(nsize, sizeof (*nh));
	if (nh == NULL)
		return;
	seg->hash = nh;
	seg->hash_size = nsize;
	for (size_t i = 0; i < osize; i++) {
		kp_rec_t *r = old[i], *next;

		for (; r != NULL; r = next) {
			size_t h = hash_index(seg, r->base);

			next = r->hnext;
			r->hnext = nh[h];
			nh[h] = r;
		}
	}
	free(old);
	charge(seg, (long)((nsize - osize) * sizeof (*nh)));
}

static void
hash_remove(segkp_t *seg, kp_rec_t *r)
{
	kp_rec_t **pp = &seg->hash[hash_index(seg, r->base)];

	while (*pp != r)
		pp = &(*pp)->hnext;
	*pp = r->hnext;
	r->hnext = NULL;
}

/* ------------------------------------------------------------------ */
/* Records: insertion makes an allocation visible to find and release. */

static size_t
usable_pages(const segkp_t *seg, const kp_rec_t *r)
{
	return (r->size - r->redzone) >> seg->pshift;
}

static void
rec_account(segkp_t *seg, const kp_rec_t *r, int sign)
{
	size_t np = usable_pages(seg, r);

	if (r->resident) {
		seg->st_committed += sign * np;
		seg->st_resident_allocs += sign;
		if (r->flags & KPD_LOCKED)
			seg->st_locked += sign * np;
	}
	seg->st_redzone += sign * (r->redzone >> seg->pshift);
	seg->st_va += sign * r->size;
}

static void
rec_insert(segkp_t *seg, kp_rec_t *r)
{
	size_t h = hash_index(seg, r->base), idx = 0;

	r->hnext = seg->hash[h];
	seg->hash[h] = r;
	seg->nrecs++;
	(void)page_index(seg, r->base, &idx);
	bits_assign(seg->held, idx, r->size >> seg->pshift, true);
	bits_assign(seg->starts, idx, 1, true);
	rec_account(seg, r, +1);
	hash_maybe_grow(seg);
}

static void
rec_remove(segkp_t *seg, kp_rec_t *r)
{
	size_t idx = 0;

	hash_remove(seg, r);
	seg->nrecs--;
	(void)page_index(seg, r->base, &idx);
	bits_assign(seg->held, idx, r->size >> seg->pshift, false);
	bits_assign(seg->starts, idx, 1, false);
	rec_account(seg, r, -1);
	seg->tombs[seg->tomb_next++ % NTOMBS] = r->base + r->redzone;
}

/* A record from the free list (a new block if it is empty); lock held. */
static kp_rec_t *
rec_take_locked(segkp_t *seg)
{
	kp_rec_t *r;

	if (seg->rec_free == NULL) {
		kp_block_t *b = calloc(1, sizeof (*b));

		if (b == NULL)
			return NULL;
		b->next = seg->blocks;
		seg->blocks = b;
		for (int i = REC_BLOCK - 1; i >= 0; i--) {
			b->recs[i].next = seg->rec_free;
			seg->rec_free = &b->recs[i];
		}
	}
	r = seg->rec_free;
	seg->rec_free = r->next;
	return r;
}

/*
 * Lock held, r already out of the hash: keep what the page and arena work
 * needs in *dead, uncharge r and put it on the free list. The caller then
 * calls rec_unback(dead) without the lock.
 */
static void
rec_retire_locked(segkp_t *seg, kp_rec_t *r, kp_rec_t *dead)
{
	*dead = *r;
	charge(seg, -(long)sizeof (kp_rec_t));
	r->state = REC_FREE;
	r->next = seg->rec_free;
	seg->rec_free = r;
}

/* The live record holding addr (redzone included), under the lock. */
static kp_rec_t *
rec_lookup(const segkp_t *seg, uintptr_t addr)
{
	size_t idx, start;
	kp_rec_t *r;

	if (!page_index(seg, addr, &idx) || !bit_test(seg->held, idx))
		return NULL;
	if (!start_at_or_below(seg, idx, &start))
		return NULL;
	r = hash_find(seg, seg->map_base + (start << seg->pshift));
	if (r == NULL || addr - r->base >= r->size)
		return NULL;
	return r;
}

static bool
in_segment_range(const segkp_t *seg, uintptr_t addr)
{
	if (seg->placement == SEGKP_FIXED)
		return addr - seg->fixed_base < seg->fixed_size;
	return false;
}

/* ------------------------------------------------------------------ */
/* Page work (no segment lock held). */

static int
pages_back(segkp_t *seg, kp_rec_t *r, bool nowait)
{
	void *usable = (void *)(r->base + r->redzone);
	size_t len = r->size - r->redzone;
	size_t np = len >> seg->pshift;
	bool locked = (r->flags & KPD_LOCKED) != 0;
	bool dirty = false;

	if (locked && !kas_page_resv(seg->kas, np,
	    nowait ? VM_NOSLEEP : VM_SLEEP))
		return -1;
	if ((r->flags & KPD_ZERO) && seg->backing == KAS_REAL)
		dirty = kas_page_is_committed(seg->kas, usable);
	if (kas_pages_commit(seg->kas, usable, len,
	    locked ? KAS_COMMIT_LOCK : 0) != 0) {
		if (locked)
			kas_page_unresv(seg->kas, np);
		return -1;
	}
	if (dirty)
		memset(usable, 0, len);
	return 0;
}

static void
pages_drop(segkp_t *seg, const kp_rec_t *r)
{
	size_t len = r->size - r->redzone;

	kas_pages_decommit(seg->kas, (void *)(r->base + r->redzone), len);
	if (r->flags & KPD_LOCKED)
		kas_page_unresv(seg->kas, len >> seg->pshift);
}

/* Give a retired allocation back to the system and the arena (no lock). */
static void
rec_unback(segkp_t *seg, const kp_rec_t *dead)
{
	if (dead->resident)
		pages_drop(seg, dead);
	vmem_free(seg->arena, (void *)dead->base, dead->size);
}

/* Retire and unback a record that already left the hash. */
static void
rec_destroy(segkp_t *seg, kp_rec_t *r)
{
	kp_rec_t dead;

	plat_mutex_lock(&seg->lock);
	rec_retire_locked(seg, r, &dead);
	plat_mutex_unlock(&seg->lock);
	rec_unback(seg, &dead);
}

/* ------------------------------------------------------------------ */
/* Allocation. */

bool
segkp_flags_valid(int flags)
{
	return (flags & ~KPD_FLAGS) == 0 &&
	    (!(flags & KPD_NO_ANON) || (flags & KPD_LOCKED)) &&
	    (!(flags & KPD_REDZONE_PAGES(0xff)) || (flags & KPD_HASREDZONE));
}

static bool
check_get_args(segkp_t *seg, size_t len, int flags, const char *call)
{
	if (len == 0 || (len & (seg->pagesize - 1)) != 0) {
		vmem_error_report(SEGKP_E_BADLEN, 0, call, seg->arena, "segkp",
		    0, len, "len %lu is not a nonzero multiple of the page "
		    "size %lu", (unsigned long)len,
		    (unsigned long)seg->pagesize);
		return false;
	}
	if (!segkp_flags_valid(flags)) {
		vmem_error_report(SEGKP_E_BADFLAGS, 0, call, seg->arena,
		    "segkp", 0, len, "invalid flags 0x%x%s", (unsigned)flags,
		    ((flags & KPD_NO_ANON) && !(flags & KPD_LOCKED)) ?
		    ": KPD_NO_ANON requires KPD_LOCKED" : "");
		return false;
	}
	return true;
}

static void
count_fail(segkp_t *seg, bool lock_failed)
{
	plat_mutex_lock(&seg->lock);
	seg->st_get_fail++;
	if (lock_failed)
		seg->st_lock_fail++;
	plat_mutex_unlock(&seg->lock);
}

/*
 * Address space and pages first, then one locked section that takes a
 * record, charges it and makes it visible.
 */
static void *
kp_alloc(segkp_t *seg, size_t len, int flags, int slot, unsigned slot_gen)
{
	size_t rz = redzone_pages_of(flags) << seg->pshift;
	bool nowait = (flags & KPD_NOWAIT) != 0;
	kp_rec_t t, *r;
	void *base;

	if (len + rz < len || (base = vmem_alloc(seg->arena, len + rz,
	    VM_BESTFIT | (nowait ? VM_NOSLEEP : VM_SLEEP))) == NULL) {
		count_fail(seg, false);
		return NULL;
	}
	memset(&t, 0, sizeof (t));
	t.base = (uintptr_t)base;
	t.size = len + rz;
	t.redzone = rz;
	t.flags = flags;
	t.slot = (uint16_t)(slot + 1);
	t.slot_gen = slot_gen;
	if (pages_back(seg, &t, nowait) != 0) {
		vmem_free(seg->arena, base, t.size);
		count_fail(seg, (flags & KPD_LOCKED) != 0);
		return NULL;
	}
	t.resident = 1;
	t.state = REC_INUSE;
	plat_mutex_lock(&seg->lock);
	r = rec_take_locked(seg);
	if (r == NULL) {
		seg->st_get_fail++;
		plat_mutex_unlock(&seg->lock);
		rec_unback(seg, &t);
		return NULL;
	}
	*r = t;
	charge(seg, (long)sizeof (kp_rec_t));
	rec_insert(seg, r);
	seg->st_gets++;
	seg->st_inuse++;
	plat_mutex_unlock(&seg->lock);
	return (void *)(r->base + rz);
}

void *
segkp_get(segkp_t *seg, size_t len, int flags)
{
	if (!seg_valid(seg)) {
		vmem_error_report(VMEM_E_BADARG, 0, "segkp_get", NULL, "segkp",
		    (uintptr_t)seg, len, "not a segkp segment");
		return NULL;
	}
	if (!check_get_args(seg, len, flags, "segkp_get"))
		return NULL;
	return kp_alloc(seg, len, flags, -1, 0);
}

/* ------------------------------------------------------------------ */
/* Release. */

static bool
was_released(const segkp_t *seg, uintptr_t addr)
{
	for (unsigned i = 0; i < NTOMBS; i++)
		if (seg->tombs[i] == addr && addr != 0)
			return true;
	return false;
}

/* Under the lock: a cache that will take r back, or NULL. */
static kp_cache_t *
cache_taking(segkp_t *seg, const kp_rec_t *r)
{
	kp_cache_t *c;

	if (r->slot == 0)
		return NULL;
	c = &cache_slots[r->slot - 1];
	/*
	 * The generation first: if the cache was destroyed, its slot may be
	 * serving another segment's new cache, written under that segment's
	 * lock, not ours. If it matches, the cache is still ours and only
	 * changes under our lock.
	 */
	if (atomic_load(&c->gen) != r->slot_gen || c->seg != seg)
		return NULL;
	if (c->count + c->reaping >= c->maxsize) {
		seg->st_full++;
		return NULL;
	}
	return c;
}

void
segkp_release(segkp_t *seg, void *addr)
{
	uintptr_t a = (uintptr_t)addr;
	kp_rec_t *r, dead;
	kp_cache_t *c;
	int code;

	if (!seg_valid(seg)) {
		vmem_error_report(VMEM_E_BADARG, 0, "segkp_release", NULL,
		    "segkp", (uintptr_t)seg, 0, "not a segkp segment");
		return;
	}
	plat_mutex_lock(&seg->lock);
	/* Most releases are of stacks with a one-page redzone: their base
	 * is a hash probe away; anything else takes the bitmap walk. */
	r = hash_find(seg, a - seg->pagesize);
	if (r == NULL || r->base + r->redzone != a)
		r = rec_lookup(seg, a);
	if (r == NULL || r->base + r->redzone != a || r->state != REC_INUSE) {
		code = (r != NULL && r->base + r->redzone == a) ||
		    (r == NULL && was_released(seg, a)) ? SEGKP_E_DOUBLE :
		    SEGKP_E_NOTOWNED;
		plat_mutex_unlock(&seg->lock);
		vmem_error_report(code, 0, "segkp_release", seg->arena,
		    "segkp", a, 0, code == SEGKP_E_DOUBLE ?
		    "address released twice" :
		    "address was not returned by segkp_get");
		return;
	}
	c = cache_taking(seg, r);
	if (c != NULL) {
		r->state = REC_CACHED;
		r->next = c->head;
		c->head = r;
		c->count++;
		seg->st_inuse--;
		seg->st_cached++;
		seg->st_puts++;
		plat_mutex_unlock(&seg->lock);
		return;
	}
	rec_remove(seg, r);
	seg->st_inuse--;
	seg->st_releases++;
	rec_retire_locked(seg, r, &dead);
	plat_mutex_unlock(&seg->lock);
	rec_unback(seg, &dead);
}

/* ------------------------------------------------------------------ */
/* Stack caches. */

static uintptr_t
cookie_make(int slot, unsigned gen)
{
	return ((uintptr_t)gen << 9) | ((uintptr_t)slot << 1) | 1;
}

/* The cache a cookie names, or NULL (reported). */
static kp_cache_t *
cookie_cache(void *cookie, unsigned *genp, const char *call)
{
	uintptr_t v = (uintptr_t)cookie;
	size_t slot = (v >> 1) & (NSLOTS - 1);
	unsigned gen = (unsigned)(v >> 9);
	kp_cache_t *c = &cache_slots[slot];

	if ((v & 1) && gen != 0 && atomic_load(&c->gen) == gen &&
	    c->seg != NULL) {
		*genp = gen;
		return c;
	}
	vmem_error_report(SEGKP_E_BADCOOKIE, 0, call, NULL, "segkp", v, 0,
	    "invalid stack cache cookie");
	return NULL;
}

/* Under slots_lock and seg's lock: the slot of a new cache, or -1 when the
 * segment's table or the process's is full. */
static int
cache_claim_locked(segkp_t *seg, int maxsize, size_t len, int flags,
    unsigned *genp)
{
	int slot = -1, idx = -1;
	kp_cache_t *c;
	unsigned gen;

	for (int i = 0; i < SEGKP_MAX_CACHES && idx < 0; i++)
		if (seg->slots[i] < 0)
			idx = i;
	for (int i = 0; i < NSLOTS && idx >= 0 && slot < 0; i++)
		if (cache_slots[i].seg == NULL)
			slot = i;
	if (slot < 0)
		return -1;
	c = &cache_slots[slot];
	gen = atomic_load(&c->gen) + 1;
	if ((gen & 0x7fffff) == 0)
		gen = 1;
	atomic_store(&c->gen, gen);
	c->len = len;
	c->flags = flags;
	c->maxsize = maxsize;
	c->count = c->low = c->reaping = 0;
	c->head = NULL;
	c->seg = seg;
	seg->slots[idx] = slot;
	*genp = gen;
	return slot;
}

static void *
cache_init(segkp_t *seg, int maxsize, size_t len, int flags, bool quiet)
{
	unsigned gen = 0;
	int slot;

	if (!seg_valid(seg)) {
		vmem_error_report(VMEM_E_BADARG, 0, "segkp_cache_init", NULL,
		    "segkp", (uintptr_t)seg, len, "not a segkp segment");
		return NULL;
	}
	if (!check_get_args(seg, len, flags, "segkp_cache_init"))
		return NULL;
	if (maxsize < 0) {
		vmem_error_report(VMEM_E_BADARG, 0, "segkp_cache_init",
		    seg->arena, "segkp", 0, len, "negative maxsize %d",
		    maxsize);
		return NULL;
	}
	pthread_mutex_lock(&slots_lock);
	plat_mutex_lock(&seg->lock);
	slot = cache_claim_locked(seg, maxsize, len, flags, &gen);
	plat_mutex_unlock(&seg->lock);
	pthread_mutex_unlock(&slots_lock);
	if (slot < 0) {
		if (!quiet)
			vmem_error_report(SEGKP_E_TOOMANY, 0,
			    "segkp_cache_init", seg->arena, "segkp", 0, len,
			    "no free stack cache (%d per segment, %d in all)",
			    SEGKP_MAX_CACHES, NSLOTS);
		return NULL;
	}
	return (void *)cookie_make(slot, gen);
}

void *
segkp_cache_init(segkp_t *seg, int maxsize, size_t len, int flags)
{
	return cache_init(seg, maxsize, len, flags, false);
}

void *
segkp_cache_try_init(segkp_t *seg, int maxsize, size_t len, int flags)
{
	return cache_init(seg, maxsize, len, flags, true);
}

/* Recommit a cached stack whose pages were reaped. */
static void *
cached_backin(segkp_t *seg, kp_rec_t *r)
{
	kp_rec_t dead;

	if (pages_back(seg, r, (r->flags & KPD_NOWAIT) != 0) == 0) {
		plat_mutex_lock(&seg->lock);
		rec_account(seg, r, -1);
		r->resident = 1;
		rec_account(seg, r, +1);
		plat_mutex_unlock(&seg->lock);
		return (void *)(r->base + r->redzone);
	}
	/* No pages: give the address space back too and fail. */
	plat_mutex_lock(&seg->lock);
	rec_remove(seg, r);
	seg->st_inuse--;
	seg->st_releases++;
	seg->st_get_fail++;
	rec_retire_locked(seg, r, &dead);
	plat_mutex_unlock(&seg->lock);
	rec_unback(seg, &dead);
	return NULL;
}

void *
segkp_cache_get(void *cookie)
{
	unsigned gen;
	kp_cache_t *c = cookie_cache(cookie, &gen, "segkp_cache_get");
	segkp_t *seg;
	kp_rec_t *r;
	size_t len;
	int flags, slot;

	if (c == NULL)
		return NULL;
	seg = c->seg;
	plat_mutex_lock(&seg->lock);
	if (atomic_load(&c->gen) != gen || c->seg != seg) {
		plat_mutex_unlock(&seg->lock);
		vmem_error_report(SEGKP_E_BADCOOKIE, 0, "segkp_cache_get",
		    NULL, "segkp", (uintptr_t)cookie, 0,
		    "stack cache destroyed");
		return NULL;
	}
	r = c->head;
	if (r != NULL) {
		c->head = r->next;
		if (--c->count < c->low)
			c->low = c->count;
		r->state = REC_INUSE;
		r->next = NULL;
		seg->st_hits++;
		seg->st_cached--;
		seg->st_inuse++;
		plat_mutex_unlock(&seg->lock);
		if (!r->resident)
			return cached_backin(seg, r);
		return (void *)(r->base + r->redzone);
	}
	seg->st_misses++;
	len = c->len;
	flags = c->flags;
	slot = (int)(c - cache_slots);
	plat_mutex_unlock(&seg->lock);
	return kp_alloc(seg, len, flags, slot, gen);
}

static void
detach_window_open(void)
{
	pthread_mutex_lock(&detach_lock);
	detach_windows++;
	pthread_mutex_unlock(&detach_lock);
}

static void
detach_window_close(void)
{
	pthread_mutex_lock(&detach_lock);
	if (--detach_windows == 0)
		pthread_cond_broadcast(&detach_cv);
	pthread_mutex_unlock(&detach_lock);
}

/* Under the lock: detach the bottom n (at most all) records of c's list
 * and mark them REC_DETACHED. *np gets how many. */
static kp_rec_t *
cache_detach_bottom(segkp_t *seg, kp_cache_t *c, int *np)
{
	kp_rec_t **pp = &c->head, *bottom;
	int n = *np < c->count ? *np : c->count;

	*np = n < 0 ? 0 : n;
	if (n <= 0)
		return NULL;
	for (int keep = c->count - n; keep > 0; keep--)
		pp = &(*pp)->next;
	bottom = *pp;
	*pp = NULL;
	for (kp_rec_t *r = bottom; r != NULL; r = r->next)
		r->state = REC_DETACHED;
	c->count -= n;
	if (c->low > c->count)
		c->low = c->count;
	seg->ndetached += (size_t)n;
	return bottom;
}

/* Fully free a list of detached records, one lock hold each. */
static void
free_detached(segkp_t *seg, kp_rec_t *list)
{
	kp_rec_t *next, dead;

	for (; list != NULL; list = next) {
		next = list->next;
		plat_mutex_lock(&seg->lock);
		rec_remove(seg, list);
		seg->ndetached--;
		seg->st_cached--;
		seg->st_releases++;
		rec_retire_locked(seg, list, &dead);
		plat_mutex_unlock(&seg->lock);
		rec_unback(seg, &dead);
	}
}

/* Inside a detach window the caller opened before taking any lock. */
static void
seg_cache_free(segkp_t *seg)
{
	for (int i = 0; i < SEGKP_MAX_CACHES; i++) {
		kp_rec_t *list = NULL;

		plat_mutex_lock(&seg->lock);
		if (seg->slots[i] >= 0) {
			kp_cache_t *c = &cache_slots[seg->slots[i]];
			int n = c->count;

			list = cache_detach_bottom(seg, c, &n);
		}
		plat_mutex_unlock(&seg->lock);
		free_detached(seg, list);
	}
	/* The arena's quantum caches hold free address space: return it. */
	vmem_reap(seg->arena);
}

/*
 * Free the cached stacks of every segment (of kas only, if not NULL): for
 * segkp_cache_free(), and for the reclaimer when a page reservation in
 * kas is about to sleep. The window first: fork() takes detach_lock before
 * segs_lock.
 */
static void
segs_cache_free(kas_t *kas)
{
	detach_window_open();
	pthread_mutex_lock(&segs_lock);
	for (segkp_t *s = segs_head; s != NULL; s = s->list_next)
		if (kas == NULL || s->kas == kas)
			seg_cache_free(s);
	pthread_mutex_unlock(&segs_lock);
	detach_window_close();
}


void
segkp_cache_free_seg(segkp_t *seg)
{
	if (seg != NULL) {
		if (!seg_valid(seg)) {
			vmem_error_report(VMEM_E_BADARG, 0,
			    "segkp_cache_free_seg", NULL, "segkp",
			    (uintptr_t)seg, 0, "not a segkp segment");
			return;
		}
		detach_window_open();
		seg_cache_free(seg);
		detach_window_close();
		return;
	}
	segs_cache_free(NULL);
}

/* illumos' form: every segment of the process. */
void
segkp_cache_free(void)
{
	segs_cache_free(NULL);
}

void
segkp_cache_destroy(void *cookie)
{
	unsigned gen;
	kp_cache_t *c = cookie_cache(cookie, &gen, "segkp_cache_destroy");
	segkp_t *seg;
	kp_rec_t *list;
	int n;

	if (c == NULL)
		return;
	seg = c->seg;
	detach_window_open();
	pthread_mutex_lock(&slots_lock);
	plat_mutex_lock(&seg->lock);
	if (atomic_load(&c->gen) != gen) {
		plat_mutex_unlock(&seg->lock);
		pthread_mutex_unlock(&slots_lock);
		detach_window_close();
		vmem_error_report(SEGKP_E_BADCOOKIE, 0, "segkp_cache_destroy",
		    NULL, "segkp", (uintptr_t)cookie, 0,
		    "stack cache destroyed");
		return;
	}
	n = c->count;
	list = cache_detach_bottom(seg, c, &n);
	for (int i = 0; i < SEGKP_MAX_CACHES; i++)
		if (seg->slots[i] == (int)(c - cache_slots))
			seg->slots[i] = -1;
	atomic_store(&c->gen, gen + 1);
	c->seg = NULL;
	plat_mutex_unlock(&seg->lock);
	pthread_mutex_unlock(&slots_lock);
	free_detached(seg, list);
	detach_window_close();
}

/* Decommit a detached list; put it back at the bottom of its cache. */
static size_t
reap_list(segkp_t *seg, kp_cache_t *c, unsigned gen, kp_rec_t *list, int n)
{
	size_t pages = 0;
	kp_rec_t **pp;

	for (kp_rec_t *r = list; r != NULL; r = r->next) {
		if (r->resident) {
			pages_drop(seg, r);
			pages += usable_pages(seg, r);
		}
	}
	if (segkp_reap_window_hook != NULL)
		segkp_reap_window_hook(seg);
	plat_mutex_lock(&seg->lock);
	for (kp_rec_t *r = list; r != NULL; r = r->next) {
		rec_account(seg, r, -1);
		r->resident = 0;
		rec_account(seg, r, +1);
	}
	seg->st_reaped += pages;
	if (atomic_load(&c->gen) != gen || c->seg != seg) {
		/* The cache went away meanwhile (its slot may even serve
		 * a new cache now, whose reaping count is not ours). */
		plat_mutex_unlock(&seg->lock);
		free_detached(seg, list);
		return pages;
	}
	for (kp_rec_t *r = list; r != NULL; r = r->next)
		r->state = REC_CACHED;
	for (pp = &c->head; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = list;
	c->count += n;
	c->reaping -= n;
	seg->ndetached -= (size_t)n;
	plat_mutex_unlock(&seg->lock);
	return pages;
}

size_t
segkp_cache_reap(segkp_t *seg, int how)
{
	size_t pages = 0;

	if (!seg_valid(seg)) {
		vmem_error_report(VMEM_E_BADARG, 0, "segkp_cache_reap", NULL,
		    "segkp", (uintptr_t)seg, 0, "not a segkp segment");
		return 0;
	}
	detach_window_open();
	for (int i = 0; i < SEGKP_MAX_CACHES; i++) {
		kp_cache_t *c;
		kp_rec_t *list = NULL;
		unsigned gen = 0;
		int n = 0;

		plat_mutex_lock(&seg->lock);
		if (seg->slots[i] >= 0) {
			c = &cache_slots[seg->slots[i]];
			gen = atomic_load(&c->gen);
			n = how == SEGKP_REAP_ALL ? c->count : c->low;
			list = cache_detach_bottom(seg, c, &n);
			/* Still the cache's: room is kept for them. */
			c->reaping += n;
			/* A new interval starts now. */
			c->low = c->count + n;
		}
		plat_mutex_unlock(&seg->lock);
		if (list != NULL)
			pages += reap_list(seg, c, gen, list, n);
	}
	detach_window_close();
	vmem_reap(seg->arena);
	return pages;
}

/* ------------------------------------------------------------------ */
/* Lookup and classification. */

static void
fill_info(const kp_rec_t *r, segkp_info_t *info)
{
	if (info == NULL)
		return;
	info->base = r->base;
	info->size = r->size;
	info->addr = r->base + r->redzone;
	info->len = r->size - r->redzone;
	info->redzone = r->redzone;
	info->flags = r->flags;
	info->cached = r->state == REC_CACHED || r->state == REC_DETACHED;
	info->resident = r->resident;
	info->tag = r->tag;
}

int
segkp_find(segkp_t *seg, const void *addr, segkp_info_t *info)
{
	kp_rec_t *r;

	if (!seg_valid(seg))
		return 0;
	plat_mutex_lock(&seg->lock);
	r = rec_lookup(seg, (uintptr_t)addr);
	if (r != NULL)
		fill_info(r, info);
	plat_mutex_unlock(&seg->lock);
	return r != NULL;
}

int
segkp_set_tag(segkp_t *seg, const void *addr, void *tag)
{
	kp_rec_t *r;

	if (!seg_valid(seg))
		return -1;
	plat_mutex_lock(&seg->lock);
	r = rec_lookup(seg, (uintptr_t)addr);
	if (r != NULL)
		r->tag = tag;
	plat_mutex_unlock(&seg->lock);
	return r != NULL ? 0 : -1;
}

int
segkp_page_held(segkp_t *seg, const void *addr)
{
	size_t idx;
	int held;

	if (!seg_valid(seg))
		return 0;
	plat_mutex_lock(&seg->lock);
	held = page_index(seg, (uintptr_t)addr, &idx) &&
	    bit_test(seg->held, idx);
	plat_mutex_unlock(&seg->lock);
	return held;
}

static segkp_fault_t
classify_locked(const segkp_t *seg, uintptr_t a, segkp_info_t *info)
{
	kp_rec_t *r = rec_lookup(seg, a);

	if (r == NULL)
		return in_segment_range(seg, a) ? SEGKP_FAULT_NOMAPPING :
		    SEGKP_FAULT_NOTSEGKP;
	fill_info(r, info);
	return a < r->base + r->redzone ? SEGKP_FAULT_REDZONE :
	    SEGKP_FAULT_MAPPED;
}

segkp_fault_t
segkp_classify(segkp_t *seg, const void *addr, segkp_info_t *info)
{
	segkp_fault_t f;

	if (!seg_valid(seg))
		return SEGKP_FAULT_NOTSEGKP;
	plat_mutex_lock(&seg->lock);
	f = classify_locked(seg, (uintptr_t)addr, info);
	plat_mutex_unlock(&seg->lock);
	return f;
}

static void
describe(segkp_fault_t f, const segkp_info_t *in, char *buf, size_t len)
{
	if (buf == NULL || len == 0)
		return;
	switch (f) {
	case SEGKP_FAULT_REDZONE:
		snprintf(buf, len, "segkp: redzone of stack [%#lx,%#lx)",
		    (unsigned long)in->addr,
		    (unsigned long)(in->addr + in->len));
		break;
	case SEGKP_FAULT_MAPPED:
		snprintf(buf, len, "segkp: %s of allocation [%#lx,%#lx)%s",
		    in->resident ? "mapped part" : "reaped part",
		    (unsigned long)in->addr,
		    (unsigned long)(in->addr + in->len),
		    in->cached ? " (idle in a stack cache)" : "");
		break;
	case SEGKP_FAULT_NOMAPPING:
		snprintf(buf, len, "segkp: no mapping (outside every "
		    "allocation of the segment)");
		break;
	default:
		snprintf(buf, len, "not segkp");
		break;
	}
}

segkp_fault_t
segkp_describe(segkp_t *seg, const void *addr, char *buf, size_t len)
{
	segkp_info_t info;
	segkp_fault_t f = segkp_classify(seg, addr, &info);

	describe(f, &info, buf, len);
	return f;
}

/* The kas asks this before its own arenas (kas_classify, kvsim faults). */
static kas_fault_t
kas_classifier(void *arg, uintptr_t addr, char *buf, size_t len)
{
	segkp_t *seg = arg;
	segkp_info_t info;
	segkp_fault_t f = segkp_classify(seg, (void *)addr, &info);

	describe(f, &info, buf, len);
	switch (f) {
	case SEGKP_FAULT_REDZONE:
		return KAS_FAULT_REDZONE;
	case SEGKP_FAULT_MAPPED:
		return info.resident ? KAS_FAULT_VALID : KAS_FAULT_UNBACKED;
	case SEGKP_FAULT_NOMAPPING:
		return KAS_FAULT_FREE;
	default:
		return KAS_FAULT_NONE;
	}
}

/*
 * One classifier serves every segment of an address space: the address
 * space's table of classifiers is small (KAS_MAX_CLASSIFIERS) and shared
 * with its users, and a classifier per segment made the ninth segment fail.
 */
static kas_fault_t
kas_segs_classifier(void *arg, uintptr_t addr, char *buf, size_t len)
{
	kas_t *kas = arg;
	kas_fault_t k = KAS_FAULT_NONE;

	pthread_mutex_lock(&segs_lock);
	for (segkp_t *s = segs_head; s != NULL && k == KAS_FAULT_NONE;
	    s = s->list_next)
		if (s->kas == kas)
			k = kas_classifier(s, addr, buf, len);
	pthread_mutex_unlock(&segs_lock);
	return k;
}

/* Whether kas has a listed segment (segs_lock held). */
static bool
kas_has_segments(const kas_t *kas)
{
	for (segkp_t *s = segs_head; s != NULL; s = s->list_next)
		if (s->kas == kas)
			return true;
	return false;
}

/* List seg; its address space's first segment registers the classifier. */
static bool
segs_join(segkp_t *seg)
{
	bool first;

	pthread_mutex_lock(&classifier_lock);
	pthread_mutex_lock(&segs_lock);
	first = !kas_has_segments(seg->kas);
	pthread_mutex_unlock(&segs_lock);
	if (first && kas_classifier_add(seg->kas, kas_segs_classifier,
	    seg->kas) != 0) {
		pthread_mutex_unlock(&classifier_lock);
		/* Reported with no lock held: a handler may call back. */
		vmem_error_report(SEGKMEM_E_TABLEFULL, 0, "segkp_create",
		    NULL, kas_name(seg->kas), 0, 0, "the address space's "
		    "%d fault classifiers are taken (one serves all its "
		    "segkp segments)", KAS_MAX_CLASSIFIERS);
		return false;
	}
	pthread_mutex_lock(&segs_lock);
	seg->list_next = segs_head;
	segs_head = seg;
	pthread_mutex_unlock(&segs_lock);
	pthread_mutex_unlock(&classifier_lock);
	return true;
}

static void
segs_leave(segkp_t *seg)
{
	bool last;

	pthread_mutex_lock(&classifier_lock);
	pthread_mutex_lock(&segs_lock);
	for (segkp_t **pp = &segs_head; *pp != NULL; pp = &(*pp)->list_next)
		if (*pp == seg) {
			*pp = seg->list_next;
			break;
		}
	last = !kas_has_segments(seg->kas);
	pthread_mutex_unlock(&segs_lock);
	if (last)
		kas_unregister_fault_classifier(seg->kas, kas_segs_classifier,
		    seg->kas);
	pthread_mutex_unlock(&classifier_lock);
}

/*
 * For the overflow handler (signal context): classify addr in every
 * segment without blocking. A segment whose lock stays busy is skipped
 * (it may be held by the faulting thread itself).
 */
segkp_fault_t
segkp_classify_any_nowait(uintptr_t addr, segkp_info_t *info)
{
	segkp_fault_t f = SEGKP_FAULT_NOTSEGKP;
	int tries;

	for (tries = 0; tries < 1000; tries++)
		if (pthread_mutex_trylock(&segs_lock) == 0)
			break;
	if (tries == 1000)
		return f;
	for (segkp_t *s = segs_head; s != NULL &&
	    f == SEGKP_FAULT_NOTSEGKP; s = s->list_next) {
		for (tries = 0; tries < 1000; tries++)
			if (plat_mutex_trylock(&s->lock) == 0)
				break;
		if (tries == 1000)
			continue;
		f = classify_locked(s, addr, info);
		plat_mutex_unlock(&s->lock);
	}
	pthread_mutex_unlock(&segs_lock);
	return f;
}

/* ------------------------------------------------------------------ */
/* Consistency check. */

static int
check_fail(const segkp_t *seg, const char *what, uintptr_t addr)
{
	vmem_error_report(SEGKP_E_CORRUPT, 0, "segkp_check", seg->arena,
	    "segkp", addr, 0, "%s", what);
	return -1;
}

/* Under the lock: NULL if consistent, else what is wrong (and *addr). */
static const char *
check_locked(const segkp_t *seg, uintptr_t *addr)
{
	size_t held = 0, starts = 0, nrecs = 0, cached = 0, va = 0;
	size_t detached = 0;

	for (size_t h = 0; h < seg->hash_size; h++) {
		for (kp_rec_t *r = seg->hash[h]; r != NULL; r = r->hnext) {
			size_t idx, np = r->size >> seg->pshift;

			*addr = r->base;
			if (hash_index(seg, r->base) != h)
				return "record in the wrong hash chain";
			if (r->state == REC_FREE)
				return "free record in the hash";
			if (!page_index(seg, r->base, &idx) ||
			    idx + np > seg->map_pages)
				return "record outside the bitmap";
			for (size_t i = idx; i < idx + np; i++)
				if (!bit_test(seg->held, i))
					return "page of an allocation not "
					    "marked in the bitmap";
			if (!bit_test(seg->starts, idx))
				return "allocation start not marked";
			for (size_t i = idx + 1; i < idx + np; i++)
				if (bit_test(seg->starts, i))
					return "start bit inside an "
					    "allocation";
			nrecs++;
			held += np;
			va += r->size;
			cached += r->state == REC_CACHED;
			detached += r->state == REC_DETACHED;
		}
	}
	*addr = 0;
	for (size_t w = 0; w < seg->map_words; w++) {
		uint64_t x = seg->held[w], y = seg->starts[w];

		for (; x != 0; x &= x - 1)
			held--;
		for (; y != 0; y &= y - 1)
			starts++;
	}
	if (held != 0)
		return "bitmap marks pages no allocation holds";
	if (starts != nrecs || nrecs != seg->nrecs)
		return "record count mismatch";
	if (va != seg->st_va || seg->st_inuse + seg->st_cached != nrecs ||
	    detached != seg->ndetached)
		return "statistics do not match the records";
	for (int i = 0; i < SEGKP_MAX_CACHES; i++) {
		const kp_cache_t *c;
		int n = 0;

		if (seg->slots[i] < 0)
			continue;
		c = &cache_slots[seg->slots[i]];
		if (c->seg != seg)
			return "segment lists a cache of another segment";
		for (kp_rec_t *r = c->head; r != NULL; r = r->next, n++)
			if (r->state != REC_CACHED ||
			    hash_find(seg, r->base) != r)
				return "cache holds a record that is not "
				    "cached";
		if (n != c->count || c->reaping < 0 ||
		    c->count + c->reaping > c->maxsize)
			return "cache count mismatch";
		cached -= (size_t)n;
	}
	if (cached != 0)
		return "cached record on no cache list";
	return NULL;
}

int
segkp_check(segkp_t *seg)
{
	const char *what;
	uintptr_t addr = 0;

	if (!seg_valid(seg)) {
		vmem_error_report(VMEM_E_BADARG, 0, "segkp_check", NULL,
		    "segkp", (uintptr_t)seg, 0, "not a segkp segment");
		return -1;
	}
	plat_mutex_lock(&seg->lock);
	what = check_locked(seg, &addr);
	plat_mutex_unlock(&seg->lock);
	return what == NULL ? 0 : check_fail(seg, what, addr);
}

/* ------------------------------------------------------------------ */
/* Creation and destruction. */

static void
fork_prepare(void)
{
	pthread_mutex_lock(&classifier_lock);
	pthread_mutex_lock(&detach_lock);
	while (detach_windows != 0)
		pthread_cond_wait(&detach_cv, &detach_lock);
	pthread_mutex_lock(&slots_lock);
	pthread_mutex_lock(&segs_lock);
	for (segkp_t *s = segs_head; s != NULL; s = s->list_next)
		plat_mutex_lock(&s->lock);
}

static void
fork_release(void)
{
	for (segkp_t *s = segs_head; s != NULL; s = s->list_next)
		plat_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&segs_lock);
	pthread_mutex_unlock(&slots_lock);
	pthread_mutex_unlock(&detach_lock);
	pthread_mutex_unlock(&classifier_lock);
}

static void
register_atfork(void)
{
	(void)pthread_atfork(fork_prepare, fork_release, fork_release);
	kas_set_stack_reclaim(segs_cache_free);
}

typedef struct span_check {
	uintptr_t lo, hi;
	bool overlap;
} span_check_t;

static void
span_overlap_cb(void *arg, void *addr, size_t size)
{
	span_check_t *sc = arg;
	uintptr_t a = (uintptr_t)addr;

	if (a < sc->hi && sc->lo < a + size)
		sc->overlap = true;
}

static bool
config_fail(kas_t *kas, const char *why, uintptr_t base, size_t size)
{
	vmem_error_report(SEGKP_E_BADCONFIG, 0, "segkp_create", NULL,
	    kas != NULL ? kas_name(kas) : "segkp", base, size, "%s", why);
	return false;
}

/* Validate the placement; take the fixed range from the heap if asked. */
static bool
place(segkp_t *seg, segkp_placement_t placement, void *base, size_t size)
{
	kas_t *kas = seg->kas;
	uintptr_t b = (uintptr_t)base, kb = kas_base(kas);
	span_check_t sc;

	if (placement == SEGKP_FROMHEAP) {
		if (base != NULL || size != 0)
			return config_fail(kas, "fromheap takes no range", b,
			    size);
		return true;
	}
	if (placement != SEGKP_FIXED)
		return config_fail(kas, "unknown placement", b, size);
	if (size == 0 || (size & (seg->pagesize - 1)) != 0 ||
	    (b & (seg->pagesize - 1)) != 0)
		return config_fail(kas, "fixed range must be page-aligned and "
		    "not empty", b, size);
	if (base == NULL) {
		base = vmem_xalloc(seg->heap, size, 0, 0, 0, NULL, NULL,
		    VM_NOSLEEP | VM_BESTFIT);
		if (base == NULL)
			return false;
		seg->fixed_from_heap = true;
	} else {
		if (b < kb || b - kb > kas_size(kas) ||
		    size > kas_size(kas) - (b - kb))
			return config_fail(kas, "fixed range outside the "
			    "address space", b, size);
		sc.lo = b;
		sc.hi = b + size;
		sc.overlap = false;
		vmem_walk(seg->heap, VMEM_SPAN, span_overlap_cb, &sc);
		if (sc.overlap)
			return config_fail(kas, "fixed range overlaps "
			    "heap_arena", b, size);
	}
	seg->fixed_base = (uintptr_t)base;
	seg->fixed_size = size;
	return true;
}

static bool
make_maps(segkp_t *seg)
{
	if (seg->placement == SEGKP_FIXED) {
		seg->map_base = seg->fixed_base;
		seg->map_pages = seg->fixed_size >> seg->pshift;
	} else {
		seg->map_base = kas_base(seg->kas);
		seg->map_pages = kas_size(seg->kas) >> seg->pshift;
	}
	seg->map_words = (seg->map_pages + 63) / 64;
	seg->held = calloc(seg->map_words, sizeof (uint64_t));
	seg->starts = calloc(seg->map_words, sizeof (uint64_t));
	seg->hash_size = HASH_MIN;
	seg->hash = calloc(seg->hash_size, sizeof (kp_rec_t *));
	if (seg->held == NULL || seg->starts == NULL || seg->hash == NULL)
		return false;
	charge(seg, (long)(2 * seg->map_words * sizeof (uint64_t) +
	    seg->hash_size * sizeof (kp_rec_t *) + sizeof (*seg)));
	return true;
}

static void
seg_free_memory(segkp_t *seg)
{
	kp_block_t *b, *next;

	for (b = seg->blocks; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	if (seg->meta_bytes != 0)
		kas_charge_metadata(seg->kas, KAS_META_SEGKP,
		    -(long)seg->meta_bytes);
	free(seg->held);
	free(seg->starts);
	free(seg->hash);
	plat_mutex_destroy(&seg->lock);
	seg->magic = 0;
	free(seg);
}

/* A segment that could not be made gives back what it took. */
static void
create_undo(segkp_t *seg)
{
	if (seg->arena != NULL)
		vmem_destroy(seg->arena);
	if (seg->fixed_from_heap)
		vmem_xfree(seg->heap, (void *)seg->fixed_base, seg->fixed_size);
	seg_free_memory(seg);
}

segkp_t *
segkp_create(kas_t *kas, segkp_placement_t placement, void *base,
    size_t size)
{
	segkp_t *seg;
	size_t ps;

	if (kas == NULL) {
		config_fail(NULL, "no address space", (uintptr_t)base, size);
		return NULL;
	}
	pthread_once(&atfork_once, register_atfork);
	seg = calloc(1, sizeof (*seg));
	if (seg == NULL)
		return NULL;
	ps = kas_pagesize(kas);
	seg->magic = SEGKP_MAGIC;
	seg->kas = kas;
	seg->heap = kas_heap_arena(kas);
	seg->backing = kas_backing(kas);
	seg->pagesize = ps;
	seg->pshift = log2_exact(ps);
	seg->placement = placement;
	for (int i = 0; i < SEGKP_MAX_CACHES; i++)
		seg->slots[i] = -1;
	plat_mutex_init(&seg->lock);
	if (!place(seg, placement, base, size)) {
		seg->magic = 0;
		plat_mutex_destroy(&seg->lock);
		free(seg);
		return NULL;
	}
	if (placement == SEGKP_FIXED)
		seg->arena = vmem_create("segkp", (void *)seg->fixed_base,
		    seg->fixed_size, ps, NULL, NULL, NULL, QCACHE_PAGES * ps,
		    VM_SLEEP);
	else
		seg->arena = vmem_create("segkp", NULL, 0, ps, vmem_alloc,
		    vmem_free, seg->heap, QCACHE_PAGES * ps, VM_SLEEP);
	if (seg->arena == NULL || !make_maps(seg)) {
		create_undo(seg);
		return NULL;
	}
	/* The kas as private pointer: kas_of_arena finds it for a fixed
	 * segment too, which has no source to follow. */
	kas_arena_adopt(kas, seg->arena);
	if (!segs_join(seg)) {
		/* The address space's classifier table is full (reported). */
		kas_arena_forget(kas, seg->arena);
		create_undo(seg);
		return NULL;
	}
	return seg;
}

void
segkp_destroy(segkp_t *seg)
{
	size_t inuse;

	if (!seg_valid(seg)) {
		vmem_error_report(VMEM_E_BADARG, 0, "segkp_destroy", NULL,
		    "segkp", (uintptr_t)seg, 0, "not a segkp segment");
		return;
	}
	for (int i = 0; i < SEGKP_MAX_CACHES; i++) {
		int slot = seg->slots[i];

		if (slot >= 0)
			segkp_cache_destroy((void *)cookie_make(slot,
			    atomic_load(&cache_slots[slot].gen)));
	}
	segs_leave(seg);
	inuse = seg->st_inuse;
	if (inuse != 0)
		vmem_error_report(SEGKP_E_BUSY, 1, "segkp_destroy", seg->arena,
		    "segkp", 0, inuse, "%lu allocations still in use: freed",
		    (unsigned long)inuse);
	for (size_t h = 0; h < seg->hash_size; h++) {
		kp_rec_t *r;

		while ((r = seg->hash[h]) != NULL) {
			rec_remove(seg, r);
			rec_destroy(seg, r);
		}
	}
	kas_arena_forget(seg->kas, seg->arena);
	vmem_destroy(seg->arena);
	if (seg->fixed_from_heap)
		vmem_xfree(seg->heap, (void *)seg->fixed_base, seg->fixed_size);
	seg_free_memory(seg);
}

/* ------------------------------------------------------------------ */
/* Accessors and statistics. */

kas_t *segkp_kas(const segkp_t *seg) { return seg->kas; }
vmem_t *segkp_arena(const segkp_t *seg) { return seg->arena; }
segkp_placement_t segkp_placement(const segkp_t *seg) { return seg->placement; }
size_t segkp_pagesize(const segkp_t *seg) { return seg->pagesize; }

void
segkp_get_stats(segkp_t *seg, segkp_stats_t *st)
{
	memset(st, 0, sizeof (*st));
	if (!seg_valid(seg))
		return;
	plat_mutex_lock(&seg->lock);
	st->placement = seg->placement;
	st->backing = seg->backing;
	st->pagesize = seg->pagesize;
	st->gets = seg->st_gets;
	st->releases = seg->st_releases;
	st->get_fail = seg->st_get_fail;
	st->cache_hits = seg->st_hits;
	st->cache_misses = seg->st_misses;
	st->cache_puts = seg->st_puts;
	st->cache_full = seg->st_full;
	st->reaped_pages = seg->st_reaped;
	st->lock_fail = seg->st_lock_fail;
	st->inuse = seg->st_inuse;
	st->cached = seg->st_cached;
	st->pages_committed = seg->st_committed;
	st->pages_locked = seg->st_locked;
	st->redzone_pages = seg->st_redzone;
	st->va_allocated = seg->st_va;
	st->fixed_size = seg->fixed_size;
	st->meta_bytes = seg->meta_bytes;
	st->vmas = seg->backing == KAS_REAL ? 2 * seg->st_resident_allocs : 0;
	plat_mutex_unlock(&seg->lock);
	st->va_held = seg->placement == SEGKP_FIXED ? seg->fixed_size :
	    vmem_size(seg->arena, VMEM_SPAN);
	st->max_map_count = read_max_map_count();
	st->guarded_ceiling = st->max_map_count / 2;
}

void
segkp_print_stats(segkp_t *seg, void *stdio_file)
{
	FILE *f = stdio_file != NULL ? stdio_file : stdout;
	segkp_stats_t st;

	segkp_get_stats(seg, &st);
	fprintf(f, "segkp (%s, %s backing)\n",
	    st.placement == SEGKP_FIXED ? "fixed" : "fromheap",
	    st.backing == KAS_REAL ? "real" : "simulated");
	fprintf(f, "  gets %llu  releases %llu  failed %llu  lock refused "
	    "%llu\n", (unsigned long long)st.gets,
	    (unsigned long long)st.releases, (unsigned long long)st.get_fail,
	    (unsigned long long)st.lock_fail);
	fprintf(f, "  cache hits %llu  misses %llu  puts %llu  full %llu  "
	    "reaped pages %llu\n", (unsigned long long)st.cache_hits,
	    (unsigned long long)st.cache_misses,
	    (unsigned long long)st.cache_puts,
	    (unsigned long long)st.cache_full,
	    (unsigned long long)st.reaped_pages);
	fprintf(f, "  in use %lu  cached %lu  pages committed %lu  locked %lu"
	    "  redzone pages %lu\n", (unsigned long)st.inuse,
	    (unsigned long)st.cached, (unsigned long)st.pages_committed,
	    (unsigned long)st.pages_locked, (unsigned long)st.redzone_pages);
	fprintf(f, "  address space: allocated %lu KiB  held %lu KiB%s  "
	    "metadata %lu bytes\n", (unsigned long)(st.va_allocated >> 10),
	    (unsigned long)(st.va_held >> 10),
	    st.placement == SEGKP_FIXED ? " (the fixed range)" :
	    " (imported from heap_arena)", (unsigned long)st.meta_bytes);
	fprintf(f, "  mappings (VMAs) %lu  vm.max_map_count %lu  guarded "
	    "stacks under it %lu\n", (unsigned long)st.vmas,
	    (unsigned long)st.max_map_count,
	    (unsigned long)st.guarded_ceiling);
}

long
segkp_count_vmas(segkp_t *seg)
{
	uintptr_t lo, hi;
	FILE *f;
	char line[512];
	long n = 0;

	if (!seg_valid(seg) || seg->backing != KAS_REAL)
		return -1;
	lo = seg->map_base;
	hi = lo + (seg->map_pages << seg->pshift);
	f = fopen("/proc/self/maps", "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof (line), f) != NULL) {
		unsigned long a, b;

		if (sscanf(line, "%lx-%lx", &a, &b) == 2 && a < hi && lo < b)
			n++;
	}
	fclose(f);
	return n;
}
