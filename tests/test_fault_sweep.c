/*
 * Fault sweep: every failure point of a scripted workload, failed once.
 *
 * The workload drives vmem (a three-level vmem_alloc import chain with
 * quantum caches, an xcreate arena with a user import function, an
 * identifier arena, vmem_add, xalloc constraints), kmem object caches and
 * a kmem heap, and two kernel address spaces (real and simulated backing:
 * segkmem_alloc imports, page reservations, commits with and without
 * mlock). A fault hook counts the failure points it passes ("metadata",
 * "import", "slab", "slabtable", "commit", "resv", "mlock"). The sweep
 * first runs the workload counting them, then for N = 1..count reruns it with the N-th
 * point failing, and checks each time that
 *   - the point was reached and failed, and nothing crashed;
 *   - every call either succeeded (and its result is valid) or failed
 *     cleanly with NULL / -1 / 0, with no error reported;
 *   - once the workload has freed everything: no allocated segments, spans
 *     and boundary tags back to their level after creation, vmem_check and
 *     the kas page counts (committed, reserved, locked) back to baseline;
 *   - after teardown no arena or cache is left and nothing was reported
 *     (no leak warning at destroy);
 *   - the same workload then runs again without faults, fully, and the
 *     process holds no more memory than after two fault-free runs.
 * Each run is a forked child pinned to one CPU, so every run starts from
 * the same library state (metadata pools are process-wide) and sees the
 * same sequence of failure points. FAULT_SWEEP_SITE=name restricts the
 * sweep to one site; FAULT_SWEEP_VERBOSE=1 prints each run.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmem/kmem.h>
#include <vmem/segkmem.h>
#include <vmem/segkp.h>

#include "platform.h"
#include "testutil.h"

#define PAGE 4096
#define NSITES 7
#define MAXPOINTS 4096
static const char *const site_names[NSITES] = {
	"metadata", "import", "slab", "slabtable", "commit", "resv", "mlock"
};

typedef struct sweep {
	long target;           /* fail this point (1-based); 0: none */
	long count;            /* points passed */
	long per_site[NSITES];
	long fired_site;       /* site of the failed point, or -1 */
	const char *only;      /* count only this site (NULL: all) */
	unsigned char seq[MAXPOINTS]; /* site of each point passed */
} sweep_t;

static sweep_t sw;

static int
site_index(const char *site)
{
	for (int i = 0; i < NSITES; i++)
		if (strcmp(site, site_names[i]) == 0)
			return i;
	return -1;
}

