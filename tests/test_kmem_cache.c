/*
 * Object caches: each layer (CPU magazines, depot working set, slabs),
 * constructor/destructor accounting, reaping back to an empty arena,
 * KMC_NOTOUCH over integers that are not memory, KMC_NOMAGAZINE, debug
 * flags, bookkeeping charges, magazine resizing, quantum caches, and bad
 * input through the recording error handler.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <string.h>
#include <unistd.h>

#include <vmem/kmem.h>

#include "kmem_impl.h"
#include "testutil.h"

#define PAGE 4096
/* Never mapped: any dereference by kmem would crash the test. */
#define FAKE_BASE ((void *)(uintptr_t)0x100000000000ULL)

static vmem_t *
page_arena(const char *name)
{
	/* A memory arena: page-backed by the platform through kmem's heap
	 * would couple tests; a static region is simplest. */
	static char region[8][1 << 22] __attribute__((aligned(4096)));
	static int next;

	REQUIRE(next < 8);
	return vmem_create(name, region[next++], sizeof (region[0]), PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
}

typedef struct obj {
	uint64_t magic;
	char pad[56];
} obj_t;

static int ctor_calls, dtor_calls, ctor_fail_next, reclaim_calls;

static int
obj_ctor(void *buf, void *priv, int kmflag)
{
	(void)kmflag;
	CHECK(priv == (void *)&ctor_calls);
	if (ctor_fail_next) {
		ctor_fail_next = 0;
		ctor_calls++;
		return -1;
	}
	((obj_t *)buf)->magic = 0x600dULL;
	ctor_calls++;
	return 0;
}

static void
obj_dtor(void *buf, void *priv)
{
	(void)priv;
	CHECK(((obj_t *)buf)->magic == 0x600dULL);
	((obj_t *)buf)->magic = 0;
	dtor_calls++;
}

static void
obj_reclaim(void *priv)
{
	(void)priv;
	reclaim_calls++;
}

static void
test_alloc_free_and_reap_to_empty(void)
{
	vmem_t *a = page_arena("kc_basic");
	kmem_cache_t *cp = kmem_cache_create("obj", sizeof (obj_t), 64,
	    obj_ctor, obj_dtor, obj_reclaim, &ctor_calls, a, 0);
	enum { N = 3000 };
	static obj_t *v[N];
	kmem_cache_stats_t st;
	int i, j;

	REQUIRE(cp != NULL);
	ctor_calls = dtor_calls = 0;
	for (i = 0; i < N; i++) {
		v[i] = kmem_cache_alloc(cp, KM_SLEEP);
		REQUIRE(v[i] != NULL);
		CHECK(((uintptr_t)v[i] & 63) == 0);
		CHECK(v[i]->magic == 0x600dULL);
		CHECK(vmem_contains(a, v[i], sizeof (obj_t)));
	}
	for (i = 1; i < N; i += 97)
		for (j = 0; j < i; j += 101)
			CHECK(v[i] != v[j]);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.buf_inuse, N);
	CHECK_EQ(st.alloc, N);
	CHECK(st.buf_total >= N);
	CHECK_EQ(ctor_calls, N);
	for (i = 0; i < N; i++)
		kmem_cache_free(cp, v[i]);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.buf_inuse, 0);
	CHECK_EQ(st.free, N);
	/* Constructed objects are kept: reuse does not construct again. */
	v[0] = kmem_cache_alloc(cp, KM_SLEEP);
	CHECK_EQ(ctor_calls, N);
	kmem_cache_free(cp, v[0]);
	CHECK(dtor_calls < N);
	kmem_cache_reap_now(cp);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.slabs, 0);
	CHECK_EQ(st.buf_cached, 0);
	CHECK_EQ(st.construct, st.destruct);
	CHECK_EQ(dtor_calls, ctor_calls);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	/* kmem_reap asks every cache's client to give memory back. */
	reclaim_calls = 0;
	kmem_reap();
	CHECK_EQ(reclaim_calls, 1);
	kmem_cache_destroy(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	CHECK_ARENA(a);
	vmem_destroy(a);
}

/* As in illumos, a cache with no arena takes kmem_alloc's: real memory. */
static void
test_null_arena_is_the_default_heap(void)
{
	kmem_cache_t *cp = kmem_cache_create("obj_default", sizeof (obj_t),
	    0, obj_ctor, obj_dtor, NULL, &ctor_calls, NULL, 0);
	obj_t *o;

	REQUIRE(cp != NULL);
	o = kmem_cache_alloc(cp, KM_SLEEP);
	REQUIRE(o != NULL);
	CHECK(o->magic == 0x600dULL);   /* the constructor wrote it */
	memset(o->pad, 0x5a, sizeof (o->pad));
	kmem_cache_free(cp, o);
	kmem_cache_destroy(cp);
}

/* After a failed construction the cache allocates again; then it and its
 * arena go, the arena holding nothing. */
static void
cache_recovers_and_goes(kmem_cache_t *cp, vmem_t *a)
{
	void *p = kmem_cache_alloc(cp, KM_NOSLEEP);

	CHECK(p != NULL);
	kmem_cache_free(cp, p);
	kmem_cache_reap_now(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	kmem_cache_destroy(cp);
	vmem_destroy(a);
}

static void
test_constructor_failure(void)
{
	vmem_t *a = page_arena("kc_ctorfail");
	kmem_cache_t *cp = kmem_cache_create("obj_fail", sizeof (obj_t), 0,
	    obj_ctor, obj_dtor, NULL, &ctor_calls, a, 0);
	kmem_cache_stats_t st;

	ctor_calls = dtor_calls = 0;
	ctor_fail_next = 1;
	CHECK(kmem_cache_alloc(cp, KM_NOSLEEP) == NULL);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.alloc_fail, 1);
	CHECK_EQ(st.buf_inuse, 0);
	cache_recovers_and_goes(cp, a);
}

/*
 * With KMF_DEADBEEF, magazine rounds are kept unconstructed (poisoned), so
 * the constructor runs on every allocation, from a magazine too. A failure
 * there is counted like one on a fresh slab buffer.
 */
static void
test_constructor_failure_on_magazine_round(void)
{
	vmem_t *a = page_arena("kc_ctorfail_mag");
	kmem_cache_t *cp = kmem_cache_create("obj_fail_mag", sizeof (obj_t),
	    0, obj_ctor, obj_dtor, NULL, &ctor_calls, a, 0);
	kmem_cache_stats_t st;
	void *p;

	REQUIRE(kmem_cache_set_debug(cp, KMF_DEADBEEF) == 0);
	p = kmem_cache_alloc(cp, KM_NOSLEEP);
	REQUIRE(p != NULL);
	kmem_cache_free(cp, p);
	kmem_cache_get_stats(cp, &st);
	REQUIRE(st.buf_cached == 1);    /* the next allocation takes it */
	ctor_fail_next = 1;
	CHECK(kmem_cache_alloc(cp, KM_NOSLEEP) == NULL);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.alloc_fail, 1);
	CHECK_EQ(st.buf_inuse, 0);
	CHECK_EQ(st.alloc, st.free);
	cache_recovers_and_goes(cp, a);
}

/*
 * kmem_cache_set_debug while a slab of the cache is being made (its import
 * runs with the slab lock dropped) must be refused like a cache with
 * slabs: the slab is cut for the old geometry. The import function asks
 * for the change itself, which makes the window certain.
 */
static kmem_cache_t *making_cache;
static vmem_t *making_src;
static int making_verdict = 1;

