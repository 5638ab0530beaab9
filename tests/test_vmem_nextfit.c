/*
 * Next fit as pid allocators use it: an id that was just freed is not
 * handed out again until the allocator has gone round the whole space,
 * even though the freed segment coalesced with the free space below it;
 * the rotor wraps at the end; and once everything is freed the space is
 * one free segment again, allocatable whole by any policy.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdint.h>

#include "testutil.h"

static void
test_no_immediate_reuse(void)
{
	vmem_t *ids = vmem_create("nf_ids", (void *)1, 1000, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);
	uintptr_t last = 0;

	/* Allocate and free at once, round and round the space. */
	for (int i = 0; i < 2500; i++) {
		uintptr_t id = (uintptr_t)vmem_alloc(ids, 1,
		    VM_NOSLEEP | VM_NEXTFIT);
		CHECK_EQ(id, (uintptr_t)(i % 1000) + 1);
		CHECK(id != last);
		vmem_free(ids, (void *)id, 1);
		last = id;
	}
	CHECK(vmem_check(ids) == 0);
	CHECK_EQ(vmem_size(ids, VMEM_ALLOC), 0);
	/* Everything coalesced: the whole space in one piece. */
	void *all = vmem_alloc(ids, 1000, VM_NOSLEEP | VM_BESTFIT);
	CHECK_EQ((uintptr_t)all, 1);
	vmem_free(ids, all, 1000);
	vmem_destroy(ids);
}

static void
test_mixed_lifetimes(void)
{
	vmem_t *ids = vmem_create("nf_mixed", (void *)100, 64, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);
	uintptr_t held[8];

	for (int i = 0; i < 8; i++)
		held[i] = (uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(held[i], 100 + (uintptr_t)i);
	/* Free 101 and 103: the next ids are still 108, 109... */
	vmem_free(ids, (void *)held[1], 1);
	vmem_free(ids, (void *)held[3], 1);
	CHECK_EQ((uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT), 108);
	/* Take the rest of the space: the allocator wraps to 101, then 103. */
	for (uintptr_t id = 109; id < 164; id++)
		CHECK_EQ((uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT),
		    id);
	CHECK_EQ((uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT), 101);
	CHECK_EQ((uintptr_t)vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT), 103);
	CHECK(vmem_alloc(ids, 1, VM_NOSLEEP | VM_NEXTFIT) == NULL);
	CHECK(vmem_check(ids) == 0);
	for (uintptr_t id = 100; id < 164; id++)
		vmem_free(ids, (void *)id, 1);
	CHECK_EQ(vmem_size(ids, VMEM_FREE), 64);
	CHECK(vmem_check(ids) == 0);
	vmem_destroy(ids);
}

int
main(void)
{
	RUN(test_no_immediate_reuse);
	RUN(test_mixed_lifetimes);
	return tu_finish();
}
