/*
 * Tests of the kernel address space object (segkmem): both backings,
 * residency that follows commit/decommit on real memory, the page budget,
 * metadata charged to the simulated heap to the page, two address spaces
 * at once, fault classification, and misuse through the error handler.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmem/segkmem.h>

#include "testutil.h"

#define MIB ((size_t)1 << 20)

static kas_t *
make_kas(kas_backing_t backing, size_t size, size_t physmem_pages,
    int charge)
{
	kas_config_t cfg;

	kas_config_init(&cfg);
	cfg.backing = backing;
	cfg.size = size;
	cfg.physmem_pages = physmem_pages;
	cfg.charge_metadata = charge;
	cfg.name = backing == KAS_SIM ? "simkas" : "realkas";
	return kas_create(&cfg);
}

/* Pages of [addr, addr + size) resident in host memory. */
static size_t
resident_pages(void *addr, size_t size)
{
	size_t hp = (size_t)sysconf(_SC_PAGESIZE), n = size / hp, i, r = 0;
	unsigned char *vec = malloc(n);

	REQUIRE(vec != NULL);
	REQUIRE(mincore(addr, size, vec) == 0);
	for (i = 0; i < n; i++)
		r += vec[i] & 1;
	free(vec);
	return r;
}

static void
test_defaults(void)
{
	kas_config_t cfg;
	kas_t *kas;

	kas_config_init(&cfg);
	CHECK_EQ(cfg.size, 1u << 30);
	CHECK_EQ(cfg.backing, KAS_REAL);
	kas = kas_default();
	REQUIRE(kas != NULL);
	CHECK(kas == kas_default());
	CHECK_EQ(kas_size(kas), 1u << 30);
	CHECK_EQ(kas_backing(kas), KAS_REAL);
	CHECK(kas_of_arena(kas_heap_arena(kas)) == kas);
	CHECK(kas_of_arena(kas_kmem_va(kas)) == kas);
	CHECK(kas_of_arena(kas_kmem_default(kas)) == kas);
	CHECK(kas_of_arena(kas_metadata_arena(kas)) == kas);
	CHECK_EQ(vmem_size(kas_heap_arena(kas), VMEM_ALLOC | VMEM_FREE),
	    1u << 30);
	CHECK_EQ(vmem_quantum(kas_kmem_va(kas)), kas_pagesize(kas));
	CHECK(vmem_source(kas_kmem_va(kas)) == kas_heap_arena(kas));
	CHECK(vmem_source(kas_kmem_default(kas)) == kas_kmem_va(kas));
	CHECK(kas_physmem(kas) > 0);
	CHECK_EQ(kas_availrmem(kas), kas_physmem(kas));
	kas_destroy(kas);
	CHECK(kas_default() != kas || 1); /* recreated on demand */
	kas_destroy(kas_default());
}

