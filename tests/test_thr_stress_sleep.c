/*
 * VM_SLEEP waits and wake-ups on two threads.
 *
 * Handoff rounds: one thread holds the whole arena, the other asks for
 * some of it with VM_SLEEP and must wait; the holder sees the arena's wait
 * counter rise (no timing involved) and frees, which must wake the waiter.
 * Rounds alternate roles and cover the plain arena path, the quantum-cache
 * path (a cache's slab allocation waits in the arena, and a buffer freed
 * into a cache whose slabs fill the arena), an imported span
 * (the child waits on its source), and the page budget of a kernel address
 * space (kas_page_resv with VM_SLEEP).
 *
 * Then a random stress: both threads allocate with VM_SLEEP from a small
 * arena with quantum caches. A thread sleeps only while it holds nothing
 * (later allocations of a batch are VM_NOSLEEP), so a wait is always ended
 * by the other thread's frees: the run finishing is the deadlock check. A
 * shared bitmap of quanta catches any address handed out twice.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include <vmem/kmem.h>
#include <vmem/segkmem.h>

#include "hg.h"
#include "testutil.h"

#define Q       ((size_t)4096)
#define BASE    ((uintptr_t)0x40000000)

static uint64_t
waits(vmem_t *v)
{
	vmem_stats_t st;

	vmem_get_stats(v, &st);
	return st.wait;
}

/* ------------------------------------------------------------------ */
/* Handoff rounds */

typedef struct handoff {
	vmem_t *arena;      /* the waiter allocates here */
	vmem_t *counted;    /* whose wait counter shows the waiter asleep */
	size_t size;
	atomic_int go;      /* rounds started by the holder */
	atomic_int done;    /* rounds finished by the waiter */
	void *got;
} handoff_t;

static void *
waiter(void *arg)
{
	handoff_t *h = arg;
	int rounds = 0;

	for (;;) {
		int go;
		while ((go = atomic_load(&h->go)) == rounds)
			sched_yield();
		if (go < 0)
			return NULL;
		h->got = vmem_alloc(h->arena, h->size, VM_SLEEP);
		rounds++;
		HG_HAPPENS_BEFORE(&h->done);
		atomic_store(&h->done, rounds);
	}
}

/* The main thread holds everything `fill' can take, starts a round and
 * frees only once the waiter is counted as waiting. */
static void
handoff_rounds(handoff_t *h, vmem_t *fill_arena, size_t fill_size,
    int rounds)
{
	pthread_t t;

	atomic_init(&h->go, 0);
	atomic_init(&h->done, 0);
	REQUIRE(pthread_create(&t, NULL, waiter, h) == 0);
	for (int i = 1; i <= rounds; i++) {
		void *all = vmem_xalloc(fill_arena, fill_size, 0, 0, 0, NULL,
		    NULL, VM_NOSLEEP);
		uint64_t w0 = waits(h->counted);

		REQUIRE(all != NULL);
		atomic_store(&h->go, i);
		while (waits(h->counted) == w0)
			sched_yield();
		CHECK_EQ(atomic_load(&h->done), i - 1);
		vmem_xfree(fill_arena, all, fill_size);
		while (atomic_load(&h->done) != i)
			sched_yield();
		HG_HAPPENS_AFTER(&h->done);
		CHECK(h->got != NULL);
		if (h->got != NULL)
			vmem_free(h->arena, h->got, h->size);
		vmem_reap(h->arena);
	}
	atomic_store(&h->go, -1);
	pthread_join(t, NULL);
}

