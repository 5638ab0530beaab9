/*
 * The kmem heap of a kernel address space, on both backings: buffers come
 * from kmem_default inside the kas, simulated heaps never touch their
 * (integer) buffers, kmem bookkeeping is charged to the simulated heap,
 * and after freeing and reaping the kas holds only its metadata. A
 * KM_SLEEP allocation short of pages gets those another cache holds idle,
 * freed by the library's reclaimer thread, not by the sleeping caller.
 * A cache someone else creates while a kas is charging the caches it made
 * is not charged to the kas. kmem_reap and kmem_update have forms for one
 * kas. Built without kmem (no <vmem/kmem.h>), a kas has no heap.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include <vmem/segkmem.h>
#include <vmem/kmem.h>

#include "testutil.h"

#define MIB ((size_t)1 << 20)

static kas_t *
make_kas(kas_backing_t backing)
{
	kas_config_t cfg;

	kas_config_init(&cfg);
	cfg.backing = backing;
	cfg.size = 64 * MIB;
	return kas_create(&cfg);
}

static void
test_kas_heap(void)
{
	kas_backing_t b;
	int n = tu_slow_build() ? 200 : 2000;

	for (b = KAS_REAL; b <= KAS_SIM; b++) {
		kas_t *kas = make_kas(b);
		kmem_heap_t *heap;
		void **v = calloc((size_t)n, sizeof (void *));
		kas_stats_t st;
		char buf[160];
		int i;

		REQUIRE(kas != NULL && v != NULL);
		heap = kas_heap(kas);
		REQUIRE(heap != NULL);
		CHECK(kmem_heap_arena(heap) == kas_kmem_default(kas));
		for (i = 0; i < n; i++) {
			size_t sz = (size_t)(16 + (i % 50) * 40);

			v[i] = kmem_heap_alloc(heap, sz, KM_SLEEP);
			REQUIRE(v[i] != NULL);
			CHECK((uintptr_t)v[i] >= kas_base(kas));
			CHECK((uintptr_t)v[i] < kas_base(kas) + kas_size(kas));
			if (b == KAS_REAL)
				memset(v[i], 0x5A, sz);
		}
		CHECK_EQ(kas_classify(kas, (uintptr_t)v[n / 2], buf,
		    sizeof (buf)), KAS_FAULT_VALID);
		CHECK(strstr(buf, "kmem_default") != NULL);
		kas_get_stats(kas, &st);
		CHECK(st.pages_committed > 0);
		CHECK(st.meta_bytes[KAS_META_KMEM] > 0);
		CHECK_EQ(st.meta_pages[KAS_META_KMEM] != 0, b == KAS_SIM);
		for (i = 0; i < n; i++)
			kmem_heap_free(heap, v[i],
			    (size_t)(16 + (i % 50) * 40));
		kmem_heap_reap(heap);
		vmem_t *va = kas_kmem_va(kas);
		kas_settle_metadata(kas);
		kas_get_stats(kas, &st);
		/* Only charged metadata holds pages now. */
		CHECK_EQ(vmem_size(kas_kmem_default(kas), VMEM_ALLOC), 0);
		CHECK_EQ(st.pages_committed, st.meta_pages_total);
		CHECK_EQ(st.heap_inuse, st.meta_pages_total * st.pagesize +
		    vmem_size(va, VMEM_ALLOC | VMEM_FREE));
		free(v);
		kas_destroy(kas);
	}
}

/* Which threads ran cache A's destructor. */
static pthread_t sleeper;
static int dtors_in_sleeper, dtors;

static void
note_dtor(void *buf, void *priv)
{
	(void)buf;
	(void)priv;
	dtors++;
	dtors_in_sleeper += pthread_equal(pthread_self(), sleeper) != 0;
}

