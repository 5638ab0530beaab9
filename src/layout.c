/*
 * layout -- the illumos x86 kernel virtual address layout, computed.
 *
 * Problem: kvsim must boot the same address space a 32-bit illumos kernel
 * would build from its tunables, and show it. startup.c derives every
 * boundary from physical memory (through the size of the page_t array),
 * the large page size (PAE or not) and a few boot properties; this file
 * redoes that arithmetic, bottom up for i386 and in the fixed order of the
 * amd64 layout for contrast.
 *
 * Data: layout_t holds the resolved tunables, every boundary, the one span
 * heap_arena gets and, in fixed placement, segkp's carved range.
 *
 * Invariants of a successful i386 result: kernelbase <= segmap_start <
 * kernelheap <= heap_base < heaptext_start <= ekernelheap <= valloc_base <
 * KERNEL_TEXT; every boundary the kernel aligns is LPAGE aligned; the heap
 * span is page aligned and at least two pages (the first is taken at boot).
 * Refusals leave error_code/error set and the boundaries computed so far.
 *
 * No locking: pure functions over caller-owned structures. No allocator is
 * used; 64-bit arithmetic throughout, with explicit checks where the 32-bit
 * kernel would wrap.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <vmem/layout.h>

#define KIB (1ULL << 10)
#define MIB (1ULL << 20)
#define GIB (1ULL << 30)
#define TIB (1ULL << 40)
#define FOUR_MEG (4 * MIB)
#define I386_VA_TOP (1ULL << 32)
#define MAX_STACK_PAGES 256

static uint64_t
roundup_p2(uint64_t x, uint64_t align)
{
	return (x + align - 1) & ~(align - 1);
}

static uint64_t
aligndown_p2(uint64_t x, uint64_t align)
{
	return x & ~(align - 1);
}

static void
warn(layout_t *l, const char *fmt, ...)
{
	va_list ap;

	if (l->nwarnings >= LAYOUT_MAXWARN)
		return;
	va_start(ap, fmt);
	vsnprintf(l->warnings[l->nwarnings++], LAYOUT_MSGLEN, fmt, ap);
	va_end(ap);
}

static int
refuse(layout_t *l, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(l->error, LAYOUT_MSGLEN, fmt, ap);
	va_end(ap);
	l->error_code = code;
	return code;
}

void
layout_params_default(layout_params_t *p)
{
	memset(p, 0, sizeof (*p));
	p->arch = LAYOUT_I386;
	p->rules = LAYOUT_RULES_2005;
	p->placement = LAYOUT_SEGKP_FIXED;
	p->physmem = 1 * GIB;
	p->pae = LAYOUT_PAE_AUTO;
}

const char *
layout_arch_name(layout_arch_t arch)
{
	return arch == LAYOUT_AMD64 ? "amd64" : "i386";
}

const char *
layout_placement_name(layout_placement_t placement)
{
	return placement == LAYOUT_SEGKP_FIXED ? "fixed" : "fromheap";
}

/* Fill the defaults that depend on the architecture and rule set. */
static void
resolve_defaults(layout_t *l)
{
	layout_params_t *p = &l->params;
	int amd64 = p->arch == LAYOUT_AMD64;

	if (p->page_t_size == 0)
		p->page_t_size = amd64 ? 120 : 80;
	if (p->stack_pages == 0)
		p->stack_pages = amd64 ? 5 :
		    p->rules == LAYOUT_RULES_2018 ? 3 : 2;
	if (p->segkpsize == 0)
		p->segkpsize = amd64 ? LAYOUT_AMD64_SEGKPDEFSIZE :
		    LAYOUT_I386_SEGKP_FIXED_DEFAULT;
	l->pagesize = LAYOUT_PAGESIZE;
	l->stack_pages = p->stack_pages;
	l->stack_va = (uint64_t)(p->stack_pages + 1) * LAYOUT_PAGESIZE;
}