static void
test_real_residency_follows_use(void)
{
	kas_t *kas = make_kas(KAS_REAL, 64 * MIB, 0, 0);
	vmem_t *heap;
	size_t ps, size;
	char *p;
	kas_stats_t st;

	REQUIRE(kas != NULL);
	heap = kas_heap_arena(kas);
	ps = kas_pagesize(kas);
	size = 64 * ps;
	p = segkmem_alloc(heap, size, VM_SLEEP);
	REQUIRE(p != NULL);
	CHECK((uintptr_t)p >= kas_base(kas));
	CHECK((uintptr_t)p + size <= kas_base(kas) + kas_size(kas));
	CHECK_EQ(resident_pages(p, size), 0);
	CHECK_EQ(p[0], 0);
	CHECK_EQ(p[size - 1], 0);
	memset(p, 0xA5, size);
	CHECK_EQ(resident_pages(p, size), size / (size_t)sysconf(_SC_PAGESIZE));
	kas_get_stats(kas, &st);
	CHECK_EQ(st.pages_committed, 64);
	CHECK_EQ(st.pages_reserved, 64);
	CHECK_EQ(st.heap_inuse, size);

	/* Decommit part in the middle: those pages go, the rest stays. */
	kas_pages_decommit(kas, p + 8 * ps, 8 * ps);
	CHECK_EQ(resident_pages(p + 8 * ps, 8 * ps), 0);
	CHECK_EQ(resident_pages(p, 8 * ps), 8 * ps / (size_t)sysconf(_SC_PAGESIZE));
	CHECK(!kas_page_is_committed(kas, p + 8 * ps));
	CHECK(kas_page_is_committed(kas, p));
	CHECK_EQ(kas_pages_commit(kas, p + 8 * ps, 8 * ps, 0), 0);
	CHECK_EQ(p[8 * ps], 0); /* fresh pages are zero */
	CHECK_EQ(p[0], (char)0xA5);

	segkmem_free(heap, p, size);
	CHECK_EQ(resident_pages(p, size), 0);
	kas_get_stats(kas, &st);
	CHECK_EQ(st.pages_committed, 0);
	CHECK_EQ(st.pages_reserved, 0);
	CHECK_EQ(st.heap_inuse, 0);

	/* The same address again comes back zeroed. */
	p = segkmem_alloc(heap, size, VM_SLEEP);
	REQUIRE(p != NULL);
	CHECK_EQ(p[17], 0);
	segkmem_free(heap, p, size);
	kas_destroy(kas);
}

/* An arena importing through segkmem_alloc is memory. */
static void
test_memory_backed_arena(void)
{
	kas_backing_t b;

	for (b = KAS_REAL; b <= KAS_SIM; b++) {
		kas_t *kas = make_kas(b, 32 * MIB, 0, -1);
		vmem_t *a;
		void *x, *y;
		size_t ps;
		kas_stats_t st;

		REQUIRE(kas != NULL);
		ps = kas_pagesize(kas);
		a = kas_arena_create(kas, "user_mem", NULL, 0, 64, segkmem_alloc,
		    segkmem_free, kas_heap_arena(kas), 0, VM_SLEEP);
		REQUIRE(a != NULL);
		CHECK(kas_of_arena(a) == kas);
		x = vmem_alloc(a, 100 * 64, VM_SLEEP);
		y = vmem_alloc(a, 3 * ps, VM_SLEEP);
		REQUIRE(x != NULL && y != NULL);
		CHECK(kas_page_is_committed(kas, x));
		CHECK(kas_page_is_committed(kas, y));
		if (b == KAS_REAL)
			memset(y, 1, 3 * ps);
		vmem_free(a, x, 100 * 64);
		vmem_free(a, y, 3 * ps);
		kas_arena_destroy(kas, a);
		kas_get_stats(kas, &st);
		/* What is left is the charged metadata (sim) or nothing. */
		CHECK_EQ(st.pages_committed, st.meta_pages_total);
		CHECK_EQ(st.pages_reserved, st.meta_pages_total);
		CHECK_EQ(st.heap_inuse, st.meta_pages_total * ps);
		CHECK_EQ(st.meta_pages_total == 0, b == KAS_REAL);
		kas_destroy(kas);
	}
}

static void
test_sim_backing(void)
{
	kas_config_t cfg;
	kas_t *kas;
	void *a[16];
	int i;
	kas_stats_t st;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.sim_base = 0xC8000000u;
	cfg.size = 0x30000000u;  /* a 768 MiB 32-bit kernel heap */
	cfg.nheap_spans = 1;
	cfg.heap_spans[0].start = 0;
	cfg.heap_spans[0].end = 0x30000000u - 64 * MIB;
	cfg.heap_boot_pages = 1;
	cfg.charge_metadata = 0;
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);
	CHECK_EQ(kas_base(kas), 0xC8000000u);
	CHECK_EQ(kas_pagesize(kas), 4096);
	CHECK_EQ(kas_physmem(kas), (1u << 30) / 4096);
	for (i = 0; i < 16; i++) {
		a[i] = segkmem_alloc(kas_heap_arena(kas), (size_t)(i + 1) * 4096,
		    VM_SLEEP);
		REQUIRE(a[i] != NULL);
		CHECK((uintptr_t)a[i] >= 0xC8000000u + 4096);
		CHECK((uintptr_t)a[i] < 0xC8000000u + 0x30000000u - 64 * MIB);
	}
	kas_get_stats(kas, &st);
	CHECK_EQ(st.pages_committed, 136);
	CHECK_EQ(st.pages_reserved, 136);
	CHECK_EQ(st.heap_boot, 4096);
	CHECK_EQ(st.heap_inuse, 137 * 4096);
	CHECK_EQ(st.heap_size, 0x30000000u - 64 * MIB);
	for (i = 0; i < 16; i++)
		segkmem_free(kas_heap_arena(kas), a[i], (size_t)(i + 1) * 4096);
	kas_get_stats(kas, &st);
	CHECK_EQ(st.pages_committed, 0);
	CHECK_EQ(st.heap_inuse, 4096);
	kas_destroy(kas);
}

