/*
 * Tests of the kernel layout model (src/layout.c, src/layout_draw.c).
 *
 * Expectations come from three independent places: the table in illumos
 * startup.c's comment (copied as data), the tables of layout.md (copied as
 * data), and closed-form formulas written out again here for a grid of
 * configurations the tables do not cover. Refusals are checked by message.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdio.h>
#include <string.h>

#include <vmem/layout.h>
#include "testutil.h"

#define KIB (1ULL << 10)
#define MIB (1ULL << 20)
#define GIB (1ULL << 30)
#define PG 4096ULL

static int
compute(layout_params_t *p, layout_t *l)
{
	return layout_compute(p, l);
}

static layout_params_t
params(uint64_t mem, layout_placement_t placement)
{
	layout_params_t p;

	layout_params_default(&p);
	p.physmem = mem;
	p.placement = placement;
	return p;
}

static int
has_warning(const layout_t *l, const char *needle)
{
	int i;

	for (i = 0; i < l->nwarnings; i++)
		if (strstr(l->warnings[i], needle) != NULL)
			return 1;
	return 0;
}

/* Every row of the startup.c table (sizeof(page_t) = 80, default segmap). */
static void
test_startup_table(void)
{
	static const struct {
		unsigned gib;
		uint64_t page_t_bytes, kernelbase;
		unsigned heap_mib, user_mib;
	} rows[] = {
		{ 1, 0x01400000, 0xd1800000, 684, 3352 },
		{ 2, 0x02800000, 0xcf000000, 704, 3312 },
		{ 4, 0x05000000, 0xca000000, 744, 3232 },
		{ 6, 0x07800000, 0xc5000000, 784, 3152 },
		{ 8, 0x0a000000, 0xc0000000, 824, 3072 },
		{ 16, 0x14000000, 0xac000000, 984, 2752 },
		{ 32, 0x28000000, 0x84000000, 1304, 2112 },
		{ 64, 0x50000000, 0x34000000, 1944, 832 },
	};
	size_t i;
	int placement;

	for (i = 0; i < sizeof (rows) / sizeof (rows[0]); i++) {
		for (placement = 0; placement < 2; placement++) {
			layout_params_t p = params(rows[i].gib * GIB,
			    (layout_placement_t)placement);
			layout_t l;

			CHECK_EQ(compute(&p, &l), 0);
			CHECK_EQ(l.page_t_array, rows[i].page_t_bytes);
			CHECK_EQ(l.valloc_sz, rows[i].page_t_bytes);
			CHECK_EQ(l.kernelbase, rows[i].kernelbase);
			CHECK_EQ(l.kernel_heap_column, rows[i].heap_mib * MIB);
			CHECK_EQ(l.userlimit, rows[i].user_mib * MIB);
			/* The usable range is two ptable_va pages less. */
			CHECK_EQ(l.ekernelheap - l.kernelheap,
			    rows[i].heap_mib * MIB - 2 * PG);
			CHECK_EQ(l.pae, rows[i].gib > 4);
			CHECK_EQ(l.lpage, rows[i].gib > 4 ? 2 * MIB : 4 * MIB);
		}
	}
}

/* The table's closed form: kernel heap = 664 MiB + V. */
static void
test_closed_form(void)
{
	unsigned gib;

	for (gib = 1; gib <= 64; gib++) {
		layout_params_t p = params(gib * GIB, LAYOUT_SEGKP_FROMHEAP);
		layout_t l;
		uint64_t v = gib * GIB / PG * 80;

		CHECK_EQ(compute(&p, &l), 0);
		CHECK_EQ(l.kernel_heap_column, 664 * MIB + v);
	}
}

