/*
 * kvsim workload loops over the engine interface (drive.h, sim.h).
 *
 * Problem: the four workloads ask one question each -- how many threads,
 * how much heap, how many threads at heap use B, how far a user's trace
 * gets -- of a freshly booted address space, and must answer it from what
 * the engine measures, never from a formula.
 *
 * Each workload boots its own sim, so one workload's leftovers (cached
 * stacks, slabs) cannot skew another. The frontier boots once and walks B
 * upward: it grows the heap with mix-drawn kmem_alloc calls to the next
 * step, fills the rest with threads until creation fails, records the
 * point, exits the threads and reaps so their stacks' address space goes
 * back to heap_arena before the next step.
 *
 * Invariants: a sim is always shut down before the function returns; a
 * failed boot is reported in run->error and runs nothing.
 *
 * Single-threaded; no locks.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drive.h"

typedef struct handles {
	uint64_t *v;
	size_t n, cap;
} handles_t;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
handles_push(handles_t *h, uint64_t v)
{
	if (h->n == h->cap) {
		size_t ncap = h->cap ? h->cap * 2 : 4096;
		uint64_t *nv = realloc(h->v, ncap * sizeof (*nv));

		if (nv == NULL)
			return -1;
		h->v = nv;
		h->cap = ncap;
	}
	h->v[h->n++] = v;
	return 0;
}

static kvsim_sim_t *
boot(const kvsim_drive_opts_t *o, const layout_t *l, kvsim_run_t *run)
{
	kvsim_sim_config_t cfg = { l, o->charge_metadata };
	kvsim_sim_t *sim = o->engine->boot(&cfg, run->error,
	    sizeof (run->error));

	if (sim != NULL)
		o->engine->stats(sim, &run->at_boot);
	else if (run->error[0] == '\0')
		snprintf(run->error, sizeof (run->error), "boot failed");
	return sim;
}

static uint64_t
unused_at(const kvsim_sim_stats_t *st)
{
	return (st->heap_total - st->heap_inuse) +
	    (st->segkp_total - st->segkp_inuse);
}

/* Create default threads until one fails; their handles go to h. */
static int
fill_threads(const kvsim_engine_t *e, kvsim_sim_t *sim, handles_t *h)
{
	uint64_t t;

	while (e->thread_create(sim, 0, &t) == 0)
		if (handles_push(h, t) != 0)
			return -1;
	return 0;
}

static int
run_storm(const kvsim_drive_opts_t *o, const layout_t *l, kvsim_run_t *run)
{
	const kvsim_engine_t *e = o->engine;
	handles_t h = { NULL, 0, 0 };
	double t0 = now();
	kvsim_sim_t *sim = boot(o, l, run);
	int rc = 0;

	if (sim == NULL)
		return -1;
	if (fill_threads(e, sim, &h) != 0) {
		snprintf(run->error, sizeof (run->error), "out of memory");
		rc = -1;
	}
	e->stats(sim, &run->storm.at_fail);
	run->storm.threads = h.n;
	run->storm.unused = unused_at(&run->storm.at_fail);
	e->shutdown(sim);
	free(h.v);
	run->storm.seconds = now() - t0;
	return rc;
}

/*
 * kmem_alloc from the mix until heap use beyond boot reaches target. The
 * engine's stats are read again only after half the remaining gap has been
 * requested (heap use cannot rise by more than what is requested, plus a
 * slab), so a long growth costs a few stats calls, not one per allocation.
 */