static void *
import_changing_debug(vmem_t *src, size_t size, int vmflag)
{
	if (making_verdict == 1)
		making_verdict = kmem_cache_set_debug(making_cache,
		    KMF_DEADBEEF | KMF_REDZONE);
	return vmem_alloc(src, size, vmflag);
}

static void
test_set_debug_refused_while_slab_is_made(void)
{
	vmem_t *a;
	kmem_cache_stats_t st;
	void *p;

	making_src = page_arena("kc_making_src");
	a = vmem_create("kc_making", NULL, 0, PAGE, import_changing_debug,
	    vmem_free, making_src, 0, VM_SLEEP);
	REQUIRE(a != NULL);
	making_cache = kmem_cache_create("obj_making", 256, 0, NULL, NULL,
	    NULL, NULL, a, 0);
	REQUIRE(making_cache != NULL);
	tu_record_errors();
	p = kmem_cache_alloc(making_cache, KM_SLEEP);
	tu_default_errors();
	CHECK(p != NULL);
	CHECK_EQ(making_verdict, -1);
	CHECK_EQ(tu_err.code, KMEM_E_BUSY);
	kmem_cache_get_stats(making_cache, &st);
	CHECK_EQ(st.debug, 0);
	kmem_cache_free(making_cache, p);
	kmem_cache_reap_now(making_cache);
	CHECK_EQ(kmem_cache_test_check(making_cache), 0);
	/* With no slab, made or being made, the change is taken. */
	making_verdict = 0;
	CHECK_EQ(kmem_cache_set_debug(making_cache, KMF_DEADBEEF), 0);
	kmem_cache_destroy(making_cache);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	vmem_destroy(a);
	vmem_destroy(making_src);
}

static void
test_nomagazine_constructs_every_time(void)
{
	vmem_t *a = page_arena("kc_nomag");
	kmem_cache_t *cp = kmem_cache_create("obj_nomag", sizeof (obj_t), 0,
	    obj_ctor, obj_dtor, NULL, &ctor_calls, a, KMC_NOMAGAZINE);
	kmem_cache_stats_t st;
	int i;

	ctor_calls = dtor_calls = 0;
	for (i = 0; i < 100; i++) {
		void *p = kmem_cache_alloc(cp, KM_SLEEP);
		REQUIRE(p != NULL);
		kmem_cache_free(cp, p);
	}
	CHECK_EQ(ctor_calls, 100);
	CHECK_EQ(dtor_calls, 100);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.magsize, 0);
	CHECK_EQ(st.slab_alloc, 100);
	/* Double free is caught at the slab layer even without debug. */
	tu_record_errors();
	{
		void *p = kmem_cache_alloc(cp, KM_SLEEP);
		void *q = kmem_cache_alloc(cp, KM_SLEEP);
		kmem_cache_free(cp, p);
		kmem_cache_free(cp, p);
		CHECK_EQ(tu_err.count, 1);
		CHECK_EQ(tu_err.code, KMEM_E_DOUBLEFREE);
		kmem_cache_free(cp, q);
	}
	tu_default_errors();
	CHECK_EQ(dtor_calls, ctor_calls);
	kmem_cache_destroy(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	vmem_destroy(a);
}

/* Buffers are integers in a range that is not mapped. */
/*
 * A free is accepted only at a chunk start of one of the cache's slabs,
 * whatever way the chunk index is computed: a shift-like multiply (chunks
 * of a power of two), a reciprocal multiply (other chunks), a division
 * (slabs of 2 GiB and more).
 */
