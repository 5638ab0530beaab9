/*
 * segkmem: the kernel address space object (kas_t) and its page backing.
 *
 * Problem. The illumos kernel has one address space with a heap_arena,
 * kmem_va, kmem_default and a global page budget. A library that runs
 * several simulated kernels side by side needs all of that as an object,
 * with pages that are either real (mmap'd host memory whose residency
 * follows use) or simulated (integers on a 32-bit layout, only counted).
 *
 * Data structure. A kas holds the range [base, base + size), four arenas
 * (heap_arena -> kmem_va -> kmem_default, and heap_arena -> kmem_metadata),
 * two page bitmaps over the range (committed, locked), the page budget
 * (physmem, availrmem, a condition variable for VM_SLEEP reservations),
 * metadata byte counters per kind with the list of heap pages charged for
 * each kind, a table of the arenas that belong to it, fault classifiers and
 * fixed regions. A global list of live kas objects lets kas_of_arena trust
 * an arena's private pointer only if it names a live kas.
 *
 * Invariants. A page's committed bit is set iff it is read-write on the
 * host (real) / counted as backed (sim); pages_committed is the number of
 * set bits. availrmem + reserved == physmem. With charging on and settled,
 * meta_pages[k] == ceil(meta_bytes[k] / pagesize) for every kind, and those
 * pages are allocated from kmem_metadata, so heap_arena really lacks them.
 *
 * Locking. page_lock guards the bitmaps (host syscalls run outside it: the
 * caller owns the range). resv_lock guards the budget. reg_lock guards the
 * arena, classifier and region tables; classifiers and vmem calls are made
 * without it. Metadata counters are atomics, so vmem's charge callback may
 * run under an arena lock. settle_lock serializes settling and is only ever
 * taken with trylock: settling allocates from kmem_metadata, whose import
 * (segkmem_alloc) tries to settle again and simply skips. The loop re-checks
 * after unlocking so a charge that raced with a settler is not left behind.
 * No lock of this file is held while reporting an error.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <vmem/segkmem.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"
#include "kmem_impl.h"
#include "qcache.h"
#include "fault.h"
#include "hg.h"
#include "platform.h"
#include "segkmem_impl.h"
#include "vmem_impl.h"

#include <vmem/kmem.h>

#if defined(__GNUC__)
#define SEGKMEM_NOINLINE __attribute__((noinline))
#else
#define SEGKMEM_NOINLINE
#endif

#define KAS_MAX_REGIONS 16
#define KAS_DEFAULT_SIZE ((size_t)1 << 30)
#define KAS_DEFAULT_SIM_BASE ((uintptr_t)0xC0000000u)
#define KAS_SIM_PAGESIZE 4096

typedef struct kas_region {
	char name[KAS_NAMELEN];
	uintptr_t start, end;
} kas_region_t;

typedef struct kas_classifier_entry {
	kas_classifier_t *fn;
	void *arg;
} kas_classifier_entry_t;

/* The heap pages charged for one kind of metadata (a stack of addresses). */
typedef struct kas_meta_pages {
	void **page;
	size_t count, cap;
} kas_meta_pages_t;

struct kas {
	char name[KAS_NAMELEN];
	kas_backing_t backing;
	uintptr_t base;
	size_t size;
	size_t pagesize;
	unsigned pageshift;
	void *map_addr;       /* real: the host mapping (may start below base) */
	size_t map_size;
	int charge_metadata;

	vmem_t *heap_arena, *kmem_va, *kmem_default, *kmem_metadata;
	struct kmem_heap *heap;
	void *boot_addr;
	size_t boot_size;

	plat_mutex_t page_lock;
	uint64_t *committed_map, *locked_map;
	size_t npages, ncommitted, nlocked;
	atomic_ulong commit_fail, lock_fail;

	plat_mutex_t resv_lock;
	plat_cond_t resv_cv;
	size_t physmem, availrmem;
	uint64_t resv_fail, resv_wait;
	unsigned resv_sleepers;  /* threads waiting on resv_cv */
	/* The reclaimer's (reclaim_lock): asked for, at work, going away. */
	bool reclaim_wanted, reclaim_dying;
	unsigned reclaim_busy;
	kas_t *reclaim_next;     /* on the reclaimer's queue */

	atomic_long meta_bytes[KAS_META_NKINDS];
	/* Bumped by every charge; settle() skips work when it has not moved. */
	atomic_ulong meta_version;
	unsigned long meta_settled_version;
	plat_mutex_t settle_lock;
	kas_meta_pages_t meta[KAS_META_NKINDS];
	atomic_size_t meta_pages_now[KAS_META_NKINDS];

	plat_mutex_t reg_lock;
	/*
	 * Classify calls run with reg_lock dropped: the classifiers from a
	 * copy of the table, then the walk of the arena that holds the
	 * address. An unregister must not return while a call that copied
	 * the old table runs (the caller may free arg next), nor may
	 * kas_arena_forget while a call may still walk the arena (the
	 * caller destroys it next): calls count themselves in the epoch
	 * they started in, and both flip the epoch and wait for the old
	 * one to drain. New calls enter the new epoch, so a stream of them
	 * cannot starve a flip; one flip at a time.
	 */
	plat_cond_t reg_cv;
	unsigned classify_epoch;         /* 0 or 1 */
	unsigned classifying[2];         /* calls in flight per epoch */
	bool unregistering;
	vmem_t **arenas;
	size_t narenas, arenas_cap;
	kas_classifier_entry_t classifiers[KAS_MAX_CLASSIFIERS];
	size_t nclassifiers;
	kas_region_t regions[KAS_MAX_REGIONS];
	size_t nregions;

	atomic_ulong faults;
	atomic_ulong faults_by_kind[KAS_FAULT_NKINDS];

	kas_t *next_live;
};

/* ---------------------------------------------------------------- */
/* The list of live address spaces.                                  */

/*
 * Lookups (kas_of_arena, also from inside settle_lock) read the list under
 * live_lock. Changes also hold live_change_lock, which lets the fork
 * handlers walk the list and take every kas' settle_lock before live_lock,
 * in the same order as a settling thread.
 *
 * live_lock is a plain mutex, not a reader-writer lock: a lookup walks a
 * list of a few entries, so readers gain nothing from sharing, and a mutex
 * taken before fork() can simply be unlocked in the child. (A write-locked
 * glibc rwlock remembers its writer's thread id, which the child does not
 * have, so it had to be overwritten with a fresh one, and ThreadSanitizer
 * then believed it was still held and reported a lock-order cycle.)
 */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t live_change_lock = PTHREAD_MUTEX_INITIALIZER;
static kas_t *live_list;

static void
live_insert(kas_t *kas)
{
	pthread_mutex_lock(&live_change_lock);
	pthread_mutex_lock(&live_lock);
	kas->next_live = live_list;
	live_list = kas;
	pthread_mutex_unlock(&live_lock);
	pthread_mutex_unlock(&live_change_lock);
}

static void
live_remove(kas_t *kas)
{
	kas_t **pp;

	pthread_mutex_lock(&live_change_lock);
	pthread_mutex_lock(&live_lock);
	for (pp = &live_list; *pp != NULL; pp = &(*pp)->next_live) {
		if (*pp == kas) {
			*pp = kas->next_live;
			break;
		}
	}
	pthread_mutex_unlock(&live_lock);
	pthread_mutex_unlock(&live_change_lock);
}

static int
live_contains(const void *p)
{
	const kas_t *k;
	int found = 0;

	pthread_mutex_lock(&live_lock);
	for (k = live_list; k != NULL && !found; k = k->next_live)
		found = (k == p);
	pthread_mutex_unlock(&live_lock);
	return found;
}

kas_t *
kas_of_arena(const vmem_t *vmp)
{
	int depth;

	/* Bounded: a cycle of sources cannot exist, but be defensive. */
	for (depth = 0; vmp != NULL && depth < 64; depth++) {
		void *priv = vmem_get_private(vmp);

		if (priv != NULL && live_contains(priv))
			return priv;
		vmp = vmem_source(vmp);
	}
	return NULL;
}

/* ---------------------------------------------------------------- */
/* Configuration.                                                    */