static void
test_heap_spans(void)
{
	kas_config_t cfg;
	kas_t *kas;
	vmem_t *heap;

	kas_config_init(&cfg);
	cfg.backing = KAS_REAL;
	cfg.size = 16 * MIB;
	cfg.nheap_spans = 2;
	cfg.heap_spans[0].start = 1 * MIB;
	cfg.heap_spans[0].end = 3 * MIB;
	cfg.heap_spans[1].start = 8 * MIB;
	cfg.heap_spans[1].end = 12 * MIB;
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);
	heap = kas_heap_arena(kas);
	CHECK_EQ(vmem_size(heap, VMEM_ALLOC | VMEM_FREE), 6 * MIB);
	CHECK(vmem_contains(heap, (void *)(kas_base(kas) + 1 * MIB), 2 * MIB));
	CHECK(!vmem_contains(heap, (void *)(kas_base(kas) + 4 * MIB), 1));
	CHECK(vmem_contains(heap, (void *)(kas_base(kas) + 8 * MIB), 4 * MIB));
	kas_destroy(kas);
}

static void
test_budget_nosleep(void)
{
	kas_backing_t b;

	for (b = KAS_REAL; b <= KAS_SIM; b++) {
		kas_t *kas = make_kas(b, 16 * MIB, 100, 0);
		vmem_t *heap;
		size_t ps;
		void *x, *y;
		kas_stats_t st;

		REQUIRE(kas != NULL);
		heap = kas_heap_arena(kas);
		ps = kas_pagesize(kas);
		CHECK_EQ(kas_physmem(kas), 100);
		x = segkmem_alloc(heap, 64 * ps, VM_NOSLEEP);
		REQUIRE(x != NULL);
		CHECK_EQ(kas_availrmem(kas), 36);
		y = segkmem_alloc(heap, 64 * ps, VM_NOSLEEP);
		CHECK(y == NULL);
		/* The failed request gave its address space back. */
		CHECK_EQ(vmem_size(heap, VMEM_ALLOC), 64 * ps);
		CHECK_EQ(kas_page_resv(kas, 37, VM_NOSLEEP), 0);
		CHECK_EQ(kas_page_resv(kas, 36, VM_NOSLEEP), 1);
		CHECK_EQ(kas_availrmem(kas), 0);
		/* Larger than physmem fails at once, even with VM_SLEEP. */
		CHECK_EQ(kas_page_resv(kas, 101, VM_SLEEP), 0);
		kas_page_unresv(kas, 36);
		segkmem_free(heap, x, 64 * ps);
		y = segkmem_alloc(heap, 100 * ps, VM_NOSLEEP);
		CHECK(y != NULL);
		kas_get_stats(kas, &st);
		CHECK_EQ(st.resv_fail, 3);
		CHECK_EQ(st.availrmem, 0);
		segkmem_free(heap, y, 100 * ps);
		CHECK_EQ(kas_availrmem(kas), 100);
		kas_destroy(kas);
	}
}

