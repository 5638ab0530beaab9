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
check_nometa_warning(int before, const char *arena)
{
	CHECK_EQ(tu_err.count, before + 1);
	CHECK_EQ(tu_err.code, VMEM_E_NOMEM);
	CHECK(tu_err.warning);
	CHECK(strcmp(tu_err.call, "vmem_alloc") == 0);
	CHECK(strcmp(tu_err.name, arena) == 0);
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
	vmem_t *parent = vmem_create("nm_parent", (void *)0x10000000, 1UL << 30,
	    Q, NULL, NULL, NULL, 0, VM_SLEEP);
	vmem_t *child = vmem_create("nm_cached", NULL, 0, Q, vmem_alloc,
	    vmem_free, parent, 4 * Q, VM_SLEEP);
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
	CHECK_ARENA(child);
	CHECK_ARENA(parent);
	vmem_destroy(child);
	vmem_destroy(parent);
}

/* An arena of its own spans: the call fails at once, with a warning. */
static void
test_no_source(void)
{
	vmem_t *v = vmem_create("nm_plain", (void *)0x10000000, 1UL << 30, Q,
	    NULL, NULL, NULL, 0, VM_SLEEP);
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
	vmem_t *parent = vmem_create("nm_src", (void *)0x80000000, 1UL << 30,
	    Q, NULL, NULL, NULL, 0, VM_SLEEP);
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
	CHECK_ARENA(child);
	CHECK_ARENA(parent);
	vmem_destroy(child);
	vmem_destroy(parent);
}

int
main(void)
{
	signal(SIGALRM, watchdog_fired);
	alarm(WATCHDOG_SECONDS);
	tu_record_errors();
	vmem_set_fault_hook(refuse_when_asked, NULL);
	RUN(test_qcache_cannot_record_slab);
	RUN(test_no_source);
	RUN(test_import_cannot_be_recorded);
	vmem_set_fault_hook(NULL, NULL);
	return tu_finish();
}