static void
test_heap_arena_sizes(void)
{
	static const struct {
		unsigned gib, dyn_mib, fixed_mib;
	} rows[] = { { 1, 620, 420 }, { 4, 680, 480 }, { 8, 760, 560 } };
	size_t i;

	for (i = 0; i < sizeof (rows) / sizeof (rows[0]); i++) {
		layout_params_t pd = params(rows[i].gib * GIB,
		    LAYOUT_SEGKP_FROMHEAP);
		layout_params_t pf = params(rows[i].gib * GIB,
		    LAYOUT_SEGKP_FIXED);
		layout_t d, f;

		CHECK_EQ(compute(&pd, &d), 0);
		CHECK_EQ(compute(&pf, &f), 0);
		/* Named in whole MiB; the span is the ptable_va pages short. */
		CHECK_EQ(d.heap_size, rows[i].dyn_mib * MIB - 2 * PG);
		CHECK_EQ(f.heap_size, rows[i].fixed_mib * MIB - 2 * PG);
		CHECK_EQ(d.heap_base, d.kernelheap);
		CHECK_EQ(d.first_heap_page, d.kernelheap);
		CHECK_EQ(f.segkp_base, f.kernelheap);
		CHECK_EQ(f.segkp_size, 200 * MIB);
		CHECK_EQ(f.heap_base, f.kernelheap + 200 * MIB);
		CHECK_EQ(f.first_heap_page, f.heap_base);
		CHECK_EQ(d.segkp_size, 0);
		CHECK_EQ(d.heaptext_start + d.heaptext_size, d.ekernelheap);
		CHECK_EQ(d.heap_base + d.heap_size, d.heaptext_start);
		CHECK_EQ(f.heap_base + f.heap_size, f.heaptext_start);
	}
}

/* layout.md's analytic stack table. */
static void
test_analytic_stacks(void)
{
	static const struct {
		unsigned gib;
		uint64_t fixed2, fixed3, dyn2, dyn3, dyn2_300, dyn3_300;
	} rows[] = {
		{ 1, 16000, 12800, 49595, 39676, 25595, 20476 },
		{ 4, 16000, 12800, 54395, 43516, 30395, 24316 },
		{ 8, 16000, 12800, 60795, 48636, 36795, 29436 },
	};
	size_t i;
	unsigned pages;

	CHECK_EQ(layout_qcache_slab_size(5 * PG), 64 * KIB);
	for (i = 0; i < sizeof (rows) / sizeof (rows[0]); i++) {
		for (pages = 2; pages <= 3; pages++) {
			layout_params_t pf = params(rows[i].gib * GIB,
			    LAYOUT_SEGKP_FIXED);
			layout_params_t pd = params(rows[i].gib * GIB,
			    LAYOUT_SEGKP_FROMHEAP);
			layout_t f, d;

			pf.stack_pages = pd.stack_pages = pages;
			CHECK_EQ(compute(&pf, &f), 0);
			CHECK_EQ(compute(&pd, &d), 0);
			CHECK_EQ(layout_stacks_per_slab(&d), pages == 2 ? 5 : 4);
			CHECK_EQ(layout_analytic_stacks_fixed(&f),
			    pages == 2 ? rows[i].fixed2 : rows[i].fixed3);
			CHECK_EQ(layout_analytic_stacks_fromheap(&d, 0),
			    pages == 2 ? rows[i].dyn2 : rows[i].dyn3);
			CHECK_EQ(layout_analytic_stacks_fromheap(&d, 300 * MIB),
			    pages == 2 ? rows[i].dyn2_300 : rows[i].dyn3_300);
		}
	}
}

/* Formulas of layout.md, written out independently of src/layout.c. */
static uint64_t
up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

typedef struct expect {
	uint64_t kernelbase, kernelheap, ekernelheap, valloc_base;
	uint64_t heap_base, heap_size, segkp_size;
} expect_t;

