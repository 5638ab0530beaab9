/*
 * bench_vmem -- the vmem workloads W1..W9 of the benchmark note
 * (docs/BENCH_VMEM.md says how to run it and what each column means).
 *
 * Problem: measure what one vmem operation (one allocation call or one
 * free call) costs on the standard workloads, beside glibc malloc/free on
 * the same size mix in the same run, without measuring the benchmark.
 *
 * Structure: every workload is one row of a table (its kind and its
 * parameters). The random choices of a run (which live allocation to
 * replace, the new size, the order of frees) are drawn from a fixed seed
 * into arrays before the clock starts, so the timed loop does only the
 * allocator calls and vmem and malloc see the same sequence. Each
 * (workload, allocator) pair runs in its own forked child, so that its peak
 * RSS is its own; the child runs the workload NRUNS times, each on a fresh
 * arena, and sends the per-run times back through a pipe; the parent
 * reports the median. The reference allocators are reached through two
 * function pointers: glibc's malloc/free, or jemalloc/mimalloc loaded with
 * dlopen in the child (--ext), so the build never depends on them.
 *
 * Invariants: the timed regions are exactly the functions whose names
 * start with measured_ (callgrind counts only them, with
 * --toggle-collect=measured_*); they contain only allocator calls and the
 * loads and stores of the live table. Setup and teardown are never timed.
 *
 * Threads (W8, W9): each thread owns a disjoint slice of the live table and
 * its own pre-drawn sequence; the threads share only the arena.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L

#include <vmem/vmem.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_reexec.h"

#define PAGE            4096u
#define MAX_RUNS        15
#define DEFAULT_RUNS    5
#define SEED            0x2005c0deULL
#define KIB             ((size_t)1 << 10)
#define MIB             ((size_t)1 << 20)
#define GIB             ((size_t)1 << 30)
#define NOINLINE        __attribute__((noinline))
/* The timed loops prefetch their own live-table entry this many steps
 * ahead, so the benchmark's bookkeeping does not add cache misses to the
 * allocator's figure (the plans are padded with this many extra steps). */
#define PREFETCH_AHEAD  8
#define PREFETCH(p)     __builtin_prefetch((p), 1)

/* ---------------------------------------------------------------------- */
/* Workloads                                                               */

enum kind {
	K_REPLACE,      /* keep `live` allocations, replace one at a time */
	K_FAIL,         /* fragment the arena, time failing requests */
	K_FREEALL,      /* allocate `live`, time freeing them in random order */
	K_THREADS,      /* a K_REPLACE workload by 1 and by 2 threads */
	K_PIDS          /* a full id space, next fit: free one, allocate one */
};

/* Kinds that have no malloc counterpart: vmem alone runs them. */
static int vmem_only(enum kind k)
{
	return k == K_FAIL || k == K_PIDS;
}

enum impl { IMPL_VMEM, IMPL_GLIBC, IMPL_JEMALLOC, IMPL_MIMALLOC, NIMPL };
static const char *const impl_name[NIMPL] = {
	"vmem", "glibc", "jemalloc", "mimalloc"
};

typedef struct workload {
	const char *id;
	const char *what;
	enum kind kind;
	uintptr_t base;         /* arena span */
	size_t arena_size;
	unsigned min_pages;     /* request sizes, uniform */
	unsigned max_pages;
	int policy;             /* VM_BESTFIT or 0 (instant fit) */
	int xalloc;             /* vmem_xalloc(align 64K, nocross 1M) */
	size_t qcache_pages;    /* qcache_max in quanta */
	int import_chain;       /* W6: child arena importing from a parent */
	uint64_t live;          /* live allocations (K_FREEALL: all of them) */
	uint64_t ops;           /* timed operations per run, default */
	unsigned fill_pages;    /* K_FAIL: fill size, hole stride, request */
	unsigned hole_stride;
	unsigned fail_pages;
	const char *base_id;    /* K_THREADS: the workload each thread runs */
	double target;          /* ns/op, or K_THREADS: minimum 2t/1t ratio */
	const char *target_text;
	size_t fail_align;      /* K_FAIL: vmem_xalloc with this alignment */
} workload_t;

#define W4_ALIGN        (64 * KIB)
#define W4_NOCROSS      (1 * MIB)

static const workload_t workloads[] = {
	{ "W1", "instant fit, 1..16 pages, 10k live", K_REPLACE,
	  0x1000, 1 * GIB, 1, 16, 0, 0, 0, 0, 10000, 4000000,
	  0, 0, 0, NULL, 40, "<= 40 ns", 0 },
	{ "W2", "best fit, 1..16 pages, 10k live", K_REPLACE,
	  0x1000, 1 * GIB, 1, 16, VM_BESTFIT, 0, 0, 0, 10000, 4000000,
	  0, 0, 0, NULL, 50, "<= 50 ns", 0 },
	{ "W3", "qcache_max 8 pages, 1..8 pages, 10k live", K_REPLACE,
	  0x1000, 1 * GIB, 1, 8, 0, 0, 8, 0, 10000, 4000000,
	  0, 0, 0, NULL, 15, "<= 15 ns (issue 3)", 0 },
	{ "W4", "xalloc align 64K nocross 1M, 1..16 pages", K_REPLACE,
	  0x1000, 1 * GIB, 1, 16, 0, 1, 0, 0, 10000, 4000000,
	  0, 0, 0, NULL, 60, "<= 60 ns", 0 },
	/* 10,000 live of 1..64 pages need 1.33 GB: the 1 GiB arena of W1
	 * cannot hold them, so W4N gets 4 GiB (see docs/BENCH_VMEM.md). */
	{ "W4N", "as W4, 1..64 pages (nocross binds), 4 GiB", K_REPLACE,
	  0x1000, 4 * GIB, 1, 64, 0, 1, 0, 0, 10000, 4000000,
	  0, 0, 0, NULL, 60, "<= 60 ns", 0 },
	{ "W5", "failing 2-page alloc, 32768 1-page holes", K_FAIL,
	  0x1000, 256 * MIB, 2, 2, 0, 0, 0, 0, 0, 100000,
	  1, 2, 2, NULL, 100, "< 100 ns, flat", 0 },
	{ "W5-lo", "as W5, 1024 holes (less fragmented)", K_FAIL,
	  0x1000, 256 * MIB, 2, 2, 0, 0, 0, 0, 0, 100000,
	  1, 64, 2, NULL, 100, "< 100 ns, = W5", 0 },
	{ "W5B", "failing 3-page alloc, 16384 2-page holes", K_FAIL,
	  0x1000, 256 * MIB, 3, 3, 0, 0, 0, 0, 0, 100000,
	  2, 2, 3, NULL, 100, "< 100 ns, flat", 0 },
	{ "W5B-lo", "as W5B, 512 holes (less fragmented)", K_FAIL,
	  0x1000, 256 * MIB, 3, 3, 0, 0, 0, 0, 0, 100000,
	  2, 64, 3, NULL, 100, "< 100 ns, = W5B", 0 },
	/* Not in benchmark-workloads.md: W5 for constrained requests. The
	 * holes are at odd pages, so an 8 KiB-aligned page fits none of them,
	 * and every hole is a candidate (its class "might fit"). */
	{ "W5C", "failing xalloc 1 page align 8K, 32768 odd 1-page holes",
	  K_FAIL, 0x1000, 256 * MIB, 1, 1, 0, 0, 0, 0, 0, 100000,
	  1, 2, 1, NULL, 100, "< 100 ns, flat", 2 * PAGE },
	{ "W5C-lo", "as W5C, 1024 holes (less fragmented)", K_FAIL,
	  0x1000, 256 * MIB, 1, 1, 0, 0, 0, 0, 0, 100000,
	  1, 64, 1, NULL, 100, "< 100 ns, = W5C", 2 * PAGE },
	{ "W6", "import chain 64K <- 4K, 1..4 pages", K_REPLACE,
	  0, 0, 1, 4, 0, 0, 0, 1, 10000, 4000000,
	  0, 0, 0, NULL, 40, "<= 40 ns", 0 },
	{ "W7", "free 1M live in random order (2^40 arena)", K_FREEALL,
	  0x1000, (size_t)1 << 40, 1, 16, 0, 0, 0, 0, 1000000, 1000000,
	  0, 0, 0, NULL, 200, "<= 200 ns/free", 0 },
	/* Not in benchmark-workloads.md: a pid allocator out of pids. Every
	 * id of [1, 2^20] is taken; each step frees a random one ("exit")
	 * and allocates with VM_NEXTFIT ("fork"), which must find that one
	 * free id wherever the rotor is. ns per call (half a pair). */
	{ "WNF", "next fit, 2^20 ids all taken but one: exit + fork",
	  K_PIDS, 1, (size_t)1 << 20, 1, 1, VM_NEXTFIT, 0, 0, 0,
	  (size_t)1 << 20, 20000, 0, 0, 0, NULL, 5000, "< 5 us per call", 0 },
	{ "W8", "W3 by 1 and 2 threads, one arena", K_THREADS,
	  0, 0, 0, 0, 0, 0, 0, 0, 0, 4000000,
	  0, 0, 0, "W3", 1.6, "2t/1t >= 1.6x (issue 3)", 0 },
	{ "W9", "W1 by 1 and 2 threads, one arena", K_THREADS,
	  0, 0, 0, 0, 0, 0, 0, 0, 0, 4000000,
	  0, 0, 0, "W1", 0.9, "2t/1t >= 0.9x", 0 },
};
#define NWORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

