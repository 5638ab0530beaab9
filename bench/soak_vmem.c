/*
 * soak_vmem: a long model-based run (default 10^8 steps) over every layer
 * that has no threads: an arena with quantum caches, a child arena
 * importing from it, an identifier arena, a kmem object cache and a
 * simulated kernel address space with its kmem heap. Not a CTest test: run
 * it by hand (docs/RELIABILITY_SOAK.md).
 *
 * Each step picks a random operation: vmem_alloc with a random policy,
 * vmem_xalloc with random constraints (the result is checked against
 * them), a free of a random live allocation, a kmem cache or kas heap
 * allocation or free, a segkmem page allocation or free, or now and then a
 * reap. The model is exact where the library's answer is determined:
 *
 *  - a bitmap of quanta of the shared integer range: an address handed out
 *    twice (by the arena, its caches or the child) is caught at once;
 *  - a bitmap of identifiers for the identifier arena;
 *  - every live object carries its owner's tag in its first word (kmem
 *    cache) so an object handed out twice is caught at its next check;
 *  - every 2^16 steps, and at the end: vmem_check on every arena, the bytes
 *    each arena reports allocated equal the model's, the cache's buffers in
 *    use equal the model's, and no error was reported.
 *
 * At the end everything is freed and reaped: every arena must be empty and
 * every imported span back in its source.
 *
 * Usage: soak_vmem [steps [seed]]     exit status 0 = no discrepancy
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vmem/kmem.h>
#include <vmem/segkmem.h>
#include <vmem/vmem.h>

#define Q        ((size_t)4096)
#define BASE     ((uintptr_t)0x100000000ULL)
#define NQUANTA  ((size_t)1 << 16)     /* 256 MiB of integers */
#define NIDS     ((size_t)1 << 16)
#define NLIVE    4096

enum kind { K_ARENA, K_XARENA, K_CHILD, K_ID, K_OBJ, K_HEAP, K_PAGES,
	NKINDS };

typedef struct live {
	void *p;
	size_t size;
	int kind;               /* enum kind; -1 = empty slot */
} live_t;

static vmem_t *arena, *child, *ids, *memarena;
static kmem_cache_t *cache;
static kas_t *kas;
static uint8_t quanta[NQUANTA], idmap[NIDS];
static live_t live[NLIVE];
static size_t model_bytes[NKINDS], model_count[NKINDS];
static uint64_t failures, discrepancies, reported;
static _Alignas(4096) char region[16 << 20];

static void
bad(const char *what, uint64_t step)
{
	if (discrepancies++ < 20)
		fprintf(stderr, "step %" PRIu64 ": %s\n", step, what);
}

static void
on_error(const vmem_error_info_t *info, void *arg)
{
	char line[512];

	(void)arg;
	vmem_format_error(info, line, sizeof (line));
	if (reported++ < 20)
		fprintf(stderr, "unexpected report: %s\n", line);
}

static uint64_t rng;

static uint64_t
next(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dULL;
}

static uint64_t
pick(uint64_t n)
{
	return next() % n;
}

/* Claim or release [p, p + size) in a bitmap; 0 if consistent. */
static int
mark(uint8_t *map, size_t nmap, uintptr_t first, size_t n, int on)
{
	int err = 0;

	if (first + n > nmap)
		return -1;
	for (size_t i = first; i < first + n; i++) {
		if (map[i] == on)
			err = -1;
		map[i] = (uint8_t)on;
	}
	return err;
}

static int
claim(live_t *l, int on)
{
	switch (l->kind) {
	case K_ARENA:
	case K_XARENA:
	case K_CHILD:
		if ((uintptr_t)l->p < BASE)
			return -1;
		return mark(quanta, NQUANTA, ((uintptr_t)l->p - BASE) / Q,
		    (l->size + Q - 1) / Q, on);
	case K_ID:
		return mark(idmap, NIDS, (uintptr_t)l->p - 1, l->size, on);
	case K_OBJ:
		if (on)
			*(live_t **)l->p = l;
		else if (*(live_t **)l->p != l)
			return -1;
		return 0;
	default:
		return 0;
	}
}

/* Does a satisfy the constraints? */
static int
fits(uintptr_t a, size_t size, size_t align, size_t phase, size_t nocross,
    uintptr_t lo, uintptr_t hi)
{
	if (align != 0 && (a - phase) % align != 0)
		return 0;
	if (nocross != 0 && a / nocross != (a + size - 1) / nocross)
		return 0;
	if (lo != 0 && a < lo)
		return 0;
	if (hi != 0 && a + size > hi)
		return 0;
	return 1;
}

