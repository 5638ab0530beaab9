/*
 * Example: suballocating a device's memory (a GPU's VRAM, a DMA
 * engine's window) with vmem_xalloc constraints.
 *
 * The arena manages the device's address range; the host never touches
 * it (the addresses are only numbers to us), and its bookkeeping lives in
 * the library's own pages, never in device memory. The device imposes
 * rules that plain malloc cannot express, and vmem_xalloc does:
 *
 *   align    textures must start on a 64 KiB boundary (align = 64 KiB);
 *   phase    a ring buffer's header sits 256 bytes before a 4 KiB
 *            boundary, so the payload is page aligned (align 4 KiB,
 *            phase 4 KiB - 256);
 *   nocross  a DMA descriptor table may not cross a 1 MiB boundary (the
 *            engine's address counter has 20 bits);
 *   maxaddr  buffers the CPU maps through a 256 MiB window (the PCI BAR)
 *            must lie below base + 256 MiB.
 *
 * Every allocation is checked against its rules and against all others
 * (no overlap); everything is freed and the arena ends as one free span.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <vmem/vmem.h>

#define VRAM_BASE   0x80000000u
#define VRAM_SIZE   (1024u << 20)   /* 1 GiB of device memory */
#define VRAM_QUANT  256u            /* the device's allocation unit */
#define BAR_WINDOW  (256u << 20)    /* CPU-visible part */
#define KiB         1024u
#define MiB         (1024u * 1024u)

typedef struct request {
	const char *what;
	size_t size, align, phase, nocross;
	int cpu_visible;
} request_t;

typedef struct buffer {
	const request_t *req;
	uintptr_t addr;
} buffer_t;

static int failures;

static void
expect(int ok, const char *what, const char *detail)
{
	if (!ok) {
		fprintf(stderr, "device_memory: FAILED: %s (%s)\n", what, detail);
		failures++;
	}
}

static const request_t kinds[] = {
	{ "texture",      3 * MiB + 512,   64 * KiB, 0, 0, 0 },
	{ "ring",         16 * KiB,        4 * KiB, 4 * KiB - 256, 0, 1 },
	{ "dma_table",    96 * KiB,        VRAM_QUANT, 0, 1 * MiB, 1 },
	{ "staging",      2 * MiB,         4 * KiB, 0, 0, 1 },
	{ "vertex",       700 * KiB + 256, VRAM_QUANT, 0, 0, 0 },
};
#define NKINDS (sizeof (kinds) / sizeof (kinds[0]))

static uintptr_t
device_alloc(vmem_t *vram, const request_t *r)
{
	void *max = r->cpu_visible ? (void *)(uintptr_t)(VRAM_BASE + BAR_WINDOW)
	    : NULL;

	return (uintptr_t)vmem_xalloc(vram, r->size, r->align, r->phase,
	    r->nocross, NULL, max, VM_NOSLEEP | VM_BESTFIT);
}

static void
check_rules(const buffer_t *b)
{
	const request_t *r = b->req;
	uintptr_t a = b->addr;

	expect(a % r->align == r->phase, r->what, "alignment and phase");
	if (r->nocross != 0)
		expect(a / r->nocross == (a + r->size - 1) / r->nocross, r->what,
		    "crosses a boundary");
	if (r->cpu_visible)
		expect(a + r->size <= VRAM_BASE + BAR_WINDOW, r->what,
		    "outside the CPU window");
	expect(a >= VRAM_BASE && a + r->size <= VRAM_BASE + VRAM_SIZE, r->what,
	    "outside VRAM");
}

int
main(void)
{
	static buffer_t bufs[400];
	size_t n = 0, in_window = 0;
	vmem_t *vram = vmem_create("vram", (void *)(uintptr_t)VRAM_BASE,
	    VRAM_SIZE, VRAM_QUANT, NULL, NULL, NULL, 0, VM_SLEEP);

	expect(vram != NULL, "vmem_create", "vram");
	/* Allocate in rounds until the CPU window is full. */
	for (int round = 0; n < 400; round++) {
		const request_t *r = &kinds[round % NKINDS];
		uintptr_t a = device_alloc(vram, r);

		if (a == 0) {
			if (r->cpu_visible)
				break;   /* the 256 MiB window is exhausted */
			continue;
		}
		bufs[n].req = r;
		bufs[n].addr = a;
		check_rules(&bufs[n]);
		if (r->cpu_visible)
			in_window += r->size;
		if (n < 2 * NKINDS)
			printf("%-10s %9zu bytes at 0x%08lx (align %6zu phase %4zu "
			    "nocross %7zu%s)\n", r->what, r->size,
			    (unsigned long)a, r->align, r->phase, r->nocross,
			    r->cpu_visible ? ", CPU window" : "");
		n++;
	}
	/* No two buffers overlap. */
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			expect(bufs[i].addr + bufs[i].req->size <= bufs[j].addr ||
			    bufs[j].addr + bufs[j].req->size <= bufs[i].addr,
			    bufs[i].req->what, "overlap");
	printf("%zu buffers; %zu MiB in the 256 MiB CPU window, %zu MiB in use "
	    "overall\n", n, in_window / MiB,
	    vmem_size(vram, VMEM_ALLOC) / MiB);
	expect(vmem_check(vram) == 0, "vmem_check", "vram");
	for (size_t i = 0; i < n; i++)
		vmem_xfree(vram, (void *)bufs[i].addr, bufs[i].req->size);
	expect(vmem_size(vram, VMEM_ALLOC) == 0, "all freed", "vram");
	expect(vmem_size(vram, VMEM_FREE) == VRAM_SIZE, "one free span", "vram");
	vmem_destroy(vram);
	printf("%s\n", failures == 0 ? "device_memory: ok" :
	    "device_memory: FAILED");
	return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