static int
check_params(layout_t *l)
{
	const layout_params_t *p = &l->params;

	if (p->arch != LAYOUT_I386 && p->arch != LAYOUT_AMD64)
		return refuse(l, VMEM_E_LAYOUT_BADARG, "unknown architecture %d",
		    (int)p->arch);
	if (p->rules != LAYOUT_RULES_2005 && p->rules != LAYOUT_RULES_2018)
		return refuse(l, VMEM_E_LAYOUT_BADARG,
		    "unknown rule set %d (2005 or 2018)", (int)p->rules);
	if (p->placement != LAYOUT_SEGKP_FIXED &&
	    p->placement != LAYOUT_SEGKP_FROMHEAP)
		return refuse(l, VMEM_E_LAYOUT_BADARG, "unknown placement %d",
		    (int)p->placement);
	if (p->physmem < 16 * MIB || p->physmem % LAYOUT_PAGESIZE != 0)
		return refuse(l, VMEM_E_LAYOUT_BADARG, "physical memory 0x%llx "
		    "must be a page multiple of at least 16 MiB",
		    (unsigned long long)p->physmem);
	if (p->pae != LAYOUT_PAE_AUTO && p->pae != 0 && p->pae != 1)
		return refuse(l, VMEM_E_LAYOUT_BADARG, "pae must be -1, 0 or 1");
	if (p->stack_pages < 1 || p->stack_pages > MAX_STACK_PAGES)
		return refuse(l, VMEM_E_LAYOUT_BADARG,
		    "stack of %u pages (1 to %d)", p->stack_pages,
		    MAX_STACK_PAGES);
	if (p->page_t_size < 32 || p->page_t_size > 1024)
		return refuse(l, VMEM_E_LAYOUT_BADARG,
		    "sizeof(page_t) of %u bytes", p->page_t_size);
	if (p->segkpsize % LAYOUT_PAGESIZE != 0)
		return refuse(l, VMEM_E_LAYOUT_BADARG,
		    "segkpsize 0x%llx is not a page multiple",
		    (unsigned long long)p->segkpsize);
	return 0;
}

/* Memory the kernel configures, after the limits of the MMU and rule set. */
static void
i386_cap_memory(layout_t *l)
{
	uint64_t mem = l->params.physmem;
	uint64_t limit = l->pae ? 64 * GIB : 4 * GIB;

	if (mem > limit) {
		warn(l, "physical memory above %llu GiB is not addressable %s; "
		    "using %llu GiB", (unsigned long long)(limit / GIB),
		    l->pae ? "with PAE" : "without PAE",
		    (unsigned long long)(limit / GIB));
		mem = limit;
	}
	if (l->params.rules == LAYOUT_RULES_2018 &&
	    mem > LAYOUT_I386_PHYSMEM_2018_CAP) {
		warn(l, "Due to virtual address space limiting physmem to "
		    "0x%llx of 0x%llx pages",
		    (unsigned long long)(LAYOUT_I386_PHYSMEM_2018_CAP /
		    LAYOUT_PAGESIZE),
		    (unsigned long long)(mem / LAYOUT_PAGESIZE));
		mem = LAYOUT_I386_PHYSMEM_2018_CAP;
	}
	l->physmem = mem;
}

/* Size the valloc area: the page_t array unless overridden. */
static void
size_valloc(layout_t *l)
{
	l->npages = l->physmem / LAYOUT_PAGESIZE;
	l->page_t_array = l->npages * l->params.page_t_size;
	l->valloc_sz = roundup_p2(l->params.valloc_sz != 0 ?
	    l->params.valloc_sz : l->page_t_array, LAYOUT_PAGESIZE);
}

/* valloc_base and ekernelheap: the top of the kernel heap. */
static int
i386_place_valloc(layout_t *l)
{
	uint64_t kt = LAYOUT_I386_KERNEL_TEXT;

	if (l->valloc_sz + 2 * LAYOUT_PAGESIZE + l->lpage >= kt)
		return refuse(l, VMEM_E_LAYOUT_NOHEAP,
		    "valloc area of 0x%llx bytes does not fit below KERNEL_TEXT",
		    (unsigned long long)l->valloc_sz);
	if (l->params.rules == LAYOUT_RULES_2005) {
		l->valloc_base = kt - roundup_p2(l->valloc_sz, l->lpage);
		l->ptable_va = l->valloc_base - 2 * LAYOUT_PAGESIZE;
		l->ekernelheap = l->ptable_va;
	} else {
		l->valloc_base = aligndown_p2(kt - 2 * LAYOUT_PAGESIZE -
		    l->valloc_sz, l->lpage);
		l->ekernelheap = l->valloc_base;
	}
	return 0;
}

