/*
 * fork() while another thread allocates: the child must be able to
 * allocate and free in every kind of arena the parent had -- a vmem arena
 * with quantum caches, a child arena importing from it, a kmem object
 * cache, the default kmem heap, a simulated kernel address space (its
 * heap arena through segkmem and its kmem heap), and segkp stacks in that
 * address space (plain and from a stack cache, whose stacks it also reaps
 * and frees).
 *
 * A worker thread churns through all of them without pause while the main
 * thread forks. Whatever lock the worker held at the instant of the fork
 * must be free in the child: every layer takes its locks around fork().
 * The child runs under alarm(): a lock left held shows up as SIGALRM
 * instead of a hung test. The child also checks every arena it used.
 *
 * Readers of statistics take locks across layers too (the arena table asks
 * every quantum cache for its counts, under kmem's locks), and so does
 * kmem_cache_set_debug: forking while they run must not deadlock the
 * parent in the fork handlers, which take those locks in their own order.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmem/kmem.h>
#include <vmem/segkmem.h>
#include <vmem/segkp.h>

#include "hg.h"
#include "testutil.h"

#define Q       ((size_t)4096)
#define NHOLD   64

static vmem_t *qarena, *child_arena, *mem_arena;
static kmem_cache_t *cache;
static kas_t *kas;
static segkp_t *seg;
static void *stack_cache;
static atomic_int stop;
static _Alignas(4096) char region[8 << 20];

/* One step of churn in every arena; slot i of each array is reused. */
typedef struct held {
	void *q[NHOLD], *c[NHOLD], *k[NHOLD], *o[NHOLD], *h[NHOLD], *s[NHOLD];
	void *st[NHOLD];
	size_t qsz[NHOLD], ksz[NHOLD], hsz[NHOLD];
} held_t;

static void
churn_one(held_t *hd, tu_rng_t *r)
{
	unsigned i = (unsigned)tu_range(r, 0, NHOLD - 1);

	switch (tu_range(r, 0, 6)) {
	case 0:
		if (hd->q[i] != NULL) {
			vmem_free(qarena, hd->q[i], hd->qsz[i]);
			hd->q[i] = NULL;
		} else {
			hd->qsz[i] = Q * tu_range(r, 1, 6);
			hd->q[i] = vmem_alloc(qarena, hd->qsz[i], VM_NOSLEEP);
		}
		break;
	case 1:
		if (hd->c[i] != NULL) {
			vmem_free(child_arena, hd->c[i], Q);
			hd->c[i] = NULL;
		} else {
			hd->c[i] = vmem_alloc(child_arena, Q, VM_NOSLEEP);
		}
		break;
	case 2:
		if (hd->o[i] != NULL) {
			kmem_cache_free(cache, hd->o[i]);
			hd->o[i] = NULL;
		} else {
			hd->o[i] = kmem_cache_alloc(cache, KM_NOSLEEP);
		}
		break;
	case 3:
		if (hd->k[i] != NULL) {
			kmem_free(hd->k[i], hd->ksz[i]);
			hd->k[i] = NULL;
		} else {
			hd->ksz[i] = tu_range(r, 1, 3000);
			hd->k[i] = kmem_alloc(hd->ksz[i], KM_NOSLEEP);
		}
		break;
	case 4:
		if (hd->h[i] != NULL) {
			kmem_heap_free(kas_heap(kas), hd->h[i], hd->hsz[i]);
			hd->h[i] = NULL;
		} else {
			hd->hsz[i] = tu_range(r, 1, 20000);
			hd->h[i] = kmem_heap_alloc(kas_heap(kas), hd->hsz[i],
			    KM_NOSLEEP);
		}
		break;
	case 5:
		/* Now and then free or reap the stack caches: both work on
		 * stacks off their lists, which fork() must wait out. */
		if (tu_range(r, 0, 31) == 0) {
			if (i & 1)
				segkp_cache_free();
			else
				segkp_cache_reap(seg, SEGKP_REAP_ALL);
		} else if (hd->st[i] != NULL) {
			segkp_release(seg, hd->st[i]);
			hd->st[i] = NULL;
		} else {
			hd->st[i] = (i & 1) ? segkp_cache_get(stack_cache) :
			    segkp_get(seg, 2 * Q, KPD_HASREDZONE | KPD_NOWAIT);
		}
		break;
	default:
		if (hd->s[i] != NULL) {
			segkmem_free(kas_heap_arena(kas), hd->s[i], 2 * Q);
			hd->s[i] = NULL;
		} else {
			hd->s[i] = segkmem_alloc(kas_heap_arena(kas), 2 * Q,
			    VM_NOSLEEP);
		}
		break;
	}
}

