/*
 * Two threads on the same arenas: VM_SLEEP waits and their wake-ups, then
 * a random alloc/free/xalloc/import churn.
 *
 * Wake-ups are tested with a fixed hand-off, so the outcome is
 * deterministic (no sleeps, no timing): the main thread fills a small
 * arena; the other thread asks for one quantum with VM_SLEEP and must
 * block; the main thread sees the arena's "wait" counter move (so the
 * other thread is waiting), frees one chosen quantum, and the sleeper must
 * get exactly that quantum. The same runs through an importing child whose
 * source is full. Barriers order the rounds. The free must wake the
 * sleeper (a broadcast on the arena's condition variable): the 100 ms
 * timeout of its wait would hand the quantum over too, only late, so the
 * hand-offs together must take less than half their timeouts (not checked
 * in slow builds).
 *
 * The churn checks that no quantum is ever handed to both threads at once
 * (an atomic owner per quantum), and that everything adds up at the end
 * (vmem_check, sizes, alloc and free counters). Built under TSan too.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L /* barriers, sched_yield */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "vmem_testlib.h"

#define Q 4096UL
#define BASE 0x100000UL
#define SMALL 8

static pthread_barrier_t bar;
static vmem_t *sleep_arena;   /* the arena the sleeper allocates from */
static vmem_t *watch[2];      /* arenas whose wait counters show it */
static int rounds;
static uintptr_t got[512];

static uint64_t
waits(void)
{
	uint64_t w = 0;

	for (int i = 0; i < 2; i++)
		if (watch[i] != NULL)
			w += tl_stats(watch[i]).wait;
	return w;
}