static int
i386_place_kernelbase(layout_t *l)
{
	const layout_params_t *p = &l->params;
	uint64_t dflt = p->debug_kernel ? LAYOUT_I386_KERNELBASE_DEBUG :
	    LAYOUT_I386_KERNELBASE;

	if (p->kernelbase_prop != 0) {
		if (p->kernelbase_prop >= I386_VA_TOP)
			return refuse(l, VMEM_E_LAYOUT_BADARG,
			    "kernelbase 0x%llx is not a 32-bit address",
			    (unsigned long long)p->kernelbase_prop);
		l->kernelbase = aligndown_p2(p->kernelbase_prop, l->lpage);
		if (l->kernelbase > LAYOUT_I386_KERNELBASE_MAX)
			l->kernelbase = LAYOUT_I386_KERNELBASE_MAX;
		if (l->kernelbase != p->kernelbase_prop)
			warn(l, "kernelbase value, User specified 0x%llx, "
			    "System using 0x%llx",
			    (unsigned long long)p->kernelbase_prop,
			    (unsigned long long)l->kernelbase);
		if (l->kernelbase == 0)
			return refuse(l, VMEM_E_LAYOUT_BADARG,
			    "kernelbase 0x%llx rounds down to 0",
			    (unsigned long long)p->kernelbase_prop);
	} else {
		uint64_t drop = roundup_p2(2 * l->valloc_sz, FOUR_MEG);

		if (drop >= dflt)
			return refuse(l, VMEM_E_LAYOUT_NOHEAP,
			    "too little address space available for kernelheap,"
			    " use eeprom for lower kernelbase or smaller "
			    "segmapsize");
		l->kernelbase = dflt - drop;
	}
	if (l->kernelbase < LAYOUT_I386_KERNELBASE_ABI_MIN)
		warn(l, "kernelbase set to 0x%llx, system is not i386 ABI "
		    "compliant.", (unsigned long long)l->kernelbase);
	return 0;
}

/* segmap above the red zone, then kernelheap (layout_kernel_va()). */
static void
i386_place_segmap(layout_t *l)
{
	uint64_t want = roundup_p2(l->params.segmapsize, l->lpage);

	if (want < LAYOUT_I386_SEGMAPDEFAULT)
		want = LAYOUT_I386_SEGMAPDEFAULT;
	l->userlimit = l->kernelbase;
	l->redzone_start = l->kernelbase;
	l->redzone_end = l->kernelbase + LAYOUT_I386_REDZONE;
	l->segmap_start = roundup_p2(l->kernelbase, l->lpage) +
	    LAYOUT_I386_REDZONE;
	l->segmapsize = want - LAYOUT_I386_REDZONE;
	l->kernelheap = roundup_p2(l->segmap_start + l->segmapsize, l->lpage);
}

/* Carve heaptext and (fixed) segkp; what is left is heap_arena's span. */
static int
i386_place_heap(layout_t *l)
{
	uint64_t segkp;

	if (l->kernelheap >= l->ekernelheap || l->kernelheap < l->kernelbase ||
	    l->kernelheap >= I386_VA_TOP)
		return refuse(l, VMEM_E_LAYOUT_NOHEAP,
		    "too little address space available for kernelheap, use "
		    "eeprom for lower kernelbase or smaller segmapsize");
	if (l->ekernelheap - l->kernelheap < LAYOUT_HEAPTEXT_SIZE +
	    2 * LAYOUT_PAGESIZE)
		return refuse(l, VMEM_E_LAYOUT_NOHEAP,
		    "too little address space available for kernelheap: "
		    "%llu KiB, of which module text takes 64 MiB",
		    (unsigned long long)((l->ekernelheap - l->kernelheap) /
		    KIB));
	l->heaptext_size = LAYOUT_HEAPTEXT_SIZE;
	l->heaptext_start = l->ekernelheap - LAYOUT_HEAPTEXT_SIZE;
	l->heap_base = l->kernelheap;
	if (l->params.placement == LAYOUT_SEGKP_FIXED) {
		segkp = roundup_p2(l->params.segkpsize, l->lpage);
		if (segkp + 2 * LAYOUT_PAGESIZE > l->heaptext_start -
		    l->kernelheap)
			return refuse(l, VMEM_E_LAYOUT_NOSEGKP,
			    "segkp of %llu KiB leaves no room for heap_arena "
			    "(%llu KiB between kernelheap and heaptext)",
			    (unsigned long long)(segkp / KIB),
			    (unsigned long long)((l->heaptext_start -
			    l->kernelheap) / KIB));
		l->segkp_base = l->kernelheap;
		l->segkp_size = segkp;
		l->heap_base = l->kernelheap + segkp;
	}
	l->heap_size = l->heaptext_start - l->heap_base;
	l->first_heap_page = l->heap_base;
	return 0;
}

