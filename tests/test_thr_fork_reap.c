/*
 * fork() while another thread reaps caches whose slabs come from a kernel
 * address space, in a process where kmem started before the first address
 * space. The order matters: fork handlers run in the reverse order of
 * their registration, so here the address space's handler (which holds
 * every page lock) runs before kmem's (which waits for the cache-list
 * lock). A reap that held the list lock while its frees waited for a page
 * lock deadlocked the parent in fork() within a few forks. A watchdog
 * turns such a hang into a failure.
 *
 * This is a program of its own because the order is fixed by the first
 * use of each layer in the process.
 *
 * Also: fork while a page reservation goes to sleep (it queues its
 * address space for the reclaimer with the reservation lock held, so the
 * fork handler must take the reclaimer's lock after the kas locks).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include <vmem/kmem.h>
#include <vmem/segkmem.h>

#include "testutil.h"

#define PAGE ((size_t)4096)
#define BURST 64

static kmem_cache_t *cache;
static atomic_int stop;
static atomic_long reaps;

static void
reap_now(kmem_cache_t *cp, void *arg)
{
	(void)arg;
	kmem_cache_reap_now(cp);
}

/* Fill slabs, give them back, and reap them into the address space. */
static void *
reaper(void *arg)
{
	void *held[BURST];

	(void)arg;
	while (!atomic_load(&stop)) {
		for (int i = 0; i < BURST; i++)
			held[i] = kmem_cache_alloc(cache, KM_SLEEP);
		for (int i = 0; i < BURST; i++)
			kmem_cache_free(cache, held[i]);
		kmem_foreach_cache(reap_now, NULL);
		kmem_reap();
		atomic_fetch_add(&reaps, 1);
	}
	return NULL;
}

/* In the child: reap and allocate too. */
static int
child_reaps(void)
{
	void *p;

	kmem_reap();
	p = kmem_cache_alloc(cache, KM_NOSLEEP);
	if (p == NULL)
		return 2;
	kmem_cache_free(cache, p);
	return 0;
}

static void
test_fork_while_reaping_into_an_address_space(void)
{
	int forks = (int)tu_env_long("VMEM_TEST_FORKS",
	    tu_slow_build() ? 20 : 500);
	vmem_t *qarena;
	kas_t *kas;
	void *p;
	pthread_t t;

	/* kmem first: a quantum-cached arena creates its caches. */
	qarena = vmem_create("fr_q", (void *)(uintptr_t)0x10000000, 16 << 20,
	    PAGE, NULL, NULL, NULL, 4 * PAGE, VM_SLEEP);
	REQUIRE(qarena != NULL);
	p = vmem_alloc(qarena, PAGE, VM_SLEEP);
	REQUIRE(p != NULL);
	vmem_free(qarena, p, PAGE);
	/* Then the address space, and a cache of memory from it. */
	kas = kas_create(NULL);
	REQUIRE(kas != NULL);
	cache = kmem_cache_create("fr_obj", 1024, 0, NULL, NULL, NULL, NULL,
	    kas_kmem_default(kas), 0);
	REQUIRE(cache != NULL);

	REQUIRE(pthread_create(&t, NULL, reaper, NULL) == 0);
	tu_fork_children(forks, child_reaps,
	    "a reap held the cache list while it freed pages");
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	CHECK(atomic_load(&reaps) > 0);
	kmem_cache_destroy(cache);
	kas_destroy(kas);
	vmem_reap(qarena);
	CHECK_EQ(vmem_size(qarena, VMEM_ALLOC), 0);
	vmem_destroy(qarena);
}

static kas_t *resv_kas;

/*
 * Sleep for a page again and again; the main thread's frees wake it. The
 * yield leaves the page lock free for a moment: the platform lock lets a
 * thread that retakes it at once keep it, and under valgrind, which runs
 * one thread at a time, the main thread's NOSLEEP take kept finding it
 * held (a CI run spun here for 25 minutes).
 */
static void *
resv_sleeper(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		if (kas_page_resv(resv_kas, 1, VM_SLEEP))
			kas_page_unresv(resv_kas, 1);
		sched_yield();
	}
	return NULL;
}

static int
child_reserves(void)
{
	if (!kas_page_resv(resv_kas, 1, VM_NOSLEEP))
		return 0;       /* all taken at the fork: fine */
	kas_page_unresv(resv_kas, 1);
	return 0;
}

static void
test_fork_while_reservations_sleep(void)
{
	int forks = (int)tu_env_long("VMEM_TEST_FORKS",
	    tu_slow_build() ? 20 : 300);
	kas_config_t cfg;
	size_t all;
	pthread_t t;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.size = (size_t)16 << 20;
	cfg.physmem_pages = 64;
	resv_kas = kas_create(&cfg);
	REQUIRE(resv_kas != NULL);
	all = kas_availrmem(resv_kas);
	REQUIRE(all > 0 && kas_page_resv(resv_kas, all, VM_NOSLEEP));
	atomic_store(&stop, 0);
	REQUIRE(pthread_create(&t, NULL, resv_sleeper, NULL) == 0);
	for (int i = 0; i < forks; i++) {
		/* A page to wake the sleeper, taken back at once. */
		kas_page_unresv(resv_kas, 1);
		tu_fork_children(1, child_reserves,
		    "a sleeping reservation and the fork handler");
		while (!kas_page_resv(resv_kas, 1, VM_NOSLEEP))
			sched_yield();
	}
	atomic_store(&stop, 1);
	kas_page_unresv(resv_kas, all);
	pthread_join(t, NULL);
	kas_destroy(resv_kas);
}

int
main(void)
{
	RUN(test_fork_while_reaping_into_an_address_space);
	RUN(test_fork_while_reservations_sleep);
	return tu_finish();
}
