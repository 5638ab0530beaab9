/*
 * Threaded tests of segkmem: a VM_SLEEP page reservation waits until
 * another thread unreserves (woken, not polled by time), segkmem_alloc
 * with VM_SLEEP waits on an exhausted budget the same way, and two threads
 * importing and releasing through segkmem on one kas (both backings,
 * metadata charging on) leave exact accounting behind. kas_arena_destroy
 * waits for a classification that has already found the arena.
 *
 * The waits are detected through the resv_wait counter, which the waiter
 * bumps under the budget lock just before it sleeps: no timing involved.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <vmem/segkmem.h>

#include "segkmem_impl.h"
#include "testutil.h"

#define MIB ((size_t)1 << 20)

static kas_t *
make_kas(kas_backing_t backing, size_t size, size_t physmem_pages,
    int charge)
{
	kas_config_t cfg;

	kas_config_init(&cfg);
	cfg.backing = backing;
	cfg.size = size;
	cfg.physmem_pages = physmem_pages;
	cfg.charge_metadata = charge;
	return kas_create(&cfg);
}

static uint64_t
waits(kas_t *kas)
{
	kas_stats_t st;

	kas_get_stats(kas, &st);
	return st.resv_wait;
}

static void
wait_for_sleeper(kas_t *kas, uint64_t before)
{
	while (waits(kas) == before)
		sched_yield();
}

typedef struct resv_job {
	kas_t *kas;
	size_t npages;
	int result;
	void *addr;
} resv_job_t;

static void *
resv_sleeper(void *arg)
{
	resv_job_t *job = arg;

	job->result = kas_page_resv(job->kas, job->npages, VM_SLEEP);
	return NULL;
}

static void
test_resv_sleep_woken_by_unresv(void)
{
	kas_backing_t b;

	for (b = KAS_REAL; b <= KAS_SIM; b++) {
		kas_t *kas = make_kas(b, 8 * MIB, 10, 0);
		resv_job_t job = { kas, 5, -1, NULL };
		pthread_t t;
		uint64_t w0;

		REQUIRE(kas != NULL);
		CHECK_EQ(kas_page_resv(kas, 10, VM_SLEEP), 1);
		CHECK_EQ(kas_page_resv(kas, 5, VM_NOSLEEP), 0);
		w0 = waits(kas);
		REQUIRE(pthread_create(&t, NULL, resv_sleeper, &job) == 0);
		wait_for_sleeper(kas, w0);
		/* Still asleep: only 4 pages come back, it wants 5. */
		kas_page_unresv(kas, 4);
		wait_for_sleeper(kas, w0 + 1);
		CHECK_EQ(job.result, -1);
		kas_page_unresv(kas, 1);
		pthread_join(t, NULL);
		CHECK_EQ(job.result, 1);
		CHECK_EQ(kas_availrmem(kas), 0);
		kas_page_unresv(kas, 10);
		CHECK_EQ(kas_availrmem(kas), 10);
		kas_destroy(kas);
	}
}

static void *
alloc_sleeper(void *arg)
{
	resv_job_t *job = arg;

	job->addr = segkmem_alloc(kas_heap_arena(job->kas),
	    job->npages * kas_pagesize(job->kas), VM_SLEEP);
	return NULL;
}

static void
test_segkmem_alloc_sleeps_on_budget(void)
{
	kas_backing_t b;

	for (b = KAS_REAL; b <= KAS_SIM; b++) {
		kas_t *kas = make_kas(b, 8 * MIB, 16, 0);
		vmem_t *heap;
		size_t ps;
		resv_job_t job = { kas, 8, 0, NULL };
		pthread_t t;
		uint64_t w0;
		void *x;

		REQUIRE(kas != NULL);
		heap = kas_heap_arena(kas);
		ps = kas_pagesize(kas);
		x = segkmem_alloc(heap, 12 * ps, VM_SLEEP);
		REQUIRE(x != NULL);
		w0 = waits(kas);
		REQUIRE(pthread_create(&t, NULL, alloc_sleeper, &job) == 0);
		wait_for_sleeper(kas, w0);
		CHECK(job.addr == NULL);
		segkmem_free(heap, x, 12 * ps);
		pthread_join(t, NULL);
		REQUIRE(job.addr != NULL);
		CHECK(kas_page_is_committed(kas, job.addr));
		if (b == KAS_REAL)
			memset(job.addr, 3, 8 * ps);
		segkmem_free(heap, job.addr, 8 * ps);
		CHECK_EQ(kas_availrmem(kas), 16);
		kas_destroy(kas);
	}
}

typedef struct churn_job {
	kas_t *kas;
	vmem_t *arena;
	uint64_t seed;
	int rounds;
} churn_job_t;

static void *
churn(void *arg)
{
	churn_job_t *job = arg;
	size_t ps = kas_pagesize(job->kas);
	void *held[32] = { 0 };
	size_t sizes[32] = { 0 };
	tu_rng_t rng;
	int i;

	tu_seed(&rng, job->seed);
	for (i = 0; i < job->rounds; i++) {
		size_t slot = (size_t)tu_range(&rng, 0, 31);

		if (held[slot] != NULL) {
			vmem_free(job->arena, held[slot], sizes[slot]);
			held[slot] = NULL;
		} else {
			sizes[slot] = (size_t)tu_range(&rng, 1, 6) * ps;
			held[slot] = vmem_alloc(job->arena, sizes[slot],
			    VM_SLEEP);
			if (kas_backing(job->kas) == KAS_REAL)
				memset(held[slot], 1, sizes[slot]);
		}
	}
	for (i = 0; i < 32; i++)
		if (held[i] != NULL)
			vmem_free(job->arena, held[i], sizes[i]);
	return NULL;
}