static int
compute_i386(layout_t *l)
{
	int rc;

	l->pae = l->params.pae == LAYOUT_PAE_AUTO ?
	    l->params.physmem > 4 * GIB : l->params.pae;
	l->lpage = l->pae ? 2 * MIB : 4 * MIB;
	l->user_text = LAYOUT_I386_USER_TEXT;
	l->kernel_text = LAYOUT_I386_KERNEL_TEXT;
	l->kernel_data = LAYOUT_I386_KERNEL_DATA;
	l->segdebugbase = LAYOUT_I386_SEGDEBUGBASE;
	l->argsbase = LAYOUT_I386_ARGSBASE;
	i386_cap_memory(l);
	size_valloc(l);
	if ((rc = i386_place_valloc(l)) != 0 ||
	    (rc = i386_place_kernelbase(l)) != 0)
		return rc;
	i386_place_segmap(l);
	if ((rc = i386_place_heap(l)) != 0)
		return rc;
	l->kernel_heap_column = l->valloc_base - l->kernelheap;
	return 0;
}

/* amd64: segkpm, valloc, segkp, segzio, devices, segmap, heap, core. */
static int
amd64_place_low(layout_t *l)
{
	uint64_t mem = l->physmem;

	l->segkpm_base = LAYOUT_AMD64_SEGKPM_BASE;
	l->valloc_base = LAYOUT_AMD64_VALLOC_BASE;
	if (mem > TIB / 4) {
		/* Above 256 GiB the kernel takes 4 x physmem of VA. */
		uint64_t base = 0 - roundup_p2(4 * mem, LAYOUT_AMD64_REDZONE);
		uint64_t floor = 0xFFFF800000000000ULL + TIB;

		if (base < floor)
			base = floor;
		if (base > LAYOUT_AMD64_SEGKPM_BASE)
			base = LAYOUT_AMD64_SEGKPM_BASE;
		l->segkpm_base = base;
		l->valloc_base = base + roundup_p2(mem, GIB);
	}
	l->segkpm_size = roundup_p2(mem, l->lpage);
	if (l->segkpm_base + l->segkpm_size > l->valloc_base)
		return refuse(l, VMEM_E_LAYOUT_NOHEAP, "not enough room for kpm!");
	l->kernelbase = l->segkpm_base - LAYOUT_AMD64_REDZONE;
	l->redzone_start = l->kernelbase;
	l->redzone_end = l->segkpm_base;
	l->userlimit = l->kernelbase - LAYOUT_AMD64_LPAGE;
	if (l->params.kernelbase_prop != 0 &&
	    l->params.kernelbase_prop != l->kernelbase)
		warn(l, "kernelbase cannot be changed on 64-bit systems.");
	return 0;
}

static void
amd64_place_segkp(layout_t *l)
{
	uint64_t sz = l->params.segkpsize;

	l->segkp_base = l->valloc_base + l->valloc_sz;
	if (l->params.placement != LAYOUT_SEGKP_FIXED)
		return;
	if (sz < LAYOUT_AMD64_SEGKPMINSIZE || sz > LAYOUT_AMD64_SEGKPMAXSIZE) {
		sz = LAYOUT_AMD64_SEGKPDEFSIZE;
		warn(l, "Illegal value for segkpsize. segkpsize has been reset "
		    "to %llu pages", (unsigned long long)(sz / LAYOUT_PAGESIZE));
	}
	if (sz > l->physmem)
		sz = l->physmem > LAYOUT_AMD64_SEGKPMINSIZE ? l->physmem :
		    LAYOUT_AMD64_SEGKPMINSIZE;
	l->segkp_size = roundup_p2(sz, l->lpage);
}

