/*
 * The magazine layer under two threads (run under TSan too): both threads
 * allocating and freeing on one cache, frees from the other thread than
 * the allocating one (producer/consumer), and reaps and magazine resizes
 * racing with both. Afterwards every constructed object was destroyed and
 * the arena holds nothing. Statistics read meanwhile are a true snapshot:
 * a magazine on its way between a CPU and the depot is counted once.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <vmem/kmem.h>

#include "kmem_impl.h"
#include "testutil.h"

#define PAGE 4096

static atomic_long live_objects;

static int
ctor(void *buf, void *priv, int kmflag)
{
	(void)priv;
	(void)kmflag;
	memset(buf, 0x5a, 48);
	atomic_fetch_add(&live_objects, 1);
	return 0;
}

static void
dtor(void *buf, void *priv)
{
	(void)priv;
	CHECK(((unsigned char *)buf)[47] == 0x5a);
	atomic_fetch_sub(&live_objects, 1);
}

static kmem_cache_t *cache;
static long iters;

static void *
churn(void *arg)
{
	tu_rng_t r;
	void *held[64];
	long i;
	int n = 0;

	tu_seed(&r, (uint64_t)(uintptr_t)arg);
	for (i = 0; i < iters; i++) {
		if (n < 64 && (n == 0 || tu_next(&r) % 2)) {
			held[n] = kmem_cache_alloc(cache, KM_SLEEP);
			REQUIRE(held[n] != NULL);
			CHECK(((unsigned char *)held[n])[0] == 0x5a);
			n++;
		} else {
			kmem_cache_free(cache, held[--n]);
		}
		if ((uintptr_t)arg == 1 && i % 5000 == 0) {
			kmem_cache_update(cache);
			if (i % 20000 == 0)
				kmem_cache_reap_now(cache);
		}
	}
	while (n > 0)
		kmem_cache_free(cache, held[--n]);
	return NULL;
}

/* A small bounded queue between producer and consumer. */
#define QLEN 256
static void *queue[QLEN];
static int qhead, qtail, qdone;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;

static void *
producer(void *arg)
{
	long i;

	(void)arg;
	for (i = 0; i < iters; i++) {
		void *p = kmem_cache_alloc(cache, KM_SLEEP);
		REQUIRE(p != NULL);
		pthread_mutex_lock(&qlock);
		while ((qtail + 1) % QLEN == qhead)
			pthread_cond_wait(&qcond, &qlock);
		queue[qtail] = p;
		qtail = (qtail + 1) % QLEN;
		pthread_cond_broadcast(&qcond);
		pthread_mutex_unlock(&qlock);
		if (i % 10000 == 0)
			kmem_cache_test_contend(cache, 4);
	}
	pthread_mutex_lock(&qlock);
	qdone = 1;
	pthread_cond_broadcast(&qcond);
	pthread_mutex_unlock(&qlock);
	return NULL;
}

static void *
consumer(void *arg)
{
	long n = 0;

	(void)arg;
	for (;;) {
		void *p;
		pthread_mutex_lock(&qlock);
		while (qhead == qtail && !qdone)
			pthread_cond_wait(&qcond, &qlock);
		if (qhead == qtail && qdone) {
			pthread_mutex_unlock(&qlock);
			break;
		}
		p = queue[qhead];
		qhead = (qhead + 1) % QLEN;
		pthread_cond_broadcast(&qcond);
		pthread_mutex_unlock(&qlock);
		kmem_cache_free(cache, p);
		if (++n % 7000 == 0)
			kmem_cache_update(cache);
	}
	return NULL;
}

static void
finish(vmem_t *a)
{
	kmem_cache_stats_t st;

	kmem_cache_get_stats(cache, &st);
	CHECK_EQ(st.buf_inuse, 0);
	CHECK_EQ(st.alloc, st.free);
	kmem_cache_reap_now(cache);
	kmem_cache_get_stats(cache, &st);
	CHECK_EQ(st.slabs, 0);
	CHECK_EQ(st.construct, st.destruct);
	CHECK_EQ(atomic_load(&live_objects), 0);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
}