/* Fill heap_arena with one-page allocations; return how many fit. */
static size_t
fill_heap(kas_t *kas, void ***out)
{
	size_t n = 0, cap = 1024;
	void **v = malloc(cap * sizeof (void *));
	void *p;

	REQUIRE(v != NULL);
	while ((p = segkmem_alloc(kas_heap_arena(kas), kas_pagesize(kas),
	    VM_NOSLEEP)) != NULL) {
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof (void *));
			REQUIRE(v != NULL);
		}
		v[n++] = p;
	}
	*out = v;
	return n;
}

static void
test_metadata_shortfall_to_the_page(void)
{
	size_t size = tu_slow_build() ? 4 * MIB : 16 * MIB;
	kas_t *off = make_kas(KAS_SIM, size, 0, 0);
	kas_t *on = make_kas(KAS_SIM, size, 0, 1);
	void **voff, **von;
	size_t noff, non, i, ps = 4096;
	kas_stats_t st, st_off;

	REQUIRE(off != NULL && on != NULL);
	noff = fill_heap(off, &voff);
	non = fill_heap(on, &von);
	kas_settle_metadata(on);
	kas_get_stats(on, &st);
	kas_get_stats(off, &st_off);
	CHECK_EQ(noff, size / ps);
	CHECK(st.meta_bytes[KAS_META_TAGS] > 0);
	CHECK(st_off.meta_bytes[KAS_META_TAGS] > 0); /* counted, not charged */
	CHECK_EQ(st_off.meta_pages_total, 0);
	CHECK(st.meta_pages_total > 0);
	/* The heap is short exactly the charged pages. */
	CHECK_EQ(noff - non, st.meta_pages_total);
	CHECK_EQ(st.meta_heap_bytes, st.meta_pages_total * ps);
	CHECK_EQ(st.heap_inuse, st.heap_size);
	/* Per kind, charged pages are the bytes rounded up to pages... */
	CHECK_EQ(st.meta_pages[KAS_META_TAGS] + st.meta_pages_unsettled,
	    (st.meta_bytes[KAS_META_TAGS] + ps - 1) / ps);
	printf("  %zu-MiB sim heap: %zu pages without charging, %zu with; "
	    "tags %zu bytes -> %zu pages (%zu unsettled)\n", size / MIB, noff,
	    non, st.meta_bytes[KAS_META_TAGS], st.meta_pages_total,
	    st.meta_pages_unsettled);
	for (i = 0; i < non; i++)
		segkmem_free(kas_heap_arena(on), von[i], ps);
	for (i = 0; i < noff; i++)
		segkmem_free(kas_heap_arena(off), voff[i], ps);
	kas_settle_metadata(on);
	kas_get_stats(on, &st);
	CHECK_EQ(st.meta_pages_unsettled, 0);
	CHECK_EQ(st.heap_inuse, st.meta_pages_total * ps);
	CHECK_EQ(st.pages_committed, st.meta_pages_total);
	free(von);
	free(voff);
	kas_destroy(on);
	kas_destroy(off);
}

