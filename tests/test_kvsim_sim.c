/*
 * kvsim's acceptance on the real allocators: the workload engine of
 * tools/kvsim/sim.c booted on computed layouts, its thread storms compared
 * with layout.md's analytic counts. The expectations are the formulas
 * written out here, never the library's own analytic helpers:
 *
 *   slab         = smallest power of two > 3 * qcache_max (64 KiB for 5
 *                  pages of 4 KiB); per_slab = slab / stack_va
 *   fixed        = floor(segkp_size / slab) * per_slab
 *   fromheap     = floor((heap_size - first page) / slab) * per_slab
 *   (stacks above 5 pages bypass the quantum caches: exact imports)
 *
 * With metadata charged to the heap (the default), the heap at the moment
 * the storm fails must account exactly, to the page: boot page + slabs +
 * charged metadata pages + a remainder too small for one more slab.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "../tools/kvsim/sim.c"

#include <vmem/layout.h>

#include "testutil.h"

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)
#define PAGE 4096ULL

static uint64_t
storm(const layout_t *l, int charge, kvsim_sim_stats_t *at_fail)
{
	kvsim_sim_config_t cfg = { l, charge };
	char err[200] = "";
	kvsim_sim_t *sim = kvsim_allocator_engine.boot(&cfg, err, sizeof (err));
	uint64_t n = 0, h;

	REQUIRE(sim != NULL);
	while (kvsim_allocator_engine.thread_create(sim, 0, &h) == 0)
		n++;
	kvsim_allocator_engine.stats(sim, at_fail);
	kvsim_allocator_engine.shutdown(sim);
	return n;
}

static uint64_t
slab_bytes(void)
{
	uint64_t slab = 1;

	while (slab <= 3 * 5 * PAGE)
		slab <<= 1;
	return slab;
}

/* layout.md's formulas, written out. */
static uint64_t
expected_stacks(const layout_t *l)
{
	uint64_t va = (l->stack_pages + 1) * PAGE;
	uint64_t slab = slab_bytes();
	uint64_t cached = va <= 5 * PAGE;

	if (l->params.placement == LAYOUT_SEGKP_FIXED)
		return cached ? l->segkp_size / slab * (slab / va) :
		    l->segkp_size / va;
	return cached ? (l->heap_size - PAGE) / slab * (slab / va) :
	    (l->heap_size - PAGE) / va;
}

static void
compute(layout_t *l, uint64_t mem, unsigned pages, uint64_t segkp,
    uint64_t kernelbase, layout_placement_t placement)
{
	layout_params_t p;

	layout_params_default(&p);
	p.physmem = mem;
	p.stack_pages = pages;
	p.segkpsize = segkp;
	p.kernelbase_prop = kernelbase;
	p.placement = placement;
	REQUIRE(layout_compute(&p, l) == 0);
}

/* The founding claim on the defaults: 16,000 versus 49,595. */
static void
test_default_without_metadata(void)
{
	kvsim_sim_stats_t st;
	layout_t l;

	compute(&l, GIB, 2, 0, 0, LAYOUT_SEGKP_FIXED);
	CHECK_EQ(l.heap_size, 420 * MIB - 8 * KIB);
	CHECK_EQ(storm(&l, 0, &st), 16000);
	compute(&l, GIB, 2, 0, 0, LAYOUT_SEGKP_FROMHEAP);
	CHECK_EQ(l.heap_size, 620 * MIB - 8 * KIB);
	CHECK_EQ(storm(&l, 0, &st), 49595);
	CHECK_EQ(st.metadata_bytes, 0);
}

/*
 * With metadata charged, fromheap loses exactly the slabs the metadata
 * occupies: the heap accounts to the page.
 */
static void
test_default_with_metadata_accounts_to_the_page(void)
{
	kvsim_sim_stats_t st;
	layout_t l;
	uint64_t n, slabs, slab = slab_bytes();

	compute(&l, GIB, 2, 0, 0, LAYOUT_SEGKP_FROMHEAP);
	n = storm(&l, 1, &st);
	CHECK(st.metadata_bytes > 0);
	CHECK_EQ(st.metadata_bytes % PAGE, 0);
	CHECK_EQ(n % 5, 0);
	slabs = n / 5;
	/* Boot page + slabs + metadata pages = heap in use, exactly. */
	CHECK_EQ(st.heap_inuse, PAGE + slabs * slab + st.metadata_bytes);
	/* What is left cannot hold one more slab. */
	CHECK(st.heap_total - st.heap_inuse < slab);
	/* The shortfall against the analytic count is the metadata. */
	CHECK_EQ(49595 - n, 5 * (9919 - (l.heap_size - PAGE -
	    st.metadata_bytes) / slab));
	printf("    fromheap with metadata: %llu stacks, %llu KiB metadata\n",
	    (unsigned long long)n,
	    (unsigned long long)(st.metadata_bytes / KIB));
}

/* Other configurations against the same formulas. */
static void
test_grid_matches_formulas(void)
{
	static const uint64_t mems[] = { GIB, 4 * GIB, 8 * GIB };
	static const unsigned pages[] = { 2, 3, 6 };
	static const uint64_t segkps[] = { 100 * MIB, 200 * MIB, 300 * MIB };
	static const uint64_t bases[] = { 0, 0xC0000000ULL };
	int slow = tu_slow_build();
	size_t configs = 0;

	for (size_t m = 0; m < 3; m++)
		for (size_t s = 0; s < 3; s++)
			for (size_t k = 0; k < 3; k++)
				for (size_t b = 0; b < 2; b++) {
					layout_t l;
					kvsim_sim_stats_t st;

					/* Under sanitizers: a diagonal. */
					if (slow && !(m == s && k == b + 1))
						continue;
					compute(&l, mems[m], pages[s], segkps[k],
					    bases[b], LAYOUT_SEGKP_FIXED);
					CHECK_EQ(storm(&l, 0, &st),
					    expected_stacks(&l));
					compute(&l, mems[m], pages[s], segkps[k],
					    bases[b], LAYOUT_SEGKP_FROMHEAP);
					CHECK_EQ(storm(&l, 0, &st),
					    expected_stacks(&l));
					configs++;
				}
	printf("    %zu configurations, both placements\n", configs);
}

int
main(void)
{
	RUN(test_default_without_metadata);
	RUN(test_default_with_metadata_accounts_to_the_page);
	RUN(test_grid_matches_formulas);
	return tu_finish();
}
