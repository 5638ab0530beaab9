/*
 * The global tag pool when metadata runs out in one thread while another
 * takes and gives tags. A take that drains the pool and then cannot get a
 * new chunk hands back the tags it took; it did so after dropping the
 * pool's lock, racing with the other thread's takes and gives (tags lost
 * from the pool, or one tag on the pool and in an arena). TSan (the
 * "threads" label runs under it) reports that race; in a plain build the
 * checks below catch a tag that went astray.
 *
 * Metadata is refused to the main thread only (plat_fail_hook, a
 * thread-local switch), so its arena drains the pool while the churning
 * thread's arena keeps trimming tags back into it. After each drain the
 * main thread leaves the pool alone until the churn has been through it
 * (waiting on a counter the churn bumps, which orders nothing the main
 * thread did before the churn): the give-back and the churn's next take
 * are then unordered, and TSan sees them race every round.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L /* sched_yield */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>

#include "fault.h"
#include "testutil.h"
#include "vmem_testlib.h"

#define Q 4096UL
#define CHURN 200

static _Thread_local int refuse_here;
static atomic_int stop;
static atomic_long churn_rounds;

static int
refuse_hook(const char *what)
{
	(void)what;
	return refuse_here;
}

/* Aligned pages one apart: every allocation takes tags, every free
 * gives them back, and the reserve trims into the pool. */
static void *
churn(void *arg)
{
	vmem_t *v = arg;
	void *a[CHURN];

	while (!atomic_load(&stop)) {
		for (int i = 0; i < CHURN; i++)
			a[i] = vmem_xalloc(v, Q, 2 * Q, 0, 0, NULL, NULL,
			    VM_NOSLEEP);
		for (int i = 0; i < CHURN; i++) {
			CHECK(a[i] != NULL);
			if (a[i] != NULL)
				vmem_xfree(v, a[i], Q);
		}
		atomic_fetch_add(&churn_rounds, 1);
	}
	return NULL;
}

static void
test_pool_drained_while_shared(void)
{
	int rounds = tu_slow_build() ? 5 : 10;
	size_t cap = (size_t)1 << 20;
	uintptr_t *got = malloc(cap * sizeof (uintptr_t));
	vmem_t *b = vmem_create("tp_churn", TL_PTR(0x10000000UL), 1024 * Q, Q,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	vmem_t *a = vmem_create("tp_drain", TL_PTR(0x100000000UL),
	    (size_t)1 << 32, Q, NULL, NULL, NULL, 0, VM_SLEEP);
	pthread_t t;
	int drained = 0, done = 0;

	REQUIRE(got != NULL && a != NULL && b != NULL);
	plat_fail_hook = refuse_hook;
	REQUIRE(pthread_create(&t, NULL, churn, b) == 0);
	/* Until both sides have done their share. */
	for (int r = 0; r < rounds || atomic_load(&churn_rounds) < rounds;
	    r++) {
		size_t n = 0;

		refuse_here = 1;
		while (n < cap) {
			void *x = vmem_xalloc(a, Q, 2 * Q, 0, 0, NULL, NULL,
			    VM_NOSLEEP);
			if (x == NULL)
				break;
			got[n++] = TL_U(x);
		}
		refuse_here = 0;
		drained += n < cap;
		done++;
		for (long c0 = atomic_load(&churn_rounds);
		    atomic_load(&churn_rounds) < c0 + 2;)
			sched_yield();
		for (size_t i = 0; i < n; i++)
			vmem_xfree(a, TL_PTR(got[i]), Q);
	}
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	plat_fail_hook = NULL;
	CHECK_EQ(drained, done);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_size(b, VMEM_ALLOC), 0);
	CHECK_ARENA(a);
	CHECK_ARENA(b);
	vmem_destroy(a);
	vmem_destroy(b);
	free(got);
}

int
main(void)
{
	RUN(test_pool_drained_while_shared);
	return tu_finish();
}
