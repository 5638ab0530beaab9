/*
 * Benchmark of segkmem: the cost of a segkmem_alloc + segkmem_free pair
 * (address space from heap_arena, page reservation, commit, decommit) on
 * real and simulated backing, with and without metadata charging, and the
 * resident set of a real kas before, during and after a burst of use.
 *
 * Usage: bench_segkmem [iterations]   (default 200000)
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <vmem/segkmem.h>

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static long
rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, res = 0;

	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &res) != 2)
		res = -1;
	fclose(f);
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static kas_t *
make(kas_backing_t b, int charge)
{
	kas_config_t cfg;

	kas_config_init(&cfg);
	cfg.backing = b;
	cfg.size = (size_t)256 << 20;
	cfg.charge_metadata = charge;
	return kas_create(&cfg);
}

/* ns per alloc+free pair of npages, keeping `live` allocations around. */
static double
pair_cost(kas_backing_t b, int charge, size_t npages, long iters,
    int touch)
{
	kas_t *kas = make(b, charge);
	vmem_t *heap = kas_heap_arena(kas);
	size_t size = npages * kas_pagesize(kas);
	enum { LIVE = 64 };
	void *live[LIVE];
	double t0, t1;
	long i;

	for (i = 0; i < LIVE; i++)
		live[i] = segkmem_alloc(heap, size, VM_SLEEP);
	t0 = now_ns();
	for (i = 0; i < iters; i++) {
		int k = (int)(i % LIVE);

		segkmem_free(heap, live[k], size);
		live[k] = segkmem_alloc(heap, size, VM_SLEEP);
		if (touch)
			((char *)live[k])[0] = 1;
	}
	t1 = now_ns();
	for (i = 0; i < LIVE; i++)
		segkmem_free(heap, live[i], size);
	kas_destroy(kas);
	return (t1 - t0) / (double)iters;
}

int
main(int argc, char **argv)
{
	long iters = argc > 1 ? atol(argv[1]) : 200000;
	size_t np[] = { 1, 4, 16 };
	size_t i;
	kas_t *kas;
	char *p;
	long r0, r1, r2;
	size_t burst = (size_t)64 << 20;

	printf("segkmem_alloc + segkmem_free, ns per pair (%ld pairs, 64 "
	    "live)\n", iters);
	printf("%-8s %10s %10s %10s %14s\n", "pages", "sim", "sim+charge",
	    "real", "real+touch");
	for (i = 0; i < sizeof (np) / sizeof (np[0]); i++) {
		long it = iters / (long)np[i];

		printf("%-8zu %10.1f %10.1f %10.1f %14.1f\n", np[i],
		    pair_cost(KAS_SIM, 0, np[i], iters, 0),
		    pair_cost(KAS_SIM, 1, np[i], iters, 0),
		    pair_cost(KAS_REAL, 0, np[i], it, 0),
		    pair_cost(KAS_REAL, 0, np[i], it, 1));
	}

	kas = make(KAS_REAL, 0);
	r0 = rss_kib();
	p = segkmem_alloc(kas_heap_arena(kas), burst, VM_SLEEP);
	memset(p, 1, burst);
	r1 = rss_kib();
	segkmem_free(kas_heap_arena(kas), p, burst);
	r2 = rss_kib();
	printf("RSS: before %ld KiB, with 64 MiB committed and touched %ld "
	    "KiB, after free %ld KiB\n", r0, r1, r2);
	kas_destroy(kas);
	return 0;
}