static const workload_t *workload_find(const char *id)
{
	for (size_t i = 0; i < NWORKLOADS; i++)
		if (strcasecmp(workloads[i].id, id) == 0)
			return &workloads[i];
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* Options and results                                                     */

typedef struct options {
	int runs;
	int64_t ops;            /* -1: each workload's default */
	int64_t live;           /* 0: each workload's own live count */
	int json;
	int ext;                /* also jemalloc and mimalloc */
	int no_fork;
	int callgrind;          /* one run, in process, one impl */
	enum impl impl;
	const char *instr_file;
	const char *json_out;    /* also write JSON here */
	int selected[NWORKLOADS];
} options_t;

typedef struct result {
	int ok;
	int runs;
	uint64_t ops;           /* timed operations per run (threads: total) */
	double ns[MAX_RUNS];    /* ns per op of each run (threads: 1 thread) */
	double ns2[MAX_RUNS];   /* threads: 2 threads */
	double cpu_ns[MAX_RUNS]; /* CPU ns per op (threads: 1 thread) */
	double cpu_ns2[MAX_RUNS]; /* threads: CPU ns per op of 2 threads */
	double ns_sep[MAX_RUNS]; /* threads, vmem: 2 threads, an arena each */
	double alloc_ns[MAX_RUNS]; /* K_FREEALL: the (untimed) alloc phase */
	uint64_t fails;         /* unexpected failures (or K_FAIL successes) */
	uint64_t qcache_alloc;  /* allocations served by quantum caches */
	uint64_t hash_buckets;  /* K_FREEALL: hash size with everything live */
	uint64_t meta_bytes;    /* K_FREEALL: tags + hash with everything live */
	double load_ns;         /* K_FREEALL: one dependent load over meta_bytes */
	double transfer_ns;     /* K_THREADS: a cache line moving between CPUs */
	long baseline_rss_kb;   /* before the allocator runs */
	long peak_rss_kb;
	char note[160];
} result_t;

/* ---------------------------------------------------------------------- */
/* Small tools: PRNG, clock, RSS, median                                   */

static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rng_range(uint64_t *state, unsigned lo, unsigned hi)
{
	return lo + (unsigned)(rng_next(state) % (uint64_t)(hi - lo + 1));
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* CPU time of this process: unlike the wall clock, it does not count the
 * time another process held the CPU (the machine is shared). */
static double cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static long rss_now_kb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static long maxrss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* The high-water mark: getrusage, plus samples taken at the peaks. */
static long peak_seen_kb;
static void rss_sample(void)
{
	long now = rss_now_kb();
	if (now > peak_seen_kb)
		peak_seen_kb = now;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
	double tmp[MAX_RUNS];
	if (n <= 0)
		return 0;
	memcpy(tmp, v, (size_t)n * sizeof(double));
	qsort(tmp, (size_t)n, sizeof(double), cmp_double);
	return (n % 2) ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static double min_of(const double *v, int n)
{
	double m = n > 0 ? v[0] : 0;
	for (int i = 1; i < n; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (p == NULL) {
		fprintf(stderr, "bench_vmem: out of memory\n");
		exit(2);
	}
	return p;
}

/* ---------------------------------------------------------------------- */
/* Reference allocators                                                    */

static void *(*ref_malloc)(size_t);
static void (*ref_free)(void *);

/* Point ref_malloc/ref_free at impl; 0 on success. */
static int ref_select(enum impl impl, char *note, size_t notelen)
{
	static const char *const lib[NIMPL] = {
		NULL, NULL, "libjemalloc.so.2", "libmimalloc.so.2"
	};
	static const char *const sym_malloc[NIMPL] = {
		NULL, NULL, "malloc", "mi_malloc"
	};
	static const char *const sym_free[NIMPL] = {
		NULL, NULL, "free", "mi_free"
	};
	if (impl == IMPL_GLIBC || impl == IMPL_VMEM) {
		ref_malloc = malloc;
		ref_free = free;
		return 0;
	}
	void *h = dlopen(lib[impl], RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		snprintf(note, notelen, "%s not available: %s", lib[impl],
		    dlerror());
		return -1;
	}
	void *m = dlsym(h, sym_malloc[impl]);
	void *f = dlsym(h, sym_free[impl]);
	if (m == NULL || f == NULL) {
		snprintf(note, notelen, "%s: no %s/%s", lib[impl],
		    sym_malloc[impl], sym_free[impl]);
		return -1;
	}
	/* POSIX guarantees function pointers round-trip through void *. */
	memcpy(&ref_malloc, &m, sizeof(m));
	memcpy(&ref_free, &f, sizeof(f));
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Pre-drawn plans                                                         */

typedef struct step {
	uint32_t slot;          /* live allocation to replace */
	uint32_t size;          /* new size in bytes */
} step_t;

typedef struct plan {
	uint64_t live;
	uint32_t *init_size;    /* [live] bytes of the initial allocations */
	uint64_t nsteps;
	step_t *steps;          /* [nsteps] replacements */
	uint32_t *order;        /* K_FREEALL: [live] free order */
} plan_t;

static void plan_make(plan_t *p, uint64_t seed, uint64_t live,
    uint64_t nsteps, unsigned minp, unsigned maxp, int with_order)
{
	uint64_t rng = seed;
	p->live = live;
	p->nsteps = nsteps;
	p->init_size = xcalloc(live, sizeof(uint32_t));
	p->steps = xcalloc(nsteps + PREFETCH_AHEAD, sizeof(step_t));
	p->order = NULL;
	for (uint64_t i = 0; i < live; i++)
		p->init_size[i] = rng_range(&rng, minp, maxp) * PAGE;
	for (uint64_t i = 0; i < nsteps && live > 0; i++) {
		p->steps[i].slot = (uint32_t)(rng_next(&rng) % live);
		p->steps[i].size = rng_range(&rng, minp, maxp) * PAGE;
	}
	if (with_order) {
		p->order = xcalloc(live + PREFETCH_AHEAD, sizeof(uint32_t));
		for (uint64_t i = 0; i < live; i++)
			p->order[i] = (uint32_t)i;
		for (uint64_t i = live; i > 1; i--) {
			uint64_t j = rng_next(&rng) % i;
			uint32_t t = p->order[i - 1];
			p->order[i - 1] = p->order[j];
			p->order[j] = t;
		}
	}
}

static void plan_free(plan_t *p)
{
	free(p->init_size);
	free(p->steps);
	free(p->order);
}

/*
 * The live allocations: address and size of each slot, side by side, so
 * that the benchmark's own bookkeeping costs one cache line per operation
 * (and the timed loops prefetch it a few steps ahead: see PREFETCH_AHEAD).
 */
typedef struct slot {
	void *addr;
	size_t size;
} slot_t;

typedef struct live {
	uint64_t n;
	slot_t *slot;
} live_t;

static void live_init(live_t *lv, uint64_t n)
{
	lv->n = n;
	lv->slot = xcalloc(n, sizeof(slot_t));
}

static void live_fini(live_t *lv)
{
	free(lv->slot);
}

/* ---------------------------------------------------------------------- */
/* Arenas                                                                  */

typedef struct arenas {
	vmem_t *parent;         /* W6 only */
	vmem_t *vmp;            /* the arena the workload uses */
} arenas_t;

static void arenas_create(const workload_t *w, arenas_t *a)
{
	a->parent = NULL;
	if (w->import_chain) {
		/* Parent quantum 64 KiB; the child has no span of its own and
		 * imports with vmem_alloc, so each import is 64 KiB-rounded. */
		a->parent = vmem_create("bench.w6.parent", (void *)(uintptr_t)
		    (64 * KIB), 4 * GIB, 64 * KIB, NULL, NULL, NULL, 0,
		    VM_SLEEP);
		a->vmp = a->parent == NULL ? NULL : vmem_create(
		    "bench.w6.child", NULL, 0, PAGE, vmem_alloc, vmem_free,
		    a->parent, 0, VM_SLEEP);
	} else {
		a->vmp = vmem_create("bench", (void *)w->base, w->arena_size,
		    PAGE, NULL, NULL, NULL, w->qcache_pages * PAGE, VM_SLEEP);
	}
	if (a->vmp == NULL) {
		fprintf(stderr, "bench_vmem: %s: vmem_create failed\n", w->id);
		exit(2);
	}
}

static void arenas_destroy(arenas_t *a)
{
	vmem_destroy(a->vmp);
	if (a->parent != NULL)
		vmem_destroy(a->parent);
}

static uint64_t qcache_allocs(vmem_t *vmp)
{
	vmem_stats_t st;
	vmem_get_stats(vmp, &st);
	return st.qcache_alloc;
}

/* ---------------------------------------------------------------------- */
/* The timed regions (callgrind: --toggle-collect=measured_*)              */

NOINLINE static uint64_t measured_replace_vmem(vmem_t *vmp, live_t *lv,
    const step_t *steps, uint64_t nsteps, int vmflag)
{
	uint64_t fails = 0;
	for (uint64_t i = 0; i < nsteps; i++) {
		uint32_t s = steps[i].slot;
		PREFETCH(&lv->slot[steps[i + PREFETCH_AHEAD].slot]);
		if (lv->slot[s].addr != NULL)
			vmem_free(vmp, lv->slot[s].addr, lv->slot[s].size);
		void *p = vmem_alloc(vmp, steps[i].size, vmflag);
		fails += (p == NULL);
		lv->slot[s].addr = p;
		lv->slot[s].size = steps[i].size;
	}
	return fails;
}

NOINLINE static uint64_t measured_replace_vmem_x(vmem_t *vmp, live_t *lv,
    const step_t *steps, uint64_t nsteps, int vmflag)
{
	uint64_t fails = 0;
	for (uint64_t i = 0; i < nsteps; i++) {
		uint32_t s = steps[i].slot;
		PREFETCH(&lv->slot[steps[i + PREFETCH_AHEAD].slot]);
		if (lv->slot[s].addr != NULL)
			vmem_xfree(vmp, lv->slot[s].addr, lv->slot[s].size);
		void *p = vmem_xalloc(vmp, steps[i].size, W4_ALIGN, 0,
		    W4_NOCROSS, NULL, NULL, vmflag);
		fails += (p == NULL);
		lv->slot[s].addr = p;
		lv->slot[s].size = steps[i].size;
	}
	return fails;
}

NOINLINE static uint64_t measured_replace_malloc(live_t *lv,
    const step_t *steps, uint64_t nsteps)
{
	uint64_t fails = 0;
	for (uint64_t i = 0; i < nsteps; i++) {
		uint32_t s = steps[i].slot;
		PREFETCH(&lv->slot[steps[i + PREFETCH_AHEAD].slot]);
		ref_free(lv->slot[s].addr);
		void *p = ref_malloc(steps[i].size);
		fails += (p == NULL);
		lv->slot[s].addr = p;
		lv->slot[s].size = steps[i].size;
	}
	return fails;
}

/* Returns how many of the requests that must fail succeeded. */
NOINLINE static uint64_t measured_fail_vmem(vmem_t *vmp, size_t size,
    uint64_t n)
{
	uint64_t succeeded = 0;
	for (uint64_t i = 0; i < n; i++) {
		void *p = vmem_alloc(vmp, size, VM_NOSLEEP);
		if (p != NULL) {
			succeeded++;
			vmem_free(vmp, p, size);
		}
	}
	return succeeded;
}

NOINLINE static uint64_t measured_fail_vmem_x(vmem_t *vmp, size_t size,
    size_t align, uint64_t n)
{
	uint64_t succeeded = 0;
	for (uint64_t i = 0; i < n; i++) {
		void *p = vmem_xalloc(vmp, size, align, 0, 0, NULL, NULL,
		    VM_NOSLEEP);
		if (p != NULL) {
			succeeded++;
			vmem_xfree(vmp, p, size);
		}
	}
	return succeeded;
}

NOINLINE static void measured_free_all_vmem(vmem_t *vmp, live_t *lv,
    const uint32_t *order)
{
	for (uint64_t i = 0; i < lv->n; i++) {
		uint32_t s = order[i];
		PREFETCH(&lv->slot[order[i + PREFETCH_AHEAD]]);
		if (lv->slot[s].addr != NULL)
			vmem_free(vmp, lv->slot[s].addr, lv->slot[s].size);
		lv->slot[s].addr = NULL;
	}
}

NOINLINE static void measured_free_all_malloc(live_t *lv,
    const uint32_t *order)
{
	for (uint64_t i = 0; i < lv->n; i++) {
		uint32_t s = order[i];
		PREFETCH(&lv->slot[order[i + PREFETCH_AHEAD]]);
		ref_free(lv->slot[s].addr);
		lv->slot[s].addr = NULL;
	}
}

/* ---------------------------------------------------------------------- */
/* Setup and teardown of the live set (never timed)                        */

static uint64_t setup_fill(enum impl impl, vmem_t *vmp, live_t *lv,
    const uint32_t *sizes, int vmflag)
{
	uint64_t fails = 0;
	for (uint64_t i = 0; i < lv->n; i++) {
		lv->slot[i].size = sizes[i];
		lv->slot[i].addr = impl == IMPL_VMEM ?
		    vmem_alloc(vmp, sizes[i], vmflag | VM_NOSLEEP) :
		    ref_malloc(sizes[i]);
		fails += (lv->slot[i].addr == NULL);
	}
	return fails;
}

static uint64_t setup_fill_x(vmem_t *vmp, live_t *lv, const uint32_t *sizes)
{
	uint64_t fails = 0;
	for (uint64_t i = 0; i < lv->n; i++) {
		lv->slot[i].size = sizes[i];
		lv->slot[i].addr = vmem_xalloc(vmp, sizes[i], W4_ALIGN, 0,
		    W4_NOCROSS, NULL, NULL, VM_NOSLEEP);
		fails += (lv->slot[i].addr == NULL);
	}
	return fails;
}

static void teardown_live(enum impl impl, vmem_t *vmp, live_t *lv, int x)
{
	for (uint64_t i = 0; i < lv->n; i++) {
		if (lv->slot[i].addr == NULL)
			continue;
		if (impl != IMPL_VMEM)
			ref_free(lv->slot[i].addr);
		else if (x)
			vmem_xfree(vmp, lv->slot[i].addr, lv->slot[i].size);
		else
			vmem_free(vmp, lv->slot[i].addr, lv->slot[i].size);
		lv->slot[i].addr = NULL;
	}
}

/* ---------------------------------------------------------------------- */
/* K_REPLACE                                                               */

static uint64_t replace_once(const workload_t *w, enum impl impl,
    arenas_t *a, live_t *lv, const plan_t *p)
{
	int vmflag = VM_NOSLEEP | w->policy;
	if (impl != IMPL_VMEM)
		return measured_replace_malloc(lv, p->steps, p->nsteps);
	if (w->xalloc)
		return measured_replace_vmem_x(a->vmp, lv, p->steps, p->nsteps,
		    vmflag);
	return measured_replace_vmem(a->vmp, lv, p->steps, p->nsteps, vmflag);
}

static void run_replace(const workload_t *w, enum impl impl, uint64_t ops,
    int runs, result_t *r)
{
	plan_t p;
	live_t lv;
	plan_make(&p, SEED, w->live, ops / 2, w->min_pages, w->max_pages, 0);
	live_init(&lv, w->live);
	r->ops = 2 * p.nsteps;
	r->baseline_rss_kb = maxrss_kb();
	for (int run = 0; run < runs; run++) {
		arenas_t a = { NULL, NULL };
		if (impl == IMPL_VMEM)
			arenas_create(w, &a);
		r->fails += w->xalloc && impl == IMPL_VMEM ?
		    setup_fill_x(a.vmp, &lv, p.init_size) :
		    setup_fill(impl, a.vmp, &lv, p.init_size, w->policy);
		rss_sample();
		double c0 = cpu_ns(), t0 = now_ns();
		r->fails += replace_once(w, impl, &a, &lv, &p);
		double t1 = now_ns(), c1 = cpu_ns();
		r->ns[run] = r->ops ? (t1 - t0) / (double)r->ops : 0;
		r->cpu_ns[run] = r->ops ? (c1 - c0) / (double)r->ops : 0;
		rss_sample();
		if (impl == IMPL_VMEM)
			r->qcache_alloc = qcache_allocs(a.vmp);
		teardown_live(impl, a.vmp, &lv, w->xalloc);
		if (impl == IMPL_VMEM)
			arenas_destroy(&a);
	}
	live_fini(&lv);
	plan_free(&p);
}

/* ---------------------------------------------------------------------- */
/* K_FAIL                                                                  */

static void run_fail(const workload_t *w, uint64_t ops, int runs,
    result_t *r)
{
	size_t fill = (size_t)w->fill_pages * PAGE;
	double first_min = 0, first_max = 0;
	live_t lv;
	live_init(&lv, w->arena_size / fill);
	r->ops = ops;
	r->baseline_rss_kb = maxrss_kb();
	for (int run = 0; run < runs; run++) {
		arenas_t a;
		arenas_create(w, &a);
		for (uint64_t i = 0; i < lv.n; i++) {
			lv.slot[i].size = fill;
			lv.slot[i].addr = vmem_alloc(a.vmp, fill, VM_NOSLEEP);
			r->fails += (lv.slot[i].addr == NULL);
		}
		for (uint64_t i = 0; i < lv.n; i += w->hole_stride) {
			if (lv.slot[i].addr != NULL)
				vmem_free(a.vmp, lv.slot[i].addr, fill);
			lv.slot[i].addr = NULL;
		}
		rss_sample();
		if (w->fail_align != 0) {
			/* The first constrained failure reads every hole (and
			 * remembers that none fits): timed apart, untimed by
			 * callgrind (not a measured_ function). */
			double f0 = now_ns();
			void *p = vmem_xalloc(a.vmp, (size_t)w->fail_pages *
			    PAGE, w->fail_align, 0, 0, NULL, NULL, VM_NOSLEEP);
			double first_ns = now_ns() - f0;
			if (run == 0 || first_ns < first_min)
				first_min = first_ns;
			if (first_ns > first_max)
				first_max = first_ns;
			if (p != NULL) {
				r->fails++;
				vmem_xfree(a.vmp, p, (size_t)w->fail_pages * PAGE);
			}
		}
		double c0 = cpu_ns(), t0 = now_ns();
		if (w->fail_align != 0)
			r->fails += measured_fail_vmem_x(a.vmp,
			    (size_t)w->fail_pages * PAGE, w->fail_align, ops);
		else
			r->fails += measured_fail_vmem(a.vmp,
			    (size_t)w->fail_pages * PAGE, ops);
		double t1 = now_ns(), c1 = cpu_ns();
		r->ns[run] = ops ? (t1 - t0) / (double)ops : 0;
		r->cpu_ns[run] = ops ? (c1 - c0) / (double)ops : 0;
		teardown_live(IMPL_VMEM, a.vmp, &lv, 0);
		arenas_destroy(&a);
	}
	snprintf(r->note, sizeof(r->note), "%llu holes of %u pages",
	    (unsigned long long)((lv.n + w->hole_stride - 1) / w->hole_stride),
	    w->fill_pages);
	if (w->fail_align != 0)
		snprintf(r->note + strlen(r->note), sizeof(r->note) -
		    strlen(r->note), "; the first failing call of a run (it "
		    "reads every hole) %.1f-%.1f us, untimed", first_min / 1000,
		    first_max / 1000);
	live_fini(&lv);
}

/* ---------------------------------------------------------------------- */
/* K_PIDS                                                                  */

/* n exit+fork pairs; returns how many forks did not get the exited id. */
NOINLINE static uint64_t measured_pids_vmem(vmem_t *vmp, const uint32_t *exits,
    uint64_t n)
{
	uint64_t wrong = 0;
	for (uint64_t i = 0; i < n; i++) {
		uintptr_t id = exits[i];
		vmem_free(vmp, (void *)id, 1);
		wrong += (uintptr_t)vmem_alloc(vmp, 1, VM_NOSLEEP | VM_NEXTFIT)
		    != id;
	}
	return wrong;
}

static void run_pids(const workload_t *w, uint64_t ops, int runs,
    result_t *r)
{
	uint64_t pairs = ops / 2 > 0 ? ops / 2 : 1, rng = 42;
	uint32_t *exits = xcalloc(pairs, sizeof(uint32_t));

	for (uint64_t i = 0; i < pairs; i++)
		exits[i] = (uint32_t)(w->base + rng_next(&rng) % w->arena_size);
	r->ops = 2 * pairs;
	r->baseline_rss_kb = maxrss_kb();
	for (int run = 0; run < runs; run++) {
		vmem_t *vmp = vmem_create("bench_pids", (void *)w->base,
		    w->arena_size, 1, NULL, NULL, NULL, 0,
		    VM_SLEEP | VMC_IDENTIFIER);
		if (vmp == NULL) {
			fprintf(stderr, "bench_vmem: %s: vmem_create failed\n",
			    w->id);
			exit(2);
		}
		for (size_t i = 0; i < w->arena_size; i++)
			r->fails += vmem_alloc(vmp, 1, VM_NOSLEEP | VM_NEXTFIT)
			    == NULL;
		rss_sample();
		double c0 = cpu_ns(), t0 = now_ns();
		r->fails += measured_pids_vmem(vmp, exits, pairs);
		double t1 = now_ns(), c1 = cpu_ns();
		r->ns[run] = (t1 - t0) / (double)(2 * pairs);
		r->cpu_ns[run] = (c1 - c0) / (double)(2 * pairs);
		for (size_t i = 0; i < w->arena_size; i++)
			vmem_free(vmp, (void *)(w->base + i), 1);
		vmem_destroy(vmp);
	}
	snprintf(r->note, sizeof(r->note), "%llu exit+fork pairs per run, "
	    "the rotor wherever the last fork left it",
	    (unsigned long long)pairs);
	free(exits);
}

/* ---------------------------------------------------------------------- */
/* K_FREEALL                                                               */

/*
 * The memory latency W7 runs into, measured in the same process: ns per
 * load of a chain of dependent loads through `bytes` of cache lines
 * linked into one cycle in a shuffled order, as when a free follows the
 * hash to a tag and the tag to its neighbours.
 */
static double dependent_load_ns(size_t bytes)
{
	size_t lines = bytes / 64, steps = 4000000;
	void **line = malloc(lines * 64);
	uint32_t *order = malloc(lines * sizeof(*order));
	uint64_t seed = SEED;
	double t0, t1;
	void **p;

	if (lines < 2 || line == NULL || order == NULL) {
		free(line);
		free(order);
		return 0;
	}
	for (size_t i = 0; i < lines; i++)
		order[i] = (uint32_t)i;
	for (size_t i = lines - 1; i > 0; i--) {
		size_t j = rng_next(&seed) % i;
		uint32_t t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (size_t i = 0; i < lines; i++)
		line[order[i] * 8] = &line[order[(i + 1) % lines] * 8];
	p = &line[order[0] * 8];
	for (size_t i = 0; i < lines; i++)  /* warm the TLB and caches once */
		p = *p;
	t0 = now_ns();
	for (size_t i = 0; i < steps; i++)
		p = *p;
	t1 = now_ns();
	if (p == NULL)  /* keeps the chain live */
		abort();
	free(line);
	free(order);
	return (t1 - t0) / (double)steps;
}

/*
 * What W8 and W9 pay whenever the arena changes hands, measured in the
 * same process: ns for one cache line to move from one CPU to the other
 * (half of a round trip of two threads passing a counter back and forth).
 */
typedef struct pingpong {
	_Alignas(64) _Atomic uint64_t turn;
	uint64_t rounds;
} pingpong_t;

static void pingpong_play(pingpong_t *pp, uint64_t parity)
{
	for (uint64_t i = parity; i < 2 * pp->rounds; i += 2) {
		while (atomic_load_explicit(&pp->turn, memory_order_acquire) != i)
			;
		atomic_store_explicit(&pp->turn, i + 1, memory_order_release);
	}
}

static void *pingpong_main(void *arg)
{
	pingpong_play(arg, 1);
	return NULL;
}

static double core_transfer_ns(void)
{
	static pingpong_t pp;
	pthread_t other;
	double t0, t1;

	atomic_store(&pp.turn, 0);
	pp.rounds = 1000000;
	if (pthread_create(&other, NULL, pingpong_main, &pp) != 0)
		return 0;
	t0 = now_ns();
	pingpong_play(&pp, 0);
	t1 = now_ns();
	pthread_join(other, NULL);
	return (t1 - t0) / (double)(2 * pp.rounds);
}

static void run_freeall(const workload_t *w, enum impl impl, uint64_t ops,
    int runs, result_t *r)
{
	plan_t p;
	live_t lv;
	plan_make(&p, SEED, ops, 0, w->min_pages, w->max_pages, 1);
	live_init(&lv, ops);
	r->ops = ops;
	r->baseline_rss_kb = maxrss_kb();
	for (int run = 0; run < runs; run++) {
		arenas_t a = { NULL, NULL };
		if (impl == IMPL_VMEM)
			arenas_create(w, &a);
		double t0 = now_ns();
		r->fails += setup_fill(impl, a.vmp, &lv, p.init_size, 0);
		double t1 = now_ns();
		rss_sample();
		if (impl == IMPL_VMEM) {
			vmem_stats_t st;
			vmem_get_stats(a.vmp, &st);
			r->hash_buckets = st.hash_buckets;
			/* vmem's tags are 64 bytes, one cache line each. */
			r->meta_bytes = st.tags * 64 + st.hash_buckets *
			    sizeof(void *);
		}
		double c2 = cpu_ns(), t2 = now_ns();
		if (impl == IMPL_VMEM)
			measured_free_all_vmem(a.vmp, &lv, p.order);
		else
			measured_free_all_malloc(&lv, p.order);
		double t3 = now_ns(), c3 = cpu_ns();
		r->cpu_ns[run] = ops ? (c3 - c2) / (double)ops : 0;
		r->alloc_ns[run] = ops ? (t1 - t0) / (double)ops : 0;
		r->ns[run] = ops ? (t3 - t2) / (double)ops : 0;
		if (impl == IMPL_VMEM)
			arenas_destroy(&a);
	}
	live_fini(&lv);
	plan_free(&p);
}

/* ---------------------------------------------------------------------- */
/* K_THREADS                                                               */

typedef struct worker {
	const workload_t *w;
	enum impl impl;
	arenas_t *a;
	live_t lv;
	plan_t p;
	pthread_barrier_t *start;
	uint64_t fails;
	double t_start, t_end;  /* this thread's timed loop */
	double cpu;             /* its CPU time */
} worker_t;

/* Each worker times its own loop: the main thread may be descheduled
 * after the barrier, so its own clock would miss the start. */
static void *worker_main(void *arg)
{
	worker_t *wk = arg;
	pthread_barrier_wait(wk->start);
	struct timespec c0, c1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	wk->t_start = now_ns();
	wk->fails += replace_once(wk->w, wk->impl, wk->a, &wk->lv, &wk->p);
	wk->t_end = now_ns();
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	wk->cpu = (double)(c1.tv_sec - c0.tv_sec) * 1e9 +
	    (double)(c1.tv_nsec - c0.tv_nsec);
	return NULL;
}

/* One timed pass of w by nthreads threads; returns wall ns per op and
 * stores the threads' CPU ns per op in *cpu_per_op. separate (vmem):
 * each thread gets an arena of its own, so the threads share nothing and
 * the 2-thread figure is what this machine allows. */
static double threads_once(const workload_t *w, enum impl impl,
    worker_t *wk, int nthreads, int separate, result_t *r,
    double *cpu_per_op)
{
	arenas_t a[2] = { { NULL, NULL }, { NULL, NULL } };
	pthread_barrier_t start;
	pthread_t tid[2];
	uint64_t total = 0;
	int narenas = impl == IMPL_VMEM ? (separate ? nthreads : 1) : 0;
	for (int k = 0; k < narenas; k++)
		arenas_create(w, &a[k]);
	for (int t = 0; t < nthreads; t++) {
		wk[t].a = &a[separate ? t : 0];
		r->fails += setup_fill(impl, wk[t].a->vmp, &wk[t].lv,
		    wk[t].p.init_size, w->policy);
		total += 2 * wk[t].p.nsteps;
	}
	rss_sample();
	pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1);
	for (int t = 0; t < nthreads; t++) {
		wk[t].start = &start;
		if (pthread_create(&tid[t], NULL, worker_main, &wk[t]) != 0) {
			fprintf(stderr, "bench_vmem: pthread_create failed\n");
			exit(2);
		}
	}
	pthread_barrier_wait(&start);
	for (int t = 0; t < nthreads; t++)
		pthread_join(tid[t], NULL);
	pthread_barrier_destroy(&start);
	/* Wall time from the first thread's start to the last one's end. */
	double t0 = wk[0].t_start, t1 = wk[0].t_end, cpu = 0;
	for (int t = 0; t < nthreads; t++)
		cpu += wk[t].cpu;
	for (int t = 1; t < nthreads; t++) {
		if (wk[t].t_start < t0)
			t0 = wk[t].t_start;
		if (wk[t].t_end > t1)
			t1 = wk[t].t_end;
	}
	rss_sample();
	if (impl == IMPL_VMEM && !separate)
		r->qcache_alloc = qcache_allocs(a[0].vmp);
	for (int t = 0; t < nthreads; t++) {
		r->fails += wk[t].fails;
		wk[t].fails = 0;
		teardown_live(impl, wk[t].a->vmp, &wk[t].lv, 0);
	}
	for (int k = 0; k < narenas; k++)
		arenas_destroy(&a[k]);
	*cpu_per_op = total ? cpu / (double)total : 0;
	return total ? (t1 - t0) / (double)total : 0;
}

/* Plans for nthreads threads sharing base's live set and operations. */
static void workers_make(worker_t *wk, int nthreads, const workload_t *base,
    enum impl impl, uint64_t ops)
{
	for (int t = 0; t < nthreads; t++) {
		memset(&wk[t], 0, sizeof(wk[t]));
		wk[t].w = base;
		wk[t].impl = impl;
		plan_make(&wk[t].p, SEED + 1 + (uint64_t)t, base->live / nthreads,
		    ops / 2 / (uint64_t)nthreads, base->min_pages,
		    base->max_pages, 0);
		live_init(&wk[t].lv, wk[t].p.live);
	}
}

static void workers_free(worker_t *wk, int nthreads)
{
	for (int t = 0; t < nthreads; t++) {
		plan_free(&wk[t].p);
		live_fini(&wk[t].lv);
	}
}

static void run_threads(const workload_t *w, enum impl impl, uint64_t ops,
    int runs, result_t *r)
{
	const workload_t *base = workload_find(w->base_id);
	worker_t one[1], two[2];
	workers_make(one, 1, base, impl, ops);
	workers_make(two, 2, base, impl, ops);
	r->ops = 2 * one[0].p.nsteps;
	r->baseline_rss_kb = maxrss_kb();
	/* Alternate 1 and 2 threads so that drift hits both alike. */
	for (int run = 0; run < runs; run++) {
		double cpu_sep;
		r->ns[run] = threads_once(base, impl, one, 1, 0, r,
		    &r->cpu_ns[run]);
		r->ns2[run] = threads_once(base, impl, two, 2, 0, r,
		    &r->cpu_ns2[run]);
		if (impl == IMPL_VMEM)
			r->ns_sep[run] = threads_once(base, impl, two, 2, 1, r,
			    &cpu_sep);
	}
	workers_free(one, 1);
	workers_free(two, 2);
}

/* ---------------------------------------------------------------------- */
/* One (workload, impl) pair, in a child process                           */

static uint64_t ops_for(const workload_t *w, const options_t *o)
{
	return o->ops >= 0 ? (uint64_t)o->ops : w->ops;
}

static void run_workload(const workload_t *w, enum impl impl,
    const options_t *o, result_t *r)
{
	uint64_t ops = ops_for(w, o);
	memset(r, 0, sizeof(*r));
	r->runs = o->callgrind ? 1 : o->runs;
	if (ref_select(impl, r->note, sizeof(r->note)) != 0)
		return;
	peak_seen_kb = 0;
	switch (w->kind) {
	case K_REPLACE: {
		workload_t sized = *w;
		if (o->live > 0)
			sized.live = (uint64_t)o->live;
		run_replace(&sized, impl, ops, r->runs, r);
		break;
	}
	case K_FAIL:
		run_fail(w, ops, r->runs, r);
		break;
	case K_FREEALL:
		run_freeall(w, impl, ops, r->runs, r);
		if (impl == IMPL_VMEM && !o->callgrind)
			r->load_ns = dependent_load_ns(r->meta_bytes);
		break;
	case K_THREADS:
		run_threads(w, impl, ops, r->runs, r);
		if (impl == IMPL_VMEM && !o->callgrind)
			r->transfer_ns = core_transfer_ns();
		break;
	case K_PIDS:
		run_pids(w, ops, r->runs, r);
		break;
	}
	r->peak_rss_kb = maxrss_kb();
	if (peak_seen_kb > r->peak_rss_kb)
		r->peak_rss_kb = peak_seen_kb;
	r->ok = 1;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static size_t read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

static void run_isolated(const workload_t *w, enum impl impl,
    const options_t *o, result_t *r)
{
	int fd[2];
	if (o->no_fork || pipe(fd) != 0) {
		run_workload(w, impl, o, r);
		return;
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		result_t res;
		close(fd[0]);
		run_workload(w, impl, o, &res);
		_exit(write_all(fd[1], &res, sizeof(res)) == 0 ? 0 : 1);
	}
	close(fd[1]);
	memset(r, 0, sizeof(*r));
	size_t got = pid > 0 ? read_all(fd[0], r, sizeof(*r)) : 0;
	close(fd[0]);
	int status = 0;
	if (pid > 0)
		waitpid(pid, &status, 0);
	if (got != sizeof(*r)) {
		memset(r, 0, sizeof(*r));
		if (pid > 0 && WIFSIGNALED(status))
			snprintf(r->note, sizeof(r->note),
			    "child died of signal %d", WTERMSIG(status));
		else
			snprintf(r->note, sizeof(r->note), "child failed");
	}
}

/* ---------------------------------------------------------------------- */
/* Reporting                                                               */

typedef struct row {
	const workload_t *w;
	result_t res[NIMPL];
	int have[NIMPL];
	double instr[NIMPL];    /* from --instr-file; < 0 unknown */
	double load;            /* 1-minute load average before the row ran */
} row_t;

/* Above this load average (2 cores) two threads cannot both run. */
#define THREADS_MAX_LOAD 1.5

static double load_average(void)
{
	double load = -1;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f != NULL) {
		if (fscanf(f, "%lf", &load) != 1)
			load = -1;
		fclose(f);
	}
	return load;
}

static double row_ns(const row_t *row, enum impl i)
{
	const result_t *r = &row->res[i];
	return row->have[i] && r->ok ? median(r->ns, r->runs) : -1;
}

static double row_ns2(const row_t *row, enum impl i)
{
	const result_t *r = &row->res[i];
	return row->have[i] && r->ok ? median(r->ns2, r->runs) : -1;
}

static double row_scaling(const row_t *row, enum impl i)
{
	double one = row_ns(row, i), two = row_ns2(row, i);
	return one > 0 && two > 0 ? one / two : -1;
}

/* 2 threads on an arena each against 1 thread: this machine's ceiling. */
static double row_scaling_sep(const row_t *row)
{
	const result_t *r = &row->res[IMPL_VMEM];
	double one = row_ns(row, IMPL_VMEM), sep;
	if (!row->have[IMPL_VMEM] || !r->ok)
		return -1;
	sep = median(r->ns_sep, r->runs);
	return one > 0 && sep > 0 ? one / sep : -1;
}

static const row_t *row_by_id(const row_t *rows, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(rows[i].w->id, id) == 0)
			return &rows[i];
	return NULL;
}

/* The vmem figure a target is judged on: on a busy machine the wall
 * clock counts other processes' time, so the CPU time then. */
static double row_judged_ns(const row_t *row)
{
	const result_t *r = &row->res[IMPL_VMEM];
	if (row->load > THREADS_MAX_LOAD && r->ok)
		return median(r->cpu_ns, r->runs);
	return row_ns(row, IMPL_VMEM);
}

/* 1 met, 0 missed, -1 unknown. */
static int row_met(const row_t *rows, size_t n, const row_t *row,
    const options_t *o)
{
	if (o->live > 0 && row->w->kind == K_REPLACE)
		return -1;      /* the targets are for 10,000 live */
	const workload_t *w = row->w;
	if (!row->have[IMPL_VMEM] || !row->res[IMPL_VMEM].ok)
		return -1;
	if (row->res[IMPL_VMEM].fails != 0)
		return 0;
	if (w->kind == K_THREADS)
		return row->load > THREADS_MAX_LOAD ? -1 :
		    row_scaling(row, IMPL_VMEM) >= w->target;
	double ns = row_judged_ns(row);
	if (!(ns <= w->target))
		return 0;
	/* The -lo variants must also cost what the fragmented run costs. */
	const char *dash = strchr(w->id, '-');
	if (w->kind == K_FAIL && dash != NULL) {
		char base[16];
		snprintf(base, sizeof(base), "%.*s", (int)(dash - w->id), w->id);
		const row_t *b = row_by_id(rows, n, base);
		if (b == NULL)
			return -1;
		/* Instruction counts are exact; times on a shared machine are
		 * not, so compare counts when callgrind ran. */
		double bi = b->instr[IMPL_VMEM], i = row->instr[IMPL_VMEM];
		if (bi > 0 && i > 0)
			return bi / i < 1.1 && i / bi < 1.1;
		double bns = row_judged_ns(b);
		if (bns <= 0)
			return -1;
		return bns / ns < 1.5 && ns / bns < 1.5;
	}
	return 1;
}

static void fmt_cell(char *buf, size_t len, const row_t *row, enum impl i)
{
	const result_t *r = &row->res[i];
	if (!row->have[i]) {
		snprintf(buf, len, "-");
	} else if (!r->ok) {
		snprintf(buf, len, "n/a (%s)", r->note);
	} else if (row->w->kind == K_THREADS) {
		snprintf(buf, len, "1t %.1f, 2t %.1f (%.2fx); CPU %.1f, %.1f",
		    row_ns(row, i), row_ns2(row, i), row_scaling(row, i),
		    median(r->cpu_ns, r->runs), median(r->cpu_ns2, r->runs));
	} else {
		/* wall clock (the figure), then CPU time in parentheses */
		snprintf(buf, len, "%.1f (%.1f)", row_ns(row, i),
		    median(r->cpu_ns, r->runs));
	}
}

static void fmt_instr(char *buf, size_t len, const row_t *row)
{
	char v[24] = "-", g[24] = "-";
	if (row->instr[IMPL_VMEM] >= 0)
		snprintf(v, sizeof(v), "%.0f", row->instr[IMPL_VMEM]);
	if (row->instr[IMPL_GLIBC] >= 0)
		snprintf(g, sizeof(g), "%.0f", row->instr[IMPL_GLIBC]);
	snprintf(buf, len, "%s / %s", v, g);
}

static double rss_added_mib(const result_t *r)
{
	return (double)(r->peak_rss_kb - r->baseline_rss_kb) / 1024.0;
}

static void print_markdown(const row_t *rows, size_t n, const options_t *o)
{
	char cell[NIMPL][128], ratio[32], instr[32], rss[64];
	printf("| workload | vmem ns/op | glibc ns/op | vmem/glibc |%s"
	    " instr/op vmem / glibc | peak RSS MiB vmem / glibc | target | met? |\n",
	    o->ext ? " jemalloc ns/op | mimalloc ns/op |" : "");
	printf("|---|---|---|---|%s---|---|---|---|\n", o->ext ? "---|---|" : "");
	for (size_t k = 0; k < n; k++) {
		const row_t *row = &rows[k];
		const workload_t *w = row->w;
		for (int i = 0; i < NIMPL; i++)
			fmt_cell(cell[i], sizeof(cell[i]), row, (enum impl)i);
		double v = row_ns(row, IMPL_VMEM), g = row_ns(row, IMPL_GLIBC);
		if (w->kind == K_THREADS) {
			v = row_ns2(row, IMPL_VMEM);
			g = row_ns2(row, IMPL_GLIBC);
		}
		if (v > 0 && g > 0)
			snprintf(ratio, sizeof(ratio), "%.2f", v / g);
		else
			snprintf(ratio, sizeof(ratio), "-");
		fmt_instr(instr, sizeof(instr), row);
		const result_t *rv = &row->res[IMPL_VMEM];
		const result_t *rg = &row->res[IMPL_GLIBC];
		if (row->have[IMPL_GLIBC] && rg->ok)
			snprintf(rss, sizeof(rss), "%.1f / %.1f",
			    rss_added_mib(rv), rss_added_mib(rg));
		else
			snprintf(rss, sizeof(rss), "%.1f / -", rss_added_mib(rv));
		int met = row_met(rows, n, row, o);
		char extra[2 * sizeof(cell[0]) + 16] = "";
		if (o->ext)
			snprintf(extra, sizeof(extra), " %s | %s |",
			    cell[IMPL_JEMALLOC], cell[IMPL_MIMALLOC]);
		printf("| %s %s | %s | %s | %s |%s %s | %s | %s | %s%s |\n",
		    w->id, w->what, cell[IMPL_VMEM], cell[IMPL_GLIBC], ratio,
		    extra, instr, rss, w->target_text,
		    met < 0 ? "?" : met ? "yes" : "**no**",
		    rv->fails ? " (unexpected failures)" :
		    row->load <= THREADS_MAX_LOAD ? "" :
		    w->kind == K_THREADS ? " (machine busy)" :
		    " (busy: CPU time)");
	}
	/* Notes a reader needs to trust the figures. */
	for (size_t k = 0; k < n; k++) {
		const row_t *row = &rows[k];
		const result_t *rv = &row->res[IMPL_VMEM];
		if (!row->have[IMPL_VMEM])
			continue;
		if (rv->fails)
			printf("\n- %s: %llu unexpected vmem failures%s", row->w->id,
			    (unsigned long long)rv->fails,
			    row->w->kind == K_FAIL ? " (requests that must fail"
			    " succeeded)" : " (allocations returned NULL)");
		if (row->w->qcache_pages)
			printf("\n- %s: %llu allocations served by quantum caches"
			    " in the last run%s", row->w->id,
			    (unsigned long long)rv->qcache_alloc,
			    rv->qcache_alloc ? "" : " (no quantum-cache provider:"
			    " requests go to the arena)");
		if (row->w->kind == K_FREEALL && rv->ok)
			printf("\n- %s: allocation phase %.1f ns/alloc (vmem),"
			    " %.1f (glibc); hash buckets with all live: %llu",
			    row->w->id, median(rv->alloc_ns, rv->runs),
			    row->have[IMPL_GLIBC] && row->res[IMPL_GLIBC].ok ?
			    median(row->res[IMPL_GLIBC].alloc_ns, rv->runs) : -1.0,
			    (unsigned long long)rv->hash_buckets);
		if (row->w->kind == K_FREEALL && rv->ok && rv->load_ns > 0)
			printf("\n- %s: one dependent load through %.0f MiB (the"
			    " size of vmem's tags and hash with all live) took"
			    " %.1f ns in this run, so a free cost %.1f such"
			    " loads", row->w->id, rv->meta_bytes / 1048576.0,
			    rv->load_ns, row_ns(row, IMPL_VMEM) / rv->load_ns);
		if (vmem_only(row->w->kind) && rv->ok)
			printf("\n- %s: %s", row->w->id, rv->note);
		if (row->w->kind == K_THREADS && row_scaling_sep(row) > 0)
			printf("\n- %s: 2 threads on an arena each (nothing"
			    " shared) reach %.2fx of 1 thread in this run, so"
			    " the shared arena's %.2fx is %.0f%% of what the"
			    " machine allowed", row->w->id, row_scaling_sep(row),
			    row_scaling(row, IMPL_VMEM), 100 *
			    row_scaling(row, IMPL_VMEM) / row_scaling_sep(row));
		if (row->w->kind == K_THREADS && rv->ok && rv->transfer_ns > 0)
			printf("\n- %s: a cache line took %.1f ns to move"
			    " between the CPUs in this run, %.1fx a whole"
			    " operation on 1 thread", row->w->id,
			    rv->transfer_ns, rv->transfer_ns /
			    row_ns(row, IMPL_VMEM));
		if (row->w->kind == K_THREADS && row->load > THREADS_MAX_LOAD)
			printf("\n- %s: load average %.1f before the run: two"
			    " threads could not both run, the ratio means"
			    " little", row->w->id, row->load);
	}
	printf("\n\nns/op: median of %d runs; ops/run as in docs/BENCH_VMEM.md."
	    " Threads rows: wall ns per op of the total throughput;"
	    " ratio column compares 2 threads.\n", o->runs);
	if (o->live > 0)
		printf("--live %lld: the replace rows (W1-W4N, W6) kept %lld"
		    " allocations live, not the 10,000 their labels say.\n",
		    (long long)o->live, (long long)o->live);
}

static void json_result(FILE *out, const row_t *row, enum impl i)
{
	const result_t *r = &row->res[i];
	fprintf(out, "\"%s\": {\"ok\": %s", impl_name[i], r->ok ? "true" : "false");
	if (r->ok) {
		fprintf(out, ", \"ns_per_op\": %.2f, \"ns_runs\": [", row_ns(row, i));
		for (int k = 0; k < r->runs; k++)
			fprintf(out, "%s%.2f", k ? ", " : "", r->ns[k]);
		fprintf(out, "], \"ns_min\": %.2f", min_of(r->ns, r->runs));
		fprintf(out, ", \"cpu_ns_per_op\": %.2f",
		    median(r->cpu_ns, r->runs));
		if (row->w->kind == K_THREADS)
			fprintf(out, ", \"cpu_ns_per_op_2t\": %.2f",
			    median(r->cpu_ns2, r->runs));
		if (row->w->kind == K_THREADS)
			fprintf(out, ", \"ns_per_op_2t\": %.2f, \"scaling_2t_1t\": %.3f",
			    row_ns2(row, i), row_scaling(row, i));
		if (row->w->kind == K_THREADS && i == IMPL_VMEM)
			fprintf(out, ", \"scaling_2t_separate_arenas\": %.3f",
			    row_scaling_sep(row));
		if (row->w->kind == K_THREADS && r->transfer_ns > 0)
			fprintf(out, ", \"core_transfer_ns\": %.2f",
			    r->transfer_ns);
		if (row->w->kind == K_FREEALL)
			fprintf(out, ", \"alloc_ns_per_op\": %.2f, \"hash_buckets\": %llu",
			    median(r->alloc_ns, r->runs),
			    (unsigned long long)r->hash_buckets);
		if (row->w->kind == K_FREEALL && r->load_ns > 0)
			fprintf(out, ", \"meta_bytes\": %llu, "
			    "\"dependent_load_ns\": %.2f",
			    (unsigned long long)r->meta_bytes, r->load_ns);
		fprintf(out, ", \"ops_per_run\": %llu, \"fails\": %llu, "
		    "\"qcache_alloc\": %llu, \"baseline_rss_kb\": %ld, "
		    "\"peak_rss_kb\": %ld", (unsigned long long)r->ops,
		    (unsigned long long)r->fails,
		    (unsigned long long)r->qcache_alloc, r->baseline_rss_kb,
		    r->peak_rss_kb);
	}
	if (row->instr[i] >= 0)
		fprintf(out, ", \"instr_per_op\": %.1f", row->instr[i]);
	if (r->note[0])
		fprintf(out, ", \"note\": \"%s\"", r->note);
	fprintf(out, "}");
}

static void print_json(FILE *out, const row_t *rows, size_t n,
    const options_t *o)
{
	fprintf(out, "{\"runs\": %d, \"live\": %lld, \"workloads\": [\n",
	    o->runs, (long long)o->live);
	for (size_t k = 0; k < n; k++) {
		const row_t *row = &rows[k];
		int met = row_met(rows, n, row, o);
		fprintf(out, "  {\"id\": \"%s\", \"what\": \"%s\", \"target\": \"%s\", "
		    "\"met\": %s, \"load\": %.2f", row->w->id, row->w->what,
		    row->w->target_text, met < 0 ? "null" : met ? "true" : "false",
		    row->load);
		for (int i = 0; i < NIMPL; i++) {
			if (!row->have[i])
				continue;
			fprintf(out, ", ");
			json_result(out, row, (enum impl)i);
		}
		fprintf(out, "}%s\n", k + 1 < n ? "," : "");
	}
	fprintf(out, "]}\n");
}

/* Lines "ID IMPL INSTR_PER_OP" written by scripts/bench.sh. */
static void load_instr(row_t *rows, size_t n, const char *path)
{
	FILE *f = fopen(path, "r");
	char id[32], impl[32];
	double v;
	if (f == NULL) {
		fprintf(stderr, "bench_vmem: cannot open %s\n", path);
		return;
	}
	while (fscanf(f, "%31s %31s %lf", id, impl, &v) == 3) {
		for (size_t k = 0; k < n; k++) {
			if (strcasecmp(rows[k].w->id, id) != 0)
				continue;
			for (int i = 0; i < NIMPL; i++)
				if (strcmp(impl_name[i], impl) == 0)
					rows[k].instr[i] = v;
		}
	}
	fclose(f);
}

/* ---------------------------------------------------------------------- */
/* Command line                                                            */

static void usage(FILE *out)
{
	fprintf(out,
	    "usage: bench_vmem [options] [WORKLOAD...]\n"
	    "  WORKLOAD       W1 W2 W3 W4 W4N W5 W5-lo W5B W5B-lo W5C W5C-lo W6 W7\n"
	    "                 WNF W8 W9"
	    " (default: all)\n"
	    "  --ops N        timed operations per run (alloc or free calls;"
	    " W5: failing\n"
	    "                 requests; W7: live allocations = frees)\n"
	    "  --live N       live allocations of the replace workloads (W1-W4N,\n"
	    "                 W6; default 10000): how time follows footprint\n"
	    "  --runs N       runs per figure, median reported (default %d)\n"
	    "  --json         JSON instead of a markdown table\n"
	    "  --json-out F   also write the JSON to F\n"
	    "  --ext          also jemalloc and mimalloc (dlopen, if installed)\n"
	    "  --instr-file F instructions/op lines \"ID IMPL N\" for the table\n"
	    "  --no-fork      run in this process (peak RSS is then shared)\n"
	    "  --callgrind    run one workload once, in process, for callgrind:\n"
	    "                 valgrind --tool=callgrind"
	    " --toggle-collect='measured_*'\n"
	    "  --impl NAME    with --callgrind: vmem (default), glibc, jemalloc,"
	    " mimalloc\n"
	    "  --list         list the workloads\n", DEFAULT_RUNS);
}

static int parse_args(int argc, char **argv, options_t *o)
{
	int any = 0;
	memset(o, 0, sizeof(*o));
	o->runs = DEFAULT_RUNS;
	o->ops = -1;
	o->impl = IMPL_VMEM;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--ops") == 0 && val) {
			o->ops = strtoll(val, NULL, 0);
			i++;
		} else if (strcmp(a, "--live") == 0 && val) {
			o->live = strtoll(val, NULL, 0);
			i++;
			if (o->live < 1 || o->live > 10000000) {
				fprintf(stderr, "--live: 1..10000000\n");
				return -1;
			}
		} else if (strcmp(a, "--runs") == 0 && val) {
			o->runs = atoi(val);
			i++;
			if (o->runs < 1 || o->runs > MAX_RUNS) {
				fprintf(stderr, "--runs: 1..%d\n", MAX_RUNS);
				return -1;
			}
		} else if (strcmp(a, "--instr-file") == 0 && val) {
			o->instr_file = val;
			i++;
		} else if (strcmp(a, "--json-out") == 0 && val) {
			o->json_out = val;
			i++;
		} else if (strcmp(a, "--impl") == 0 && val) {
			int found = 0;
			for (int k = 0; k < NIMPL; k++)
				if (strcmp(impl_name[k], val) == 0) {
					o->impl = (enum impl)k;
					found = 1;
				}
			if (!found) {
				fprintf(stderr, "--impl: unknown %s\n", val);
				return -1;
			}
			i++;
		} else if (strcmp(a, "--json") == 0) {
			o->json = 1;
		} else if (strcmp(a, "--ext") == 0) {
			o->ext = 1;
		} else if (strcmp(a, "--no-fork") == 0) {
			o->no_fork = 1;
		} else if (strcmp(a, "--callgrind") == 0) {
			o->callgrind = 1;
		} else if (strcmp(a, "--list") == 0) {
			for (size_t k = 0; k < NWORKLOADS; k++)
				printf("%-7s %s; target %s\n", workloads[k].id,
				    workloads[k].what, workloads[k].target_text);
			exit(0);
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		} else if (a[0] != '-' && workload_find(a) != NULL) {
			o->selected[workload_find(a) - workloads] = 1;
			any = 1;
		} else {
			fprintf(stderr, "bench_vmem: bad argument %s\n", a);
			usage(stderr);
			return -1;
		}
	}
	if (o->ops < -1) {
		fprintf(stderr, "--ops must be >= 0\n");
		return -1;
	}
	if (!any)
		for (size_t k = 0; k < NWORKLOADS; k++)
			o->selected[k] = 1;
	return 0;
}

/* --callgrind: one workload, one run, in this process. */
static int run_callgrind(const options_t *o)
{
	int count = 0;
	const workload_t *w = NULL;
	for (size_t k = 0; k < NWORKLOADS; k++)
		if (o->selected[k]) {
			w = &workloads[k];
			count++;
		}
	if (count != 1 || w->kind == K_THREADS ||
	    (vmem_only(w->kind) && o->impl != IMPL_VMEM)) {
		fprintf(stderr, "bench_vmem: --callgrind needs exactly one"
		    " single-threaded workload (and W5* only for vmem)\n");
		return 2;
	}
	result_t r;
	run_workload(w, o->impl, o, &r);
	if (!r.ok) {
		fprintf(stderr, "bench_vmem: %s\n", r.note);
		return 1;
	}
	printf("%s %s ops %llu fails %llu ns/op %.1f\n", w->id,
	    impl_name[o->impl], (unsigned long long)r.ops,
	    (unsigned long long)r.fails, r.ns[0]);
	return 0;
}

int main(int argc, char **argv)
{
	options_t o;
	row_t rows[NWORKLOADS];
	size_t n = 0;
	if (parse_args(argc, argv, &o) != 0)
		return 2;
	if (o.ext)
		reexec_with_static_tls(argv);
	if (o.callgrind)
		return run_callgrind(&o);
	for (size_t k = 0; k < NWORKLOADS; k++) {
		if (!o.selected[k])
			continue;
		row_t *row = &rows[n++];
		memset(row, 0, sizeof(*row));
		row->w = &workloads[k];
		row->load = load_average();
		for (int i = 0; i < NIMPL; i++)
			row->instr[i] = -1;
		for (int i = 0; i < NIMPL; i++) {
			if (i >= IMPL_JEMALLOC && !o.ext)
				continue;
			if (i != IMPL_VMEM && vmem_only(row->w->kind))
				continue;
			if (!o.json)
				fprintf(stderr, "running %s %s...\n", row->w->id,
				    impl_name[i]);
			run_isolated(row->w, (enum impl)i, &o, &row->res[i]);
			row->have[i] = 1;
		}
	}
	if (o.instr_file)
		load_instr(rows, n, o.instr_file);
	if (o.json_out != NULL) {
		FILE *f = fopen(o.json_out, "w");
		if (f == NULL) {
			perror(o.json_out);
			return 1;
		}
		print_json(f, rows, n, &o);
		fclose(f);
	}
	if (o.json)
		print_json(stdout, rows, n, &o);
	else
		print_markdown(rows, n, &o);
	return 0;
}
