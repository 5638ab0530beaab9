/*
 * vmem-demo: a small tour of an arena, for a newcomer.
 *
 * Three arenas show the three kinds of users: process ids handed out with
 * next fit (so a freed id is not reused at once), device memory carved with
 * alignment and boundary constraints, and a child arena that imports its
 * space from a parent on demand and gives it back when done -- the
 * mechanism the founding document used to make segkp dynamic. It ends by
 * printing the arena table.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdio.h>
#include <stdlib.h>

#include <vmem/vmem.h>

static void
show_ids(void)
{
	/* Ids 1..32767: quantum 1, never touched, so VMC_IDENTIFIER. */
	vmem_t *pids = vmem_create("pids", (void *)1, 32767, 1, NULL, NULL,
	    NULL, 0, VM_SLEEP | VMC_IDENTIFIER);
	uintptr_t a = (uintptr_t)vmem_alloc(pids, 1, VM_SLEEP | VM_NEXTFIT);
	uintptr_t b = (uintptr_t)vmem_alloc(pids, 1, VM_SLEEP | VM_NEXTFIT);

	vmem_free(pids, (void *)a, 1);
	uintptr_t c = (uintptr_t)vmem_alloc(pids, 1, VM_SLEEP | VM_NEXTFIT);
	printf("pids: allocated %lu and %lu, freed %lu, next fit gave %lu "
	    "(not the freed one)\n", (unsigned long)a, (unsigned long)b,
	    (unsigned long)a, (unsigned long)c);
	vmem_free(pids, (void *)b, 1);
	vmem_free(pids, (void *)c, 1);
	vmem_destroy(pids);
}

static void
show_device_memory(void)
{
	/* 64 MiB of device memory at 0x80000000, 4 KiB quantum. */
	vmem_t *dev = vmem_create("devmem", (void *)0x80000000UL, 64UL << 20,
	    4096, NULL, NULL, NULL, 0, VM_SLEEP);
	/* A 24 KiB DMA buffer, 64 KiB aligned, not crossing a 1 MiB line. */
	uintptr_t buf = (uintptr_t)vmem_xalloc(dev, 24 << 10, 64 << 10, 0,
	    1 << 20, NULL, NULL, VM_SLEEP);
	/* A ring at the top of the window below 0x82000000. */
	uintptr_t ring = (uintptr_t)vmem_xalloc(dev, 8 << 10, 0, 0, 0, NULL,
	    (void *)0x82000000UL, VM_SLEEP | VM_ENDALLOC);

	printf("devmem: DMA buffer at 0x%lx (64 KiB aligned), ring at 0x%lx "
	    "(ends at 0x%lx)\n", (unsigned long)buf, (unsigned long)ring,
	    (unsigned long)(ring + (8 << 10)));
	vmem_xfree(dev, (void *)buf, 24 << 10);
	vmem_xfree(dev, (void *)ring, 8 << 10);
	vmem_destroy(dev);
}

static void
show_import(void)
{
	/* The founding document's shape: a heap and an arena inside it. */
	vmem_t *heap = vmem_create("heap", (void *)0xc0000000UL, 256UL << 20,
	    4096, NULL, NULL, NULL, 0, VM_SLEEP);
	vmem_t *stacks = vmem_create("stacks", NULL, 0, 4096, vmem_alloc,
	    vmem_free, heap, 0, VM_SLEEP);
	void *s[8];

	for (int i = 0; i < 8; i++)
		s[i] = vmem_alloc(stacks, 12 << 10, VM_SLEEP);
	printf("import: 8 stacks of 12 KiB; stacks arena holds %lu KiB, "
	    "heap has %lu KiB in use\n",
	    (unsigned long)(vmem_size(stacks, VMEM_ALLOC | VMEM_FREE) >> 10),
	    (unsigned long)(vmem_size(heap, VMEM_ALLOC) >> 10));
	vmem_print_arenas(stdout);
	for (int i = 0; i < 8; i++)
		vmem_free(stacks, s[i], 12 << 10);
	printf("import: after freeing, stacks arena holds %lu KiB, heap has "
	    "%lu KiB in use (spans went back)\n",
	    (unsigned long)(vmem_size(stacks, VMEM_ALLOC | VMEM_FREE) >> 10),
	    (unsigned long)(vmem_size(heap, VMEM_ALLOC) >> 10));
	vmem_destroy(stacks);
	vmem_destroy(heap);
}

int
main(void)
{
	show_ids();
	show_device_memory();
	show_import();
	return EXIT_SUCCESS;
}