static void
do_alloc(live_t *l, uint64_t step)
{
	static const int policy[] = { 0, VM_BESTFIT, VM_FIRSTFIT, VM_NEXTFIT };
	int k = (int)pick(NKINDS);
	size_t align = 0, phase = 0, nocross = 0;
	uintptr_t lo = 0, hi = 0;

	l->kind = k;
	switch (k) {
	case K_ARENA:
		/* Half within the quantum caches (5 quanta), half above. */
		l->size = pick(2) ? Q * (1 + pick(5)) : Q * (1 + pick(64)) -
		    pick(Q);
		l->p = vmem_alloc(arena, l->size, VM_NOSLEEP |
		    policy[pick(4)]);
		break;
	case K_XARENA:
		l->size = Q * (1 + pick(16));
		if (pick(2))
			align = Q << pick(6);
		if (align != 0 && pick(2))
			phase = Q * pick(align / Q);
		if (pick(3) == 0) {
			nocross = Q << (6 + pick(4));
			if (phase % nocross + l->size > nocross)
				nocross = 0;
		}
		if (pick(3) == 0) {
			lo = BASE + Q * pick(NQUANTA / 2);
			hi = lo + Q * (NQUANTA / 4);
		}
		l->p = vmem_xalloc(arena, l->size, align, phase, nocross,
		    (void *)lo, (void *)hi, VM_NOSLEEP |
		    policy[pick(3)]);
		if (l->p != NULL && !fits((uintptr_t)l->p, l->size, align,
		    phase, nocross, lo, hi))
			bad("vmem_xalloc result breaks its constraints", step);
		break;
	case K_CHILD:
		l->size = Q * (1 + pick(8));
		l->p = vmem_alloc(child, l->size, VM_NOSLEEP);
		break;
	case K_ID:
		l->size = 1 + pick(4);
		l->p = vmem_alloc(ids, l->size, VM_NOSLEEP |
		    (pick(2) ? VM_NEXTFIT : 0));
		break;
	case K_OBJ:
		l->size = 64;
		l->p = kmem_cache_alloc(cache, KM_NOSLEEP);
		break;
	case K_HEAP:
		l->size = 1 + pick(pick(8) ? 2048 : 40000);
		l->p = kmem_heap_alloc(kas_heap(kas), l->size, KM_NOSLEEP);
		break;
	default:
		l->size = kas_pagesize(kas) * (1 + pick(4));
		l->p = segkmem_alloc(kas_heap_arena(kas), l->size, VM_NOSLEEP);
		break;
	}
	if (l->p == NULL) {
		failures++;
		l->kind = -1;
		return;
	}
	if (claim(l, 1) != 0)
		bad("address or id handed out twice", step);
	model_bytes[k] += l->size;
	model_count[k]++;
}

static void
do_free(live_t *l, uint64_t step)
{
	if (claim(l, 0) != 0)
		bad("object overwritten while live (handed out twice?)", step);
	switch (l->kind) {
	case K_ARENA:
		vmem_free(arena, l->p, l->size);
		break;
	case K_XARENA:
		vmem_xfree(arena, l->p, l->size);
		break;
	case K_CHILD:
		vmem_free(child, l->p, l->size);
		break;
	case K_ID:
		vmem_free(ids, l->p, l->size);
		break;
	case K_OBJ:
		kmem_cache_free(cache, l->p);
		break;
	case K_HEAP:
		kmem_heap_free(kas_heap(kas), l->p, l->size);
		break;
	default:
		segkmem_free(kas_heap_arena(kas), l->p, l->size);
		break;
	}
	model_bytes[l->kind] -= l->size;
	model_count[l->kind]--;
	l->kind = -1;
}

static size_t
rounded(int k)
{
	size_t sum = 0;

	for (size_t i = 0; i < NLIVE; i++)
		if (live[i].kind == k)
			sum += (live[i].size + Q - 1) / Q * Q;
	return sum;
}