static void
test_metadata_kinds(void)
{
	kas_t *kas = make_kas(KAS_SIM, 16 * MIB, 0, 1);
	kas_stats_t before, st;

	REQUIRE(kas != NULL);
	kas_settle_metadata(kas);
	kas_get_stats(kas, &before);
	CHECK_EQ(before.meta_pages_unsettled, 0);
	CHECK_EQ(before.heap_inuse, before.meta_pages_total * 4096);
	CHECK_EQ(before.meta_pages[KAS_META_SEGKP], 0);
	kas_charge_metadata(kas, KAS_META_SEGKP, 10000);
	kas_get_stats(kas, &st);
	CHECK_EQ(st.meta_pages[KAS_META_SEGKP], 0); /* not settled yet */
	kas_settle_metadata(kas);
	kas_get_stats(kas, &st);
	CHECK_EQ(st.meta_bytes[KAS_META_SEGKP], 10000);
	CHECK_EQ(st.meta_pages[KAS_META_SEGKP], 3);
	CHECK_EQ(st.heap_inuse, st.meta_pages_total * 4096);
	kas_charge_kmem_cb(kas, 4097);
	kas_settle_metadata(kas);
	kas_get_stats(kas, &st);
	CHECK_EQ(st.meta_bytes[KAS_META_KMEM],
	    before.meta_bytes[KAS_META_KMEM] + 4097);
	CHECK_EQ(st.meta_pages[KAS_META_KMEM],
	    (before.meta_bytes[KAS_META_KMEM] + 4097 + 4095) / 4096);
	kas_charge_metadata(kas, KAS_META_SEGKP, -10000);
	kas_charge_kmem_cb(kas, -4097);
	kas_settle_metadata(kas);
	kas_get_stats(kas, &st);
	CHECK_EQ(st.meta_pages[KAS_META_SEGKP], 0);
	CHECK_EQ(st.meta_pages[KAS_META_KMEM],
	    before.meta_pages[KAS_META_KMEM]);
	/* Tags may differ a little (vmem keeps a reserve); still exact. */
	CHECK_EQ(st.heap_inuse, st.meta_pages_total * 4096);
	CHECK_EQ(st.meta_pages_unsettled, 0);
	kas_destroy(kas);
}

static void
test_two_kas_at_once(void)
{
	kas_t *a = make_kas(KAS_SIM, 16 * MIB, 1000, 1);
	kas_t *b = make_kas(KAS_SIM, 16 * MIB, 1000, 1);
	kas_t *r = make_kas(KAS_REAL, 16 * MIB, 1000, 0);
	void *pa, *pb, *pr;
	kas_stats_t sa, sb, sr;

	REQUIRE(a != NULL && b != NULL && r != NULL);
	/* Two simulated spaces may use the very same addresses. */
	CHECK_EQ(kas_base(a), kas_base(b));
	CHECK(kas_of_arena(kas_heap_arena(a)) == a);
	CHECK(kas_of_arena(kas_heap_arena(b)) == b);
	CHECK(kas_of_arena(kas_kmem_default(r)) == r);
	/* kmem_default imports through segkmem_alloc from kmem_va. */
	pa = vmem_alloc(kas_kmem_default(a), 10 * 4096, VM_SLEEP);
	pb = vmem_alloc(kas_kmem_default(b), 20 * 4096, VM_SLEEP);
	pr = vmem_alloc(kas_kmem_default(r), 30 * kas_pagesize(r), VM_SLEEP);
	REQUIRE(pa != NULL && pb != NULL && pr != NULL);
	memset(pr, 7, 30 * kas_pagesize(r));
	kas_get_stats(a, &sa);
	kas_get_stats(b, &sb);
	kas_get_stats(r, &sr);
	CHECK_EQ(sa.pages_reserved, 10 + sa.meta_pages_total);
	CHECK_EQ(sb.pages_reserved, 20 + sb.meta_pages_total);
	CHECK_EQ(sr.pages_reserved, 30);
	CHECK_EQ(sa.availrmem, 1000 - sa.pages_reserved);
	vmem_free(kas_kmem_default(a), pa, 10 * 4096);
	vmem_free(kas_kmem_default(b), pb, 20 * 4096);
	vmem_free(kas_kmem_default(r), pr, 30 * kas_pagesize(r));
	kas_get_stats(r, &sr);
	CHECK_EQ(sr.pages_reserved, 0);
	CHECK_EQ(resident_pages(pr, 30 * kas_pagesize(r)), 0);
	kas_destroy(a);
	kas_get_stats(b, &sb);
	CHECK_EQ(sb.pages_reserved, sb.meta_pages_total);
	kas_destroy(b);
	kas_destroy(r);
}

static kas_fault_t
fake_segkp(void *arg, uintptr_t addr, char *buf, size_t len)
{
	uintptr_t redzone = *(uintptr_t *)arg;

	if (addr >= redzone && addr < redzone + 4096) {
		snprintf(buf, len, "segkp: accessing redzone");
		return KAS_FAULT_REDZONE;
	}
	return KAS_FAULT_NONE;
}

