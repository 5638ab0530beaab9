/*
 * The workload engine of kvsim: the library's real allocators, booted on a
 * simulated 32-bit kernel address space.
 *
 * boot() turns a computed layout into a simulated kas (segkmem) whose
 * heap_arena spans exactly the kernel heap of the layout, with the first
 * heap page taken as illumos' kernelheap_init takes it; then creates segkp
 * in the layout's placement -- over its own carved range (fixed) or as an
 * empty arena importing from heap_arena (fromheap) -- and the kernel
 * thread stack cache (KPD_HASREDZONE | KPD_LOCKED | KPD_NO_ANON, plus
 * KPD_NOWAIT so a full address space fails instead of waiting). Threads
 * take their stacks from that cache, kmem_alloc goes to the kas' kmem heap
 * (size-class caches over kmem_va, which imports from heap_arena), so
 * every number kvsim prints comes from running the allocator.
 *
 * Kernel metadata (boundary tags, kmem bookkeeping, segkp records) is
 * charged to the simulated heap page by page when the configuration asks
 * for it, as illumos allocates it from the heap; --no-metadata keeps it off
 * the heap so the run can be compared with layout.md's analytic counts.
 *
 * Single-threaded, like the rest of kvsim.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmem/kmem.h>
#include <vmem/segkmem.h>
#include <vmem/segkp.h>
#include <vmem/vmem.h>

#include "sim.h"

/* The kernel's thread stack cache holds 8 stacks (seg_kp.c). */
#define THREAD_CACHE_SIZE 8
#define STACK_FLAGS (KPD_HASREDZONE | KPD_LOCKED | KPD_NO_ANON | KPD_NOWAIT)

struct kvsim_sim {
	kas_t *kas;
	kmem_heap_t *heap;    /* kas_heap(kas), looked up once */
	segkp_t *segkp;
	void *thread_cache;
	uint64_t stack_len;
	uint64_t kmem_bytes;
	uint64_t threads;
};

/*
 * A simulated kernel is switched off with its threads and heap still in
 * use: the leak warnings that destroying it raises are expected, so they
 * are dropped; real errors still go to the default handler.
 */
static void
quiet_teardown_handler(const vmem_error_info_t *info, void *arg)
{
	(void)arg;
	if (!info->warning)
		vmem_default_error_handler(info, NULL);
}

static void
sim_shutdown(kvsim_sim_t *sim)
{
	vmem_error_handler_t *old;

	if (sim == NULL)
		return;
	old = vmem_set_error_handler(quiet_teardown_handler, NULL);
	if (sim->segkp != NULL)
		segkp_destroy(sim->segkp);
	if (sim->kas != NULL)
		kas_destroy(sim->kas);
	vmem_set_error_handler(old == vmem_default_error_handler ? NULL : old,
	    NULL);
	free(sim);
}

/*
 * The kas covers the fixed segkp range (if any) and the heap; heap_arena
 * gets the heap span only.
 */
static int
sim_kas_config(const layout_t *l, int charge, kas_config_t *kc)
{
	uint64_t lo = l->heap_base, hi = l->heap_base + l->heap_size;

	if (l->params.placement == LAYOUT_SEGKP_FIXED && l->segkp_size != 0 &&
	    l->segkp_base < lo)
		lo = l->segkp_base;
	kas_config_init(kc);
	kc->backing = KAS_SIM;
	kc->name = layout_placement_name(l->params.placement);
	kc->sim_base = (uintptr_t)lo;
	kc->size = (size_t)(hi - lo);
	kc->pagesize = (size_t)l->pagesize;
	kc->nheap_spans = 1;
	kc->heap_spans[0].start = (size_t)(l->heap_base - lo);
	kc->heap_spans[0].end = (size_t)(hi - lo);
	kc->heap_boot_pages = l->first_heap_page != 0 ? 1 : 0;
	kc->physmem_pages = (size_t)(l->physmem / l->pagesize);
	kc->charge_metadata = charge ? 1 : 0;
	return 0;
}