static void *
sleeper(void *arg)
{
	(void)arg;
	for (int i = 0; i < rounds; i++) {
		pthread_barrier_wait(&bar);
		got[i] = TL_U(vmem_alloc(sleep_arena, Q, VM_SLEEP));
		pthread_barrier_wait(&bar);
		vmem_free(sleep_arena, TL_PTR(got[i]), Q);
		pthread_barrier_wait(&bar);
	}
	return NULL;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Main side of the hand-off; full is the arena holding every quantum. */
static void
hand_off(vmem_t *full)
{
	pthread_t t;
	uintptr_t held[SMALL];
	double waited = 0;

	for (int k = 0; k < SMALL; k++) {
		held[k] = TL_U(vmem_alloc(full, Q, VM_NOSLEEP));
		REQUIRE(held[k] == BASE + (uintptr_t)k * Q);
	}
	REQUIRE(pthread_create(&t, NULL, sleeper, NULL) == 0);
	for (int i = 0; i < rounds; i++) {
		uint64_t w0 = waits();
		int k = i % SMALL;
		pthread_barrier_wait(&bar);
		while (waits() == w0) /* the sleeper is now waiting */
			sched_yield();
		double t0 = now_ms();
		vmem_free(full, TL_PTR(held[k]), Q);
		pthread_barrier_wait(&bar);
		waited += now_ms() - t0;
		CHECK_EQ(got[i], held[k]);
		pthread_barrier_wait(&bar);
		/* The sleeper gave it back: take it again. */
		CHECK_EQ(TL_U(vmem_alloc(full, Q, VM_NOSLEEP)), held[k]);
	}
	pthread_join(t, NULL);
	for (int k = 0; k < SMALL; k++)
		vmem_free(full, TL_PTR(held[k]), Q);
	/* Woken by the free, not by the 100 ms timeout of its wait. */
	printf("  %d hand-offs: %.1f ms from free to wake-up\n", rounds,
	    waited);
	if (!tu_slow_build())
		CHECK(waited < rounds * 100.0 / 2);
}

static void
test_sleep_wakeup(void)
{
	vmem_t *v = vmem_create("wake", TL_PTR(BASE), SMALL * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);

	REQUIRE(v != NULL);
	rounds = tu_slow_build() ? 50 : 200;
	sleep_arena = v;
	watch[0] = v;
	watch[1] = NULL;
	hand_off(v);
	CHECK(tl_stats(v).wait >= (uint64_t)rounds);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

static void
test_sleep_wakeup_through_import(void)
{
	vmem_t *p = vmem_create("wakeparent", TL_PTR(BASE), SMALL * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	vmem_t *c = vmem_create("wakechild", NULL, 0, Q, vmem_alloc, vmem_free,
	    p, 0, VM_SLEEP);

	REQUIRE(p != NULL && c != NULL);
	rounds = 20;
	sleep_arena = c;
	watch[0] = p;
	watch[1] = c;
	hand_off(p);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_EQ(tl_stats(c).nspans, 0);
	CHECK_ARENA(c);
	CHECK_ARENA(p);
	vmem_destroy(c);
	vmem_destroy(p);
}

/* ---- churn ---- */

#define NPAGES 1024
static vmem_t *root, *child, *xchild;
static atomic_int owner[NPAGES]; /* 0 free, else thread id + 1 */

static void *
x_import(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	size_t sz = (*sizep + 4 * Q - 1) / (4 * Q) * (4 * Q); /* grow */
	void *a = vmem_xalloc(src, sz, align > Q ? align : 0, 0, 0, NULL,
	    NULL, vmflag & VM_NOSLEEP);

	if (a != NULL)
		*sizep = sz;
	return a;
}

static void
x_release(vmem_t *src, void *addr, size_t size)
{
	vmem_xfree(src, addr, size);
}

typedef struct {
	uintptr_t a;
	size_t size;
	int arena;  /* 0 root, 1 child, 2 xchild */
	int x;      /* from vmem_xalloc */
} held_t;

static void
claim(int id, uintptr_t a, size_t size)
{
	for (uintptr_t p = a; p < a + size; p += Q) {
		int zero = 0;
		size_t i = (p - BASE) / Q;
		CHECK(i < NPAGES);
		if (i < NPAGES)
			CHECK(atomic_compare_exchange_strong(&owner[i], &zero,
			    id + 1));
	}
}

static void
unclaim(int id, uintptr_t a, size_t size)
{
	for (uintptr_t p = a; p < a + size; p += Q)
		CHECK_EQ(atomic_exchange(&owner[(p - BASE) / Q], 0), id + 1);
}

static void *
churner(void *arg)
{
	int id = (int)(uintptr_t)arg;
	vmem_t *ar[3] = { root, child, xchild };
	held_t h[128];
	int n = 0;
	long steps = tu_slow_build() ? 20000 : 200000;
	tu_rng_t r;

	tu_seed(&r, 1000 + (uint64_t)id);
	for (long s = 0; s < steps; s++) {
		if (n == 128 || (n > 0 && tu_range(&r, 0, 1))) {
			int k = (int)tu_range(&r, 0, (uint64_t)n - 1);
			unclaim(id, h[k].a, h[k].size);
			if (h[k].x)
				vmem_xfree(ar[h[k].arena], TL_PTR(h[k].a),
				    h[k].size);
			else
				vmem_free(ar[h[k].arena], TL_PTR(h[k].a),
				    h[k].size);
			h[k] = h[--n];
			continue;
		}
		held_t x;
		x.arena = (int)tu_range(&r, 0, 2);
		x.size = tu_range(&r, 1, 8) * Q;
		x.x = (int)tu_range(&r, 0, 1);
		if (x.x) {
			size_t align = Q << tu_range(&r, 0, 3);
			x.a = TL_U(vmem_xalloc(ar[x.arena], x.size, align, 0,
			    tu_range(&r, 0, 1) ? 32 * Q : 0, NULL, NULL,
			    (tu_range(&r, 0, 1) ? VM_BESTFIT : 0) | VM_NOSLEEP));
			if (x.a != 0)
				CHECK_EQ(x.a % align, 0);
		} else {
			static const int pol[] = { 0, VM_BESTFIT, VM_FIRSTFIT,
			    VM_NEXTFIT };
			x.a = TL_U(vmem_alloc(ar[x.arena], x.size,
			    pol[tu_range(&r, 0, 3)] | VM_NOSLEEP));
		}
		if (x.a == 0)
			continue;
		claim(id, x.a, x.size);
		h[n++] = x;
	}
	while (n > 0) {
		n--;
		unclaim(id, h[n].a, h[n].size);
		if (h[n].x)
			vmem_xfree(ar[h[n].arena], TL_PTR(h[n].a), h[n].size);
		else
			vmem_free(ar[h[n].arena], TL_PTR(h[n].a), h[n].size);
	}
	return NULL;
}

static void
test_churn(void)
{
	pthread_t t[2];
	vmem_stats_t st;

	root = vmem_create("churnroot", TL_PTR(BASE), NPAGES * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	child = vmem_create("churnchild", NULL, 0, Q, vmem_alloc, vmem_free,
	    root, 0, VM_SLEEP);
	xchild = vmem_xcreate("churnx", NULL, 0, Q, x_import, x_release,
	    root, 0, VM_SLEEP);
	REQUIRE(root && child && xchild);
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, churner,
		    (void *)(uintptr_t)i) == 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < NPAGES; i++)
		CHECK_EQ(atomic_load(&owner[i]), 0);
	CHECK_ARENA(child);
	CHECK_ARENA(xchild);
	CHECK_ARENA(root);
	CHECK_EQ(tl_stats(child).nspans, 0);
	CHECK_EQ(tl_stats(xchild).nspans, 0);
	st = tl_stats(root);
	CHECK_EQ(st.mem_inuse, 0);
	CHECK_EQ(st.alloc, st.free);
	CHECK_EQ(st.nfree_segs, 1);
	printf("  root: %llu allocs, %llu fails; child imports %llu\n",
	    (unsigned long long)st.alloc, (unsigned long long)st.fail,
	    (unsigned long long)tl_stats(child).import);
	vmem_destroy(xchild);
	vmem_destroy(child);
	vmem_destroy(root);
}

int
main(void)
{
	REQUIRE(pthread_barrier_init(&bar, NULL, 2) == 0);
	RUN(test_sleep_wakeup);
	RUN(test_sleep_wakeup_through_import);
	RUN(test_churn);
	pthread_barrier_destroy(&bar);
	return tu_finish();
}