static void
test_classify(void)
{
	kas_config_t cfg;
	kas_t *kas;
	char buf[160];
	uintptr_t redzone;
	void *mem, *va;
	kas_stats_t st;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.sim_base = 0xD0000000u;
	cfg.size = 64 * MIB;
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);
	CHECK_EQ(kas_register_region(kas, "kernel text", 0xFE800000u,
	    0xFF800000u), 0);
	mem = vmem_alloc(kas_kmem_default(kas), 2 * 4096, VM_SLEEP);
	va = vmem_alloc(kas_heap_arena(kas), 4 * 4096, VM_SLEEP);
	REQUIRE(mem != NULL && va != NULL);

	CHECK_EQ(kas_fault(kas, (uintptr_t)mem + 4100, buf, sizeof (buf)),
	    KAS_FAULT_VALID);
	CHECK(strstr(buf, "heap_arena > kmem_va > kmem_default") != NULL);
	CHECK_EQ(kas_fault(kas, (uintptr_t)va, buf, sizeof (buf)),
	    KAS_FAULT_UNBACKED);
	CHECK(strstr(buf, "heap_arena: allocated, not committed") != NULL);
	CHECK_EQ(kas_fault(kas, 0xD0000000u + 60 * MIB, buf, sizeof (buf)),
	    KAS_FAULT_FREE);
	CHECK_EQ(kas_fault(kas, 0xFE900000u, buf, sizeof (buf)),
	    KAS_FAULT_REGION);
	CHECK(strcmp(buf, "kernel text") == 0);
	CHECK_EQ(kas_fault(kas, 0x1000, buf, sizeof (buf)), KAS_FAULT_OUTSIDE);

	redzone = (uintptr_t)va;
	CHECK_EQ(kas_register_fault_classifier(kas, fake_segkp, &redzone), 0);
	CHECK_EQ(kas_fault(kas, redzone + 10, buf, sizeof (buf)),
	    KAS_FAULT_REDZONE);
	CHECK(strstr(buf, "redzone") != NULL);
	CHECK_EQ(kas_classify(kas, redzone + 4096, NULL, 0),
	    KAS_FAULT_UNBACKED);
	kas_unregister_fault_classifier(kas, fake_segkp, &redzone);
	CHECK_EQ(kas_classify(kas, redzone, NULL, 0), KAS_FAULT_UNBACKED);

	kas_get_stats(kas, &st);
	CHECK_EQ(st.faults, 6);
	CHECK_EQ(st.faults_by_kind[KAS_FAULT_VALID], 1);
	CHECK_EQ(st.faults_by_kind[KAS_FAULT_REDZONE], 1);
	CHECK_EQ(st.faults_by_kind[KAS_FAULT_OUTSIDE], 1);
	CHECK_EQ(strcmp(kas_fault_name(KAS_FAULT_UNBACKED), "unbacked"), 0);
	vmem_free(kas_kmem_default(kas), mem, 2 * 4096);
	vmem_free(kas_heap_arena(kas), va, 4 * 4096);
	kas_destroy(kas);
}

