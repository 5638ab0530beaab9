/*
 * kvsim's workload engine interface: one booted kernel address space.
 *
 * The seam between kvsim's front end (options, layout, workloads, output)
 * and the library's real allocators. An engine boots the address space a
 * layout_t describes on the simulated backing -- heap_arena over
 * [heap_base, heap_base + heap_size) with its first page taken, kmem_va
 * and the kmem caches on top, segkp fixed over [segkp_base, +segkp_size)
 * or importing from heap_arena, with its stack caches -- and performs the
 * kernel's operations on it. Every number kvsim reports comes from an
 * engine's stats(), never from layout.h's analytic formulas.
 *
 * The workload loops (drive.c) call only these operations, so an engine is
 * all that is needed to run them. The allocator-backed engine lives in
 * sim.c (the lead's), which defines
 *     const kvsim_engine_t kvsim_allocator_engine;
 * main.c runs workloads only when kvsim_engine_get() returns an engine.
 *
 * Contract (all functions single-threaded, on one sim at a time):
 *   boot        build the address space; NULL with err filled on failure
 *               (e.g. the layout was refused).
 *   shutdown    tear everything down; live threads and allocations go too.
 *   thread_create  a kernel thread with a stack of stack_bytes (0 = the
 *               layout's default size, from the stack cache), never
 *               sleeping: 0 and *handle on success, -1 when address space
 *               or memory is exhausted.
 *   thread_exit release the thread's stack (to the stack cache if it has
 *               room, as segkp_release does).
 *   kmem_alloc  KM_NOSLEEP allocation of size bytes: 0 and *addr, or -1.
 *   kmem_free   free what kmem_alloc returned, with its size.
 *   reap        give cached free memory (stack caches, magazines, empty
 *               slabs, quantum caches) back to the arenas, as kmem_reap.
 *   stats       the current figures, in bytes.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef KVSIM_SIM_H
#define KVSIM_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <vmem/layout.h>

typedef struct kvsim_sim kvsim_sim_t;

typedef struct kvsim_sim_config {
	const layout_t *layout;     /* computed, error_code == 0 */
	int charge_metadata;        /* 1: kernel metadata (boundary tags,
	                             * segkp records, bitmaps) is allocated from
	                             * heap_arena as illumos does; 0: kept off
	                             * the simulated heap (--no-metadata) */
} kvsim_sim_config_t;

typedef struct kvsim_sim_stats {
	uint64_t heap_total;        /* heap_arena span bytes */
	uint64_t heap_inuse;        /* heap_arena bytes allocated (everything) */
	uint64_t heap_largest_free; /* largest free segment of heap_arena */
	uint64_t segkp_total;       /* fixed: segkp span; fromheap: imported */
	uint64_t segkp_inuse;       /* segkp bytes allocated (redzones too) */
	uint64_t kmem_bytes;        /* bytes the workload holds via kmem_alloc */
	uint64_t metadata_bytes;    /* kernel metadata charged to heap_arena */
	uint64_t threads;           /* live threads */
} kvsim_sim_stats_t;

typedef struct kvsim_engine {
	const char *name;
	kvsim_sim_t *(*boot)(const kvsim_sim_config_t *cfg, char *err,
	    size_t errlen);
	void (*shutdown)(kvsim_sim_t *sim);
	int (*thread_create)(kvsim_sim_t *sim, uint64_t stack_bytes,
	    uint64_t *handle);
	void (*thread_exit)(kvsim_sim_t *sim, uint64_t handle);
	int (*kmem_alloc)(kvsim_sim_t *sim, uint64_t size, uint64_t *addr);
	void (*kmem_free)(kvsim_sim_t *sim, uint64_t addr, uint64_t size);
	void (*reap)(kvsim_sim_t *sim);
	void (*stats)(kvsim_sim_t *sim, kvsim_sim_stats_t *st);
} kvsim_engine_t;

/* The engine on the library's allocators (sim.c). */
extern const kvsim_engine_t kvsim_allocator_engine;

#endif
