/*
 * One test per pitfall of the vmem contract (the numbered list at the end
 * of docs/vmem-semantics.md): bugs that shipped in existing vmem
 * implementations. Each test is named after its pitfall and builds the
 * situation that exposed the bug, then checks the arena with vmem_check()
 * and the accounting the bug would have broken.
 *
 * Metadata failures are injected through plat_fail_hook (src/fault.h),
 * which makes every metadata page request fail: the tag pool then cannot grow and
 * an operation that needs new tags must fail with the arena unchanged.
 * Tests that exhaust the tag pool run first, before large tests fill the
 * global pool with recycled tags.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "fault.h"
#include "testutil.h"
#include "vmem_testlib.h"

#define Q 4096UL
#define BASE 0x100000UL

static int fail_metadata;      /* hook: fail every metadata page */
static long metadata_requests; /* hook: pages asked for */

static int
fail_hook(const char *what)
{
	(void)what;
	metadata_requests++;
	return fail_metadata;
}

static vmem_t *
mk(const char *name, uintptr_t base, size_t size, size_t quantum, int flags)
{
	vmem_t *v = vmem_create(name, TL_PTR(base), size, quantum, NULL, NULL,
	    NULL, 0, flags | VM_SLEEP);

	REQUIRE(v != NULL);
	return v;
}

static vmem_t *
mk_child(const char *name, vmem_t *src, size_t quantum)
{
	vmem_t *v = vmem_create(name, NULL, 0, quantum, vmem_alloc, vmem_free,
	    src, 0, VM_SLEEP);

	REQUIRE(v != NULL);
	return v;
}

static int
stats_same(const vmem_stats_t *a, const vmem_stats_t *b)
{
	return a->mem_inuse == b->mem_inuse && a->mem_total == b->mem_total &&
	    a->nalloc_segs == b->nalloc_segs &&
	    a->nfree_segs == b->nfree_segs && a->nspans == b->nspans &&
	    a->alloc == b->alloc && a->largest_free == b->largest_free;
}

/* ---- 1: tag reserve drained while unlocked for an import ---- */

struct drain {
	vmem_t *self;     /* the importing arena */
	int nalloc;       /* allocations made from inside the import */
	uintptr_t got[2048];
	int fail_inside;  /* turn metadata failure on inside the import */
};
static struct drain drain;

static void *
drain_import(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	void *span = vmem_xalloc(src, *sizep, align > Q ? align : 0, 0, 0,
	    NULL, NULL, vmflag & VM_NOSLEEP);

	(void)vmflag;
	if (drain.fail_inside)
		fail_metadata = 1;
	/* Eat tags in the very arena that is importing. */
	for (int i = 0; i < 2048; i++) {
		void *a = vmem_alloc(drain.self, Q, VM_NOSLEEP);
		if (a != NULL)
			drain.got[drain.nalloc++] = TL_U(a);
	}
	return span;
}

static void
release_x(vmem_t *src, void *addr, size_t size)
{
	vmem_xfree(src, addr, size);
}

