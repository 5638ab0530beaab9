/*
 * segkp: both placements on both backings, flags, misuse, stack caches,
 * reaping, lookup and classification, a randomized run with a checker of
 * the heap bitmap against the live allocations after every step, and the
 * founding claim (a fixed segment refuses stacks while the heap still has
 * room; a segment importing from the heap keeps going).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmem/segkp.h>

#include "segkp_impl.h"
#include "testutil.h"

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)
#define STD_FLAGS (KPD_HASREDZONE | KPD_ZERO)

/* A kas of size bytes whose heap leaves the first fixed_bytes to segkp. */
static kas_t *
make_kas(kas_backing_t backing, size_t size, size_t fixed_bytes)
{
	kas_config_t cfg;
	kas_t *kas;

	kas_config_init(&cfg);
	cfg.backing = backing;
	cfg.size = size;
	cfg.name = backing == KAS_REAL ? "real" : "sim";
	if (fixed_bytes != 0) {
		cfg.nheap_spans = 1;
		cfg.heap_spans[0].start = fixed_bytes;
		cfg.heap_spans[0].end = size;
	}
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);
	return kas;
}

/* A segment in the given placement; fixed ones get the first 4 MiB. */
static segkp_t *
make_seg(kas_t *kas, segkp_placement_t pl)
{
	segkp_t *seg;

	if (pl == SEGKP_FIXED)
		seg = segkp_create(kas, SEGKP_FIXED, (void *)kas_base(kas),
		    4 * MIB);
	else
		seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
	REQUIRE(seg != NULL);
	return seg;
}

typedef struct setup {
	kas_backing_t backing;
	segkp_placement_t placement;
	const char *name;
} setup_t;

static const setup_t setups[] = {
	{ KAS_REAL, SEGKP_FIXED, "real/fixed" },
	{ KAS_REAL, SEGKP_FROMHEAP, "real/fromheap" },
	{ KAS_SIM, SEGKP_FIXED, "sim/fixed" },
	{ KAS_SIM, SEGKP_FROMHEAP, "sim/fromheap" },
};
#define NSETUPS (sizeof (setups) / sizeof (setups[0]))

static segkp_t *
open_setup(const setup_t *s, kas_t **kasp)
{
	*kasp = make_kas(s->backing, 64 * MIB,
	    s->placement == SEGKP_FIXED ? 4 * MIB : 0);
	return make_seg(*kasp, s->placement);
}

static void
close_setup(kas_t *kas, segkp_t *seg)
{
	CHECK(segkp_check(seg) == 0);
	segkp_destroy(seg);
	kas_destroy(kas);
}

/* ------------------------------------------------------------------ */

static void
test_get_release_every_setup(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		char *a = segkp_get(seg, 2 * ps, STD_FLAGS);
		char *b = segkp_get(seg, 3 * ps, 0);
		segkp_info_t in;
		segkp_stats_t st;

		REQUIRE(a != NULL && b != NULL);
		CHECK(segkp_find(seg, a, &in) == 1);
		CHECK_EQ(in.addr, (uintptr_t)a);
		CHECK_EQ(in.base, (uintptr_t)a - ps);
		CHECK_EQ(in.size, 3 * ps);
		CHECK_EQ(in.redzone, ps);
		CHECK(segkp_find(seg, a - 1, &in) == 1);  /* the redzone */
		CHECK(segkp_find(seg, a + 2 * ps - 1, &in) == 1);
		CHECK_EQ(in.addr, (uintptr_t)a);
		CHECK(segkp_find(seg, b, &in) == 1 && in.redzone == 0);
		CHECK(segkp_page_held(seg, a - ps));
		/* The redzone is never committed, the stack is. */
		CHECK(!kas_page_is_committed(kas, a - ps));
		CHECK(kas_page_is_committed(kas, a));
		CHECK(kas_page_is_committed(kas, a + ps));
		if (setups[i].backing == KAS_REAL) {
			for (size_t k = 0; k < 2 * ps; k++)
				CHECK(a[k] == 0);
			memset(a, 0x5a, 2 * ps);
			memset(b, 0x5a, 3 * ps);
		}
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.inuse, 2);
		CHECK_EQ(st.pages_committed, 5);
		CHECK_EQ(st.redzone_pages, 1);
		CHECK_EQ(st.va_allocated, 6 * ps);
		CHECK_EQ(st.placement, setups[i].placement);
		if (setups[i].placement == SEGKP_FIXED)
			CHECK_EQ(st.va_held, 4 * MIB);
		else
			CHECK(st.va_held >= 6 * ps);
		CHECK(st.meta_bytes > 0);
		CHECK(segkp_check(seg) == 0);
		segkp_release(seg, a);
		segkp_release(seg, b);
		CHECK(segkp_find(seg, a, NULL) == 0);
		CHECK(!segkp_page_held(seg, a - ps));
		CHECK(!kas_page_is_committed(kas, a));
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.inuse, 0);
		CHECK_EQ(st.pages_committed, 0);
		CHECK_EQ(st.gets, 2);
		CHECK_EQ(st.releases, 2);
		/* Quantum caches may keep slabs until reaped. */
		segkp_cache_free_seg(seg);
		segkp_get_stats(seg, &st);
		if (setups[i].placement == SEGKP_FROMHEAP)
			CHECK_EQ(st.va_held, 0);
		close_setup(kas, seg);
	}
}