static void
test_two_threads_churn(void)
{
	int rounds = tu_slow_build() ? 400 : 4000;
	kas_backing_t b;

	for (b = KAS_REAL; b <= KAS_SIM; b++) {
		kas_t *kas = make_kas(b, 64 * MIB, 0, 1);
		churn_job_t jobs[2];
		pthread_t t[2];
		kas_stats_t st;
		vmem_t *a;
		int i;

		REQUIRE(kas != NULL);
		/* A memory arena that releases spans often: no quantum caches. */
		a = kas_arena_create(kas, "churn", NULL, 0, kas_pagesize(kas),
		    segkmem_alloc, segkmem_free, kas_heap_arena(kas), 0,
		    VM_SLEEP);
		REQUIRE(a != NULL);
		for (i = 0; i < 2; i++) {
			jobs[i].kas = kas;
			jobs[i].arena = i == 0 ? a : kas_kmem_default(kas);
			jobs[i].seed = 42 + (uint64_t)i;
			jobs[i].rounds = rounds;
			REQUIRE(pthread_create(&t[i], NULL, churn, &jobs[i]) == 0);
		}
		for (i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		kas_arena_destroy(kas, a);
		kas_settle_metadata(kas);
		kas_get_stats(kas, &st);
		CHECK_EQ(st.meta_pages_unsettled, 0);
		CHECK_EQ(st.pages_committed, st.meta_pages_total);
		CHECK_EQ(st.pages_reserved, st.meta_pages_total);
		/* kmem_va keeps quantum-cache slabs of address space. */
		CHECK_EQ(st.heap_inuse, st.meta_pages_total * st.pagesize +
		    vmem_size(kas_kmem_va(kas), VMEM_ALLOC | VMEM_FREE));
		CHECK_EQ(vmem_size(kas_kmem_default(kas), VMEM_ALLOC), 0);
		for (i = 0; i < KAS_META_NKINDS; i++)
			CHECK_EQ(st.meta_pages[i], (st.meta_bytes[i] +
			    st.pagesize - 1) / st.pagesize);
		CHECK_ARENA(kas_heap_arena(kas));
		kas_destroy(kas);
	}
}


/*
 * A classification finds the arena that holds the address, then walks it
 * with no lock held. Destroying the arena in that window must wait: the
 * hook holds the classifier there until the destroyer has started, and
 * the destroyer must not get past kas_arena_forget while it is held.
 */
typedef struct window {
	kas_t *kas;
	vmem_t *victim;
	uintptr_t addr;
	_Atomic int in_window;     /* the classifier reached the hook */
	_Atomic int destroying;    /* the destroyer is about to forget */
	_Atomic int destroyed;     /* kas_arena_destroy returned */
	_Atomic int destroyed_in_window; /* ... while the hook still ran */
	kas_fault_t kind;
} window_t;

static window_t *the_window;

static void
hold_classify_window(kas_t *kas, vmem_t *vmp)
{
	window_t *w = the_window;

	if (kas != w->kas || vmp != w->victim)
		return;
	atomic_store(&w->in_window, 1);
	while (!atomic_load(&w->destroying))
		sched_yield();
	/* Long enough for an unwaiting destroy to finish many times over. */
	for (int i = 0; i < 200 && !atomic_load(&w->destroyed); i++)
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	if (atomic_load(&w->destroyed))
		atomic_store(&w->destroyed_in_window, 1);
}

static void *
classifier_thread(void *arg)
{
	window_t *w = arg;
	char buf[160];

	w->kind = kas_classify(w->kas, w->addr, buf, sizeof (buf));
	return NULL;
}

static void
test_forget_waits_for_classify(void)
{
	for (int b = 0; b < 2; b++) {
		kas_backing_t backing = b == 0 ? KAS_SIM : KAS_REAL;
		kas_t *kas = make_kas(backing, 64 * MIB, 0, 0);
		vmem_t *heap = kas_heap_arena(kas);
		window_t w;
		pthread_t t;
		void *base;

		memset(&w, 0, sizeof (w));
		w.kas = kas;
		/* A span of its own (added, so it stays while free) in an
		 * arena deeper than the heap, so the victim holds the address. */
		w.victim = kas_arena_create(kas, "victim", NULL, 0, 4096,
		    segkmem_alloc, segkmem_free, heap, 0, VM_SLEEP);
		CHECK(w.victim != NULL);
		base = vmem_alloc(heap, 4 * 4096, VM_SLEEP);
		CHECK(base != NULL);
		CHECK(vmem_add(w.victim, base, 4 * 4096, VM_SLEEP) == base);
		w.addr = (uintptr_t)base + 4096;
		the_window = &w;
		kas_classify_window_hook = hold_classify_window;
		CHECK(pthread_create(&t, NULL, classifier_thread, &w) == 0);
		while (!atomic_load(&w.in_window))
			sched_yield();
		atomic_store(&w.destroying, 1);
		kas_arena_destroy(kas, w.victim);
		atomic_store(&w.destroyed, 1);
		CHECK(pthread_join(t, NULL) == 0);
		kas_classify_window_hook = NULL;
		CHECK(!atomic_load(&w.destroyed_in_window));
		/* The span was still the arena's when it was classified. */
		CHECK(w.kind == KAS_FAULT_FREE);
		vmem_free(heap, base, 4 * 4096);
		kas_destroy(kas);
	}
}

int
main(void)
{
	RUN(test_resv_sleep_woken_by_unresv);
	RUN(test_segkmem_alloc_sleeps_on_budget);
	RUN(test_two_threads_churn);
	RUN(test_forget_waits_for_classify);
	return tu_finish();
}
