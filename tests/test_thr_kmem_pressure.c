/*
 * Memory pressure: an allocation that fails or is about to wait makes the
 * caches give back what they hold idle (illumos' kmem_reap), on the
 * platform's deferred-work thread.
 *
 * The shape every test uses: cache A takes the whole arena, and its
 * buffers are then freed (they stay in A's magazines and slabs) or held
 * by a client that gives them back from A's reclaim callback. Before the
 * pressure pass, a KM_SLEEP allocation of another cache on the same
 * arena, or a VM_SLEEP vmem_alloc, slept for ever beside that idle space.
 * A watchdog turns such a hang into a failure.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vmem/kmem.h>

#include "kmem_impl.h"
#include "testutil.h"

#define PAGE ((size_t)4096)
#define PAGES 64
#define HELD_MAX 64

/* The arena's resource is real memory: caches write their own
 * bookkeeping outside it, but the tests' buffers are touched. */
static _Alignas(4096) unsigned char memory[PAGES * PAGE];

static kmem_cache_t *cache_a;
static void *held[HELD_MAX];
static int nheld;
static atomic_int reclaims, destructs;
static pthread_t sleeper;
static atomic_int callback_in_sleeper;

static void
watchdog(unsigned seconds)
{
	alarm(tu_slow_build() ? 6 * seconds : seconds);
}

static void
note_thread(void)
{
	if (pthread_equal(pthread_self(), sleeper))
		atomic_store(&callback_in_sleeper, 1);
}

static void
reclaim_a(void *priv)
{
	(void)priv;
	note_thread();
	atomic_fetch_add(&reclaims, 1);
	while (nheld > 0)
		kmem_cache_free(cache_a, held[--nheld]);
}

static void
destruct_a(void *buf, void *priv)
{
	(void)buf;
	(void)priv;
	note_thread();
	atomic_fetch_add(&destructs, 1);
}

static int
construct_a(void *buf, void *priv, int kmflag)
{
	(void)buf;
	(void)priv;
	(void)kmflag;
	return 0;
}

/* Cache A takes every page of a fresh arena; keep: how many buffers its
 * client holds on to (the rest are freed into A at once). */
static vmem_t *
fill_with_a(const char *name, int keep)
{
	vmem_t *ar = vmem_create(name, memory, sizeof(memory), PAGE, NULL, NULL,
	    NULL, 0, VM_SLEEP);
	void *bufs[PAGES];
	int n = 0;

	REQUIRE(ar != NULL);
	cache_a = kmem_cache_create("pressure_a", PAGE, 0, construct_a,
	    destruct_a, reclaim_a, NULL, ar, 0);
	REQUIRE(cache_a != NULL);
	while (n < PAGES && (bufs[n] = kmem_cache_alloc(cache_a,
	    KM_NOSLEEP)) != NULL)
		n++;
	CHECK_EQ(vmem_size(ar, VMEM_FREE), 0);
	for (int i = 0; i < n; i++) {
		if (i < keep)
			held[nheld++] = bufs[i];
		else
			kmem_cache_free(cache_a, bufs[i]);
	}
	CHECK_EQ(vmem_size(ar, VMEM_FREE), 0);  /* all idle in A */
	return ar;
}

static void
teardown(vmem_t *ar)
{
	while (nheld > 0)
		kmem_cache_free(cache_a, held[--nheld]);
	kmem_cache_destroy(cache_a);
	CHECK_EQ(vmem_size(ar, VMEM_ALLOC), 0);
	CHECK_ARENA(ar);
	vmem_destroy(ar);
}