/*
 * Cache A takes the whole page budget and gives every buffer back: its
 * magazines and slabs hold the pages. A sleeping allocation from cache B
 * must get them back before it sleeps (illumos' page_resv reaps between
 * naps); it used to sleep for ever. The alarm turns a hang into a failure.
 * The purge runs A's destructors, so it must not run in the sleeping
 * thread, which may hold a lock a destructor takes.
 */
static void
test_sleeping_reservation_reclaims_caches(void)
{
	for (int b = 0; b < 2; b++) {
		kas_config_t cfg;
		kas_t *kas;
		kmem_cache_t *a, *bc;
		kas_stats_t st;
		void *v[512], *p;
		int n = 0;

		kas_config_init(&cfg);
		cfg.backing = b ? KAS_SIM : KAS_REAL;
		cfg.size = 64 * MIB;
		cfg.physmem_pages = 256;
		kas = kas_create(&cfg);
		REQUIRE(kas != NULL);
		a = kmem_cache_create("rc_a", 4096, 0, NULL, note_dtor, NULL,
		    NULL, kas_kmem_default(kas), 0);
		bc = kmem_cache_create("rc_b", 8192, 0, NULL, NULL, NULL, NULL,
		    kas_kmem_default(kas), 0);
		REQUIRE(a != NULL && bc != NULL);
		while (n < 512 && (v[n] = kmem_cache_alloc(a, KM_NOSLEEP)) != NULL)
			n++;
		CHECK(n > 100 && n < 512);
		for (int i = 0; i < n; i++)
			kmem_cache_free(a, v[i]);
		CHECK(kmem_cache_alloc(bc, KM_NOSLEEP) == NULL);
		sleeper = pthread_self();
		dtors = dtors_in_sleeper = 0;
		alarm(30);
		p = kmem_cache_alloc(bc, KM_SLEEP);
		alarm(0);
		CHECK(p != NULL);
		CHECK(dtors > 0);
		CHECK_EQ(dtors_in_sleeper, 0);
		kas_get_stats(kas, &st);
		CHECK(st.resv_wait >= 1);       /* slept until the reclaimer
		                                 * had freed A's pages */
		kmem_cache_free(bc, p);
		kmem_cache_destroy(bc);
		kmem_cache_destroy(a);
		kas_destroy(kas);
	}
}

static int reclaims[2];

static void
count_reclaim(void *priv)
{
	reclaims[(int *)priv - reclaims]++;
}

/* A burst through c: its depot fills with full magazines. */
static void
depot_burst(kmem_cache_t *c)
{
	void *v[400];

	for (int i = 0; i < 400; i++)
		REQUIRE((v[i] = kmem_cache_alloc(c, KM_NOSLEEP)) != NULL);
	for (int i = 0; i < 400; i++)
		kmem_cache_free(c, v[i]);
}

/*
 * kmem_reap and kmem_update name no address space; kas_kmem_reap and
 * kas_kmem_update work on one: a cache over an arena of kas A is reaped
 * (reclaim callback, idle depot magazines), one over kas B is not.
 */
static void
test_kmem_reap_of_one_kas(void)
{
	kas_t *kas[2];
	kmem_cache_t *c[2];
	kmem_cache_stats_t st[2];

	for (int k = 0; k < 2; k++) {
		kas[k] = make_kas(KAS_SIM);
		REQUIRE(kas[k] != NULL);
		c[k] = kmem_cache_create(k ? "reap_b" : "reap_a", 4096, 0,
		    NULL, NULL, count_reclaim, &reclaims[k],
		    kas_kmem_default(kas[k]), KMC_NOTOUCH);
		REQUIRE(c[k] != NULL);
		depot_burst(c[k]);
		kmem_cache_get_stats(c[k], &st[k]);
		REQUIRE(st[k].depot_full > 2);
	}
	/* Two intervals without use: every depot magazine is idle. */
	kas_kmem_update(kas[0]);
	kas_kmem_update(kas[0]);
	kas_kmem_reap(kas[0]);
	kmem_cache_get_stats(c[0], &st[0]);
	CHECK_EQ(st[0].depot_full, 0);
	CHECK_EQ(reclaims[0], 1);
	kmem_cache_get_stats(c[1], &st[1]);
	CHECK(st[1].depot_full > 2);
	CHECK_EQ(reclaims[1], 0);
	/* B's intervals were not ended: reaping B frees nothing yet. */
	kas_kmem_reap(kas[1]);
	kmem_cache_get_stats(c[1], &st[1]);
	CHECK(st[1].depot_full > 2);
	CHECK_EQ(reclaims[1], 1);
	for (int k = 0; k < 2; k++) {
		kmem_cache_destroy(c[k]);
		kas_destroy(kas[k]);
	}
}

