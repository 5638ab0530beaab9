/*
 * Next fit as pid allocators use it: an id that was just freed is not
 * handed out again until the allocator has gone round the whole space,
 * even though the freed segment coalesced with the free space below it;
 * the rotor wraps at the end; and once everything is freed the space is
 * one free segment again, allocatable whole by any policy.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "testutil.h"
#include "vmem_impl.h"
#include "vmem_testlib.h"

static void
test_no_immediate_reuse(void)
{
	vmem_t *ids = vmem_create("nf_ids", (void *)1, 1000, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);
	uintptr_t last = 0;

	/* Allocate and free at once, round and round the space. */
	for (int i = 0; i < 2500; i++) {
		uintptr_t id = (uintptr_t)vmem_alloc(ids, 1,
		    VM_NOSLEEP | VM_NEXTFIT);
		CHECK_EQ(id, (uintptr_t)(i % 1000) + 1);
		CHECK(id != last);
		vmem_free(ids, (void *)id, 1);
		last = id;
	}
	CHECK(vmem_check(ids) == 0);
	CHECK_EQ(vmem_size(ids, VMEM_ALLOC), 0);
	/* Everything coalesced: the whole space in one piece. */
	void *all = vmem_alloc(ids, 1000, VM_NOSLEEP | VM_BESTFIT);
	CHECK_EQ((uintptr_t)all, 1);
	vmem_free(ids, all, 1000);
	vmem_destroy(ids);
}

static void
test_mixed_lifetimes(void)
{
	vmem_t *ids = vmem_create("nf_mixed", (void *)100, 64, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);
	uintptr_t held[8];

	for (int i = 0; i < 8; i++)
		held[i] = (uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(held[i], 100 + (uintptr_t)i);
	/* Free 101 and 103: the next ids are still 108, 109... */
	vmem_free(ids, (void *)held[1], 1);
	vmem_free(ids, (void *)held[3], 1);
	CHECK_EQ((uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT), 108);
	/* Take the rest of the space: the allocator wraps to 101, then 103. */
	for (uintptr_t id = 109; id < 164; id++)
		CHECK_EQ((uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT),
		    id);
	CHECK_EQ((uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT), 101);
	CHECK_EQ((uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT), 103);
	CHECK(vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT) == NULL);
	CHECK(vmem_check(ids) == 0);
	for (uintptr_t id = 100; id < 164; id++)
		vmem_free(ids, (void *)id, 1);
	CHECK_EQ(vmem_size(ids, VMEM_FREE), 64);
	CHECK(vmem_check(ids) == 0);
	vmem_destroy(ids);
}

/* Free what is still allocated, then destroy: no leak report. */
static void
free_all_and_destroy(vmem_t *v)
{
	tl_segs_t held = { 0 };

	tl_walk(v, VMEM_ALLOC, &held);
	for (size_t i = 0; i < held.n; i++)
		vmem_xfree(v, (void *)held.v[i].start, held.v[i].size);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	tl_segs_free(&held);
	vmem_destroy(v);
}

/* An id space [1, size] with ids 1..10 taken by next fit. */
static vmem_t *
ten_ids(size_t size)
{
	vmem_t *v = vmem_create("nf_ten", (void *)1, size, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);

	REQUIRE(v != NULL);
	for (uintptr_t i = 1; i <= 10; i++)
		CHECK_EQ((uintptr_t)vmem_alloc(v, 1, VM_NOSLEEP | VM_NEXTFIT),
		    i);
	return v;
}

static uintptr_t
next_id(vmem_t *v)
{
	return (uintptr_t)vmem_alloc(v, 1, VM_NOSLEEP | VM_NEXTFIT);
}

/*
 * The last id freed, with nothing free after it, is the last candidate,
 * not the first; and the rotor stays at its address when other policies
 * carve the free segment it is in (it used to move with the tag).
 */
