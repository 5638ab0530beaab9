/*
 * Object cache and kmem_alloc benchmarks K1-K3 (docs in
 * ../shared/docs/benchmark-workloads.md), with glibc malloc and, when
 * their shared libraries are installed, jemalloc and mimalloc measured in
 * the same run (loaded with dlopen, so building never needs them).
 *
 *   K1  64-byte kmem_cache_alloc/free pairs, 1 and 2 threads
 *   K2  kmem_alloc/kmem_free, sizes 16..4096 log2-uniform, 10,000 live,
 *       random replacement
 *   K3  producer/consumer: one thread allocates, the other frees
 *
 * Each figure is the median of 5 runs, in ns per call (alloc or free). The
 * CPU-id path (rseq or sched_getcpu; VMEM_NO_RSEQ=1 forces the latter) is
 * printed with the results. Usage: bench_kmem [scale] (default 1). jemalloc
 * is loaded with dlopen after the program re-executes itself once with a
 * larger static TLS surplus (bench_reexec.h).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vmem/kmem.h>

#include "bench_reexec.h"
#include "platform.h"

#define RUNS 5

typedef struct allocator {
	const char *name;
	void *(*alloc)(size_t);
	void (*free)(void *, size_t);
} allocator_t;

static kmem_cache_t *k1_cache, *k1_cache2;

static void *kmem_a(size_t n) { return kmem_alloc(n, KM_SLEEP); }
static void kmem_f(void *p, size_t n) { kmem_free(p, n); }
static void *cache_a(size_t n) { (void)n; return kmem_cache_alloc(k1_cache, KM_SLEEP); }
static void cache_f(void *p, size_t n) { (void)n; kmem_cache_free(k1_cache, p); }
static void *cache2_a(size_t n) { (void)n; return kmem_cache_alloc(k1_cache2, KM_SLEEP); }
static void cache2_f(void *p, size_t n) { (void)n; kmem_cache_free(k1_cache2, p); }
static void *glibc_a(size_t n) { return malloc(n); }
static void glibc_f(void *p, size_t n) { (void)n; free(p); }

static void *(*je_malloc)(size_t);
static void (*je_free)(void *);
static void *(*mi_malloc)(size_t);
static void (*mi_free)(void *);
static void *je_a(size_t n) { return je_malloc(n); }
static void je_f(void *p, size_t n) { (void)n; je_free(p); }
static void *mi_a(size_t n) { return mi_malloc(n); }
static void mi_f(void *p, size_t n) { (void)n; mi_free(p); }

static allocator_t others[3];
static int nothers;

static void
load_others(void)
{
	void *h;

	/* Under LD_PRELOAD=libjemalloc.so.2 the malloc column is jemalloc;
	 * otherwise main has made room for jemalloc's static TLS and it is
	 * loaded beside glibc. */
	others[nothers++] = (allocator_t){ dlsym(RTLD_DEFAULT, "mallctl") ?
	    "jemalloc" : "glibc", glibc_a, glibc_f };
	h = dlopen("libjemalloc.so.2", RTLD_NOW | RTLD_LOCAL);
	if (h != NULL && (je_malloc = (void *(*)(size_t))dlsym(h, "malloc")) &&
	    (je_free = (void (*)(void *))dlsym(h, "free")))
		others[nothers++] = (allocator_t){ "jemalloc", je_a, je_f };
	h = dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL);
	if (h != NULL && (mi_malloc = (void *(*)(size_t))dlsym(h,
	    "mi_malloc")) && (mi_free = (void (*)(void *))dlsym(h, "mi_free")))
		others[nothers++] = (allocator_t){ "mimalloc", mi_a, mi_f };
}

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
median(double *v)
{
	qsort(v, RUNS, sizeof (double), cmp_double);
	return v[RUNS / 2];
}

/* ---- K1 ---- */
typedef struct k1_arg {
	const allocator_t *al;
	long pairs;
	double ns;
} k1_arg_t;

static atomic_int k1_go;