static expect_t
expected_i386(uint64_t mem, int rules, int fixed, uint64_t segkp,
    uint64_t kb_prop, uint64_t segmap)
{
	expect_t e;
	int pae = mem > 4 * GIB;
	uint64_t lp = pae ? 2 * MIB : 4 * MIB;
	uint64_t cfg = mem;
	uint64_t v;

	if (rules == 2018 && cfg > 16 * GIB)
		cfg = 16 * GIB;
	v = cfg / PG * 80;
	if (rules == 2005) {
		e.valloc_base = 0xFE800000ULL - up(v, lp);
		e.ekernelheap = e.valloc_base - 2 * PG;
	} else {
		e.valloc_base = (0xFE800000ULL - 2 * PG - v) / lp * lp;
		e.ekernelheap = e.valloc_base;
	}
	if (kb_prop != 0) {
		e.kernelbase = kb_prop / lp * lp;
		if (e.kernelbase > 0xE0000000ULL)
			e.kernelbase = 0xE0000000ULL;
	} else {
		e.kernelbase = 0xD4000000ULL - up(2 * v, 4 * MIB);
	}
	if (segmap < 16 * MIB)
		segmap = 16 * MIB;
	e.kernelheap = up(up(e.kernelbase, lp) + up(segmap, lp), lp);
	e.segkp_size = fixed ? up(segkp, lp) : 0;
	e.heap_base = e.kernelheap + e.segkp_size;
	e.heap_size = e.ekernelheap - 64 * MIB - e.heap_base;
	return e;
}

static uint64_t
expected_stacks_fromheap(uint64_t heap_size, unsigned pages, uint64_t use)
{
	uint64_t chunk = (pages + 1) * PG;
	uint64_t avail = heap_size - PG;

	if (use >= avail)
		return 0;
	avail -= use;
	if (chunk <= 5 * PG)
		return avail / (64 * KIB) * ((64 * KIB) / chunk);
	return avail / chunk;
}

static void
check_grid_point(uint64_t mem, int rules, int fixed, unsigned pages,
    uint64_t segkp, uint64_t kb_prop, uint64_t segmap)
{
	layout_params_t p = params(mem, fixed ? LAYOUT_SEGKP_FIXED :
	    LAYOUT_SEGKP_FROMHEAP);
	expect_t e = expected_i386(mem, rules, fixed, segkp, kb_prop, segmap);
	layout_t l;
	int rc;

	p.rules = (layout_rules_t)rules;
	p.stack_pages = pages;
	p.segkpsize = segkp;
	p.kernelbase_prop = kb_prop;
	p.segmapsize = segmap;
	rc = compute(&p, &l);
	if (e.kernelheap >= e.ekernelheap ||
	    e.heap_base + 2 * PG > e.ekernelheap - 64 * MIB) {
		CHECK(rc != 0);
		CHECK(l.error[0] != '\0');
		return;
	}
	CHECK_EQ(rc, 0);
	CHECK_EQ(l.kernelbase, e.kernelbase);
	CHECK_EQ(l.kernelheap, e.kernelheap);
	CHECK_EQ(l.ekernelheap, e.ekernelheap);
	CHECK_EQ(l.valloc_base, e.valloc_base);
	CHECK_EQ(l.heap_base, e.heap_base);
	CHECK_EQ(l.heap_size, e.heap_size);
	CHECK_EQ(l.segkp_size, e.segkp_size);
	if (fixed) {
		CHECK_EQ(layout_analytic_stacks_fixed(&l),
		    expected_stacks_fromheap(e.segkp_size + PG, pages, 0));
	} else {
		CHECK_EQ(layout_analytic_stacks_fromheap(&l, 0),
		    expected_stacks_fromheap(e.heap_size, pages, 0));
		CHECK_EQ(layout_analytic_stacks_fromheap(&l, 100 * MIB),
		    expected_stacks_fromheap(e.heap_size, pages, 100 * MIB));
	}
}