/* KPD_ZERO: a fresh allocation on real memory is zero-filled. */
static void
test_zero_after_reuse(void)
{
	kas_t *kas = make_kas(KAS_REAL, 16 * MIB, 0);
	segkp_t *seg = make_seg(kas, SEGKP_FROMHEAP);
	size_t ps = segkp_pagesize(seg);

	for (int round = 0; round < 20; round++) {
		unsigned char *p = segkp_get(seg, 2 * ps, KPD_ZERO);
		size_t nonzero = 0;

		REQUIRE(p != NULL);
		for (size_t k = 0; k < 2 * ps; k++)
			nonzero += p[k] != 0;
		CHECK_EQ(nonzero, 0);
		memset(p, 0xff, 2 * ps);
		segkp_release(seg, p);
	}
	close_setup(kas, seg);
}

/* Several redzone pages against stack clash. */
static void
test_stack_clash_redzone(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		char *p = segkp_get(seg, 4 * ps,
		    KPD_HASREDZONE | KPD_REDZONE_PAGES(4));
		segkp_info_t in;

		REQUIRE(p != NULL);
		CHECK(segkp_find(seg, p, &in) == 1);
		CHECK_EQ(in.redzone, 4 * ps);
		CHECK_EQ(in.base, (uintptr_t)p - 4 * ps);
		for (size_t k = 1; k <= 4; k++) {
			CHECK_EQ(segkp_classify(seg, p - k * ps + 8, NULL),
			    SEGKP_FAULT_REDZONE);
			CHECK(!kas_page_is_committed(kas, p - k * ps));
		}
		CHECK_EQ(segkp_classify(seg, p, NULL), SEGKP_FAULT_MAPPED);
		segkp_release(seg, p);
		close_setup(kas, seg);
	}
}

static void
test_classify_and_kas_classifier(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		char *p = segkp_get(seg, 2 * ps, KPD_HASREDZONE);
		char buf[160];
		segkp_info_t in;

		REQUIRE(p != NULL);
		/* Fixed segments have no source: found by private pointer. */
		CHECK(kas_of_arena(segkp_arena(seg)) == kas);
		CHECK_EQ(segkp_classify(seg, p - 1, &in), SEGKP_FAULT_REDZONE);
		CHECK_EQ(in.addr, (uintptr_t)p);
		CHECK_EQ(segkp_describe(seg, p - 1, buf, sizeof (buf)),
		    SEGKP_FAULT_REDZONE);
		CHECK(strstr(buf, "redzone of stack [0x") != NULL);
		CHECK_EQ(segkp_classify(seg, p + ps, NULL),
		    SEGKP_FAULT_MAPPED);
		CHECK_EQ(kas_classify(kas, (uintptr_t)p - 1, buf,
		    sizeof (buf)), KAS_FAULT_REDZONE);
		CHECK(strstr(buf, "redzone") != NULL);
		CHECK_EQ(kas_classify(kas, (uintptr_t)p, buf, sizeof (buf)),
		    KAS_FAULT_VALID);
		if (setups[i].placement == SEGKP_FIXED) {
			/* In the fixed range, outside every allocation. */
			char *far = (char *)kas_base(kas) + 4 * MIB - ps;

			CHECK_EQ(segkp_classify(seg, far, NULL),
			    SEGKP_FAULT_NOMAPPING);
			CHECK_EQ(kas_classify(kas, (uintptr_t)far, NULL, 0),
			    KAS_FAULT_FREE);
		}
		/* A heap page segkp does not hold is not segkp's. */
		{
			void *h = vmem_alloc(kas_heap_arena(kas), ps,
			    VM_NOSLEEP);

			REQUIRE(h != NULL);
			CHECK_EQ(segkp_classify(seg, h, NULL),
			    SEGKP_FAULT_NOTSEGKP);
			CHECK(!segkp_page_held(seg, h));
			vmem_free(kas_heap_arena(kas), h, ps);
		}
		segkp_release(seg, p);
		CHECK(segkp_classify(seg, p - 1, NULL) != SEGKP_FAULT_REDZONE);
		close_setup(kas, seg);
	}
}

/*
 * Segments of one address space share one classifier slot of its table
 * (8 entries, also the users'): twenty segments all classify their
 * redzones, and with the last one gone the slot is free again. A table
 * the user filled makes segkp_create fail cleanly, reported.
 */