static void *
k1_thread(void *arg)
{
	k1_arg_t *a = arg;
	volatile char *sink;
	double t0;
	long i;

	while (!atomic_load(&k1_go))
		continue;
	t0 = now_ns();
	for (i = 0; i < a->pairs; i++) {
		sink = a->al->alloc(64);
		sink[0] = 1;
		a->al->free((void *)sink, 64);
	}
	a->ns = now_ns() - t0;
	return NULL;
}

/* ns per call (an alloc or a free), per thread, of the slower thread;
 * thread t uses al[t]. */
static double
k1_run_each(const allocator_t *const al[2], int nthreads, long pairs)
{
	double v[RUNS];
	int r, t;

	for (r = 0; r < RUNS; r++) {
		pthread_t th[2];
		k1_arg_t args[2];
		double worst = 0;

		atomic_store(&k1_go, 0);
		for (t = 0; t < nthreads; t++) {
			args[t] = (k1_arg_t){ al[t], pairs, 0 };
			pthread_create(&th[t], NULL, k1_thread, &args[t]);
		}
		atomic_store(&k1_go, 1);
		for (t = 0; t < nthreads; t++) {
			pthread_join(th[t], NULL);
			if (args[t].ns > worst)
				worst = args[t].ns;
		}
		v[r] = worst / (2.0 * (double)pairs);
	}
	return median(v);
}

static double
k1_run(const allocator_t *al, int nthreads, long pairs)
{
	const allocator_t *const both[2] = { al, al };

	return k1_run_each(both, nthreads, pairs);
}

/* ---- K2 ---- */
#define K2_LIVE 10000
static size_t *k2_sizes;
static unsigned *k2_slots;