static void
test_grid(void)
{
	static const uint64_t mems[] = { 64 * MIB, 256 * MIB, 512 * MIB,
	    768 * MIB, 1 * GIB, 1536 * MIB, 2 * GIB, 3 * GIB, 4 * GIB,
	    4 * GIB + 512 * MIB, 6 * GIB, 8 * GIB, 12 * GIB, 16 * GIB,
	    24 * GIB, 32 * GIB, 48 * GIB, 64 * GIB };
	static const uint64_t segkps[] = { 64 * MIB, 100 * MIB, 200 * MIB,
	    256 * MIB + 12 * KIB, 400 * MIB };
	static const uint64_t kbs[] = { 0, 0x80000000ULL, 0xB0000000ULL,
	    0xC0000000ULL, 0xC1234000ULL, 0xE0000000ULL, 0xF0000000ULL };
	static const uint64_t segmaps[] = { 0, 8 * MIB, 64 * MIB + 4 * KIB };
	size_t m, s, k, g;
	unsigned pages;
	int rules, fixed;

	for (m = 0; m < sizeof (mems) / sizeof (mems[0]); m++)
	for (rules = 2005; rules <= 2018; rules += 13)
	for (fixed = 0; fixed < 2; fixed++)
	for (pages = 1; pages <= 6; pages++)
	for (s = 0; s < sizeof (segkps) / sizeof (segkps[0]); s++)
	for (k = 0; k < sizeof (kbs) / sizeof (kbs[0]); k++)
	for (g = 0; g < sizeof (segmaps) / sizeof (segmaps[0]); g++)
		check_grid_point(mems[m], rules, fixed, pages, segkps[s],
		    kbs[k], segmaps[g]);
}

static void
test_rules_2018(void)
{
	layout_params_t p = params(1 * GIB, LAYOUT_SEGKP_FROMHEAP);
	layout_t l;

	p.rules = LAYOUT_RULES_2018;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.stack_pages, 3);
	CHECK_EQ(l.stack_va, 16 * KIB);
	CHECK_EQ(l.ptable_va, 0);
	CHECK_EQ(l.valloc_base, 0xFD000000ULL);
	CHECK_EQ(l.ekernelheap, l.valloc_base);
	/* Memory is capped at 16 GiB, with the kernel's note. */
	p.physmem = 32 * GIB;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.physmem, 16 * GIB);
	CHECK(has_warning(&l, "Due to virtual address space limiting physmem "
	    "to 0x400000 of 0x800000 pages"));
}

static void
test_refusals(void)
{
	layout_params_t p;
	layout_t l;

	/* A high kernelbase with a big page_t array: no room for the heap. */
	p = params(32 * GIB, LAYOUT_SEGKP_FROMHEAP);
	p.kernelbase_prop = 0xE0000000ULL;
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_NOHEAP);
	CHECK_EQ(l.error_code, VMEM_E_LAYOUT_NOHEAP);
	CHECK(strcmp(l.error, "too little address space available for "
	    "kernelheap, use eeprom for lower kernelbase or smaller "
	    "segmapsize") == 0);
	/* A segmap that pushes the heap past the top of the address space. */
	p = params(32 * GIB, LAYOUT_SEGKP_FROMHEAP);
	p.segmapsize = 2 * GIB;
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_NOHEAP);
	CHECK(strstr(l.error, "too little address space available for "
	    "kernelheap") != NULL);
	/* A fixed segkp larger than the heap range. */
	p = params(1 * GIB, LAYOUT_SEGKP_FIXED);
	p.segkpsize = 700 * MIB;
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_NOSEGKP);
	CHECK(strstr(l.error, "leaves no room for heap_arena") != NULL);
	/* Without the kernelbase property, 84 GiB of page_t would wrap. */
	p = params(100 * GIB, LAYOUT_SEGKP_FROMHEAP);
	CHECK_EQ(compute(&p, &l), 0); /* capped at 64 GiB by PAE */
	CHECK_EQ(l.physmem, 64 * GIB);
	CHECK(has_warning(&l, "not addressable with PAE"));
	p = params(1 * GIB, LAYOUT_SEGKP_FROMHEAP);
	p.valloc_sz = 1800 * MIB;     /* kernelbase would go below 0 */
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_NOHEAP);
	/* Bad tunables. */
	p = params(1 * GIB + 100, LAYOUT_SEGKP_FIXED);
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_BADARG);
	CHECK(strstr(l.error, "page multiple") != NULL);
	p = params(1 * GIB, LAYOUT_SEGKP_FIXED);
	p.rules = (layout_rules_t)2010;
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_BADARG);
	p = params(1 * GIB, LAYOUT_SEGKP_FIXED);
	p.stack_pages = 1000;
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_BADARG);
	p = params(1 * GIB, LAYOUT_SEGKP_FIXED);
	p.kernelbase_prop = 0x100000000ULL;
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_BADARG);
	p = params(1 * GIB, LAYOUT_SEGKP_FIXED);
	p.pae = 7;
	CHECK_EQ(compute(&p, &l), VMEM_E_LAYOUT_BADARG);
}

