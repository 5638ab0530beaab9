/*
 * libvmem layout -- the kernel virtual address layout of illumos x86.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Given the tunables a 32-bit x86 kernel reads at boot (physical memory,
 * PAE, the kernelbase boot property, segmapsize, segkpsize, the stack size,
 * the rule set of 2005 or 2018, the segkp placement), layout_compute()
 * places every region the way illumos startup.c places it and returns all
 * boundaries, including the span heap_arena gets and the fixed segkp range.
 * amd64 is computed too, for contrast. Pure arithmetic: nothing is allocated
 * and no allocator is involved, so the model can be checked against the
 * startup.c table on its own.
 *
 * A configuration the kernel could not boot is refused with the kernel's
 * message in layout_t.error (no abort, no error handler: a refused
 * configuration is an answer, not a misuse). Notes the kernel would print
 * and go on (kernelbase clamped, not i386 ABI compliant, memory capped)
 * land in layout_t.warnings.
 *
 * All addresses and sizes are uint64_t so the same structure holds both
 * architectures on any host.
 */
#ifndef VMEM_LAYOUT_H
#define VMEM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>
#include <vmem/vmem.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes of layout_compute() (0 = booted). */
#define VMEM_E_LAYOUT_BADARG  (VMEM_E_KVSIM + 0) /* a tunable out of range */
#define VMEM_E_LAYOUT_NOHEAP  (VMEM_E_KVSIM + 1) /* no room for kernelheap */
#define VMEM_E_LAYOUT_NOSEGKP (VMEM_E_KVSIM + 2) /* fixed segkp leaves no heap */

typedef enum layout_arch {
	LAYOUT_I386 = 0,
	LAYOUT_AMD64 = 1
} layout_arch_t;

typedef enum layout_rules {
	LAYOUT_RULES_2005 = 2005, /* OpenSolaris launch: 2-page stacks, ptable_va */
	LAYOUT_RULES_2018 = 2018  /* illumos 2018: 3-page stacks, 16 GiB cap */
} layout_rules_t;

typedef enum layout_placement {
	LAYOUT_SEGKP_FROMHEAP = 0, /* segkp imports from heap_arena */
	LAYOUT_SEGKP_FIXED = 1     /* segkp owns a carved range of its own */
} layout_placement_t;

#define LAYOUT_PAE_AUTO (-1)     /* PAE exactly when memory is above 4 GiB */

/* Architectural constants of 32-bit x86 (i86pc). */
#define LAYOUT_PAGESIZE          0x1000ULL
#define LAYOUT_I386_KERNELBASE   0xD4000000ULL /* non-DEBUG default */
#define LAYOUT_I386_KERNELBASE_DEBUG 0xC8000000ULL
#define LAYOUT_I386_KERNELBASE_MAX   0xE0000000ULL
#define LAYOUT_I386_KERNELBASE_ABI_MIN 0xC0000000ULL
#define LAYOUT_I386_KERNEL_TEXT  0xFE800000ULL
#define LAYOUT_I386_KERNEL_DATA  0xFEC00000ULL
#define LAYOUT_I386_SEGDEBUGBASE 0xFF800000ULL
#define LAYOUT_I386_ARGSBASE     0xFFC00000ULL
#define LAYOUT_I386_USER_TEXT    0x08048000ULL
#define LAYOUT_I386_REDZONE      0x2000ULL      /* MAXBSIZE */
#define LAYOUT_I386_SEGMAPDEFAULT (16ULL << 20)
#define LAYOUT_I386_SEGKP_FIXED_DEFAULT (200ULL << 20)
#define LAYOUT_HEAPTEXT_SIZE     (64ULL << 20)
#define LAYOUT_I386_PHYSMEM_2018_CAP (16ULL << 30)

/* amd64 constants (for contrast). */
#define LAYOUT_AMD64_KERNELBASE  0xFFFFFD8000000000ULL
#define LAYOUT_AMD64_REDZONE     (512ULL << 30)
#define LAYOUT_AMD64_SEGKPM_BASE 0xFFFFFE0000000000ULL
#define LAYOUT_AMD64_VALLOC_BASE 0xFFFFFF0000000000ULL
#define LAYOUT_AMD64_COREHEAP_BASE 0xFFFFFFFFC0000000ULL
#define LAYOUT_AMD64_KERNEL_TEXT 0xFFFFFFFFFB800000ULL
#define LAYOUT_AMD64_SEGDEBUGBASE 0xFFFFFFFFFF800000ULL
#define LAYOUT_AMD64_ARGSBASE    0xFFFFFFFFFFC00000ULL
#define LAYOUT_AMD64_USER_TEXT   0x0000000004000000ULL
#define LAYOUT_AMD64_LPAGE       (2ULL << 20)
#define LAYOUT_AMD64_SEGMAPDEFAULT (64ULL << 20)
#define LAYOUT_AMD64_SEGKPDEFSIZE (2ULL << 30)
#define LAYOUT_AMD64_SEGKPMINSIZE (200ULL << 20)
#define LAYOUT_AMD64_SEGKPMAXSIZE (8ULL << 30)
#define LAYOUT_AMD64_SEGZIOMINSIZE (400ULL << 20)
#define LAYOUT_AMD64_TOXIC_SIZE  (1ULL << 30)

/* segkp's quantum caches: qcache_max = 5 pages (seg_kp.c). */
#define LAYOUT_SEGKP_QCACHE_PAGES 5