/* A pass has run since passes0 (the deferred thread rests between). */
static int
wait_for_pass(unsigned passes0)
{
	for (int i = 0; i < 500; i++) {
		if (kmem_pressure_test_passes() != passes0)
			return 1;
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	return 0;
}

static void
test_sleep_gets_space_idle_in_another_cache(void)
{
	vmem_t *ar = fill_with_a("pr_idle", 0);
	kmem_cache_t *b = kmem_cache_create("pressure_b", PAGE / 2, 0, NULL,
	    NULL, NULL, NULL, ar, 0);
	void *p, *big;

	REQUIRE(b != NULL);
	sleeper = pthread_self();
	atomic_store(&callback_in_sleeper, 0);
	watchdog(10);
	p = kmem_cache_alloc(b, KM_SLEEP);
	CHECK(p != NULL);
	CHECK(atomic_load(&destructs) > 0);     /* A's slabs went back */
	/* The same for vmem itself: 16 pages, some of them still in A. */
	big = vmem_alloc(ar, 16 * PAGE, VM_SLEEP);
	alarm(0);
	CHECK(big != NULL);
	CHECK_EQ(atomic_load(&callback_in_sleeper), 0);
	if (big != NULL)
		vmem_free(ar, big, 16 * PAGE);
	if (p != NULL)
		kmem_cache_free(b, p);
	kmem_cache_destroy(b);
	teardown(ar);
}

/* The client gives its buffers back only when asked (reclaim callback). */
static void
test_sleep_runs_reclaim_callbacks(void)
{
	vmem_t *ar = fill_with_a("pr_reclaim", HELD_MAX);
	int before = atomic_load(&reclaims);
	void *p;

	sleeper = pthread_self();
	atomic_store(&callback_in_sleeper, 0);
	watchdog(10);
	p = vmem_alloc(ar, 8 * PAGE, VM_SLEEP);
	alarm(0);
	CHECK(p != NULL);
	CHECK(atomic_load(&reclaims) > before);
	CHECK_EQ(atomic_load(&callback_in_sleeper), 0);
	if (p != NULL)
		vmem_free(ar, p, 8 * PAGE);
	teardown(ar);
}

/* A failing KM_NOSLEEP call starts a pass too (illumos reaps before it
 * fails), so a retry a little later succeeds. */
static void
test_nosleep_failure_starts_a_pass(void)
{
	vmem_t *ar = fill_with_a("pr_nosleep", 0);
	unsigned passes0 = kmem_pressure_test_passes();

	CHECK(vmem_alloc(ar, PAGE, VM_NOSLEEP) == NULL);
	CHECK(wait_for_pass(passes0));
	CHECK(vmem_size(ar, VMEM_FREE) > 0);
	teardown(ar);
}

/* VM_ABORT: "fail at once, do not reap or wait". */
static void
test_abort_starts_no_pass(void)
{
	vmem_t *ar = fill_with_a("pr_abort", 0);
	unsigned passes0 = kmem_pressure_test_passes();

	/* Let any pass already asked for run out first. */
	nanosleep(&(struct timespec){ 0, 300 * 1000 * 1000 }, NULL);
	passes0 = kmem_pressure_test_passes();
	CHECK(vmem_alloc(ar, PAGE, VM_NOSLEEP | VM_ABORT) == NULL);
	nanosleep(&(struct timespec){ 0, 300 * 1000 * 1000 }, NULL);
	CHECK_EQ(kmem_pressure_test_passes(), passes0);
	CHECK_EQ(vmem_size(ar, VMEM_FREE), 0);
	teardown(ar);
}

/* An identifier arena with a cache whose ids are all idle in it. */
static kmem_cache_t *
idle_id_cache(vmem_t **ids)
{
	void *got[256];
	int n = 0;
	kmem_cache_t *idc;

	*ids = vmem_create("pr_ids", (void *)(uintptr_t)1, 256, 1, NULL, NULL,
	    NULL, 0, VM_SLEEP | VMC_IDENTIFIER);
	REQUIRE(*ids != NULL);
	idc = kmem_cache_create("pressure_ids", 1, 1, NULL, NULL, NULL, NULL,
	    *ids, KMC_NOTOUCH);
	REQUIRE(idc != NULL);
	while (n < 256 && (got[n] = kmem_cache_alloc(idc, KM_NOSLEEP)) != NULL)
		n++;
	for (int i = 0; i < n; i++)
		kmem_cache_free(idc, got[i]);
	CHECK_EQ(vmem_size(*ids, VMEM_FREE), 0);
	return idc;
}

static void
id_cache_done(kmem_cache_t *idc, vmem_t *ids)
{
	kmem_cache_destroy(idc);
	CHECK_EQ(vmem_size(ids, VMEM_ALLOC), 0);
	vmem_destroy(ids);
}

/* The pass that a failing call on vmp asks for, run to its end. */
static void
fail_and_wait_for_pass(vmem_t *vmp, size_t size)
{
	unsigned passes0;

	/* Let a pass asked for earlier, and the worker's rest, run out. */
	nanosleep(&(struct timespec){ 0, 300 * 1000 * 1000 }, NULL);
	passes0 = kmem_pressure_test_passes();
	CHECK(vmem_alloc(vmp, size, VM_NOSLEEP) == NULL);
	CHECK(wait_for_pass(passes0));
}

/* Turned off, a failure starts no pass and the caches keep what they
 * hold (kvsim's figures must repeat run to run). */
static void
test_pressure_reap_off(void)
{
	vmem_t *ar = fill_with_a("pr_off", 0);
	unsigned passes0;

	CHECK_EQ(kmem_set_pressure_reap(0), 1);
	nanosleep(&(struct timespec){ 0, 300 * 1000 * 1000 }, NULL);
	passes0 = kmem_pressure_test_passes();
	CHECK(vmem_alloc(ar, PAGE, VM_NOSLEEP) == NULL);
	nanosleep(&(struct timespec){ 0, 300 * 1000 * 1000 }, NULL);
	CHECK_EQ(kmem_pressure_test_passes(), passes0);
	CHECK_EQ(vmem_size(ar, VMEM_FREE), 0);
	CHECK_EQ(kmem_set_pressure_reap(1), 0);
	fail_and_wait_for_pass(ar, PAGE);
	CHECK(vmem_size(ar, VMEM_FREE) > 0);
	teardown(ar);
}

/*
 * As illumos: running out of ids (kmem_reap_idspace) empties only the
 * caches over identifier arenas, which kmem marks KMC_IDENTIFIER; running
 * out of memory (kmem_reap) empties every cache.
 */
static void
test_identifier_pressure_is_apart(void)
{
	vmem_t *ids, *ar;
	kmem_cache_t *idc = idle_id_cache(&ids);

	ar = fill_with_a("pr_mem", 0);
	fail_and_wait_for_pass(ids, 1);
	CHECK(vmem_size(ids, VMEM_FREE) > 0);
	CHECK_EQ(vmem_size(ar, VMEM_FREE), 0);   /* A kept its pages */
	id_cache_done(idc, ids);

	idc = idle_id_cache(&ids);
	fail_and_wait_for_pass(ar, PAGE);
	CHECK(vmem_size(ar, VMEM_FREE) > 0);
	CHECK(vmem_size(ids, VMEM_FREE) > 0);
	id_cache_done(idc, ids);
	teardown(ar);
}

static atomic_int id_reclaims, mem_reclaims;
static void count_id_reclaim(void *p) { (void)p; atomic_fetch_add(&id_reclaims, 1); }
static void count_mem_reclaim(void *p) { (void)p; atomic_fetch_add(&mem_reclaims, 1); }

/* The synchronous forms, kmem_reap_idspace and kmem_reap. */
static void
test_reap_idspace(void)
{
	vmem_t *ids = vmem_create("pr_ids2", (void *)(uintptr_t)1, 64, 1, NULL,
	    NULL, NULL, 0, VM_SLEEP | VMC_IDENTIFIER);
	vmem_t *ar = vmem_create("pr_mem2", memory, sizeof(memory), PAGE, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *idc, *mc;

	REQUIRE(ids != NULL && ar != NULL);
	idc = kmem_cache_create("pr_idc", 1, 1, NULL, NULL, count_id_reclaim,
	    NULL, ids, KMC_NOTOUCH);
	mc = kmem_cache_create("pr_mc", 64, 0, NULL, NULL, count_mem_reclaim,
	    NULL, ar, 0);
	REQUIRE(idc != NULL && mc != NULL);
	kmem_reap_idspace();
	CHECK_EQ(atomic_load(&id_reclaims), 1);
	CHECK_EQ(atomic_load(&mem_reclaims), 0);
	kmem_reap();
	CHECK_EQ(atomic_load(&id_reclaims), 2);
	CHECK_EQ(atomic_load(&mem_reclaims), 1);
	kmem_cache_destroy(mc);
	kmem_cache_destroy(idc);
	vmem_destroy(ar);
	vmem_destroy(ids);
}

/* The deferred-work thread stays in the parent: the child starts its own. */
static int
child_sleeps(void)
{
	int failures = tu_failures;
	vmem_t *ar = fill_with_a("pr_child", 0);
	void *p = vmem_alloc(ar, 4 * PAGE, VM_SLEEP);

	if (p == NULL)
		return 2;
	vmem_free(ar, p, 4 * PAGE);
	teardown(ar);
	return tu_failures != failures;
}

static void
test_fork_child_gets_a_worker(void)
{
	if (!tu_child_threads_work()) {
		printf("  (skipped: the child of a threaded process cannot"
		    " start threads under this sanitizer)\n");
		return;
	}
	/* The parent's worker exists and has just been asked for a pass
	 * (perhaps still pending, or running, at a fork). */
	vmem_t *ar = fill_with_a("pr_parent", 0);

	CHECK(vmem_alloc(ar, PAGE, VM_NOSLEEP) == NULL);
	teardown(ar);
	tu_fork_children(3, child_sleeps, "pressure worker");
}

static atomic_int probes_go;

static void *
probe_thread(void *arg)
{
	while (!atomic_load(&probes_go))
		nanosleep(&(struct timespec){ 0, 1000 * 1000 }, NULL);
	return arg;
}

/*
 * In a child (whose worker is not started yet): the first request finds
 * no thread can be created (the address-space limit leaves no room for a
 * stack), then the limit is lifted. Exit 0 if a later request gets a
 * pass, 1 if none comes, 3 if the limit did not stop threads here.
 */
static int
child_worker_start_fails(void)
{
	static _Alignas(4096) unsigned char one[PAGE];
	vmem_t *ar = vmem_create("pr_nothread", one, sizeof(one), PAGE, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	void *p = vmem_alloc(ar, PAGE, VM_SLEEP);
	unsigned passes0 = kmem_pressure_test_passes();
	struct rlimit old, low;
	long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	pthread_t probes[64];
	int nprobes = 0, got = 0;

	if (ar == NULL || p == NULL || f == NULL ||
	    fscanf(f, "%ld", &pages) != 1 || getrlimit(RLIMIT_AS, &old) != 0)
		return 2;
	fclose(f);
	low = old;
	low.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) +
	    (1u << 20);
	if (setrlimit(RLIMIT_AS, &low) != 0)
		return 3;
	/* Live threads take the stacks glibc keeps from the parent's dead
	 * ones, until a new stack must be mapped. */
	while (nprobes < 64 && pthread_create(&probes[nprobes], NULL,
	    probe_thread, NULL) == 0)
		nprobes++;
	if (nprobes < 64)
		(void)vmem_alloc(ar, PAGE, VM_NOSLEEP);     /* no worker */
	if (setrlimit(RLIMIT_AS, &old) != 0)
		return 2;
	atomic_store(&probes_go, 1);
	for (int i = 0; i < nprobes; i++)
		(void)pthread_join(probes[i], NULL);
	if (nprobes == 64)
		return 3;
	for (int i = 0; i < 40 && !got; i++) {
		(void)vmem_alloc(ar, PAGE, VM_NOSLEEP);
		nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
		got = kmem_pressure_test_passes() != passes0;
	}
	vmem_free(ar, p, PAGE);
	vmem_destroy(ar);
	return got ? 0 : 1;
}

/* A worker that could not be started once is started by a later request:
 * the request that failed must not stay "asked" for ever. */
static void
test_worker_start_failure_is_retried(void)
{
	pid_t pid;
	int status = -1;

	if (!tu_child_threads_work()) {
		printf("  (skipped: the child of a threaded process cannot"
		    " start threads under this sanitizer)\n");
		return;
	}
	if (tu_under_valgrind()) {
		printf("  (skipped: helgrind reports the refused pthread_create"
		    " that the test provokes as an error)\n");
		return;
	}
	watchdog(20);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(child_worker_start_fails());
	REQUIRE(waitpid(pid, &status, 0) == pid);
	alarm(0);
	REQUIRE(WIFEXITED(status));
	if (WEXITSTATUS(status) == 3) {
		printf("  (skipped: the address-space limit did not keep a"
		    " thread from starting)\n");
		return;
	}
	CHECK_EQ(WEXITSTATUS(status), 0);
}

int
main(void)
{
	RUN(test_sleep_gets_space_idle_in_another_cache);
	RUN(test_sleep_runs_reclaim_callbacks);
	RUN(test_nosleep_failure_starts_a_pass);
	RUN(test_abort_starts_no_pass);
	RUN(test_identifier_pressure_is_apart);
	RUN(test_reap_idspace);
	RUN(test_pressure_reap_off);
	RUN(test_fork_child_gets_a_worker);
	RUN(test_worker_start_failure_is_retried);
	return tu_finish();
}
