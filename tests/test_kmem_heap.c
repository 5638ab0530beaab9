/*
 * The kmem heap: kmem_alloc/kmem_zalloc/kmem_free over the default heap and
 * over named arenas, every size class and oversize requests, wrong sizes
 * at free, reaping back to an empty arena, and a heap over integers that
 * are not memory.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <string.h>

#include <vmem/kmem.h>

#include "testutil.h"

#define PAGE 4096

static void
test_default_heap_sizes(void)
{
	enum { N = 4000 };
	static char *v[N];
	static size_t sz[N];
	tu_rng_t r;
	int i, rounds = tu_slow_build() ? 2 : 10, k;

	tu_seed(&r, 7);
	for (k = 0; k < rounds; k++) {
		for (i = 0; i < N; i++) {
			sz[i] = (size_t)tu_range(&r, 1, i % 50 == 0 ? 40000 : 9000);
			v[i] = (i & 1) ? kmem_zalloc(sz[i], KM_SLEEP) :
			    kmem_alloc(sz[i], KM_SLEEP);
			REQUIRE(v[i] != NULL);
			if (i & 1) {
				size_t j;
				for (j = 0; j < sz[i]; j += 61)
					CHECK(v[i][j] == 0);
			}
			CHECK(((uintptr_t)v[i] & (sz[i] >= 16 ? 15 : 7)) == 0);
			memset(v[i], (int)(i & 0xff), sz[i]);
		}
		for (i = 0; i < N; i++) {
			CHECK(v[i][sz[i] - 1] == (char)(i & 0xff));
			kmem_free(v[i], sz[i]);
		}
	}
	CHECK(kmem_alloc(0, KM_SLEEP) == NULL);
	kmem_free(NULL, 0);
	kmem_heap_reap(kmem_default_heap());
	CHECK_EQ(vmem_size(kmem_heap_arena(kmem_default_heap()), VMEM_ALLOC), 0);
}

static void
test_wrong_size(void)
{
	char *p, *big;

	tu_record_errors();
	p = kmem_alloc(100, KM_SLEEP);
	kmem_free(p, 100);
	CHECK_EQ(tu_err.count, 0);
	p = kmem_alloc(100, KM_SLEEP);
	kmem_free(p, 300); /* another class */
	CHECK_EQ(tu_err.count, 1);
	CHECK_EQ(tu_err.code, KMEM_E_WRONGSIZE);
	CHECK(strcmp(tu_err.call, "kmem_free") == 0);
	CHECK_EQ(tu_err.size, 300);
	CHECK(strstr(tu_err.line, "112") != NULL); /* the class it came from */
	kmem_free(p, 20000); /* oversize */
	CHECK_EQ(tu_err.count, 2);
	CHECK_EQ(tu_err.code, KMEM_E_WRONGSIZE);
	kmem_free(p, 0);
	CHECK_EQ(tu_err.count, 3);
	kmem_free(p, 110); /* same class: cannot be told apart, accepted */
	CHECK_EQ(tu_err.count, 3);
	big = kmem_alloc(20000, KM_SLEEP);
	kmem_free(big, 30000); /* vmem's own exact-size check */
	CHECK_EQ(tu_err.count, 4);
	CHECK_EQ(tu_err.code, VMEM_E_WRONGSIZE);
	kmem_free(big, 20000);
	CHECK_EQ(tu_err.count, 4);
	tu_default_errors();
}

static void
test_heap_over_arena_reaps_to_empty(void)
{
	static char region[1 << 23] __attribute__((aligned(4096)));
	vmem_t *a = vmem_create("kh_arena", region, sizeof (region), PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_heap_t *h = kmem_heap_create("kh", a);
	enum { N = 3000 };
	static void *v[N];
	static size_t sz[N];
	tu_rng_t r;
	int i;

	REQUIRE(h != NULL);
	tu_seed(&r, 9);
	for (i = 0; i < N; i++) {
		sz[i] = (size_t)1 << tu_range(&r, 3, 13);
		sz[i] += tu_range(&r, 0, sz[i] / 2);
		REQUIRE((v[i] = kmem_heap_alloc(h, sz[i], KM_NOSLEEP)) != NULL);
		CHECK(vmem_contains(a, v[i], sz[i]));
	}
	for (i = 0; i < N; i++)
		kmem_heap_free(h, v[i], sz[i]);
	CHECK(vmem_size(a, VMEM_ALLOC) > 0); /* caches keep slabs */
	kmem_heap_reap(h);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	kmem_heap_destroy(h);
	CHECK_ARENA(a);
	vmem_destroy(a);
}

static void
test_heap_over_integers(void)
{
	vmem_t *a = vmem_create("kh_ints", (void *)(uintptr_t)0x100000000000ULL,
	    (size_t)1 << 32, PAGE, NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_heap_t *h = kmem_heap_create_flags("khi", a, KMC_NOTOUCH);
	void *p[64];
	int i;

	REQUIRE(h != NULL);
	for (i = 0; i < 64; i++)
		REQUIRE((p[i] = kmem_heap_zalloc(h, (size_t)(i + 1) * 300,
		    KM_NOSLEEP)) != NULL);
	for (i = 0; i < 64; i++)
		kmem_heap_free(h, p[i], (size_t)(i + 1) * 300);
	kmem_heap_reap(h);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	kmem_heap_destroy(h);
	vmem_destroy(a);
}

static void
test_set_default_heap(void)
{
	static char region[1 << 22] __attribute__((aligned(4096)));
	vmem_t *a = vmem_create("kh_dflt", region, sizeof (region), PAGE,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_heap_t *h = kmem_heap_create("kh_dflt", a), *old;
	void *p;

	old = kmem_set_default_heap(h);
	CHECK(old != NULL); /* the one created by the first test */
	p = kmem_alloc(64, KM_SLEEP);
	CHECK(vmem_contains(a, p, 64));
	kmem_free(p, 64);
	CHECK(kmem_set_default_heap(old) == h);
	kmem_heap_destroy(h);
	CHECK_EQ(vmem_size(a, VMEM_ALLOC), 0);
	vmem_destroy(a);
}

int
main(void)
{
	RUN(test_default_heap_sizes);
	RUN(test_wrong_size);
	RUN(test_heap_over_arena_reaps_to_empty);
	RUN(test_heap_over_integers);
	RUN(test_set_default_heap);
	return tu_finish();
}