static void
test_many_segments_one_classifier(void)
{
	enum { NSEG = 20 };
	kas_t *kas = make_kas(KAS_SIM, 256 * MIB, 64 * MIB);
	segkp_t *segs[NSEG];
	char *stacks[NSEG];
	size_t heap_before;
	int registered = 0;

	for (int i = 0; i < NSEG; i++) {
		segs[i] = i % 2 ? segkp_create(kas, SEGKP_FROMHEAP, NULL, 0) :
		    segkp_create(kas, SEGKP_FIXED,
		    (void *)(kas_base(kas) + (size_t)i * 2 * MIB), 2 * MIB);
		REQUIRE(segs[i] != NULL);
		stacks[i] = segkp_get(segs[i], 2 * segkp_pagesize(segs[i]),
		    KPD_HASREDZONE);
		REQUIRE(stacks[i] != NULL);
	}
	for (int i = 0; i < NSEG; i++)
		CHECK_EQ(kas_classify(kas, (uintptr_t)stacks[i] - 1, NULL, 0),
		    KAS_FAULT_REDZONE);
	/* segkp holds one slot: seven remain for the user. */
	tu_record_errors();
	while (registered < 16 && kas_register_fault_classifier(kas,
	    tu_classify_nothing, (void *)(intptr_t)registered) == 0)
		registered++;
	CHECK_EQ(registered, 7);
	CHECK_EQ(tu_err.code, SEGKMEM_E_TABLEFULL);
	for (int i = 0; i < NSEG; i++) {
		segkp_release(segs[i], stacks[i]);
		segkp_destroy(segs[i]);
	}
	/* The last segment gave its slot back: the user takes it. */
	CHECK_EQ(kas_register_fault_classifier(kas, tu_classify_nothing,
	    (void *)(intptr_t)registered), 0);
	registered++;
	/* A full table: the first segment cannot register, and fails. */
	heap_before = vmem_size(kas_heap_arena(kas), VMEM_ALLOC);
	tu_err.count = 0;
	CHECK(segkp_create(kas, SEGKP_FROMHEAP, NULL, 0) == NULL);
	CHECK(segkp_create(kas, SEGKP_FIXED, NULL, 2 * MIB) == NULL);
	CHECK_EQ(tu_err.count, 2);
	CHECK_EQ(tu_err.code, SEGKMEM_E_TABLEFULL);
	CHECK(vmem_size(kas_heap_arena(kas), VMEM_ALLOC) <= heap_before);
	CHECK(vmem_check(kas_heap_arena(kas)) == 0);
	tu_default_errors();
	while (registered > 0)
		kas_unregister_fault_classifier(kas, tu_classify_nothing,
		    (void *)(intptr_t)--registered);
	kas_destroy(kas);
}

/* ------------------------------------------------------------------ */
/* Misuse: reported, refused, nothing changed. */

static void
snapshot(segkp_t *seg, segkp_stats_t *st)
{
	segkp_get_stats(seg, st);
}

static int
same_state(segkp_t *seg, const segkp_stats_t *before)
{
	segkp_stats_t now;

	segkp_get_stats(seg, &now);
	return now.inuse == before->inuse && now.cached == before->cached &&
	    now.va_allocated == before->va_allocated &&
	    now.pages_committed == before->pages_committed &&
	    now.gets == before->gets && now.releases == before->releases &&
	    segkp_check(seg) == 0;
}

static void
test_misuse(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		void *cookie = segkp_cache_init(seg, 2, 2 * ps, KPD_HASREDZONE);
		char *p = segkp_get(seg, 2 * ps, KPD_HASREDZONE);
		char *q = segkp_cache_get(cookie);
		char *gone = segkp_get(seg, ps, 0);
		segkp_stats_t before;

		REQUIRE(cookie != NULL && p != NULL && q != NULL && gone);
		segkp_release(seg, gone);
		snapshot(seg, &before);
		tu_record_errors();

		CHECK(segkp_get(seg, ps + 1, 0) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADLEN);
		CHECK(segkp_get(seg, 0, 0) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADLEN);
		CHECK(strcmp(tu_err.call, "segkp_get") == 0);
		CHECK(segkp_get(seg, ps, KPD_NO_ANON) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADFLAGS);
		CHECK(strstr(tu_err.line, "KPD_NO_ANON") != NULL);
		CHECK(segkp_get(seg, ps, 0x4000) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADFLAGS);
		CHECK(segkp_cache_init(seg, 4, 3 * ps + 7, 0) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADLEN);

		/* An address inside an allocation, not its start. */
		segkp_release(seg, p + ps);
		CHECK_EQ(tu_err.code, SEGKP_E_NOTOWNED);
		CHECK_EQ(tu_err.addr, (uintptr_t)(p + ps));
		segkp_release(seg, (void *)(kas_base(kas) + 40 * MIB));
		CHECK_EQ(tu_err.code, SEGKP_E_NOTOWNED);
		/* A double release, of an uncached allocation. */
		segkp_release(seg, gone);
		CHECK_EQ(tu_err.code, SEGKP_E_DOUBLE);
		/* Invalid cookies. */
		CHECK(segkp_cache_get((void *)0x1234) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADCOOKIE);
		CHECK(segkp_cache_get(NULL) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADCOOKIE);
		CHECK(segkp_cache_get((char *)cookie + 2) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADCOOKIE);
		CHECK_EQ(tu_err.count, 11);
		CHECK(same_state(seg, &before));

		/* A double release of a stack that went to its cache. */
		segkp_release(seg, q);
		tu_reset_errors();
		segkp_release(seg, q);
		CHECK_EQ(tu_err.code, SEGKP_E_DOUBLE);
		CHECK_EQ(tu_err.count, 1);
		snapshot(seg, &before);
		/* A destroyed cache's cookie is refused. */
		segkp_cache_destroy(cookie);
		tu_reset_errors();
		CHECK(segkp_cache_get(cookie) == NULL);
		CHECK_EQ(tu_err.code, SEGKP_E_BADCOOKIE);
		segkp_cache_destroy(cookie);
		CHECK_EQ(tu_err.code, SEGKP_E_BADCOOKIE);
		CHECK_EQ(tu_err.count, 2);
		tu_default_errors();
		segkp_release(seg, p);
		close_setup(kas, seg);
	}
}