static void
test_rotor_position(void)
{
	vmem_t *v;

	/* Full space: free 3 and the last id, 10: wrap round to 3. */
	v = ten_ids(10);
	vmem_free(v, (void *)3, 1);
	vmem_free(v, (void *)10, 1);
	CHECK_EQ(next_id(v), 3);
	CHECK_EQ(next_id(v), 10);
	CHECK(vmem_check(v) == 0);
	free_all_and_destroy(v);

	/* 11 held by someone else: freeing 10 goes on at 12. */
	v = ten_ids(100);
	CHECK_EQ((uintptr_t)vmem_xalloc(v, 1, 0, 0, 0, (void *)11,
	    (void *)12, VM_NOSLEEP), 11);
	vmem_free(v, (void *)10, 1);
	CHECK_EQ(next_id(v), 12);
	CHECK(vmem_check(v) == 0);
	free_all_and_destroy(v);

	/* VM_ENDALLOC takes the top of the rotor's free segment. */
	v = ten_ids(100);
	vmem_free(v, (void *)10, 1);
	CHECK_EQ((uintptr_t)vmem_alloc(v, 1, VM_NOSLEEP | VM_ENDALLOC), 100);
	vmem_free(v, (void *)2, 1);
	CHECK_EQ(next_id(v), 11);
	CHECK(vmem_check(v) == 0);
	free_all_and_destroy(v);

	/* An xalloc carves the middle of it. */
	v = ten_ids(100);
	vmem_free(v, (void *)10, 1);
	CHECK_EQ((uintptr_t)vmem_xalloc(v, 1, 0, 0, 0, (void *)50, NULL,
	    VM_NOSLEEP), 50);
	CHECK_EQ(next_id(v), 11);
	CHECK(vmem_check(v) == 0);
	free_all_and_destroy(v);
}

/*
 * A pid space with every id taken: a failing next-fit call must not walk
 * the 100,000 allocated ids (it took 3.7 ms a call), nor 50,000 one-id
 * holes for a two-id request; and a hole that fits is still found.
 */
static void
test_failure_without_walk(void)
{
	enum { N = 100000 };
	vmem_t *v = vmem_create("nf_full", (void *)1, N, 1, NULL, NULL, NULL,
	    0, VMC_IDENTIFIER);
	uint64_t before;

	REQUIRE(v != NULL);
	for (uintptr_t i = 1; i <= N; i++)
		REQUIRE((uintptr_t)next_id(v) == i);
	before = tl_stats(v).search;
	for (int k = 0; k < 10; k++)
		CHECK(next_id(v) == 0);
	CHECK_EQ(tl_stats(v).search - before, 0);
	for (uintptr_t i = 1; i <= N; i += 2)
		vmem_free(v, (void *)i, 1);
	before = tl_stats(v).search;
	CHECK(vmem_alloc(v, 2, VM_NOSLEEP | VM_NEXTFIT) == NULL);
	CHECK_EQ(tl_stats(v).search - before, 0);
	/* Two adjacent free ids: found, wherever the rotor is. */
	vmem_free(v, (void *)(uintptr_t)(N / 2), 1);
	CHECK_EQ((uintptr_t)vmem_alloc(v, 2, VM_NOSLEEP | VM_NEXTFIT),
	    N / 2 - 1);
	CHECK_EQ((uintptr_t)next_id(v), N / 2 + 1);
	CHECK(vmem_check(v) == 0);
	free_all_and_destroy(v);
}

/*
 * The class size bound that tells a failing next fit not to walk is an
 * upper bound: after a 17-id hole is taken from a class that also held a
 * 16-id one, it still says 17. The class is read instead (one segment),
 * not the 20,000 ids of the address list.
 */
static void
test_stale_bound_without_walk(void)
{
	enum { N = 20000 };
	vmem_t *v = vmem_create("nf_stale", (void *)1, N, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);
	uint64_t before;

	REQUIRE(v != NULL);
	for (uintptr_t i = 1; i <= N; i++)
		REQUIRE((uintptr_t)next_id(v) == i);
	for (uintptr_t i = 0; i < 17; i++) {
		if (i < 16)
			vmem_free(v, (void *)(100 + i), 1);
		vmem_free(v, (void *)(1000 + i), 1);
	}
	CHECK_EQ((uintptr_t)vmem_alloc(v, 17, VM_NOSLEEP | VM_NEXTFIT), 1000);
	before = tl_stats(v).search;
	CHECK(vmem_alloc(v, 17, VM_NOSLEEP | VM_NEXTFIT) == NULL);
	CHECK(vmem_alloc(v, 17, VM_NOSLEEP | VM_NEXTFIT) == NULL);
	CHECK(tl_stats(v).search - before <= 1);
	/* A hole in a higher class: every member fits, so the walk goes to
	 * it, from the rotor on. */
	for (uintptr_t i = 0; i < 40; i++)
		vmem_free(v, (void *)(5000 + i), 1);
	CHECK_EQ((uintptr_t)vmem_alloc(v, 17, VM_NOSLEEP | VM_NEXTFIT), 5000);
	CHECK_EQ((uintptr_t)vmem_alloc(v, 17, VM_NOSLEEP | VM_NEXTFIT), 5017);
	CHECK(vmem_alloc(v, 17, VM_NOSLEEP | VM_NEXTFIT) == NULL);
	CHECK_EQ((uintptr_t)vmem_alloc(v, 6, VM_NOSLEEP | VM_NEXTFIT), 5034);
	CHECK_EQ((uintptr_t)vmem_alloc(v, 16, VM_NOSLEEP | VM_NEXTFIT), 100);
	CHECK(vmem_check(v) == 0);
	free_all_and_destroy(v);
}