static void
release_all(held_t *hd)
{
	for (unsigned i = 0; i < NHOLD; i++) {
		if (hd->q[i] != NULL)
			vmem_free(qarena, hd->q[i], hd->qsz[i]);
		if (hd->c[i] != NULL)
			vmem_free(child_arena, hd->c[i], Q);
		if (hd->o[i] != NULL)
			kmem_cache_free(cache, hd->o[i]);
		if (hd->k[i] != NULL)
			kmem_free(hd->k[i], hd->ksz[i]);
		if (hd->h[i] != NULL)
			kmem_heap_free(kas_heap(kas), hd->h[i], hd->hsz[i]);
		if (hd->s[i] != NULL)
			segkmem_free(kas_heap_arena(kas), hd->s[i], 2 * Q);
		if (hd->st[i] != NULL)
			segkp_release(seg, hd->st[i]);
	}
	memset(hd, 0, sizeof (*hd));
}

static void *
worker(void *arg)
{
	static held_t hd;
	tu_rng_t r;

	(void)arg;
	tu_seed(&r, 12345);
	while (!atomic_load(&stop))
		churn_one(&hd, &r);
	release_all(&hd);
	return NULL;
}

/* A simulated address space of size bytes; NULL if it cannot be made. */
static kas_t *
sim_kas(const char *name, size_t size)
{
	kas_config_t cfg;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.name = name;
	cfg.size = size;
	return kas_create(&cfg);
}

/*
 * In the child: an address space of its own comes and goes. Creating one
 * takes the list of live address spaces' locks that the fork handlers
 * held; under ThreadSanitizer a lock the child could not release cleanly
 * shows up here as a reported lock-order cycle.
 */
static int
own_address_space(void)
{
	kas_t *mine;
	void *p;
	int bad = 0;

	mine = sim_kas("fk_kas_child", (size_t)16 << 20);
	if (mine == NULL)
		return 1;
	p = segkmem_alloc(kas_heap_arena(mine), 4 * Q, VM_NOSLEEP);
	bad |= p == NULL;
	if (p != NULL)
		segkmem_free(kas_heap_arena(mine), p, 4 * Q);
	bad |= vmem_check(kas_heap_arena(mine)) != 0;
	kas_destroy(mine);
	return bad;
}

/* In the child: use every arena, check them, exit 0. */
static int
child_body(void)
{
	static held_t hd;
	tu_rng_t r;
	int bad = 0;
	size_t inherited;

	/* The worker's allocations at the fork stay allocated here. */
	inherited = vmem_size(child_arena, VMEM_ALLOC);
	tu_seed(&r, (uint64_t)getpid());
	for (int i = 0; i < 2000; i++)
		churn_one(&hd, &r);
	release_all(&hd);
	kmem_reap();
	vmem_reap(qarena);
	bad |= vmem_check(qarena) != 0;
	bad |= vmem_check(child_arena) != 0;
	bad |= vmem_check(mem_arena) != 0;
	bad |= vmem_check(kas_heap_arena(kas)) != 0;
	bad |= vmem_check(kas_kmem_va(kas)) != 0;
	bad |= vmem_check(kas_kmem_default(kas)) != 0;
	bad |= segkp_check(seg) != 0;
	/* Every byte the child took came back. */
	bad |= vmem_size(child_arena, VMEM_ALLOC) != inherited;
	return bad ? 2 : 0;
}