static void
drain_round(int fail_inside)
{
	vmem_t *p = mk("p1parent", 0x40000000UL, 65536 * Q, Q, 0);
	vmem_t *c = vmem_xcreate("p1child", TL_PTR(BASE), 4096 * Q, Q,
	    drain_import, release_x, p, 0, VM_SLEEP);
	void *big;

	REQUIRE(c != NULL);
	memset(&drain, 0, sizeof (drain));
	drain.self = c;
	drain.fail_inside = fail_inside;
	big = vmem_alloc(c, 8192 * Q, VM_NOSLEEP); /* only an import fits */
	fail_metadata = 0;
	if (!fail_inside) {
		CHECK(big != NULL);
		CHECK_EQ(drain.nalloc, 2048);
	} else {
		/* The pool and the reserve really ran dry inside the import
		 * (with a pool full of recycled tags this round would test
		 * nothing: it used to run after pitfall 14 had filled it). */
		CHECK(drain.nalloc < 2048);
	}
	CHECK_ARENA(c);
	CHECK_ARENA(p);
	/* Whatever happened, the parent holds exactly the child's imports. */
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), tl_stats(c).mem_import);
	if (big != NULL)
		vmem_free(c, big, 8192 * Q);
	for (int i = 0; i < drain.nalloc; i++)
		vmem_free(c, TL_PTR(drain.got[i]), Q);
	CHECK_EQ(vmem_size(c, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_ARENA(c);
	vmem_destroy(c);
	vmem_destroy(p);
}

static void
pitfall01_tag_reserve_drained_during_import(void)
{
	/* Dry first: the other round's tags go back to the pool. */
	drain_round(1);
	drain_round(0);
}

/* ---- 2: instant fit that looks only at list heads ---- */

static void
pitfall02_instant_fit_never_misses(void)
{
	vmem_t *v = mk("p2", BASE, 64 * Q, Q, 0);
	uintptr_t a[64], x;
	int n = 0;

	/* One free segment of 7 pages; request 5. */
	a[0] = TL_U(vmem_alloc(v, 7 * Q, VM_NOSLEEP));
	a[1] = TL_U(vmem_alloc(v, 57 * Q, VM_NOSLEEP));
	vmem_free(v, TL_PTR(a[0]), 7 * Q);
	x = TL_U(vmem_alloc(v, 5 * Q, VM_NOSLEEP));
	CHECK_EQ(x, a[0]);
	vmem_free(v, TL_PTR(x), 5 * Q);
	vmem_free(v, TL_PTR(a[1]), 57 * Q);
	CHECK_ARENA(v);

	/* Many 2-page holes (the "might fit" class of 3) and one 3-page. */
	for (int i = 0; i < 19; i++) {
		a[n++] = TL_U(vmem_alloc(v, 2 * Q, VM_NOSLEEP));
		a[n++] = TL_U(vmem_alloc(v, Q, VM_NOSLEEP));
	}
	x = TL_U(vmem_alloc(v, 3 * Q, VM_NOSLEEP));   /* pages 57..59 */
	a[n++] = TL_U(vmem_alloc(v, Q, VM_NOSLEEP));  /* page 60 */
	a[n++] = TL_U(vmem_alloc(v, 3 * Q, VM_NOSLEEP)); /* 61..63 */
	CHECK_EQ(x, BASE + 57 * Q);
	CHECK_EQ(a[n - 1], BASE + 61 * Q);
	CHECK(vmem_alloc(v, Q, VM_NOSLEEP) == NULL);
	for (int i = 0; i < 38; i += 2)
		vmem_free(v, TL_PTR(a[i]), 2 * Q);
	vmem_free(v, TL_PTR(x), 3 * Q);
	CHECK_EQ(TL_U(vmem_alloc(v, 3 * Q, VM_NOSLEEP)), x);
	CHECK(vmem_alloc(v, 3 * Q, VM_NOSLEEP) == NULL);
	CHECK_ARENA(v);
	vmem_free(v, TL_PTR(x), 3 * Q);
	for (int i = 1; i < 38; i += 2)
		vmem_free(v, TL_PTR(a[i]), Q);
	vmem_free(v, TL_PTR(a[38]), Q);
	vmem_free(v, TL_PTR(a[39]), 3 * Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* ---- 3: a hash table that never grows ---- */

static void
pitfall03_hash_grows_and_shrinks(void)
{
	size_t n = tu_slow_build() ? 100000 : 1000000;
	vmem_t *v = mk("p3", 0x10000000UL, 4 * n * Q, Q, 0);
	uintptr_t *a = malloc(n * sizeof (uintptr_t));
	vmem_stats_t st0, st1, st2;
	tu_rng_t r;

	REQUIRE(a != NULL);
	st0 = tl_stats(v);
	for (size_t i = 0; i < n; i++) {
		a[i] = TL_U(vmem_alloc(v, Q, VM_NOSLEEP));
		REQUIRE(a[i] != 0);
	}
	st1 = tl_stats(v);
	CHECK(st1.hash_buckets >= n / 8);
	CHECK(st1.hash_buckets > st0.hash_buckets);
	CHECK_ARENA(v);
	tu_seed(&r, 3);
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = tu_range(&r, 0, i);
		uintptr_t t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
	for (size_t i = 0; i < n; i++)
		vmem_free(v, TL_PTR(a[i]), Q);
	st2 = tl_stats(v);
	/* Average chain steps per free stay O(1). */
	CHECK((st2.lookup - st1.lookup) <= 4 * n);
	CHECK(st2.hash_buckets < st1.hash_buckets);
	CHECK_EQ(st2.mem_inuse, 0);
	CHECK_ARENA(v);
	printf("  %zu frees: %.2f chain steps/free, buckets %zu -> %zu\n", n,
	    (double)(st2.lookup - st1.lookup) / (double)n, st1.hash_buckets,
	    st2.hash_buckets);
	free(a);
	vmem_destroy(v);
}

/* ---- 4: hash resize racing with alloc/free ---- */

#define P4_THREADS 2
static vmem_t *p4_arena;
static atomic_uchar *p4_owner; /* per quantum: owning thread + 1 */
static size_t p4_pages;

static void *
p4_thread(void *arg)
{
	int id = (int)(uintptr_t)arg;
	int rounds = tu_slow_build() ? 4 : 20;
	size_t burst = 6000;
	uintptr_t *a = malloc(burst * sizeof (uintptr_t));

	REQUIRE(a != NULL);
	for (int r = 0; r < rounds; r++) {
		size_t got = 0;
		for (size_t i = 0; i < burst; i++) {
			uintptr_t x = TL_U(vmem_alloc(p4_arena, Q, VM_NOSLEEP));
			if (x == 0)
				continue;
			size_t pg = (x - BASE) / Q;
			unsigned char zero = 0;
			CHECK(pg < p4_pages);
			CHECK(atomic_compare_exchange_strong(&p4_owner[pg],
			    &zero, (unsigned char)(id + 1)));
			a[got++] = x;
		}
		for (size_t i = 0; i < got; i++) {
			size_t pg = (a[i] - BASE) / Q;
			CHECK_EQ(atomic_exchange(&p4_owner[pg], 0), id + 1);
			vmem_free(p4_arena, TL_PTR(a[i]), Q);
		}
	}
	free(a);
	return NULL;
}

static void
pitfall04_hash_resize_race(void)
{
	pthread_t t[P4_THREADS];

	p4_pages = 16384;
	p4_arena = mk("p4", BASE, p4_pages * Q, Q, 0);
	p4_owner = calloc(p4_pages, sizeof (atomic_uchar));
	REQUIRE(p4_owner != NULL);
	for (int i = 0; i < P4_THREADS; i++)
		REQUIRE(pthread_create(&t[i], NULL, p4_thread,
		    (void *)(uintptr_t)i) == 0);
	for (int i = 0; i < P4_THREADS; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ(vmem_size(p4_arena, VMEM_ALLOC), 0);
	CHECK_EQ(tl_stats(p4_arena).nalloc_segs, 0);
	CHECK_EQ(tl_stats(p4_arena).alloc, tl_stats(p4_arena).free);
	CHECK_ARENA(p4_arena);
	vmem_destroy(p4_arena);
	free(p4_owner);
}

/* ---- 5: static bootstrap pools overflowed by many arenas ---- */

static void
pitfall05_many_arenas_no_pool_overflow(void)
{
	int n = 10000;
	vmem_t **v = calloc((size_t)n, sizeof (vmem_t *));
	char name[32];
	vmem_t *x;

	REQUIRE(v != NULL);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof (name), "p5_%d", i);
		v[i] = mk(name, BASE, 4 * Q, Q, 0);
	}
	for (int i = 0; i < n; i += 333) {
		void *a = vmem_alloc(v[i], 4 * Q, VM_NOSLEEP);
		CHECK_EQ(TL_U(a), BASE);
		vmem_free(v[i], a, 4 * Q);
		CHECK_ARENA(v[i]);
	}
	/* No metadata at all: creation fails cleanly, reported, no crash. */
	tu_record_errors();
	fail_metadata = 1;
	x = vmem_create("p5_nomem", TL_PTR(BASE), 4 * Q, Q, NULL, NULL, NULL,
	    0, VM_NOSLEEP);
	fail_metadata = 0;
	if (x == NULL) {
		CHECK_EQ(tu_err.count, 1);
		CHECK_EQ(tu_err.code, VMEM_E_NOMEM);
	} else {
		CHECK_ARENA(x);
		vmem_destroy(x);
	}
	tu_default_errors();
	for (int i = 0; i < n; i++)
		vmem_destroy(v[i]);
	free(v);
}

/* ---- 6: address 0 returned, indistinguishable from failure ---- */

static void
pitfall06_address_zero_never_returned(void)
{
	vmem_t *v;

	tu_record_errors();
	v = vmem_create("p6zero", NULL, 16 * Q, Q, NULL, NULL, NULL, 0,
	    VM_SLEEP);
	CHECK(v == NULL);
	CHECK_EQ(tu_err.code, VMEM_E_ZEROADDR);
	v = vmem_create("p6ids", TL_PTR(1), 63, 1, NULL, NULL, NULL, 0,
	    VMC_IDENTIFIER | VM_SLEEP);
	REQUIRE(v != NULL);
	tu_reset_errors();
	CHECK(vmem_add(v, NULL, 1, VM_SLEEP) == NULL);
	CHECK_EQ(tu_err.code, VMEM_E_ZEROADDR);
	CHECK_ARENA(v);
	for (int pol = 0; pol < 4; pol++) {
		static const int f[] = { 0, VM_BESTFIT, VM_FIRSTFIT,
		    VM_NEXTFIT };
		uintptr_t got[64];
		int n = 0;
		for (;;) {
			uintptr_t a = TL_U(vmem_alloc(v, 1, f[pol] |
			    VM_NOSLEEP));
			if (a == 0)
				break;
			CHECK(a >= 1 && a <= 63);
			got[n++] = a;
		}
		CHECK_EQ(n, 63);
		CHECK(vmem_xalloc(v, 1, 0, 0, 0, NULL, TL_PTR(5), VM_NOSLEEP)
		    == NULL);
		while (n > 0)
			vmem_free(v, TL_PTR(got[--n]), 1);
	}
	CHECK_EQ(TL_U(vmem_xalloc(v, 1, 0, 0, 0, NULL, TL_PTR(2),
	    VM_ENDALLOC | VM_NOSLEEP)), 1);
	vmem_xfree(v, TL_PTR(1), 1);
	CHECK_ARENA(v);
	CHECK_EQ(tu_err.count, 1);
	tu_default_errors();
	vmem_destroy(v);
}

/* ---- 7: the last quantum of the address space ---- */

static void
top_round(uintptr_t base, size_t npages, uintptr_t last)
{
	static const int f[] = { 0, VM_BESTFIT, VM_FIRSTFIT, VM_NEXTFIT,
	    VM_ENDALLOC };
	vmem_t *v = mk("p7", base, npages * Q, Q, 0);

	for (size_t k = 0; k < sizeof (f) / sizeof (f[0]); k++) {
		uintptr_t got[64];
		int n = 0, saw_last = 0;
		for (;;) {
			uintptr_t a = TL_U(vmem_alloc(v, Q, f[k] | VM_NOSLEEP));
			if (a == 0)
				break;
			CHECK(a >= base && a <= last);
			saw_last |= a == last;
			got[n++] = a;
		}
		CHECK_EQ(n, (int)npages);
		CHECK(saw_last);
		while (n > 0)
			vmem_free(v, TL_PTR(got[--n]), Q);
		CHECK_ARENA(v);
	}
	CHECK_EQ(TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(last), NULL,
	    VM_NOSLEEP)), last);
	vmem_xfree(v, TL_PTR(last), Q);
	CHECK_EQ(TL_U(vmem_xalloc(v, Q, 0, 0, 2 * Q, NULL, NULL,
	    VM_ENDALLOC | VM_NOSLEEP)), last);
	vmem_xfree(v, TL_PTR(last), Q);
	CHECK_EQ(TL_U(vmem_xalloc(v, npages * Q, 0, 0, 0, NULL, NULL,
	    VM_FIRSTFIT | VM_NOSLEEP)), base);
	vmem_xfree(v, TL_PTR(base), npages * Q);
	CHECK(vmem_contains(v, TL_PTR(last), Q));
	CHECK_ARENA(v);
	vmem_destroy(v);
}

