/*
 * Unit tests for the vmem core: every public function, every allocation
 * policy and flag, typemasks of vmem_size and vmem_walk, the statistics,
 * imports (vmem_alloc chains, vmem_xcreate imports that grow, VMC_XALIGN,
 * the minimum import of VMC_NO_QCACHE arenas), release of a span the moment
 * it is free, 2,000-level import chains on a 256 KiB stack, 10,000 arenas,
 * spans at the top of the address space and vmem_xalloc constraints.
 *
 * Placement tests build "holes" of known sizes by carving a fresh arena
 * from its low end (a single free segment is always split from its start
 * unless VM_ENDALLOC is given) and freeing chosen pieces; one quantum stays
 * allocated between holes so they never coalesce. Size classes are powers
 * of two of the size in arena units (bytes here), as the contract says.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "vmem_testlib.h"

#define Q 4096UL
#define BASE 0x100000UL

static vmem_t *
mk(const char *name, uintptr_t base, size_t size, size_t quantum)
{
	vmem_t *v = vmem_create(name, TL_PTR(base), size, quantum, NULL, NULL,
	    NULL, 0, VM_SLEEP);

	REQUIRE(v != NULL);
	return v;
}

/*
 * Carve the arena from its low end into pieces of the given sizes (in
 * quanta); pieces with hole[i] set are freed again. Returns the pieces'
 * addresses in addr[].
 */
static void
carve(vmem_t *v, const size_t *pages, const int *hole, int n, uintptr_t *addr)
{
	for (int i = 0; i < n; i++) {
		addr[i] = TL_U(vmem_alloc(v, pages[i] * Q, VM_NOSLEEP));
		REQUIRE(addr[i] != 0);
		if (i > 0)
			REQUIRE(addr[i] == addr[i - 1] + pages[i - 1] * Q);
	}
	for (int i = 0; i < n; i++)
		if (hole[i])
			vmem_free(v, TL_PTR(addr[i]), pages[i] * Q);
	CHECK_ARENA(v);
}

static void
uncarve(vmem_t *v, const size_t *pages, const int *hole, int n,
    const uintptr_t *addr)
{
	for (int i = 0; i < n; i++)
		if (!hole[i])
			vmem_free(v, TL_PTR(addr[i]), pages[i] * Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
}

static int
in_piece(uintptr_t a, size_t size, uintptr_t piece, size_t pages)
{
	return a >= piece && a + size <= piece + pages * Q;
}

/* A call that should return waits for ever: fail the test instead. */
static const char *watchdog_what;

static void
watchdog_fired(int sig)
{
	static const char msg[] = " waited for ever\n";

	(void)sig;
	(void)!write(2, watchdog_what, strlen(watchdog_what));
	(void)!write(2, msg, sizeof (msg) - 1);
	_exit(1);
}

static void
watchdog_start(const char *what)
{
	watchdog_what = what;
	signal(SIGALRM, watchdog_fired);
	alarm(20);
}

static void
watchdog_stop(void)
{
	alarm(0);
	signal(SIGALRM, SIG_DFL);
}

static void
test_create_and_accessors(void)
{
	vmem_t *v = mk("basic", BASE, 64 * Q, Q);
	vmem_stats_t st = tl_stats(v);
	size_t sum = 0;
	int x;

	CHECK(strcmp(vmem_name(v), "basic") == 0);
	CHECK_EQ(vmem_quantum(v), Q);
	CHECK(vmem_source(v) == NULL);
	CHECK(vmem_get_private(v) == NULL);
	vmem_set_private(v, &x);
	CHECK(vmem_get_private(v) == &x);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_size(v, VMEM_FREE), 64 * Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC | VMEM_FREE), 64 * Q);
	CHECK(strcmp(st.name, "basic") == 0);
	CHECK_EQ(st.quantum, Q);
	CHECK_EQ(st.mem_total, 64 * Q);
	CHECK_EQ(st.mem_inuse, 0);
	CHECK_EQ(st.mem_import, 0);
	CHECK_EQ(st.nspans, 1);
	CHECK_EQ(st.nfree_segs, 1);
	CHECK_EQ(st.nalloc_segs, 0);
	CHECK_EQ(st.largest_free, 64 * Q);
	CHECK_EQ(st.free_by_class[18], 1); /* 64 * 4096 = 2^18 */
	for (int i = 0; i < VMEM_NCLASS_POW2; i++)
		sum += st.free_by_class[i];
	CHECK_EQ(sum, 1);
	CHECK(st.hash_buckets > 0);
	CHECK(st.tags > 0);
	CHECK(vmem_meta_bytes(v) > 0);
	CHECK_ARENA(v);
	vmem_destroy(v);

	/* Names longer than VMEM_NAMELEN - 1 are cut, not overrun. */
	v = mk("a-name-that-is-much-longer-than-thirty-one-chars", BASE, Q, Q);
	CHECK(strlen(vmem_name(v)) <= VMEM_NAMELEN - 1);
	CHECK(strncmp(vmem_name(v), "a-name-that-is", 14) == 0);
	vmem_destroy(v);

	/* An arena with no span: nothing to give until vmem_add. */
	v = mk("empty", 0, 0, Q);
	CHECK(vmem_alloc(v, Q, VM_NOSLEEP) == NULL);
	CHECK(vmem_alloc(v, Q, VM_SLEEP) == NULL); /* no source: at once */
	CHECK(vmem_add(v, TL_PTR(BASE), 4 * Q, VM_SLEEP) == TL_PTR(BASE));
	CHECK_EQ(TL_U(vmem_alloc(v, 4 * Q, VM_SLEEP)), BASE);
	CHECK_EQ(tl_stats(v).nspans, 1);
	vmem_free(v, TL_PTR(BASE), 4 * Q);
	CHECK_ARENA(v);
	vmem_destroy(v);

	/* Identifiers: quantum 1. */
	v = vmem_create("ids", TL_PTR(1), 10, 1, NULL, NULL, NULL, 0,
	    VMC_IDENTIFIER | VM_SLEEP);
	REQUIRE(v != NULL);
	for (uintptr_t i = 1; i <= 10; i++)
		CHECK_EQ(TL_U(vmem_alloc(v, 1, VM_NOSLEEP)), i);
	CHECK(vmem_alloc(v, 1, VM_NOSLEEP) == NULL);
	for (uintptr_t i = 1; i <= 10; i++)
		vmem_free(v, TL_PTR(i), 1);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

static void
test_alloc_rounding_and_free(void)
{
	vmem_t *v = mk("round", BASE, 16 * Q, Q);
	void *a = vmem_alloc(v, Q + 1, VM_NOSLEEP);
	void *b;

	CHECK_EQ(TL_U(a), BASE);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 2 * Q);
	b = vmem_alloc(v, 1, VM_NOSLEEP);
	CHECK_EQ(TL_U(b), BASE + 2 * Q);
	vmem_free(v, a, 2 * Q - 7); /* same size after rounding */
	vmem_free(v, b, Q);          /* rounded size itself */
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_EQ(tl_stats(v).nfree_segs, 1);
	CHECK_ARENA(v);
	/* The whole arena in one piece, then nothing more. */
	a = vmem_alloc(v, 16 * Q, VM_NOSLEEP);
	CHECK_EQ(TL_U(a), BASE);
	CHECK(vmem_alloc(v, Q, VM_NOSLEEP) == NULL);
	vmem_free(v, a, 16 * Q);
	CHECK(vmem_alloc(v, 17 * Q, VM_NOSLEEP) == NULL);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* Holes of 4, 6, 12 and 20 pages, kept apart by one-page pieces. */
static const size_t hp[] = { 4, 1, 6, 1, 12, 1, 20, 1, 18 };
static const int hh[] = { 1, 0, 1, 0, 1, 0, 1, 0, 0 };
#define HN 9

static void
test_instant_fit(void)
{
	vmem_t *v = mk("instant", BASE, 64 * Q, Q);
	uintptr_t ad[HN], a;

	carve(v, hp, hh, HN, ad);
	/*
	 * Which fitting hole instant fit picks depends on the size classes
	 * (the implementation may split powers of two finer); it must pick
	 * one that fits, and never miss one.
	 */
	for (size_t n = 1; n <= 20; n++) {
		a = TL_U(vmem_alloc(v, n * Q, VM_NOSLEEP));
		CHECK((n <= 4 && in_piece(a, n * Q, ad[0], 4)) ||
		    (n <= 6 && in_piece(a, n * Q, ad[2], 6)) ||
		    (n <= 12 && in_piece(a, n * Q, ad[4], 12)) ||
		    in_piece(a, n * Q, ad[6], 20));
		vmem_free(v, TL_PTR(a), n * Q);
	}
	/* 20 pages: only its own class can hold it ("might fit" scan). */
	a = TL_U(vmem_alloc(v, 20 * Q, VM_NOSLEEP));
	CHECK_EQ(a, ad[6]);
	vmem_free(v, TL_PTR(a), 20 * Q);
	CHECK(vmem_alloc(v, 21 * Q, VM_NOSLEEP) == NULL);
	uncarve(v, hp, hh, HN, ad);
	vmem_destroy(v);
}