static void
test_sleep_wakeup_plain(void)
{
	vmem_t *v = vmem_create("sl_plain", (void *)BASE, 64 * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	handoff_t h = { .arena = v, .counted = v, .size = 8 * Q };

	handoff_rounds(&h, v, 64 * Q, tu_slow_build() ? 20 : 200);
	CHECK_ARENA(v);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	vmem_destroy(v);
}

static void
test_sleep_wakeup_qcache(void)
{
	/* The slab of the 1-quantum cache is 64 KiB: a quarter of it. */
	vmem_t *v = vmem_create("sl_qc", (void *)BASE, 256 * Q, Q, NULL,
	    NULL, NULL, 5 * Q, VM_SLEEP);
	handoff_t h = { .arena = v, .counted = v, .size = Q };

	handoff_rounds(&h, v, 256 * Q, tu_slow_build() ? 20 : 200);
	CHECK_ARENA(v);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	vmem_destroy(v);
}

/*
 * Every slab of the 1-quantum cache is allocated and the arena is full, so
 * only a buffer freed into the cache can serve the waiter: no slab fits
 * again while the others are held. The waiter used to wait in the arena
 * for a slab, for ever.
 */
static void
test_sleep_wakeup_qcache_free(void)
{
	enum { N = 64 };
	vmem_t *v = vmem_create("sl_qcf", (void *)BASE, N * Q, Q, NULL, NULL,
	    NULL, Q, VM_SLEEP);
	handoff_t h = { .arena = v, .counted = v, .size = Q };
	int rounds = tu_slow_build() ? 10 : 50;
	vmem_stats_t st0, st1;
	void *held[N];
	pthread_t t;

	REQUIRE(v != NULL);
	for (int i = 0; i < N; i++) {
		held[i] = vmem_alloc(v, Q, VM_NOSLEEP);
		REQUIRE(held[i] != NULL);
	}
	CHECK(vmem_alloc(v, Q, VM_NOSLEEP) == NULL);
	vmem_get_stats(v, &st0);
	atomic_init(&h.go, 0);
	atomic_init(&h.done, 0);
	REQUIRE(pthread_create(&t, NULL, waiter, &h) == 0);
	for (int i = 1; i <= rounds; i++) {
		int k = (i * 7) % N;
		uint64_t w0 = waits(v);

		atomic_store(&h.go, i);
		while (waits(v) == w0)
			sched_yield();
		vmem_free(v, held[k], Q);
		while (atomic_load(&h.done) != i)
			sched_yield();
		HG_HAPPENS_AFTER(&h.done);
		CHECK(h.got != NULL);
		held[k] = h.got;
	}
	atomic_store(&h.go, -1);
	pthread_join(t, NULL);
	/* Waits that ended in success are not failures. */
	vmem_get_stats(v, &st1);
	CHECK_EQ(st1.fail, st0.fail);
	for (int i = 0; i < N; i++)
		if (held[i] != NULL)
			vmem_free(v, held[i], Q);
	vmem_reap(v);
	CHECK_ARENA(v);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	vmem_destroy(v);
}

static void
test_sleep_wakeup_import(void)
{
	vmem_t *src = vmem_create("sl_src", (void *)BASE, 64 * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	vmem_t *child = vmem_create("sl_child", NULL, 0, Q, vmem_alloc,
	    vmem_free, src, 0, VM_SLEEP);
	handoff_t h = { .arena = child, .counted = child, .size = 4 * Q };

	handoff_rounds(&h, src, 64 * Q, tu_slow_build() ? 20 : 200);
	CHECK_ARENA(child);
	CHECK_ARENA(src);
	CHECK_EQ(vmem_size(child, VMEM_SPAN), 0);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), 0);
	vmem_destroy(child);
	vmem_destroy(src);
}

/* The page budget: a VM_SLEEP reservation waits for an unreserve. */
typedef struct resv_arg {
	kas_t *kas;
	size_t npages;
	atomic_int go, done;
} resv_arg_t;

static void *
resv_waiter(void *arg)
{
	resv_arg_t *a = arg;
	int rounds = 0;

	for (;;) {
		int go;
		while ((go = atomic_load(&a->go)) == rounds)
			sched_yield();
		if (go < 0)
			return NULL;
		CHECK(kas_page_resv(a->kas, a->npages, VM_SLEEP) == 1);
		rounds++;
		atomic_store(&a->done, rounds);
	}
}