static void
test_warnings(void)
{
	layout_params_t p;
	layout_t l;

	/* Clamped to KERNELBASE_MAX. */
	p = params(1 * GIB, LAYOUT_SEGKP_FROMHEAP);
	p.kernelbase_prop = 0xF0000000ULL;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.kernelbase, 0xE0000000ULL);
	CHECK(has_warning(&l, "kernelbase value, User specified 0xf0000000, "
	    "System using 0xe0000000"));
	/* Rounded down to LPAGE. */
	p.kernelbase_prop = 0xC1234000ULL;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.kernelbase, 0xC1000000ULL);
	CHECK_EQ(l.nwarnings, 1);
	/* Below the ABI minimum: a note, not a refusal. */
	p.kernelbase_prop = 0x80000000ULL;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.nwarnings, 1);
	CHECK(has_warning(&l, "kernelbase set to 0x80000000, system is not "
	    "i386 ABI compliant."));
	/* 16 GiB floats below the ABI minimum too. */
	p = params(16 * GIB, LAYOUT_SEGKP_FROMHEAP);
	CHECK_EQ(compute(&p, &l), 0);
	CHECK(has_warning(&l, "not i386 ABI compliant"));
	/* 8 GiB lands exactly on it: no note. */
	p = params(8 * GIB, LAYOUT_SEGKP_FROMHEAP);
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.nwarnings, 0);
	/* PAE forced off above 4 GiB: the memory above is dropped. */
	p = params(8 * GIB, LAYOUT_SEGKP_FROMHEAP);
	p.pae = 0;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.physmem, 4 * GIB);
	CHECK_EQ(l.lpage, 4 * MIB);
	CHECK(has_warning(&l, "not addressable without PAE"));
	/* PAE forced on at 1 GiB: 2 MiB large pages. */
	p = params(1 * GIB, LAYOUT_SEGKP_FROMHEAP);
	p.pae = 1;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.lpage, 2 * MIB);
	CHECK_EQ(l.kernel_heap_column, 684 * MIB);
}

static void
test_amd64(void)
{
	layout_params_t p = params(16 * GIB, LAYOUT_SEGKP_FIXED);
	layout_t l;

	p.arch = LAYOUT_AMD64;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.kernelbase, 0xFFFFFD8000000000ULL);
	CHECK_EQ(l.redzone_end - l.redzone_start, 512 * GIB);
	CHECK_EQ(l.segkpm_base, 0xFFFFFE0000000000ULL);
	CHECK_EQ(l.valloc_base, 0xFFFFFF0000000000ULL);
	CHECK_EQ(l.segkp_base, l.valloc_base + up(16 * GIB / PG * 120,
	    2 * MIB));
	CHECK_EQ(l.segkp_size, 2 * GIB);
	CHECK_EQ(l.stack_pages, 5);
	CHECK_EQ(l.ekernelheap, 0xFFFFFFFFC0000000ULL);
	CHECK_EQ(l.heap_base + l.heap_size, l.ekernelheap);
	CHECK_EQ(l.userlimit, l.kernelbase - 2 * MIB);
	CHECK(l.segzio_base == l.segkp_base + l.segkp_size);
	CHECK(l.toxic_addr >= l.segzio_base + 24 * GIB);
	CHECK(l.kernelheap > l.segmap_start);
	/* 2 GiB of 24 KiB stacks: "more than 87,000". */
	CHECK_EQ(layout_stacks_per_slab(&l), 0);
	CHECK_EQ(layout_analytic_stacks_fixed(&l), 87381);
	/* segkpsize out of 200 MiB..8 GiB is reset to 2 GiB, with a warning. */
	p.segkpsize = 100 * MIB;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.segkp_size, 2 * GIB);
	CHECK(has_warning(&l, "Illegal value for segkpsize. segkpsize has "
	    "been reset to 524288 pages"));
	p.segkpsize = 9 * GIB;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.segkp_size, 2 * GIB);
	p.segkpsize = 4 * GIB;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.segkp_size, 4 * GIB);
	CHECK_EQ(l.nwarnings, 0);
	/* ... and at most physical memory. */
	p.physmem = 1 * GIB;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.segkp_size, 1 * GIB);
	p.physmem = 128 * MIB;
	p.segkpsize = 0;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.segkp_size, 200 * MIB);
	/* kernelbase cannot be moved. */
	p.kernelbase_prop = 0xC0000000ULL;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.kernelbase, 0xFFFFFD8000000000ULL);
	CHECK(has_warning(&l, "kernelbase cannot be changed on 64-bit"));
	/* Above 256 GiB segkpm and valloc move down. */
	p = params(1024 * GIB, LAYOUT_SEGKP_FROMHEAP);
	p.arch = LAYOUT_AMD64;
	CHECK_EQ(compute(&p, &l), 0);
	CHECK_EQ(l.segkpm_base, 0 - 4096 * GIB);
	CHECK_EQ(l.valloc_base, l.segkpm_base + 1024 * GIB);
	CHECK_EQ(l.segkp_size, 0);
	CHECK(l.kernelheap < l.ekernelheap);
}