static void
check_chunk_starts(vmem_t *a, const char *name, size_t chunk, size_t slab)
{
	kmem_cache_t *cp = kmem_cache_create_slab(name, chunk, 0, NULL, NULL,
	    NULL, NULL, a, KMC_NOTOUCH, slab);
	size_t quantum = vmem_quantum(a);
	static const size_t probes[] = { 1, 8 };
	enum { N = 3 };
	char *v[N];
	int i;

	REQUIRE(cp != NULL);
	for (i = 0; i < N; i++)
		REQUIRE((v[i] = kmem_cache_alloc(cp, KM_NOSLEEP)) != NULL);
	for (i = 0; i < N; i++) {
		CHECK(kmem_cache_owns(cp, v[i]));
		for (size_t k = 0; k < 2; k++) {
			size_t d = probes[k] * quantum;
			if (d % chunk != 0) {
				CHECK(!kmem_cache_owns(cp, v[i] + d));
				CHECK(kmem_cache_free_quiet(cp, v[i] + d,
				    "test") == -1);
			}
		}
		if (chunk > quantum)
			CHECK(!kmem_cache_owns(cp, v[i] + chunk - quantum));
	}
	{
		kmem_cache_stats_t st;
		kmem_cache_get_stats(cp, &st);
		CHECK_EQ(st.slabsize, slab);
	}
	for (i = 0; i < N; i++)
		kmem_cache_free(cp, v[i]);
	CHECK_EQ(kmem_cache_test_check(cp), 0);
	kmem_cache_destroy(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
}

static void
test_chunk_index_every_way(void)
{
	vmem_t *pages = vmem_create("kc_chunks", FAKE_BASE, (size_t)1 << 34,
	    PAGE, NULL, NULL, NULL, 0, VM_SLEEP);
	vmem_t *bytes = vmem_create("kc_chunk_ids", (void *)(uintptr_t)64,
	    (size_t)1 << 20, 1, NULL, NULL, NULL, 0, VM_SLEEP);

	REQUIRE(pages != NULL && bytes != NULL);
	check_chunk_starts(pages, "pow2_4k", PAGE, 16 * PAGE);
	check_chunk_starts(pages, "pow2_8k", 2 * PAGE, 16 * PAGE);
	check_chunk_starts(pages, "recip_12k", 3 * PAGE, 32 * PAGE);
	check_chunk_starts(pages, "recip_20k", 5 * PAGE, 64 * PAGE);
	check_chunk_starts(pages, "divide_12k", 3 * PAGE, (size_t)3 << 30);
	check_chunk_starts(pages, "divide_8k", 2 * PAGE, (size_t)1 << 31);
	check_chunk_starts(bytes, "recip_24b", 24, 24 * 64);
	check_chunk_starts(bytes, "pow2_1b", 1, 64);
	vmem_destroy(pages);
	vmem_destroy(bytes);
}

static void
test_notouch_over_integers(void)
{
	vmem_t *a = vmem_create("kc_ints", FAKE_BASE, (size_t)1 << 30, PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = kmem_cache_create("ints_3p", 3 * PAGE, 0, NULL,
	    NULL, NULL, NULL, a, KMC_NOTOUCH);
	enum { N = 500 };
	static void *v[N];
	kmem_cache_stats_t st;
	int i;

	REQUIRE(a != NULL && cp != NULL);
	for (i = 0; i < N; i++) {
		uintptr_t x;
		v[i] = kmem_cache_alloc(cp, KM_NOSLEEP);
		REQUIRE(v[i] != NULL);
		x = (uintptr_t)v[i];
		CHECK(x >= (uintptr_t)FAKE_BASE);
		CHECK(x + 3 * PAGE <= (uintptr_t)FAKE_BASE + ((size_t)1 << 30));
		CHECK(x % PAGE == 0);
	}
	for (i = 1; i < N; i++)
		CHECK(v[i] != v[i - 1]);
	for (i = 0; i < N; i += 2)
		kmem_cache_free(cp, v[i]);
	for (i = 1; i < N; i += 2)
		kmem_cache_free(cp, v[i]);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.buf_inuse, 0);
	kmem_cache_reap_now(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	/* An interior address is not a buffer of the cache. */
	tu_record_errors();
	v[0] = kmem_cache_alloc(cp, KM_NOSLEEP);
	kmem_cache_free(cp, (char *)v[0] + PAGE);
	CHECK_EQ(tu_err.code, KMEM_E_WRONGCACHE);
	CHECK_EQ(tu_err.addr, (uintptr_t)v[0] + PAGE);
	tu_default_errors();
	kmem_cache_free(cp, v[0]);
	kmem_cache_destroy(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	vmem_destroy(a);
}

/*
 * A cache whose magazines only a test changes: 64 KiB buffers start with
 * 1-round magazines, and 3 rounds of them would pass the 128 KiB that
 * depot traffic may grow a magazine to (KMEM_TRAFFIC_MAXBYTES).
 */
static kmem_cache_t *
steady_cache(const char *name, vmem_t *a)
{
	kmem_cache_t *cp = kmem_cache_create(name, 16 * PAGE, 0, NULL, NULL,
	    NULL, NULL, a, KMC_NOTOUCH);
	kmem_cache_stats_t st;

	REQUIRE(cp != NULL);
	kmem_cache_get_stats(cp, &st);
	REQUIRE(st.magsize == 1);
	return cp;
}

/* Take n buffers and give them back: a burst that fills the depot. */
static void
burst(kmem_cache_t *cp, void **v, int n)
{
	for (int i = 0; i < n; i++)
		REQUIRE((v[i] = kmem_cache_alloc(cp, KM_NOSLEEP)) != NULL);
	for (int i = 0; i < n; i++)
		kmem_cache_free(cp, v[i]);
}

/* Depot working set: only magazines idle over a whole interval go. */
static void
test_depot_working_set(void)
{
	vmem_t *a = vmem_create("kc_ws", FAKE_BASE, (size_t)1 << 30, PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = steady_cache("ws", a);
	enum { N = 400 };
	static void *v[N];
	kmem_cache_stats_t st;
	size_t m, full0;

	kmem_cache_get_stats(cp, &st);
	m = st.magsize;
	REQUIRE(m >= 1);
	burst(cp, v, N);
	kmem_cache_get_stats(cp, &st);
	full0 = st.depot_full;
	CHECK(full0 >= 10);
	/* Interval 1 ends: the full list grew from 0, nothing was idle. */
	kmem_cache_update(cp);
	kmem_reap();
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.depot_full, full0);
	/* Interval 2: use 2 full magazines' worth, then give it back. */
	burst(cp, v, (int)(4 * m));
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.depot_full, full0);
	kmem_cache_update(cp);
	kmem_reap();
	kmem_cache_get_stats(cp, &st);
	/* The CPU layer absorbs 2 magazines (loaded and previous); the
	 * depot handed out the rest and those stayed in the working set. */
	CHECK(st.depot_full >= 1);
	CHECK(st.depot_full <= 4);
	CHECK(st.depot_full < full0);
	/* Interval 3 idle: everything in the depot goes. */
	kmem_cache_update(cp);
	kmem_reap();
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.depot_full, 0);
	CHECK(st.buf_cached <= 2 * m);
	kmem_cache_reap_now(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	kmem_cache_destroy(cp);
	vmem_destroy(a);
}

/*
 * A reap frees what stayed idle through the last interval and through this
 * one so far: a burst now that drained the depot and filled it again is
 * the working set, even though the depot was idle through the interval
 * before (illumos reaps the lesser of the two minimums).
 */
static void
test_depot_reap_spares_this_intervals_burst(void)
{
	vmem_t *a = vmem_create("kc_ws_burst", FAKE_BASE, (size_t)1 << 30,
	    PAGE, NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = steady_cache("ws_burst", a);
	enum { N = 400 };
	static void *v[N];
	kmem_cache_stats_t st;
	size_t full0;

	burst(cp, v, N);
	kmem_cache_get_stats(cp, &st);
	full0 = st.depot_full;
	REQUIRE(full0 >= 10);
	/* A whole interval idle: all of the depot may be reaped now... */
	kmem_cache_update(cp);
	kmem_cache_update(cp);
	/* ...but the same burst again drains it and fills it back. */
	burst(cp, v, N);
	kmem_reap();
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.depot_full, full0);
	CHECK_EQ(st.slab_destroy, 0);
	/* The burst's interval ends; a whole one without use follows. */
	kmem_cache_update(cp);
	kmem_reap();
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.depot_full, full0);
	kmem_cache_update(cp);
	kmem_reap();
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.depot_full, 0);
	kmem_cache_reap_now(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	kmem_cache_destroy(cp);
	vmem_destroy(a);
}

static void
test_magazine_resize(void)
{
	vmem_t *a = vmem_create("kc_resize", FAKE_BASE, (size_t)1 << 30, PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = steady_cache("resize", a);
	static void *v[300];
	kmem_cache_stats_t st;
	size_t m0;
	int i;

	kmem_cache_get_stats(cp, &st);
	m0 = st.magsize;
	for (i = 0; i < 300; i++)
		v[i] = kmem_cache_alloc(cp, KM_NOSLEEP);
	for (i = 0; i < 300; i++)
		kmem_cache_free(cp, v[i]);
	/* Little contention: no change. */
	kmem_cache_test_contend(cp, 2);
	kmem_cache_update(cp);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.magsize, m0);
	CHECK_EQ(st.mag_resize, 0);
	kmem_cache_test_contend(cp, 10);
	kmem_cache_update(cp);
	kmem_cache_get_stats(cp, &st);
	CHECK(st.magsize > m0);
	CHECK_EQ(st.mag_resize, 1);
	CHECK_EQ(st.depot_full, 0); /* old magazines were purged */
	CHECK_EQ(st.buf_cached, 0);
	for (i = 0; i < 300; i++)
		REQUIRE((v[i] = kmem_cache_alloc(cp, KM_NOSLEEP)) != NULL);
	for (i = 0; i < 300; i++)
		kmem_cache_free(cp, v[i]);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.buf_inuse, 0);
	kmem_cache_reap_now(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	kmem_cache_destroy(cp);
	vmem_destroy(a);
}

/* Depot traffic: fill and empty the magazines many times over. */
static void
depot_traffic(kmem_cache_t *cp, void **v, int n, int rounds)
{
	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < n; i++)
			REQUIRE((v[i] = kmem_cache_alloc(cp, KM_NOSLEEP)) !=
			    NULL);
		for (int i = 0; i < n; i++)
			kmem_cache_free(cp, v[i]);
	}
}

/*
 * Without any kmem_cache_update: contention seen in a window of depot
 * entries grows the magazines by one step, at once; traffic without
 * contention does not grow a cache at the traffic cap.
 */
static void
test_magazine_resize_between_updates(void)
{
	vmem_t *a = vmem_create("kc_window", FAKE_BASE, (size_t)1 << 30, PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *quiet = steady_cache("window_quiet", a);
	kmem_cache_t *cp = steady_cache("window", a);
	static void *v[300];
	kmem_cache_stats_t st;
	size_t m0;

	/* 300 buffers through 1-round magazines: hundreds of depot entries
	 * per pass, thousands in all. */
	depot_traffic(quiet, v, 300, 40);
	kmem_cache_get_stats(quiet, &st);
	CHECK(st.depot_alloc + st.depot_free > 4096);  /* 4 windows */
	CHECK_EQ(st.mag_resize, 0);

	kmem_cache_get_stats(cp, &st);
	m0 = st.magsize;
	kmem_cache_test_contend(cp, 40);
	depot_traffic(cp, v, 300, 40);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.mag_resize, 1);   /* one window saw it, once */
	CHECK(st.magsize > m0);
	CHECK_EQ(st.buf_inuse, 0);
	kmem_cache_reap_now(cp);
	kmem_cache_reap_now(quiet);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	kmem_cache_destroy(cp);
	kmem_cache_destroy(quiet);
	vmem_destroy(a);
}