static int
grow_heap(const kvsim_drive_opts_t *o, kvsim_sim_t *sim, kvsim_rng_t *rng,
    uint64_t base, uint64_t target, uint64_t *allocs, uint64_t *fail_size)
{
	const kvsim_engine_t *e = o->engine;
	int (*kmem_alloc)(kvsim_sim_t *, uint64_t, uint64_t *) = e->kmem_alloc;
	const kvsim_mix_t *mix = o->mix;
	kvsim_sim_stats_t st;
	uint64_t addr, n = 0;
	int rc = 0;

	for (;;) {
		uint64_t gap, since = 0, size;

		e->stats(sim, &st);
		if (st.heap_inuse - base >= target)
			break;
		gap = target - (st.heap_inuse - base);
		/* Allocate until the stats are worth reading again. */
		do {
			size = kvsim_mix_sample(mix, rng);
			if (kmem_alloc(sim, size, &addr) != 0) {
				*fail_size = size;
				rc = -1;
				goto out;
			}
			n++;
			since += size;
		} while (since < gap / 2 && gap >= (64u << 10));
	}
out:
	*allocs += n;
	return rc;
}

static int
run_heap(const kvsim_drive_opts_t *o, const layout_t *l, kvsim_run_t *run)
{
	double t0 = now();
	kvsim_sim_t *sim = boot(o, l, run);
	kvsim_rng_t rng;

	if (sim == NULL)
		return -1;
	kvsim_rng_seed(&rng, o->seed);
	(void) grow_heap(o, sim, &rng, run->at_boot.heap_inuse, UINT64_MAX,
	    &run->heap.allocs, &run->heap.fail_size);
	o->engine->stats(sim, &run->heap.at_fail);
	run->heap.heap_use = run->heap.at_fail.heap_inuse -
	    run->at_boot.heap_inuse;
	run->heap.unused = run->heap.at_fail.heap_total -
	    run->heap.at_fail.heap_inuse;
	o->engine->shutdown(sim);
	run->heap.seconds = now() - t0;
	return 0;
}

static int
frontier_point(const kvsim_drive_opts_t *o, kvsim_sim_t *sim,
    kvsim_run_t *run, handles_t *h)
{
	const kvsim_engine_t *e = o->engine;
	kvsim_sim_stats_t st;
	kvsim_point_t *np;
	char line[160];

	e->stats(sim, &st);
	h->n = 0;
	if (fill_threads(e, sim, h) != 0)
		return -1;
	np = realloc(run->frontier, (run->nfrontier + 1) * sizeof (*np));
	if (np == NULL)
		return -1;
	run->frontier = np;
	np[run->nfrontier].heap_use = st.heap_inuse - run->at_boot.heap_inuse;
	np[run->nfrontier].threads = h->n;
	run->nfrontier++;
	if (o->progress != NULL) {
		snprintf(line, sizeof (line), "frontier %s: heap %llu MiB, "
		    "%llu threads", layout_placement_name(
		    run->layout.params.placement),
		    (unsigned long long)(st.heap_inuse >> 20),
		    (unsigned long long)h->n);
		o->progress(o->progress_arg, line);
	}
	while (h->n > 0)
		e->thread_exit(sim, h->v[--h->n]);
	e->reap(sim);
	return 0;
}

static int
run_frontier(const kvsim_drive_opts_t *o, const layout_t *l,
    kvsim_run_t *run)
{
	handles_t h = { NULL, 0, 0 };
	double t0 = now();
	kvsim_sim_t *sim = boot(o, l, run);
	kvsim_rng_t rng;
	uint64_t b, allocs = 0, fail_size = 0;
	int rc = 0;

	if (sim == NULL)
		return -1;
	kvsim_rng_seed(&rng, o->seed);
	for (b = 0;; b += o->step) {
		if (grow_heap(o, sim, &rng, run->at_boot.heap_inuse, b, &allocs,
		    &fail_size) != 0) {
			/*
			 * The sweep ends where heap growth ends: that is the
			 * heap workload's result too (same mix, same seed), so
			 * a run asking for both grows the heap only once.
			 */
			o->engine->stats(sim, &run->heap.at_fail);
			run->heap.allocs = allocs;
			run->heap.fail_size = fail_size;
			run->heap.heap_use = run->heap.at_fail.heap_inuse -
			    run->at_boot.heap_inuse;
			run->heap.unused = run->heap.at_fail.heap_total -
			    run->heap.at_fail.heap_inuse;
			run->heap.seconds = now() - t0;
			run->done |= KVSIM_W_HEAP;
			break;
		}
		if (frontier_point(o, sim, run, &h) != 0) {
			snprintf(run->error, sizeof (run->error),
			    "out of memory");
			rc = -1;
			break;
		}
	}
	o->engine->shutdown(sim);
	free(h.v);
	run->frontier_seconds = now() - t0;
	return rc;
}