static size_t
host_pagesize(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

void
kas_config_init(kas_config_t *cfg)
{
	memset(cfg, 0, sizeof (*cfg));
	cfg->backing = KAS_REAL;
	cfg->name = "kas";
	cfg->size = KAS_DEFAULT_SIZE;
	cfg->sim_base = KAS_DEFAULT_SIM_BASE;
	cfg->charge_metadata = -1;
	cfg->kmem_va_qcache_pages = 8;
	cfg->create_kmem_heap = 1;
}

static int
is_pow2(size_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

static size_t
config_pagesize(const kas_config_t *cfg)
{
	if (cfg->pagesize != 0)
		return cfg->pagesize;
	return cfg->backing == KAS_SIM ? KAS_SIM_PAGESIZE : host_pagesize();
}

/* Returns NULL if cfg is valid, else what is wrong with it. */
static const char *
config_problem(const kas_config_t *cfg)
{
	size_t ps = config_pagesize(cfg);
	size_t i, prev_end = 0;

	if (cfg->backing != KAS_REAL && cfg->backing != KAS_SIM)
		return "unknown backing";
	if (!is_pow2(ps) || ps < 512)
		return "pagesize must be a power of two >= 512";
	if (cfg->backing == KAS_REAL && ps % host_pagesize() != 0)
		return "pagesize must be a multiple of the host page size";
	if (cfg->size == 0 || cfg->size % ps != 0)
		return "size must be a nonzero multiple of the page size";
	if (cfg->backing == KAS_SIM) {
		if (cfg->sim_base == 0 || cfg->sim_base % ps != 0)
			return "sim_base must be nonzero and page-aligned";
		if (cfg->sim_base + cfg->size < cfg->sim_base ||
		    cfg->sim_base + cfg->size == 0)
			return "sim_base + size wraps around";
	}
	if (cfg->nheap_spans > KAS_MAX_SPANS)
		return "more than KAS_MAX_SPANS heap spans";
	for (i = 0; i < cfg->nheap_spans; i++) {
		const kas_span_t *sp = &cfg->heap_spans[i];

		if (sp->start % ps != 0 || sp->end % ps != 0 ||
		    sp->start >= sp->end || sp->end > cfg->size)
			return "heap span empty, unaligned or outside the range";
		if (i > 0 && sp->start < prev_end)
			return "heap spans must be sorted and disjoint";
		prev_end = sp->end;
	}
	if (cfg->heap_boot_pages != 0) {
		size_t first = cfg->nheap_spans == 0 ? cfg->size :
		    cfg->heap_spans[0].end - cfg->heap_spans[0].start;

		if (cfg->heap_boot_pages >= first / ps)
			return "heap_boot_pages leaves no heap";
	}
	if (cfg->kmem_va_qcache_pages > 64)
		return "kmem_va_qcache_pages above 64";
	if (cfg->charge_metadata < -1 || cfg->charge_metadata > 1)
		return "charge_metadata must be -1, 0 or 1";
	return NULL;
}

/* ---------------------------------------------------------------- */
/* Page bitmaps (page_lock held).                                    */

static int
bit_get(const uint64_t *map, size_t i)
{
	return (int)((map[i >> 6] >> (i & 63)) & 1);
}

/* The bits of word first / 64 in [first, first + n); *take gets how many. */
static inline uint64_t
word_mask(size_t first, size_t n, size_t *take)
{
	unsigned b = (unsigned)(first & 63);
	size_t t = 64 - b < n ? 64 - b : n;

	*take = t;
	return (t == 64 ? ~(uint64_t)0 : (((uint64_t)1 << t) - 1)) << b;
}

/* Set bits [first, first + n) to val, a word at a time; returns how many
 * changed (counted one by one: a stack changes two). */
static SEGKMEM_NOINLINE size_t
bits_set_words(uint64_t *map, size_t first, size_t n, int val)
{
	size_t changed = 0, take;

	while (n > 0) {
		uint64_t mask = word_mask(first, n, &take);
		uint64_t *w = &map[first >> 6];
		uint64_t flip = (val ? ~*w : *w) & mask;

		*w ^= flip;
		for (; flip != 0; flip &= flip - 1)
			changed++;
		first += take;
		n -= take;
	}
	return changed;
}

/* bits_set_words with the common case -- inside one word -- inline. */
static inline size_t
bits_set(uint64_t *map, size_t first, size_t n, int val)
{
	unsigned b = (unsigned)(first & 63);
	uint64_t *w, mask, flip;
	size_t changed = 0;

	if (b + n >= 64)
		return bits_set_words(map, first, n, val);
	w = &map[first >> 6];
	mask = (((uint64_t)1 << n) - 1) << b;
	flip = (val ? ~*w : *w) & mask;
	*w ^= flip;
	for (; flip != 0; flip &= flip - 1)
		changed++;
	return changed;
}

static int
bits_all(const uint64_t *map, size_t first, size_t n)
{
	size_t take;

	while (n > 0) {
		uint64_t mask = word_mask(first, n, &take);

		if ((map[first >> 6] & mask) != mask)
			return 0;
		first += take;
		n -= take;
	}
	return 1;
}

/* ---------------------------------------------------------------- */
/* Range checks.                                                     */

static int
range_ok(const kas_t *kas, uintptr_t a, size_t size)
{
	/* The page size is a power of two (config_problem checks). */
	return size != 0 && ((a | size) & (kas->pagesize - 1)) == 0 &&
	    a >= kas->base &&
	    a - kas->base <= kas->size && size <= kas->size - (a - kas->base);
}

/* Report why [addr, addr + size) is refused; returns 0. */
static SEGKMEM_NOINLINE int
range_refused(const kas_t *kas, const char *call, const void *addr,
    size_t size)
{
	if (kas == NULL) {
		vmem_error_report(SEGKMEM_E_NOTKAS, 0, call, NULL, "?",
		    (uintptr_t)addr, size, "no address space");
		return 0;
	}
	vmem_error_report(SEGKMEM_E_BADRANGE, 0, call, NULL, kas->name,
	    (uintptr_t)addr, size, "range is empty, not page-aligned "
	    "or outside [0x%lx, 0x%lx)", (unsigned long)kas->base,
	    (unsigned long)(kas->base + kas->size));
	return 0;
}

static inline int
check_range(const kas_t *kas, const char *call, const void *addr,
    size_t size)
{
	if (kas != NULL && range_ok(kas, (uintptr_t)addr, size))
		return 1;
	return range_refused(kas, call, addr, size);
}

static size_t
page_index(const kas_t *kas, uintptr_t a)
{
	return (a - kas->base) >> kas->pageshift;
}

/* ---------------------------------------------------------------- */
/* Host operations (real backing; the caller owns the range).        */

static int
host_commit(void *addr, size_t size)
{
	return mprotect(addr, size, PROT_READ | PROT_WRITE);
}

/* One mapping over the range: discards pages and drops mlock. */
static int
host_decommit(void *addr, size_t size)
{
	void *p = mmap(addr, size, PROT_NONE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? -1 : 0;
}

/*
 * Decommit the pages of [first, first + n) whose bit in was (a snapshot
 * indexed from 0) is clear: the undo of a failed commit, which must leave
 * previously committed pages alone.
 */
static void
undo_new_commits(kas_t *kas, size_t first, size_t n, const uint64_t *was)
{
	size_t i = 0;

	while (i < n) {
		size_t run = 0;

		if (bit_get(was, i)) {
			i++;
			continue;
		}
		while (i + run < n && !bit_get(was, i + run))
			run++;
		if (kas->backing == KAS_REAL)
			(void)host_decommit((void *)(kas->base +
			    ((first + i) << kas->pageshift)),
			    run << kas->pageshift);
		plat_mutex_lock(&kas->page_lock);
		kas->ncommitted -= bits_set(kas->committed_map, first + i,
		    run, 0);
		kas->nlocked -= bits_set(kas->locked_map, first + i, run, 0);
		plat_mutex_unlock(&kas->page_lock);
		i += run;
	}
}

static uint64_t *
snapshot_bits(kas_t *kas, const uint64_t *map, size_t first, size_t n)
{
	uint64_t *snap = calloc((n + 63) / 64, sizeof (uint64_t));
	size_t i;

	if (snap == NULL)
		return NULL;
	plat_mutex_lock(&kas->page_lock);
	for (i = 0; i < n; i++)
		if (bit_get(map, first + i))
			snap[i >> 6] |= (uint64_t)1 << (i & 63);
	plat_mutex_unlock(&kas->page_lock);
	return snap;
}

/* After a failed host lock: unlock what was not locked before. */
static void
undo_new_locks(kas_t *kas, size_t first, size_t n, const uint64_t *was)
{
	size_t i = 0;

	while (i < n) {
		size_t run = 0;

		while (i + run < n && !bit_get(was, i + run))
			run++;
		if (run > 0 && kas->backing == KAS_REAL)
			(void)munlock((void *)(kas->base +
			    ((first + i) << kas->pageshift)),
			    run << kas->pageshift);
		i += run + 1;
	}
}

/* The host refused: put back the state before the call and fail. */
static int
commit_failed(kas_t *kas, size_t first, size_t n, int lock_failed)
{
	uint64_t *was_committed = snapshot_bits(kas, kas->committed_map,
	    first, n);
	uint64_t *was_locked = snapshot_bits(kas, kas->locked_map, first, n);

	if (was_committed != NULL && was_locked != NULL) {
		if (lock_failed)
			undo_new_locks(kas, first, n, was_locked);
		undo_new_commits(kas, first, n, was_committed);
	}
	free(was_committed);
	free(was_locked);
	if (lock_failed)
		atomic_fetch_add(&kas->lock_fail, 1);
	else
		atomic_fetch_add(&kas->commit_fail, 1);
	return -1;
}

int
kas_pages_commit(kas_t *kas, void *addr, size_t size, int flags)
{
	size_t first, n;

	if (!check_range(kas, "kas_pages_commit", addr, size))
		return -1;
	first = page_index(kas, (uintptr_t)addr);
	n = size >> kas->pageshift;
	if (fault_point(FAULT_COMMIT) ||
	    (kas->backing == KAS_REAL && host_commit(addr, size) != 0))
		return commit_failed(kas, first, n, 0);
	if ((flags & KAS_COMMIT_LOCK) && (fault_point(FAULT_MLOCK) ||
	    (kas->backing == KAS_REAL && mlock(addr, size) != 0)))
		return commit_failed(kas, first, n, 1);
	plat_mutex_lock(&kas->page_lock);
	kas->ncommitted += bits_set(kas->committed_map, first, n, 1);
	if (flags & KAS_COMMIT_LOCK)
		kas->nlocked += bits_set(kas->locked_map, first, n, 1);
	plat_mutex_unlock(&kas->page_lock);
	return 0;
}

/* Real backing: discard the pages (out of line: the simulated path stays
 * small). */
static SEGKMEM_NOINLINE void
host_decommit_range(kas_t *kas, void *addr, size_t size)
{
	if (host_decommit(addr, size) != 0) {
		/* Too many mappings to split one more: discard in place. */
		atomic_fetch_add(&kas->commit_fail, 1);
		(void)munlock(addr, size);
		(void)madvise(addr, size, MADV_DONTNEED);
		(void)mprotect(addr, size, PROT_NONE);
	}
}

static void
decommit_range(kas_t *kas, void *addr, size_t size)
{
	size_t first = page_index(kas, (uintptr_t)addr);
	size_t n = size >> kas->pageshift;

	if (kas->backing == KAS_REAL)
		host_decommit_range(kas, addr, size);
	plat_mutex_lock(&kas->page_lock);
	kas->ncommitted -= bits_set(kas->committed_map, first, n, 0);
	kas->nlocked -= bits_set(kas->locked_map, first, n, 0);
	plat_mutex_unlock(&kas->page_lock);
}

void
kas_pages_decommit(kas_t *kas, void *addr, size_t size)
{
	if (check_range(kas, "kas_pages_decommit", addr, size))
		decommit_range(kas, addr, size);
}

int
kas_pages_lock(kas_t *kas, void *addr, size_t size)
{
	size_t first, n;

	if (!check_range(kas, "kas_pages_lock", addr, size))
		return -1;
	first = page_index(kas, (uintptr_t)addr);
	n = size >> kas->pageshift;
	if (fault_point(FAULT_MLOCK) ||
	    (kas->backing == KAS_REAL && mlock(addr, size) != 0)) {
		uint64_t *was = snapshot_bits(kas, kas->locked_map, first, n);

		if (was != NULL)
			undo_new_locks(kas, first, n, was);
		free(was);
		atomic_fetch_add(&kas->lock_fail, 1);
		return -1;
	}
	plat_mutex_lock(&kas->page_lock);
	kas->nlocked += bits_set(kas->locked_map, first, n, 1);
	plat_mutex_unlock(&kas->page_lock);
	return 0;
}

void
kas_pages_unlock(kas_t *kas, void *addr, size_t size)
{
	size_t first, n;

	if (!check_range(kas, "kas_pages_unlock", addr, size))
		return;
	first = page_index(kas, (uintptr_t)addr);
	n = size >> kas->pageshift;
	if (kas->backing == KAS_REAL)
		(void)munlock(addr, size);
	plat_mutex_lock(&kas->page_lock);
	kas->nlocked -= bits_set(kas->locked_map, first, n, 0);
	plat_mutex_unlock(&kas->page_lock);
}

int
kas_page_is_committed(kas_t *kas, const void *addr)
{
	uintptr_t a = (uintptr_t)addr;
	int c;

	if (kas == NULL || a < kas->base || a - kas->base >= kas->size)
		return 0;
	plat_mutex_lock(&kas->page_lock);
	c = bit_get(kas->committed_map, page_index(kas, a));
	plat_mutex_unlock(&kas->page_lock);
	return c;
}

static int
range_committed(kas_t *kas, uintptr_t a, size_t size)
{
	int all;

	plat_mutex_lock(&kas->page_lock);
	all = bits_all(kas->committed_map, page_index(kas, a),
	    size >> kas->pageshift);
	plat_mutex_unlock(&kas->page_lock);
	return all;
}

/* ---------------------------------------------------------------- */
/* The page budget.                                                  */

/* segkp's: free the cached stacks of kas's segments (reclaim_lock). */
static void (*kas_stack_reclaim_hook)(kas_t *kas);

static void
purge_cache_in_kas(kmem_cache_t *cp, void *kas)
{
	if (kas_of_arena(kmem_cache_arena(cp)) == kas)
		kmem_cache_pressure_purge(cp);
}

/*
 * Before a reservation sleeps, the pages that caches hold idle in this
 * address space are taken back: every magazine and free slab of its object
 * caches and quantum caches, and the pages of its cached stacks. illumos'
 * page_resv starts kmem_reap between its naps, and the 15-second kmem
 * update makes every cached magazine idle soon enough; a library has no
 * such clock, so without this a KM_SLEEP caller could sleep for ever
 * beside free pages another cache holds.
 *
 * The work runs on a thread of its own, as illumos' reap runs on a taskq:
 * purging runs destructors and release functions, and the sleeping
 * caller may hold a lock one of them takes. A sleeper queues its kas and
 * waits on resv_cv as before; the frees wake it.
 */
static pthread_mutex_t reclaim_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reclaim_cv = PTHREAD_COND_INITIALIZER;
static kas_t *reclaim_queue;
static bool reclaimer_started;

static void
kas_reclaim(kas_t *kas)
{
	void (*stacks)(kas_t *);

	kmem_foreach_cache(purge_cache_in_kas, kas);
	pthread_mutex_lock(&reclaim_lock);
	stacks = kas_stack_reclaim_hook;
	pthread_mutex_unlock(&reclaim_lock);
	if (stacks != NULL)
		stacks(kas);
}

/* Next queued kas, marked busy (reclaim_lock held); waits for one. */
static kas_t *
reclaim_next_locked(void)
{
	kas_t *kas;

	while (reclaim_queue == NULL)
		pthread_cond_wait(&reclaim_cv, &reclaim_lock);
	kas = reclaim_queue;
	reclaim_queue = kas->reclaim_next;
	kas->reclaim_wanted = false;
	kas->reclaim_busy++;
	return kas;
}

static void *
reclaimer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&reclaim_lock);
	for (;;) {
		kas_t *kas = reclaim_next_locked();

		pthread_mutex_unlock(&reclaim_lock);
		kas_reclaim(kas);
		pthread_mutex_lock(&reclaim_lock);
		kas->reclaim_busy--;
		pthread_cond_broadcast(&reclaim_cv);
	}
	return NULL;
}

/* Queue kas for the reclaimer (starting it on first use). */
static void
reclaim_request(kas_t *kas)
{
	pthread_mutex_lock(&reclaim_lock);
	if (!kas->reclaim_wanted && !kas->reclaim_dying) {
		kas->reclaim_wanted = true;
		kas->reclaim_next = reclaim_queue;
		reclaim_queue = kas;
	}
	if (!reclaimer_started) {
		pthread_attr_t attr;
		pthread_t tid;

		(void)pthread_attr_init(&attr);
		(void)pthread_attr_setdetachstate(&attr,
		    PTHREAD_CREATE_DETACHED);
		reclaimer_started = pthread_create(&tid, &attr, reclaimer_main,
		    NULL) == 0;
		(void)pthread_attr_destroy(&attr);
	}
	pthread_cond_broadcast(&reclaim_cv);
	pthread_mutex_unlock(&reclaim_lock);
}

/* kas is going away: off the queue, and the reclaimer done with it. */
static void
reclaim_quiesce(kas_t *kas)
{
	pthread_mutex_lock(&reclaim_lock);
	kas->reclaim_dying = true;
	for (kas_t **pp = &reclaim_queue; *pp != NULL;
	    pp = &(*pp)->reclaim_next)
		if (*pp == kas) {
			*pp = kas->reclaim_next;
			break;
		}
	while (kas->reclaim_busy != 0)
		pthread_cond_wait(&reclaim_cv, &reclaim_lock);
	pthread_mutex_unlock(&reclaim_lock);
}

static void
reap_cache_in_kas(kmem_cache_t *cp, void *kas)
{
	if (kas_of_arena(kmem_cache_arena(cp)) == kas)
		kmem_cache_reap_idle(cp);
}

static void
update_cache_in_kas(kmem_cache_t *cp, void *kas)
{
	if (kas_of_arena(kmem_cache_arena(cp)) == kas)
		kmem_cache_update(cp);
}

void
kas_kmem_reap(kas_t *kas)
{
	if (kas != NULL)
		kmem_foreach_cache(reap_cache_in_kas, kas);
}

void
kas_kmem_update(kas_t *kas)
{
	if (kas != NULL)
		kmem_foreach_cache(update_cache_in_kas, kas);
}

void
kas_set_stack_reclaim(void (*fn)(kas_t *kas))
{
	pthread_mutex_lock(&reclaim_lock);
	kas_stack_reclaim_hook = fn;
	pthread_mutex_unlock(&reclaim_lock);
}

int
kas_page_resv(kas_t *kas, size_t npages, int vmflag)
{
	int ok = 1, injected;

	if (kas == NULL) {
		vmem_error_report(SEGKMEM_E_NOTKAS, 0, "kas_page_resv", NULL,
		    "?", 0, npages, "no address space");
		return 0;
	}
	injected = fault_point(FAULT_RESV);
	plat_mutex_lock(&kas->resv_lock);
	if (npages > kas->physmem || injected) {
		ok = 0;
	} else {
		while (kas->availrmem < npages) {
			if (vmflag & VM_NOSLEEP) {
				ok = 0;
				break;
			}
			reclaim_request(kas);
			kas->resv_wait++;
			kas->resv_sleepers++;
			/* Woken by an unreserve (the sequence condition loses
			 * no wake-up); the time limit is only a backstop and
			 * spurious wake-ups loop. */
			plat_cond_timedwait(&kas->resv_cv, &kas->resv_lock,
			    10000);
			kas->resv_sleepers--;
		}
	}
	if (ok)
		kas->availrmem -= npages;
	else
		kas->resv_fail++;
	plat_mutex_unlock(&kas->resv_lock);
	return ok;
}

void
kas_page_unresv(kas_t *kas, size_t npages)
{
	int bad;

	if (kas == NULL) {
		vmem_error_report(SEGKMEM_E_NOTKAS, 0, "kas_page_unresv", NULL,
		    "?", 0, npages, "no address space");
		return;
	}
	plat_mutex_lock(&kas->resv_lock);
	bad = npages > kas->physmem - kas->availrmem;
	if (!bad) {
		kas->availrmem += npages;
		/* A broadcast is a system call: only for sleepers. */
		if (kas->resv_sleepers != 0)
			plat_cond_broadcast(&kas->resv_cv);
	}
	plat_mutex_unlock(&kas->resv_lock);
	if (bad)
		vmem_error_report(SEGKMEM_E_UNRESV, 0, "kas_page_unresv", NULL,
		    kas->name, 0, npages, "unreserving %lu pages, only %lu "
		    "reserved", (unsigned long)npages,
		    (unsigned long)(kas->physmem - kas->availrmem));
}

size_t
kas_physmem(const kas_t *kas)
{
	return kas->physmem;
}

size_t
kas_availrmem(kas_t *kas)
{
	size_t a;

	plat_mutex_lock(&kas->resv_lock);
	a = kas->availrmem;
	plat_mutex_unlock(&kas->resv_lock);
	return a;
}

/* ---------------------------------------------------------------- */
/* Metadata charging.                                                */

static const char *const meta_kind_names[KAS_META_NKINDS] = {
	"tags", "kmem", "segkp", "other"
};

void
kas_charge_metadata(kas_t *kas, kas_meta_kind_t kind, long delta_bytes)
{
	if (kas == NULL || (unsigned)kind >= KAS_META_NKINDS)
		return;
	long old = atomic_fetch_add(&kas->meta_bytes[kind], delta_bytes);
	long now = old + delta_bytes;
	long page = (long)kas->pagesize;
	int moved;

	/* Only a change in whole pages needed gives settle() work. The page
	 * size is a power of two: shifts when no count is negative. */
	if (old >= 0 && now >= 0)
		moved = (((unsigned long)old + (unsigned long)page - 1) >>
		    kas->pageshift) != (((unsigned long)now +
		    (unsigned long)page - 1) >> kas->pageshift);
	else
		moved = (old + page - 1) / page != (now + page - 1) / page;
	if (moved)
		atomic_fetch_add_explicit(&kas->meta_version, 1,
		    memory_order_release);
}

void
kas_charge_tags_cb(void *kas, long delta_bytes)
{
	kas_charge_metadata(kas, KAS_META_TAGS, delta_bytes);
}

void
kas_charge_kmem_cb(void *kas, long delta_bytes)
{
	kas_charge_metadata(kas, KAS_META_KMEM, delta_bytes);
}

static size_t
meta_pages_needed(const kas_t *kas, kas_meta_kind_t kind)
{
	long bytes = atomic_load(&kas->meta_bytes[kind]);

	if (bytes <= 0)
		return 0;
	return ((size_t)bytes + kas->pagesize - 1) >> kas->pageshift;
}

static int
meta_push(kas_meta_pages_t *mp, void *page)
{
	if (mp->count == mp->cap) {
		size_t ncap = mp->cap == 0 ? 64 : mp->cap * 2;
		void **np = realloc(mp->page, ncap * sizeof (void *));

		if (np == NULL)
			return -1;
		mp->page = np;
		mp->cap = ncap;
	}
	mp->page[mp->count++] = page;
	return 0;
}

/*
 * Bring one kind's charged pages to what its bytes need (settle_lock
 * held). Returns 0 when balanced, -1 when the heap could not give a page.
 */
static int
settle_kind(kas_t *kas, kas_meta_kind_t kind)
{
	kas_meta_pages_t *mp = &kas->meta[kind];
	size_t need;

	while ((need = meta_pages_needed(kas, kind)) != mp->count) {
		if (mp->count < need) {
			void *p = vmem_alloc(kas->kmem_metadata, kas->pagesize,
			    VM_NOSLEEP);

			if (p == NULL)
				return -1;
			if (meta_push(mp, p) != 0) {
				vmem_free(kas->kmem_metadata, p, kas->pagesize);
				return -1;
			}
		} else {
			vmem_free(kas->kmem_metadata, mp->page[--mp->count],
			    kas->pagesize);
		}
		atomic_store(&kas->meta_pages_now[kind], mp->count);
	}
	return 0;
}

static int
meta_balanced(kas_t *kas)
{
	int k;

	for (k = 0; k < KAS_META_NKINDS; k++)
		if (meta_pages_needed(kas, k) !=
		    atomic_load(&kas->meta_pages_now[k]))
			return 0;
	return 1;
}

/* The slow part of settle(): balance every kind under settle_lock. Kept
 * out of line so the fast check inlines into every caller. */
static SEGKMEM_NOINLINE void
settle_locked_loop(kas_t *kas)
{
	for (;;) {
		int stuck = 0, k;
		unsigned long version;

		if (plat_mutex_trylock(&kas->settle_lock) != 0)
			return;
		version = atomic_load_explicit(&kas->meta_version,
		    memory_order_acquire);
		for (k = 0; k < KAS_META_NKINDS; k++)
			if (settle_kind(kas, k) != 0)
				stuck = 1;
		if (!stuck)
			__atomic_store_n(&kas->meta_settled_version, version,
			    __ATOMIC_RELAXED);
		plat_mutex_unlock(&kas->settle_lock);
		if (stuck || meta_balanced(kas))
			return;
	}
}

/* Called after every kvsim operation: the common case is a few loads. */
static inline void
settle(kas_t *kas)
{
	if (kas == NULL)
		return;
	/* The common case, checked first: nothing was charged since the
	 * last settle. */
	if (atomic_load_explicit(&kas->meta_version, memory_order_acquire) ==
	    __atomic_load_n(&kas->meta_settled_version, __ATOMIC_RELAXED))
		return;
	if (!kas->charge_metadata || kas->kmem_metadata == NULL)
		return;
	settle_locked_loop(kas);
}

void
kas_settle_metadata(kas_t *kas)
{
	settle(kas);
}

/* Give back every charged page (destroy; charging is off by then). */
static void
meta_release_all(kas_t *kas)
{
	int k;

	plat_mutex_lock(&kas->settle_lock);
	for (k = 0; k < KAS_META_NKINDS; k++) {
		kas_meta_pages_t *mp = &kas->meta[k];

		while (mp->count > 0)
			vmem_free(kas->kmem_metadata, mp->page[--mp->count],
			    kas->pagesize);
		free(mp->page);
		mp->page = NULL;
		mp->cap = 0;
		atomic_store(&kas->meta_pages_now[k], 0);
	}
	plat_mutex_unlock(&kas->settle_lock);
}

/* ---------------------------------------------------------------- */
/* Import and release.                                               */

void *
segkmem_alloc(vmem_t *vmp, size_t size, int vmflag)
{
	kas_t *kas = kas_of_arena(vmp);
	void *addr;
	size_t npages;

	if (kas == NULL) {
		vmem_error_report(SEGKMEM_E_NOTKAS, 0, "segkmem_alloc", vmp,
		    vmp != NULL ? vmem_name(vmp) : "?", 0, size,
		    "arena belongs to no kernel address space");
		return NULL;
	}
	if (size == 0 || size % kas->pagesize != 0) {
		vmem_error_report(SEGKMEM_E_BADRANGE, 0, "segkmem_alloc", vmp,
		    vmem_name(vmp), 0, size, "size is not a multiple of the "
		    "page size %lu", (unsigned long)kas->pagesize);
		return NULL;
	}
	addr = vmem_alloc(vmp, size, vmflag);
	if (addr == NULL)
		goto out;
	if (!range_ok(kas, (uintptr_t)addr, size)) {
		vmem_free(vmp, addr, size);
		vmem_error_report(SEGKMEM_E_BADRANGE, 0, "segkmem_alloc", vmp,
		    vmem_name(vmp), (uintptr_t)addr, size, "arena gave a "
		    "range that is unaligned or outside the address space");
		return NULL;
	}
	npages = size >> kas->pageshift;
	if (!kas_page_resv(kas, npages, vmflag)) {
		vmem_free(vmp, addr, size);
		addr = NULL;
		if (vmflag & VM_PANIC)
			vmem_error_report(VMEM_E_PANIC, 0, "segkmem_alloc",
			    vmp, vmem_name(vmp), 0, size, "out of pages "
			    "(availrmem %lu)",
			    (unsigned long)kas_availrmem(kas));
		goto out;
	}
	if (kas_pages_commit(kas, addr, size, 0) != 0) {
		kas_page_unresv(kas, npages);
		vmem_free(vmp, addr, size);
		addr = NULL;
	}
out:
	settle(kas);
	return addr;
}

void
segkmem_free(vmem_t *vmp, void *addr, size_t size)
{
	kas_t *kas = kas_of_arena(vmp);

	if (kas == NULL) {
		vmem_error_report(SEGKMEM_E_NOTKAS, 0, "segkmem_free", vmp,
		    vmp != NULL ? vmem_name(vmp) : "?", (uintptr_t)addr, size,
		    "arena belongs to no kernel address space");
		return;
	}
	if (!range_ok(kas, (uintptr_t)addr, size)) {
		vmem_error_report(SEGKMEM_E_BADRANGE, 0, "segkmem_free", vmp,
		    vmem_name(vmp), (uintptr_t)addr, size, "range is empty, "
		    "unaligned or outside the address space");
		return;
	}
	/*
	 * Everything segkmem_alloc hands out is committed; a range that is
	 * not was never allocated here or is already free. Refuse before
	 * discarding pages that may belong to someone else.
	 */
	if (!range_committed(kas, (uintptr_t)addr, size)) {
		vmem_error_report(VMEM_E_BADFREE, 0, "segkmem_free", vmp,
		    vmem_name(vmp), (uintptr_t)addr, size, "pages are not "
		    "committed: never allocated by segkmem_alloc, or freed "
		    "twice");
		return;
	}
	decommit_range(kas, addr, size);
	kas_page_unresv(kas, size >> kas->pageshift);
	vmem_free(vmp, addr, size);
	settle(kas);
}

/* ---------------------------------------------------------------- */
/* kmem caches born inside the address space.                        */

/*
 * kmem creates caches the kas never sees by name: the quantum caches of
 * an arena (made inside vmem_create) and the size classes of a kmem heap.
 * A kas call that creates those snapshots the cache list before and
 * charges every cache that appeared and whose arena belongs to this kas,
 * so their slab and cache bookkeeping lands on this heap. A cache another
 * thread creates meanwhile over an arena of no kas, or of another one, is
 * left alone: charged here, it wrote into this kas after kas_destroy.
 * Each cache is charged from inside the walk, where it is pinned: one
 * destroyed between the walk and the charge would be written to freed.
 */
typedef struct cache_set {
	void **v;
	size_t n, cap;
	int failed;
} cache_set_t;

static void
collect_cache(kmem_cache_t *cp, void *arg)
{
	cache_set_t *cs = arg;

	if (cs->n == cs->cap) {
		size_t ncap = cs->cap == 0 ? 64 : cs->cap * 2;
		void **nv = realloc(cs->v, ncap * sizeof (void *));

		if (nv == NULL) {
			cs->failed = 1;
			return;
		}
		cs->v = nv;
		cs->cap = ncap;
	}
	cs->v[cs->n++] = cp;
}

static void
caches_snapshot(cache_set_t *cs)
{
	memset(cs, 0, sizeof (*cs));
	kmem_foreach_cache(collect_cache, cs);
}

typedef struct charge_walk {
	kas_t *kas;
	const cache_set_t *before;
} charge_walk_t;

/* kmem_foreach_cache callback: cp is pinned while this runs. */
static void
charge_if_new(kmem_cache_t *cp, void *arg)
{
	const charge_walk_t *w = arg;
	size_t j;

	for (j = 0; j < w->before->n && w->before->v[j] != cp; j++)
		continue;
	if (j == w->before->n &&
	    kas_of_arena(kmem_cache_arena(cp)) == w->kas)
		kmem_cache_set_meta_charge(cp, kas_charge_kmem_cb, w->kas);
}

static void
charge_new_caches(kas_t *kas, cache_set_t *before)
{
	charge_walk_t w = { kas, before };

	if (!before->failed)
		kmem_foreach_cache(charge_if_new, &w);
	free(before->v);
	before->v = NULL;
}

/* ---------------------------------------------------------------- */
/* Arenas of the address space.                                      */

static int
arena_table_add(kas_t *kas, vmem_t *vmp)
{
	size_t i;
	int rc = 0;

	plat_mutex_lock(&kas->reg_lock);
	for (i = 0; i < kas->narenas; i++)
		if (kas->arenas[i] == vmp)
			goto out;
	if (kas->narenas == kas->arenas_cap) {
		size_t ncap = kas->arenas_cap == 0 ? 16 : kas->arenas_cap * 2;
		vmem_t **na = realloc(kas->arenas, ncap * sizeof (vmem_t *));

		if (na == NULL) {
			rc = -1;
			goto out;
		}
		kas->arenas = na;
		kas->arenas_cap = ncap;
	}
	kas->arenas[kas->narenas++] = vmp;
	rc = 1;
out:
	plat_mutex_unlock(&kas->reg_lock);
	return rc;
}

static int
arena_table_remove(kas_t *kas, vmem_t *vmp)
{
	size_t i;
	int found = 0;

	plat_mutex_lock(&kas->reg_lock);
	for (i = 0; i < kas->narenas; i++) {
		if (kas->arenas[i] == vmp) {
			kas->arenas[i] = kas->arenas[--kas->narenas];
			found = 1;
			break;
		}
	}
	plat_mutex_unlock(&kas->reg_lock);
	return found;
}

void
kas_arena_register(kas_t *kas, vmem_t *vmp)
{
	int added;

	if (kas == NULL || vmp == NULL) {
		vmem_error_report(SEGKMEM_E_NOTKAS, 0, "kas_arena_register",
		    vmp, vmp != NULL ? vmem_name(vmp) : "?", 0, 0,
		    "no address space or no arena");
		return;
	}
	added = arena_table_add(kas, vmp);
	if (added < 0) {
		vmem_error_report(VMEM_E_NOMEM, 0, "kas_arena_register", vmp,
		    vmem_name(vmp), 0, 0, "cannot grow the arena table");
		return;
	}
	if (added == 0)
		return;
	/* Installing the callback charges the tags the arena already has. */
	vmem_set_meta_charge(vmp, kas_charge_tags_cb, kas);
	settle(kas);
}

void
kas_arena_adopt(kas_t *kas, vmem_t *vmp)
{
	if (kas != NULL && vmp != NULL)
		vmem_set_private(vmp, kas);
	kas_arena_register(kas, vmp);
}

static void classify_calls_drain(kas_t *kas);

void
kas_arena_forget(kas_t *kas, vmem_t *vmp)
{
	if (kas == NULL || vmp == NULL || !arena_table_remove(kas, vmp))
		return;
	/* A classify call may have found vmp before it left the table. */
	plat_mutex_lock(&kas->reg_lock);
	classify_calls_drain(kas);
	plat_mutex_unlock(&kas->reg_lock);
	/* Removing the callback takes back what the arena was charged. */
	vmem_set_meta_charge(vmp, NULL, NULL);
	settle(kas);
}

vmem_t *
kas_arena_create(kas_t *kas, const char *name, void *base, size_t size,
    size_t quantum, vmem_alloc_t *afunc, vmem_free_t *ffunc, vmem_t *source,
    size_t qcache_max, int vmflag)
{
	cache_set_t before;
	vmem_t *vmp;

	if (kas == NULL) {
		vmem_error_report(SEGKMEM_E_NOTKAS, 0, "kas_arena_create",
		    NULL, name != NULL ? name : "?", (uintptr_t)base, size,
		    "no address space");
		return NULL;
	}
	caches_snapshot(&before);
	vmp = vmem_create(name, base, size, quantum, afunc, ffunc, source,
	    qcache_max, vmflag);
	if (vmp != NULL)
		kas_arena_adopt(kas, vmp);
	charge_new_caches(kas, &before); /* its quantum caches */
	settle(kas);
	return vmp;
}

void
kas_arena_destroy(kas_t *kas, vmem_t *vmp)
{
	if (vmp == NULL)
		return;
	kas_arena_forget(kas, vmp);
	vmem_destroy(vmp);
}

/* ---------------------------------------------------------------- */
/* Creation and destruction.                                         */

static int
reserve_range(kas_t *kas, const kas_config_t *cfg)
{
	size_t extra, head;
	char *p;

	if (cfg->backing == KAS_SIM) {
		kas->base = cfg->sim_base;
		return 0;
	}
	extra = kas->pagesize > host_pagesize() ? kas->pagesize : 0;
	p = mmap(NULL, cfg->size + extra, PROT_NONE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	head = (kas->pagesize - (uintptr_t)p % kas->pagesize) % kas->pagesize;
	if (extra != 0) {
		if (head != 0)
			munmap(p, head);
		if (extra - head != 0)
			munmap(p + head + cfg->size, extra - head);
	}
	kas->map_addr = p + head;
	kas->map_size = cfg->size;
	kas->base = (uintptr_t)kas->map_addr;
	return 0;
}

static size_t
default_physmem(const kas_t *kas)
{
	long host_pages;

	if (kas->backing == KAS_SIM)
		return KAS_DEFAULT_SIZE / kas->pagesize;
	host_pages = sysconf(_SC_PHYS_PAGES);
	if (host_pages <= 0)
		return KAS_DEFAULT_SIZE / kas->pagesize;
	return (size_t)host_pages / (kas->pagesize / host_pagesize());
}

static unsigned
log2_of(size_t x)
{
	unsigned s = 0;

	while (((size_t)1 << s) < x)
		s++;
	return s;
}

/* Allocate the struct and everything that is not an arena. */
static kas_t *
kas_alloc_base(const kas_config_t *cfg)
{
	kas_t *kas = calloc(1, sizeof (*kas));
	size_t words;

	if (kas == NULL)
		return NULL;
	snprintf(kas->name, sizeof (kas->name), "%s",
	    cfg->name != NULL ? cfg->name : "kas");
	kas->backing = cfg->backing;
	kas->size = cfg->size;
	kas->pagesize = config_pagesize(cfg);
	kas->pageshift = log2_of(kas->pagesize);
	kas->npages = cfg->size >> kas->pageshift;
	words = (kas->npages + 63) / 64;
	kas->committed_map = calloc(words, sizeof (uint64_t));
	kas->locked_map = calloc(words, sizeof (uint64_t));
	if (kas->committed_map == NULL || kas->locked_map == NULL ||
	    reserve_range(kas, cfg) != 0) {
		free(kas->committed_map);
		free(kas->locked_map);
		free(kas);
		return NULL;
	}
	plat_mutex_init(&kas->page_lock);
	plat_mutex_init(&kas->resv_lock);
	plat_cond_init(&kas->resv_cv);
	plat_mutex_init(&kas->settle_lock);
	HG_BENIGN(&kas->meta_settled_version, "hint: settle() can skip");
	plat_mutex_init(&kas->reg_lock);
	plat_cond_init(&kas->reg_cv);
	kas->physmem = cfg->physmem_pages != 0 ? cfg->physmem_pages :
	    default_physmem(kas);
	kas->availrmem = kas->physmem;
	kas->charge_metadata = cfg->charge_metadata == -1 ?
	    (cfg->backing == KAS_SIM) : cfg->charge_metadata;
	return kas;
}

static int
create_heap_arena(kas_t *kas, const kas_config_t *cfg)
{
	kas_span_t whole = { 0, cfg->size };
	const kas_span_t *spans = cfg->nheap_spans ? cfg->heap_spans : &whole;
	size_t n = cfg->nheap_spans ? cfg->nheap_spans : 1, i;

	kas->heap_arena = kas_arena_create(kas, "heap_arena",
	    (void *)(kas->base + spans[0].start), spans[0].end -
	    spans[0].start, kas->pagesize, NULL, NULL, NULL, 0, VM_SLEEP);
	if (kas->heap_arena == NULL)
		return -1;
	for (i = 1; i < n; i++)
		if (vmem_add(kas->heap_arena, (void *)(kas->base +
		    spans[i].start), spans[i].end - spans[i].start,
		    VM_NOSLEEP) == NULL)
			return -1;
	if (cfg->heap_boot_pages != 0) {
		void *lo = (void *)(kas->base + spans[0].start);

		kas->boot_size = cfg->heap_boot_pages * kas->pagesize;
		kas->boot_addr = vmem_xalloc(kas->heap_arena, kas->boot_size,
		    0, 0, 0, lo, (void *)((uintptr_t)lo + kas->boot_size),
		    VM_NOSLEEP);
		if (kas->boot_addr == NULL)
			return -1;
	}
	return 0;
}

static int
create_kmem_arenas(kas_t *kas, const kas_config_t *cfg)
{
	size_t ps = kas->pagesize;

	kas->kmem_metadata = kas_arena_create(kas, "kmem_metadata", NULL, 0,
	    ps, segkmem_alloc, segkmem_free, kas->heap_arena, 0, VM_SLEEP);
	kas->kmem_va = kas_arena_create(kas, "kmem_va", NULL, 0, ps,
	    vmem_alloc, vmem_free, kas->heap_arena,
	    cfg->kmem_va_qcache_pages * ps, VM_SLEEP);
	if (kas->kmem_va == NULL || kas->kmem_metadata == NULL)
		return -1;
	kas->kmem_default = kas_arena_create(kas, "kmem_default", NULL, 0,
	    ps, segkmem_alloc, segkmem_free, kas->kmem_va, 0, VM_SLEEP);
	if (kas->kmem_default == NULL)
		return -1;
	if (cfg->create_kmem_heap) {
		cache_set_t before;

		/* Simulated pages are integers: kmem must not touch them. */
		caches_snapshot(&before);
		kas->heap = kmem_heap_create_flags(kas->name,
		    kas->kmem_default,
		    kas->backing == KAS_SIM ? KMC_NOTOUCH : 0);
		charge_new_caches(kas, &before);
		if (kas->heap == NULL)
			return -1;
	}
	return 0;
}

static void segkmem_fork_init(void);

kas_t *
kas_create(const kas_config_t *cfg)
{
	kas_config_t defaults;
	const char *problem;
	kas_t *kas;

	if (cfg == NULL) {
		kas_config_init(&defaults);
		cfg = &defaults;
	}
	problem = config_problem(cfg);
	if (problem != NULL) {
		vmem_error_report(SEGKMEM_E_BADCONFIG, 0, "kas_create", NULL,
		    cfg->name != NULL ? cfg->name : "kas", cfg->sim_base,
		    cfg->size, "%s", problem);
		return NULL;
	}
	segkmem_fork_init();
	kas = kas_alloc_base(cfg);
	if (kas == NULL)
		return NULL;
	live_insert(kas);
	if (create_heap_arena(kas, cfg) != 0 ||
	    create_kmem_arenas(kas, cfg) != 0) {
		kas_destroy(kas);
		return NULL;
	}
	settle(kas);
	return kas;
}

static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static kas_t *default_kas;

kas_t *
kas_default(void)
{
	kas_t *kas;

	pthread_mutex_lock(&default_lock);
	if (default_kas == NULL) {
		kas_config_t cfg;

		kas_config_init(&cfg);
		cfg.name = "kas_default";
		default_kas = kas_create(&cfg);
	}
	kas = default_kas;
	pthread_mutex_unlock(&default_lock);
	return kas;
}

static void
destroy_arena(kas_t *kas, vmem_t **vmpp)
{
	if (*vmpp != NULL) {
		kas_arena_forget(kas, *vmpp);
		vmem_destroy(*vmpp);
		*vmpp = NULL;
	}
}

/* Arenas outside the kas that import from its arenas (a fromheap segkp
 * segment, a user's child of heap_arena): the kas cannot go before them. */
static unsigned
foreign_importers(const kas_t *kas)
{
	unsigned n = 0, own = 0;

	if (kas->heap_arena != NULL) {
		n += vmem_importer_count(kas->heap_arena);
		own += (kas->kmem_va != NULL) + (kas->kmem_metadata != NULL);
	}
	if (kas->kmem_va != NULL) {
		n += vmem_importer_count(kas->kmem_va);
		own += kas->kmem_default != NULL;
	}
	if (kas->kmem_default != NULL)
		n += vmem_importer_count(kas->kmem_default);
	if (kas->kmem_metadata != NULL)
		n += vmem_importer_count(kas->kmem_metadata);
	return n > own ? n - own : 0;
}

/*
 * Registered arenas that are not the kas's own: a FIXED segkp segment over
 * its own range imports from nothing, but still lives in the address
 * space, and its next call would read the freed kas.
 */
static size_t
foreign_registered(kas_t *kas)
{
	size_t n = 0;

	plat_mutex_lock(&kas->reg_lock);
	for (size_t i = 0; i < kas->narenas; i++) {
		const vmem_t *v = kas->arenas[i];

		n += v != kas->heap_arena && v != kas->kmem_va &&
		    v != kas->kmem_default && v != kas->kmem_metadata;
	}
	plat_mutex_unlock(&kas->reg_lock);
	return n;
}

void
kas_destroy(kas_t *kas)
{
	size_t left_arenas, committed, reserved, registered;
	unsigned importers;

	if (kas == NULL)
		return;
	importers = foreign_importers(kas);
	registered = foreign_registered(kas);
	if (importers != 0) {
		/* Destroying it would leave them a freed source: keep it. */
		vmem_error_report(SEGKMEM_E_BUSY, 1, "kas_destroy", NULL,
		    kas->name, kas->base, kas->size, "%u arena%s outside it "
		    "still import%s from it (segkp segments?): not destroyed",
		    importers, importers == 1 ? "" : "s",
		    importers == 1 ? "s" : "");
		return;
	}
	if (registered != 0) {
		vmem_error_report(SEGKMEM_E_BUSY, 1, "kas_destroy", NULL,
		    kas->name, kas->base, kas->size, "%lu arena%s of it still "
		    "registered (fixed segkp segments?): not destroyed",
		    (unsigned long)registered, registered == 1 ? "" : "s");
		return;
	}
	reclaim_quiesce(kas);
	pthread_mutex_lock(&default_lock);
	if (kas == default_kas)
		default_kas = NULL;
	pthread_mutex_unlock(&default_lock);
	if (kas->heap != NULL)
		kmem_heap_destroy(kas->heap);
	kas->heap = NULL;
	kas->charge_metadata = 0;
	if (kas->kmem_metadata != NULL)
		meta_release_all(kas);
	destroy_arena(kas, &kas->kmem_default);
	destroy_arena(kas, &kas->kmem_va);
	destroy_arena(kas, &kas->kmem_metadata);
	if (kas->boot_addr != NULL)
		vmem_xfree(kas->heap_arena, kas->boot_addr, kas->boot_size);
	destroy_arena(kas, &kas->heap_arena);

	/* Arenas registered by others must not charge a freed kas. */
	plat_mutex_lock(&kas->reg_lock);
	left_arenas = kas->narenas;
	while (kas->narenas > 0)
		vmem_set_meta_charge(kas->arenas[--kas->narenas], NULL, NULL);
	plat_mutex_unlock(&kas->reg_lock);
	plat_mutex_lock(&kas->page_lock);
	committed = kas->ncommitted;
	plat_mutex_unlock(&kas->page_lock);
	reserved = kas->physmem - kas_availrmem(kas);
	if (left_arenas != 0 || committed != 0 || reserved != 0)
		vmem_error_report(SEGKMEM_E_BUSY, 1, "kas_destroy", NULL,
		    kas->name, kas->base, kas->size, "%lu arenas still "
		    "registered, %lu pages committed, %lu reserved",
		    (unsigned long)left_arenas, (unsigned long)committed,
		    (unsigned long)reserved);
	live_remove(kas);
	if (kas->backing == KAS_REAL && kas->map_addr != NULL)
		munmap(kas->map_addr, kas->map_size);
	plat_mutex_destroy(&kas->page_lock);
	plat_mutex_destroy(&kas->resv_lock);
	plat_cond_destroy(&kas->resv_cv);
	plat_mutex_destroy(&kas->settle_lock);
	plat_mutex_destroy(&kas->reg_lock);
	plat_cond_destroy(&kas->reg_cv);
	free(kas->arenas);
	free(kas->committed_map);
	free(kas->locked_map);
	free(kas);
}

const char *
kas_name(const kas_t *kas)
{
	return kas->name;
}

kas_backing_t
kas_backing(const kas_t *kas)
{
	return kas->backing;
}

uintptr_t
kas_base(const kas_t *kas)
{
	return kas->base;
}

size_t
kas_size(const kas_t *kas)
{
	return kas->size;
}

size_t
kas_pagesize(const kas_t *kas)
{
	return kas->pagesize;
}

vmem_t *
kas_heap_arena(kas_t *kas)
{
	return kas->heap_arena;
}

vmem_t *
kas_kmem_va(kas_t *kas)
{
	return kas->kmem_va;
}

vmem_t *
kas_kmem_default(kas_t *kas)
{
	return kas->kmem_default;
}

vmem_t *
kas_metadata_arena(kas_t *kas)
{
	return kas->kmem_metadata;
}

struct kmem_heap *
kas_heap(kas_t *kas)
{
	return kas->heap;
}

/* ---------------------------------------------------------------- */
/* Fault classification.                                             */

static const char *const fault_names[KAS_FAULT_NKINDS] = {
	[KAS_FAULT_NONE] = "none",
	[KAS_FAULT_OUTSIDE] = "outside",
	[KAS_FAULT_REGION] = "region",
	[KAS_FAULT_FREE] = "free",
	[KAS_FAULT_UNBACKED] = "unbacked",
	[KAS_FAULT_VALID] = "valid",
	[KAS_FAULT_REDZONE] = "redzone",
};

const char *
kas_fault_name(kas_fault_t kind)
{
	if ((unsigned)kind < KAS_FAULT_NKINDS)
		return fault_names[kind];
	return "unknown";
}

int
kas_classifier_add(kas_t *kas, kas_classifier_t *fn, void *arg)
{
	int full;

	plat_mutex_lock(&kas->reg_lock);
	full = kas->nclassifiers == KAS_MAX_CLASSIFIERS;
	if (!full) {
		kas->classifiers[kas->nclassifiers].fn = fn;
		kas->classifiers[kas->nclassifiers].arg = arg;
		kas->nclassifiers++;
	}
	plat_mutex_unlock(&kas->reg_lock);
	return full ? -1 : 0;
}

int
kas_register_fault_classifier(kas_t *kas, kas_classifier_t *fn, void *arg)
{
	if (kas == NULL || fn == NULL) {
		vmem_error_report(SEGKMEM_E_NOTKAS, 0,
		    "kas_register_fault_classifier", NULL, "?", 0, 0,
		    "no address space or no function");
		return -1;
	}
	if (kas_classifier_add(kas, fn, arg) != 0) {
		vmem_error_report(SEGKMEM_E_TABLEFULL, 0,
		    "kas_register_fault_classifier", NULL, kas->name, 0, 0,
		    "already %d classifiers", KAS_MAX_CLASSIFIERS);
		return -1;
	}
	return 0;
}

/* Under reg_lock: wait out the classify calls that may still hold a
 * classifier just removed from the table (see struct kas). */
static void
classify_calls_drain(kas_t *kas)
{
	unsigned old;

	while (kas->unregistering)
		plat_cond_timedwait(&kas->reg_cv, &kas->reg_lock, 100);
	kas->unregistering = true;
	old = kas->classify_epoch;
	kas->classify_epoch = old ^ 1;
	while (kas->classifying[old] != 0)
		plat_cond_timedwait(&kas->reg_cv, &kas->reg_lock, 100);
	kas->unregistering = false;
	plat_cond_broadcast(&kas->reg_cv);
}

void
kas_unregister_fault_classifier(kas_t *kas, kas_classifier_t *fn, void *arg)
{
	size_t i;

	if (kas == NULL)
		return;
	plat_mutex_lock(&kas->reg_lock);
	for (i = 0; i < kas->nclassifiers; i++) {
		if (kas->classifiers[i].fn == fn &&
		    kas->classifiers[i].arg == arg) {
			memmove(&kas->classifiers[i], &kas->classifiers[i + 1],
			    (kas->nclassifiers - i - 1) *
			    sizeof (kas->classifiers[0]));
			kas->nclassifiers--;
			break;
		}
	}
	classify_calls_drain(kas);
	plat_mutex_unlock(&kas->reg_lock);
}

int
kas_register_region(kas_t *kas, const char *name, uintptr_t start,
    uintptr_t end)
{
	int full;

	if (kas == NULL || start >= end) {
		vmem_error_report(SEGKMEM_E_BADRANGE, 0, "kas_register_region",
		    NULL, name != NULL ? name : "?", start, end - start,
		    "no address space or empty region");
		return -1;
	}
	plat_mutex_lock(&kas->reg_lock);
	full = kas->nregions == KAS_MAX_REGIONS;
	if (!full) {
		kas_region_t *r = &kas->regions[kas->nregions++];

		snprintf(r->name, sizeof (r->name), "%s",
		    name != NULL ? name : "region");
		r->start = start;
		r->end = end;
	}
	plat_mutex_unlock(&kas->reg_lock);
	if (full) {
		vmem_error_report(SEGKMEM_E_TABLEFULL, 0, "kas_register_region",
		    NULL, kas->name, start, end - start, "already %d regions",
		    KAS_MAX_REGIONS);
		return -1;
	}
	return 0;
}

void (*kas_classify_window_hook)(kas_t *kas, vmem_t *vmp);

/* A classify call counts itself in the current epoch for its whole run
 * (see struct kas): unregistering a classifier and forgetting an arena
 * wait for the calls that may still use them. */
static unsigned
classify_enter(kas_t *kas)
{
	unsigned epoch;

	plat_mutex_lock(&kas->reg_lock);
	epoch = kas->classify_epoch;
	kas->classifying[epoch]++;
	plat_mutex_unlock(&kas->reg_lock);
	return epoch;
}

static void
classify_leave(kas_t *kas, unsigned epoch)
{
	plat_mutex_lock(&kas->reg_lock);
	if (--kas->classifying[epoch] == 0 && kas->unregistering)
		plat_cond_broadcast(&kas->reg_cv);
	plat_mutex_unlock(&kas->reg_lock);
}

static kas_fault_t
ask_classifiers(kas_t *kas, uintptr_t addr, char *buf, size_t len)
{
	kas_classifier_entry_t copy[KAS_MAX_CLASSIFIERS];
	kas_fault_t k = KAS_FAULT_NONE;
	size_t n, i;

	plat_mutex_lock(&kas->reg_lock);
	n = kas->nclassifiers;
	memcpy(copy, kas->classifiers, n * sizeof (copy[0]));
	plat_mutex_unlock(&kas->reg_lock);
	for (i = 0; i < n && k == KAS_FAULT_NONE; i++)
		k = copy[i].fn(copy[i].arg, addr, buf, len);
	return k;
}

static int
find_region(kas_t *kas, uintptr_t addr, char *name, size_t len)
{
	size_t i;
	int found = 0;

	plat_mutex_lock(&kas->reg_lock);
	for (i = 0; i < kas->nregions && !found; i++) {
		if (addr >= kas->regions[i].start &&
		    addr < kas->regions[i].end) {
			snprintf(name, len, "%s", kas->regions[i].name);
			found = 1;
		}
	}
	plat_mutex_unlock(&kas->reg_lock);
	return found;
}

static int
source_depth(const vmem_t *vmp)
{
	int d = 0;

	while ((vmp = vmem_source(vmp)) != NULL && d < 64)
		d++;
	return d;
}

/* The deepest registered arena whose spans hold addr, or NULL. */
static vmem_t *
innermost_arena(kas_t *kas, uintptr_t addr)
{
	vmem_t *best = NULL;
	int best_depth = -1;
	size_t i;

	plat_mutex_lock(&kas->reg_lock);
	for (i = 0; i < kas->narenas; i++) {
		vmem_t *vmp = kas->arenas[i];
		int d = source_depth(vmp);

		if (d > best_depth && vmem_contains(vmp, (void *)addr, 1)) {
			best = vmp;
			best_depth = d;
		}
	}
	plat_mutex_unlock(&kas->reg_lock);
	return best;
}

typedef struct alloc_probe {
	uintptr_t addr;
	int found;
} alloc_probe_t;

static void
probe_segment(void *arg, void *start, size_t size)
{
	alloc_probe_t *p = arg;

	if (p->addr >= (uintptr_t)start && p->addr - (uintptr_t)start < size)
		p->found = 1;
}

/* "heap_arena > kmem_va > kmem_default" */
static void
arena_path(const vmem_t *vmp, char *buf, size_t len)
{
	const vmem_t *chain[16];
	int n = 0, i;
	size_t used = 0;

	for (; vmp != NULL && n < 16; vmp = vmem_source(vmp))
		chain[n++] = vmp;
	buf[0] = '\0';
	for (i = n - 1; i >= 0 && used < len; i--) {
		int w = snprintf(buf + used, len - used, "%s%s",
		    i == n - 1 ? "" : " > ", vmem_name(chain[i]));

		if (w < 0)
			break;
		used += (size_t)w;
	}
}

/* kas_classify after the classifiers, inside a classify call. */
static kas_fault_t
classify_by_address(kas_t *kas, uintptr_t addr, char *buf, size_t len)
{
	char path[128], region[KAS_NAMELEN];
	alloc_probe_t probe = { addr, 0 };
	kas_fault_t kind;
	vmem_t *vmp;
	int committed;

	if (find_region(kas, addr, region, sizeof (region))) {
		snprintf(buf, len, "%s", region);
		return KAS_FAULT_REGION;
	}
	if (addr < kas->base || addr - kas->base >= kas->size) {
		snprintf(buf, len, "outside %s [0x%lx, 0x%lx)", kas->name,
		    (unsigned long)kas->base,
		    (unsigned long)(kas->base + kas->size));
		return KAS_FAULT_OUTSIDE;
	}
	vmp = innermost_arena(kas, addr);
	if (vmp == NULL) {
		snprintf(buf, len, "%s: in no arena", kas->name);
		return KAS_FAULT_OUTSIDE;
	}
	/* vmp stays alive: kas_arena_forget waits for this call. */
	if (kas_classify_window_hook != NULL)
		kas_classify_window_hook(kas, vmp);
	arena_path(vmp, path, sizeof (path));
	committed = kas_page_is_committed(kas, (void *)addr);
	vmem_walk(vmp, VMEM_ALLOC, probe_segment, &probe);
	if (committed)
		kind = KAS_FAULT_VALID;
	else
		kind = probe.found ? KAS_FAULT_UNBACKED : KAS_FAULT_FREE;
	snprintf(buf, len, "%s: %s, %s", path,
	    probe.found ? "allocated" : "free",
	    committed ? "committed" : "not committed");
	return kind;
}

kas_fault_t
kas_classify(kas_t *kas, uintptr_t addr, char *buf, size_t len)
{
	char tmp[160];
	kas_fault_t kind;
	unsigned epoch;

	if (buf == NULL || len == 0) {
		buf = tmp;
		len = sizeof (tmp);
	}
	buf[0] = '\0';
	if (kas == NULL)
		return KAS_FAULT_OUTSIDE;
	epoch = classify_enter(kas);
	kind = ask_classifiers(kas, addr, buf, len);
	if (kind == KAS_FAULT_NONE)
		kind = classify_by_address(kas, addr, buf, len);
	classify_leave(kas, epoch);
	return kind;
}

kas_fault_t
kas_fault(kas_t *kas, uintptr_t addr, char *buf, size_t len)
{
	kas_fault_t kind = kas_classify(kas, addr, buf, len);

	if (kas != NULL) {
		atomic_fetch_add(&kas->faults, 1);
		if ((unsigned)kind < KAS_FAULT_NKINDS)
			atomic_fetch_add(&kas->faults_by_kind[kind], 1);
	}
	return kind;
}

/* ---------------------------------------------------------------- */
/* Statistics.                                                       */

void
kas_get_stats(kas_t *kas, kas_stats_t *st)
{
	int k;

	memset(st, 0, sizeof (*st));
	snprintf(st->name, sizeof (st->name), "%s", kas->name);
	st->backing = kas->backing;
	st->base = kas->base;
	st->size = kas->size;
	st->pagesize = kas->pagesize;
	st->heap_size = vmem_size(kas->heap_arena, VMEM_ALLOC | VMEM_FREE);
	st->heap_inuse = vmem_size(kas->heap_arena, VMEM_ALLOC);
	st->heap_boot = kas->boot_size;
	for (k = 0; k < KAS_META_NKINDS; k++) {
		long b = atomic_load(&kas->meta_bytes[k]);

		st->meta_bytes[k] = b > 0 ? (size_t)b : 0;
		st->meta_pages[k] = atomic_load(&kas->meta_pages_now[k]);
		st->meta_pages_needed[k] = meta_pages_needed(kas, k);
		st->meta_bytes_total += st->meta_bytes[k];
		st->meta_pages_total += st->meta_pages[k];
		if (st->meta_pages_needed[k] > st->meta_pages[k])
			st->meta_pages_unsettled += st->meta_pages_needed[k] -
			    st->meta_pages[k];
	}
	st->meta_heap_bytes = kas->kmem_metadata == NULL ? 0 :
	    vmem_size(kas->kmem_metadata, VMEM_ALLOC | VMEM_FREE);
	st->charge_metadata = kas->charge_metadata;
	plat_mutex_lock(&kas->page_lock);
	st->pages_committed = kas->ncommitted;
	st->pages_locked = kas->nlocked;
	plat_mutex_unlock(&kas->page_lock);
	plat_mutex_lock(&kas->resv_lock);
	st->physmem = kas->physmem;
	st->availrmem = kas->availrmem;
	st->pages_reserved = kas->physmem - kas->availrmem;
	st->resv_fail = kas->resv_fail;
	st->resv_wait = kas->resv_wait;
	plat_mutex_unlock(&kas->resv_lock);
	st->commit_fail = atomic_load(&kas->commit_fail);
	st->lock_fail = atomic_load(&kas->lock_fail);
	st->faults = atomic_load(&kas->faults);
	for (k = 0; k < KAS_FAULT_NKINDS; k++)
		st->faults_by_kind[k] = atomic_load(&kas->faults_by_kind[k]);
}

static void
outf(void (*out)(void *, const char *), void *arg, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void
outf(void (*out)(void *, const char *), void *arg, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof (line), fmt, ap);
	va_end(ap);
	out(arg, line);
}

#define KIB(x) ((unsigned long)((x) >> 10))

void
kas_dump_stats(kas_t *kas, void (*out)(void *arg, const char *line),
    void *arg)
{
	kas_stats_t st;
	int k;

	kas_get_stats(kas, &st);
	outf(out, arg, "kas %s: %s, [0x%lx, 0x%lx), %lu KiB, page %lu\n",
	    st.name, st.backing == KAS_SIM ? "simulated" : "real",
	    (unsigned long)st.base, (unsigned long)(st.base + st.size),
	    KIB(st.size), (unsigned long)st.pagesize);
	outf(out, arg, "  heap_arena   %10lu KiB, in use %10lu KiB "
	    "(boot %lu KiB)\n", KIB(st.heap_size), KIB(st.heap_inuse),
	    KIB(st.heap_boot));
	outf(out, arg, "  pages        physmem %lu, availrmem %lu, reserved "
	    "%lu, committed %lu, locked %lu\n", (unsigned long)st.physmem,
	    (unsigned long)st.availrmem, (unsigned long)st.pages_reserved,
	    (unsigned long)st.pages_committed,
	    (unsigned long)st.pages_locked);
	outf(out, arg, "  failures     resv %lu (waits %lu), commit %lu, "
	    "lock %lu\n", (unsigned long)st.resv_fail,
	    (unsigned long)st.resv_wait, (unsigned long)st.commit_fail,
	    (unsigned long)st.lock_fail);
	outf(out, arg, "  metadata     %s: %lu bytes, %lu pages charged, %lu "
	    "unsettled, kmem_metadata holds %lu KiB\n",
	    st.charge_metadata ? "charged to heap" : "counted only",
	    (unsigned long)st.meta_bytes_total,
	    (unsigned long)st.meta_pages_total,
	    (unsigned long)st.meta_pages_unsettled, KIB(st.meta_heap_bytes));
	for (k = 0; k < KAS_META_NKINDS; k++)
		outf(out, arg, "    %-6s     %10lu bytes  %6lu pages\n",
		    meta_kind_names[k], (unsigned long)st.meta_bytes[k],
		    (unsigned long)st.meta_pages[k]);
	{
		char line[256];
		size_t used = (size_t)snprintf(line, sizeof (line),
		    "  faults       %lu:", (unsigned long)st.faults);

		for (k = 1; k < KAS_FAULT_NKINDS && used < sizeof (line); k++)
			used += (size_t)snprintf(line + used,
			    sizeof (line) - used, " %s %lu", fault_names[k],
			    (unsigned long)st.faults_by_kind[k]);
		if (used < sizeof (line) - 1)
			snprintf(line + used, sizeof (line) - used, "\n");
		out(arg, line);
	}
}

static void
out_stdio(void *arg, const char *line)
{
	fputs(line, arg);
}

void
kas_print_stats(kas_t *kas, void *stdio_file)
{
	kas_dump_stats(kas, out_stdio, stdio_file != NULL ? stdio_file :
	    (void *)stdout);
}

/* ---------------------------------------------------------------- */
/* Fork.                                                             */

/*
 * Every segkmem lock is held across fork(), so the child can go on using
 * every address space whatever other threads were doing. settle_lock and
 * default_lock are held across calls into vmem and kmem, so these handlers
 * are registered after theirs (prepare handlers run in reverse order):
 * segkmem's locks are taken first, as in normal operation.
 */
static void
segkmem_fork_prepare(void)
{
	pthread_mutex_lock(&default_lock);
	pthread_mutex_lock(&live_change_lock);
	for (kas_t *k = live_list; k != NULL; k = k->next_live) {
		plat_mutex_lock(&k->settle_lock);
		plat_mutex_lock(&k->reg_lock);
		plat_mutex_lock(&k->resv_lock);
		plat_mutex_lock(&k->page_lock);
	}
	pthread_mutex_lock(&live_lock);
	/* Last: a sleeping reservation takes it with resv_lock held. */
	pthread_mutex_lock(&reclaim_lock);
}

static void
kas_locks_release(void)
{
	for (kas_t *k = live_list; k != NULL; k = k->next_live) {
		plat_mutex_unlock(&k->page_lock);
		plat_mutex_unlock(&k->resv_lock);
		plat_mutex_unlock(&k->reg_lock);
		plat_mutex_unlock(&k->settle_lock);
	}
}

/* Every lock taken for fork() is plain and was taken by this thread. */
static void
segkmem_fork_parent(void)
{
	pthread_mutex_unlock(&reclaim_lock);
	pthread_mutex_unlock(&live_lock);
	kas_locks_release();
	pthread_mutex_unlock(&live_change_lock);
	pthread_mutex_unlock(&default_lock);
}

/*
 * In the child only this thread exists: classify calls and unregisters
 * that other threads had in flight will never finish, so their counts
 * must not make an unregister here wait for them forever.
 */
static void
segkmem_fork_child(void)
{
	for (kas_t *k = live_list; k != NULL; k = k->next_live) {
		k->classifying[0] = k->classifying[1] = 0;
		k->unregistering = false;
		/* No reclaimer in the child: sleepers ask again. */
		k->reclaim_wanted = false;
		k->reclaim_busy = 0;
	}
	reclaim_queue = NULL;
	reclaimer_started = false;
	segkmem_fork_parent();
}

static void
segkmem_fork_register(void)
{
	vmem_init();
	kmem_global_init();
	(void)pthread_atfork(segkmem_fork_prepare, segkmem_fork_parent,
	    segkmem_fork_child);
}

static void
segkmem_fork_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	(void)pthread_once(&once, segkmem_fork_register);
}