/*
 * One thread, no contention: bursts longer than two magazines exchange
 * with the depot every few operations, and the magazines grow until a
 * magazine amortizes an exchange over 16 operations or more (4 KiB: 3 ->
 * 7 -> 15), or until a magazine would hold more than 128 KiB of buffers
 * (16 KiB: 1 -> 3 -> 7, not 15). A heap that only grows or only shrinks
 * does not exchange and does not grow; alternating pairs never leave the
 * loaded magazine. No buffer is lost.
 */
static void
test_magazine_grow_traffic(void)
{
	vmem_t *a = vmem_create("kc_traffic", FAKE_BASE, (size_t)1 << 30,
	    PAGE, NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *bursty = kmem_cache_create("traffic_bursty", PAGE, 0,
	    NULL, NULL, NULL, NULL, a, KMC_NOTOUCH);
	kmem_cache_t *big = kmem_cache_create("traffic_big", 4 * PAGE, 0,
	    NULL, NULL, NULL, NULL, a, KMC_NOTOUCH);
	kmem_cache_t *pairs = kmem_cache_create("traffic_pairs", 64, 0, NULL,
	    NULL, NULL, NULL, a, KMC_NOTOUCH);
	static void *v[20000];
	kmem_cache_stats_t st;
	size_t m0;

	kmem_cache_get_stats(bursty, &st);
	CHECK_EQ(st.magsize, 3);
	depot_traffic(bursty, v, 300, 100);
	kmem_cache_get_stats(bursty, &st);
	CHECK_EQ(st.magsize, 15);
	CHECK_EQ(st.mag_grow_traffic, 2);   /* 3 -> 7 -> 15 */
	CHECK_EQ(st.mag_resize, 2);
	CHECK_EQ(st.buf_inuse, 0);
	CHECK_EQ(st.alloc, 30000);
	CHECK_EQ(st.free, 30000);
	/* 15 rounds amortize: more of the same changes nothing. */
	depot_traffic(bursty, v, 300, 20);
	kmem_cache_get_stats(bursty, &st);
	CHECK_EQ(st.magsize, 15);
	CHECK_EQ(st.mag_resize, 2);

	kmem_cache_get_stats(big, &st);
	CHECK_EQ(st.magsize, 1);
	depot_traffic(big, v, 300, 100);
	kmem_cache_get_stats(big, &st);
	CHECK_EQ(st.magsize, 7);            /* 15 x 16 KiB > 128 KiB */
	CHECK_EQ(st.mag_grow_traffic, 2);
	CHECK_EQ(st.buf_inuse, 0);

	/* Only growing, then only shrinking: the slab layer and new
	 * magazines serve it, the depot is never asked. */
	kmem_cache_get_stats(pairs, &st);
	m0 = st.magsize;
	REQUIRE((v[0] = kmem_cache_alloc(pairs, KM_NOSLEEP)) != NULL);
	kmem_cache_free(pairs, v[0]);
	for (int i = 0; i < 20000; i++)
		REQUIRE((v[i] = kmem_cache_alloc(pairs, KM_NOSLEEP)) != NULL);
	for (int i = 0; i < 20000; i++)
		kmem_cache_free(pairs, v[i]);
	kmem_cache_get_stats(pairs, &st);
	CHECK_EQ(st.magsize, m0);
	CHECK_EQ(st.mag_resize, 0);
	CHECK_EQ(st.buf_inuse, 0);

	kmem_cache_get_stats(pairs, &st);
	m0 = st.magsize;
	for (int i = 0; i < 100000; i++) {
		REQUIRE((v[0] = kmem_cache_alloc(pairs, KM_NOSLEEP)) != NULL);
		kmem_cache_free(pairs, v[0]);
	}
	kmem_cache_get_stats(pairs, &st);
	CHECK_EQ(st.magsize, m0);
	CHECK_EQ(st.mag_resize, 0);

	kmem_cache_reap_now(bursty);
	kmem_cache_reap_now(big);
	kmem_cache_reap_now(pairs);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	kmem_cache_destroy(big);
	kmem_cache_destroy(bursty);
	kmem_cache_destroy(pairs);
	vmem_destroy(a);
}

/*
 * The slab table, model-checked: three caches (4 KiB chunks in 64 KiB
 * slabs; 12 KiB chunks, found by reciprocal division; 8 KiB chunks in
 * 24 KiB slabs, which are not a power of two, so a slab overlaps up to
 * three 16 KiB blocks) share an arena whose base is not slab-aligned, so
 * nearly every slab is entered under two or three blocks. Random
 * allocations, frees, foreign frees and reaps drive the live count up
 * and down, so slabs come and go (table deletions with back-shifting) and
 * the table grows. A page bitmap of the fake range is the model: nothing
 * handed out twice, every live buffer owned by its cache and by no other.
 * The slab layer's checker runs every 32 steps.
 */
#define TBL_PAGES 32768   /* 128 MiB of fake address space */
#define TBL_LIVE 6000

typedef struct tbl_buf {
	kmem_cache_t *cp;
	uintptr_t addr;
	size_t pages;
} tbl_buf_t;

static uint64_t tbl_used[TBL_PAGES / 64];

/* Mark b's pages taken, or (freeing) clear them; -1 if a page to take
 * was taken already or one to clear was not. */
static int
tbl_mark(uintptr_t base, const tbl_buf_t *b, int freeing)
{
	size_t first = (b->addr - base) / PAGE;

	for (size_t i = first; i < first + b->pages; i++) {
		uint64_t bit = 1ULL << (i % 64);
		if (((tbl_used[i / 64] & bit) != 0) != freeing)
			return -1;
		tbl_used[i / 64] ^= bit;
	}
	return 0;
}

static void
test_slab_table_model(void)
{
	uintptr_t base = (uintptr_t)FAKE_BASE + PAGE;
	vmem_t *a = vmem_create("kc_table", (void *)base,
	    (size_t)TBL_PAGES * PAGE, PAGE, NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *small = kmem_cache_create_slab("table_4k", PAGE, 0,
	    NULL, NULL, NULL, NULL, a, KMC_NOTOUCH, 16 * PAGE);
	kmem_cache_t *odd = kmem_cache_create_slab("table_12k", 3 * PAGE, 0,
	    NULL, NULL, NULL, NULL, a, KMC_NOTOUCH, 32 * PAGE);
	kmem_cache_t *three = kmem_cache_create_slab("table_24k_slabs",
	    2 * PAGE, 0, NULL, NULL, NULL, NULL, a, KMC_NOTOUCH, 6 * PAGE);
	kmem_cache_t *caches[3] = { small, odd, three };
	static const size_t pages[3] = { 1, 3, 2 };
	static tbl_buf_t live[TBL_LIVE];
	long steps = tu_env_long("TABLE_STEPS", tu_slow_build() ? 20000 :
	    200000);
	uint64_t seed = (uint64_t)tu_env_long("TABLE_SEED", 11);
	size_t n = 0, target = 0, peak_live = 0;
	tu_rng_t r;
	long i;

	REQUIRE(a != NULL && small != NULL && odd != NULL && three != NULL);
	{
		kmem_cache_stats_t st;
		kmem_cache_get_stats(three, &st);
		REQUIRE(st.slabsize == 6 * PAGE);
	}
	memset(tbl_used, 0, sizeof (tbl_used));
	tu_seed(&r, seed);
	printf("    slab table model: seed %llu, %ld steps\n",
	    (unsigned long long)seed, steps);
	for (i = 0; i < steps && tu_failures == 0; i++) {
		unsigned op = (unsigned)tu_range(&r, 0, 99);
		if (i % (steps / 10 + 1) == 0)
			target = (size_t)tu_range(&r, 0, TBL_LIVE);
		if (op < 2 && n > 0) {
			/* A foreign free is refused and changes nothing. */
			tbl_buf_t *b = &live[tu_range(&r, 0, n - 1)];
			kmem_cache_t *other = b->cp == small ? odd :
			    b->cp == odd ? three : small;
			CHECK(kmem_cache_free_quiet(other, (void *)b->addr,
			    "test") == -1);
			CHECK(!kmem_cache_owns(other, (void *)b->addr));
			CHECK(kmem_cache_owns(b->cp, (void *)b->addr));
		} else if (op < 3) {
			for (int k = 0; k < 3; k++)
				kmem_cache_reap_now(caches[k]);
		} else if (n > 0 && (n >= TBL_LIVE || (n > target ?
		    op < 70 : op < 30))) {
			size_t k = (size_t)tu_range(&r, 0, n - 1);
			CHECK(tbl_mark(base, &live[k], 1) == 0);
			kmem_cache_free(live[k].cp, (void *)live[k].addr);
			live[k] = live[--n];
		} else {
			tbl_buf_t *b = &live[n];
			unsigned k = op % 3;
			b->cp = caches[k];
			b->pages = pages[k];
			b->addr = (uintptr_t)kmem_cache_alloc(b->cp,
			    KM_NOSLEEP);
			REQUIRE(b->addr != 0);
			CHECK((b->addr - base) % PAGE == 0);
			CHECK(tbl_mark(base, b, 0) == 0);
			n++;
		}
		if (i % 32 == 0)
			for (int k = 0; k < 3; k++)
				CHECK_EQ(kmem_cache_test_check(caches[k]), 0);
		if (n > peak_live)
			peak_live = n;
	}
	while (n > 0) {
		n--;
		kmem_cache_free(live[n].cp, (void *)live[n].addr);
	}
	for (int k = 0; k < 3; k++) {
		kmem_cache_reap_now(caches[k]);
		CHECK_EQ(kmem_cache_test_check(caches[k]), 0);
	}
	/* The live set went high enough for the table to grow a lot. */
	CHECK(peak_live >= (size_t)(steps / 20 < TBL_LIVE / 2 ? steps / 20 :
	    TBL_LIVE / 2));
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	for (int k = 0; k < 3; k++)
		kmem_cache_destroy(caches[k]);
	vmem_destroy(a);
}

static int
fail_slabtable(const char *site, void *arg)
{
	(void)arg;
	return strcmp(site, "slabtable") == 0;
}

/*
 * A slab table that cannot grow still takes slabs until it is 7/8 full
 * (8 entries: 3 slabs of 2 blocks each); the next slab is refused, the
 * allocation fails cleanly with nothing reported (with KM_SLEEP, a
 * warning), and once memory is back the table grows and allocation goes
 * on.
 */
static void
test_slab_table_cannot_grow(void)
{
	uintptr_t base = (uintptr_t)FAKE_BASE + PAGE;
	vmem_t *a = vmem_create("kc_table_full", (void *)base, 1 << 24, PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = kmem_cache_create_slab("table_full", PAGE, 0,
	    NULL, NULL, NULL, NULL, a, KMC_NOTOUCH, 4 * PAGE);
	static void *v[64];
	kmem_cache_stats_t st;
	int got = 0;

	REQUIRE(cp != NULL);
	tu_record_errors();
	tu_reset_errors();
	vmem_set_fault_hook(fail_slabtable, NULL);
	while (got < 64 && (v[got] = kmem_cache_alloc(cp, KM_NOSLEEP)) != NULL)
		got++;
	CHECK_EQ(got, 12);
	CHECK_EQ(tu_err.count, 0);
	/* KM_SLEEP cannot wait for it either; NULL comes with a warning. */
	CHECK(kmem_cache_alloc(cp, KM_SLEEP) == NULL);
	vmem_set_fault_hook(NULL, NULL);
	CHECK_EQ(tu_err.count, 1);
	CHECK_EQ(tu_err.code, VMEM_E_NOMEM);
	CHECK(tu_err.warning);
	CHECK(strcmp(tu_err.call, "kmem_cache_alloc") == 0);
	CHECK(strcmp(tu_err.name, "table_full") == 0);
	CHECK_EQ(kmem_cache_test_check(cp), 0);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.slabs, 3);
	CHECK_EQ(st.alloc_fail, 2);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 3 * 4 * PAGE);  /* 4th went back */
	while (got < 64 && (v[got] = kmem_cache_alloc(cp, KM_NOSLEEP)) != NULL)
		got++;
	CHECK_EQ(got, 64);
	CHECK_EQ(kmem_cache_test_check(cp), 0);
	while (got > 0)
		kmem_cache_free(cp, v[--got]);
	kmem_cache_reap_now(cp);
	CHECK_EQ(kmem_cache_test_check(cp), 0);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	tu_default_errors();
	kmem_cache_destroy(cp);
	vmem_destroy(a);
}

/*
 * A double free whose first free emptied the buffer's slab and sent the
 * slab back to the arena (a spare empty slab was already kept) finds no
 * slab: it is reported as a foreign pointer, and changes nothing. Found by
 * fuzz_kmem (fuzz/crashes/kmem/double-free-after-slab-released).
 */
static void
test_double_free_after_slab_released(void)
{
	vmem_t *a = page_arena("kc_released");
	kmem_cache_t *cp = kmem_cache_create("released", 2000, 0, NULL, NULL,
	    NULL, NULL, a, KMC_NOMAGAZINE);
	kmem_cache_stats_t st;
	static void *v[64];
	size_t per, i;
	int gone = 0, kept = 0;

	kmem_cache_get_stats(cp, &st);
	per = st.bufs_per_slab;
	REQUIRE(2 * per <= 64);
	for (i = 0; i < 2 * per; i++)
		REQUIRE((v[i] = kmem_cache_alloc(cp, KM_SLEEP)) != NULL);
	for (i = 0; i < 2 * per; i++)
		kmem_cache_free(cp, v[i]);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.slabs, 1);            /* the spare */
	tu_record_errors();
	for (i = 0; i < 2 * per; i += per) {
		int owned = kmem_cache_owns(cp, v[i]);
		tu_reset_errors();
		kmem_cache_free(cp, v[i]);
		CHECK_EQ(tu_err.count, 1);
		CHECK_EQ(tu_err.code, owned ? KMEM_E_DOUBLEFREE :
		    KMEM_E_WRONGCACHE);
		gone += !owned;
		kept += owned;
	}
	tu_default_errors();
	CHECK_EQ(gone, 1);
	CHECK_EQ(kept, 1);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.buf_inuse, 0);
	CHECK_EQ(st.slabs, 1);
	kmem_cache_destroy(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	vmem_destroy(a);
}