static void
test_draw(void)
{
	layout_params_t p = params(1 * GIB, LAYOUT_SEGKP_FIXED);
	layout_t l;
	char buf[8192], small[64];
	size_t need;

	CHECK_EQ(compute(&p, &l), 0);
	need = layout_draw(&l, buf, sizeof (buf));
	CHECK(need < sizeof (buf));
	CHECK_EQ(strlen(buf), need);
	CHECK(strstr(buf, " 0xD1800000 -|") != NULL);
	CHECK(strstr(buf, "- kernelbase / userlimit") != NULL);
	CHECK(strstr(buf, " 0xD2800000 -|") != NULL);
	CHECK(strstr(buf, "- kernelheap, segkp_base") != NULL);
	CHECK(strstr(buf, " 0xDF000000 -|") != NULL); /* heap above segkp */
	CHECK(strstr(buf, " 0xFD3FE000 -|") != NULL);
	CHECK(strstr(buf, "ekernelheap, ptable_va") != NULL);
	CHECK(strstr(buf, " 0xFE800000 -|") != NULL);
	CHECK(strstr(buf, "segkp (fixed)") != NULL);
	/* Truncation: terminated, and the full length still reported. */
	CHECK_EQ(layout_draw(&l, small, sizeof (small)), need);
	CHECK_EQ(strlen(small), sizeof (small) - 1);
	CHECK_EQ(layout_draw(&l, NULL, 0), need);
	/* fromheap draws the arena note; a refusal draws the panic. */
	p.placement = LAYOUT_SEGKP_FROMHEAP;
	CHECK_EQ(compute(&p, &l), 0);
	layout_draw(&l, buf, sizeof (buf));
	CHECK(strstr(buf, "(segkp is an arena") != NULL);
	CHECK(strstr(buf, "segkp (fixed)") == NULL);
	p.kernelbase_prop = 0xE0000000ULL;
	p.physmem = 32 * GIB;
	CHECK(compute(&p, &l) != 0);
	layout_draw(&l, buf, sizeof (buf));
	CHECK(strstr(buf, "panic: too little address space") != NULL);
	p = params(16 * GIB, LAYOUT_SEGKP_FIXED);
	p.arch = LAYOUT_AMD64;
	CHECK_EQ(compute(&p, &l), 0);
	layout_draw(&l, buf, sizeof (buf));
	CHECK(strstr(buf, " 0xFFFFFD80.00000000 -|") != NULL);
	CHECK(strstr(buf, "- KERNELBASE") != NULL);
}

int
main(void)
{
	RUN(test_startup_table);
	RUN(test_closed_form);
	RUN(test_heap_arena_sizes);
	RUN(test_analytic_stacks);
	RUN(test_grid);
	RUN(test_rules_2018);
	RUN(test_refusals);
	RUN(test_warnings);
	RUN(test_amd64);
	RUN(test_draw);
	return tu_finish();
}
