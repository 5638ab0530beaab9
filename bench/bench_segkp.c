/*
 * segkp benchmarks S1-S4 (see docs/SEGKP.md):
 *   S1  cached guarded 2-page stack: segkp_cache_get + segkp_release
 *   S2  the same without a cache (address space and page work each time);
 *       run "bench_segkp s2" under strace -f -c to count system calls
 *   S3  baseline: mmap + mprotect (guard page) + munmap per stack
 *   S4  10,000 threads, 1,000 alive at a time: kthread_create/join
 *       versus pthread_create/join with default attributes
 * and the address space a 2-page stack costs in fromheap mode.
 *
 * Usage: bench_segkp [all|s1|s2|s3|s4|va] [iterations]
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <vmem/kthread.h>

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static segkp_t *
bench_segment(void)
{
	static segkp_t *seg;

	if (seg == NULL) {
		seg = segkp_create(kas_default(), SEGKP_FROMHEAP, NULL, 0);
		if (seg == NULL) {
			fprintf(stderr, "segkp_create failed\n");
			exit(1);
		}
	}
	return seg;
}

static double
s1(long n)
{
	segkp_t *seg = bench_segment();
	size_t ps = segkp_pagesize(seg);
	void *ck = segkp_cache_init(seg, 16, 2 * ps, KPD_HASREDZONE);
	double t0, t1;
	void *p;

	p = segkp_cache_get(ck);
	segkp_release(seg, p);
	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		p = segkp_cache_get(ck);
		segkp_release(seg, p);
	}
	t1 = now_ns();
	segkp_cache_destroy(ck);
	return (t1 - t0) / (double)n;
}

static double
s2(long n)
{
	segkp_t *seg = bench_segment();
	size_t ps = segkp_pagesize(seg);
	double t0, t1;

	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		void *p = segkp_get(seg, 2 * ps, KPD_HASREDZONE);

		segkp_release(seg, p);
	}
	t1 = now_ns();
	return (t1 - t0) / (double)n;
}

static double
s3(long n)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	double t0, t1;

	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		char *p = mmap(NULL, 3 * ps, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			abort();
		mprotect(p, ps, PROT_NONE);
		munmap(p, 3 * ps);
	}
	t1 = now_ns();
	return (t1 - t0) / (double)n;
}

static void *
nothing(void *arg)
{
	return arg;
}

static double
s4_kthread(int total, int batch)
{
	kthread_t **t = calloc((size_t)batch, sizeof (*t));
	double t0, t1;

	kthread_init(NULL);
	t0 = now_ns();
	for (int d = 0; d < total; d += batch) {
		for (int i = 0; i < batch; i++)
			if ((t[i] = kthread_create(nothing, NULL, NULL)) == NULL)
				abort();
		for (int i = 0; i < batch; i++)
			kthread_join(t[i], NULL);
	}
	t1 = now_ns();
	free(t);
	return (t1 - t0) / total;
}

static double
s4_pthread(int total, int batch)
{
	pthread_t *t = calloc((size_t)batch, sizeof (*t));
	double t0, t1;

	t0 = now_ns();
	for (int d = 0; d < total; d += batch) {
		for (int i = 0; i < batch; i++)
			if (pthread_create(&t[i], NULL, nothing, NULL) != 0)
				abort();
		for (int i = 0; i < batch; i++)
			pthread_join(t[i], NULL);
	}
	t1 = now_ns();
	free(t);
	return (t1 - t0) / total;
}

/* Address space per 2-page guarded stack, fromheap. */
static void
va_per_stack(void)
{
	kas_t *kas = kas_create(NULL);
	segkp_t *seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
	size_t ps = segkp_pagesize(seg), n = 1000;
	void **v = calloc(n, sizeof (*v));
	segkp_stats_t st;
	vmem_stats_t vs;

	for (size_t i = 0; i < n; i++)
		v[i] = segkp_get(seg, 2 * ps, KPD_HASREDZONE);
	segkp_get_stats(seg, &st);
	vmem_get_stats(segkp_arena(seg), &vs);
	printf("VA   %zu 2-page stacks: %.1f KiB of heap address space each "
	    "(quantum caches %s), %zu VMAs (%.1f each; %zu guarded stacks "
	    "under vm.max_map_count)\n", n,
	    (double)st.va_held / 1024.0 / (double)n,
	    vs.qcache_alloc != 0 ? "on: 64 KiB slabs" :
	    "off: no provider installed", st.vmas,
	    (double)st.vmas / (double)n, st.guarded_ceiling);
	for (size_t i = 0; i < n; i++)
		segkp_release(seg, v[i]);
	free(v);
	segkp_destroy(seg);
	kas_destroy(kas);
}

int
main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "all";
	long n = argc > 2 ? atol(argv[2]) : 0;
	int all = strcmp(what, "all") == 0;
	double r1 = 0, r3 = 0;

	if (all || strcmp(what, "s1") == 0) {
		r1 = s1(n ? n : 1000000);
		printf("S1   cached get+release: %.1f ns\n", r1);
	}
	if (all || strcmp(what, "s2") == 0)
		printf("S2   uncached get+release: %.1f ns\n",
		    s2(n ? n : 100000));
	if (all || strcmp(what, "s3") == 0) {
		r3 = s3(n ? n : 100000);
		printf("S3   mmap+mprotect+munmap: %.1f ns\n", r3);
	}
	if (all)
		printf("S1 is %.0fx faster than S3 (target >= 50x)\n", r3 / r1);
	if (all || strcmp(what, "s4") == 0) {
		int total = n ? (int)n : 10000;
		double k = s4_kthread(total, 1000);
		double p = s4_pthread(total, 1000);

		printf("S4   %d threads, 1000 alive: kthread %.0f ns, "
		    "pthread default %.0f ns per create+join (%.2fx)\n",
		    total, k, p, p / k);
	}
	if (all || strcmp(what, "va") == 0)
		va_per_stack();
	return 0;
}