static void
test_first_fit(void)
{
	vmem_t *v = mk("firstfit", BASE, 64 * Q, Q);
	uintptr_t ad[HN], a;

	carve(v, hp, hh, HN, ad);
	/* 5 pages: own class (4..7) has the 6-page hole that fits. */
	a = TL_U(vmem_alloc(v, 5 * Q, VM_FIRSTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[2]);
	vmem_free(v, TL_PTR(a), 5 * Q);
	/* 7 pages: 4 and 6 do not fit; next class gives the 12. */
	a = TL_U(vmem_alloc(v, 7 * Q, VM_FIRSTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[4]);
	vmem_free(v, TL_PTR(a), 7 * Q);
	/* 13 pages: the 12 in its own class does not fit; the 20 does. */
	a = TL_U(vmem_alloc(v, 13 * Q, VM_FIRSTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[6]);
	vmem_free(v, TL_PTR(a), 13 * Q);
	a = TL_U(vmem_xalloc(v, 5 * Q, 0, 0, 0, NULL, NULL,
	    VM_FIRSTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[2]);
	vmem_xfree(v, TL_PTR(a), 5 * Q);
	uncarve(v, hp, hh, HN, ad);
	vmem_destroy(v);
}

/* Allocate n pages with policy flags f: it must land at want; free it. */
static void
expect_fit(vmem_t *v, size_t n, int f, uintptr_t want)
{
	uintptr_t a = TL_U(vmem_alloc(v, n * Q, f | VM_NOSLEEP));

	if (a != want)
		fprintf(stderr, "    %zu pages, flags %#x:\n", n, f);
	CHECK_EQ(a, want);
	if (a != 0)
		vmem_free(v, TL_PTR(a), n * Q);
}

/* expect_fit for vmem_xalloc: n pages aligned to align pages at phase
 * pages, not crossing a multiple of nocross pages (0: none). */
static void
expect_xfit(vmem_t *v, size_t n, size_t align, size_t phase, size_t nocross,
    int f, uintptr_t want)
{
	uintptr_t a = TL_U(vmem_xalloc(v, n * Q, align * Q, phase * Q,
	    nocross * Q, NULL, NULL, f | VM_NOSLEEP));

	if (a != want)
		fprintf(stderr, "    %zu pages, align %zu, phase %zu, nocross "
		    "%zu, flags %#x:\n", n, align, phase, nocross, f);
	CHECK_EQ(a, want);
	if (a != 0)
		vmem_xfree(v, TL_PTR(a), n * Q);
}

/*
 * Best and first fit take the head of their own class directly when that
 * class holds only their size (below 16 quanta). Wider classes must still
 * be scanned: 16 and 17 pages share a class, and the class *numbered* 20
 * holds 24-25 pages, not 20 (a shortcut that indexed freelists by size
 * would hand out the 17- or the 24-page hole).
 */
static void
test_fit_in_wide_classes(void)
{
	/* Holes 16, 17, 20, 24 pages; the 17 is freed after the 16, so it
	 * heads their shared class. */
	static const size_t p[] = { 16, 1, 17, 1, 20, 1, 24, 1, 47 };
	static const int h[] = { 1, 0, 1, 0, 1, 0, 1, 0, 0 };
	vmem_t *v = mk("widefit", BASE, 128 * Q, Q);
	uintptr_t ad[9];
	int pol;

	carve(v, p, h, 9, ad);
	for (pol = 0; pol < 2; pol++) {
		int f = pol ? VM_FIRSTFIT : VM_BESTFIT;
		expect_fit(v, 20, f, ad[4]);
		expect_fit(v, 24, f, ad[6]);
	}
	expect_fit(v, 16, VM_BESTFIT, ad[0]);
	expect_fit(v, 17, VM_BESTFIT, ad[2]);
	/* 15 pages: its own one-size class is empty; best is the 16. */
	expect_fit(v, 15, VM_BESTFIT, ad[0]);
	CHECK_ARENA(v);
	uncarve(v, p, h, 9, ad);
	vmem_destroy(v);
}

static void
test_best_fit(void)
{
	/* Holes 8, 5, 7, 6 pages. */
	static const size_t p[] = { 8, 1, 5, 1, 7, 1, 6, 1, 34 };
	static const int h[] = { 1, 0, 1, 0, 1, 0, 1, 0, 0 };
	vmem_t *v = mk("bestfit", BASE, 64 * Q, Q);
	uintptr_t ad[9], a;

	carve(v, p, h, 9, ad);
	a = TL_U(vmem_alloc(v, 6 * Q, VM_BESTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[6]);
	vmem_free(v, TL_PTR(a), 6 * Q);
	a = TL_U(vmem_alloc(v, 7 * Q, VM_BESTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[4]);
	vmem_free(v, TL_PTR(a), 7 * Q);
	a = TL_U(vmem_alloc(v, 8 * Q, VM_BESTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[0]);
	vmem_free(v, TL_PTR(a), 8 * Q);
	/* 3 pages: own class empty; best of the next class is the 5. */
	a = TL_U(vmem_alloc(v, 3 * Q, VM_BESTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[2]);
	vmem_free(v, TL_PTR(a), 3 * Q);
	a = TL_U(vmem_alloc(v, 3 * Q, VM_BESTFIT | VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(a, ad[2] + 2 * Q);
	vmem_free(v, TL_PTR(a), 3 * Q);
	a = TL_U(vmem_xalloc(v, 6 * Q, 0, 0, 0, NULL, NULL,
	    VM_BESTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[6]);
	vmem_xfree(v, TL_PTR(a), 6 * Q);
	CHECK(tl_stats(v).search > 0);
	uncarve(v, p, h, 9, ad);
	vmem_destroy(v);
}

static void
test_next_fit(void)
{
	vmem_t *v = vmem_create("pids", TL_PTR(1), 64, 1, NULL, NULL, NULL, 0,
	    VMC_IDENTIFIER | VM_SLEEP);
	uintptr_t a;

	REQUIRE(v != NULL);
	for (uintptr_t i = 1; i <= 10; i++)
		CHECK_EQ(TL_U(vmem_alloc(v, 1, VM_NEXTFIT | VM_NOSLEEP)), i);
	for (uintptr_t i = 2; i <= 5; i++)
		vmem_free(v, TL_PTR(i), 1);
	CHECK_ARENA(v);
	/* Freed ids are not reused while later ones are free. */
	CHECK_EQ(TL_U(vmem_alloc(v, 1, VM_NEXTFIT | VM_NOSLEEP)), 11);
	CHECK_EQ(TL_U(vmem_alloc(v, 3, VM_NEXTFIT | VM_NOSLEEP)), 12);
	for (uintptr_t i = 15; i <= 64; i++)
		CHECK_EQ(TL_U(vmem_alloc(v, 1, VM_NEXTFIT | VM_NOSLEEP)), i);
	CHECK_ARENA(v);
	/* Wraps around to the lowest free id. */
	CHECK_EQ(TL_U(vmem_alloc(v, 1, VM_NEXTFIT | VM_NOSLEEP)), 2);
	CHECK_EQ(TL_U(vmem_alloc(v, 3, VM_NEXTFIT | VM_NOSLEEP)), 3);
	CHECK(vmem_alloc(v, 1, VM_NEXTFIT | VM_NOSLEEP) == NULL);
	for (uintptr_t i = 1; i <= 64; i++)
		if (i != 3 && i != 4 && i != 5 && i != 12 && i != 13 &&
		    i != 14)
			vmem_free(v, TL_PTR(i), 1);
	vmem_free(v, TL_PTR(3), 3);
	vmem_free(v, TL_PTR(12), 3);
	CHECK_ARENA(v);
	/* The rotor does not keep the range from being one piece. */
	a = TL_U(vmem_alloc(v, 64, VM_NOSLEEP));
	CHECK_EQ(a, 1);
	vmem_free(v, TL_PTR(a), 64);
	a = TL_U(vmem_alloc(v, 64, VM_BESTFIT | VM_NOSLEEP));
	CHECK_EQ(a, 1);
	vmem_free(v, TL_PTR(a), 64);
	a = TL_U(vmem_xalloc(v, 64, 0, 0, 0, NULL, NULL,
	    VM_FIRSTFIT | VM_NOSLEEP));
	CHECK_EQ(a, 1);
	vmem_xfree(v, TL_PTR(a), 64);
	a = TL_U(vmem_alloc(v, 64, VM_NEXTFIT | VM_NOSLEEP));
	CHECK_EQ(a, 1);
	vmem_free(v, TL_PTR(a), 64);
	CHECK_EQ(tl_stats(v).nfree_segs, 1);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

static void
test_endalloc(void)
{
	vmem_t *v = mk("endalloc", BASE, 16 * Q, Q);
	uintptr_t a, b, c;

	a = TL_U(vmem_alloc(v, Q, VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(a, BASE + 15 * Q);
	b = TL_U(vmem_alloc(v, 2 * Q, VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(b, BASE + 13 * Q);
	c = TL_U(vmem_alloc(v, Q, VM_NOSLEEP));
	CHECK_EQ(c, BASE);
	vmem_free(v, TL_PTR(c), Q);
	c = TL_U(vmem_alloc(v, Q, VM_FIRSTFIT | VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(c, BASE + 12 * Q);
	vmem_free(v, TL_PTR(a), Q);
	vmem_free(v, TL_PTR(b), 2 * Q);
	vmem_free(v, TL_PTR(c), Q);
	CHECK_ARENA(v);
	a = TL_U(vmem_xalloc(v, Q, 4 * Q, 0, 0, NULL, NULL,
	    VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(a, BASE + 12 * Q);
	vmem_xfree(v, TL_PTR(a), Q);
	a = TL_U(vmem_xalloc(v, Q, 4 * Q, Q, 0, NULL, NULL,
	    VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(a, BASE + 13 * Q);
	vmem_xfree(v, TL_PTR(a), Q);
	a = TL_U(vmem_xalloc(v, Q, 0, 0, 0, NULL, TL_PTR(BASE + 8 * Q),
	    VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(a, BASE + 7 * Q);
	vmem_xfree(v, TL_PTR(a), Q);
	a = TL_U(vmem_xalloc(v, 2 * Q, 0, 0, 4 * Q, NULL, NULL,
	    VM_BESTFIT | VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(a, BASE + 14 * Q);
	vmem_xfree(v, TL_PTR(a), 2 * Q);
	/* With VM_NEXTFIT it has no effect (illumos <sys/vmem.h>): the
	 * rotor moves up from the start, as without it. It used to hand
	 * out the top, then go down. */
	a = TL_U(vmem_alloc(v, Q, VM_NEXTFIT | VM_ENDALLOC | VM_NOSLEEP));
	b = TL_U(vmem_alloc(v, Q, VM_NEXTFIT | VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(a, BASE);
	CHECK_EQ(b, BASE + Q);
	vmem_free(v, TL_PTR(a), Q);
	vmem_free(v, TL_PTR(b), Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* Flags kept for illumos compatibility change nothing. */
static void
test_compat_flags(void)
{
	static const int flags[] = { VM_PUSHPAGE, VM_NORMALPRI, VM_NODEBUG,
	    VM_MEMLOAD, VM_NORELOC, VM_ABORT, VM_PANIC };
	vmem_t *v = vmem_create("compat", TL_PTR(BASE), 16 * Q, Q, NULL,
	    NULL, NULL, 0, VMC_POPULATOR | VMC_DUMPSAFE | VM_SLEEP);

	REQUIRE(v != NULL);
	for (size_t i = 0; i < sizeof (flags) / sizeof (flags[0]); i++) {
		void *a = vmem_alloc(v, Q, flags[i] | VM_NOSLEEP);
		CHECK_EQ(TL_U(a), BASE);
		vmem_free(v, a, Q);
		a = vmem_xalloc(v, Q, 0, 0, 0, NULL, NULL,
		    flags[i] | VM_NOSLEEP);
		CHECK_EQ(TL_U(a), BASE);
		vmem_xfree(v, a, Q);
	}
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* Failures: VM_NOSLEEP when full; VM_SLEEP when nothing could ever fit. */
static void
test_failures_and_sleep(void)
{
	vmem_t *v = mk("fail", BASE, 16 * Q, Q);
	vmem_stats_t st;
	void *a;

	a = vmem_alloc(v, 16 * Q, VM_SLEEP);
	CHECK_EQ(TL_U(a), BASE);
	CHECK(vmem_alloc(v, Q, VM_NOSLEEP) == NULL);
	CHECK(vmem_xalloc(v, Q, 0, 0, 0, NULL, NULL, VM_NOSLEEP) == NULL);
	vmem_free(v, a, 16 * Q);
	CHECK(vmem_alloc(v, 32 * Q, VM_SLEEP) == NULL);
	CHECK(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + 16 * Q), NULL,
	    VM_SLEEP) == NULL);
	CHECK(vmem_xalloc(v, Q, 0, 0, 0, NULL, TL_PTR(BASE), VM_SLEEP) ==
	    NULL);
	CHECK(vmem_xalloc(v, 4 * Q, 32 * Q, 20 * Q, 0, NULL, NULL, VM_SLEEP)
	    == NULL); /* BASE is 32-page aligned: BASE+20P+4P is past end */
	st = tl_stats(v);
	CHECK_EQ(st.fail, 6);
	CHECK_EQ(st.alloc, 1);
	CHECK_EQ(st.free, 1);
	CHECK_EQ(st.wait, 0);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

static void
test_size_typemasks(void)
{
	vmem_t *v = mk("size", BASE, 16 * Q, Q);
	void *a = vmem_alloc(v, 3 * Q, VM_NOSLEEP);
	void *b = vmem_alloc(v, 2 * Q, VM_NOSLEEP);
	size_t span;

	CHECK(vmem_add(v, TL_PTR(BASE + 64 * Q), 8 * Q, VM_SLEEP) != NULL);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 5 * Q);
	CHECK_EQ(vmem_size(v, VMEM_FREE), 19 * Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC | VMEM_FREE), 24 * Q);
	CHECK_EQ(vmem_size(v, 0), 0);
	span = vmem_size(v, VMEM_SPAN);
	CHECK(span == 0 || span == 24 * Q);
	CHECK_EQ(tl_stats(v).mem_total, 24 * Q);
	CHECK_EQ(tl_stats(v).mem_inuse, 5 * Q);
	vmem_free(v, a, 3 * Q);
	vmem_free(v, b, 2 * Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_size(v, VMEM_FREE), 24 * Q);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

static void
test_contains(void)
{
	vmem_t *v = mk("contains", BASE, 16 * Q, Q);

	CHECK(vmem_add(v, TL_PTR(BASE + 32 * Q), 16 * Q, VM_SLEEP) != NULL);
	CHECK(vmem_contains(v, TL_PTR(BASE), Q));
	CHECK(vmem_contains(v, TL_PTR(BASE + 15 * Q), Q));
	CHECK(!vmem_contains(v, TL_PTR(BASE + 15 * Q), 2 * Q));
	CHECK(!vmem_contains(v, TL_PTR(BASE + 16 * Q), Q));
	CHECK(vmem_contains(v, TL_PTR(BASE + 32 * Q), 16 * Q));
	CHECK(!vmem_contains(v, TL_PTR(BASE - Q), Q));
	CHECK(!vmem_contains(v, TL_PTR(BASE), 48 * Q));
	CHECK(vmem_contains(v, TL_PTR(BASE + 40 * Q + 5), 1));
	CHECK_EQ(tl_stats(v).contains, 8);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

static int
segs_sorted(const tl_segs_t *s)
{
	for (size_t i = 1; i < s->n; i++)
		if (s->v[i].start < s->v[i - 1].start + s->v[i - 1].size)
			return 0;
	return 1;
}

static void
test_walk(void)
{
	/* pieces 2 alloc, 3 free, 1 alloc, 10 free (rest) in span 1 */
	vmem_t *v = mk("walk", BASE, 16 * Q, Q);
	tl_segs_t s = { 0 };
	void *a, *b, *c;

	a = vmem_alloc(v, 2 * Q, VM_NOSLEEP);
	b = vmem_alloc(v, 3 * Q, VM_NOSLEEP);
	c = vmem_alloc(v, Q, VM_NOSLEEP);
	CHECK(vmem_add(v, TL_PTR(BASE + 32 * Q), 4 * Q, VM_SLEEP) != NULL);
	CHECK_EQ(TL_U(a), BASE);
	CHECK_EQ(TL_U(c), BASE + 5 * Q);
	vmem_free(v, b, 3 * Q);

	CHECK_EQ(tl_walk(v, VMEM_ALLOC, &s), 2);
	CHECK(segs_sorted(&s));
	CHECK_EQ(s.v[0].start, BASE);
	CHECK_EQ(s.v[0].size, 2 * Q);
	CHECK_EQ(s.v[1].start, BASE + 5 * Q);
	CHECK_EQ(s.v[1].size, Q);

	CHECK_EQ(tl_walk(v, VMEM_FREE, &s), 3);
	CHECK(segs_sorted(&s));
	CHECK_EQ(tl_segs_total(&s), vmem_size(v, VMEM_FREE));
	CHECK_EQ(s.v[0].start, BASE + 2 * Q);
	CHECK_EQ(s.v[0].size, 3 * Q);
	CHECK_EQ(s.v[1].start, BASE + 6 * Q);
	CHECK_EQ(s.v[1].size, 10 * Q);
	CHECK_EQ(s.v[2].start, BASE + 32 * Q);
	CHECK_EQ(s.v[2].size, 4 * Q);

	CHECK_EQ(tl_walk(v, VMEM_SPAN, &s), 2);
	CHECK_EQ(s.v[0].start, BASE);
	CHECK_EQ(s.v[0].size, 16 * Q);
	CHECK_EQ(s.v[1].start, BASE + 32 * Q);
	CHECK_EQ(s.v[1].size, 4 * Q);

	CHECK_EQ(tl_walk(v, VMEM_ALLOC | VMEM_FREE, &s), 5);
	CHECK(segs_sorted(&s));
	CHECK_EQ(tl_segs_total(&s), 20 * Q);
	CHECK_EQ(tl_walk(v, VMEM_ALLOC | VMEM_FREE | VMEM_SPAN, &s), 7);
	CHECK_EQ(tl_walk(v, 0, &s), 0);

	vmem_free(v, a, 2 * Q);
	vmem_free(v, c, Q);
	CHECK_EQ(tl_walk(v, VMEM_ALLOC, &s), 0);
	CHECK_EQ(tl_walk(v, VMEM_FREE, &s), 2);
	CHECK_ARENA(v);
	tl_segs_free(&s);
	vmem_destroy(v);
}

struct rewalk {
	vmem_t *v;
	int visits;
	int extra_allocs;
	uintptr_t extra[8];
	size_t nextra;
};

/* Frees what it visits; allocates more on the first visits. */
static void
reentrant_cb(void *arg, void *start, size_t size)
{
	struct rewalk *w = arg;
	tl_segs_t s = { 0 };

	w->visits++;
	CHECK(vmem_contains(w->v, start, size));
	CHECK(vmem_check(w->v) == 0);
	tl_walk(w->v, VMEM_ALLOC, &s); /* a nested plain walk */
	CHECK(s.n > 0);
	tl_segs_free(&s);
	vmem_free(w->v, start, size);
	if (w->nextra < 8) {
		void *a = vmem_alloc(w->v, Q, VM_NOSLEEP);
		CHECK(a != NULL);
		w->extra[w->nextra++] = TL_U(a);
	}
}

static void
test_walk_reentrant(void)
{
	vmem_t *v = mk("rewalk", BASE, 256 * Q, Q);
	struct rewalk w = { v, 0, 0, { 0 }, 0 };
	void *a[64];

	for (int i = 0; i < 64; i++) {
		a[i] = vmem_alloc(v, (size_t)(i % 3 + 1) * Q, VM_NOSLEEP);
		REQUIRE(a[i] != NULL);
	}
	vmem_walk(v, VMEM_ALLOC | VMEM_REENTRANT, reentrant_cb, &w);
	CHECK(w.visits >= 64);
	CHECK_ARENA(v);
	/* Everything visited was freed; what the callback added may or may
	 * not have been visited, so free what is left of it. */
	{
		tl_segs_t s = { 0 };
		tl_walk(v, VMEM_ALLOC, &s);
		CHECK_EQ(s.n + (size_t)w.visits, 64 + w.nextra);
		for (size_t i = 0; i < s.n; i++)
			vmem_free(v, TL_PTR(s.v[i].start), s.v[i].size);
		tl_segs_free(&s);
	}
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	/* Walk markers do not keep the arena from coalescing. */
	CHECK_EQ(tl_stats(v).nfree_segs, 1);
	CHECK_EQ(TL_U(vmem_alloc(v, 256 * Q, VM_NOSLEEP)), BASE);
	vmem_free(v, TL_PTR(BASE), 256 * Q);
	CHECK_ARENA(v);
	vmem_destroy(v);
}


/*
 * A reentrant walk that cannot get pages for its snapshot walks in chunks
 * of 64, finding its place again each time. It must visit exactly what a
 * locked walk visits, in the same order; visit each segment that exists
 * throughout exactly once while the callback frees and allocates; and go
 * on past spans that were released between two chunks.
 */
static int metadata_refused;

static int
refuse_metadata(const char *site, void *arg)
{
	(void)arg;
	if (strcmp(site, "metadata") != 0)
		return 0;
	metadata_refused++;
	return 1;
}

struct chunkwalk {
	vmem_t *v;
	uintptr_t orig[400];
	int norig, seen[400];
	int visits, allocs;
	tl_segs_t added;
};

static void
chunk_free_cb(void *arg, void *start, size_t size)
{
	struct chunkwalk *w = arg;

	vmem_set_fault_hook(NULL, NULL); /* the walk has its buffer now */
	w->visits++;
	for (int i = 0; i < w->norig; i++)
		if (w->orig[i] == TL_U(start))
			w->seen[i]++;
	vmem_free(w->v, start, size);
	if (w->allocs < 100) {
		void *a = vmem_alloc(w->v, Q, VM_NOSLEEP);
		REQUIRE(a != NULL);
		tl_segs_push(&w->added, TL_U(a), Q, VMEM_ALLOC);
		w->allocs++;
	}
}

static vmem_t *merge_vmp;
static uintptr_t merge_hole;
static int merge_seen;

/* Records what it sees; at the first, frees merge_hole. */
static void
merge_across_cb(void *arg, void *start, size_t size)
{
	tl_segs_push(arg, TL_U(start), size, VMEM_FREE);
	if (merge_seen++ == 0)
		vmem_free(merge_vmp, TL_PTR(merge_hole), Q);
}

/* Sees a span first (records it), then its one allocation (frees it, so
 * the span goes back to the parent at once). */
static void
span_release_cb(void *arg, void *start, size_t size)
{
	struct chunkwalk *w = arg;

	w->visits++;
	for (int i = 0; i < w->norig; i++) {
		if (w->orig[i] != TL_U(start))
			continue;
		if (w->seen[i]++ == 1)
			vmem_free(w->v, start, size);
	}
}

static void
test_walk_reentrant_without_memory(void)
{
	int all = VMEM_SPAN | VMEM_ALLOC | VMEM_FREE;
	tl_segs_t locked = { 0 }, chunked = { 0 };
	struct chunkwalk w;
	vmem_t *v = vmem_create("chunkwalk", NULL, 0, Q, NULL, NULL, NULL, 0,
	    VM_SLEEP);

	REQUIRE(v != NULL);
	/* Two spans, 300 allocations with holes: well over one chunk. */
	REQUIRE(vmem_add(v, TL_PTR(BASE), 256 * Q, VM_SLEEP) != NULL);
	REQUIRE(vmem_add(v, TL_PTR(BASE + 1024 * Q), 256 * Q, VM_SLEEP) !=
	    NULL);
	memset(&w, 0, sizeof (w));
	w.v = v;
	for (int i = 0; i < 300; i++) {
		void *a = vmem_alloc(v, Q, VM_NOSLEEP);
		REQUIRE(a != NULL);
		w.orig[w.norig++] = TL_U(a);
	}
	for (int i = 0; i < 300; i += 7) {
		vmem_free(v, TL_PTR(w.orig[i]), Q);
		w.orig[i] = 0;
	}
	tl_walk(v, all, &locked);
	CHECK(locked.n > 300);
	metadata_refused = 0;
	vmem_set_fault_hook(refuse_metadata, NULL);
	tl_walk(v, all | VMEM_REENTRANT, &chunked);
	vmem_set_fault_hook(NULL, NULL);
	CHECK(metadata_refused > 0);    /* the snapshot really was refused */
	CHECK_EQ(chunked.n, locked.n);
	for (size_t i = 0; i < locked.n && i < chunked.n; i++) {
		CHECK_EQ(chunked.v[i].start, locked.v[i].start);
		CHECK_EQ(chunked.v[i].size, locked.v[i].size);
	}

	/* The callback frees what it visits and allocates more. */
	vmem_set_fault_hook(refuse_metadata, NULL);
	vmem_walk(v, VMEM_ALLOC | VMEM_REENTRANT, chunk_free_cb, &w);
	for (int i = 0; i < w.norig; i++)
		if (w.orig[i] != 0)
			CHECK_EQ(w.seen[i], 1);
	CHECK_ARENA(v);
	/* The callback freed all it saw; what it added and did not see
	 * (placed behind the walk) is all that is left. */
	int live_orig = 0;
	for (int i = 0; i < w.norig; i++)
		live_orig += w.orig[i] != 0;
	CHECK(w.visits >= live_orig);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC),
	    (size_t)(w.allocs - (w.visits - live_orig)) * Q);
	tl_walk(v, VMEM_ALLOC, &locked);
	for (size_t i = 0; i < locked.n; i++)
		vmem_free(v, TL_PTR(locked.v[i].start), locked.v[i].size);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	vmem_destroy(v);

	/*
	 * Free space that merges across the walk's position: 200 free
	 * quanta between allocated ones; after the first chunk (64 free
	 * segments, the last at quantum 126) the callback frees quantum 127,
	 * which joins 126 (behind) and 128 (ahead). 128 must still be seen.
	 */
	v = mk("chunkwalk_merge", BASE, 400 * Q, Q);
	for (int i = 0; i < 400; i++)
		REQUIRE(TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + i * Q),
		    TL_PTR(BASE + (i + 1) * Q), VM_NOSLEEP)) == BASE + i * Q);
	for (int i = 0; i < 400; i += 2)
		vmem_free(v, TL_PTR(BASE + i * Q), Q);
	merge_vmp = v;
	merge_hole = BASE + 127 * Q;
	merge_seen = 0;
	chunked.n = 0;
	vmem_set_fault_hook(refuse_metadata, NULL);
	vmem_walk(v, VMEM_FREE | VMEM_REENTRANT, merge_across_cb, &chunked);
	vmem_set_fault_hook(NULL, NULL);
	/* Every quantum free at the start was reported, once; 127 too
	 * (it is part of the merged segment, ahead of 126). */
	for (int i = 0; i < 400; i++) {
		uintptr_t a = BASE + (uintptr_t)i * Q;
		int times = 0;

		for (size_t k = 0; k < chunked.n; k++)
			times += a >= chunked.v[k].start &&
			    a - chunked.v[k].start < chunked.v[k].size;
		CHECK_EQ(times, i % 2 == 0 || i == 127 ? 1 : 0);
	}
	CHECK_EQ(tl_segs_total(&chunked), 201 * Q);
	for (int i = 1; i < 400; i += 2)
		if (i != 127)
			vmem_free(v, TL_PTR(BASE + i * Q), Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	vmem_destroy(v);

	/* Every chunk ends in a span that the callback then releases. */
	vmem_t *parent = mk("chunkwalk_parent", BASE, 4096 * Q, Q);
	v = vmem_create("chunkwalk_child", NULL, 0, Q, vmem_alloc, vmem_free,
	    parent, 0, VM_SLEEP);
	REQUIRE(v != NULL);
	tl_segs_free(&w.added);
	memset(&w, 0, sizeof (w));
	w.v = v;
	for (int i = 0; i < 100; i++) {
		void *a = vmem_alloc(v, 7 * Q, VM_NOSLEEP);
		REQUIRE(a != NULL);
		w.orig[w.norig++] = TL_U(a);
	}
	CHECK_EQ(tl_stats(v).nspans, 100);
	metadata_refused = 0;
	vmem_set_fault_hook(refuse_metadata, NULL);
	vmem_walk(v, VMEM_SPAN | VMEM_ALLOC | VMEM_REENTRANT, span_release_cb,
	    &w);
	vmem_set_fault_hook(NULL, NULL);
	CHECK(metadata_refused > 0);
	for (int i = 0; i < w.norig; i++)
		CHECK_EQ(w.seen[i], 2);         /* its span, then itself */
	CHECK_EQ(w.visits, 200);
	CHECK_EQ(vmem_size(v, VMEM_SPAN), 0);
	CHECK_EQ(vmem_size(parent, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	CHECK_ARENA(parent);
	vmem_destroy(v);
	vmem_destroy(parent);
	tl_segs_free(&locked);
	tl_segs_free(&chunked);
	tl_segs_free(&w.added);
}

/* The arena's structure: what meta_bytes counts besides tags and tables
 * while the hash is the one inside the structure. */
static size_t
small_arena_bytes(vmem_t *v)
{
	vmem_stats_t st = tl_stats(v);

	REQUIRE(st.hash_buckets == 16);
	return st.meta_bytes - st.tags * 64;
}

static void
test_stats_fields(void)
{
	vmem_t *v = mk("stats", BASE, 64 * Q, Q);
	vmem_stats_t st;
	void *a[8];
	size_t sum = 0;

	for (int i = 0; i < 8; i++)
		a[i] = vmem_alloc(v, 2 * Q, VM_NOSLEEP);
	vmem_free(v, a[1], 2 * Q);
	vmem_free(v, a[5], 2 * Q);
	CHECK(vmem_alloc(v, 64 * Q, VM_NOSLEEP) == NULL);
	st = tl_stats(v);
	CHECK_EQ(st.alloc, 8);
	CHECK_EQ(st.free, 2);
	CHECK_EQ(st.fail, 1);
	CHECK_EQ(st.mem_inuse, 12 * Q);
	CHECK_EQ(st.mem_total, 64 * Q);
	CHECK_EQ(st.nalloc_segs, 6);
	CHECK_EQ(st.nfree_segs, 3);
	CHECK_EQ(st.largest_free, 48 * Q);
	CHECK_EQ(st.free_by_class[13], 2); /* 8192 bytes */
	CHECK_EQ(st.free_by_class[17], 1); /* 48 pages: [2^17, 2^18) */
	for (int i = 0; i < VMEM_NCLASS_POW2; i++)
		sum += st.free_by_class[i];
	CHECK_EQ(sum, st.nfree_segs);
	CHECK_EQ(st.nspans, 1);
	CHECK_EQ(st.import, 0);
	CHECK_EQ(st.release, 0);
	CHECK_EQ(st.qcache_alloc, 0);
	CHECK_EQ(st.populate_fail, 0);
	CHECK(st.tags >= st.nspans + st.nalloc_segs + st.nfree_segs);
	CHECK(st.meta_bytes > st.tags * 64);
	for (int i = 0; i < 8; i++)
		if (i != 1 && i != 5)
			vmem_free(v, a[i], 2 * Q);
	st = tl_stats(v);
	CHECK_EQ(st.free, 8);
	CHECK_EQ(st.mem_inuse, 0);
	CHECK_EQ(st.nfree_segs, 1);
	CHECK_EQ(st.largest_free, 64 * Q);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/*
 * meta_bytes counts all of an arena's own metadata: a grown hash table
 * shows in it, and goes when the table shrinks back.
 */
static void
test_meta_bytes(void)
{
	enum { N = 20000 };
	vmem_t *v = mk("meta_bytes", BASE, (size_t)N * Q, Q);
	static void *p[N];
	size_t base = small_arena_bytes(v);
	vmem_stats_t st;

	CHECK(base >= 4096 && base % 4096 == 0);
	for (int i = 0; i < N; i++)
		REQUIRE((p[i] = vmem_alloc(v, Q, VM_NOSLEEP)) != NULL);
	st = tl_stats(v);
	CHECK(st.hash_buckets >= N / 2);
	CHECK_EQ(st.meta_bytes, base + st.tags * 64 + st.hash_buckets * 8);
	CHECK_EQ(vmem_meta_bytes(v), st.tags * 64);
	for (int i = 0; i < N; i++)
		vmem_free(v, p[i], Q);
	st = tl_stats(v);
	CHECK_EQ(st.hash_buckets, 16);
	CHECK_EQ(st.meta_bytes, base + st.tags * 64);
	vmem_destroy(v);
}

/*
 * The table stays aligned with the longest name an arena can have
 * (VMEM_NAMELEN - 1 characters): its line is as long as the header and
 * its quantum ends under "QUANTUM", as for a short name.
 */
static void
check_table_line(const char *buf, const char *name)
{
	size_t hlen = strcspn(buf, "\n"), qend, len = strlen(name);
	const char *line = buf;

	REQUIRE(strstr(buf, "QUANTUM") != NULL);
	qend = (size_t)(strstr(buf, "QUANTUM") - buf) + strlen("QUANTUM");
	while ((line = strstr(line, "\n")) != NULL &&
	    !(strncmp(++line, name, len) == 0 && line[len] == ' '))
		;
	REQUIRE(line != NULL);
	CHECK_EQ(strcspn(line, "\n"), hlen);
	CHECK(line[qend - 4] == '4' && line[qend - 1] == '6' &&
	    line[qend] == ' '); /* 4096 */
}

static void
test_print_and_foreach(void)
{
	vmem_t *v = mk("printme", BASE, 16 * Q, Q);
	vmem_t *l = mk("printme-with-a-31-character-nam", BASE, 16 * Q, Q);
	FILE *f = tmpfile();
	char buf[8192];
	size_t n;

	CHECK_EQ(strlen(vmem_name(l)), VMEM_NAMELEN - 1);
	REQUIRE(f != NULL);
	vmem_print_arenas(f);
	rewind(f);
	n = fread(buf, 1, sizeof (buf) - 1, f);
	buf[n] = '\0';
	CHECK(strstr(buf, "printme") != NULL);
	CHECK(strncmp(buf, "ARENA ", 6) == 0);
	check_table_line(buf, vmem_name(v));
	check_table_line(buf, vmem_name(l));
	fclose(f);
	vmem_destroy(l);
	vmem_destroy(v);
}

static void
count_arena(vmem_t *v, void *arg)
{
	if (strcmp(vmem_name(v), "findme") == 0)
		(*(int *)arg)++;
}

static void
test_foreach_arena(void)
{
	vmem_t *v = mk("findme", BASE, 16 * Q, Q);
	int n = 0;

	vmem_foreach_arena(count_arena, &n);
	CHECK_EQ(n, 1);
	vmem_destroy(v);
	n = 0;
	vmem_foreach_arena(count_arena, &n);
	CHECK_EQ(n, 0);
}

/* ---- imports ---- */

static vmem_t *
mk_child(const char *name, vmem_t *src, size_t quantum, size_t qmax,
    int flags)
{
	vmem_t *v = vmem_create(name, NULL, 0, quantum, vmem_alloc, vmem_free,
	    src, qmax, flags | VM_SLEEP);

	REQUIRE(v != NULL);
	return v;
}

static void
test_import_chain(void)
{
	vmem_t *p = mk("parent", 0x10000000UL, 1024 * Q, Q);
	vmem_t *c = mk_child("child", p, Q, 0, 0);
	vmem_stats_t st;
	tl_segs_t s = { 0 };
	uintptr_t a;

	CHECK(vmem_source(c) == p);
	a = TL_U(vmem_alloc(c, 3 * Q, VM_SLEEP));
	REQUIRE(a != 0);
	st = tl_stats(c);
	CHECK_EQ(st.mem_import, 3 * Q);
	CHECK_EQ(st.mem_total, 3 * Q);
	CHECK_EQ(st.mem_inuse, 3 * Q);
	CHECK_EQ(st.import, 1);
	CHECK_EQ(st.nspans, 1);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 3 * Q);
	CHECK_EQ(tl_walk(p, VMEM_ALLOC, &s), 1);
	CHECK_EQ(s.v[0].start, a);
	CHECK_EQ(s.v[0].size, 3 * Q);
	vmem_free(c, TL_PTR(a), 3 * Q);
	st = tl_stats(c);
	CHECK_EQ(st.nspans, 0);
	CHECK_EQ(st.release, 1);
	CHECK_EQ(st.mem_total, 0);
	CHECK_EQ(st.mem_import, 0);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_ARENA(c);
	CHECK_ARENA(p);
	vmem_destroy(c);
	vmem_destroy(p);

	/* Parent quantum 16 pages: imports are rounded up to it. */
	p = mk("bigq", 0x10000000UL, 1024 * Q, 16 * Q);
	c = mk_child("smallq", p, Q, 0, 0);
	{
		uintptr_t x[17];
		for (int i = 0; i < 17; i++) {
			x[i] = TL_U(vmem_alloc(c, Q, VM_SLEEP));
			REQUIRE(x[i] != 0);
			CHECK_EQ(vmem_size(p, VMEM_ALLOC),
			    i < 16 ? 16 * Q : 32 * Q);
		}
		CHECK_EQ(tl_stats(c).import, 2);
		CHECK_ARENA(c);
		for (int i = 0; i < 17; i++)
			vmem_free(c, TL_PTR(x[i]), Q);
		CHECK_EQ(tl_stats(c).release, 2);
		CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	}
	/* A span added to an importing arena is used and never released. */
	CHECK(vmem_add(c, TL_PTR(0x1000000UL), 2 * Q, VM_SLEEP) != NULL);
	a = TL_U(vmem_alloc(c, 2 * Q, VM_SLEEP));
	CHECK_EQ(a, 0x1000000UL);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	vmem_free(c, TL_PTR(a), 2 * Q);
	CHECK_EQ(tl_stats(c).nspans, 1);
	CHECK_EQ(tl_stats(c).mem_import, 0);
	CHECK_ARENA(c);
	vmem_destroy(c);
	vmem_destroy(p);
	tl_segs_free(&s);
}

static void
test_release_when_free(void)
{
	vmem_t *p = mk("relparent", 0x10000000UL, 1024 * Q, Q);
	vmem_t *c = mk_child("relchild", p, Q, 0, 0);
	vmem_t *c4;
	uintptr_t a[3];
	tl_segs_t s = { 0 };

	for (int i = 0; i < 3; i++) {
		a[i] = TL_U(vmem_alloc(c, 4 * Q, VM_SLEEP));
		REQUIRE(a[i] != 0);
	}
	CHECK_EQ(tl_stats(c).import, 3);
	vmem_free(c, TL_PTR(a[1]), 4 * Q);
	CHECK_EQ(tl_stats(c).nspans, 2);
	CHECK_EQ(tl_stats(c).release, 1);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 8 * Q);
	tl_walk(p, VMEM_ALLOC, &s);
	for (size_t i = 0; i < s.n; i++)
		CHECK(s.v[i].start != a[1]);
	CHECK(!vmem_contains(c, TL_PTR(a[1]), Q));
	CHECK(vmem_contains(c, TL_PTR(a[0]), 4 * Q));
	vmem_free(c, TL_PTR(a[0]), 4 * Q);
	vmem_free(c, TL_PTR(a[2]), 4 * Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_ARENA(c);
	CHECK_ARENA(p);

	/* A span shared by two allocations goes back after the last one. */
	vmem_destroy(c);
	vmem_destroy(p);
	p = mk("relparent4", 0x10000000UL, 1024 * Q, 4 * Q);
	c4 = mk_child("relchild4", p, Q, 0, 0);
	a[0] = TL_U(vmem_alloc(c4, Q, VM_SLEEP));
	a[1] = TL_U(vmem_alloc(c4, Q, VM_SLEEP));
	CHECK_EQ(tl_stats(c4).import, 1);
	vmem_free(c4, TL_PTR(a[0]), Q);
	CHECK_EQ(tl_stats(c4).nspans, 1);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 4 * Q);
	vmem_free(c4, TL_PTR(a[1]), Q);
	CHECK_EQ(tl_stats(c4).nspans, 0);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_ARENA(c4);
	vmem_destroy(c4);
	vmem_destroy(p);
	tl_segs_free(&s);
}

struct ximp_log {
	size_t last_size;  /* *sizep as asked */
	size_t last_align;
	size_t grow_to;    /* round the import up to this */
	int imports, releases;
	size_t released;
};
static struct ximp_log xlog;

static void *
grow_import(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	size_t sz = *sizep;
	void *a;

	xlog.last_size = sz;
	xlog.last_align = align;
	if (xlog.grow_to)
		sz = (sz + xlog.grow_to - 1) / xlog.grow_to * xlog.grow_to;
	a = vmem_xalloc(src, sz, align > Q ? align : 0, 0, 0, NULL, NULL,
	    vmflag & VM_NOSLEEP);
	if (a != NULL) {
		*sizep = sz;
		xlog.imports++;
	}
	return a;
}

static void
xrelease(vmem_t *src, void *addr, size_t size)
{
	xlog.releases++;
	xlog.released += size;
	vmem_xfree(src, addr, size);
}

static void
test_xcreate_import(void)
{
	vmem_t *p = mk("xparent", 0x10000000UL, 1024 * Q, Q);
	vmem_t *c;
	uintptr_t a[9];

	memset(&xlog, 0, sizeof (xlog));
	xlog.grow_to = 8 * Q;
	c = vmem_xcreate("xchild", NULL, 0, Q, grow_import, xrelease, p, 0,
	    VM_SLEEP);
	REQUIRE(c != NULL);
	for (int i = 0; i < 9; i++) {
		a[i] = TL_U(vmem_alloc(c, Q, VM_NOSLEEP));
		REQUIRE(a[i] != 0);
		if (i == 0) {
			CHECK(xlog.last_size >= Q);
			CHECK_EQ(tl_stats(c).mem_total, 8 * Q);
		}
		CHECK_EQ(xlog.imports, i < 8 ? 1 : 2);
	}
	CHECK_EQ(tl_stats(c).mem_import, 16 * Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 16 * Q);
	CHECK_ARENA(c);
	for (int i = 0; i < 9; i++)
		vmem_free(c, TL_PTR(a[i]), Q);
	CHECK_EQ(xlog.releases, 2);
	CHECK_EQ(xlog.released, 16 * Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_ARENA(c);

	/* Without VMC_XALIGN an aligned request imports with padding. */
	xlog.grow_to = 0;
	a[0] = TL_U(vmem_xalloc(c, 3 * Q, 16 * Q, 0, 0, NULL, NULL,
	    VM_NOSLEEP));
	CHECK(a[0] != 0);
	CHECK_EQ(a[0] % (16 * Q), 0);
	CHECK(xlog.last_size >= 18 * Q);
	vmem_xfree(c, TL_PTR(a[0]), 3 * Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	vmem_destroy(c);

	/* With VMC_XALIGN the import function gets the alignment instead. */
	memset(&xlog, 0, sizeof (xlog));
	c = vmem_xcreate("xalign", NULL, 0, Q, grow_import, xrelease, p, 0,
	    VMC_XALIGN | VM_SLEEP);
	REQUIRE(c != NULL);
	a[0] = TL_U(vmem_xalloc(c, 3 * Q, 16 * Q, 0, 0, NULL, NULL,
	    VM_NOSLEEP));
	CHECK(a[0] != 0);
	CHECK_EQ(a[0] % (16 * Q), 0);
	CHECK_EQ(xlog.last_align, 16 * Q);
	CHECK_EQ(xlog.last_size, 3 * Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 3 * Q);
	vmem_xfree(c, TL_PTR(a[0]), 3 * Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	/* The import must also make room for the phase. */
	a[0] = TL_U(vmem_xalloc(c, Q, 4 * Q, 2 * Q, 0, NULL, NULL,
	    VM_NOSLEEP));
	CHECK(a[0] != 0);
	CHECK_EQ(a[0] % (4 * Q), 2 * Q);
	if (a[0] != 0)
		vmem_xfree(c, TL_PTR(a[0]), Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_ARENA(c);
	vmem_destroy(c);
	vmem_destroy(p);
}

/*
 * A top arena whose import function gets memory from elsewhere (the OS,
 * as libumem's top arenas do) has no source arena; its spans still go
 * back through its release function, with a NULL source, the moment they
 * are free and at destroy. They used to be dropped (counted released,
 * never handed back).
 */
static struct {
	int imports, releases;
	size_t released;
	vmem_t *last_src;
} oslog;
static char os_pages[16][64 * 1024] __attribute__((aligned(65536)));

static void *
os_import(vmem_t *src, size_t size, int vmflag)
{
	(void)vmflag;
	oslog.last_src = src;
	if (size > sizeof (os_pages[0]) || oslog.imports >= 16)
		return NULL;
	return os_pages[oslog.imports++];
}

static void *
os_ximport(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	(void)align;
	return os_import(src, *sizep, vmflag);
}

static void
os_release(vmem_t *src, void *addr, size_t size)
{
	(void)addr;
	oslog.last_src = src;
	oslog.releases++;
	oslog.released += size;
}

static void
test_sourceless_import_releases(void)
{
	vmem_t *top, *xtop;
	void *x, *y;

	memset(&oslog, 0, sizeof (oslog));
	oslog.last_src = (vmem_t *)&oslog;
	top = vmem_create("os_top", NULL, 0, Q, os_import, os_release, NULL,
	    0, VM_SLEEP);
	REQUIRE(top != NULL);
	x = vmem_alloc(top, Q, VM_SLEEP);
	REQUIRE(x != NULL);
	CHECK_EQ(oslog.imports, 1);
	CHECK(oslog.last_src == NULL);
	vmem_free(top, x, Q);
	CHECK_EQ(oslog.releases, 1);
	CHECK_EQ(oslog.released, Q);
	CHECK_EQ(tl_stats(top).mem_total, 0);
	CHECK_ARENA(top);
	vmem_destroy(top);

	memset(&oslog, 0, sizeof (oslog));
	xtop = vmem_xcreate("os_xtop", NULL, 0, Q, os_ximport, os_release,
	    NULL, 0, VM_SLEEP);
	REQUIRE(xtop != NULL);
	x = vmem_alloc(xtop, Q, VM_SLEEP);
	y = vmem_alloc(xtop, 2 * Q, VM_SLEEP);
	REQUIRE(x != NULL && y != NULL);
	vmem_free(xtop, x, Q);
	tu_record_errors();
	vmem_destroy(xtop);             /* y leaks: its span goes back too */
	tu_default_errors();
	CHECK_EQ(oslog.imports, 2);
	CHECK_EQ(oslog.releases, 2);
	CHECK_EQ(oslog.released, 3 * Q);
}

/*
 * A user's import function is not told about address windows: as in
 * illumos, a request with minaddr/maxaddr does not import through one
 * (with VM_SLEEP it imported an unusable span every 100 ms, for ever).
 * Without a span that could ever hold it, the request fails at once.
 */
static void
test_window_does_not_import_through_user_function(void)
{
	vmem_t *top;
	void *x;

	memset(&oslog, 0, sizeof (oslog));
	top = vmem_create("os_win", NULL, 0, Q, os_import, os_release, NULL,
	    0, VM_SLEEP);
	REQUIRE(top != NULL);
	CHECK(vmem_xalloc(top, Q, 0, 0, 0, TL_PTR(0x10000), TL_PTR(0x20000),
	    VM_SLEEP) == NULL);
	CHECK_EQ(oslog.imports, 0);
	/* Unconstrained, it imports. Its span, all allocated, then meets a
	 * window around it, but no import is tried to hold another page. */
	x = vmem_alloc(top, Q, VM_SLEEP);
	REQUIRE(x != NULL);
	CHECK_EQ(oslog.imports, 1);
	CHECK(vmem_xalloc(top, Q, 0, 0, 0, x, (char *)x + 4 * Q,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(oslog.imports, 1);
	vmem_free(top, x, Q);
	CHECK_ARENA(top);
	vmem_destroy(top);
}

/*
 * qcache_max up to 16 quanta of 2^60: the slab, a power of two above
 * 3 * qcache_max, is not representable. vmem_create searched for it for
 * ever; it now makes the caches whose slab exists (here one of 2^63 for
 * 2 quanta), and none for a quantum of 2^62.
 */
static void
test_qcache_slab_not_representable(void)
{
	static const struct {
		unsigned qshift;
		int flags;
		size_t qmax;    /* what the arena keeps */
	} c[] = {
		{ 60, 0, (size_t)2 << 60 },
		{ 60, VMC_NO_QCACHE, (size_t)1 << 62 },
		{ 62, 0, (size_t)1 << 62 },     /* recorded, no caches */
	};

	watchdog_start("test_qcache_slab_not_representable: vmem_create");
	for (size_t i = 0; i < sizeof (c) / sizeof (c[0]); i++) {
		size_t q = (size_t)1 << c[i].qshift;
		vmem_t *v = vmem_create("bigq", TL_PTR(q), q, q, NULL, NULL,
		    NULL, (size_t)1 << 62, c[i].flags | VM_SLEEP);
		uintptr_t a;

		REQUIRE(v != NULL);
		CHECK_EQ(tl_stats(v).qcache_max, c[i].qmax);
		a = TL_U(vmem_xalloc(v, q, 0, 0, 0, NULL, NULL, VM_NOSLEEP));
		CHECK_EQ(a, q);
		if (a != 0)
			vmem_xfree(v, TL_PTR(a), q);
		if (c[i].qshift == 62) {
			/* no caches: the arena itself serves */
			a = TL_U(vmem_alloc(v, q, VM_NOSLEEP));
			CHECK_EQ(a, q);
			if (a != 0)
				vmem_free(v, TL_PTR(a), q);
		}
		CHECK_ARENA(v);
		vmem_destroy(v);
	}
	watchdog_stop();
}

static void
test_min_import(void)
{
	vmem_t *p = mk("minparent", 0x10000000UL, 1024 * Q, Q);
	vmem_t *c = mk_child("min5", p, Q, 5 * Q, VMC_NO_QCACHE);
	void *a;

	/* 3 * 5 pages = 60 KiB: slab 64 KiB. */
	a = vmem_alloc(c, Q, VM_SLEEP);
	REQUIRE(a != NULL);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 16 * Q);
	CHECK_EQ(tl_stats(c).mem_total, 16 * Q);
	CHECK_EQ(tl_stats(c).qcache_max, 5 * Q);
	vmem_free(c, a, Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	vmem_destroy(c);

	/* 3 * 8 pages = 96 KiB: slab 128 KiB; larger requests import as is. */
	c = mk_child("min8", p, Q, 8 * Q, VMC_NO_QCACHE);
	a = vmem_alloc(c, Q, VM_SLEEP);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 32 * Q);
	vmem_free(c, a, Q);
	a = vmem_alloc(c, 40 * Q, VM_SLEEP);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 40 * Q);
	vmem_free(c, a, 40 * Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	CHECK_ARENA(c);
	vmem_destroy(c);
	vmem_destroy(p);
}

/* ---- 2,000 levels on a 256 KiB stack ---- */

#define DEPTH 2000

static void *
deep_chain_thread(void *arg)
{
	vmem_t **lv = calloc(DEPTH + 1, sizeof (vmem_t *));
	char name[32];
	void *a, *b;

	(void)arg;
	REQUIRE(lv != NULL);
	lv[0] = mk("deep0", 0x10000000UL, 4096 * Q, Q);
	for (int i = 1; i <= DEPTH; i++) {
		snprintf(name, sizeof (name), "deep%d", i);
		lv[i] = mk_child(name, lv[i - 1], Q, 0, 0);
	}
	a = vmem_alloc(lv[DEPTH], Q, VM_SLEEP);
	CHECK(a != NULL);
	b = vmem_xalloc(lv[DEPTH], 2 * Q, 8 * Q, 0, 0, NULL, NULL, VM_SLEEP);
	CHECK(b != NULL);
	CHECK_EQ(TL_U(b) % (8 * Q), 0);
	CHECK(vmem_alloc(lv[DEPTH], 8192 * Q, VM_NOSLEEP) == NULL);
	for (int i = 1; i <= DEPTH; i += 97)
		CHECK_EQ(tl_stats(lv[i]).nspans, 2);
	CHECK(vmem_contains(lv[1], a, Q));
	vmem_free(lv[DEPTH], a, Q);
	vmem_xfree(lv[DEPTH], b, 2 * Q);
	for (int i = 1; i <= DEPTH; i += 97)
		CHECK_EQ(tl_stats(lv[i]).mem_total, 0);
	CHECK_EQ(vmem_size(lv[0], VMEM_ALLOC), 0);
	for (int i = 0; i <= DEPTH; i += 50)
		CHECK_ARENA(lv[i]);
	for (int i = DEPTH; i >= 0; i--)
		vmem_destroy(lv[i]);
	free(lv);
	return NULL;
}

static void
run_on_small_stack(void *(*fn)(void *), size_t stack)
{
	pthread_attr_t attr;
	pthread_t t;

	pthread_attr_init(&attr);
	REQUIRE(pthread_attr_setstacksize(&attr, stack) == 0);
	REQUIRE(pthread_create(&t, &attr, fn, NULL) == 0);
	pthread_join(t, NULL);
	pthread_attr_destroy(&attr);
}

static void
test_deep_chain(void)
{
	run_on_small_stack(deep_chain_thread, 256 * 1024);
}

static void
test_many_arenas(void)
{
	char name[32];

	for (int i = 0; i < 10000; i++) {
		vmem_t *v;
		void *a;
		snprintf(name, sizeof (name), "many%d", i);
		v = vmem_create(name, TL_PTR(BASE + (uintptr_t)i * Q), 4 * Q,
		    Q, NULL, NULL, NULL, 0, VM_SLEEP);
		REQUIRE(v != NULL);
		a = vmem_alloc(v, Q, VM_NOSLEEP);
		CHECK_EQ(TL_U(a), BASE + (uintptr_t)i * Q);
		vmem_free(v, a, Q);
		vmem_destroy(v);
	}
}

/* ---- top of the address space ---- */

static void
test_top_of_address_space(void)
{
	uintptr_t end = UINTPTR_MAX - Q + 1; /* last quantum not in span */
	uintptr_t base = end - 16 * Q;
	vmem_t *v = mk("top", base, 16 * Q, Q);
	uintptr_t a[16], x;

	for (int i = 0; i < 16; i++) {
		a[i] = TL_U(vmem_alloc(v, Q, VM_NOSLEEP));
		CHECK_EQ(a[i], base + (uintptr_t)i * Q);
	}
	CHECK(vmem_alloc(v, Q, VM_NOSLEEP) == NULL);
	for (int i = 0; i < 16; i++)
		vmem_free(v, TL_PTR(a[i]), Q);
	x = TL_U(vmem_alloc(v, Q, VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(x, end - Q);
	vmem_free(v, TL_PTR(x), Q);
	x = TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(end - Q), NULL,
	    VM_NOSLEEP));
	CHECK_EQ(x, end - Q);
	vmem_xfree(v, TL_PTR(x), Q);
	x = TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(end - Q), TL_PTR(end),
	    VM_NOSLEEP));
	CHECK_EQ(x, end - Q);
	vmem_xfree(v, TL_PTR(x), Q);
	x = TL_U(vmem_xalloc(v, 16 * Q, 0, 0, 0, NULL, NULL,
	    VM_BESTFIT | VM_NOSLEEP));
	CHECK_EQ(x, base);
	vmem_xfree(v, TL_PTR(x), 16 * Q);
	/* Alignments beyond the span, near the top: fail, never wrap. */
	CHECK(vmem_xalloc(v, Q, (uintptr_t)1 << (sizeof (uintptr_t) * 8 - 1),
	    0, 0, NULL, NULL, VM_NOSLEEP) == NULL);
	x = TL_U(vmem_xalloc(v, 2 * Q, 8 * Q, 0, 8 * Q, NULL, NULL,
	    VM_ENDALLOC | VM_NOSLEEP));
	CHECK_EQ(x, end + Q - 8 * Q); /* highest 8-page boundary */
	vmem_xfree(v, TL_PTR(x), 2 * Q);
	CHECK(vmem_contains(v, TL_PTR(end - Q), Q));
	CHECK(!vmem_contains(v, TL_PTR(end), Q));
	CHECK(!vmem_contains(v, TL_PTR(end - Q), 2 * Q));
	CHECK_EQ(vmem_size(v, VMEM_FREE), 16 * Q);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/*
 * The span that ends exactly at 2^N (its end is not representable): the
 * contract makes it allocatable to its very last byte, so it must be
 * accepted (refusing it as wrapping, VMEM_E_ZEROADDR, used to pass).
 */
static void
test_span_ending_at_top(void)
{
	uintptr_t base = UINTPTR_MAX - 16 * Q + 1;
	vmem_t *v;

	tu_record_errors();
	v = vmem_create("top2", TL_PTR(base), 16 * Q, Q, NULL, NULL, NULL, 0,
	    VM_SLEEP);
	CHECK(v != NULL);
	if (v != NULL) {
		uintptr_t x;
		CHECK_EQ(tu_err.count, 0);
		x = TL_U(vmem_alloc(v, Q, VM_ENDALLOC | VM_NOSLEEP));
		CHECK_EQ(x, UINTPTR_MAX - Q + 1);
		for (int i = 0; i < 15; i++)
			CHECK(vmem_alloc(v, Q, VM_NOSLEEP) != NULL);
		CHECK(vmem_alloc(v, Q, VM_NOSLEEP) == NULL);
		CHECK_ARENA(v);
		vmem_free(v, TL_PTR(x), Q);
		x = TL_U(vmem_xalloc(v, Q, 0, 0, 0, NULL, NULL, VM_NOSLEEP));
		CHECK_EQ(x, UINTPTR_MAX - Q + 1);
		CHECK(vmem_contains(v, TL_PTR(x), Q));
		CHECK_ARENA(v);
		tu_reset_errors();
		vmem_destroy(v); /* leaks on purpose: 16 pages */
		CHECK_EQ(tu_err.code, VMEM_E_LEAK);
	}
	tu_default_errors();
}

/* ---- xalloc constraints ---- */

static int
crosses(uintptr_t a, size_t size, size_t nocross)
{
	return nocross != 0 && (a / nocross) != ((a + size - 1) / nocross);
}

static void
test_xalloc_constraints_fixed(void)
{
	uintptr_t base = BASE + 3 * Q; /* not aligned to 4 pages or more */
	vmem_t *v = mk("xfixed", base, 256 * Q, Q);
	uintptr_t a;

	a = TL_U(vmem_xalloc(v, Q, 8 * Q, 3 * Q, 0, NULL, NULL, VM_NOSLEEP));
	CHECK_EQ(a % (8 * Q), 3 * Q);
	CHECK_EQ(a, BASE + 3 * Q); /* the span start itself is 3 mod 8 */
	vmem_xfree(v, TL_PTR(a), Q);
	a = TL_U(vmem_xalloc(v, 4 * Q, 0, 0, 4 * Q, NULL, NULL, VM_NOSLEEP));
	CHECK_EQ(a % (4 * Q), 0);
	CHECK_EQ(a, BASE + 4 * Q);
	vmem_xfree(v, TL_PTR(a), 4 * Q);
	a = TL_U(vmem_xalloc(v, 3 * Q, 0, 0, 8 * Q, NULL, NULL, VM_NOSLEEP));
	CHECK(!crosses(a, 3 * Q, 8 * Q));
	vmem_xfree(v, TL_PTR(a), 3 * Q);
	a = TL_U(vmem_xalloc(v, 2 * Q, 4 * Q, 2 * Q, 4 * Q, NULL, NULL,
	    VM_NOSLEEP));
	CHECK_EQ(a % (4 * Q), 2 * Q);
	vmem_xfree(v, TL_PTR(a), 2 * Q);
	a = TL_U(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + 100 * Q),
	    TL_PTR(BASE + 101 * Q), VM_NOSLEEP));
	CHECK_EQ(a, BASE + 100 * Q);
	CHECK(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + 100 * Q),
	    TL_PTR(BASE + 101 * Q), VM_NOSLEEP) == NULL);
	vmem_xfree(v, TL_PTR(a), Q);
	/* maxaddr is exclusive. */
	a = TL_U(vmem_xalloc(v, Q, 0, 0, 0, NULL, TL_PTR(base + Q),
	    VM_NOSLEEP));
	CHECK_EQ(a, base);
	CHECK(vmem_xalloc(v, Q, 0, 0, 0, NULL, TL_PTR(base + Q),
	    VM_NOSLEEP) == NULL);
	vmem_xfree(v, TL_PTR(a), Q);
	/* vmem_free works for xalloc'd segments (no quantum caches). */
	a = TL_U(vmem_xalloc(v, 5 * Q, 0, 0, 0, NULL, NULL, VM_NOSLEEP));
	vmem_free(v, TL_PTR(a), 5 * Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/*
 * Aligned instant fit starts at the head of the class that holds the
 * request after padding. Holes of 4 pages at page offsets 0 and 5, the one
 * at 5 freed last so it heads the class. 3 pages aligned to 2: the head
 * fits at 6; with nocross 4 pages it cannot (6..8 crosses 8, 8..10 runs
 * past its end), so the search must go on to the hole at 0.
 */
static void
test_aligned_instant_head(void)
{
	static const size_t p[] = { 4, 1, 4, 1, 54 };
	static const int h[] = { 1, 0, 1, 0, 0 };
	vmem_t *v = mk("alignhead", BASE, 64 * Q, Q);
	uintptr_t ad[5], a;

	carve(v, p, h, 5, ad);
	expect_xfit(v, 3, 2, 0, 0, 0, ad[2] + Q);
	CHECK_ARENA(v);
	/* Freeing re-made the hole at 5 and put it back at the head. */
	expect_xfit(v, 3, 2, 0, 4, 0, ad[0]);
	/* Now the hole at 0 is the head; phase 1 page puts it at 1. */
	expect_xfit(v, 3, 2, 1, 0, 0, ad[0] + Q);
	/* With the hole at 0 taken, the refused head is all there is. */
	a = TL_U(vmem_alloc(v, 4 * Q, VM_BESTFIT | VM_NOSLEEP));
	CHECK_EQ(a, ad[0]);
	CHECK(vmem_xalloc(v, 3 * Q, 2 * Q, 0, 4 * Q, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_ARENA(v);
	vmem_free(v, TL_PTR(a), 4 * Q);
	uncarve(v, p, h, 5, ad);
	vmem_destroy(v);
}

/*
 * The aligned head fit must start at the same class as find_fit: the first
 * class whose every member holds size + align - quantum (class_guaranteed,
 * which in a wide class is the next one), not a class above or below it.
 * Holes (pages): 18 @1, 20 @20, 4 @41, 6 @46.
 */
static void
test_aligned_instant_class(void)
{
	static const size_t p[] = { 1, 18, 1, 20, 1, 4, 1, 6, 76 };
	static const int h[] = { 0, 1, 0, 1, 0, 1, 0, 1, 0 };
	vmem_t *v = mk("alignclass", BASE, 128 * Q, Q);
	uintptr_t ad[9];

	carve(v, p, h, 9, ad);
	/* 12 aligned to 8 needs 19: the 18-page hole's class holds 18 and 19,
	 * so it is not sure (at 8 the request would run into page 19). */
	expect_xfit(v, 12, 8, 0, 0, 0, ad[3] + 4 * Q);
	/* 3 aligned to 2 needs 4: the 4-page hole, not the 6-page one. */
	expect_xfit(v, 3, 2, 0, 0, 0, ad[5] + Q);
	/* 1 aligned to 2 needs 2: the 4-page hole's lowest and highest. */
	expect_xfit(v, 1, 2, 0, 0, 0, ad[5] + Q);
	expect_xfit(v, 1, 2, 0, 0, VM_ENDALLOC, ad[5] + 3 * Q);
	/* nocross 4 refuses the 4-page hole (42..44, then 44..46); the 6-page
	 * hole is refused at 46..48 and placed at 48. */
	expect_xfit(v, 3, 2, 0, 4, 0, ad[7] + 2 * Q);
	CHECK_ARENA(v);
	uncarve(v, p, h, 9, ad);
	vmem_destroy(v);
}

static void
test_xalloc_constraints_random(void)
{
	uintptr_t base = BASE + 5 * Q;
	size_t npages = 512;
	vmem_t *v = mk("xrand", base, npages * Q, Q);
	uintptr_t live[256];
	size_t lsize[256];
	int nlive = 0;
	tu_rng_t r;

	tu_seed(&r, 42);
	for (int step = 0; step < 20000; step++) {
		if (nlive == 256 || (nlive > 0 && tu_range(&r, 0, 2) == 0)) {
			int i = (int)tu_range(&r, 0, (uint64_t)nlive - 1);
			vmem_xfree(v, TL_PTR(live[i]), lsize[i]);
			live[i] = live[--nlive];
			lsize[i] = lsize[nlive];
			continue;
		}
		size_t size = tu_range(&r, 1, 8) * Q;
		size_t align = tu_range(&r, 0, 1) ? Q << tu_range(&r, 0, 5) : 0;
		size_t phase = align > Q ? tu_range(&r, 0, align / Q - 1) * Q : 0;
		size_t nocross = 0;
		uintptr_t minaddr = 0, maxaddr = 0;
		int pol = (int)tu_range(&r, 0, 2);
		int flags = VM_NOSLEEP | (pol == 1 ? VM_BESTFIT : pol == 2 ?
		    VM_FIRSTFIT : 0) | (tu_range(&r, 0, 3) == 0 ? VM_ENDALLOC : 0);
		if (tu_range(&r, 0, 1)) {
			nocross = Q << tu_range(&r, 3, 7);
			if (align > nocross || ((phase + size + (align ? align : Q) -
			    1) & ~((align ? align : Q) - 1)) > nocross)
				nocross = 0;
		}
		if (tu_range(&r, 0, 2) == 0)
			minaddr = base + tu_range(&r, 0, npages) * Q;
		if (tu_range(&r, 0, 2) == 0)
			maxaddr = base + tu_range(&r, 0, npages) * Q +
			    (minaddr ? minaddr - base : 0) + Q;
		uintptr_t a = TL_U(vmem_xalloc(v, size, align, phase, nocross,
		    TL_PTR(minaddr), TL_PTR(maxaddr), flags));
		if (a == 0)
			continue;
		CHECK(a >= base && a + size <= base + npages * Q);
		if (align)
			CHECK_EQ(a % align, phase);
		CHECK(!crosses(a, size, nocross));
		CHECK(a >= minaddr);
		if (maxaddr)
			CHECK(a + size <= maxaddr);
		for (int i = 0; i < nlive; i++)
			CHECK(a + size <= live[i] || live[i] + lsize[i] <= a);
		live[nlive] = a;
		lsize[nlive++] = size;
		if (step % 64 == 0)
			CHECK_ARENA(v);
	}
	while (nlive > 0) {
		nlive--;
		vmem_xfree(v, TL_PTR(live[nlive]), lsize[nlive]);
	}
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_EQ(tl_stats(v).nfree_segs, 1);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/*
 * A request that fails in the source still empties the caches of the
 * arena it was made in: here an idle slab that holds all of the source.
 * Only the source's (none) used to be reaped.
 */
static void
test_fail_reaps_own_caches(void)
{
	vmem_t *src = vmem_create("rc_src", TL_PTR(BASE), 16 * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	vmem_t *a = vmem_create("rc_a", NULL, 0, Q, vmem_alloc, vmem_free, src,
	    4 * Q, VM_SLEEP);     /* 16-page slabs */
	void *p;

	REQUIRE(src != NULL && a != NULL);
	p = vmem_alloc(a, Q, VM_NOSLEEP);
	REQUIRE(p != NULL);
	vmem_free(a, p, Q);
	CHECK_EQ(vmem_size(src, VMEM_FREE), 0);
	p = vmem_alloc(a, 8 * Q, VM_NOSLEEP);
	CHECK(p != NULL);
	if (p != NULL)
		vmem_free(a, p, 8 * Q);
	CHECK_ARENA(a);
	CHECK_ARENA(src);
	vmem_destroy(a);
	vmem_destroy(src);
}

/*
 * VM_SLEEP reaps the caches of every arena before it waits: the arena
 * holding the space comes after 70 others with caches (only the first 64
 * used to be reaped, and the request waited for ever).
 */
static void
test_sleep_reaps_every_arena(void)
{
	enum { NOTHER = 70 };
	vmem_t *other[NOTHER], *src, *b, *a;
	void *p;

	for (int i = 0; i < NOTHER; i++) {
		other[i] = vmem_create("rc_other", TL_PTR(0x10000000UL +
		    (uintptr_t)i * 0x100000), 0x100000, Q, NULL, NULL, NULL, Q,
		    VM_SLEEP);
		REQUIRE(other[i] != NULL);
	}
	src = vmem_create("rc_src", TL_PTR(BASE), 16 * Q, Q, NULL, NULL, NULL,
	    0, VM_SLEEP);
	b = vmem_create("rc_b", NULL, 0, Q, vmem_alloc, vmem_free, src, 4 * Q,
	    VM_SLEEP);
	a = vmem_create("rc_a", NULL, 0, Q, vmem_alloc, vmem_free, src, 0,
	    VM_SLEEP);
	REQUIRE(src != NULL && a != NULL && b != NULL);
	p = vmem_alloc(b, Q, VM_SLEEP);
	REQUIRE(p != NULL);
	vmem_free(b, p, Q);     /* b's idle slab is all of src */
	p = vmem_alloc(a, 8 * Q, VM_SLEEP);
	CHECK(p != NULL);
	if (p != NULL)
		vmem_free(a, p, 8 * Q);
	vmem_destroy(a);
	vmem_destroy(b);
	vmem_destroy(src);
	for (int i = 0; i < NOTHER; i++)
		vmem_destroy(other[i]);
}

/*
 * An import that finds room already made by another import (a racing
 * thread, here the import function itself) gives its span straight back.
 */
static vmem_t *race_arena;
static void *race_inner;
static int race_depth;

static void *
race_import(vmem_t *src, size_t *sizep, size_t align, int flags)
{
	void *p;

	(void)align;
	if (race_depth++ == 0)
		race_inner = vmem_alloc(race_arena, Q, flags); /* imports */
	*sizep = 16 * Q;
	p = vmem_alloc(src, *sizep, flags);
	race_depth--;
	return p;
}

static void
test_racing_import_goes_back(void)
{
	vmem_t *src = vmem_create("ri_src", TL_PTR(BASE), 64 * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	vmem_stats_t st;
	void *p;

	race_arena = vmem_xcreate("ri", NULL, 0, Q, race_import, vmem_free, src,
	    0, VM_SLEEP);
	REQUIRE(src != NULL && race_arena != NULL);
	p = vmem_alloc(race_arena, Q, VM_SLEEP);
	CHECK(p != NULL);
	vmem_get_stats(race_arena, &st);
	CHECK_EQ(st.nspans, 1);
	CHECK_EQ(vmem_size(race_arena, VMEM_SPAN), 16 * Q);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), 16 * Q);
	CHECK_EQ(vmem_size(race_arena, VMEM_ALLOC), 2 * Q);
	CHECK_ARENA(race_arena);
	CHECK(race_inner != NULL);
	if (race_inner != NULL)
		vmem_free(race_arena, race_inner, Q);
	if (p != NULL)
		vmem_free(race_arena, p, Q);
	vmem_destroy(race_arena);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), 0);
	vmem_destroy(src);
}

/*
 * VM_SLEEP requests that no import can help fail at once (they used to
 * wait for ever): a window with no room for one source quantum, a size
 * whose alignment padding overflows. A window narrower than the minimum
 * import takes a smaller import (it used to fail even with the source's
 * window free).
 */
static void
test_sleep_when_import_cannot_help(void)
{
	vmem_t *src64 = vmem_create("ih_src64", TL_PTR(0x1000000), 0x100000,
	    0x10000, NULL, NULL, NULL, 0, VM_SLEEP);
	vmem_t *a = vmem_create("ih_a", NULL, 0, Q, vmem_alloc, vmem_free,
	    src64, 0, VM_SLEEP);
	vmem_t *src = vmem_create("ih_src", TL_PTR(BASE), 0x100000, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	vmem_t *b = vmem_create("ih_b", NULL, 0, Q, vmem_alloc, vmem_free,
	    src, 0, VM_SLEEP);
	vmem_t *c = vmem_create("ih_c", NULL, 0, Q, vmem_alloc, vmem_free,
	    src, 5 * Q, VMC_NO_QCACHE);   /* minimum import 16 pages */
	size_t huge = ((size_t)1 << (sizeof (size_t) * 8 - 1));
	void *p;

	REQUIRE(src64 && a && src && b && c);
	CHECK(vmem_xalloc(a, Q, 0, 0, 0, TL_PTR(0x1011000),
	    TL_PTR(0x1012000), VM_SLEEP) == NULL);
	CHECK(vmem_xalloc(b, huge + huge / 2, huge, 0, 0, NULL, NULL,
	    VM_SLEEP) == NULL);
	p = vmem_xalloc(c, Q, 0, 0, 0, TL_PTR(BASE + 4 * Q),
	    TL_PTR(BASE + 6 * Q), VM_SLEEP);
	CHECK(p == TL_PTR(BASE + 4 * Q));
	if (p != NULL)
		vmem_xfree(c, p, Q);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), 0);
	/* The window counts after rounding to the source's 8 KiB quantum. */
	vmem_t *src8 = vmem_create("ih_src8", TL_PTR(0x2000000), 0x100000,
	    2 * Q, NULL, NULL, NULL, 0, VM_SLEEP);
	vmem_t *d = vmem_create("ih_d", NULL, 0, Q, vmem_alloc, vmem_free,
	    src8, 5 * Q, VMC_NO_QCACHE);
	REQUIRE(src8 && d);
	p = vmem_xalloc(d, Q, 0, 0, 0, TL_PTR(0x2001000), TL_PTR(0x2005000),
	    VM_NOSLEEP);
	CHECK(p == TL_PTR(0x2002000));
	if (p != NULL)
		vmem_xfree(d, p, Q);
	vmem_destroy(d);
	vmem_destroy(src8);
	vmem_destroy(c);
	vmem_destroy(b);
	vmem_destroy(src);
	vmem_destroy(a);
	vmem_destroy(src64);
}

/* VM_ABORT on a quantum-cached size does not reap the other caches. */
static void
test_abort_cached_no_reap(void)
{
	vmem_t *v = vmem_create("ab_qc", TL_PTR(BASE), 32 * Q, Q, NULL, NULL,
	    NULL, 4 * Q, VM_SLEEP);      /* 16-page slabs */
	void *x, *big;

	REQUIRE(v != NULL);
	x = vmem_alloc(v, Q, VM_SLEEP);
	big = vmem_alloc(v, 16 * Q, VM_SLEEP);
	REQUIRE(x != NULL && big != NULL);
	vmem_free(v, x, Q);      /* the 1-page cache's slab now idle */
	size_t held = vmem_size(v, VMEM_ALLOC);
	CHECK(vmem_alloc(v, 2 * Q, VM_ABORT | VM_NOSLEEP) == NULL);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), held);   /* nothing reaped */
	x = vmem_alloc(v, 2 * Q, VM_NOSLEEP);   /* without VM_ABORT: reaps */
	CHECK(x != NULL);
	if (x != NULL)
		vmem_free(v, x, 2 * Q);
	vmem_free(v, big, 16 * Q);
	vmem_destroy(v);
}

/* Flag bits the library uses inside (0x40, 0x80) mean nothing from a
 * caller: no VM_ABORT, and failures still count. */
static void
test_internal_flag_bits_ignored(void)
{
	vmem_t *v = vmem_create("fb_qc", TL_PTR(BASE), 32 * Q, Q, NULL, NULL,
	    NULL, 4 * Q, VM_SLEEP);
	vmem_stats_t st0, st1;
	void *x, *big;

	REQUIRE(v != NULL);
	x = vmem_alloc(v, Q, VM_SLEEP);
	big = vmem_alloc(v, 16 * Q, VM_SLEEP);
	REQUIRE(x != NULL && big != NULL);
	vmem_free(v, x, Q);      /* an idle slab: only a reap makes room */
	x = vmem_xalloc(v, 2 * Q, 0, 0, 0, NULL, NULL, VM_NOSLEEP | 0x40);
	CHECK(x != NULL);
	if (x != NULL)
		vmem_xfree(v, x, 2 * Q);
	vmem_get_stats(v, &st0);
	CHECK(vmem_alloc(v, 64 * Q, VM_NOSLEEP | 0x80) == NULL);
	vmem_get_stats(v, &st1);
	CHECK_EQ(st1.fail, st0.fail + 1);
	vmem_free(v, big, 16 * Q);
	vmem_destroy(v);
}

/* An import function that returns spans starting one page past 8 KiB. */
static int odd_imports;

static void *
odd_import(vmem_t *src, size_t *sizep, size_t align, int flags)
{
	(void)align;
	if (++odd_imports == 4)     /* the fourth is aligned */
		return vmem_xalloc(src, *sizep, 2 * Q, 0, 0, NULL, NULL, flags);
	return vmem_xalloc(src, *sizep, 2 * Q, Q, 0, NULL, NULL, flags);
}

/*
 * An import through the chain for a request whose nocross binds asks the
 * source for the request's own placement; it used to import a padded span
 * that could not hold it, give it back and import it again, at full CPU.
 * A user's import function that returns a span that cannot hold the
 * request is not called again at once.
 */
static void
test_nocross_import(void)
{
	vmem_t *src = vmem_create("nc_src", TL_PTR(Q), 0x100000, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	vmem_t *a = vmem_create("nc_a", NULL, 0, Q, vmem_alloc, vmem_free, src,
	    0, VM_SLEEP);
	vmem_t *b = vmem_xcreate("nc_b", NULL, 0, Q, odd_import, vmem_free,
	    src, 0, VM_SLEEP);
	vmem_stats_t st;
	void *p;

	REQUIRE(src && a && b);
	p = vmem_xalloc(a, 7 * Q, 4 * Q, 0, 8 * Q, NULL, NULL, VM_NOSLEEP);
	CHECK(p != NULL);
	if (p != NULL) {
		CHECK(TL_U(p) % (4 * Q) == 0);
		CHECK(TL_U(p) / (8 * Q) == (TL_U(p) + 7 * Q - 1) / (8 * Q));
		vmem_xfree(a, p, 7 * Q);
	}
	p = vmem_xalloc(a, 7 * Q, 4 * Q, 0, 8 * Q, NULL, NULL, VM_SLEEP);
	CHECK(p != NULL);
	if (p != NULL)
		vmem_xfree(a, p, 7 * Q);
	CHECK(vmem_xalloc(b, 2 * Q, 0, 0, 2 * Q, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(odd_imports, 1);
	/* VM_SLEEP waits between the unusable imports (~200 ms here). */
	p = vmem_xalloc(b, 2 * Q, 0, 0, 2 * Q, NULL, NULL, VM_SLEEP);
	CHECK(p != NULL);
	CHECK_EQ(odd_imports, 4);
	vmem_get_stats(b, &st);
	CHECK(st.wait >= 2);
	if (p != NULL)
		vmem_xfree(b, p, 2 * Q);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), 0);
	vmem_destroy(b);
	vmem_destroy(a);
	vmem_destroy(src);
}

/*
 * A binding nocross through a vmem_alloc chain whose request is not in
 * the source's units (its size or phase), or is below the child's minimum
 * import: the padded span could straddle a boundary so that no placement
 * in it avoids crossing (7 pages aligned to 4 in 8-page windows, from a
 * 10-page span starting 2 or 4 pages past a boundary). VM_NOSLEEP failed
 * with the source all free, and VM_SLEEP imported the same span, gave it
 * back and waited, for ever.
 */
static void
test_nocross_import_any_units(void)
{
	static const struct {
		size_t srcq, base, qmax;        /* pages */
		size_t size, align, phase, nocross;
	} c[] = {
		{ 1, 4, 2, 7, 4, 0, 8 },        /* below the minimum import */
		{ 2, 2, 0, 7, 4, 0, 8 },        /* size not in source units */
		{ 2, 6, 0, 11, 8, 1, 16 },      /* phase not in source units */
	};

	watchdog_start("test_nocross_import_any_units: VM_SLEEP");
	for (size_t i = 0; i < sizeof (c) / sizeof (c[0]); i++) {
		vmem_t *src = vmem_create("nu_src", TL_PTR(0x40000000UL +
		    c[i].base * Q), 1024 * Q, c[i].srcq * Q, NULL, NULL, NULL,
		    0, VM_SLEEP);
		vmem_t *a = vmem_create("nu_a", NULL, 0, Q, vmem_alloc,
		    vmem_free, src, c[i].qmax * Q, VMC_NO_QCACHE | VM_SLEEP);
		REQUIRE(src != NULL && a != NULL);
		for (int k = 0; k < 3; k++) {
			int f = k == 0 ? VM_NOSLEEP : k == 1 ? VM_SLEEP :
			    VM_SLEEP | VM_ENDALLOC;
			size_t size = c[i].size * Q, nc = c[i].nocross * Q;
			uintptr_t p = TL_U(vmem_xalloc(a, size, c[i].align * Q,
			    c[i].phase * Q, nc, NULL, NULL, f));
			if (p == 0)
				fprintf(stderr, "    case %zu flags %#x\n", i, f);
			CHECK(p != 0);
			if (p == 0)
				continue;
			CHECK_EQ(p % (c[i].align * Q), c[i].phase * Q);
			CHECK_EQ(p / nc, (p + size - 1) / nc);
			vmem_xfree(a, TL_PTR(p), size);
		}
		CHECK_EQ(vmem_size(src, VMEM_ALLOC), 0);
		CHECK_ARENA(a);
		CHECK_ARENA(src);
		vmem_destroy(a);
		vmem_destroy(src);
	}
	watchdog_stop();
}

/*
 * An aligned request through a vmem_alloc chain asks the source for the
 * aligned placement instead of a padded span: a 1 MiB-aligned page in a
 * 1 MiB source with one page taken in its middle is at the source's base,
 * though size + align - quantum contiguous bytes are not free. It used to
 * fail (VM_NOSLEEP) or wait for ever (VM_SLEEP).
 */
static void
test_aligned_import_through_chain(void)
{
	size_t mib = (size_t)1 << 20;
	vmem_t *src = vmem_create("al_src", TL_PTR(mib), mib, Q, NULL, NULL,
	    NULL, 0, VM_SLEEP);
	vmem_t *imp = vmem_create("al_imp", NULL, 0, Q, vmem_alloc, vmem_free,
	    src, 0, VM_SLEEP);
	void *hole, *p;

	REQUIRE(src != NULL && imp != NULL);
	hole = vmem_xalloc(src, Q, 0, 0, 0, TL_PTR(mib + mib / 2), NULL,
	    VM_NOSLEEP);
	REQUIRE(hole != NULL);
	p = vmem_xalloc(imp, Q, mib, 0, 0, NULL, NULL, VM_NOSLEEP);
	CHECK(p == TL_PTR(mib));
	if (p != NULL)
		vmem_xfree(imp, p, Q);
	/* With a phase too, and VM_SLEEP (no wait needed). */
	p = vmem_xalloc(imp, 2 * Q, mib / 2, Q, 0, NULL, NULL, VM_SLEEP);
	CHECK(p != NULL && TL_U(p) % (mib / 2) == Q);
	if (p != NULL)
		vmem_xfree(imp, p, 2 * Q);
	CHECK_EQ(vmem_size(imp, VMEM_SPAN), 0);
	CHECK_ARENA(imp);
	vmem_xfree(src, hole, Q);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), 0);
	CHECK_ARENA(src);
	vmem_destroy(imp);
	vmem_destroy(src);
}

/*
 * The same with nocross: a page at phase Q of 2 * Q that must not cross
 * 2 * Q, through a vmem_alloc chain whose source's only free page is such
 * a page. A padded span (2 * Q inside one window) does not exist there; the
 * request's own placement does. It used to fail (VM_NOSLEEP) or wait for
 * ever (VM_SLEEP).
 */
static void
test_nocross_aligned_import_through_chain(void)
{
	vmem_t *src = vmem_create("nca_src", TL_PTR(0x100000), 2 * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	vmem_t *mid = vmem_create("nca_mid", NULL, 0, Q, vmem_alloc, vmem_free,
	    src, 0, VM_SLEEP);
	vmem_t *top = vmem_create("nca_top", NULL, 0, Q, vmem_alloc, vmem_free,
	    mid, 0, VM_SLEEP);
	void *taken, *p;

	REQUIRE(src != NULL && mid != NULL && top != NULL);
	taken = vmem_xalloc(src, Q, 0, 0, 0, NULL, TL_PTR(0x100000 + Q),
	    VM_NOSLEEP);
	REQUIRE(taken == TL_PTR(0x100000));
	p = vmem_xalloc(mid, Q, 2 * Q, Q, 2 * Q, NULL, NULL, VM_NOSLEEP);
	CHECK(p == TL_PTR(0x100000 + Q));
	if (p != NULL)
		vmem_xfree(mid, p, Q);
	/* Two levels down, and VM_SLEEP (no wait needed). */
	p = vmem_xalloc(top, Q, 2 * Q, Q, 2 * Q, NULL, NULL, VM_NOSLEEP);
	CHECK(p == TL_PTR(0x100000 + Q));
	if (p != NULL) {
		vmem_xfree(top, p, Q);
		p = vmem_xalloc(top, Q, 2 * Q, Q, 2 * Q, NULL, NULL, VM_SLEEP);
		CHECK(p == TL_PTR(0x100000 + Q));
		if (p != NULL)
			vmem_xfree(top, p, Q);
	}
	CHECK_EQ(vmem_size(top, VMEM_SPAN), 0);
	CHECK_EQ(vmem_size(mid, VMEM_SPAN), 0);
	CHECK_ARENA(top);
	CHECK_ARENA(mid);
	vmem_xfree(src, taken, Q);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), 0);
	CHECK_ARENA(src);
	vmem_destroy(top);
	vmem_destroy(mid);
	vmem_destroy(src);
}

/*
 * minaddr and maxaddr need not be quantum multiples, as in illumos, whose
 * DVMA allocator passes dma_attr_addr_lo and dma_attr_addr_hi + 1 (or
 * dma_attr_addr_hi, 0xffffffffffffffff, when that wraps): they are rounded
 * inward. They used to be refused as invalid constraints (and the default
 * handler aborts).
 */
static void
test_xalloc_unaligned_bounds(void)
{
	vmem_t *v = vmem_create("ub", TL_PTR(0x100000), 64 * Q, Q, NULL, NULL,
	    NULL, 0, VM_SLEEP);
	void *p;

	REQUIRE(v != NULL);
	tu_record_errors();
	tu_reset_errors();
	p = vmem_xalloc(v, Q, 0, 0, 0, NULL, TL_PTR(UINTPTR_MAX), VM_NOSLEEP);
	CHECK(p == TL_PTR(0x100000));
	if (p != NULL)
		vmem_xfree(v, p, Q);
	/* minaddr rounds up, maxaddr down; VM_ENDALLOC takes the top. */
	p = vmem_xalloc(v, 2 * Q, 0, 0, 0, TL_PTR(0x100000 + 1),
	    TL_PTR(0x100000 + 4 * Q - 1), VM_NOSLEEP | VM_ENDALLOC);
	CHECK(p == TL_PTR(0x100000 + Q));
	if (p != NULL)
		vmem_xfree(v, p, 2 * Q);
	p = vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(0x100000 + Q + 1), NULL,
	    VM_NOSLEEP);
	CHECK(p == TL_PTR(0x100000 + 2 * Q));
	if (p != NULL)
		vmem_xfree(v, p, Q);
	/* A window that holds no whole quantum fails; it is no misuse. */
	CHECK(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(0x100000 + 1),
	    TL_PTR(0x100000 + Q + 1), VM_NOSLEEP) == NULL);
	CHECK(vmem_xalloc(v, Q, 0, 0, 0, NULL, TL_PTR(Q - 1), VM_NOSLEEP) ==
	    NULL);
	CHECK_EQ(tu_err.count, 0);
	tu_default_errors();
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* Free segments a call examined (the statistics' search counter). */
static uint64_t
searched(vmem_t *v, uint64_t *last)
{
	uint64_t now = tl_stats(v).search, d = now - *last;

	*last = now;
	return d;
}

#define MEMO_SLOTS 64
#define MEMO_ALIGN (16 * Q)

/*
 * A constrained request that fails in a full arena reads every free
 * fragment once; repeating it reads only the fragments that arrived since
 * (they could hold it), unless it is smaller than what failed, or its
 * constraints differ. Every fit that exists is still found.
 */
static void
test_constrained_failure_memo(void)
{
	uintptr_t base = 0x10000000UL;
	vmem_t *v = mk("memo", base, MEMO_SLOTS * MEMO_ALIGN, Q);
	void *p[MEMO_SLOTS], *x;
	uint64_t last = 0;
	int n;

	/* 3 pages at every 64 KiB: 64 fragments of 13 pages, none aligned. */
	for (n = 0; n < MEMO_SLOTS; n++) {
		p[n] = vmem_xalloc(v, 3 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
		    VM_NOSLEEP);
		REQUIRE(TL_U(p[n]) == base + (uintptr_t)n * MEMO_ALIGN);
	}
	(void)searched(v, &last);
	CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(searched(v, &last), MEMO_SLOTS);
	CHECK_EQ(vmem_check(v), 0);
	/* The same, and larger: nothing new to read. */
	CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK(vmem_xalloc(v, 9 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(searched(v, &last), 0);
	/* Smaller than what failed: read again, then known too. */
	CHECK(vmem_xalloc(v, Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(searched(v, &last), MEMO_SLOTS);
	CHECK(vmem_xalloc(v, Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(searched(v, &last), 0);
	CHECK_EQ(vmem_check(v), 0);
	/*
	 * Other constraints are not covered: a phase, a 32 KiB boundary
	 * (each first, while every hole is older than the memo).
	 */
	x = vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 5 * Q, 0, NULL, NULL,
	    VM_NOSLEEP);
	CHECK(x != NULL && (TL_U(x) - base) % MEMO_ALIGN == 5 * Q);
	vmem_xfree(v, x, 2 * Q);
	x = vmem_xalloc(v, 2 * Q, MEMO_ALIGN / 2, 0, 0, NULL, NULL,
	    VM_NOSLEEP);
	CHECK(x != NULL && (TL_U(x) - base) % MEMO_ALIGN == MEMO_ALIGN / 2);
	vmem_xfree(v, x, 2 * Q);
	CHECK_EQ(vmem_check(v), 0);
	(void)searched(v, &last);
	/* A free makes room: the new segment is read and used. */
	vmem_xfree(v, p[40], 3 * Q);
	x = vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL, VM_NOSLEEP);
	CHECK_EQ(TL_U(x), base + 40 * MEMO_ALIGN);
	CHECK_EQ(searched(v, &last), 1);
	/*
	 * What the carve left is new, and so are the two fragments that the
	 * 32 KiB and phase requests cut and their frees put together again:
	 * read once.
	 */
	CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(searched(v, &last), 3);
	CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(searched(v, &last), 0);
	CHECK_EQ(vmem_check(v), 0);
	/* A window is part of the constraints: below 1 MiB only 16 slots. */
	vmem_xfree(v, x, 2 * Q);
	vmem_xfree(v, p[3], 3 * Q);
	x = vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL,
	    TL_PTR(base + 16 * MEMO_ALIGN), VM_NOSLEEP);
	CHECK_EQ(TL_U(x), base + 3 * MEMO_ALIGN);
	CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL,
	    TL_PTR(base + 16 * MEMO_ALIGN), VM_NOSLEEP) == NULL);
	(void)searched(v, &last);
	CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL,
	    TL_PTR(base + 16 * MEMO_ALIGN), VM_NOSLEEP) == NULL);
	CHECK_EQ(searched(v, &last), 0);
	/* The free one above the window is still found without it. */
	CHECK_EQ(TL_U(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP)), base + 40 * MEMO_ALIGN);
	CHECK_EQ(vmem_check(v), 0);
	vmem_xfree(v, TL_PTR(base + 40 * MEMO_ALIGN), 2 * Q);
	vmem_xfree(v, x, 2 * Q);
	for (n = 0; n < MEMO_SLOTS; n++)
		if (n != 3 && n != 40)
			vmem_xfree(v, p[n], 3 * Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_check(v), 0);
	vmem_destroy(v);
}

/*
 * The memo moves on past newer segments only when none of them holds the
 * size it remembers: a failure at a larger size must not hide a newer
 * segment that holds the smaller one.
 */
static void
test_memo_keeps_smaller_fit(void)
{
	uintptr_t base = 0x10000000UL, slot = base + 20 * MEMO_ALIGN;
	vmem_t *v = mk("memo_small", base, MEMO_SLOTS * MEMO_ALIGN, Q);
	void *p[MEMO_SLOTS], *a, *b, *c;
	int n;

	for (n = 0; n < MEMO_SLOTS; n++) {
		p[n] = vmem_xalloc(v, 3 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
		    VM_NOSLEEP);
		REQUIRE(TL_U(p[n]) == base + (uintptr_t)n * MEMO_ALIGN);
	}
	/*
	 * Slot 20 becomes 2 pages (a), 1 page (b), 13 free, and the 13
	 * free pages before it 2 pages (c) and 11 free.
	 */
	vmem_xfree(v, p[20], 3 * Q);
	a = vmem_xalloc(v, 2 * Q, 0, 0, 0, TL_PTR(slot), TL_PTR(slot + 2 * Q),
	    VM_NOSLEEP);
	b = vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(slot + 2 * Q),
	    TL_PTR(slot + 3 * Q), VM_NOSLEEP);
	c = vmem_xalloc(v, 2 * Q, 0, 0, 0, TL_PTR(slot - 13 * Q),
	    TL_PTR(slot - 11 * Q), VM_NOSLEEP);
	REQUIRE(TL_U(a) == slot && TL_U(b) == slot + 2 * Q &&
	    TL_U(c) == slot - 13 * Q);
	/* Learn: no aligned 2 pages anywhere. */
	CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	/* Freeing a leaves exactly 2 aligned pages at the slot: a newer
	 * 13-page segment, in the class of the unaligned holes the memo
	 * covers, that fails 3 pages but holds 2. */
	vmem_xfree(v, a, 2 * Q);
	CHECK(vmem_xalloc(v, 3 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(vmem_check(v), 0);
	a = vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL, VM_NOSLEEP);
	CHECK_EQ(TL_U(a), slot);
	CHECK_EQ(vmem_check(v), 0);
	vmem_xfree(v, a, 2 * Q);
	vmem_xfree(v, b, Q);
	vmem_xfree(v, c, 2 * Q);
	for (n = 0; n < MEMO_SLOTS; n++)
		if (n != 20)
			vmem_xfree(v, p[n], 3 * Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	vmem_destroy(v);
}

/*
 * With no pages for the memo, failures read every hole (still correct)
 * and ask for the pages again only now and then, not at every call under
 * the arena lock; once pages come back the memo is made.
 */
static void
test_memo_without_pages(void)
{
	uintptr_t base = 0x10000000UL;
	vmem_t *v = mk("memo_nopages", base, MEMO_SLOTS * MEMO_ALIGN, Q);
	void *p[MEMO_SLOTS];
	uint64_t last = 0;
	int n, k, asked;

	for (n = 0; n < MEMO_SLOTS; n++)
		REQUIRE((p[n] = vmem_xalloc(v, 3 * Q, MEMO_ALIGN, 0, 0, NULL,
		    NULL, VM_NOSLEEP)) != NULL);
	asked = metadata_refused;
	vmem_set_fault_hook(refuse_metadata, NULL);
	for (k = 0; k < 1000; k++)
		CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
		    VM_NOSLEEP) == NULL);
	vmem_set_fault_hook(NULL, NULL);
	CHECK_EQ(metadata_refused - asked, 1);
	CHECK_EQ(vmem_check(v), 0);
	/* Pages again: within the back-off, then learnt, then nothing read. */
	for (k = 0; k < 1100; k++)
		CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
		    VM_NOSLEEP) == NULL);
	(void)searched(v, &last);
	CHECK(vmem_xalloc(v, 2 * Q, MEMO_ALIGN, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK_EQ(searched(v, &last), 0);
	for (n = 0; n < MEMO_SLOTS; n++)
		vmem_xfree(v, p[n], 3 * Q);
	vmem_destroy(v);
}

/*
 * Best fit in a class full of equal segments larger than the request:
 * after one full reading the class knows its smallest member, and any
 * segment of that size is the answer (it used to read the whole class on
 * every call). A smaller segment that arrives is still preferred.
 */
static void
test_bestfit_equal_segments(void)
{
	enum { N = 1000 };
	vmem_t *v = mk("bf_equal", BASE, (size_t)N * 18 * Q + 64 * Q, Q);
	static void *big[N], *sep[N];
	void *p, *q;
	uintptr_t h;
	uint64_t last = 0;

	for (int i = 0; i < N; i++) {
		REQUIRE((big[i] = vmem_alloc(v, 17 * Q, VM_NOSLEEP)) != NULL);
		REQUIRE((sep[i] = vmem_alloc(v, Q, VM_NOSLEEP)) != NULL);
	}
	for (int i = 0; i < N; i++)
		vmem_free(v, big[i], 17 * Q);
	(void)searched(v, &last);
	for (int k = 0; k < 5; k++) {
		p = vmem_alloc(v, 16 * Q, VM_NOSLEEP | VM_BESTFIT);
		REQUIRE(p != NULL);
		CHECK(searched(v, &last) <= (k == 0 ? N : 1));
		vmem_free(v, p, 16 * Q);
	}
	/*
	 * The class's lower bound is learnt (17 pages). A 16-page segment
	 * arriving in it afterwards is the exact fit and must be taken.
	 */
	h = TL_U(big[N / 3]);
	q = vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(h), TL_PTR(h + Q), VM_NOSLEEP);
	CHECK_EQ(TL_U(q), h);
	p = vmem_alloc(v, 16 * Q, VM_NOSLEEP | VM_BESTFIT);
	CHECK_EQ(TL_U(p), h + Q);
	vmem_free(v, p, 16 * Q);
	vmem_xfree(v, q, Q);
	/* A 35-page segment arriving (17 + 1 + 17) is never preferred. */
	vmem_free(v, sep[N / 2], Q);
	h = TL_U(big[N / 2]);
	p = vmem_alloc(v, 16 * Q, VM_NOSLEEP | VM_BESTFIT);
	REQUIRE(p != NULL);
	CHECK(TL_U(p) + 16 * Q <= h || TL_U(p) >= h + 35 * Q);
	vmem_free(v, p, 16 * Q);         /* back to 17 pages... */
	p = vmem_alloc(v, 2 * Q, VM_NOSLEEP | VM_BESTFIT);
	REQUIRE(p != NULL);              /* ...leaves a 15-page fragment */
	q = vmem_alloc(v, 15 * Q, VM_NOSLEEP | VM_BESTFIT);
	CHECK_EQ(TL_U(q), TL_U(p) + 2 * Q);
	CHECK_EQ(vmem_check(v), 0);
	vmem_free(v, q, 15 * Q);
	vmem_free(v, p, 2 * Q);
	for (int i = 0; i < N; i++)
		if (i != N / 2)
			vmem_free(v, sep[i], Q);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_check(v), 0);
	vmem_destroy(v);
}

int
main(void)
{
	RUN(test_create_and_accessors);
	RUN(test_alloc_rounding_and_free);
	RUN(test_instant_fit);
	RUN(test_first_fit);
	RUN(test_best_fit);
	RUN(test_fit_in_wide_classes);
	RUN(test_next_fit);
	RUN(test_endalloc);
	RUN(test_compat_flags);
	RUN(test_failures_and_sleep);
	RUN(test_size_typemasks);
	RUN(test_contains);
	RUN(test_walk);
	RUN(test_walk_reentrant);
	RUN(test_walk_reentrant_without_memory);
	RUN(test_stats_fields);
	RUN(test_print_and_foreach);
	RUN(test_foreach_arena);
	RUN(test_import_chain);
	RUN(test_release_when_free);
	RUN(test_xcreate_import);
	RUN(test_sourceless_import_releases);
	RUN(test_window_does_not_import_through_user_function);
	RUN(test_min_import);
	RUN(test_qcache_slab_not_representable);
	RUN(test_deep_chain);
	RUN(test_many_arenas);
	RUN(test_top_of_address_space);
	RUN(test_span_ending_at_top);
	RUN(test_xalloc_constraints_fixed);
	RUN(test_aligned_instant_head);
	RUN(test_aligned_instant_class);
	RUN(test_xalloc_constraints_random);
	RUN(test_fail_reaps_own_caches);
	RUN(test_sleep_reaps_every_arena);
	RUN(test_racing_import_goes_back);
	RUN(test_sleep_when_import_cannot_help);
	RUN(test_nocross_import);
	RUN(test_nocross_import_any_units);
	RUN(test_aligned_import_through_chain);
	RUN(test_nocross_aligned_import_through_chain);
	RUN(test_xalloc_unaligned_bounds);
	RUN(test_abort_cached_no_reap);
	RUN(test_internal_flag_bits_ignored);
	RUN(test_constrained_failure_memo);
	RUN(test_memo_keeps_smaller_fit);
	RUN(test_memo_without_pages);
	RUN(test_bestfit_equal_segments);
	RUN(test_meta_bytes);
	return tu_finish();
}