static void
test_wrong_cache_and_debug_errors(void)
{
	vmem_t *a = page_arena("kc_errors");
	kmem_cache_t *c1 = kmem_cache_create("err_a", 40, 0, NULL, NULL, NULL,
	    NULL, a, 0);
	kmem_cache_t *c2 = kmem_cache_create("err_b", 40, 0, NULL, NULL, NULL,
	    NULL, a, 0);
	kmem_cache_t *cd;
	kmem_cache_stats_t st;
	int old;
	char *p, *q;

	tu_record_errors();
	p = kmem_cache_alloc(c1, KM_SLEEP);
	kmem_cache_free(c2, p);
	CHECK_EQ(tu_err.count, 1);
	CHECK_EQ(tu_err.code, KMEM_E_WRONGCACHE);
	CHECK(strcmp(tu_err.name, "err_b") == 0);
	CHECK(strcmp(tu_err.call, "kmem_cache_free") == 0);
	CHECK_EQ(tu_err.addr, (uintptr_t)p);
	kmem_cache_get_stats(c1, &st);
	CHECK_EQ(st.buf_inuse, 1); /* nothing changed */
	kmem_cache_free(c1, p);
	CHECK_EQ(tu_err.count, 1);

	/* Debug on: double free, redzone, modify after free. */
	old = kmem_set_debug_flags(KMF_DEBUG);
	cd = kmem_cache_create("err_debug", 40, 0, NULL, NULL, NULL, NULL, a,
	    0);
	kmem_set_debug_flags(old);
	kmem_cache_get_stats(cd, &st);
	CHECK_EQ(st.debug, KMF_DEBUG);
	CHECK(st.chunksize >= 48);
	tu_reset_errors();
	p = kmem_cache_alloc(cd, KM_SLEEP);
	q = kmem_cache_alloc(cd, KM_SLEEP);
	kmem_cache_free(cd, p);
	CHECK_EQ(tu_err.count, 0);
	kmem_cache_free(cd, p);
	CHECK_EQ(tu_err.count, 1);
	CHECK_EQ(tu_err.code, KMEM_E_DOUBLEFREE);
	q[40] = 'x'; /* one past the end */
	kmem_cache_free(cd, q);
	CHECK_EQ(tu_err.count, 2);
	CHECK_EQ(tu_err.code, KMEM_E_REDZONE);
	q[40] = (char)0xfe;
	kmem_cache_free(cd, q); /* repaired: the buffer was still ours */
	CHECK_EQ(tu_err.count, 2);
	/* Use after free: write into a freed buffer, get it back. */
	p = kmem_cache_alloc(cd, KM_SLEEP);
	kmem_cache_free(cd, p);
	p[3] = 1;
	q = kmem_cache_alloc(cd, KM_SLEEP);
	CHECK(q == p); /* LIFO magazine */
	CHECK_EQ(tu_err.count, 3);
	CHECK_EQ(tu_err.code, KMEM_E_MODIFIED);
	kmem_cache_free(cd, q);
	CHECK_EQ(tu_err.count, 3);

	/* Changing debug flags needs an empty cache. */
	p = kmem_cache_alloc(c1, KM_SLEEP);
	CHECK_EQ(kmem_cache_set_debug(c1, KMF_DOUBLEFREE), -1);
	CHECK_EQ(tu_err.code, KMEM_E_BUSY);
	kmem_cache_free(c1, p);
	CHECK_EQ(kmem_cache_set_debug(c1, KMF_DOUBLEFREE), 0);
	p = kmem_cache_alloc(c1, KM_SLEEP);
	kmem_cache_free(c1, p);
	kmem_cache_free(c1, p);
	CHECK_EQ(tu_err.code, KMEM_E_DOUBLEFREE);

	/* Bad arguments. */
	tu_reset_errors();
	CHECK(kmem_cache_create("bad", 0, 0, NULL, NULL, NULL, NULL, a, 0) ==
	    NULL);
	CHECK_EQ(tu_err.code, KMEM_E_BADARG);
	CHECK(kmem_cache_create("bad", 8, 3, NULL, NULL, NULL, NULL, a, 0) ==
	    NULL);
	CHECK_EQ(tu_err.count, 2);

	/* Destroy with a buffer out: a leak warning, arena gets it all. */
	tu_reset_errors();
	p = kmem_cache_alloc(c2, KM_SLEEP);
	kmem_cache_destroy(c2);
	CHECK_EQ(tu_err.count, 1);
	CHECK_EQ(tu_err.code, KMEM_E_LEAK);
	CHECK(tu_err.warning);
	tu_default_errors();
	kmem_cache_destroy(c1);
	kmem_cache_destroy(cd);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	CHECK_ARENA(a);
	vmem_destroy(a);
}