static void
test_bad_create(void)
{
	kas_t *kas = make_kas(KAS_SIM, 64 * MIB, 4 * MIB);

	tu_record_errors();
	CHECK(segkp_create(kas, SEGKP_FIXED, (void *)(kas_base(kas) + 1),
	    MIB) == NULL);
	CHECK_EQ(tu_err.code, SEGKP_E_BADCONFIG);
	/* Overlaps the heap. */
	CHECK(segkp_create(kas, SEGKP_FIXED, (void *)(kas_base(kas) +
	    2 * MIB), 4 * MIB) == NULL);
	CHECK_EQ(tu_err.code, SEGKP_E_BADCONFIG);
	CHECK(strstr(tu_err.line, "heap") != NULL);
	CHECK(segkp_create(kas, SEGKP_FROMHEAP, NULL, MIB) == NULL);
	CHECK_EQ(tu_err.code, SEGKP_E_BADCONFIG);
	CHECK(segkp_create(NULL, SEGKP_FROMHEAP, NULL, 0) == NULL);
	CHECK_EQ(tu_err.count, 4);
	tu_default_errors();
	kas_destroy(kas);
}

/* A fixed segment taken from the heap at creation (base NULL). */
static void
test_fixed_carved_from_heap(void)
{
	kas_t *kas = make_kas(KAS_SIM, 64 * MIB, 0);
	vmem_t *heap = kas_heap_arena(kas);
	size_t before = vmem_size(heap, VMEM_ALLOC);
	segkp_t *seg = segkp_create(kas, SEGKP_FIXED, NULL, 8 * MIB);
	size_t ps = kas_pagesize(kas);
	void *p;

	REQUIRE(seg != NULL);
	CHECK(vmem_size(heap, VMEM_ALLOC) >= before + 8 * MIB);
	p = segkp_get(seg, 2 * ps, KPD_HASREDZONE);
	CHECK(p != NULL);
	CHECK(vmem_contains(segkp_arena(seg), p, 2 * ps));
	segkp_release(seg, p);
	segkp_destroy(seg);
	CHECK(vmem_size(heap, VMEM_ALLOC) < before + 8 * MIB);
	kas_destroy(kas);
}

/* ------------------------------------------------------------------ */
/* Stack caches. */

static void
test_cache_lifo_bounded(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		void *ck = segkp_cache_init(seg, 3, 2 * ps, KPD_HASREDZONE);
		void *s[5];
		segkp_stats_t st;

		REQUIRE(ck != NULL);
		for (int k = 0; k < 5; k++) {
			s[k] = segkp_cache_get(ck);
			REQUIRE(s[k] != NULL);
		}
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.cache_misses, 5);
		CHECK_EQ(st.cache_hits, 0);
		for (int k = 0; k < 5; k++)
			segkp_release(seg, s[k]);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.cached, 3);       /* bounded */
		CHECK_EQ(st.cache_full, 2);
		CHECK_EQ(st.releases, 2);
		CHECK_EQ(st.pages_committed, 6); /* pages kept */
		/* LIFO: the last one released comes back first. */
		CHECK(segkp_cache_get(ck) == s[2]);
		CHECK(segkp_cache_get(ck) == s[1]);
		segkp_release(seg, s[1]);
		CHECK(segkp_cache_get(ck) == s[1]);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.cache_hits, 3);
		if (setups[i].backing == KAS_REAL)
			memset(s[1], 1, 2 * ps); /* still mapped */
		segkp_release(seg, s[1]);
		segkp_release(seg, s[2]);
		CHECK(segkp_check(seg) == 0);
		/* segkp_cache_free empties the cache; it stays usable. */
		segkp_cache_free_seg(seg);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.cached, 0);
		CHECK_EQ(st.inuse, 0);
		CHECK_EQ(st.pages_committed, 0);
		s[0] = segkp_cache_get(ck);
		CHECK(s[0] != NULL);
		segkp_release(seg, s[0]);
		segkp_cache_free();
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.cached, 0);
		close_setup(kas, seg);
	}
}

/* Reap: the pages of long-idle cached stacks go, the address space stays. */
/*
 * Locked stacks idle in a cache hold the whole page budget: a blocking
 * locked get must get their pages back before it sleeps (it used to
 * sleep for ever; segkp_cache_reap(IDLE) could not help, the stacks had
 * not been idle through an interval). The alarm turns a hang into a
 * failure.
 */
static void
test_blocking_get_reclaims_cached_stacks(void)
{
	for (int b = 0; b < 2; b++) {
		kas_config_t cfg;
		kas_t *kas;
		segkp_t *seg;
		void *cookie, *v[16], *p;
		size_t len = 4 * 4096;

		kas_config_init(&cfg);
		cfg.backing = b ? KAS_SIM : KAS_REAL;
		cfg.size = 64 * MIB;
		cfg.physmem_pages = 64;
		kas = kas_create(&cfg);
		REQUIRE(kas != NULL);
		seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
		REQUIRE(seg != NULL);
		int n = 0;

		cookie = segkp_cache_init(seg, 32, len,
		    KPD_HASREDZONE | KPD_LOCKED | KPD_NOWAIT);
		REQUIRE(cookie != NULL);
		while (n < 16 && (v[n] = segkp_cache_get(cookie)) != NULL)
			n++;
		CHECK(n >= 8);
		for (int i = 0; i < n; i++)
			segkp_release(seg, v[i]);
		CHECK(kas_availrmem(kas) < len / 4096);
		CHECK(segkp_get(seg, len, KPD_HASREDZONE | KPD_LOCKED |
		    KPD_NOWAIT) == NULL);
		alarm(30);
		p = segkp_get(seg, len, KPD_HASREDZONE | KPD_LOCKED);
		alarm(0);
		CHECK(p != NULL);
		if (p != NULL)
			segkp_release(seg, p);
		CHECK(segkp_check(seg) == 0);
		segkp_cache_destroy(cookie);
		segkp_destroy(seg);
		kas_destroy(kas);
	}
}