static int
fault_hook(const char *site, void *arg)
{
	sweep_t *s = arg;
	int i = site_index(site);

	CHECK(i >= 0);
	if (i < 0 || (s->only != NULL && strcmp(s->only, site) != 0))
		return 0;
	s->per_site[i]++;
	if (s->count < MAXPOINTS)
		s->seq[s->count] = (unsigned char)i;
	if (++s->count == s->target) {
		s->fired_site = i;
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* The workload. Every step tolerates failure; failures are counted.   */

static int verbose;

/* Count a call that failed (and name it when verbose). */
#define FAILED(r, what) do { \
	(r)->failed_calls++; \
	if (verbose > 1) \
		fprintf(stderr, "  failed: %s (line %d)\n", what, __LINE__); \
} while (0)

typedef struct run {
	long failed_calls;
	long arenas0, caches0;
} run_t;

static void
count_arena(vmem_t *vmp, void *arg)
{
	(void)vmp;
	(*(long *)arg)++;
}

static void
count_cache(kmem_cache_t *cp, void *arg)
{
	(void)cp;
	(*(long *)arg)++;
}

static long
live_arenas(void)
{
	long n = 0;

	vmem_foreach_arena(count_arena, &n);
	return n;
}

static long
live_caches(void)
{
	long n = 0;

	kmem_foreach_cache(count_cache, &n);
	return n;
}

/* An arena emptied by its user is back to its state after creation. */
typedef struct arena_base {
	vmem_t *vmp;
	size_t nspans, tags;
} arena_base_t;

static void
base_take(arena_base_t *b, vmem_t *vmp)
{
	vmem_stats_t st;

	b->vmp = vmp;
	if (vmp == NULL)
		return;
	vmem_get_stats(vmp, &st);
	b->nspans = st.nspans;
	b->tags = st.tags;
}

/* Tags above the creation level may only be the arena's spare reserve. */
#define TAG_SLACK 64

static void
base_check(const arena_base_t *b, size_t extra_spans)
{
	vmem_stats_t st;

	if (b->vmp == NULL)
		return;
	CHECK_ARENA(b->vmp);
	CHECK_EQ(vmem_size(b->vmp, VMEM_ALLOC), 0);
	vmem_get_stats(b->vmp, &st);
	CHECK_EQ(st.nalloc_segs, 0);
	CHECK_EQ(st.nspans, b->nspans + extra_spans);
	CHECK(st.tags <= b->tags + 2 * extra_spans + TAG_SLACK);
	if (st.tags > b->tags + 2 * extra_spans + TAG_SLACK)
		fprintf(stderr, "  %s: %zu tags, %zu after creation\n",
		    st.name, st.tags, b->tags);
}

static void *
x_import(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	(void)align;
	/* Take a little more than asked, as an xcreate import may. */
	*sizep += PAGE;
	return vmem_alloc(src, *sizep, vmflag);
}

#define NV 48

typedef struct vm_obj {
	vmem_t *vmp;
	void *addr;
	size_t size;
	int x;
} vm_obj_t;

static void
vobj_free(vm_obj_t *o)
{
	if (o->addr == NULL)
		return;
	if (o->x)
		vmem_xfree(o->vmp, o->addr, o->size);
	else
		vmem_free(o->vmp, o->addr, o->size);
	o->addr = NULL;
}

static void
vobj_take(run_t *r, vm_obj_t *o, vmem_t *vmp, void *addr, size_t size, int x)
{
	o->vmp = vmp;
	o->addr = addr;
	o->size = size;
	o->x = x;
	if (addr == NULL)
		FAILED(r, "call");
	else
		CHECK(vmem_contains(vmp, addr, size));
}

static int ctor_calls;

static int
obj_ctor(void *buf, void *priv, int kmflag)
{
	(void)priv;
	(void)kmflag;
	memset(buf, 0x5a, 64);
	ctor_calls++;
	return 0;
}

static void
obj_dtor(void *buf, void *priv)
{
	(void)priv;
	CHECK(((unsigned char *)buf)[0] == 0x5a);
	ctor_calls--;
}

static void
vmem_part(run_t *r)
{
	const int nf = VM_NOSLEEP;
	vmem_t *base, *mid = NULL, *top = NULL, *xa = NULL, *ids = NULL;
	arena_base_t bb, bm, bt, bx, bi;
	vm_obj_t o[NV];
	kmem_cache_t *cache = NULL;
	void *objs[40];
	void *added = NULL;
	int i;

	memset(o, 0, sizeof (o));
	memset(objs, 0, sizeof (objs));
	base = vmem_create("fs_base", (void *)0x10000000, 1024 * PAGE, PAGE,
	    NULL, NULL, NULL, 0, nf);
	if (base == NULL) {
		FAILED(r, "call");
		return;
	}
	mid = vmem_create("fs_mid", NULL, 0, PAGE, vmem_alloc, vmem_free,
	    base, 4 * PAGE, nf);
	if (mid != NULL)
		top = vmem_create("fs_top", NULL, 0, PAGE, vmem_alloc,
		    vmem_free, mid, 0, nf);
	xa = vmem_xcreate("fs_xcreate", NULL, 0, PAGE, x_import, vmem_free,
	    base, 0, nf);
	ids = vmem_create("fs_ids", (void *)1, 5000, 1, NULL, NULL, NULL, 0,
	    VMC_IDENTIFIER | nf);
	r->failed_calls += (mid == NULL) + (top == NULL) + (xa == NULL) +
	    (ids == NULL);
	base_take(&bb, base);
	base_take(&bm, mid);
	base_take(&bt, top);
	base_take(&bx, xa);
	base_take(&bi, ids);

	/* Grow the base: a second span (may fail for metadata). */
	added = vmem_add(base, (void *)0x20000000, 256 * PAGE, nf);
	if (added == NULL)
		FAILED(r, "call");

	for (i = 0; i < 12; i++) {
		static const int policy[3] = { 0, VM_BESTFIT, VM_FIRSTFIT };
		if (top != NULL)
			vobj_take(r, &o[i], top, vmem_alloc(top,
			    (size_t)(1 + i % 5) * PAGE, nf | policy[i % 3]),
			    (size_t)(1 + i % 5) * PAGE, 0);
	}
	for (i = 12; i < 24 && mid != NULL; i++) {
		/* Quantum-cached sizes, then constrained ones. */
		if (i < 18) {
			vobj_take(r, &o[i], mid, vmem_alloc(mid,
			    (size_t)(1 + i % 4) * PAGE, nf), (size_t)(1 + i % 4) *
			    PAGE, 0);
		} else {
			void *p = vmem_xalloc(mid, 2 * PAGE, 4 * PAGE, PAGE,
			    16 * PAGE, NULL, NULL, nf | VM_ENDALLOC * (i & 1));
			vobj_take(r, &o[i], mid, p, 2 * PAGE, 1);
			if (p != NULL) {
				CHECK(((uintptr_t)p & (4 * PAGE - 1)) == PAGE);
				CHECK((uintptr_t)p / (16 * PAGE) ==
				    ((uintptr_t)p + 2 * PAGE - 1) / (16 * PAGE));
			}
		}
	}
	for (i = 24; i < 30 && xa != NULL; i++)
		vobj_take(r, &o[i], xa, vmem_alloc(xa, 3 * PAGE, nf |
		    VM_NEXTFIT), 3 * PAGE, 0);
	for (i = 30; i < NV && ids != NULL; i++)
		vobj_take(r, &o[i], ids, vmem_alloc(ids, 1 + (size_t)i % 3,
		    nf), 1 + (size_t)i % 3, 0);
	/* Many ids: the allocated-segment hash grows (metadata). */
	{
		void *idv[200];
		size_t n = 0;
		for (n = 0; n < 200 && ids != NULL; n++) {
			idv[n] = vmem_alloc(ids, 1, nf);
			if (idv[n] == NULL) {
				FAILED(r, "call");
				break;
			}
		}
		while (n-- > 0)
			vmem_free(ids, idv[n], 1);
	}

	/* An object cache over the chain (not memory: NOTOUCH). */
	if (top != NULL) {
		cache = kmem_cache_create("fs_idcache", 512, 0, NULL, NULL,
		    NULL, NULL, top, KMC_NOTOUCH);
		if (cache == NULL)
			FAILED(r, "call");
	}
	for (i = 0; i < 40 && cache != NULL; i++) {
		objs[i] = kmem_cache_alloc(cache, KM_NOSLEEP);
		if (objs[i] == NULL)
			FAILED(r, "call");
	}

	/* Free half, allocate again, then free everything. */
	for (i = 0; i < NV; i += 2)
		vobj_free(&o[i]);
	for (i = 0; i < 20 && cache != NULL; i += 2)
		if (objs[i] != NULL) {
			kmem_cache_free(cache, objs[i]);
			objs[i] = NULL;
		}
	for (i = 0; i < 12; i += 2)
		if (top != NULL)
			vobj_take(r, &o[i], top, vmem_alloc(top, 7 * PAGE, nf),
			    7 * PAGE, 0);
	for (i = 0; i < NV; i++)
		vobj_free(&o[i]);
	for (i = 0; i < 40 && cache != NULL; i++)
		if (objs[i] != NULL)
			kmem_cache_free(cache, objs[i]);
	if (cache != NULL)
		kmem_cache_destroy(cache);
	if (mid != NULL)
		vmem_reap(mid);

	base_check(&bt, 0);
	base_check(&bm, 0);
	base_check(&bx, 0);
	base_check(&bi, 0);
	base_check(&bb, added != NULL);

	if (top != NULL)
		vmem_destroy(top);
	if (mid != NULL)
		vmem_destroy(mid);
	if (xa != NULL)
		vmem_destroy(xa);
	if (ids != NULL)
		vmem_destroy(ids);
	vmem_destroy(base);
}

/* The kas part: imports through segkmem, page budget, commit, mlock. */
typedef struct kas_base {
	size_t committed, reserved, locked, heap_inuse, meta_pages, meta_heap;
} kas_base_t;

static void
kbase_take(kas_t *kas, kas_base_t *b)
{
	kas_stats_t st;

	kas_settle_metadata(kas);
	kas_get_stats(kas, &st);
	b->committed = st.pages_committed;
	b->reserved = st.pages_reserved;
	b->locked = st.pages_locked;
	b->heap_inuse = st.heap_inuse;
	b->meta_pages = st.meta_pages_total;
	b->meta_heap = st.meta_heap_bytes;
}

static void
kbase_check(kas_t *kas, const kas_base_t *b)
{
	kas_stats_t st;

	kmem_heap_reap(kas_heap(kas));
	vmem_reap(kas_kmem_va(kas));
	kas_settle_metadata(kas);
	kas_get_stats(kas, &st);
	if (verbose > 1)
		fprintf(stderr, "  %s: committed %zu/%zu meta pages %zu/%zu "
		    "meta heap %zu\n", st.name, st.pages_committed,
		    b->committed, st.meta_pages_total, b->meta_pages,
		    st.meta_heap_bytes);
	/*
	 * Charged metadata may stay above its level at creation (grown
	 * tables and magazines): everything else is back.
	 */
	CHECK_EQ(st.pages_committed - st.meta_pages_total,
	    b->committed - b->meta_pages);
	CHECK_EQ(st.pages_reserved - st.meta_pages_total,
	    b->reserved - b->meta_pages);
	CHECK_EQ(st.heap_inuse - st.meta_heap_bytes,
	    b->heap_inuse - b->meta_heap);
	CHECK_EQ(st.pages_locked, b->locked);
	if (st.charge_metadata)
		CHECK_EQ(st.meta_pages_unsettled, 0);
	CHECK_ARENA(kas_heap_arena(kas));
	CHECK_ARENA(kas_kmem_va(kas));
	CHECK_ARENA(kas_kmem_default(kas));
	CHECK_ARENA(kas_metadata_arena(kas));
}

#define NK 24

/* The small kernel address space both scripted parts run on. */
static kas_t *
sweep_kas_create(kas_backing_t backing, const char *name)
{
	kas_config_t cfg;

	kas_config_init(&cfg);
	cfg.backing = backing;
	cfg.name = name;
	cfg.size = (size_t)16 << 20;
	cfg.physmem_pages = 2048;
	return kas_create(&cfg);
}

static void
kas_part(run_t *r, kas_backing_t backing)
{
	const int nf = VM_NOSLEEP;
	kas_t *kas;
	kas_base_t kb;
	vmem_t *heap, *priv = NULL;
	kmem_heap_t *kh;
	kmem_cache_t *cache = NULL;
	void *seg[NK], *hb[NK], *ob[NK], *pv[8];
	size_t hsz[NK];
	void *stack = NULL;
	int i, stack_resv = 0, stack_commit = 0, stack_locked = 0;
	const int cflags = backing == KAS_SIM ? KMC_NOTOUCH : 0;

	kas = sweep_kas_create(backing, backing == KAS_SIM ? "fs_simkas" :
	    "fs_realkas");
	if (kas == NULL) {
		FAILED(r, "call");
		return;
	}
	kbase_take(kas, &kb);
	heap = kas_heap_arena(kas);
	kh = kas_heap(kas);
	memset(seg, 0, sizeof (seg));
	memset(hb, 0, sizeof (hb));
	memset(ob, 0, sizeof (ob));
	memset(pv, 0, sizeof (pv));

	/* Pages straight from the heap: resv + commit per import. */
	for (i = 0; i < NK; i++) {
		seg[i] = segkmem_alloc(heap, (size_t)(1 + i % 3) * PAGE, nf);
		if (seg[i] == NULL)
			FAILED(r, "call");
		else if (backing == KAS_REAL)
			memset(seg[i], 1, (size_t)(1 + i % 3) * PAGE);
	}
	/* The kmem heap: small sizes through caches, large from the arena. */
	for (i = 0; i < NK && kh != NULL; i++) {
		hsz[i] = (size_t)1 << (4 + i % 11);
		hb[i] = kmem_heap_alloc(kh, hsz[i], KM_NOSLEEP);
		if (hb[i] == NULL)
			FAILED(r, "call");
		else if (backing == KAS_REAL)
			memset(hb[i], 2, hsz[i]);
	}
	/* A private arena importing pages with segkmem_alloc. */
	priv = kas_arena_create(kas, "fs_priv", NULL, 0, PAGE, segkmem_alloc,
	    segkmem_free, heap, 0, nf);
	if (priv == NULL)
		FAILED(r, "call");
	for (i = 0; i < 8 && priv != NULL; i++) {
		pv[i] = vmem_alloc(priv, (size_t)(1 + i % 2) * PAGE, nf);
		if (pv[i] == NULL)
			FAILED(r, "call");
	}
	/* An object cache over kmem_default. */
	cache = kmem_cache_create("fs_objcache", 96, 0,
	    backing == KAS_REAL ? obj_ctor : NULL,
	    backing == KAS_REAL ? obj_dtor : NULL, NULL, NULL,
	    kas_kmem_default(kas), cflags);
	if (cache == NULL)
		FAILED(r, "call");
	for (i = 0; i < NK && cache != NULL; i++) {
		ob[i] = kmem_cache_alloc(cache, KM_NOSLEEP);
		if (ob[i] == NULL)
			FAILED(r, "call");
	}
	/* A stack as segkp builds one: redzone page, locked pages. */
	stack = vmem_xalloc(heap, 4 * PAGE, 0, 0, 0, NULL, NULL, nf);
	if (stack == NULL)
		FAILED(r, "call");
	else if (!(stack_resv = kas_page_resv(kas, 3, nf)))
		FAILED(r, "call");
	else if (kas_pages_commit(kas, (char *)stack + PAGE, 3 * PAGE,
	    KAS_COMMIT_LOCK) != 0)
		FAILED(r, "call");
	else
		stack_commit = stack_locked = 1;
	if (stack_commit) {
		CHECK(kas_page_is_committed(kas, (char *)stack + PAGE));
		CHECK(!kas_page_is_committed(kas, stack));
		kas_pages_unlock(kas, (char *)stack + PAGE, 3 * PAGE);
		stack_locked = kas_pages_lock(kas, (char *)stack + PAGE,
		    PAGE) == 0;
		if (!stack_locked)
			FAILED(r, "call");
	}

	/* Free everything, in an order unlike the allocation order. */
	if (stack_locked)
		kas_pages_unlock(kas, (char *)stack + PAGE, PAGE);
	if (stack_commit)
		kas_pages_decommit(kas, (char *)stack + PAGE, 3 * PAGE);
	if (stack_resv)
		kas_page_unresv(kas, 3);
	if (stack != NULL)
		vmem_xfree(heap, stack, 4 * PAGE);
	for (i = NK - 1; i >= 0; i--) {
		if (ob[i] != NULL)
			kmem_cache_free(cache, ob[i]);
		if (hb[i] != NULL)
			kmem_heap_free(kh, hb[i], hsz[i]);
		if (seg[i] != NULL)
			segkmem_free(heap, seg[i], (size_t)(1 + i % 3) * PAGE);
	}
	for (i = 0; i < 8; i++)
		if (pv[i] != NULL)
			vmem_free(priv, pv[i], (size_t)(1 + i % 2) * PAGE);
	if (cache != NULL)
		kmem_cache_destroy(cache);
	if (priv != NULL) {
		CHECK_ARENA(priv);
		CHECK_EQ(vmem_size(priv, VMEM_ALLOC), 0);
		CHECK_EQ(vmem_size(priv, VMEM_SPAN), 0);
		kas_arena_destroy(kas, priv);
	}
	kbase_check(kas, &kb);
	kas_destroy(kas);
}

/*
 * The segkp part: a segment of each placement on one kas. Locked stacks
 * with redzones (resv, commit, mlock), plain gets, a stack cache whose
 * stacks are released back, reaped (pages given back) and taken again
 * (pages recommitted), segkp_cache_free. KPD_NOWAIT everywhere: a failure
 * point must fail the call, never make it wait.
 */
#define NKP 6

static void
segkp_stacks(run_t *r, segkp_t *seg)
{
	const int locked = KPD_LOCKED | KPD_NOWAIT | KPD_HASREDZONE;
	void *st[NKP], *cs[4], *cookie;
	segkp_stats_t sst;
	int i;

	memset(st, 0, sizeof (st));
	memset(cs, 0, sizeof (cs));
	for (i = 0; i < NKP; i++) {
		int flags = i % 2 ? locked | KPD_REDZONE_PAGES(2) :
		    KPD_NOWAIT | KPD_ZERO | KPD_HASREDZONE;
		st[i] = segkp_get(seg, (size_t)(1 + i % 3) * PAGE, flags);
		if (st[i] == NULL)
			FAILED(r, "segkp_get");
		else
			CHECK(segkp_classify(seg, (char *)st[i] - 1, NULL) ==
			    SEGKP_FAULT_REDZONE);
	}
	cookie = segkp_cache_init(seg, 3, 2 * PAGE, locked | KPD_NOWAIT);
	CHECK(cookie != NULL); /* no resource: cannot fail */
	for (int round = 0; round < 2 && cookie != NULL; round++) {
		for (i = 0; i < 4; i++) {
			cs[i] = segkp_cache_get(cookie);
			if (cs[i] == NULL)
				FAILED(r, "segkp_cache_get");
		}
		for (i = 0; i < 4; i++)
			if (cs[i] != NULL)
				segkp_release(seg, cs[i]);
		CHECK(segkp_check(seg) == 0);
		/* Round 0: pages of idle stacks go back; round 1 gets them. */
		(void)segkp_cache_reap(seg, SEGKP_REAP_ALL);
	}
	for (i = 0; i < NKP; i += 2)
		if (st[i] != NULL)
			segkp_release(seg, st[i]);
	for (i = 1; i < NKP; i += 2)
		if (st[i] != NULL)
			segkp_release(seg, st[i]);
	CHECK(segkp_check(seg) == 0);
	segkp_cache_free_seg(seg);
	if (cookie != NULL)
		segkp_cache_destroy(cookie);
	segkp_get_stats(seg, &sst);
	CHECK_EQ(sst.inuse, 0);
	CHECK_EQ(sst.cached, 0);
	CHECK_EQ(sst.pages_committed, 0);
	CHECK_EQ(sst.pages_locked, 0);
	CHECK_EQ(sst.va_allocated, 0);
	CHECK(segkp_check(seg) == 0);
	CHECK_ARENA(segkp_arena(seg));
	if (segkp_placement(seg) == SEGKP_FROMHEAP)
		CHECK_EQ(vmem_size(segkp_arena(seg), VMEM_SPAN), 0);
}

static void
segkp_part(run_t *r, kas_backing_t backing)
{
	kas_t *kas;
	kas_base_t kb;
	segkp_t *seg;

	kas = sweep_kas_create(backing, backing == KAS_SIM ? "fs_kp_simkas" :
	    "fs_kp_realkas");
	if (kas == NULL) {
		FAILED(r, "kas_create");
		return;
	}
	kbase_take(kas, &kb);
	seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
	if (seg == NULL) {
		FAILED(r, "segkp_create");
	} else {
		segkp_stacks(r, seg);
		segkp_destroy(seg);
	}
	/* Fixed, its range taken from heap_arena. */
	seg = segkp_create(kas, SEGKP_FIXED, NULL, (size_t)2 << 20);
	if (seg == NULL) {
		FAILED(r, "segkp_create");
	} else {
		segkp_stacks(r, seg);
		segkp_destroy(seg);
	}
	kbase_check(kas, &kb);
	kas_destroy(kas);
}

static void
workload(run_t *r)
{
	memset(r, 0, sizeof (*r));
	r->arenas0 = live_arenas();
	r->caches0 = live_caches();
	vmem_part(r);
	kas_part(r, KAS_SIM);
	kas_part(r, KAS_REAL);
	segkp_part(r, KAS_SIM);
	segkp_part(r, KAS_REAL);
	CHECK_EQ(live_arenas(), r->arenas0);
	CHECK_EQ(live_caches(), r->caches0);
	CHECK_EQ(ctor_calls, 0);
}

/* ------------------------------------------------------------------ */
/* The sweep driver.                                                   */

static long
vm_size_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof (line), f) != NULL)
		if (sscanf(line, "VmSize: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

typedef struct child_result {
	long count, per_site[NSITES], fired_site, failed_calls;
	long vmsize_kb, errors, nomem_warnings, failures;
	unsigned char seq[MAXPOINTS];
} child_result_t;

/*
 * Error handler of the children: a failure point may only produce a
 * "no memory" warning (vmem_create names the arena it could not make);
 * anything else is a failure to fail cleanly.
 */
static long errors_seen, nomem_seen;

static void
sweep_error_handler(const vmem_error_info_t *info, void *arg)
{
	char line[512];

	(void)arg;
	if (info->code == VMEM_E_NOMEM && info->warning) {
		nomem_seen++;
		return;
	}
	errors_seen++;
	vmem_format_error(info, line, sizeof (line));
	fprintf(stderr, "  N=%ld: reported: %s\n", sw.target, line);
}

static void
sweep_nothing(void)
{
}

/* One run in a child: the workload with point target failing, then clean. */
static void
child_run(long target, const char *only, int fd)
{
	child_result_t res;
	run_t r;

	/* A failure asks the platform's worker thread for a pressure pass,
	 * and the thread's stack counts in VmSize: start it in every run,
	 * clean or not, so that the comparison sees only lost memory. */
	(void)plat_defer(sweep_nothing);
	memset(&res, 0, sizeof (res));
	memset(&sw, 0, sizeof (sw));
	sw.target = target;
	sw.only = only;
	sw.fired_site = -1;
	tu_failures = 0;
	(void)vmem_set_error_handler(sweep_error_handler, NULL);
	vmem_set_fault_hook(fault_hook, &sw);
	workload(&r);
	vmem_set_fault_hook(NULL, NULL);
	res.count = sw.count;
	memcpy(res.per_site, sw.per_site, sizeof (res.per_site));
	res.fired_site = sw.fired_site;
	res.failed_calls = r.failed_calls;
	res.errors = errors_seen;
	res.nomem_warnings = nomem_seen;
	memcpy(res.seq, sw.seq, sizeof (res.seq));
	/* The workload goes on: two clean runs, everything succeeds. */
	for (int k = 0; k < 2; k++) {
		workload(&r);
		CHECK_EQ(r.failed_calls, 0);
	}
	CHECK_EQ(errors_seen, 0);
	CHECK_EQ(nomem_seen, res.nomem_warnings);
	res.vmsize_kb = vm_size_kb();
	res.failures = tu_failures;
	if (write(fd, &res, sizeof (res)) != (ssize_t)sizeof (res))
		_exit(2);
	_exit(0);
}

static int
fork_run(long target, const char *only, child_result_t *res)
{
	int fds[2], status;
	pid_t pid;

	REQUIRE(pipe(fds) == 0);
	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		child_run(target, only, fds[1]);
	}
	close(fds[1]);
	memset(res, 0, sizeof (*res));
	ssize_t n = read(fds[0], res, sizeof (*res));
	close(fds[0]);
	REQUIRE(waitpid(pid, &status, 0) == pid);
	if (n != (ssize_t)sizeof (*res) || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		fprintf(stderr, "N=%ld: child crashed (status 0x%x)\n", target,
		    status);
		return -1;
	}
	return 0;
}

static void
pin_to_one_cpu(void)
{
	cpu_set_t set;
	int cpu = sched_getcpu();

	CPU_ZERO(&set);
	CPU_SET(cpu < 0 ? 0 : cpu, &set);
	(void)sched_setaffinity(0, sizeof (set), &set);
}

static void
test_sweep(void)
{
	const char *only = getenv("FAULT_SWEEP_SITE");
	child_result_t ref, res;
	long fired[NSITES] = { 0 }, failed_calls = 0, absorbed = 0;

	REQUIRE(fork_run(0, only, &ref) == 0);
	CHECK_EQ(ref.failures, 0);
	CHECK_EQ(ref.failed_calls, 0);
	CHECK_EQ(ref.errors, 0);
	CHECK_EQ(ref.nomem_warnings, 0);
	CHECK(ref.count <= MAXPOINTS);
	printf("failure points: %ld (", ref.count);
	for (int i = 0; i < NSITES; i++)
		printf("%s%s %ld", i ? ", " : "", site_names[i],
		    ref.per_site[i]);
	printf(")\n");
	for (int i = 0; i < NSITES; i++)
		if (only == NULL || strcmp(only, site_names[i]) == 0)
			CHECK(ref.per_site[i] > 0);
	for (long n = 1; n <= ref.count; n++) {
		if (fork_run(n, only, &res) != 0) {
			tu_failures++;
			continue;
		}
		if (verbose)
			printf("N=%ld %s: %ld calls failed, VmSize %ld kB\n",
			    n, res.fired_site >= 0 ?
			    site_names[res.fired_site] : "-",
			    res.failed_calls, res.vmsize_kb);
		if (res.failures != 0)
			fprintf(stderr, "N=%ld (%s): %ld checks failed\n", n,
			    res.fired_site >= 0 ?
			    site_names[res.fired_site] : "-", res.failures);
		tu_failures += (int)res.failures;
		/* Runs are deterministic up to the failed point. */
		CHECK(res.fired_site >= 0);
		if (n <= MAXPOINTS)
			CHECK_EQ(res.fired_site, ref.seq[n - 1]);
		CHECK_EQ(res.errors, 0);
		/* A point whose failure a retry absorbed fails no call. */
		if (res.failed_calls == 0)
			absorbed++;
		/* No memory lost for good: as much as after clean runs. */
		if (res.vmsize_kb != ref.vmsize_kb)
			fprintf(stderr, "N=%ld: VmSize %ld kB, clean %ld kB\n",
			    n, res.vmsize_kb, ref.vmsize_kb);
		CHECK(res.vmsize_kb <= ref.vmsize_kb);
		if (res.fired_site >= 0)
			fired[res.fired_site]++;
		failed_calls += res.failed_calls;
	}
	printf("swept %ld points: %ld failed calls in all, %ld failures "
	    "absorbed by a retry (", ref.count, failed_calls, absorbed);
	for (int i = 0; i < NSITES; i++)
		printf("%s%s %ld", i ? ", " : "", site_names[i], fired[i]);
	printf(")\n");
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	pin_to_one_cpu();
	verbose = (int)tu_env_long("FAULT_SWEEP_VERBOSE", 0);
	RUN(test_sweep);
	return tu_finish();
}