static int
apply_event(const kvsim_engine_t *e, kvsim_sim_t *sim,
    const kvsim_event_t *ev, uint64_t *addr, uint64_t *thr)
{
	switch (ev->op) {
	case KVSIM_OP_ALLOC:
		return e->kmem_alloc(sim, ev->size, &addr[ev->slot]);
	case KVSIM_OP_FREE:
		e->kmem_free(sim, addr[ev->slot], ev->size);
		return 0;
	case KVSIM_OP_THREAD_CREATE:
		return e->thread_create(sim, ev->size, &thr[ev->slot]);
	default:
		e->thread_exit(sim, thr[ev->slot]);
		return 0;
	}
}

static int
run_replay(const kvsim_drive_opts_t *o, const layout_t *l, kvsim_run_t *run)
{
	const kvsim_trace_t *t = o->trace;
	uint64_t *addr = calloc(t->alloc_slots + 1, sizeof (*addr));
	uint64_t *thr = calloc(t->thread_slots + 1, sizeof (*thr));
	kvsim_sim_t *sim = NULL;
	double t0 = now();
	size_t i;

	if (addr == NULL || thr == NULL ||
	    (sim = boot(o, l, run)) == NULL) {
		if (run->error[0] == '\0')
			snprintf(run->error, sizeof (run->error),
			    "out of memory");
		free(addr);
		free(thr);
		return -1;
	}
	for (i = 0; i < t->nevents; i++) {
		if (apply_event(o->engine, sim, &t->events[i], addr, thr) != 0) {
			run->replay.fail_line = t->events[i].line;
			run->replay.fail_op = t->events[i].op;
			break;
		}
	}
	run->replay.applied = i;
	o->engine->stats(sim, &run->replay.at_end);
	o->engine->shutdown(sim);
	free(addr);
	free(thr);
	run->replay.seconds = now() - t0;
	return 0;
}

int
kvsim_drive(const kvsim_drive_opts_t *o, const layout_t *l, kvsim_run_t *run)
{
	double t0 = now();
	int rc = 0;

	memset(run, 0, sizeof (*run));
	run->layout = *l;
	if (l->error_code != 0) {
		snprintf(run->error, sizeof (run->error), "%s", l->error);
		return -1;
	}
	if (rc == 0 && (o->workloads & KVSIM_W_STORM) &&
	    (rc = run_storm(o, l, run)) == 0)
		run->done |= KVSIM_W_STORM;
	if (rc == 0 && (o->workloads & KVSIM_W_FRONTIER) && o->step > 0 &&
	    (rc = run_frontier(o, l, run)) == 0)
		run->done |= KVSIM_W_FRONTIER;
	/* The frontier's last step already measured heap growth. */
	if (rc == 0 && (o->workloads & KVSIM_W_HEAP) &&
	    !(run->done & KVSIM_W_HEAP) && (rc = run_heap(o, l, run)) == 0)
		run->done |= KVSIM_W_HEAP;
	if (rc == 0 && (o->workloads & KVSIM_W_REPLAY) && o->trace != NULL &&
	    (rc = run_replay(o, l, run)) == 0)
		run->done |= KVSIM_W_REPLAY;
	run->seconds = now() - t0;
	return rc;
}

void
kvsim_run_free(kvsim_run_t *run)
{
	free(run->frontier);
	run->frontier = NULL;
	run->nfrontier = 0;
}