static void
test_cache_reap(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		void *ck = segkp_cache_init(seg, 8, 2 * ps, KPD_HASREDZONE);
		char *s[8];
		segkp_stats_t st;
		size_t va;

		for (int k = 0; k < 8; k++)
			REQUIRE((s[k] = segkp_cache_get(ck)) != NULL);
		for (int k = 0; k < 8; k++)
			segkp_release(seg, s[k]);
		/* The first reap only starts the interval. */
		CHECK_EQ(segkp_cache_reap(seg, SEGKP_REAP_IDLE), 0);
		/* Use 3 of the 8 during this interval: 5 stay idle. */
		for (int k = 0; k < 3; k++)
			CHECK(segkp_cache_get(ck) == s[7 - k]);
		for (int k = 2; k >= 0; k--)
			segkp_release(seg, s[7 - k]);
		segkp_get_stats(seg, &st);
		va = st.va_allocated;
		CHECK_EQ(segkp_cache_reap(seg, SEGKP_REAP_IDLE), 5 * 2);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.pages_committed, 3 * 2);
		CHECK_EQ(st.cached, 8);
		CHECK_EQ(st.va_allocated, va);  /* address space kept */
		CHECK_EQ(st.reaped_pages, 10);
		CHECK(!kas_page_is_committed(kas, s[0]));
		CHECK(kas_page_is_committed(kas, s[7]));
		CHECK(segkp_check(seg) == 0);
		{
			segkp_info_t in;

			CHECK(segkp_find(seg, s[0], &in) == 1);
			CHECK(in.cached == 1 && in.resident == 0);
		}
		/* A reaped stack comes back with fresh pages when needed. */
		for (int k = 0; k < 8; k++)
			REQUIRE((s[k] = segkp_cache_get(ck)) != NULL);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.pages_committed, 16);
		if (setups[i].backing == KAS_REAL)
			for (int k = 0; k < 8; k++)
				memset(s[k], 7, 2 * ps);
		for (int k = 0; k < 8; k++)
			segkp_release(seg, s[k]);
		CHECK_EQ(segkp_cache_reap(seg, SEGKP_REAP_ALL), 16);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.pages_committed, 0);
		CHECK_EQ(st.cached, 8);
		CHECK(segkp_check(seg) == 0);
		close_setup(kas, seg);
	}
}

/*
 * What other threads can do while a reap works on stacks it took off
 * their cache's list with the lock dropped. The hook stands in for such a
 * thread, at the worst moment, every time.
 */
static struct {
	void *cookie;
	char *reaped[2];
	int calls;
	int checked_ok;
	segkp_stats_t st;
	segkp_info_t in;
	int found;
} window;

static void
in_reap_window(segkp_t *seg)
{
	char *a, *b;

	window.calls++;
	/* The stacks being reaped are neither on the list nor lost. */
	window.checked_ok = segkp_check(seg) == 0;
	segkp_get_stats(seg, &window.st);
	window.found = segkp_find(seg, window.reaped[0], &window.in);
	/* The list is empty now, so these are new stacks; releasing them
	 * must not push the cache past its capacity of 2, which the two
	 * stacks out being reaped still hold. */
	a = segkp_cache_get(window.cookie);
	b = segkp_cache_get(window.cookie);
	if (a != NULL)
		segkp_release(seg, a);
	if (b != NULL)
		segkp_release(seg, b);
}

static void
test_reap_window(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		segkp_stats_t st;

		memset(&window, 0, sizeof (window));
		window.cookie = segkp_cache_init(seg, 2, 2 * ps,
		    KPD_HASREDZONE);
		REQUIRE(window.cookie != NULL);
		for (int k = 0; k < 2; k++)
			REQUIRE((window.reaped[k] =
			    segkp_cache_get(window.cookie)) != NULL);
		for (int k = 0; k < 2; k++)
			segkp_release(seg, window.reaped[k]);

		/* A check that found corruption reports it: record, not
		 * abort, so every broken expectation below shows. */
		tu_record_errors();
		segkp_reap_window_hook = in_reap_window;
		CHECK_EQ(segkp_cache_reap(seg, SEGKP_REAP_ALL), 2 * 2);
		segkp_reap_window_hook = NULL;
		CHECK_EQ(tu_err.count, 0);
		tu_default_errors();

		CHECK_EQ(window.calls, 1);
		CHECK(window.checked_ok);
		CHECK_EQ(window.st.cached, 2);
		CHECK_EQ(window.st.inuse, 0);
		CHECK(window.found == 1 && window.in.cached == 1);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.cached, 2);          /* not 4 */
		CHECK_EQ(st.cache_full, 2);      /* both refused in the window */
		CHECK_EQ(st.inuse, 0);
		CHECK_EQ(st.gets, st.releases + st.inuse + st.cached);
		CHECK(segkp_check(seg) == 0);
		/* The reaped pair is back, at the bottom, pages given back. */
		for (int k = 0; k < 2; k++) {
			segkp_info_t in;

			CHECK(segkp_find(seg, window.reaped[k], &in) == 1);
			CHECK(in.cached == 1 && in.resident == 0);
		}
		close_setup(kas, seg);
	}
}


/*
 * fork() while another thread reaps: the stacks being reaped are detached
 * (on that thread's list only), and the child has no such thread. fork()
 * must wait for the reap, so the child finds them back in their cache,
 * their pages given back, and can free or use them. The hook holds the
 * reap in its window for 200 ms after telling the main thread to fork.
 */
static struct {
	_Atomic int in_window, window_done, forked;
} forkreap;