static int
compute_amd64(layout_t *l)
{
	uint64_t zio, segmap;
	int rc;

	l->pae = 0;
	l->lpage = LAYOUT_AMD64_LPAGE;
	if (l->params.physmem > 64 * TIB)
		return refuse(l, VMEM_E_LAYOUT_BADARG,
		    "physical memory above 64 TiB is not supported");
	l->physmem = l->params.physmem;
	l->user_text = LAYOUT_AMD64_USER_TEXT;
	l->kernel_text = LAYOUT_AMD64_KERNEL_TEXT;
	l->kernel_data = LAYOUT_AMD64_KERNEL_TEXT + 4 * MIB;
	l->segdebugbase = LAYOUT_AMD64_SEGDEBUGBASE;
	l->argsbase = LAYOUT_AMD64_ARGSBASE;
	size_valloc(l);
	l->valloc_sz = roundup_p2(l->valloc_sz, l->lpage);
	if ((rc = amd64_place_low(l)) != 0)
		return rc;
	amd64_place_segkp(l);
	l->segzio_base = l->segkp_base + l->segkp_size;
	zio = l->physmem / 2 * 3;
	if (zio < LAYOUT_AMD64_SEGZIOMINSIZE)
		zio = LAYOUT_AMD64_SEGZIOMINSIZE;
	l->segzio_size = roundup_p2(zio, l->lpage);
	l->toxic_addr = roundup_p2(l->segzio_base + l->segzio_size, l->lpage);
	l->toxic_size = LAYOUT_AMD64_TOXIC_SIZE;
	l->segmap_start = roundup_p2(l->toxic_addr + l->toxic_size, l->lpage);
	segmap = roundup_p2(l->params.segmapsize, l->lpage);
	l->segmapsize = segmap > LAYOUT_AMD64_SEGMAPDEFAULT ? segmap :
	    LAYOUT_AMD64_SEGMAPDEFAULT;
	l->kernelheap = roundup_p2(l->segmap_start + l->segmapsize, l->lpage);
	l->core_base = LAYOUT_AMD64_COREHEAP_BASE;
	l->core_size = LAYOUT_AMD64_KERNEL_TEXT - LAYOUT_AMD64_COREHEAP_BASE;
	l->ekernelheap = l->core_base;
	/* Module text lives in the core heap, not in heap_arena. */
	l->heaptext_start = l->core_base;
	l->heaptext_size = l->core_size;
	if (l->kernelheap + 2 * LAYOUT_PAGESIZE > l->ekernelheap ||
	    l->kernelheap < l->segmap_start)
		return refuse(l, VMEM_E_LAYOUT_NOHEAP,
		    "too little address space available for kernelheap");
	l->heap_base = l->kernelheap;
	l->heap_size = l->ekernelheap - l->kernelheap;
	l->first_heap_page = l->heap_base;
	l->kernel_heap_column = l->ekernelheap - l->kernelheap;
	return 0;
}

int
layout_compute(const layout_params_t *p, layout_t *out)
{
	int rc;

	memset(out, 0, sizeof (*out));
	out->params = *p;
	resolve_defaults(out);
	if ((rc = check_params(out)) != 0)
		return rc;
	if (out->params.arch == LAYOUT_AMD64)
		return compute_amd64(out);
	return compute_i386(out);
}

uint64_t
layout_qcache_slab_size(uint64_t qcache_max)
{
	uint64_t slab = 1;

	while (slab < 3 * qcache_max)
		slab <<= 1;
	return slab;
}

uint64_t
layout_stacks_per_slab(const layout_t *l)
{
	uint64_t qmax = LAYOUT_SEGKP_QCACHE_PAGES * l->pagesize;

	if (l->stack_va > qmax)
		return 0;
	return layout_qcache_slab_size(qmax) / l->stack_va;
}

/* Stacks that fit in avail bytes of one contiguous range. */
static uint64_t
stacks_in(const layout_t *l, uint64_t avail)
{
	uint64_t per_slab = layout_stacks_per_slab(l);
	uint64_t slab = layout_qcache_slab_size(LAYOUT_SEGKP_QCACHE_PAGES *
	    l->pagesize);

	if (per_slab == 0)
		return avail / l->stack_va;
	return avail / slab * per_slab;
}

uint64_t
layout_analytic_stacks_fixed(const layout_t *l)
{
	return stacks_in(l, l->segkp_size);
}

uint64_t
layout_analytic_stacks_fromheap(const layout_t *l, uint64_t heap_use)
{
	uint64_t avail = l->heap_size - l->pagesize; /* first page at boot */

	if (l->heap_size < l->pagesize || heap_use >= avail)
		return 0;
	return stacks_in(l, avail - heap_use);
}