static void
check_all(uint64_t step)
{
	kmem_cache_stats_t cs;

	if (vmem_check(arena) || vmem_check(child) || vmem_check(ids) ||
	    vmem_check(memarena) || vmem_check(kas_heap_arena(kas)) ||
	    vmem_check(kas_kmem_va(kas)) || vmem_check(kas_kmem_default(kas)))
		bad("vmem_check failed", step);
	if (vmem_size(child, VMEM_ALLOC) != model_bytes[K_CHILD])
		bad("child arena: allocated bytes differ from the model", step);
	if (vmem_size(ids, VMEM_ALLOC) != model_bytes[K_ID])
		bad("id arena: allocated ids differ from the model", step);
	/* The parent: its own allocations plus the child's spans. */
	if (vmem_size(arena, VMEM_ALLOC) != rounded(K_ARENA) +
	    rounded(K_XARENA) + vmem_size(child, VMEM_SPAN))
		bad("arena: allocated bytes differ from the model", step);
	kmem_cache_get_stats(cache, &cs);
	if (cs.buf_inuse != model_count[K_OBJ])
		bad("cache: buffers in use differ from the model", step);
	if (reported != 0)
		bad("the library reported an error", step);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
setup(void)
{
	kas_config_t cfg;

	vmem_set_error_handler(on_error, NULL);
	arena = vmem_create("soak", (void *)BASE, NQUANTA * Q, Q, NULL, NULL,
	    NULL, 5 * Q, VM_SLEEP);
	child = vmem_create("soak_child", NULL, 0, Q, vmem_alloc, vmem_free,
	    arena, 0, VM_SLEEP);
	ids = vmem_create("soak_ids", (void *)1, NIDS, 1, NULL, NULL, NULL, 0,
	    VM_SLEEP | VMC_IDENTIFIER);
	memarena = vmem_create("soak_mem", region, sizeof (region), Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	cache = kmem_cache_create("soak_obj", 64, 0, NULL, NULL, NULL, NULL,
	    memarena, 0);
	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.name = "soak_kas";
	cfg.size = (size_t)1 << 30;
	kas = kas_create(&cfg);
	if (!arena || !child || !ids || !memarena || !cache || !kas) {
		fprintf(stderr, "soak_vmem: setup failed\n");
		exit(2);
	}
	for (size_t i = 0; i < NLIVE; i++)
		live[i].kind = -1;
}

int
main(int argc, char **argv)
{
	uint64_t steps = argc > 1 ? strtoull(argv[1], NULL, 0) : 100000000ULL;
	uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : 1;
	double t0 = now(), tlast = t0;

	rng = seed ? seed : 1;
	setup();
	for (uint64_t step = 1; step <= steps; step++) {
		live_t *l = &live[pick(NLIVE)];

		if (l->kind >= 0)
			do_free(l, step);
		else
			do_alloc(l, step);
		if (pick(1 << 14) == 0) {
			vmem_reap(arena);
			if (pick(4) == 0)
				kmem_reap();
		}
		if ((step & 0xffff) == 0)
			check_all(step);
		if (step % 10000000 == 0) {
			double t = now();
			printf("%" PRIu64 " steps, %.1f s, %.2f M steps/s, "
			    "%" PRIu64 " failed allocations, %" PRIu64
			    " discrepancies\n", step, t - t0,
			    10.0 / (t - tlast), failures, discrepancies);
			fflush(stdout);
			tlast = t;
		}
	}
	check_all(steps);
	for (size_t i = 0; i < NLIVE; i++)
		if (live[i].kind >= 0)
			do_free(&live[i], steps);
	vmem_reap(arena);
	kmem_reap();
	check_all(steps);
	if (vmem_size(arena, VMEM_ALLOC) != 0 ||
	    vmem_size(child, VMEM_SPAN) != 0 ||
	    vmem_size(ids, VMEM_ALLOC) != 0)
		bad("not empty after freeing everything", steps);
	kmem_cache_destroy(cache);
	if (vmem_size(memarena, VMEM_ALLOC) != 0)
		bad("cache left slabs behind", steps);
	kas_destroy(kas);
	vmem_destroy(memarena);
	vmem_destroy(ids);
	vmem_destroy(child);
	vmem_destroy(arena);
	if (reported != 0)
		bad("the library reported an error during teardown", steps);
	printf("soak_vmem: seed %" PRIu64 ", %" PRIu64 " steps in %.1f s, "
	    "%" PRIu64 " failed allocations, %" PRIu64 " discrepancies: %s\n",
	    seed, steps, now() - t0, failures, discrepancies,
	    discrepancies == 0 ? "PASS" : "FAIL");
	return discrepancies == 0 ? 0 : 1;
}