/*
 * One free id among 100,000 taken, far behind the rotor: the walk would
 * pass every allocated id to reach it; after its budget the freelists
 * answer (a pid allocator out of pids took 50 ms per fork at a million).
 */
static void
test_nearly_full_without_walk(void)
{
	enum { N = 100000 };
	vmem_t *v = vmem_create("nf_full", (void *)1, N, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);
	uint64_t before;

	REQUIRE(v != NULL);
	for (uintptr_t i = 1; i <= N; i++)
		REQUIRE((uintptr_t)next_id(v) == i);
	vmem_free(v, (void *)(uintptr_t)500, 1);
	before = tl_stats(v).search;
	CHECK_EQ((uintptr_t)next_id(v), 500);
	CHECK(tl_stats(v).search - before <= 2 * 1 + 16 + 2);
	vmem_free(v, (void *)(uintptr_t)90000, 1);
	vmem_free(v, (void *)(uintptr_t)7, 1);
	before = tl_stats(v).search;
	CHECK_EQ((uintptr_t)next_id(v), 90000);   /* after the rotor first */
	CHECK_EQ((uintptr_t)next_id(v), 7);       /* then round the space */
	CHECK(tl_stats(v).search - before <= 2 * (2 * 2 + 16 + 2));
	CHECK(vmem_check(v) == 0);
	free_all_and_destroy(v);
}

static int
refuse_all_metadata(const char *site, void *arg)
{
	(void)arg;
	return strcmp(site, "metadata") == 0;
}

/* As above in 40 spans of 2,500 ids, added from the top down. */
static void
test_nearly_full_many_spans(void)
{
	enum { SPANS = 40, EACH = 2500 };
	vmem_t *v = vmem_create("nf_full40", NULL, 0, 1, NULL, NULL, NULL, 0,
	    VMC_IDENTIFIER);
	uint64_t before;

	REQUIRE(v != NULL);
	for (int k = SPANS - 1; k >= 0; k--)
		REQUIRE(vmem_add(v, (void *)(uintptr_t)(1 + k * EACH), EACH,
		    VM_NOSLEEP) != NULL);
	for (int i = 0; i < SPANS * EACH; i++)
		REQUIRE(next_id(v) != 0);
	vmem_free(v, (void *)(uintptr_t)(1 + 20 * EACH + 7), 1);
	before = tl_stats(v).search;
	CHECK_EQ((uintptr_t)next_id(v), (uintptr_t)(1 + 20 * EACH + 7));
	CHECK(tl_stats(v).search - before <= 2 * 1 + 16 + 2 * SPANS + 2);
	/* No memory for the span index: the walk goes on, to the same id. */
	vmem_free(v, (void *)(uintptr_t)(1 + 3 * EACH), 1);
	vmem_set_fault_hook(refuse_all_metadata, NULL);
	CHECK_EQ((uintptr_t)next_id(v), (uintptr_t)(1 + 3 * EACH));
	vmem_set_fault_hook(NULL, NULL);
	CHECK(vmem_check(v) == 0);
	free_all_and_destroy(v);
}

/* The same operations on two arenas, one walking, one answered from its
 * freelists after `budget` steps. */
typedef struct {
	vmem_t *walk, *lists;
	uintptr_t *addr;
	size_t *size;
	size_t n, cap;
} twin_t;

