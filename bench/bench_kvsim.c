/*
 * bench_kvsim: kvsim's two performance figures.
 *
 *  1. The default scenario (1 GiB, 2005 rules, 2-page stacks, fixed 200 MiB
 *     segkp versus fromheap; thread storm, heap growth and frontier at a
 *     16 MiB step), timed end to end per placement, without drawing.
 *  2. Trace replay: a synthetic 10,000,000-event trace (kmem_alloc from
 *     the default mix, frees of live allocations, thread creation and
 *     exit), generated in memory, parsed by kvsim's trace parser and
 *     replayed through the engine; events per second for each stage.
 *
 * Usage: bench_kvsim [events]   (default 10000000)
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tools/kvsim/trace.c"
#include "../tools/kvsim/mix.c"
#include "../tools/kvsim/drive.c"
#include "../tools/kvsim/sim.c"

static double
seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
default_scenario(void)
{
	kvsim_mix_t mix;
	layout_params_t p;
	layout_t l;
	kvsim_drive_opts_t o;
	kvsim_run_t run;
	double total = 0;

	kvsim_mix_default(&mix);
	memset(&o, 0, sizeof (o));
	o.engine = &kvsim_allocator_engine;
	o.charge_metadata = 1;
	o.mix = &mix;
	o.seed = 1;
	o.step = 16 << 20;
	o.workloads = KVSIM_W_STORM | KVSIM_W_HEAP | KVSIM_W_FRONTIER;
	for (int placement = 0; placement < 2; placement++) {
		layout_params_default(&p);
		p.placement = placement == 0 ? LAYOUT_SEGKP_FIXED :
		    LAYOUT_SEGKP_FROMHEAP;
		if (layout_compute(&p, &l) != 0 || kvsim_drive(&o, &l, &run)) {
			fprintf(stderr, "default scenario failed\n");
			exit(1);
		}
		printf("default %-8s  %.3f s  (storm %llu threads, %zu "
		    "frontier points)\n", layout_placement_name(p.placement),
		    run.seconds, (unsigned long long)run.storm.threads,
		    run.nfrontier);
		total += run.seconds;
		kvsim_run_free(&run);
	}
	printf("default total     %.3f s   (target < 2 s)\n", total);
}

/* A trace of n events that the default kernel can replay to the end. */
static char *
make_trace(size_t n, size_t *len)
{
	enum { MAX_ALLOCS = 100000, MAX_THREADS = 2000 };
	static uint64_t alloc_id[MAX_ALLOCS], alloc_size[MAX_ALLOCS];
	static uint64_t thread_id[MAX_THREADS];
	size_t nalloc = 0, nthread = 0;
	uint64_t next_id = 1;
	kvsim_mix_t mix;
	kvsim_rng_t rng;
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	kvsim_mix_default(&mix);
	kvsim_rng_seed(&rng, 7);
	fprintf(f, "# synthetic trace: %zu events\n", n);
	for (size_t i = 0; i < n; i++) {
		unsigned r = (unsigned)(kvsim_rng_next(&rng) % 100);
		if (r < 4 && nthread < MAX_THREADS) {
			thread_id[nthread] = next_id++;
			fprintf(f, "%zu thread_create 0 %llu\n", i,
			    (unsigned long long)thread_id[nthread++]);
		} else if (r < 8 && nthread > 0) {
			size_t k = kvsim_rng_next(&rng) % nthread;
			fprintf(f, "%zu thread_exit 0 %llu\n", i,
			    (unsigned long long)thread_id[k]);
			thread_id[k] = thread_id[--nthread];
		} else if ((r < 54 && nalloc < MAX_ALLOCS) || nalloc == 0) {
			alloc_id[nalloc] = next_id++;
			alloc_size[nalloc] = kvsim_mix_sample(&mix, &rng);
			fprintf(f, "%zu alloc %llu %llu\n", i,
			    (unsigned long long)alloc_size[nalloc],
			    (unsigned long long)alloc_id[nalloc]);
			nalloc++;
		} else {
			size_t k = kvsim_rng_next(&rng) % nalloc;
			fprintf(f, "%zu free %llu %llu\n", i,
			    (unsigned long long)alloc_size[k],
			    (unsigned long long)alloc_id[k]);
			alloc_id[k] = alloc_id[--nalloc];
			alloc_size[k] = alloc_size[nalloc];
		}
	}
	fclose(f);
	return buf;
}

static void
replay(size_t n)
{
	kvsim_trace_t trace;
	kvsim_mix_t mix;
	layout_params_t p;
	layout_t l;
	kvsim_drive_opts_t o;
	kvsim_run_t run;
	char err[KVSIM_TRACE_ERRLEN];
	size_t len;
	double t0;
	char *text = make_trace(n, &len);

	t0 = seconds();
	if (kvsim_trace_parse(text, len, &trace, err, sizeof (err)) != 0) {
		fprintf(stderr, "parse: %s\n", err);
		exit(1);
	}
	printf("parse   %zu events in %.3f s: %.2f M events/s (%.0f MiB of "
	    "text)\n", trace.nevents, seconds() - t0,
	    (double)trace.nevents / (seconds() - t0) / 1e6,
	    (double)len / (1 << 20));
	free(text);
	kvsim_mix_default(&mix);
	memset(&o, 0, sizeof (o));
	o.engine = &kvsim_allocator_engine;
	o.charge_metadata = 1;
	o.mix = &mix;
	o.trace = &trace;
	o.workloads = KVSIM_W_REPLAY;
	layout_params_default(&p);
	p.placement = LAYOUT_SEGKP_FROMHEAP;
	if (layout_compute(&p, &l) != 0 || kvsim_drive(&o, &l, &run) != 0) {
		fprintf(stderr, "replay failed\n");
		exit(1);
	}
	printf("replay  %zu of %zu events in %.3f s: %.2f M events/s "
	    "(target >= 5)\n", (size_t)run.replay.applied, trace.nevents,
	    run.replay.seconds,
	    (double)run.replay.applied / run.replay.seconds / 1e6);
	kvsim_run_free(&run);
	kvsim_trace_free(&trace);
}

int
main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 10000000;

	default_scenario();
	replay(n);
	return 0;
}