static void
test_two_threads_churn(void)
{
	static char region[1 << 22] __attribute__((aligned(4096)));
	vmem_t *a = vmem_create("kt_churn", region, sizeof (region), PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	pthread_t t1, t2;

	cache = kmem_cache_create("kt_churn", 48, 0, ctor, dtor, NULL, NULL,
	    a, 0);
	REQUIRE(cache != NULL);
	pthread_create(&t1, NULL, churn, (void *)(uintptr_t)1);
	pthread_create(&t2, NULL, churn, (void *)(uintptr_t)2);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	finish(a);
	kmem_cache_destroy(cache);
	CHECK_ARENA(a);
	vmem_destroy(a);
}

static void
test_cross_thread_free(void)
{
	static char region[1 << 22] __attribute__((aligned(4096)));
	vmem_t *a = vmem_create("kt_pc", region, sizeof (region), PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_stats_t st;
	pthread_t t1, t2;

	cache = kmem_cache_create("kt_pc", 48, 0, ctor, dtor, NULL, NULL, a,
	    0);
	REQUIRE(cache != NULL);
	pthread_create(&t1, NULL, producer, NULL);
	pthread_create(&t2, NULL, consumer, NULL);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	kmem_cache_get_stats(cache, &st);
	CHECK(st.mag_resize >= 1); /* forced contention grew magazines */
	finish(a);
	kmem_cache_destroy(cache);
	CHECK_ARENA(a);
	vmem_destroy(a);
}

/* Two threads on an arena's quantum caches, over integers. */
static vmem_t *qarena;

static void *
qchurn(void *arg)
{
	tu_rng_t r;
	void *held[32];
	size_t sz[32];
	long i;
	int n = 0;

	tu_seed(&r, (uint64_t)(uintptr_t)arg + 11);
	for (i = 0; i < iters; i++) {
		if (n < 32 && (n == 0 || tu_next(&r) % 2)) {
			sz[n] = tu_range(&r, 1, 8) * PAGE;
			held[n] = vmem_alloc(qarena, sz[n], VM_SLEEP);
			REQUIRE(held[n] != NULL);
			n++;
		} else {
			n--;
			vmem_free(qarena, held[n], sz[n]);
		}
	}
	while (n-- > 0)
		vmem_free(qarena, held[n], sz[n]);
	return NULL;
}

static void
qreap(kmem_cache_t *cp, void *arg)
{
	(void)arg;
	if (strncmp(kmem_cache_name(cp), "kt_q_", 5) == 0)
		kmem_cache_reap_now(cp);
}

static void
test_two_threads_quantum_caches(void)
{
	pthread_t t1, t2;

	qarena = vmem_create("kt_q", (void *)(uintptr_t)0x100000000000ULL,
	    (size_t)1 << 32, PAGE, NULL, NULL, NULL, 8 * PAGE, VM_SLEEP);
	REQUIRE(qarena != NULL);
	pthread_create(&t1, NULL, qchurn, (void *)(uintptr_t)1);
	pthread_create(&t2, NULL, qchurn, (void *)(uintptr_t)2);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	kmem_foreach_cache(qreap, NULL);
	CHECK_EQ(vmem_size(qarena, VMEM_ALLOC), 0);
	CHECK_ARENA(qarena);
	vmem_destroy(qarena);
}

#define SNAP_HOLD 500
static atomic_int snap_stop;

static void *
snap_worker(void *arg)
{
	kmem_cache_t *cp = arg;
	static _Thread_local void *held[SNAP_HOLD];

	while (!atomic_load(&snap_stop)) {
		for (int i = 0; i < SNAP_HOLD; i++)
			held[i] = kmem_cache_alloc(cp, KM_SLEEP);
		for (int i = 0; i < SNAP_HOLD; i++)
			kmem_cache_free(cp, held[i]);
	}
	return NULL;
}

/*
 * Two threads never hold more than 2 * SNAP_HOLD buffers between them, so
 * no snapshot may show more in use (read slot by slot, then the depot, a
 * magazine moving from the depot to a slot already read was missed, and
 * buf_inuse came out whole magazines too high), and vmem_size's idle part
 * (the same count) never exceeds what the cache holds.
 */
static void
test_statistics_snapshot_under_churn(void)
{
	vmem_t *a = vmem_create("kt_snap", (void *)(uintptr_t)0x200000000000ULL,
	    (size_t)1 << 30, PAGE, NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp;
	pthread_t t[2];
	long samples = tu_slow_build() ? 20000 : 200000;
	size_t worst = 0;

	REQUIRE(a != NULL);
	cp = kmem_cache_create("kt_snap_64", 64, 0, NULL, NULL, NULL, NULL, a,
	    KMC_NOTOUCH);
	REQUIRE(cp != NULL);
	atomic_store(&snap_stop, 0);
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, snap_worker, cp) == 0);
	for (long n = 0; n < samples; n++) {
		kmem_cache_stats_t st;

		kmem_cache_get_stats(cp, &st);
		if (st.buf_inuse > worst)
			worst = st.buf_inuse;
		CHECK(st.buf_cached <= st.buf_total);
	}
	atomic_store(&snap_stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK(worst <= 2 * SNAP_HOLD);
	kmem_cache_destroy(cp);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	vmem_destroy(a);
}

int
main(void)
{
	iters = tu_slow_build() ? 20000 : 200000;
	RUN(test_two_threads_churn);
	RUN(test_cross_thread_free);
	RUN(test_two_threads_quantum_caches);
	RUN(test_statistics_snapshot_under_churn);
	return tu_finish();
}