static void
fork_reap_window(segkp_t *seg)
{
	(void)seg;
	atomic_store(&forkreap.in_window, 1);
	nanosleep(&(struct timespec){ 0, 200 * 1000 * 1000 }, NULL);
	atomic_store(&forkreap.window_done, 1);
}

/* Lives until the parent has forked: a thread that ended unjoined before
 * the fork would be a leak in the child for TSan. */
static void *
reap_all(void *arg)
{
	segkp_cache_reap(arg, SEGKP_REAP_ALL);
	while (!atomic_load(&forkreap.forked))
		sched_yield();
	return NULL;
}

/* The child's side: exit status 0 when all is well, else the step. */
static int
child_after_fork_in_reap(segkp_t *seg, void *cookie, size_t ps, bool real)
{
	segkp_stats_t st;
	char *s[4];

	if (!atomic_load(&forkreap.window_done))
		return 1;               /* forked inside the window */
	segkp_get_stats(seg, &st);
	if (st.cached != 4 || st.pages_committed != 0 || segkp_check(seg))
		return 2;
	for (int k = 0; k < 4; k++) {   /* reaped stacks work again */
		if ((s[k] = segkp_cache_get(cookie)) == NULL)
			return 3;
		if (real)
			memset(s[k], 5, 2 * ps);
	}
	for (int k = 0; k < 4; k++)
		segkp_release(seg, s[k]);
	segkp_cache_free_seg(seg);
	segkp_get_stats(seg, &st);
	if (st.cached != 0 || st.inuse != 0 || segkp_check(seg))
		return 4;
	return 0;
}

static void
test_fork_during_reap(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		void *cookie = segkp_cache_init(seg, 4, 2 * ps, STD_FLAGS);
		char *s[4];
		pthread_t t;
		pid_t pid;
		int status = -1;

		REQUIRE(cookie != NULL);
		for (int k = 0; k < 4; k++)
			REQUIRE((s[k] = segkp_cache_get(cookie)) != NULL);
		for (int k = 0; k < 4; k++)
			segkp_release(seg, s[k]);
		memset(&forkreap, 0, sizeof (forkreap));
		segkp_reap_window_hook = fork_reap_window;
		REQUIRE(pthread_create(&t, NULL, reap_all, seg) == 0);
		while (!atomic_load(&forkreap.in_window))
			sched_yield();
		pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0)
			_exit(child_after_fork_in_reap(seg, cookie, ps,
			    setups[i].backing == KAS_REAL));
		atomic_store(&forkreap.forked, 1);
		REQUIRE(waitpid(pid, &status, 0) == pid);
		CHECK(WIFEXITED(status));
		CHECK_EQ(WEXITSTATUS(status), 0);
		REQUIRE(pthread_join(t, NULL) == 0);
		segkp_reap_window_hook = NULL;
		CHECK(segkp_check(seg) == 0);
		close_setup(kas, seg);
	}
}

/* fromheap: freed stacks and emptied caches give the heap its space back. */
static void
test_heap_gets_space_back(void)
{
	kas_backing_t b[2] = { KAS_REAL, KAS_SIM };

	for (int i = 0; i < 2; i++) {
		kas_t *kas = make_kas(b[i], 64 * MIB, 0);
		segkp_t *seg = make_seg(kas, SEGKP_FROMHEAP);
		vmem_t *heap = kas_heap_arena(kas);
		size_t ps = segkp_pagesize(seg);
		void *ck = segkp_cache_init(seg, 64, 2 * ps, KPD_HASREDZONE);
		size_t base_use, peak, meta_before;
		void *s[200];
		segkp_stats_t st;
		kas_stats_t ks;

		kas_settle_metadata(kas);
		base_use = vmem_size(heap, VMEM_ALLOC);
		kas_get_stats(kas, &ks);
		meta_before = ks.meta_pages_total;
		for (int k = 0; k < 200; k++)
			REQUIRE((s[k] = k % 2 ? segkp_cache_get(ck) :
			    segkp_get(seg, 4 * ps, KPD_HASREDZONE)) != NULL);
		peak = vmem_size(heap, VMEM_ALLOC);
		CHECK(peak >= base_use + 100 * 3 * ps + 100 * 5 * ps);
		for (int k = 0; k < 200; k++)
			segkp_release(seg, s[k]);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.cached, 64);
		CHECK(segkp_cache_reap(seg, SEGKP_REAP_ALL) == 64 * 2);
		/* Pages gone, address space still held by the cache. */
		CHECK(vmem_size(heap, VMEM_ALLOC) >= base_use + 64 * 3 * ps);
		segkp_cache_free_seg(seg);
		kas_settle_metadata(kas);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.va_held, 0);
		CHECK_EQ(vmem_size(segkp_arena(seg), VMEM_SPAN), 0);
		/* Only metadata that grew (segkp's hash) stays charged. */
		kas_get_stats(kas, &ks);
		CHECK_EQ(vmem_size(heap, VMEM_ALLOC), base_use +
		    (ks.meta_pages_total - meta_before) * ps);
		CHECK(ks.meta_pages_total - meta_before <= 1);
		close_setup(kas, seg);
	}
}

/* ------------------------------------------------------------------ */
/* KPD_LOCKED: page reservation, mlock, RLIMIT_MEMLOCK. */

