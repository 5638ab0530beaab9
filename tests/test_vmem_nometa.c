/*
 * VM_SLEEP allocations when the library's own metadata runs out.
 *
 * Boundary tags and kmem's slab records come from platform pages, which
 * the fault hook refuses here. Waiting cannot bring them back in general
 * (no free is bound to return the pages the platform refused), so such a
 * call fails at once -- in every path: an arena without a source, an
 * arena whose import arrives but cannot be recorded, and a quantum-cached
 * arena whose cache cannot record a new slab -- with a warning through the
 * error handler, because a VM_SLEEP caller does not expect NULL. Before,
 * the second path waited for ever and the third spun at full CPU; the
 * watchdog turns either into a failure.
 *
 * The tests run in this order in one process: the first needs tags to be
 * plentiful, the others drain the global tag pool for good.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmem/kmem.h>

#include "testutil.h"
#include "vmem_testlib.h"

#define Q 4096UL
#define WATCHDOG_SECONDS 60
#define CHILD_PAGES 65536UL

static int refusing;

static int
refuse_when_asked(const char *site, void *arg)
{
	(void)arg;
	return refusing && strcmp(site, "metadata") == 0;
}

static void
watchdog_fired(int sig)
{
	static const char msg[] =
	    "test_vmem_nometa: a VM_SLEEP call neither returned nor failed\n";

	(void)sig;
	(void)!write(2, msg, sizeof (msg) - 1);
	_exit(3);
}

/* A VM_SLEEP failure for lack of metadata: one warning, naming it. */
static void
check_warning(int before, const char *call, const char *arena)
{
	CHECK_EQ(tu_err.count, before + 1);
	CHECK_EQ(tu_err.code, VMEM_E_NOMEM);
	CHECK(tu_err.warning);
	CHECK(strcmp(tu_err.call, call) == 0);
	CHECK(strcmp(tu_err.name, arena) == 0);
}

static void
check_nometa_warning(int before, const char *arena)
{
	check_warning(before, "vmem_alloc", arena);
}

/* A gibibyte of quanta at base, no source. */
static vmem_t *
root_arena(const char *name, uintptr_t base)
{
	return vmem_create(name, (void *)base, 1UL << 30, Q, NULL, NULL, NULL,
	    0, VM_SLEEP);
}

/* An arena importing from src through vmem_alloc, no span of its own. */
static vmem_t *
child_arena(const char *name, vmem_t *src, size_t qcache_max)
{
	return vmem_create(name, NULL, 0, Q, vmem_alloc, vmem_free, src,
	    qcache_max, VM_SLEEP);
}

typedef struct {
	uintptr_t *a;
	size_t n, cap;
} addrs_t;

static void
addrs_push(addrs_t *got, void *p)
{
	if (got->n == got->cap) {
		got->cap = got->cap ? 2 * got->cap : 1024;
		got->a = realloc(got->a, got->cap * sizeof (uintptr_t));
		REQUIRE(got->a != NULL);
	}
	got->a[got->n++] = (uintptr_t)p;
}

/* With metadata back, the same VM_SLEEP call succeeds. */
static void
check_recovers(vmem_t *v)
{
	void *p;

	refusing = 0;
	p = vmem_alloc(v, Q, VM_SLEEP);
	CHECK(p != NULL);
	vmem_free(v, p, Q);
}

/* Both arenas consistent, then destroyed (the importer first). */
static void
check_and_destroy(vmem_t *importer, vmem_t *source)
{
	CHECK_ARENA(importer);
	CHECK_ARENA(source);
	vmem_destroy(importer);
	vmem_destroy(source);
}

/*
 * Allocate one quantum at every other quantum (two tags each) until the
 * tags run out or limit allocations are made.
 */
static void
eat_tags(vmem_t *v, addrs_t *got, size_t limit)
{
	while (got->n < limit) {
		void *p = vmem_xalloc(v, Q, 2 * Q, 0, 0, NULL, NULL,
		    VM_NOSLEEP);

		if (p == NULL)
			return;
		addrs_push(got, p);
	}
}

static void
give_back(vmem_t *v, addrs_t *got)
{
	for (size_t i = 0; i < got->n; i++)
		vmem_free(v, (void *)got->a[i], Q);
	free(got->a);
	memset(got, 0, sizeof (*got));
}