static void
test_bad_input(void)
{
	kas_config_t cfg;
	kas_t *kas;
	vmem_t *loose;
	void *p;
	size_t ps;

	tu_record_errors();
	kas_config_init(&cfg);
	cfg.size = 12345;
	CHECK(kas_create(&cfg) == NULL);
	CHECK_EQ(tu_err.code, SEGKMEM_E_BADCONFIG);
	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.sim_base = 0;
	CHECK(kas_create(&cfg) == NULL);
	CHECK_EQ(tu_err.code, SEGKMEM_E_BADCONFIG);
	kas_config_init(&cfg);
	cfg.nheap_spans = 2;
	cfg.heap_spans[0].start = 0;
	cfg.heap_spans[0].end = 2 * MIB;
	cfg.heap_spans[1].start = 1 * MIB;
	cfg.heap_spans[1].end = 3 * MIB;
	CHECK(kas_create(&cfg) == NULL);
	CHECK_EQ(tu_err.code, SEGKMEM_E_BADCONFIG);
	CHECK(strstr(tu_err.line, "disjoint") != NULL);
	tu_reset_errors();

	kas = make_kas(KAS_REAL, 8 * MIB, 0, 0);
	REQUIRE(kas != NULL);
	ps = kas_pagesize(kas);

	loose = vmem_create("loose", (void *)0x10000, 0x10000, 4096, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	REQUIRE(loose != NULL);
	CHECK(kas_of_arena(loose) == NULL);
	CHECK(segkmem_alloc(loose, 4096, VM_SLEEP) == NULL);
	CHECK_EQ(tu_err.code, SEGKMEM_E_NOTKAS);
	CHECK_EQ(vmem_size(loose, VMEM_ALLOC), 0);
	vmem_destroy(loose);

	CHECK(segkmem_alloc(kas_heap_arena(kas), ps + 1, VM_SLEEP) == NULL);
	CHECK_EQ(tu_err.code, SEGKMEM_E_BADRANGE);

	p = segkmem_alloc(kas_heap_arena(kas), 2 * ps, VM_SLEEP);
	REQUIRE(p != NULL);
	tu_reset_errors();
	CHECK_EQ(kas_pages_commit(kas, (char *)p + 1, ps, 0), -1);
	CHECK_EQ(tu_err.code, SEGKMEM_E_BADRANGE);
	CHECK_EQ(kas_pages_commit(kas, (void *)(kas_base(kas) +
	    kas_size(kas)), ps, 0), -1);
	CHECK_EQ(tu_err.code, SEGKMEM_E_BADRANGE);
	CHECK_EQ(tu_err.count, 2);
	segkmem_free(kas_heap_arena(kas), p, 2 * ps);
	CHECK_EQ(tu_err.count, 2);
	/* Freed twice: refused before any page is touched. */
	segkmem_free(kas_heap_arena(kas), p, 2 * ps);
	CHECK_EQ(tu_err.code, VMEM_E_BADFREE);
	CHECK_EQ(tu_err.count, 3);
	CHECK_EQ(kas_availrmem(kas), kas_physmem(kas));

	kas_page_unresv(kas, 1);
	CHECK_EQ(tu_err.code, SEGKMEM_E_UNRESV);
	CHECK_EQ(kas_availrmem(kas), kas_physmem(kas));
	CHECK(strstr(tu_err.line, "kas_page_unresv") != NULL);
	CHECK_EQ(strcmp(tu_err.name, "realkas"), 0);

	/* Destroy with pages still in use: a warning, then it goes on. */
	CHECK_EQ(kas_pages_commit(kas, (void *)kas_base(kas), ps, 0), 0);
	CHECK_EQ(kas_page_resv(kas, 1, VM_SLEEP), 1);
	tu_reset_errors();
	kas_destroy(kas);
	CHECK_EQ(tu_err.code, SEGKMEM_E_BUSY);
	CHECK(tu_err.warning);
	tu_default_errors();
}

/*
 * mlock beyond RLIMIT_MEMLOCK fails cleanly. Root bypasses the limit with
 * CAP_IPC_LOCK, so the check runs in a child that drops it.
 */
static int
drop_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data) != 0)
		return -1;
	data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
	return (int)syscall(SYS_capset, &hdr, data);
}