static long charged;

static void
charge(void *arg, long delta)
{
	CHECK(arg == &charged);
	charged += delta;
}

static void
test_meta_charge(void)
{
	vmem_t *a = vmem_create("kc_meta", FAKE_BASE, (size_t)1 << 30, PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = kmem_cache_create("meta", 64, 0, NULL, NULL, NULL,
	    NULL, a, KMC_NOTOUCH);
	kmem_cache_stats_t st;
	static void *v[5000];
	int i;

	charged = 0;
	kmem_cache_set_meta_charge(cp, charge, &charged);
	kmem_cache_get_stats(cp, &st);
	CHECK(charged > 0);
	CHECK_EQ(charged, st.meta_bytes);
	for (i = 0; i < 5000; i++)
		v[i] = kmem_cache_alloc(cp, KM_NOSLEEP);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(charged, st.meta_bytes);
	CHECK(st.slabs > 1);
	/* Slab records are outside the buffers and are accounted. */
	CHECK(st.meta_bytes > st.slabs * 64);
	for (i = 0; i < 5000; i++)
		kmem_cache_free(cp, v[i]);
	kmem_cache_reap_now(cp);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(charged, st.meta_bytes);
	kmem_cache_destroy(cp);
	CHECK_EQ(charged, 0);
	vmem_destroy(a);
}

static void
collect(void *arg, const char *line)
{
	char *buf = arg;

	if (strlen(buf) + strlen(line) < 8192)
		strcat(buf, line);
}

static void
test_kmastat(void)
{
	vmem_t *a = page_arena("kc_stat");
	kmem_cache_t *cp = kmem_cache_create("kmastat_probe", 100, 0, NULL,
	    NULL, NULL, NULL, a, 0);
	static char out[8192];
	void *p = kmem_cache_alloc(cp, KM_SLEEP);
	void *q = kmem_cache_alloc(cp, KM_SLEEP);
	kmem_cache_stats_t st;
	const char *line;
	char name[64];
	size_t size, inuse, total, mem, magsize, meta;
	unsigned long long allocs, fails;

	kmem_cache_free(cp, q);
	kmem_cache_get_stats(cp, &st);
	out[0] = '\0';
	kmem_dump_caches(collect, out);
	CHECK(strstr(out, "buf") != NULL);
	CHECK(strstr(out, "Total") != NULL);
	/* Each column is the statistic it is headed with. */
	line = strstr(out, "kmastat_probe");
	REQUIRE(line != NULL);
	CHECK_EQ(sscanf(line, "%63s %zu %zu %zu %zu %llu %llu %zu %zu", name,
	    &size, &inuse, &total, &mem, &allocs, &fails, &magsize, &meta), 9);
	CHECK_EQ(size, 100);
	CHECK_EQ(inuse, 1);
	CHECK_EQ(total, st.buf_total);
	CHECK(total > inuse);
	CHECK_EQ(mem, st.mem_total);
	CHECK_EQ(allocs, 2);
	CHECK_EQ(fails, 0);
	CHECK_EQ(magsize, st.magsize);
	CHECK_EQ(meta, st.meta_bytes);
	kmem_cache_free(cp, p);
	kmem_cache_destroy(cp);
	out[0] = '\0';
	kmem_dump_caches(collect, out);
	CHECK(strstr(out, "kmastat_probe") == NULL);
	vmem_destroy(a);
}

typedef struct find_ctx {
	const char *name;
	kmem_cache_t *cp;
} find_ctx_t;

static void
find_cache(kmem_cache_t *cp, void *arg)
{
	find_ctx_t *f = arg;

	if (strcmp(kmem_cache_name(cp), f->name) == 0)
		f->cp = cp;
}

/* vmem quantum caches are kmem caches (wired by VMEM_WITH_KMEM). */
static void
test_quantum_caches(void)
{
	vmem_t *a = vmem_create("qc", FAKE_BASE, (size_t)1 << 30, PAGE, NULL,
	    NULL, NULL, 4 * PAGE, VM_SLEEP);
	static void *v[2000];
	static size_t sz[2000];
	find_ctx_t f = { "qc_12288", NULL };
	kmem_cache_stats_t st;
	vmem_stats_t vs;
	tu_rng_t r;
	int i;

	REQUIRE(a != NULL);
	kmem_foreach_cache(find_cache, &f);
	REQUIRE(f.cp != NULL);
	kmem_cache_get_stats(f.cp, &st);
	CHECK(st.cflags & KMC_QCACHE);
	CHECK(st.cflags & KMC_NOTOUCH);
	CHECK_EQ(st.slabsize, 64 * 1024);
	CHECK_EQ(st.bufs_per_slab, 5);
	tu_seed(&r, 42);
	for (i = 0; i < 2000; i++) {
		sz[i] = tu_range(&r, 1, 4) * PAGE;
		v[i] = vmem_alloc(a, sz[i], VM_NOSLEEP);
		REQUIRE(v[i] != NULL);
	}
	{
		size_t total = 0;
		for (i = 0; i < 2000; i++)
			total += sz[i];
		/* Allocated = given out; idle cache slab space counts free. */
		CHECK_EQ(vmem_size(a, VMEM_ALLOC), total);
	}
	vmem_get_stats(a, &vs);
	CHECK(vs.qcache_alloc == 2000);
	for (i = 0; i < 2000; i++)
		vmem_free(a, v[i], sz[i]);
	/* Reap: every cache of the arena gives everything back. */
	for (i = 1; i <= 4; i++) {
		char name[32];
		snprintf(name, sizeof (name), "qc_%d", i * PAGE);
		f.name = name;
		f.cp = NULL;
		kmem_foreach_cache(find_cache, &f);
		REQUIRE(f.cp != NULL);
		kmem_cache_reap_now(f.cp);
	}
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	CHECK_ARENA(a);
	vmem_destroy(a);
	f.name = "qc_4096";
	f.cp = NULL;
	kmem_foreach_cache(find_cache, &f);
	CHECK(f.cp == NULL);
}

/* kmem_cache_stat reads the figures by their illumos kstat names. */
static void
test_stat_by_name(void)
{
	/* Over integers: the figures are the same, and page_arena's
	 * regions are all taken by the tests above. */
	vmem_t *v = vmem_create("stat_by_name", (void *)(uintptr_t)0x100000,
	    1 << 24, PAGE, NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = kmem_cache_create("stat_by_name", 100, 16, NULL,
	    NULL, NULL, NULL, v, KMC_NOTOUCH);
	kmem_cache_stats_t st;
	void *a, *b;

	REQUIRE(cp != NULL);
	a = kmem_cache_alloc(cp, KM_SLEEP);
	b = kmem_cache_alloc(cp, KM_SLEEP);
	REQUIRE(a != NULL && b != NULL);
	kmem_cache_free(cp, b);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(kmem_cache_stat(cp, "buf_size"), 100);
	CHECK_EQ(kmem_cache_stat(cp, "align"), 16);
	CHECK_EQ(kmem_cache_stat(cp, "chunk_size"), st.chunksize);
	CHECK_EQ(kmem_cache_stat(cp, "slab_size"), st.slabsize);
	CHECK_EQ(kmem_cache_stat(cp, "alloc"), 2);
	CHECK_EQ(kmem_cache_stat(cp, "free"), 1);
	CHECK_EQ(kmem_cache_stat(cp, "alloc_fail"), 0);
	CHECK_EQ(kmem_cache_stat(cp, "buf_inuse"), 1);
	CHECK_EQ(kmem_cache_stat(cp, "buf_total"), st.buf_total);
	CHECK_EQ(kmem_cache_stat(cp, "buf_avail"), st.buf_total - 1);
	CHECK_EQ(kmem_cache_stat(cp, "buf_constructed"), st.buf_cached);
	CHECK_EQ(kmem_cache_stat(cp, "slab_create"), 1);
	CHECK_EQ(kmem_cache_stat(cp, "magazine_size"), st.magsize);
	CHECK_EQ(kmem_cache_stat(cp, "reap"), st.reap);
	CHECK_EQ(kmem_cache_stat(cp, "no_such_stat"), 0);
	CHECK_EQ(kmem_cache_stat(cp, "buf"), 0);
	CHECK_EQ(kmem_cache_stat(cp, "buf_size_"), 0);
	kmem_cache_free(cp, a);
	kmem_cache_destroy(cp);
	vmem_destroy(v);
}

/* kmem_debugging() says whether new caches get debug flags (illumos). */
static void
test_debugging_flag(void)
{
	int old = kmem_set_debug_flags(0);

	CHECK_EQ(kmem_debugging(), 0);
	kmem_set_debug_flags(KMF_REDZONE);
	CHECK_EQ(kmem_debugging(), 1);
	kmem_set_debug_flags(old);
	CHECK_EQ(kmem_debugging(), old != 0);
}

/*
 * Every CPU slot busy, as when more threads than CPUs run and the holders
 * were preempted inside their slots: allocations and frees used to spin
 * until a holder ran again (here, for ever: this thread holds them all).
 * They take the slab layer instead, with its checks: constructed objects,
 * a double free and a foreign free reported, counts exact afterwards.
 * (Making or releasing a slab still needs every slot: the buffers kept
 * keep every slab in use and leave free chunks for all that is asked.)
 */
static void
test_all_slots_busy(void)
{
	static char region[1 << 20] __attribute__((aligned(4096)));
	vmem_t *a = vmem_create("kc_busy", region, sizeof (region), PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = kmem_cache_create("busy", sizeof (obj_t), 0,
	    obj_ctor, obj_dtor, NULL, &ctor_calls, a, 0);
	kmem_cache_t *other = kmem_cache_create("busy_other", sizeof (obj_t),
	    0, NULL, NULL, NULL, NULL, a, 0);
	kmem_cache_stats_t st;
	enum { KEEP = 600, MORE = 100 };
	static obj_t *v[KEEP], *w[MORE];
	int i;

	REQUIRE(a != NULL && cp != NULL && other != NULL);
	REQUIRE(kmem_cache_set_debug(cp, KMF_DOUBLEFREE) == 0);
	ctor_calls = dtor_calls = 0;
	for (i = 0; i < KEEP; i++)
		REQUIRE((v[i] = kmem_cache_alloc(cp, KM_SLEEP)) != NULL);
	/* Half go back into magazines, so allocations would try them. */
	for (i = 1; i < KEEP; i += 2)
		kmem_cache_free(cp, v[i]);
	kmem_cache_get_stats(cp, &st);
	REQUIRE(st.buf_total - KEEP >= MORE);
	kmem_cache_test_hold_slots(cp, 1);
	alarm(20);
	for (i = 0; i < MORE; i++) {
		REQUIRE((w[i] = kmem_cache_alloc(cp, KM_SLEEP)) != NULL);
		CHECK(w[i]->magic == 0x600dULL);
	}
	tu_record_errors();
	kmem_cache_free(cp, w[0]);
	kmem_cache_free(cp, w[0]);
	CHECK_EQ(tu_err.count, 1);
	CHECK_EQ(tu_err.code, KMEM_E_DOUBLEFREE);
	kmem_cache_free(other, w[1]);
	CHECK_EQ(tu_err.count, 2);
	CHECK_EQ(tu_err.code, KMEM_E_WRONGCACHE);
	tu_default_errors();
	for (i = 1; i < MORE; i++)
		kmem_cache_free(cp, w[i]);
	alarm(0);
	kmem_cache_test_hold_slots(cp, 0);
	for (i = 0; i < KEEP; i += 2)
		kmem_cache_free(cp, v[i]);
	kmem_cache_get_stats(cp, &st);
	CHECK_EQ(st.buf_inuse, 0);
	CHECK_EQ(st.alloc, st.free);
	CHECK_EQ(kmem_cache_test_check(cp), 0);
	kmem_cache_reap_now(cp);
	CHECK_EQ(dtor_calls, ctor_calls);
	kmem_cache_destroy(cp);
	kmem_cache_destroy(other);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	vmem_destroy(a);
}

/* The caches of arena name (name_<size>), in creation order. */
typedef struct qc_shape {
	const char *arena;
	int n;
	char name[20][KMEM_CACHE_NAMELEN];
	size_t size[20], slab[20];
	int cflags[20];
} qc_shape_t;

static void
collect_qc(kmem_cache_t *cp, void *arg)
{
	qc_shape_t *q = arg;
	size_t len = strlen(q->arena);
	kmem_cache_stats_t st;

	if (strncmp(kmem_cache_name(cp), q->arena, len) != 0 ||
	    kmem_cache_name(cp)[len] != '_' || q->n == 20)
		return;
	kmem_cache_get_stats(cp, &st);
	snprintf(q->name[q->n], sizeof (q->name[0]), "%s", st.name);
	q->size[q->n] = st.bufsize;
	q->slab[q->n] = st.slabsize;
	q->cflags[q->n] = st.cflags;
	q->n++;
}

/*
 * Quantum caches as illumos makes them: min(qcache_max / quantum, 16)
 * caches named arena_<size> for each multiple of the quantum, qcache_max
 * rounded down to the last one, KMC_QCACHE | KMC_NOTOUCH, slabs of
 * VMEM_QCACHE_SLABSIZE = MAX(1 << highbit(3 * qcache_max), 64). The floor
 * of 64 (an identifier arena caching 1..4) was missing: slabs of 16.
 */
static void
test_quantum_cache_shapes(void)
{
	static const struct {
		const char *name;
		size_t quantum, qcache_max;
		int n;
		size_t max, slab;
	} c[] = {
		{ "qs_notmult", PAGE, 10000, 2, 2 * PAGE, 32 * 1024 },
		{ "qs_above16", PAGE, 20 * PAGE, 16, 16 * PAGE, 256 * 1024 },
		{ "qs_ids", 1, 4, 4, 4, 64 },
		{ "qs_tiny", 16, 21, 1, 16, 64 },
		{ "qs_q8", 8, 40, 5, 40, 128 },
		{ "qs_below", PAGE, 100, 0, 0, 0 },
		/* three times, not twice: 3 * 12 KiB -> 64 KiB, where every
		 * row above gives the same slab with twice */
		{ "qs_three", PAGE, 3 * PAGE, 3, 3 * PAGE, 64 * 1024 },
	};

	for (size_t i = 0; i < sizeof (c) / sizeof (c[0]); i++) {
		vmem_t *a = vmem_create(c[i].name, FAKE_BASE, (size_t)1 << 24,
		    c[i].quantum, NULL, NULL, NULL, c[i].qcache_max,
		    VM_SLEEP | (c[i].quantum == 1 ? VMC_IDENTIFIER : 0));
		qc_shape_t q;
		void *p;

		REQUIRE(a != NULL);
		memset(&q, 0, sizeof (q));
		q.arena = c[i].name;
		kmem_foreach_cache(collect_qc, &q);
		CHECK_EQ(q.n, c[i].n);
		for (int k = 0; k < q.n; k++) {
			char want[KMEM_CACHE_NAMELEN];
			snprintf(want, sizeof (want), "%s_%zu", c[i].name,
			    (size_t)(k + 1) * c[i].quantum);
			CHECK(strcmp(q.name[k], want) == 0);
			CHECK_EQ(q.size[k], (size_t)(k + 1) * c[i].quantum);
			CHECK_EQ(q.slab[k], c[i].slab);
			CHECK_EQ(q.cflags[k] & (KMC_QCACHE | KMC_NOTOUCH),
			    KMC_QCACHE | KMC_NOTOUCH);
		}
		if (c[i].n > 0) {
			/* The largest cached size goes through a cache, one
			 * quantum more to the arena. */
			vmem_stats_t vs;
			p = vmem_alloc(a, c[i].max, VM_NOSLEEP);
			REQUIRE(p != NULL);
			vmem_get_stats(a, &vs);
			CHECK_EQ(vs.qcache_alloc, 1);
			CHECK_EQ(vs.qcache_max, c[i].max);
			vmem_free(a, p, c[i].max);
			p = vmem_alloc(a, c[i].max + c[i].quantum, VM_NOSLEEP);
			REQUIRE(p != NULL);
			vmem_get_stats(a, &vs);
			CHECK_EQ(vs.qcache_alloc, 1);
			vmem_free(a, p, c[i].max + c[i].quantum);
		}
		vmem_destroy(a);
		q.n = 0;
		kmem_foreach_cache(collect_qc, &q);
		CHECK_EQ(q.n, 0);
	}
}

int
main(void)
{
	RUN(test_alloc_free_and_reap_to_empty);
	RUN(test_null_arena_is_the_default_heap);
	RUN(test_constructor_failure);
	RUN(test_constructor_failure_on_magazine_round);
	RUN(test_set_debug_refused_while_slab_is_made);
	RUN(test_nomagazine_constructs_every_time);
	RUN(test_notouch_over_integers);
	RUN(test_chunk_index_every_way);
	RUN(test_depot_working_set);
	RUN(test_depot_reap_spares_this_intervals_burst);
	RUN(test_magazine_resize);
	RUN(test_magazine_resize_between_updates);
	RUN(test_magazine_grow_traffic);
	RUN(test_slab_table_model);
	RUN(test_slab_table_cannot_grow);
	RUN(test_wrong_cache_and_debug_errors);
	RUN(test_double_free_after_slab_released);
	RUN(test_meta_charge);
	RUN(test_kmastat);
	RUN(test_debugging_flag);
	RUN(test_stat_by_name);
	RUN(test_quantum_caches);
	RUN(test_quantum_cache_shapes);
	RUN(test_all_slots_busy);
	return tu_finish();
}