static kvsim_sim_t *
sim_boot(const kvsim_sim_config_t *cfg, char *err, size_t errlen)
{
	const layout_t *l = cfg->layout;
	kvsim_sim_t *sim = calloc(1, sizeof (*sim));
	kas_config_t kc;
	int fixed = l->params.placement == LAYOUT_SEGKP_FIXED;

	if (sim == NULL) {
		snprintf(err, errlen, "out of host memory");
		return NULL;
	}
	/*
	 * The simulator's figures must repeat run to run: no pressure pass
	 * purging caches on another thread at some moment of the thread
	 * storm (one of two runs read a frontier point of 64 MiB as 559).
	 * The simulation reaps where the kernel's paths would, itself.
	 */
	(void)kmem_set_pressure_reap(0);
	sim_kas_config(l, cfg->charge_metadata, &kc);
	sim->kas = kas_create(&kc);
	if (sim->kas == NULL) {
		snprintf(err, errlen, "cannot create the simulated address "
		    "space");
		sim_shutdown(sim);
		return NULL;
	}
	sim->segkp = segkp_create(sim->kas, fixed ? SEGKP_FIXED :
	    SEGKP_FROMHEAP, fixed ? (void *)(uintptr_t)l->segkp_base : NULL,
	    fixed ? (size_t)l->segkp_size : 0);
	if (sim->segkp == NULL) {
		snprintf(err, errlen, "cannot create segkp");
		sim_shutdown(sim);
		return NULL;
	}
	sim->stack_len = (uint64_t)l->stack_pages * l->pagesize;
	sim->thread_cache = segkp_cache_init(sim->segkp, THREAD_CACHE_SIZE,
	    (size_t)sim->stack_len, STACK_FLAGS);
	if (sim->thread_cache == NULL) {
		snprintf(err, errlen, "cannot create the thread stack cache");
		sim_shutdown(sim);
		return NULL;
	}
	sim->heap = kas_heap(sim->kas);
	kas_settle_metadata(sim->kas);
	return sim;
}

static int
sim_thread_create(kvsim_sim_t *sim, uint64_t stack_bytes, uint64_t *handle)
{
	void *stack;

	if (stack_bytes == 0 || stack_bytes == sim->stack_len)
		stack = segkp_cache_get(sim->thread_cache);
	else
		stack = segkp_get(sim->segkp, (size_t)stack_bytes,
		    STACK_FLAGS);
	kas_settle_metadata(sim->kas);
	if (stack == NULL)
		return -1;
	*handle = (uint64_t)(uintptr_t)stack;
	sim->threads++;
	return 0;
}

static void
sim_thread_exit(kvsim_sim_t *sim, uint64_t handle)
{
	segkp_release(sim->segkp, (void *)(uintptr_t)handle);
	kas_settle_metadata(sim->kas);
	sim->threads--;
}

static int
sim_kmem_alloc(kvsim_sim_t *sim, uint64_t size, uint64_t *addr)
{
	void *p = kmem_heap_alloc(sim->heap, (size_t)size, KM_NOSLEEP);

	kas_settle_metadata(sim->kas);
	if (p == NULL)
		return -1;
	*addr = (uint64_t)(uintptr_t)p;
	sim->kmem_bytes += size;
	return 0;
}

static void
sim_kmem_free(kvsim_sim_t *sim, uint64_t addr, uint64_t size)
{
	kmem_heap_free(sim->heap, (void *)(uintptr_t)addr, (size_t)size);
	kas_settle_metadata(sim->kas);
	sim->kmem_bytes -= size;
}

/* Give cached stacks and quantum-cache slabs back to heap_arena. */
static void
sim_reap(kvsim_sim_t *sim)
{
	(void)segkp_cache_reap(sim->segkp, SEGKP_REAP_ALL);
	segkp_cache_free_seg(sim->segkp);
	vmem_reap(segkp_arena(sim->segkp));
	kmem_heap_reap(sim->heap);
	kas_settle_metadata(sim->kas);
}

static void
sim_stats(kvsim_sim_t *sim, kvsim_sim_stats_t *st)
{
	vmem_t *heap = kas_heap_arena(sim->kas);
	vmem_t *segkp = segkp_arena(sim->segkp);
	vmem_stats_t hs;
	kas_stats_t ks;

	memset(st, 0, sizeof (*st));
	vmem_get_stats(heap, &hs);
	kas_get_stats(sim->kas, &ks);
	st->heap_total = hs.mem_total;
	st->heap_inuse = hs.mem_inuse;
	st->heap_largest_free = hs.largest_free;
	st->segkp_total = vmem_size(segkp, VMEM_ALLOC | VMEM_FREE);
	st->segkp_inuse = vmem_size(segkp, VMEM_ALLOC);
	st->kmem_bytes = sim->kmem_bytes;
	st->metadata_bytes = (uint64_t)ks.meta_heap_bytes;
	st->threads = sim->threads;
}

const kvsim_engine_t kvsim_allocator_engine = {
	.name = "libvmem",
	.boot = sim_boot,
	.shutdown = sim_shutdown,
	.thread_create = sim_thread_create,
	.thread_exit = sim_thread_exit,
	.kmem_alloc = sim_kmem_alloc,
	.kmem_free = sim_kmem_free,
	.reap = sim_reap,
	.stats = sim_stats,
};