/* Three spans in arrival order unlike address order, and `more` spans of
 * 60 ids after them, also out of address order (23 is prime). */
static vmem_t *
twin_arena(const char *name, int more)
{
	vmem_t *v = vmem_create(name, (void *)5000, 500, 1, NULL, NULL, NULL,
	    0, VMC_IDENTIFIER);

	REQUIRE(v != NULL);
	REQUIRE(vmem_add(v, (void *)1, 1000, VM_NOSLEEP) != NULL);
	REQUIRE(vmem_add(v, (void *)20000, 300, VM_NOSLEEP) != NULL);
	for (int i = 0; i < more; i++)
		REQUIRE(vmem_add(v, (void *)(uintptr_t)(100000 +
		    (uintptr_t)((i * 7) % 23) * 1000), 60, VM_NOSLEEP) != NULL);
	return v;
}

static void
twin_alloc(twin_t *t, tu_rng_t *rng, int flags)
{
	size_t size = (size_t)tu_range(rng, 1, tu_range(rng, 0, 3) ? 2 : 9);
	uintptr_t a, b;

	vmem_nextfit_test_budget = LONG_MAX;
	a = (uintptr_t)vmem_alloc(t->walk, size, VM_NOSLEEP | flags);
	vmem_nextfit_test_budget = (long)tu_range(rng, 0, 3);
	b = (uintptr_t)vmem_alloc(t->lists, size, VM_NOSLEEP | flags);
	vmem_nextfit_test_budget = -1;
	CHECK_EQ(b, a);
	if (a == 0 || b != a)
		return;
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 1024;
		t->addr = realloc(t->addr, t->cap * sizeof (uintptr_t));
		t->size = realloc(t->size, t->cap * sizeof (size_t));
		REQUIRE(t->addr != NULL && t->size != NULL);
	}
	t->addr[t->n] = a;
	t->size[t->n++] = size;
}

static void
twin_free(twin_t *t, tu_rng_t *rng)
{
	size_t k = (size_t)tu_range(rng, 0, t->n - 1);

	vmem_free(t->walk, (void *)t->addr[k], t->size[k]);
	vmem_free(t->lists, (void *)t->addr[k], t->size[k]);
	t->addr[k] = t->addr[--t->n];
	t->size[k] = t->size[t->n];
}

/*
 * The freelists' answer is the walk's, whenever the walk stops: random
 * next-fit traffic (with some instant fit, which leaves the rotor alone)
 * over spans that arrived out of address order, often nearly full.
 */
static void
twins_agree(int more_spans)
{
	twin_t t = { twin_arena("nf_walk", more_spans),
	    twin_arena("nf_lists", more_spans), NULL, NULL, 0, 0 };
	long steps = tu_env_long("VMEM_STEPS", tu_slow_build() ? 20000 :
	    200000);
	tu_rng_t rng;

	tu_seed(&rng, (uint64_t)tu_env_long("VMEM_SEED", 1));
	for (long i = 0; i < steps; i++) {
		uint64_t op = tu_range(&rng, 0, 9);

		if (op < 6 || t.n == 0)
			twin_alloc(&t, &rng, VM_NEXTFIT);
		else if (op == 6)
			twin_alloc(&t, &rng, 0);
		else
			twin_free(&t, &rng);
		if (i % 5000 == 0) {
			CHECK(vmem_check(t.walk) == 0);
			CHECK(vmem_check(t.lists) == 0);
		}
	}
	while (t.n > 0)
		twin_free(&t, &rng);
	free(t.addr);
	free(t.size);
	vmem_destroy(t.walk);
	vmem_destroy(t.lists);
}

static void
test_freelists_answer_as_the_walk(void)
{
	twins_agree(0);
}

/* The same with 26 spans: the answer finds segments' spans through a
 * temporary index sorted by address. */
static void
test_freelists_answer_with_many_spans(void)
{
	twins_agree(23);
}

int
main(void)
{
	RUN(test_no_immediate_reuse);
	RUN(test_mixed_lifetimes);
	RUN(test_rotor_position);
	RUN(test_failure_without_walk);
	RUN(test_stale_bound_without_walk);
	RUN(test_nearly_full_without_walk);
	RUN(test_nearly_full_many_spans);
	RUN(test_freelists_answer_as_the_walk);
	RUN(test_freelists_answer_with_many_spans);
	return tu_finish();
}