static void
test_sleep_wakeup_page_budget(void)
{
	kas_config_t cfg;
	resv_arg_t a;
	pthread_t t;
	int rounds = tu_slow_build() ? 20 : 200;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.name = "sl_kas";
	cfg.size = 64 << 20;
	cfg.physmem_pages = 2048;
	a.kas = kas_create(&cfg);
	REQUIRE(a.kas != NULL);
	a.npages = 16;
	atomic_init(&a.go, 0);
	atomic_init(&a.done, 0);
	REQUIRE(pthread_create(&t, NULL, resv_waiter, &a) == 0);
	for (int i = 1; i <= rounds; i++) {
		size_t avail = kas_availrmem(a.kas);
		kas_stats_t st;
		uint64_t w0;

		REQUIRE(kas_page_resv(a.kas, avail, VM_NOSLEEP) == 1);
		kas_get_stats(a.kas, &st);
		w0 = st.resv_wait;
		atomic_store(&a.go, i);
		for (kas_get_stats(a.kas, &st); st.resv_wait == w0;
		    kas_get_stats(a.kas, &st))
			sched_yield();
		CHECK_EQ(atomic_load(&a.done), i - 1);
		kas_page_unresv(a.kas, avail);
		while (atomic_load(&a.done) != i)
			sched_yield();
		kas_page_unresv(a.kas, a.npages);
	}
	atomic_store(&a.go, -1);
	pthread_join(t, NULL);
	kas_destroy(a.kas);
}

/* ------------------------------------------------------------------ */
/* Random VM_SLEEP stress with an ownership bitmap */

#define STRESS_QUANTA 96
static atomic_uchar owner[STRESS_QUANTA];
static vmem_t *stress_arena;

static void
claim(void *p, size_t size, int on)
{
	size_t first = ((uintptr_t)p - BASE) / Q, n = size / Q;

	for (size_t i = first; i < first + n; i++) {
		unsigned char was = atomic_exchange(&owner[i],
		    (unsigned char)on);
		if (was == (unsigned char)on) {
			fprintf(stderr, "quantum %zu %s twice\n", i,
			    on ? "allocated" : "freed");
			tu_failures++;
		}
	}
}

static void *
sleeper(void *arg)
{
	tu_rng_t r;
	void *held[8];
	size_t sz[8];
	long iters = tu_slow_build() ? 40000 : 400000;

	tu_seed(&r, (uint64_t)(uintptr_t)arg);
	for (long it = 0; it < iters; it++) {
		unsigned n = (unsigned)tu_range(&r, 1, 8), k = 0;

		for (unsigned j = 0; j < n; j++) {
			/* Up to 6 quanta: both quantum-cached and not. */
			sz[k] = Q * tu_range(&r, 1, 6);
			held[k] = vmem_alloc(stress_arena, sz[k],
			    j == 0 ? VM_SLEEP : VM_NOSLEEP);
			if (held[k] == NULL) {
				CHECK(j != 0);
				break;
			}
			claim(held[k], sz[k], 1);
			k++;
		}
		while (k-- > 0) {
			claim(held[k], sz[k], 0);
			vmem_free(stress_arena, held[k], sz[k]);
		}
		if (tu_range(&r, 0, 63) == 0)
			vmem_reap(stress_arena);
	}
	return NULL;
}

static void
test_sleep_stress(void)
{
	pthread_t t1, t2;

	/* 384 KiB: two threads' worst batches (48 quanta each) plus a few
	 * 16-quantum slabs of the quantum caches: the arena runs dry often. */
	stress_arena = vmem_create("sl_stress", (void *)BASE,
	    STRESS_QUANTA * Q, Q, NULL, NULL, NULL, 4 * Q, VM_SLEEP);
	REQUIRE(stress_arena != NULL);
	REQUIRE(pthread_create(&t1, NULL, sleeper, (void *)1) == 0);
	REQUIRE(pthread_create(&t2, NULL, sleeper, (void *)2) == 0);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	printf("stress: %llu VM_SLEEP waits\n",
	    (unsigned long long)waits(stress_arena));
	vmem_reap(stress_arena);
	CHECK_ARENA(stress_arena);
	CHECK_EQ(vmem_size(stress_arena, VMEM_ALLOC), 0);
	for (size_t i = 0; i < STRESS_QUANTA; i++)
		CHECK_EQ(atomic_load(&owner[i]), 0);
	vmem_destroy(stress_arena);
}

int
main(void)
{
	tu_record_errors();
	RUN(test_sleep_wakeup_plain);
	RUN(test_sleep_wakeup_qcache);
	RUN(test_sleep_wakeup_qcache_free);
	RUN(test_sleep_wakeup_import);
	RUN(test_sleep_wakeup_page_budget);
	RUN(test_sleep_stress);
	CHECK_EQ(tu_err.count, 0);
	return tu_finish();
}