static void
test_locked(void)
{
	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		size_t avail = kas_availrmem(kas);
		void *p = segkp_get(seg, 2 * ps,
		    KPD_HASREDZONE | KPD_LOCKED | KPD_NO_ANON);
		segkp_stats_t st;

		REQUIRE(p != NULL);
		CHECK_EQ(kas_availrmem(kas), avail - 2);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.pages_locked, 2);
		segkp_release(seg, p);
		CHECK_EQ(kas_availrmem(kas), avail);
		segkp_get_stats(seg, &st);
		CHECK_EQ(st.pages_locked, 0);
		close_setup(kas, seg);
	}
}

/* Root ignores RLIMIT_MEMLOCK unless it gives up CAP_IPC_LOCK. */
static int
drop_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3,
	    0 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data) != 0)
		return -1;
	data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
	data[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
	return (int)syscall(SYS_capset, &hdr, data);
}

/* Past RLIMIT_MEMLOCK a locked get fails cleanly (in a child process). */
static void
test_memlock_limit(void)
{
	pid_t pid;
	int status = 0;

	if (!tu_mlock_works()) {
		printf("  skipped: mlock is a no-op under the sanitizer\n");
		return;
	}
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		kas_t *kas = make_kas(KAS_REAL, 16 * MIB, 0);
		segkp_t *seg = make_seg(kas, SEGKP_FROMHEAP);
		size_t ps = segkp_pagesize(seg);
		struct rlimit rl = { 16 * ps, 16 * ps };
		void *small, *big;
		segkp_stats_t st;
		int ok = 1;

		if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0 || drop_ipc_lock() != 0)
			_exit(2);
		small = segkp_get(seg, 2 * ps, KPD_LOCKED | KPD_NOWAIT);
		big = segkp_get(seg, 64 * ps, KPD_LOCKED | KPD_NOWAIT);
		segkp_get_stats(seg, &st);
		ok &= small != NULL;
		ok &= big == NULL;
		ok &= st.lock_fail == 1 && st.inuse == 1;
		ok &= st.pages_locked == 2;
		ok &= segkp_check(seg) == 0;
		segkp_release(seg, small);
		segkp_destroy(seg);
		kas_destroy(kas);
		_exit(ok ? 0 : 1);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ------------------------------------------------------------------ */
/* Randomized: the heap bitmap matches the allocations after every step. */

typedef struct live {
	char *addr;
	size_t len;
	size_t redzone;
	int cached_kind;  /* cache index + 1, or 0 */
} live_t;

static int
bitmap_matches(segkp_t *seg, const live_t *lv, size_t n, size_t ps,
    char *const *gone, size_t ngone)
{
	size_t held = 0;
	segkp_stats_t st;
	segkp_info_t in;

	for (size_t i = 0; i < n; i++) {
		for (char *p = lv[i].addr - lv[i].redzone;
		    p < lv[i].addr + lv[i].len; p += ps)
			if (!segkp_page_held(seg, p))
				return 0;
		if (segkp_find(seg, lv[i].addr + lv[i].len - 1, &in) != 1 ||
		    in.addr != (uintptr_t)lv[i].addr ||
		    in.redzone != lv[i].redzone || in.len != lv[i].len)
			return 0;
		held += lv[i].len + lv[i].redzone;
	}
	/* Released allocations' pages are clear unless reused since. */
	for (size_t g = 0; g < ngone; g++)
		if (segkp_page_held(seg, gone[g]) &&
		    segkp_find(seg, gone[g], NULL) != 1)
			return 0;
	segkp_get_stats(seg, &st);
	/* Cached allocations are held too; count them from the stats. */
	return st.va_allocated >= held && segkp_check(seg) == 0;
}

static void
test_randomized_bitmap(void)
{
	int steps = tu_slow_build() ? 400 : 4000;

	for (size_t i = 0; i < NSETUPS; i++) {
		kas_t *kas;
		segkp_t *seg = open_setup(&setups[i], &kas);
		size_t ps = segkp_pagesize(seg);
		void *ck[2];
		live_t lv[256];
		char *gone[64];
		size_t n = 0, ngone = 0, bad = 0;
		tu_rng_t rng;

		tu_seed(&rng, 42 + i);
		ck[0] = segkp_cache_init(seg, 8, 2 * ps,
		    KPD_HASREDZONE | KPD_NOWAIT);
		ck[1] = segkp_cache_init(seg, 4, 6 * ps,
		    KPD_HASREDZONE | KPD_REDZONE_PAGES(2) | KPD_NOWAIT);
		REQUIRE(ck[0] != NULL && ck[1] != NULL);
		for (int step = 0; step < steps; step++) {
			uint64_t op = tu_range(&rng, 0, 99);

			if (op < 45 && n < 256) {
				size_t np = tu_range(&rng, 1, 9);
				size_t rz = tu_range(&rng, 0, 3);
				int fl = KPD_NOWAIT | (rz ? KPD_HASREDZONE |
				    KPD_REDZONE_PAGES(rz) : 0);
				char *p = segkp_get(seg, np * ps, fl);

				if (p != NULL)
					lv[n++] = (live_t){ p, np * ps,
					    rz * ps, 0 };
			} else if (op < 65 && n < 256) {
				int c = (int)tu_range(&rng, 0, 1);
				char *p = segkp_cache_get(ck[c]);

				if (p != NULL)
					lv[n++] = (live_t){ p,
					    c ? 6 * ps : 2 * ps,
					    c ? 2 * ps : ps, c + 1 };
			} else if (op < 95 && n > 0) {
				size_t k = tu_range(&rng, 0, n - 1);

				segkp_release(seg, lv[k].addr);
				gone[ngone++ % 64] = lv[k].addr;
				lv[k] = lv[--n];
			} else if (op < 97) {
				segkp_cache_reap(seg, (int)tu_range(&rng, 0,
				    1));
			} else if (op < 98) {
				segkp_cache_free_seg(seg);
			}
			if (!bitmap_matches(seg, lv, n, ps, gone,
			    ngone < 64 ? ngone : 64))
				bad++;
		}
		CHECK_EQ(bad, 0);
		while (n > 0)
			segkp_release(seg, lv[--n].addr);
		segkp_cache_free_seg(seg);
		{
			segkp_stats_t st;

			segkp_get_stats(seg, &st);
			CHECK_EQ(st.inuse + st.cached, 0);
			CHECK_EQ(st.va_allocated, 0);
		}
		close_setup(kas, seg);
	}
}

