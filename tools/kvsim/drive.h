/*
 * kvsim workloads, run on any engine (sim.h): thread storm, heap growth,
 * the frontier sweep and trace replay. The loops only call the engine and
 * read its stats(), so the numbers they report are the engine's.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef KVSIM_DRIVE_H
#define KVSIM_DRIVE_H

#include <stddef.h>
#include <stdint.h>
#include <vmem/layout.h>

#include "mix.h"
#include "sim.h"
#include "trace.h"

#define KVSIM_W_STORM    0x1
#define KVSIM_W_HEAP     0x2
#define KVSIM_W_FRONTIER 0x4
#define KVSIM_W_REPLAY   0x8

typedef struct kvsim_point {
	uint64_t heap_use;        /* heap_arena bytes in use beyond boot */
	uint64_t threads;         /* most threads that still fit */
} kvsim_point_t;

typedef struct kvsim_storm_result {
	uint64_t threads;         /* created before the first failure */
	uint64_t unused;          /* address space free at failure (heap + segkp) */
	kvsim_sim_stats_t at_fail;
	double seconds;
} kvsim_storm_result_t;

typedef struct kvsim_heap_result {
	uint64_t allocs;          /* successful kmem_alloc calls */
	uint64_t heap_use;        /* heap_arena in use beyond boot at failure */
	uint64_t unused;          /* heap_arena free at failure */
	uint64_t fail_size;       /* the request that failed */
	kvsim_sim_stats_t at_fail;
	double seconds;
} kvsim_heap_result_t;

typedef struct kvsim_replay_result {
	size_t applied;           /* events applied */
	uint32_t fail_line;       /* 0, or the trace line that failed */
	int fail_op;              /* kvsim_op_t of the failed event */
	kvsim_sim_stats_t at_end;
	double seconds;
} kvsim_replay_result_t;

typedef struct kvsim_run {
	layout_t layout;
	char error[LAYOUT_MSGLEN]; /* boot failure; workloads not run */
	kvsim_sim_stats_t at_boot;
	unsigned done;            /* KVSIM_W_* that ran */
	kvsim_storm_result_t storm;
	kvsim_heap_result_t heap;
	kvsim_point_t *frontier;
	size_t nfrontier;
	double frontier_seconds;
	kvsim_replay_result_t replay;
	double seconds;           /* all workloads of this placement */
} kvsim_run_t;

typedef struct kvsim_drive_opts {
	const kvsim_engine_t *engine;
	int charge_metadata;
	const kvsim_mix_t *mix;
	uint64_t seed;
	uint64_t step;            /* frontier step in bytes */
	const kvsim_trace_t *trace;
	unsigned workloads;       /* KVSIM_W_* */
	void (*progress)(void *arg, const char *line);
	void *progress_arg;
} kvsim_drive_opts_t;

/* Run the selected workloads on layout l; 0, or -1 with run->error. */
int kvsim_drive(const kvsim_drive_opts_t *o, const layout_t *l,
    kvsim_run_t *run);
void kvsim_run_free(kvsim_run_t *run);

#endif