/*
 * The quantum cache's slab arrives from the arena, but the cache cannot
 * record it (kmem's bookkeeping pages are refused). The slab goes back,
 * which moves the arena on, so the caller's wait used to return at once,
 * for ever. Tags stay plentiful: only kmem's pages are missing.
 */
static void
test_qcache_cannot_record_slab(void)
{
	vmem_t *parent = root_arena("nm_parent", 0x10000000);
	vmem_t *child = child_arena("nm_cached", parent, 4 * Q);
	addrs_t got = { 0 }, spare = { 0 };
	vmem_stats_t before;
	int reports = tu_err.count;
	void *p;

	REQUIRE(parent != NULL && child != NULL);
	/* Thousands of tags into the global pool, for the arenas' use. */
	eat_tags(parent, &spare, 2000);
	give_back(parent, &spare);
	refusing = 1;
	/* Use up the slab records kmem already has pages for. */
	while ((p = vmem_alloc(child, Q, VM_NOSLEEP)) != NULL) {
		addrs_push(&got, p);
		REQUIRE(got.n < 1000000);
	}
	before = tl_stats(child);
	CHECK_EQ(before.populate_fail, 0); /* the tags were not the reason */
	CHECK(vmem_alloc(child, Q, VM_SLEEP) == NULL);
	check_nometa_warning(reports, "nm_cached");
	CHECK_EQ(tl_stats(child).fail, before.fail + 1);
	check_recovers(child);
	give_back(child, &got);
	check_and_destroy(child, parent);
}

/*
 * An arena without caches imports through its source's quantum cache,
 * which cannot record a new slab. The source's try used to sleep inside
 * the cache and the importer to wait on the wrong arena's generation:
 * the call spun for ever.
 */
static void
test_import_through_source_cache(void)
{
	vmem_t *root = root_arena("nm_root", 0x10000000);
	vmem_t *mid = child_arena("nm_mid", root, 4 * Q);
	vmem_t *top = child_arena("nm_top", mid, 0);
	addrs_t got = { 0 };
	int reports = tu_err.count;
	void *p;

	REQUIRE(root != NULL && mid != NULL && top != NULL);
	refusing = 1;
	while ((p = vmem_alloc(top, Q, VM_NOSLEEP)) != NULL) {
		addrs_push(&got, p);
		REQUIRE(got.n < 1000000);
	}
	CHECK_EQ(tl_stats(mid).populate_fail, 0);
	CHECK_EQ(tl_stats(top).populate_fail, 0);
	CHECK(vmem_alloc(top, Q, VM_SLEEP) == NULL);
	check_nometa_warning(reports, "nm_top");
	check_recovers(top);
	give_back(top, &got);
	check_and_destroy(top, mid);
	vmem_destroy(root);
}