/* The error handler of the next test: it makes a cache over an arena of
 * no kas, while kas_arena_create is between its two looks at the list. */
static vmem_t *bystander_arena;
static kmem_cache_t *bystander;
static int bystander_reports;

static void
make_bystander(const vmem_error_info_t *info, void *arg)
{
	(void)info;
	(void)arg;
	bystander_reports++;
	if (bystander == NULL)
		bystander = kmem_cache_create("bystander", 64, 0, NULL, NULL,
		    NULL, NULL, bystander_arena, KMC_NOTOUCH);
}

/*
 * kas_arena_create charges the caches that appear while it runs (its
 * quantum caches). One that another thread made meanwhile, over an arena
 * of no kas, used to be charged too: the kas counted its bookkeeping, and
 * after kas_destroy the cache's next change wrote into the freed kas
 * (heap-use-after-free under ASan, found with a thread making caches
 * beside kas_create). The report of a refused kas_arena_create is the
 * moment made certain.
 */
static void
test_cache_made_meanwhile_is_not_charged(void)
{
	kas_t *kas = make_kas(KAS_SIM);
	kas_stats_t before, after;
	vmem_error_handler_t *old_handler;
	void *old_arg, *v[64];

	REQUIRE(kas != NULL);
	bystander_arena = vmem_create("bystander_ids",
	    (void *)(uintptr_t)0x100000000000ULL, (size_t)1 << 32, 4096, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	REQUIRE(bystander_arena != NULL);
	kas_settle_metadata(kas);
	kas_get_stats(kas, &before);
	vmem_get_error_handler(&old_handler, &old_arg);
	vmem_set_error_handler(make_bystander, NULL);
	/* Quantum 3: refused, reported, nothing created in the kas. */
	CHECK(kas_arena_create(kas, "refused", NULL, 0, 3, vmem_alloc,
	    vmem_free, kas_heap_arena(kas), 0, VM_SLEEP) == NULL);
	vmem_set_error_handler(old_handler, old_arg);
	CHECK_EQ(bystander_reports, 1);
	REQUIRE(bystander != NULL);
	kas_settle_metadata(kas);
	kas_get_stats(kas, &after);
	CHECK_EQ(after.meta_bytes[KAS_META_KMEM],
	    before.meta_bytes[KAS_META_KMEM]);
	kas_destroy(kas);
	/* The bystander goes on, its bookkeeping changing, kas or none. */
	for (int i = 0; i < 64; i++)
		REQUIRE((v[i] = kmem_cache_alloc(bystander, KM_NOSLEEP)) !=
		    NULL);
	for (int i = 0; i < 64; i++)
		kmem_cache_free(bystander, v[i]);
	kmem_cache_reap_now(bystander);
	kmem_cache_destroy(bystander);
	CHECK_EQ(vmem_size(bystander_arena, VMEM_ALLOC), 0);
	vmem_destroy(bystander_arena);
}

int
main(void)
{
	RUN(test_kas_heap);
	RUN(test_sleeping_reservation_reclaims_caches);
	RUN(test_cache_made_meanwhile_is_not_charged);
	RUN(test_kmem_reap_of_one_kas);
	return tu_finish();
}