static void
pitfall07_last_quantum_allocatable(void)
{
	/* Span ending one quantum below the top. */
	top_round(UINTPTR_MAX - 9 * Q + 1, 8, UINTPTR_MAX - 2 * Q + 1);
	/* Span ending at the top itself: it contains no address 0, and the
	 * contract makes it allocatable to its last byte (refusing it used to
	 * pass here). */
	top_round(UINTPTR_MAX - 8 * Q + 1, 8, UINTPTR_MAX - Q + 1);
}

/* ---- 8: import size overflow for huge sizes or alignments ---- */

static size_t p8_min_asked = SIZE_MAX;
static int p8_calls;

static void *
p8_import(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	p8_calls++;
	if (*sizep < p8_min_asked)
		p8_min_asked = *sizep;
	return vmem_xalloc(src, *sizep, align > Q ? align : 0, 0, 0, NULL,
	    NULL, vmflag & VM_NOSLEEP);
}

static void
pitfall08_import_size_overflow(void)
{
	size_t top = (size_t)1 << (sizeof (size_t) * 8 - 1);
	vmem_t *p = mk("p8parent", 0x10000000UL, 1024 * Q, Q, 0);
	vmem_t *c = mk_child("p8child", p, Q);
	vmem_t *x = vmem_xcreate("p8x", NULL, 0, Q, p8_import, release_x, p,
	    0, VM_SLEEP);
	vmem_t *xa = vmem_xcreate("p8xa", NULL, 0, Q, p8_import, release_x, p,
	    0, VMC_XALIGN | VM_SLEEP);
	vmem_t *arenas[3] = { c, x, xa };

	REQUIRE(x != NULL && xa != NULL);
	tu_record_errors();
	CHECK(vmem_alloc(p, SIZE_MAX, VM_NOSLEEP) == NULL);
	CHECK(vmem_alloc(p, SIZE_MAX - Q + 2, VM_SLEEP) == NULL);
	for (int i = 0; i < 3; i++) {
		vmem_t *v = arenas[i];
		/* Huge requests: the import is never asked for a wrapped
		 * (small) size. */
		p8_min_asked = SIZE_MAX;
		CHECK(vmem_alloc(v, SIZE_MAX - Q + 1, VM_NOSLEEP) == NULL);
		CHECK(vmem_alloc(v, SIZE_MAX - 2 * Q, VM_NOSLEEP) == NULL);
		CHECK(vmem_xalloc(v, top, top, 0, 0, NULL, NULL, VM_NOSLEEP) ==
		    NULL);
		CHECK(vmem_xalloc(v, top + Q, top, 0, 0, NULL, NULL,
		    VM_NOSLEEP) == NULL);
		CHECK(vmem_xalloc(v, top + Q, top, top - Q, 0, NULL, NULL,
		    VM_NOSLEEP) == NULL);
		CHECK(p8_min_asked >= top);
		/* Huge alignment and phase for a small size. */
		CHECK(vmem_xalloc(v, Q, top, top - Q, 0, NULL, NULL,
		    VM_NOSLEEP) == NULL);
		CHECK_EQ(vmem_size(v, VMEM_ALLOC | VMEM_FREE), 0);
		CHECK_ARENA(v);
		/* ... and the arena still imports normally. */
		void *a = vmem_xalloc(v, 2 * Q, 4 * Q, 0, 0, NULL, NULL,
		    VM_NOSLEEP);
		CHECK(a != NULL);
		CHECK_EQ(TL_U(a) % (4 * Q), 0);
		vmem_xfree(v, a, 2 * Q);
	}
	CHECK_EQ(tu_err.count, 0);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_ARENA(p);
	tu_default_errors();
	vmem_destroy(xa);
	vmem_destroy(x);
	vmem_destroy(c);
	vmem_destroy(p);
}