/* An arena of its own spans: the call fails at once, with a warning. */
static void
test_no_source(void)
{
	vmem_t *v = root_arena("nm_plain", 0x10000000);
	addrs_t got = { 0 };
	int reports = tu_err.count;

	REQUIRE(v != NULL);
	refusing = 1;
	eat_tags(v, &got, SIZE_MAX);
	CHECK(got.n > 0);
	CHECK(vmem_alloc(v, Q, VM_SLEEP) == NULL);
	check_nometa_warning(reports, "nm_plain");
	/* Without VM_SLEEP NULL is the expected answer: no report. */
	CHECK(vmem_alloc(v, Q, VM_NOSLEEP) == NULL);
	CHECK_EQ(tu_err.count, reports + 1);
	/* VM_PANIC: the panic report alone, not a warning before it. */
	CHECK(vmem_alloc(v, Q, VM_SLEEP | VM_PANIC) == NULL);
	CHECK_EQ(tu_err.count, reports + 2);
	CHECK_EQ(tu_err.code, VMEM_E_PANIC);
	/* A span cannot be added without tags either. */
	reports = tu_err.count;
	CHECK(vmem_add(v, (void *)0x80000000, 16 * Q, VM_SLEEP) == NULL);
	check_warning(reports, "vmem_add", "nm_plain");
	CHECK(vmem_add(v, (void *)0x80000000, 16 * Q, VM_NOSLEEP) == NULL);
	CHECK_EQ(tu_err.count, reports + 1);
	CHECK(vmem_contains(v, (void *)0x80000000, Q) == 0);
	check_recovers(v);
	give_back(v, &got);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/*
 * The import arrives but the importing arena has too few tags to record
 * it (it had enough to look for room). The span goes back and the call
 * used to wait for room that its retries could never record.
 */
static void
test_import_cannot_be_recorded(void)
{
	vmem_t *parent = root_arena("nm_src", 0x80000000);
	vmem_t *child = vmem_create("nm_importer", (void *)0x10000000,
	    CHILD_PAGES * Q, Q, vmem_alloc, vmem_free, parent, 0, VM_SLEEP);
	addrs_t mine = { 0 };
	int reports = tu_err.count;
	vmem_stats_t st;
	size_t mid;

	REQUIRE(parent != NULL && child != NULL);
	refusing = 1;
	/* The child's own span: every other page, until its tags run out
	 * (long before the span is full, so nothing is imported). */
	eat_tags(child, &mine, SIZE_MAX);
	REQUIRE(mine.n > 4 && mine.n < CHILD_PAGES / 2);
	CHECK_EQ(tl_stats(parent).mem_inuse, 0);
	/*
	 * Free one page between two free ones: the three merge and two tags
	 * come back, enough to look for room (two) but not to record an
	 * import (four). Only an import holds twice the child's span.
	 */
	mid = mine.n / 2;
	vmem_free(child, (void *)mine.a[mid], Q);
	mine.a[mid] = mine.a[--mine.n];
	st = tl_stats(child);
	CHECK(vmem_alloc(child, 2 * CHILD_PAGES * Q, VM_SLEEP) == NULL);
	check_nometa_warning(reports, "nm_importer");
	CHECK(tl_stats(child).populate_fail > st.populate_fail);
	CHECK_EQ(tl_stats(parent).mem_inuse, 0); /* the import went back */
	check_recovers(child);
	give_back(child, &mine);
	check_and_destroy(child, parent);
}

/*
 * Two quantum-cached arenas, one importing from the other; the lower one
 * has no tags left, the upper one has. The upper cache's slab import asks
 * the lower cache, whose own slab import stops: the stop must reach the
 * caller waiting on the upper cache, which used to wait for ever.
 */
static void
test_nested_caches(void)
{
	vmem_t *root = root_arena("nm_nroot", 0x10000000);
	vmem_t *low = child_arena("nm_low", root, 16 * Q);
	vmem_t *up = child_arena("nm_up", low, 4 * Q);
	vmem_t *scratch = vmem_create("nm_scratch", (void *)0x200000000UL,
	    1UL << 32, Q, NULL, NULL, NULL, 0, VM_SLEEP);
	addrs_t warm = { 0 }, pool = { 0 }, lows = { 0 };
	int reports;

	REQUIRE(root != NULL && low != NULL && up != NULL && scratch != NULL);
	/* The upper arena keeps a reserve of tags from this. */
	for (int i = 0; i < 64; i++)
		addrs_push(&warm, vmem_xalloc(up, 32 * Q, 0, 0, 0, NULL, NULL,
		    VM_NOSLEEP));
	for (size_t i = 0; i < warm.n; i++)
		vmem_xfree(up, (void *)warm.a[i], 32 * Q);
	free(warm.a);
	refusing = 1;
	eat_tags(scratch, &pool, SIZE_MAX);     /* the global pool */
	eat_tags(low, &lows, SIZE_MAX);         /* the lower reserve */
	reports = tu_err.count;
	CHECK(vmem_alloc(up, Q, VM_SLEEP) == NULL);
	check_nometa_warning(reports, "nm_up");
	refusing = 0;
	give_back(low, &lows);
	give_back(scratch, &pool);
	check_and_destroy(up, low);
	vmem_destroy(root);
	vmem_destroy(scratch);
}

static void *
wrapped_alloc(vmem_t *src, size_t size, int vmflag)
{
	return vmem_alloc(src, size, vmflag);
}

static void
wrapped_free(vmem_t *src, void *addr, size_t size)
{
	vmem_free(src, addr, size);
}

/*
 * An import function of the user's (here a wrapper around vmem_alloc)
 * fails because its source has no tags. The source's VM_SLEEP call warns;
 * the importing call must then fail too, not wait and import again (it
 * used to, warning every 100 ms).
 */
static void
test_user_import_stops(void)
{
	vmem_t *src = root_arena("nm_usrc", 0x10000000);
	vmem_t *v = vmem_create("nm_user", (void *)0x80000000, 256 * Q, Q,
	    wrapped_alloc, wrapped_free, src, 0, VM_SLEEP);
	addrs_t mine = { 0 }, theirs = { 0 };
	int reports;
	void *all;

	REQUIRE(src != NULL && v != NULL);
	eat_tags(v, &mine, 128);        /* a reserve for the importer */
	give_back(v, &mine);
	all = vmem_alloc(v, 256 * Q, VM_NOSLEEP);
	REQUIRE(all != NULL);           /* only an import can serve now */
	refusing = 1;
	eat_tags(src, &theirs, SIZE_MAX);
	reports = tu_err.count;
	CHECK(vmem_alloc(v, Q, VM_SLEEP) == NULL);
	check_nometa_warning(reports, "nm_usrc");
	refusing = 0;
	vmem_free(v, all, 256 * Q);
	give_back(src, &theirs);
	check_and_destroy(v, src);
}

/*
 * Stops reach other callers only when they are not one call's own: here
 * the source's import function, called for X's VM_SLEEP request, makes a
 * call of its own (Y) whose import breaks its contract. Y is reported and
 * fails; X sees an ordinary shortage (the import fails, and fails again
 * after the reap) and must wait and get its memory from the import after
 * the wait, not fail because Y stopped meanwhile (it used to).
 */
static int import_phase;
static vmem_t *phase_src;

static void *
phased_import(vmem_t *base, size_t size, int vmflag)
{
	void *y;

	switch (import_phase) {
	case 0:                 /* X's first import: Y runs, then a shortage */
		import_phase = 1;
		y = vmem_alloc(phase_src, 8 * Q, VM_NOSLEEP);
		CHECK(y == NULL);
		import_phase = 2;
		return NULL;
	case 1:                 /* Y's import: a misaligned span */
		return (char *)vmem_alloc(base, size, vmflag) + 1;
	case 2:                 /* X's retry after reaping: still short */
		import_phase = 3;
		return NULL;
	default:                /* after X waited */
		return vmem_alloc(base, size, vmflag);
	}
}

static void
phased_release(vmem_t *base, void *addr, size_t size)
{
	/* Y's broken span comes back as it was given. */
	vmem_free(base, (void *)((uintptr_t)addr & ~(uintptr_t)(Q - 1)),
	    size);
}

static void
test_other_callers_misuse_does_not_stop(void)
{
	vmem_t *base = root_arena("nm_base", 0x10000000);
	vmem_t *src = vmem_create("nm_phased", NULL, 0, Q, phased_import,
	    phased_release, base, 4 * Q, VM_SLEEP);
	vmem_t *x = child_arena("nm_x", src, 0);
	int reports = tu_err.count;
	void *p;

	REQUIRE(base != NULL && src != NULL && x != NULL);
	phase_src = src;
	p = vmem_alloc(x, Q, VM_SLEEP);
	CHECK(p != NULL);
	CHECK_EQ(import_phase, 3);
	CHECK_EQ(tu_err.count, reports + 1);    /* Y's broken import */
	CHECK_EQ(tu_err.code, VMEM_E_MISUSE);
	vmem_free(x, p, Q);
	check_and_destroy(x, src);
	vmem_destroy(base);
}

/*
 * The default kmem heap takes its spans from the platform's pages through
 * an import function of its own (no source arena). Refused pages used to
 * make a KM_SLEEP call import again every 100 ms, for ever.
 */
static void
test_default_heap_pages_refused(void)
{
	size_t big = (size_t)64 << 20;
	int reports;
	void *p;

	p = kmem_alloc(100, KM_SLEEP);          /* the heap exists now */
	REQUIRE(p != NULL);
	kmem_free(p, 100);
	reports = tu_err.count;
	refusing = 1;
	CHECK(kmem_alloc(big, KM_SLEEP) == NULL);
	refusing = 0;
	check_nometa_warning(reports, "kmem_default");
	p = kmem_alloc(big, KM_SLEEP);
	CHECK(p != NULL);
	kmem_free(p, big);
}

int
main(void)
{
	signal(SIGALRM, watchdog_fired);
	alarm(WATCHDOG_SECONDS);
	tu_record_errors();
	vmem_set_fault_hook(refuse_when_asked, NULL);
	RUN(test_other_callers_misuse_does_not_stop);
	RUN(test_default_heap_pages_refused);
	RUN(test_qcache_cannot_record_slab);
	RUN(test_import_through_source_cache);
	RUN(test_no_source);
	RUN(test_import_cannot_be_recorded);
	RUN(test_nested_caches);
	RUN(test_user_import_stops);
	vmem_set_fault_hook(NULL, NULL);
	return tu_finish();
}