static void
test_fork_while_allocating(void)
{
	int forks = (int)tu_env_long("VMEM_TEST_FORKS",
	    tu_slow_build() ? 20 : 150);
	pthread_t t;

	qarena = vmem_create("fk_q", (void *)(uintptr_t)0x10000000, 256 << 20,
	    Q, NULL, NULL, NULL, 5 * Q, VM_SLEEP);
	child_arena = vmem_create("fk_child", NULL, 0, Q, vmem_alloc,
	    vmem_free, qarena, 0, VM_SLEEP);
	mem_arena = vmem_create("fk_mem", region, sizeof (region), Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	cache = kmem_cache_create("fk_obj", 200, 0, NULL, NULL, NULL, NULL,
	    mem_arena, 0);
	kas = sim_kas("fk_kas", (size_t)256 << 20);
	REQUIRE(qarena && child_arena && mem_arena && cache && kas);
	seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
	REQUIRE(seg != NULL);
	stack_cache = segkp_cache_init(seg, 8, 2 * Q,
	    KPD_HASREDZONE | KPD_NOWAIT);
	REQUIRE(stack_cache != NULL);

	REQUIRE(pthread_create(&t, NULL, worker, NULL) == 0);
	tu_fork_children(forks, child_body,
	    "a fork handler waits for a lock the worker holds");
	atomic_store(&stop, 1);
	pthread_join(t, NULL);

	kmem_cache_destroy(cache);
	CHECK_EQ(vmem_size(mem_arena, VMEM_ALLOC), 0);
	vmem_destroy(mem_arena);
	vmem_destroy(child_arena);
	vmem_reap(qarena);
	CHECK_ARENA(qarena);
	CHECK_EQ(vmem_size(qarena, VMEM_ALLOC), 0);
	vmem_destroy(qarena);
	segkp_cache_destroy(stack_cache);
	CHECK(segkp_check(seg) == 0);
	segkp_destroy(seg);
	kas_destroy(kas);
}

/*
 * Before any thread exists: ThreadSanitizer checks a child's locking only
 * when the parent had one thread (after a multithreaded fork it ignores
 * the child), so this is where a fork handler that leaves a lock looking
 * held gets caught.
 */
static void
test_fork_then_new_address_space(void)
{
	kas_t *parent_kas;
	int status;
	pid_t pid;

	parent_kas = sim_kas("fk_kas_parent", (size_t)16 << 20);
	REQUIRE(parent_kas != NULL);
	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		alarm(tu_slow_build() ? 60 : 10);
		_exit(own_address_space());
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* And the parent's list of address spaces still works. */
	CHECK(kas_of_arena(kas_heap_arena(parent_kas)) == parent_kas);
	kas_destroy(parent_kas);
}

/*
 * A thread is inside a fault classifier when the process forks. In the
 * child that call never ends, so unregistering a classifier there must not
 * wait for it.
 */
static atomic_int in_classifier, leave_classifier;

static kas_fault_t
blocking_classifier(void *arg, uintptr_t addr, char *buf, size_t len)
{
	(void)arg;
	(void)addr;
	(void)buf;
	(void)len;
	atomic_store(&in_classifier, 1);
	while (!atomic_load(&leave_classifier))
		sched_yield();
	return KAS_FAULT_NONE;
}

static kas_fault_t
other_classifier(void *arg, uintptr_t addr, char *buf, size_t len)
{
	(void)arg;
	(void)addr;
	(void)buf;
	(void)len;
	return KAS_FAULT_NONE;
}

static void *
classify_thread(void *arg)
{
	kas_t *k = arg;

	(void)kas_classify(k, kas_base(k), NULL, 0);
	return NULL;
}

static void
test_fork_during_classify(void)
{
	kas_t *k;
	pthread_t t;
	int status;
	pid_t pid;

	HG_BENIGN(&in_classifier, "hand-shake flag, orders no memory");
	HG_BENIGN(&leave_classifier, "hand-shake flag, orders no memory");
	k = sim_kas("fk_kas_classify", (size_t)16 << 20);
	REQUIRE(k != NULL);
	REQUIRE(kas_register_fault_classifier(k, blocking_classifier,
	    NULL) == 0);
	REQUIRE(kas_register_fault_classifier(k, other_classifier,
	    NULL) == 0);
	REQUIRE(pthread_create(&t, NULL, classify_thread, k) == 0);
	while (!atomic_load(&in_classifier))
		sched_yield();
	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		alarm(tu_slow_build() ? 60 : 10);
		kas_unregister_fault_classifier(k, other_classifier, NULL);
		_exit(0);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	atomic_store(&leave_classifier, 1);
	REQUIRE(pthread_join(t, NULL) == 0);
	kas_unregister_fault_classifier(k, other_classifier, NULL);
	kas_unregister_fault_classifier(k, blocking_classifier, NULL);
	kas_destroy(k);
}

static atomic_long reads;
static kmem_cache_t *empty_cache;

static void
discard_line(void *arg, const char *line)
{
	(void)arg;
	(void)line;
}

static void *
stats_reader(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		kmem_cache_stats_t st;

		vmem_dump_arenas(discard_line, NULL);
		kmem_dump_caches(discard_line, NULL);
		kmem_cache_get_stats(cache, &st);
		(void)kmem_cache_set_debug(empty_cache,
		    (atomic_load(&reads) & 1) ? KMF_DEADBEEF : 0);
		atomic_fetch_add(&reads, 1);
	}
	return NULL;
}