/* ---- 9: alignment relative to the span start ---- */

static void
pitfall09_alignment_is_absolute(void)
{
	vmem_t *v = mk("p9", BASE + 3 * Q, 256 * Q, Q, 0);
	static const int f[] = { 0, VM_BESTFIT, VM_FIRSTFIT, VM_ENDALLOC };

	for (size_t k = 0; k < 4; k++)
		for (size_t al = 2 * Q; al <= 64 * Q; al *= 2)
			for (size_t ph = 0; ph < al; ph += al / 2 + Q) {
				uintptr_t a = TL_U(vmem_xalloc(v, Q, al, ph, 0,
				    NULL, NULL, f[k] | VM_NOSLEEP));
				CHECK(a != 0);
				CHECK_EQ(a % al, ph);
				vmem_xfree(v, TL_PTR(a), Q);
			}
	CHECK_ARENA(v);
	vmem_destroy(v);
	/* Identifiers: odd base, alignment 8 means multiples of 8. */
	v = mk("p9ids", 5, 100, 1, VMC_IDENTIFIER);
	CHECK_EQ(TL_U(vmem_xalloc(v, 1, 8, 0, 0, NULL, NULL, VM_NOSLEEP)), 8);
	CHECK_EQ(TL_U(vmem_xalloc(v, 1, 8, 3, 0, NULL, NULL, VM_NOSLEEP)),
	    11);
	vmem_xfree(v, TL_PTR(8), 1);
	vmem_xfree(v, TL_PTR(11), 1);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* ---- 10: search state not reset between spans ---- */

static void
pitfall10_later_span_start_found(void)
{
	vmem_t *v = mk("p10", BASE, 8 * Q, Q, 0);
	uintptr_t a[8], b;

	CHECK(vmem_add(v, TL_PTR(BASE + 64 * Q), 8 * Q, VM_SLEEP) != NULL);
	/* Span A: all taken but two single-page holes; span B: 4 free at its
	 * start, then taken. */
	for (int i = 0; i < 8; i++)
		a[i] = TL_U(vmem_xalloc(v, Q, 0, 0, 0, NULL,
		    TL_PTR(BASE + 8 * Q), VM_NOSLEEP));
	b = TL_U(vmem_xalloc(v, 4 * Q, 0, 0, 0, TL_PTR(BASE + 68 * Q), NULL,
	    VM_NOSLEEP));
	CHECK_EQ(b, BASE + 68 * Q);
	vmem_free(v, TL_PTR(a[1]), Q);
	vmem_free(v, TL_PTR(a[5]), Q);
	CHECK_EQ(TL_U(vmem_xalloc(v, 2 * Q, 2 * Q, 0, 0, NULL, NULL,
	    VM_FIRSTFIT | VM_NOSLEEP)), BASE + 64 * Q);
	vmem_xfree(v, TL_PTR(BASE + 64 * Q), 2 * Q);
	CHECK_EQ(TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + 2 * Q), NULL,
	    VM_FIRSTFIT | VM_NOSLEEP)), BASE + 5 * Q);
	CHECK_EQ(TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + 2 * Q), NULL,
	    VM_BESTFIT | VM_NOSLEEP)), BASE + 64 * Q);
	vmem_xfree(v, TL_PTR(BASE + 5 * Q), Q);
	vmem_xfree(v, TL_PTR(BASE + 64 * Q), Q);
	CHECK_EQ(TL_U(vmem_alloc(v, 4 * Q, VM_NOSLEEP)), BASE + 64 * Q);
	vmem_free(v, TL_PTR(BASE + 64 * Q), 4 * Q);
	CHECK_ARENA(v);
	for (int i = 0; i < 8; i++)
		if (i != 1 && i != 5)
			vmem_free(v, TL_PTR(a[i]), Q);
	vmem_free(v, TL_PTR(b), 4 * Q);
	vmem_destroy(v);

	/* Next fit crosses into the next span at its first id. */
	v = mk("p10ids", 1, 10, 1, VMC_IDENTIFIER);
	CHECK(vmem_add(v, TL_PTR(101), 10, VM_SLEEP) != NULL);
	for (uintptr_t i = 1; i <= 10; i++)
		CHECK_EQ(TL_U(vmem_alloc(v, 1, VM_NEXTFIT | VM_NOSLEEP)), i);
	CHECK_EQ(TL_U(vmem_alloc(v, 1, VM_NEXTFIT | VM_NOSLEEP)), 101);
	CHECK_EQ(TL_U(vmem_alloc(v, 2, VM_NEXTFIT | VM_NOSLEEP)), 102);
	for (uintptr_t i = 1; i <= 10; i++)
		vmem_free(v, TL_PTR(i), 1);
	vmem_free(v, TL_PTR(101), 1);
	vmem_free(v, TL_PTR(102), 2);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* ---- 11: constrained search examining allocated segments ---- */

