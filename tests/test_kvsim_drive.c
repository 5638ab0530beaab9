/*
 * Tests of kvsim's workload loops (tools/kvsim/drive.c) against a counting
 * engine defined here: a heap of a fixed byte budget where each thread
 * costs its stack's address space and each kmem_alloc its size rounded to
 * 64 bytes. The engine is a test double for the loops' control flow only
 * (stop at the first failure, frontier steps, replay slot mapping, failure
 * lines); kvsim itself runs only on the allocator-backed engine.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L  /* clock_gettime in drive.c */
#include "../tools/kvsim/trace.c"
#include "../tools/kvsim/mix.c"
#include "../tools/kvsim/drive.c"

#include <string.h>

#include "testutil.h"

struct kvsim_sim {
	uint64_t budget, used, stack, kmem, threads, boots;
	uint64_t next_handle;
};

static int shutdowns;

static kvsim_sim_t *
cnt_boot(const kvsim_sim_config_t *cfg, char *err, size_t errlen)
{
	kvsim_sim_t *s = calloc(1, sizeof (*s));

	(void) err;
	(void) errlen;
	if (s == NULL)
		return NULL;
	s->budget = cfg->layout->heap_size;
	s->used = 4096;                       /* the first page */
	s->stack = cfg->layout->stack_va;
	return s;
}

static void
cnt_shutdown(kvsim_sim_t *s)
{
	shutdowns++;
	free(s);
}

static int
cnt_thread_create(kvsim_sim_t *s, uint64_t bytes, uint64_t *h)
{
	uint64_t cost = bytes ? bytes + 4096 : s->stack;

	if (s->used + cost > s->budget)
		return -1;
	s->used += cost;
	s->threads++;
	*h = cost << 20 | s->next_handle++;   /* remember the cost */
	return 0;
}

static void
cnt_thread_exit(kvsim_sim_t *s, uint64_t h)
{
	s->used -= h >> 20;
	s->threads--;
}

static int
cnt_kmem_alloc(kvsim_sim_t *s, uint64_t size, uint64_t *addr)
{
	uint64_t cost = (size + 63) / 64 * 64;

	if (s->used + cost > s->budget)
		return -1;
	s->used += cost;
	s->kmem += size;
	*addr = cost;
	return 0;
}

static void
cnt_kmem_free(kvsim_sim_t *s, uint64_t addr, uint64_t size)
{
	s->used -= addr;
	s->kmem -= size;
}

static void
cnt_reap(kvsim_sim_t *s)
{
	(void) s;
}

static void
cnt_stats(kvsim_sim_t *s, kvsim_sim_stats_t *st)
{
	memset(st, 0, sizeof (*st));
	st->heap_total = s->budget;
	st->heap_inuse = s->used;
	st->kmem_bytes = s->kmem;
	st->threads = s->threads;
}

static const kvsim_engine_t counting = { "counting", cnt_boot,
	cnt_shutdown, cnt_thread_create, cnt_thread_exit, cnt_kmem_alloc,
	cnt_kmem_free, cnt_reap, cnt_stats };

static kvsim_drive_opts_t
opts(const kvsim_mix_t *mix, unsigned w)
{
	kvsim_drive_opts_t o;

	memset(&o, 0, sizeof (o));
	o.engine = &counting;
	o.mix = mix;
	o.seed = 1;
	o.step = 64 << 20;
	o.workloads = w;
	return o;
}

static void
test_storm_heap_frontier(void)
{
	kvsim_mix_t mix;
	layout_params_t p;
	layout_t l;
	kvsim_run_t run;
	kvsim_drive_opts_t o;
	uint64_t avail;
	size_t i;

	kvsim_mix_default(&mix);
	layout_params_default(&p);
	p.placement = LAYOUT_SEGKP_FROMHEAP;
	REQUIRE(layout_compute(&p, &l) == 0);
	avail = l.heap_size - 4096;
	o = opts(&mix, KVSIM_W_STORM | KVSIM_W_HEAP | KVSIM_W_FRONTIER);
	shutdowns = 0;
	REQUIRE(kvsim_drive(&o, &l, &run) == 0);
	CHECK_EQ(run.done, KVSIM_W_STORM | KVSIM_W_HEAP | KVSIM_W_FRONTIER);
	/* One sim each for storm and frontier; heap growth is the frontier's last step. */
	CHECK_EQ(shutdowns, 2);
	CHECK_EQ(run.storm.threads, avail / l.stack_va);
	CHECK_EQ(run.storm.unused, avail % l.stack_va);
	CHECK(run.heap.allocs > 0);
	CHECK(run.heap.heap_use <= avail);
	CHECK(run.heap.heap_use + run.heap.fail_size + 63 > avail);
	/* Frontier: B grows by at least a step; threads fill the rest. */
	CHECK(run.nfrontier >= 9 && run.nfrontier <= 10);
	CHECK_EQ(run.frontier[0].heap_use, 0);
	CHECK_EQ(run.frontier[0].threads, avail / l.stack_va);
	for (i = 1; i < run.nfrontier; i++) {
		CHECK(run.frontier[i].heap_use >= i * o.step);
		CHECK(run.frontier[i].heap_use < i * o.step + 40000);
		CHECK_EQ(run.frontier[i].threads, (avail -
		    run.frontier[i].heap_use) / l.stack_va);
	}
	kvsim_run_free(&run);
	/* A refused layout runs nothing. */
	p.kernelbase_prop = 0xE0000000ULL;
	p.physmem = 32ULL << 30;
	CHECK(layout_compute(&p, &l) != 0);
	CHECK(kvsim_drive(&o, &l, &run) == -1);
	CHECK(strstr(run.error, "too little address space") != NULL);
	CHECK_EQ(run.done, 0);
}

static void
test_replay(void)
{
	kvsim_mix_t mix;
	layout_params_t p;
	layout_t l;
	kvsim_run_t run;
	kvsim_drive_opts_t o;
	kvsim_trace_t t;
	char err[160];
	const char *text =
	    "0 thread_create 0 1\n1 alloc 100 1\n2 alloc 1000 2\n"
	    "3 free 0 1\n4 thread_exit 0 1\n5 alloc 500000000 3\n"
	    "6 alloc 8 4\n";

	kvsim_mix_default(&mix);
	layout_params_default(&p);
	REQUIRE(layout_compute(&p, &l) == 0);
	REQUIRE(kvsim_trace_parse(text, strlen(text), &t, err,
	    sizeof (err)) == 0);
	o = opts(&mix, KVSIM_W_REPLAY);
	o.trace = &t;
	REQUIRE(kvsim_drive(&o, &l, &run) == 0);
	CHECK_EQ(run.done, KVSIM_W_REPLAY);
	CHECK_EQ(run.replay.applied, 5);        /* the 500 MB alloc fails */
	CHECK_EQ(run.replay.fail_line, 6);
	CHECK_EQ(run.replay.fail_op, KVSIM_OP_ALLOC);
	CHECK_EQ(run.replay.at_end.kmem_bytes, 1000);
	CHECK_EQ(run.replay.at_end.threads, 0);
	CHECK_EQ(run.replay.at_end.heap_inuse, 4096 + 1024);
	kvsim_run_free(&run);
	kvsim_trace_free(&t);
}

int
main(void)
{
	RUN(test_storm_heap_frontier);
	RUN(test_replay);
	return tu_finish();
}