/* In the child: read the statistics and change a cache's debug flags. */
static int
child_reads_statistics(void)
{
	kmem_cache_stats_t st;

	vmem_dump_arenas(discard_line, NULL);
	kmem_cache_get_stats(cache, &st);
	return kmem_cache_set_debug(empty_cache, 0) == 0 ? 0 : 2;
}

static void
test_fork_while_reading_statistics(void)
{
	int forks = (int)tu_env_long("VMEM_TEST_FORKS",
	    tu_slow_build() ? 20 : 300);
	void *p;
	pthread_t t;

	qarena = vmem_create("fk_stats_q", (void *)(uintptr_t)0x10000000,
	    64 << 20, Q, NULL, NULL, NULL, 8 * Q, VM_SLEEP);
	mem_arena = vmem_create("fk_stats_mem", region, sizeof (region), Q,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	cache = kmem_cache_create("fk_stats_obj", 200, 0, NULL, NULL, NULL,
	    NULL, mem_arena, 0);
	empty_cache = kmem_cache_create("fk_stats_empty", 64, 0, NULL, NULL,
	    NULL, NULL, mem_arena, 0);
	REQUIRE(qarena && mem_arena && cache && empty_cache);
	p = vmem_alloc(qarena, Q, VM_SLEEP);    /* a quantum cache in use */
	REQUIRE(p != NULL);
	vmem_free(qarena, p, Q);
	atomic_store(&stop, 0);
	REQUIRE(pthread_create(&t, NULL, stats_reader, NULL) == 0);
	tu_fork_children(forks, child_reads_statistics,
	    "a fork handler waits for a lock a statistics reader holds");
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	CHECK(atomic_load(&reads) > 0);
	kmem_cache_destroy(empty_cache);
	kmem_cache_destroy(cache);
	vmem_destroy(mem_arena);
	vmem_reap(qarena);
	CHECK_EQ(vmem_size(qarena, VMEM_ALLOC), 0);
	vmem_destroy(qarena);
}

/*
 * fork() from inside a walk's callback: the child drops every pin the walk
 * held (its threads are gone), including the forking thread's own; when
 * the callback returns there, its unpin must not wrap the count, or the
 * child's destroy of that arena or cache waits for ever.
 */
static vmem_t *walk_arena;
static kmem_cache_t *walk_cache;
static pid_t walk_child = -1;

static void
fork_at_arena(vmem_t *v, void *arg)
{
	(void)arg;
	if (v == walk_arena && walk_child < 0)
		walk_child = fork();
}

static void
fork_at_cache(kmem_cache_t *cp, void *arg)
{
	(void)arg;
	if (cp == walk_cache && walk_child < 0)
		walk_child = fork();
}

static void
test_fork_inside_a_walk(void)
{
	for (int kmem = 0; kmem < 2; kmem++) {
		int status;

		walk_arena = vmem_create("fk_walk", (void *)(uintptr_t)0x100000,
		    0x100000, Q, NULL, NULL, NULL, 0, VM_SLEEP);
		walk_cache = kmem_cache_create("fk_walk_obj", 64, 0, NULL,
		    NULL, NULL, NULL, walk_arena, KMC_NOTOUCH);
		REQUIRE(walk_arena != NULL && walk_cache != NULL);
		walk_child = -1;
		fflush(NULL);
		if (kmem)
			kmem_foreach_cache(fork_at_cache, NULL);
		else
			vmem_foreach_arena(fork_at_arena, NULL);
		REQUIRE(walk_child >= 0);
		if (walk_child == 0) {
			alarm(tu_slow_build() ? 60 : 10);
			kmem_cache_destroy(walk_cache);
			vmem_destroy(walk_arena);
			_exit(0);
		}
		REQUIRE(waitpid(walk_child, &status, 0) == walk_child);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		kmem_cache_destroy(walk_cache);
		vmem_destroy(walk_arena);
	}
}

int
main(void)
{
	tu_record_errors();
	RUN(test_fork_then_new_address_space);
	RUN(test_fork_while_allocating);
	RUN(test_fork_during_classify);
	RUN(test_fork_while_reading_statistics);
	RUN(test_fork_inside_a_walk);
	CHECK_EQ(tu_err.count, 0);
	return tu_finish();
}