static void
pitfall11_constrained_search_clips_to_window(void)
{
	vmem_t *v = mk("p11", BASE, 64 * Q, Q, 0);
	uintptr_t a = TL_U(vmem_alloc(v, 10 * Q, VM_NOSLEEP));
	static const int f[] = { 0, VM_BESTFIT, VM_FIRSTFIT };

	CHECK_EQ(a, BASE);
	for (int k = 0; k < 3; k++) {
		uintptr_t x;
		x = TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + 5 * Q), NULL,
		    f[k] | VM_NOSLEEP));
		CHECK_EQ(x, BASE + 10 * Q);
		vmem_xfree(v, TL_PTR(x), Q);
		x = TL_U(vmem_xalloc(v, 2 * Q, 0, 0, 0, TL_PTR(BASE + 20 * Q),
		    NULL, f[k] | VM_NOSLEEP));
		CHECK_EQ(x, BASE + 20 * Q);
		vmem_xfree(v, TL_PTR(x), 2 * Q);
		x = TL_U(vmem_xalloc(v, Q, 0, 0, 0, NULL, TL_PTR(BASE + 11 * Q),
		    f[k] | VM_NOSLEEP));
		CHECK_EQ(x, BASE + 10 * Q);
		vmem_xfree(v, TL_PTR(x), Q);
		CHECK(vmem_xalloc(v, Q, 0, 0, 0, NULL, TL_PTR(BASE + 10 * Q),
		    f[k] | VM_NOSLEEP) == NULL);
		x = TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + 12 * Q),
		    TL_PTR(BASE + 30 * Q), f[k] | VM_ENDALLOC | VM_NOSLEEP));
		CHECK_EQ(x, BASE + 29 * Q);
		vmem_xfree(v, TL_PTR(x), Q);
		x = TL_U(vmem_xalloc(v, 4 * Q, 8 * Q, 0, 0, TL_PTR(BASE + Q),
		    TL_PTR(BASE + 20 * Q), f[k] | VM_NOSLEEP));
		CHECK_EQ(x, BASE + 16 * Q);
		vmem_xfree(v, TL_PTR(x), 4 * Q);
	}
	vmem_free(v, TL_PTR(a), 10 * Q);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* ---- 12: a bad free returning with the arena lock held ---- */

