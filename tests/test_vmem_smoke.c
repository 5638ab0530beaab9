/*
 * Smoke test of the vmem core: the basic operations of every policy, an
 * import chain and constrained allocation, with the checker after each
 * step. The thorough suites are test_vmem_basic, _pitfalls, _errors and
 * _model; this one stays small and fast so a broken build fails early.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "testutil.h"

#include <string.h>

#define PG 4096UL

/*
 * The flag and type values are illumos' <sys/vmem.h> (the contract's
 * table), so that code and binaries written for it keep their meaning:
 * a wrong value fails the build of this test.
 */
_Static_assert(VM_SLEEP == 0x0 && VM_NOSLEEP == 0x1 && VM_PANIC == 0x2,
    "VM_SLEEP, VM_NOSLEEP, VM_PANIC");
_Static_assert(VM_BESTFIT == 0x100 && VM_FIRSTFIT == 0x200 &&
    VM_NEXTFIT == 0x400, "allocation policies");
_Static_assert(VM_ABORT == 0x2000 && VM_ENDALLOC == 0x4000,
    "VM_ABORT, VM_ENDALLOC");
_Static_assert(VMC_NO_QCACHE == 0x20000 && VMC_IDENTIFIER == 0x40000 &&
    VMC_XALLOC == 0x80000 && VMC_XALIGN == 0x100000, "arena flags");
_Static_assert(VMEM_ALLOC == 0x1 && VMEM_FREE == 0x2 && VMEM_SPAN == 0x10 &&
    (unsigned)VMEM_REENTRANT == 0x80000000u, "segment types");

static void
test_policies(void)
{
	static const int policies[] = { 0, VM_BESTFIT, VM_FIRSTFIT,
	    VM_NEXTFIT, VM_ENDALLOC, VM_BESTFIT | VM_ENDALLOC };
	for (size_t p = 0; p < sizeof (policies) / sizeof (policies[0]); p++) {
		vmem_t *vmp = vmem_create("smoke", (void *)0x100000, 256 * PG,
		    PG, NULL, NULL, NULL, 0, VM_SLEEP);
		void *a[64];
		REQUIRE(vmp != NULL);
		for (int i = 0; i < 64; i++) {
			a[i] = vmem_alloc(vmp, (size_t)(i % 4 + 1) * PG,
			    VM_NOSLEEP | policies[p]);
			CHECK(a[i] != NULL);
			CHECK_ARENA(vmp);
		}
		for (int i = 0; i < 64; i += 2) {
			vmem_free(vmp, a[i], (size_t)(i % 4 + 1) * PG);
			CHECK_ARENA(vmp);
		}
		for (int i = 1; i < 64; i += 2)
			vmem_free(vmp, a[i], (size_t)(i % 4 + 1) * PG);
		CHECK_ARENA(vmp);
		CHECK_EQ(vmem_size(vmp, VMEM_ALLOC), 0);
		CHECK_EQ(vmem_size(vmp, VMEM_FREE), 256 * PG);
		/* Everything coalesced: the whole arena in one piece. */
		void *all = vmem_alloc(vmp, 256 * PG, VM_NOSLEEP | policies[p]);
		CHECK_EQ((uintptr_t)all, 0x100000);
		vmem_free(vmp, all, 256 * PG);
		vmem_destroy(vmp);
	}
}

static void
test_import_chain(void)
{
	vmem_t *parent = vmem_create("parent", (void *)0x1000000, 1024 * PG,
	    16 * PG, NULL, NULL, NULL, 0, VM_SLEEP);
	vmem_t *child = vmem_create("child", NULL, 0, PG, vmem_alloc,
	    vmem_free, parent, 0, VM_SLEEP);
	void *a[100];

	for (int i = 0; i < 100; i++) {
		a[i] = vmem_alloc(child, (size_t)(i % 3 + 1) * PG, VM_NOSLEEP);
		CHECK(a[i] != NULL);
		CHECK_ARENA(child);
		CHECK_ARENA(parent);
	}
	for (int i = 0; i < 100; i++) {
		vmem_free(child, a[i], (size_t)(i % 3 + 1) * PG);
		CHECK_ARENA(child);
		CHECK_ARENA(parent);
	}
	CHECK_EQ(vmem_size(child, VMEM_ALLOC | VMEM_FREE), 0);
	CHECK_EQ(vmem_size(parent, VMEM_ALLOC), 0);
	vmem_destroy(child);
	vmem_destroy(parent);
}

static void
test_xalloc(void)
{
	vmem_t *vmp = vmem_create("x", (void *)PG, 4096 * PG, PG, NULL, NULL,
	    NULL, 0, VM_SLEEP);
	tu_rng_t rng;

	tu_seed(&rng, 42);
	for (int i = 0; i < 2000; i++) {
		size_t size = tu_range(&rng, 1, 16) * PG;
		size_t align = (size_t)1 << tu_range(&rng, 12, 18);
		size_t nocross = (size_t)1 << 20;
		size_t phase = tu_range(&rng, 0, align / PG - 1) * PG;
		int flags = VM_NOSLEEP | ((i & 1) ? VM_ENDALLOC : 0);
		uintptr_t a = (uintptr_t)vmem_xalloc(vmp, size, align, phase,
		    nocross, (void *)(64 * PG), (void *)(4000 * PG), flags);
		if (a != 0) {
			CHECK_EQ(a % align, phase);
			CHECK((a ^ (a + size - 1)) < nocross);
			CHECK(a >= 64 * PG && a + size <= 4000 * PG);
			if (tu_range(&rng, 0, 2) != 0)
				vmem_xfree(vmp, (void *)a, size);
		}
		CHECK_ARENA(vmp);
	}
	vmem_destroy(vmp);
}

static void
test_top_of_address_space(void)
{
	uintptr_t base = UINTPTR_MAX - 16 * PG + 1;
	vmem_t *vmp = vmem_create("top", (void *)base, 16 * PG, PG, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	void *a;

	REQUIRE(vmp != NULL);
	a = vmem_xalloc(vmp, PG, 0, 0, 0, NULL, NULL, VM_NOSLEEP | VM_ENDALLOC);
	CHECK_EQ((uintptr_t)a, UINTPTR_MAX - PG + 1);
	CHECK_ARENA(vmp);
	vmem_xfree(vmp, a, PG);
	a = vmem_alloc(vmp, 16 * PG, VM_NOSLEEP);
	CHECK_EQ((uintptr_t)a, base);
	vmem_free(vmp, a, 16 * PG);
	CHECK_ARENA(vmp);
	vmem_destroy(vmp);
}

int
main(void)
{
	RUN(test_policies);
	RUN(test_import_chain);
	RUN(test_xalloc);
	RUN(test_top_of_address_space);
	return tu_finish();
}