static int
lock_limit_child(void)
{
	struct rlimit rl = { 64 * 1024, 64 * 1024 };
	kas_t *kas;
	char *p;
	size_t ps;
	kas_stats_t st;
	int bad = 0;

	if (geteuid() == 0 && drop_ipc_lock() != 0)
		return 2;
	if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0)
		return 2;
	kas = make_kas(KAS_REAL, 8 * MIB, 0, 0);
	if (kas == NULL)
		return 3;
	ps = kas_pagesize(kas);
	p = vmem_alloc(kas_heap_arena(kas), 1 * MIB, VM_SLEEP);
	bad |= kas_pages_commit(kas, p, 4 * ps, KAS_COMMIT_LOCK) != 0;
	bad |= kas_pages_commit(kas, p + 16 * ps, 1 * MIB - 16 * ps,
	    KAS_COMMIT_LOCK) != -1;
	/* Nothing of the failed range stays committed. */
	bad |= kas_page_is_committed(kas, p + 16 * ps);
	bad |= kas_pages_commit(kas, p + 16 * ps, 1 * MIB - 16 * ps, 0) != 0;
	bad |= kas_pages_lock(kas, p + 16 * ps, 1 * MIB - 16 * ps) != -1;
	kas_get_stats(kas, &st);
	bad |= st.lock_fail != 2;
	bad |= st.pages_locked != 4;
	bad |= st.pages_committed != 4 + 1 * MIB / ps - 16;
	memset(p, 1, 4 * ps);
	memset(p + 16 * ps, 1, 1 * MIB - 16 * ps);
	kas_pages_unlock(kas, p, 4 * ps);
	kas_get_stats(kas, &st);
	bad |= st.pages_locked != 0;
	kas_pages_decommit(kas, p, 1 * MIB);
	vmem_free(kas_heap_arena(kas), p, 1 * MIB);
	kas_destroy(kas);
	return bad ? 1 : 0;
}

static void
test_lock_limit_fails_cleanly(void)
{
	pid_t pid;
	int status = 0;

	if (!tu_mlock_works()) {
		printf("  skipped: mlock is a no-op under the sanitizer\n");
		return;
	}
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(lock_limit_child());
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	CHECK_EQ(WEXITSTATUS(status), 0);
}

/* Decommitting a locked range drops the lock (one mmap). */
static void
test_decommit_drops_lock(void)
{
	kas_t *kas = make_kas(KAS_REAL, 8 * MIB, 0, 0);
	char *p;
	size_t ps;
	kas_stats_t st;

	REQUIRE(kas != NULL);
	ps = kas_pagesize(kas);
	p = vmem_alloc(kas_heap_arena(kas), 4 * ps, VM_SLEEP);
	REQUIRE(p != NULL);
	CHECK_EQ(kas_pages_commit(kas, p, 4 * ps, KAS_COMMIT_LOCK), 0);
	if (tu_mlock_works()) /* locking faults the pages in */
		CHECK_EQ(resident_pages(p, 4 * ps),
		    4 * ps / (size_t)sysconf(_SC_PAGESIZE));
	memset(p, 2, 4 * ps);
	kas_get_stats(kas, &st);
	CHECK_EQ(st.pages_locked, 4);
	kas_pages_decommit(kas, p, 4 * ps);
	CHECK_EQ(resident_pages(p, 4 * ps), 0);
	kas_get_stats(kas, &st);
	CHECK_EQ(st.pages_locked, 0);
	CHECK_EQ(st.pages_committed, 0);
	vmem_free(kas_heap_arena(kas), p, 4 * ps);
	kas_destroy(kas);
}

static void
collect_line(void *arg, const char *line)
{
	size_t *n = arg;

	if (strchr(line, '\n') == line + strlen(line) - 1)
		(*n)++;
}

static void
test_stats_printer(void)
{
	kas_t *kas = make_kas(KAS_SIM, 16 * MIB, 0, 1);
	size_t lines = 0;

	REQUIRE(kas != NULL);
	kas_dump_stats(kas, collect_line, &lines);
	CHECK_EQ(lines, 6 + KAS_META_NKINDS);
	kas_print_stats(kas, NULL);
	kas_destroy(kas);
}

int
main(void)
{
	RUN(test_defaults);
	RUN(test_real_residency_follows_use);
	RUN(test_memory_backed_arena);
	RUN(test_sim_backing);
	RUN(test_heap_spans);
	RUN(test_budget_nosleep);
	RUN(test_metadata_shortfall_to_the_page);
	RUN(test_metadata_kinds);
	RUN(test_two_kas_at_once);
	RUN(test_classify);
	RUN(test_bad_input);
	RUN(test_lock_limit_fails_cleanly);
	RUN(test_decommit_drops_lock);
	RUN(test_stats_printer);
	return tu_finish();
}