static vmem_t *p12_arena;
static int p12_reports;

/* Calls back into the arena: deadlocks if reported under its lock. */
static void
p12_handler(const vmem_error_info_t *info, void *arg)
{
	(void)arg;
	p12_reports++;
	CHECK(info->arena == p12_arena);
	CHECK(vmem_check(p12_arena) == 0);
	(void)vmem_size(p12_arena, VMEM_ALLOC);
}

static void
pitfall12_bad_free_releases_lock(void)
{
	vmem_t *v = mk("p12", BASE, 16 * Q, Q, 0);
	void *a = vmem_alloc(v, 2 * Q, VM_NOSLEEP), *b;

	p12_arena = v;
	p12_reports = 0;
	vmem_set_error_handler(p12_handler, NULL);
	vmem_free(v, TL_PTR(BASE + 8 * Q), Q);          /* free segment */
	vmem_free(v, TL_PTR(TL_U(a) + Q), Q);           /* inside alloc */
	vmem_free(v, a, 4 * Q);                          /* wrong size */
	vmem_free(v, TL_PTR(0x9000000UL), Q);            /* wrong arena */
	vmem_xfree(v, TL_PTR(BASE + 8 * Q), Q);
	(void)vmem_alloc(v, Q, VM_BESTFIT | VM_FIRSTFIT);
	(void)vmem_xalloc(v, Q, 3 * Q, 0, 0, NULL, NULL, VM_NOSLEEP);
	(void)vmem_add(v, TL_PTR(BASE), Q, VM_SLEEP);
	(void)vmem_alloc(v, 32 * Q, VM_NOSLEEP | VM_PANIC);
	CHECK_EQ(p12_reports, 9);
	/* The lock is free: the same thread can go on. */
	b = vmem_alloc(v, Q, VM_NOSLEEP);
	CHECK(b != NULL);
	vmem_free(v, b, Q);
	vmem_free(v, a, 2 * Q);
	CHECK_EQ(p12_reports, 9);
	tu_default_errors();
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* ---- 13: tags leaked on failing paths ---- */

static void
pitfall13_no_tag_leak_on_failures(void)
{
	long n = tu_slow_build() ? 100000 : 1000000;
	vmem_t *v = mk("p13", BASE, 64 * Q, Q, 0);
	vmem_t *c = mk_child("p13child", v, Q);
	uintptr_t hold[32];
	vmem_stats_t before = { 0 }, after;
	size_t meta_before = 0, cmeta_before = 0;
	long pages_before = 0;
	tu_rng_t r;

	/* Fragment: 32 two-page pieces, every other one freed. */
	for (int i = 0; i < 32; i++)
		hold[i] = TL_U(vmem_alloc(v, 2 * Q, VM_NOSLEEP));
	for (int i = 0; i < 32; i += 2)
		vmem_free(v, TL_PTR(hold[i]), 2 * Q);
	tu_seed(&r, 13);
	for (long i = 0; i < n; i++) {
		int kind = (int)tu_range(&r, 0, 6);
		void *x = NULL;
		if (i == 1000) { /* warmed up: take the baseline */
			before = tl_stats(v);
			meta_before = vmem_meta_bytes(v);
			cmeta_before = vmem_meta_bytes(c);
			pages_before = metadata_requests;
		}
		switch (kind) {
		case 0: x = vmem_alloc(v, 3 * Q, VM_NOSLEEP); break;
		case 1: x = vmem_alloc(v, 3 * Q, VM_BESTFIT | VM_NOSLEEP);
			break;
		case 2: x = vmem_alloc(v, 3 * Q, VM_NEXTFIT | VM_NOSLEEP);
			break;
		case 3: x = vmem_xalloc(v, Q, 4 * Q, 3 * Q, 0, NULL, NULL,
			    VM_NOSLEEP);
			break;
		case 4: x = vmem_xalloc(v, 2 * Q, 4 * Q, 2 * Q, 0, NULL,
			    NULL, VM_FIRSTFIT | VM_ENDALLOC | VM_NOSLEEP);
			break;
		case 5: x = vmem_alloc(v, 2 * Q, VM_SLEEP | VM_ABORT);
			if (x != NULL) {
				vmem_free(v, x, 2 * Q); /* a hole fits 2 */
				x = NULL;
			}
			break;
		default: x = vmem_alloc(c, 3 * Q, VM_NOSLEEP); break;
		}
		CHECK(x == NULL);
		if (x != NULL) {
			printf("  step %ld kind %d succeeded\n", i, kind);
			break;
		}
	}
	after = tl_stats(v);
	CHECK_EQ(after.tags, before.tags);
	CHECK_EQ(vmem_meta_bytes(v), meta_before);
	CHECK_EQ(vmem_meta_bytes(c), cmeta_before);
	CHECK_EQ(metadata_requests, pages_before);
	CHECK(after.fail > before.fail);
	CHECK_ARENA(v);
	CHECK_ARENA(c);
	for (int i = 1; i < 32; i += 2)
		vmem_free(v, TL_PTR(hold[i]), 2 * Q);
	vmem_destroy(c);
	vmem_destroy(v);
}

/* ---- 14: segment modified before a tag allocation that failed ---- */

static void
pitfall14_failed_tag_allocation_changes_nothing(void)
{
	vmem_t *v = mk("p14", 0x10000000UL, (size_t)1 << 30, Q, 0);
	size_t cap = 3000000, n = 0;
	uintptr_t *a = malloc(cap * sizeof (uintptr_t));
	vmem_stats_t st0, st1;
	tl_snap_t s0 = { 0 }, s1 = { 0 };
	int failed = 0, added = 0;

	REQUIRE(a != NULL);
	tu_record_errors();
	fail_metadata = 1;
	/* Every other page, so each allocation needs a new tag. */
	while (n < cap) {
		st0 = tl_stats(v);
		uintptr_t x = TL_U(vmem_xalloc(v, Q, 2 * Q, 0, 0, NULL, NULL,
		    VM_NOSLEEP));
		if (x == 0) {
			st1 = tl_stats(v);
			CHECK(stats_same(&st0, &st1));
			CHECK(st1.populate_fail > st0.populate_fail);
			failed = 1;
			break;
		}
		a[n++] = x;
	}
	CHECK(failed);
	CHECK_ARENA(v);
	/* Every kind of operation that needs tags succeeds or fails with
	 * nothing changed. */
	for (int k = 0; k < 6; k++) {
		static const size_t sz[] = { 3, 3, 3, 3, 1, 16 };
		static const int fl[] = { 0, VM_BESTFIT, VM_NEXTFIT,
		    VM_ENDALLOC, 0, 0 };
		uintptr_t x;
		tl_snap(v, &s0);
		if (k == 4)
			x = TL_U(vmem_xalloc(v, Q, 64 * Q, Q, 0, NULL, NULL,
			    VM_NOSLEEP));
		else if (k == 5)
			x = TL_U(vmem_add(v, TL_PTR(0x80000000UL), 16 * Q,
			    VM_NOSLEEP));
		else
			x = TL_U(vmem_alloc(v, sz[k] * Q, fl[k] | VM_NOSLEEP));
		if (x == 0) {
			tl_snap(v, &s1);
			CHECK(tl_snap_equal(&s0, &s1));
		} else if (k == 5) {
			CHECK_EQ(x, 0x80000000UL);
			added = 1;
		} else {
			vmem_free(v, TL_PTR(x), sz[k] * Q);
		}
		CHECK_ARENA(v);
	}
	fail_metadata = 0;
	/* Memory back: everything works again. */
	uintptr_t x = TL_U(vmem_alloc(v, 3 * Q, VM_NOSLEEP));
	CHECK(x != 0);
	vmem_free(v, TL_PTR(x), 3 * Q);
	if (!added)
		CHECK(vmem_add(v, TL_PTR(0x80000000UL), 16 * Q, VM_NOSLEEP) !=
		    NULL);
	for (size_t i = 0; i < n; i++)
		vmem_xfree(v, TL_PTR(a[i]), Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	printf("  tag allocation failed after %zu allocations\n", n);
	tu_default_errors();
	tl_snap_free(&s0);
	tl_snap_free(&s1);
	free(a);
	vmem_destroy(v);
}

/* ---- 15: next fit leaving a merged segment in the wrong class ---- */

static void
pitfall15_nextfit_merge_keeps_classes(void)
{
	vmem_t *v = mk("p15", 1, 1024, 1, VMC_IDENTIFIER);
	uintptr_t live[512];
	size_t lsz[512];
	int nlive = 0;
	int steps = tu_slow_build() ? 5000 : 20000;
	tu_rng_t r;
	vmem_stats_t st;

	tu_seed(&r, 15);
	for (int i = 0; i < steps; i++) {
		if (nlive > 0 && (nlive == 512 || tu_range(&r, 0, 1))) {
			int k = (int)tu_range(&r, 0, (uint64_t)nlive - 1);
			vmem_free(v, TL_PTR(live[k]), lsz[k]);
			live[k] = live[--nlive];
			lsz[k] = lsz[nlive];
		} else {
			size_t s = tu_range(&r, 1, 8);
			uintptr_t x = TL_U(vmem_alloc(v, s, VM_NEXTFIT |
			    VM_NOSLEEP));
			if (x != 0) {
				live[nlive] = x;
				lsz[nlive++] = s;
			}
		}
		CHECK_ARENA(v); /* freelist class of every free segment */
	}
	while (nlive > 0) {
		nlive--;
		vmem_free(v, TL_PTR(live[nlive]), lsz[nlive]);
	}
	st = tl_stats(v);
	CHECK_EQ(st.nfree_segs, 1);
	CHECK_EQ(st.free_by_class[10], 1);
	CHECK_EQ(st.largest_free, 1024);
	CHECK_EQ(TL_U(vmem_alloc(v, 1024, VM_NOSLEEP)), 1);
	vmem_free(v, TL_PTR(1), 1024);
	CHECK_EQ(TL_U(vmem_alloc(v, 1024, VM_BESTFIT | VM_NOSLEEP)), 1);
	vmem_free(v, TL_PTR(1), 1024);
	CHECK_EQ(TL_U(vmem_alloc(v, 1024, VM_NEXTFIT | VM_NOSLEEP)), 1);
	vmem_free(v, TL_PTR(1), 1024);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* ---- 16: bad and double frees only asserted ---- */

static void
pitfall16_bad_frees_reported_in_release_builds(void)
{
	vmem_t *v = mk("p16", BASE, 16 * Q, Q, 0);
	void *a = vmem_alloc(v, 4 * Q, VM_NOSLEEP);
	void *b = vmem_alloc(v, Q, VM_NOSLEEP);

#ifdef NDEBUG
	printf("  (release build: NDEBUG defined)\n");
#endif
	tu_record_errors();
	vmem_free(v, b, Q);
	vmem_free(v, b, Q);
	CHECK_EQ(tu_err.code, VMEM_E_DOUBLEFREE);
	vmem_free(v, TL_PTR(TL_U(a) + Q), Q);
	CHECK_EQ(tu_err.code, VMEM_E_BADFREE);
	vmem_free(v, a, 2 * Q);
	CHECK_EQ(tu_err.code, VMEM_E_WRONGSIZE);
	vmem_xfree(v, TL_PTR(0x7000000UL), Q);
	CHECK_EQ(tu_err.code, VMEM_E_WRONGARENA);
	CHECK_EQ(tu_err.count, 4);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 4 * Q);
	CHECK_ARENA(v);
	vmem_free(v, a, 4 * Q);
	CHECK_EQ(tu_err.count, 4);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	tu_default_errors();
	vmem_destroy(v);
}

/* ---- 17: deep import chains exhausting the stack ---- */

#define DEPTH 2000

static void *
p17_thread(void *arg)
{
	vmem_t **lv = calloc(DEPTH + 1, sizeof (vmem_t *));
	uintptr_t live[200];
	size_t lsz[200];
	size_t total = 0;
	char name[32];
	tu_rng_t r;

	(void)arg;
	REQUIRE(lv != NULL);
	lv[0] = mk("p17root", 0x10000000UL, 65536 * Q, Q, 0);
	for (int i = 1; i <= DEPTH; i++) {
		snprintf(name, sizeof (name), "p17_%d", i);
		lv[i] = mk_child(name, lv[i - 1], Q);
	}
	tu_seed(&r, 17);
	for (int i = 0; i < 200; i++) {
		lsz[i] = tu_range(&r, 1, 6) * Q;
		live[i] = TL_U(vmem_alloc(lv[DEPTH], lsz[i], VM_SLEEP));
		CHECK(live[i] != 0);
		total += lsz[i];
	}
	CHECK_EQ(vmem_size(lv[DEPTH], VMEM_ALLOC), total);
	CHECK(vmem_size(lv[0], VMEM_ALLOC) >= total);
	/* A request the root can never meet fails at once, even sleeping. */
	CHECK(vmem_alloc(lv[DEPTH], 131072 * Q, VM_SLEEP) == NULL);
	for (int i = 0; i < 200; i += 2)
		vmem_free(lv[DEPTH], TL_PTR(live[i]), lsz[i]);
	CHECK_ARENA(lv[DEPTH]);
	CHECK_ARENA(lv[DEPTH / 2]);
	CHECK_ARENA(lv[0]);
	for (int i = 1; i < 200; i += 2)
		vmem_free(lv[DEPTH], TL_PTR(live[i]), lsz[i]);
	CHECK_EQ(vmem_size(lv[0], VMEM_ALLOC), 0);
	for (int i = DEPTH; i >= 0; i--) {
		CHECK_EQ(vmem_size(lv[i], VMEM_ALLOC), 0);
		vmem_destroy(lv[i]);
	}
	free(lv);
	return NULL;
}

static void
pitfall17_deep_import_chain_small_stack(void)
{
	pthread_attr_t attr;
	pthread_t t;

	pthread_attr_init(&attr);
	REQUIRE(pthread_attr_setstacksize(&attr, 256 * 1024) == 0);
	REQUIRE(pthread_create(&t, &attr, p17_thread, NULL) == 0);
	pthread_join(t, NULL);
	pthread_attr_destroy(&attr);
}

int
main(void)
{
	plat_fail_hook = fail_hook;
	/* Pool-exhausting tests first (see the theory statement); 1 before
	 * 14, whose millions of tags go back to the pool. */
	RUN(pitfall01_tag_reserve_drained_during_import);
	RUN(pitfall14_failed_tag_allocation_changes_nothing);
	RUN(pitfall13_no_tag_leak_on_failures);
	RUN(pitfall02_instant_fit_never_misses);
	RUN(pitfall03_hash_grows_and_shrinks);
	RUN(pitfall04_hash_resize_race);
	RUN(pitfall05_many_arenas_no_pool_overflow);
	RUN(pitfall06_address_zero_never_returned);
	RUN(pitfall07_last_quantum_allocatable);
	RUN(pitfall08_import_size_overflow);
	RUN(pitfall09_alignment_is_absolute);
	RUN(pitfall10_later_span_start_found);
	RUN(pitfall11_constrained_search_clips_to_window);
	RUN(pitfall12_bad_free_releases_lock);
	RUN(pitfall15_nextfit_merge_keeps_classes);
	RUN(pitfall16_bad_frees_reported_in_release_builds);
	RUN(pitfall17_deep_import_chain_small_stack);
	return tu_finish();
}