static void
k2_prepare(long ops)
{
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	long i;

	k2_sizes = malloc(sizeof (size_t) * (size_t)(ops + K2_LIVE));
	k2_slots = malloc(sizeof (unsigned) * (size_t)ops);
	for (i = 0; i < ops + K2_LIVE; i++) {
		double u;
		s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
		u = (double)((s * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
		k2_sizes[i] = (size_t)exp2(4.0 + 8.0 * u); /* 16 .. 4096 */
		if (i < ops) {
			s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
			k2_slots[i] = (unsigned)(((s * 0x2545f4914f6cdd1dULL) >> 33) %
			    K2_LIVE);
		}
	}
}

static double
k2_run(const allocator_t *al, long ops)
{
	static void *live[K2_LIVE];
	static size_t livesz[K2_LIVE];
	double v[RUNS];
	int r;
	long i;

	for (r = 0; r < RUNS; r++) {
		double t0;
		for (i = 0; i < K2_LIVE; i++) {
			livesz[i] = k2_sizes[i];
			live[i] = al->alloc(livesz[i]);
			((char *)live[i])[0] = 1;
		}
		t0 = now_ns();
		for (i = 0; i < ops; i++) {
			unsigned k = k2_slots[i];
			al->free(live[k], livesz[k]);
			livesz[k] = k2_sizes[K2_LIVE + i];
			live[k] = al->alloc(livesz[k]);
			((char *)live[k])[0] = 1;
		}
		v[r] = (now_ns() - t0) / (2.0 * (double)ops);
		for (i = 0; i < K2_LIVE; i++)
			al->free(live[i], livesz[i]);
	}
	return median(v);
}

/* ---- K3 ---- */
#define K3_RING 1024
static void *_Atomic k3_ring[K3_RING];
static const allocator_t *k3_al;
static long k3_n;

static void *
k3_producer(void *arg)
{
	long i;

	(void)arg;
	for (i = 0; i < k3_n; i++) {
		void *p = k3_al->alloc(64);
		unsigned k = (unsigned)(i % K3_RING);
		((char *)p)[0] = 1;
		while (atomic_load_explicit(&k3_ring[k], memory_order_acquire))
			continue;
		atomic_store_explicit(&k3_ring[k], p, memory_order_release);
	}
	return NULL;
}

static void *
k3_consumer(void *arg)
{
	long i;

	(void)arg;
	for (i = 0; i < k3_n; i++) {
		unsigned k = (unsigned)(i % K3_RING);
		void *p;
		while ((p = atomic_load_explicit(&k3_ring[k],
		    memory_order_acquire)) == NULL)
			continue;
		atomic_store_explicit(&k3_ring[k], NULL, memory_order_release);
		k3_al->free(p, 64);
	}
	return NULL;
}

/* ns per object (one alloc in one thread, one free in the other). */
static double
k3_run(const allocator_t *al, long n)
{
	double v[RUNS];
	int r;

	for (r = 0; r < RUNS; r++) {
		pthread_t a, b;
		double t0 = now_ns();
		k3_al = al;
		k3_n = n;
		pthread_create(&a, NULL, k3_producer, NULL);
		pthread_create(&b, NULL, k3_consumer, NULL);
		pthread_join(a, NULL);
		pthread_join(b, NULL);
		v[r] = (now_ns() - t0) / (double)n;
	}
	return median(v);
}

int
main(int argc, char **argv)
{
	double scale = argc > 1 ? atof(argv[1]) : 1.0;
	long k1n = (long)(10000000 * scale), k2n = (long)(2000000 * scale);
	long k3n = (long)(2000000 * scale);
	allocator_t kcache = { "kmem_cache", cache_a, cache_f };
	allocator_t kcache2 = { "kmem_cache", cache2_a, cache2_f };
	const allocator_t *const apart[2] = { &kcache, &kcache2 };
	allocator_t kheap = { "kmem_alloc", kmem_a, kmem_f };
	int i;

	if (argc > 2 || !(scale > 0)) {
		fprintf(stderr, "usage: bench_kmem [scale]  (scale > 0, default"
		    " 1: K1 10^7 pairs, K2 and K3 2x10^6 calls)\n");
		return 2;
	}
	if (dlsym(RTLD_DEFAULT, "mallctl") == NULL)
		reexec_with_static_tls(argv);
	load_others();
	k1_cache = kmem_cache_create("bench_64", 64, 0, NULL, NULL, NULL,
	    NULL, kmem_heap_arena(kmem_default_heap()), 0);
	k1_cache2 = kmem_cache_create("bench_64b", 64, 0, NULL, NULL, NULL,
	    NULL, kmem_heap_arena(kmem_default_heap()), 0);
	k2_prepare(k2n);
	printf("CPU id path: %s (%u CPUs)\n", plat_cpu_id_method(),
	    plat_ncpus());
	printf("%-6s %-22s %10s", "bench", "what", "kmem");
	for (i = 0; i < nothers; i++)
		printf(" %10s", others[i].name);
	printf("   (ns per call, median of %d)\n", RUNS);

	printf("%-6s %-22s %10.2f", "K1", "64 B pairs, 1 thread",
	    k1_run(&kcache, 1, k1n));
	for (i = 0; i < nothers; i++)
		printf(" %10.2f", k1_run(&others[i], 1, k1n));
	printf("\n%-6s %-22s %10.2f", "K1", "64 B pairs, 2 threads",
	    k1_run(&kcache, 2, k1n));
	for (i = 0; i < nothers; i++)
		printf(" %10.2f", k1_run(&others[i], 2, k1n));
	/* The same two threads sharing nothing: what the machine allows. */
	printf("\n%-6s %-22s %10.2f", "K1", "2 threads, cache each",
	    k1_run_each(apart, 2, k1n));
	for (i = 0; i < nothers; i++)
		printf(" %10s", "-");
	printf("\n%-6s %-22s %10.2f", "K2", "16..4096 B, 10k live",
	    k2_run(&kheap, k2n));
	for (i = 0; i < nothers; i++)
		printf(" %10.2f", k2_run(&others[i], k2n));
	printf("\n%-6s %-22s %10.2f", "K3", "producer/consumer",
	    k3_run(&kcache, k3n));
	for (i = 0; i < nothers; i++)
		printf(" %10.2f", k3_run(&others[i], k3n));
	printf("\n");
	kmem_cache_destroy(k1_cache);
	kmem_cache_destroy(k1_cache2);
	return 0;
}