/* The tunables. layout_params_default() fills the kvsim defaults. */
typedef struct layout_params {
	layout_arch_t arch;
	layout_rules_t rules;        /* i386 only */
	layout_placement_t placement;
	uint64_t physmem;            /* bytes of physical memory, page multiple */
	int pae;                     /* LAYOUT_PAE_AUTO, 0 or 1 (i386 only) */
	uint64_t kernelbase_prop;    /* "kernelbase" boot property; 0 = float */
	uint64_t segmapsize;         /* 0 = default (16 MiB i386, 64 MiB amd64) */
	uint64_t segkpsize;          /* fixed segkp bytes; 0 = default */
	unsigned stack_pages;        /* default stack pages; 0 = rule default */
	unsigned page_t_size;        /* sizeof(page_t); 0 = 80 (i386), 120 (amd64) */
	uint64_t valloc_sz;          /* 0 = the page_t array alone */
	int debug_kernel;            /* nonzero: DEBUG KERNELBASE 0xC8000000 */
} layout_params_t;

#define LAYOUT_MAXWARN 4
#define LAYOUT_MSGLEN  192

/* The computed layout. Fields that do not apply are 0. */
typedef struct layout {
	layout_params_t params;      /* as given, with defaults filled in */
	/* Resolved tunables. */
	int pae;                     /* i386: PAE in use */
	uint64_t pagesize;
	uint64_t lpage;              /* 4 MiB (i386), 2 MiB (PAE, amd64) */
	uint64_t physmem;            /* bytes the kernel configures (after caps) */
	uint64_t npages;             /* physmem / PAGESIZE */
	uint64_t page_t_array;       /* npages * sizeof(page_t) */
	uint64_t valloc_sz;          /* bytes in the valloc area */
	unsigned stack_pages;        /* default stack, without the redzone */
	uint64_t stack_va;           /* address space per stack, redzone included */
	/* Region boundaries, bottom up. */
	uint64_t user_text;          /* start of user text */
	uint64_t userlimit;          /* top of user space (= user VA size, i386) */
	uint64_t kernelbase;
	uint64_t redzone_start, redzone_end;
	uint64_t segkpm_base, segkpm_size;   /* amd64 */
	uint64_t valloc_base;        /* page_t array, memsegs, page hash */
	uint64_t segkp_base, segkp_size;     /* fixed placement only */
	uint64_t segzio_base, segzio_size;   /* amd64 */
	uint64_t toxic_addr, toxic_size;     /* amd64 device mappings */
	uint64_t segmap_start, segmapsize;
	uint64_t kernelheap, ekernelheap;
	uint64_t ptable_va;          /* i386 2005: two pages at ekernelheap */
	uint64_t heaptext_start, heaptext_size; /* module text (top of heap on i386) */
	uint64_t core_base, core_size;       /* amd64 core heap */
	uint64_t kernel_text, kernel_data, segdebugbase, argsbase;
	/* heap_arena: one span [heap_base, heap_base + heap_size). */
	uint64_t heap_base, heap_size;
	uint64_t first_heap_page;    /* the page kernelheap_init takes at boot */
	/* The startup.c table's "kernel heap size" column: valloc_base - kernelheap. */
	uint64_t kernel_heap_column;
	/* Messages. */
	int nwarnings;
	char warnings[LAYOUT_MAXWARN][LAYOUT_MSGLEN];
	int error_code;              /* 0 or VMEM_E_LAYOUT_* */
	char error[LAYOUT_MSGLEN];   /* the kernel's message when refused */
} layout_t;

/* kvsim's defaults: i386, 2005 rules, 1 GiB, PAE auto, fixed 200 MiB segkp. */
void layout_params_default(layout_params_t *p);

/*
 * Compute the layout. Returns 0 on success, or a VMEM_E_LAYOUT_* code with
 * out->error holding the message; out is always fully written.
 */
int layout_compute(const layout_params_t *p, layout_t *out);

/* "i386" / "amd64", "fixed" / "fromheap". */
const char *layout_arch_name(layout_arch_t arch);
const char *layout_placement_name(layout_placement_t placement);

/*
 * Draw the layout as startup.c's comment draws it, with the computed
 * addresses, into buf (snprintf semantics: always terminated when len > 0;
 * returns the length the whole drawing needs). layout_print() writes it to
 * a stdio FILE * passed as void * (stdout if NULL), keeping <stdio.h> out of
 * this header.
 */
size_t layout_draw(const layout_t *l, char *buf, size_t len);
void layout_print(const layout_t *l, void *stdio_file);

/*
 * The analytic expectations of layout.md. They charge nothing but stacks to
 * the heap and assume perfect packing, so they are what an allocator run
 * must land on with metadata kept off the heap. They exist for tests;
 * kvsim's own numbers come from running the allocator.
 */
/* Slab size of a quantum cache: the power of two >= 3 * qcache_max. */
uint64_t layout_qcache_slab_size(uint64_t qcache_max);
/* Stacks one slab holds (0 if the stack is too big for the caches). */
uint64_t layout_stacks_per_slab(const layout_t *l);
/* Most stacks the fixed segkp range holds. */
uint64_t layout_analytic_stacks_fixed(const layout_t *l);
/* Most stacks heap_arena holds when heap_use bytes go to everything else. */
uint64_t layout_analytic_stacks_fromheap(const layout_t *l, uint64_t heap_use);

#ifdef __cplusplus
}
#endif
#endif /* VMEM_LAYOUT_H */