/* ------------------------------------------------------------------ */
/* The founding claim. */

static size_t
fill_with_stacks(segkp_t *seg, void ***out)
{
	size_t ps = segkp_pagesize(seg), n = 0, cap = 1024;
	void **v = malloc(cap * sizeof (*v));
	void *p;

	REQUIRE(v != NULL);
	while ((p = segkp_get(seg, 2 * ps, KPD_HASREDZONE | KPD_NOWAIT)) !=
	    NULL) {
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof (*v));
			REQUIRE(v != NULL);
		}
		v[n++] = p;
	}
	*out = v;
	return n;
}

static void
test_founding_claim(void)
{
	/* Same 64 MiB address space: 8 MiB fixed segkp + 56 MiB heap... */
	kas_t *kf = make_kas(KAS_SIM, 64 * MIB, 8 * MIB);
	segkp_t *fixed = segkp_create(kf, SEGKP_FIXED, (void *)kas_base(kf),
	    8 * MIB);
	/* ...or one 64 MiB heap that segkp imports from. */
	kas_t *kh = make_kas(KAS_SIM, 64 * MIB, 0);
	segkp_t *dyn = make_seg(kh, SEGKP_FROMHEAP);
	size_t ps = kas_pagesize(kf), nf, nd;
	void **vf, **vd, *h;

	REQUIRE(fixed != NULL);
	nf = fill_with_stacks(fixed, &vf);
	/* The fixed segment is full... */
	CHECK(nf > 0 && nf <= 8 * MIB / (3 * ps));
	CHECK(nf >= (8 * MIB / (3 * ps)) * 9 / 10);
	/* ...while its heap still has lots of room. */
	CHECK(vmem_size(kas_heap_arena(kf), VMEM_FREE) > 40 * MIB);
	h = vmem_alloc(kas_heap_arena(kf), MIB, VM_NOSLEEP);
	CHECK(h != NULL);
	vmem_free(kas_heap_arena(kf), h, MIB);

	/* fromheap keeps going far past that, until the heap is full. */
	nd = fill_with_stacks(dyn, &vd);
	CHECK(nd > 6 * nf);
	/* Less than one 64 KiB quantum-cache slab is left. */
	CHECK(vmem_size(kas_heap_arena(kh), VMEM_FREE) < 16 * ps);
	printf("  founding claim: fixed 8 MiB segkp: %zu stacks; fromheap "
	    "in the same 64 MiB: %zu stacks\n", nf, nd);
	CHECK(segkp_check(fixed) == 0 && segkp_check(dyn) == 0);
	while (nf > 0)
		segkp_release(fixed, vf[--nf]);
	while (nd > 0)
		segkp_release(dyn, vd[--nd]);
	free(vf);
	free(vd);
	close_setup(kf, fixed);
	close_setup(kh, dyn);
}

/* VMAs: each guarded stack on real memory costs two mappings. */
static void
test_vma_accounting(void)
{
	kas_t *kas = make_kas(KAS_REAL, 16 * MIB, 0);
	segkp_t *seg = make_seg(kas, SEGKP_FROMHEAP);
	size_t ps = segkp_pagesize(seg);
	long before = segkp_count_vmas(seg), after;
	void *s[50];
	segkp_stats_t st;

	CHECK(before >= 1);
	for (int k = 0; k < 50; k++)
		REQUIRE((s[k] = segkp_get(seg, 2 * ps, KPD_HASREDZONE)) !=
		    NULL);
	after = segkp_count_vmas(seg);
	segkp_get_stats(seg, &st);
	CHECK_EQ(st.vmas, 100);
	CHECK(after - before <= 100 && after - before >= 98);
	CHECK(st.max_map_count == 0 || st.guarded_ceiling ==
	    st.max_map_count / 2);
	for (int k = 0; k < 50; k++)
		segkp_release(seg, s[k]);
	CHECK_EQ(segkp_count_vmas(seg), before);
	close_setup(kas, seg);
}

int
main(void)
{
	RUN(test_get_release_every_setup);
	RUN(test_zero_after_reuse);
	RUN(test_stack_clash_redzone);
	RUN(test_classify_and_kas_classifier);
	RUN(test_many_segments_one_classifier);
	RUN(test_misuse);
	RUN(test_bad_create);
	RUN(test_fixed_carved_from_heap);
	RUN(test_cache_lifo_bounded);
	RUN(test_cache_reap);
	RUN(test_blocking_get_reclaims_cached_stacks);
	RUN(test_reap_window);
	RUN(test_fork_during_reap);
	RUN(test_heap_gets_space_back);
	RUN(test_locked);
	RUN(test_memlock_limit);
	RUN(test_randomized_bitmap);
	RUN(test_founding_claim);
	RUN(test_vma_accounting);
	return tu_finish();
}
