/*
 * Real threads on segkp stacks: creation and join, names, detached
 * threads and the reaper, 10,000 threads with 1,000 alive at once, join
 * misuse, segments without free cache slots, forked children (what the
 * child keeps of the parent's kthreads), and stack overflow caught in the
 * redzone (in child processes: the message, the signal, the configurable
 * action, chaining of faults that are not segkp's, several redzone pages
 * against stack clash).
 *
 * Not named test_thr_*: ThreadSanitizer cannot run on kernel-sized stacks.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vmem/kthread.h>

#include "testutil.h"

/* ------------------------------------------------------------------ */
/* Running a child that is expected to die. */

typedef struct child_result {
	int status;
	char err[4096];
} child_result_t;

static void
run_child(void (*body)(void), child_result_t *res)
{
	int fds[2];
	pid_t pid;
	size_t n = 0;
	ssize_t r;

	REQUIRE(pipe(fds) == 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], STDERR_FILENO);
		body();
		_exit(99); /* the body should not come back */
	}
	close(fds[1]);
	while ((r = read(fds[0], res->err + n, sizeof (res->err) - 1 - n)) > 0)
		n += (size_t)r;
	res->err[n] = '\0';
	close(fds[0]);
	REQUIRE(waitpid(pid, &res->status, 0) == pid);
}

/* Recurse until the stack runs out; frames of about frame_bytes. */
static int recurse_depth;
static volatile int depth_limit = 1 << 30; /* never reached */

static int __attribute__((noinline))
recurse(int depth)
{
	volatile char pad[512];

	pad[0] = (char)depth;
	recurse_depth = depth;
	if (depth > depth_limit)
		return 0;
	return recurse(depth + 1) + pad[0];
}

static void *
overflow_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)recurse(0);
}

static void
child_overflow(void)
{
	kthread_attr_t a;
	kthread_t *t;

	REQUIRE(kthread_init(NULL) == 0);
	kthread_attr_init(&a);
	a.name = "worker-7";
	t = kthread_create(overflow_thread, NULL, &a);
	REQUIRE(t != NULL);
	kthread_join(t, NULL);
}

static void
test_overflow_message_and_abort(void)
{
	child_result_t res;
	void *lo;

	run_child(child_overflow, &res);
	CHECK(WIFSIGNALED(res.status) && WTERMSIG(res.status) == SIGABRT);
	CHECK(strstr(res.err, "segkp: stack overflow: thread 'worker-7' ran "
	    "into the redzone of stack [0x") != NULL);
	/* One line, with a well-formed range. */
	{
		const char *m = strstr(res.err, "[0x");
		unsigned long a = 0, b = 0;

		CHECK(m != NULL && sscanf(m, "[%lx,%lx)", &a, &b) == 2);
		CHECK(b > a && b - a < 4 * 4096 && a % 4096 == 0);
	}
	(void)lo;
}

static void
exit_42(const kthread_overflow_info_t *info, void *arg)
{
	(void)arg;
	if (info->stack_hi > info->stack_lo &&
	    info->fault_addr < info->stack_lo &&
	    strcmp(info->kind, "thread") == 0 &&
	    strcmp(info->name, "worker-7") == 0)
		_exit(42);
	_exit(43);
}

static void
child_overflow_action(void)
{
	kthread_set_overflow_action(exit_42, NULL, 0);
	child_overflow();
}

static void
test_overflow_action(void)
{
	child_result_t res;

	run_child(child_overflow_action, &res);
	CHECK(WIFEXITED(res.status) && WEXITSTATUS(res.status) == 42);
	CHECK(strstr(res.err, "thread 'worker-7' ran into the redzone") !=
	    NULL);
}

/*
 * The action runs on the thread's signal stack after the kernel's signal
 * frame (about 13 KiB with AVX-512 state): it must have room for stdio.
 * With a 2-page signal stack this fprintf crashed the child.
 */
static void
print_and_exit_42(const kthread_overflow_info_t *info, void *arg)
{
	char big[2048];

	(void)arg;
	snprintf(big, sizeof (big), "%s '%s' at %p", info->kind, info->name,
	    (void *)info->fault_addr);
	fprintf(stderr, "action: %s\n", big);
	_exit(42);
}

static void *
coro_overflow_body(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)recurse(0);
}

static void *
thread_resuming_coro(void *arg)
{
	kthread_coro_t *co = kthread_coro_create(coro_overflow_body, NULL,
	    "co-7", 0);

	(void)arg;
	if (co != NULL)
		kthread_coro_resume(co, NULL);
	return NULL;
}

static void
child_stdio_action_thread(void)
{
	kthread_set_overflow_action(print_and_exit_42, NULL, 0);
	child_overflow();
}

static void
child_stdio_action_coro_on_main(void)
{
	kthread_coro_t *co;

	kthread_set_overflow_action(print_and_exit_42, NULL, 0);
	co = kthread_coro_create(coro_overflow_body, NULL, "co-7", 0);
	if (co != NULL)
		kthread_coro_resume(co, NULL);
}

static void
child_stdio_action_coro_in_thread(void)
{
	kthread_t *t;

	kthread_set_overflow_action(print_and_exit_42, NULL, 0);
	t = kthread_create(thread_resuming_coro, NULL, NULL);
	if (t != NULL)
		kthread_join(t, NULL);
}

static void
test_overflow_action_with_stdio(void)
{
	void (*bodies[3])(void) = { child_stdio_action_thread,
	    child_stdio_action_coro_on_main, child_stdio_action_coro_in_thread };
	const char *expect[3] = { "action: thread 'worker-7' at 0x",
	    "action: coroutine 'co-7' at 0x", "action: coroutine 'co-7' at 0x" };

	for (int i = 0; i < 3; i++) {
		child_result_t res;

		run_child(bodies[i], &res);
		CHECK(WIFEXITED(res.status) && WEXITSTATUS(res.status) == 42);
		CHECK(strstr(res.err, expect[i]) != NULL);
		if (!WIFEXITED(res.status))
			fprintf(stderr, "  case %d: killed by signal %d\n", i,
			    WTERMSIG(res.status));
	}
}

/* Frames larger than a page, each touching its lowest byte first. */
static int __attribute__((noinline))
clash(int depth)
{
	volatile char big[6 * 1024];

	big[0] = (char)depth;
	big[sizeof (big) - 1] = (char)depth;
	if (depth > depth_limit)
		return 0;
	return clash(depth + 1) + big[0];
}

static void *
clash_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)clash(0);
}

static void
child_clash(void)
{
	kthread_attr_t a;
	kthread_t *t;

	REQUIRE(kthread_init(NULL) == 0);
	kthread_attr_init(&a);
	a.name = "clash";
	a.stacksize = 8 * 4096;
	a.kpd_flags = KPD_REDZONE_PAGES(4);
	t = kthread_create(clash_thread, NULL, &a);
	REQUIRE(t != NULL);
	kthread_join(t, NULL);
}

static void
test_stack_clash_caught(void)
{
	child_result_t res;

	run_child(child_clash, &res);
	CHECK(WIFSIGNALED(res.status) && WTERMSIG(res.status) == SIGABRT);
	CHECK(strstr(res.err, "thread 'clash' ran into the redzone") != NULL);
}

/*
 * A frame much larger than the redzone jumps over it. The thread's stack
 * is the first allocation of a fixed segment with unassigned (PROT_NONE)
 * address space below it, so the jump faults there: the report must
 * still name the thread (it was a bare SIGSEGV).
 */
static int __attribute__((noinline))
huge_frame(int depth)
{
	volatile char big[96 * 1024];

	big[0] = (char)depth;            /* the lowest byte first */
	big[sizeof (big) - 1] = (char)depth;
	return big[0] + big[sizeof (big) - 1];
}

static void *
huge_frame_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)huge_frame(1);
}

static void
child_jump_over_redzone(void)
{
	kas_config_t cfg;
	kas_t *kas;
	segkp_t *seg;
	kthread_attr_t a;
	kthread_t *t;

	kas_config_init(&cfg);
	cfg.size = 64u << 20;
	cfg.nheap_spans = 1;
	cfg.heap_spans[0].start = 16u << 20;
	cfg.heap_spans[0].end = 64u << 20;
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);
	/* [0, 8 MiB) of the kas stays reserved and inaccessible. */
	seg = segkp_create(kas, SEGKP_FIXED, (void *)(kas_base(kas) +
	    (8u << 20)), 8u << 20);
	REQUIRE(seg != NULL);
	REQUIRE(kthread_init(seg) == 0);
	kthread_attr_init(&a);
	a.name = "jumper";
	t = kthread_create(huge_frame_thread, NULL, &a);
	REQUIRE(t != NULL);
	kthread_join(t, NULL);
}

static void
test_jump_over_redzone_caught(void)
{
	child_result_t res;

	run_child(child_jump_over_redzone, &res);
	CHECK(WIFSIGNALED(res.status) && WTERMSIG(res.status) == SIGABRT);
	CHECK(strstr(res.err, "segkp: stack overflow: thread 'jumper' jumped "
	    "over the redzone of stack [0x") != NULL);
	if (!WIFSIGNALED(res.status) || WTERMSIG(res.status) != SIGABRT)
		fprintf(stderr, "  child status 0x%x: %s\n", res.status,
		    res.err);
}

static void *
return_arg(void *arg)
{
	return arg;
}

static void *
coro_return_arg(void *arg)
{
	return arg;
}

/* Threads and coroutines on seg work, with nothing reported. */
static void
kthreads_work_on(segkp_t *seg)
{
	kthread_t *t[4];

	tu_record_errors();
	CHECK_EQ(kthread_init(seg), 0);
	for (int round = 0; round < 2; round++) {
		kthread_coro_t *co;

		for (int i = 0; i < 4; i++)
			REQUIRE((t[i] = kthread_create(return_arg, &t[i],
			    NULL)) != NULL);
		for (int i = 0; i < 4; i++) {
			void *ret = NULL;

			CHECK_EQ(kthread_join(t[i], &ret), 0);
			CHECK(ret == &t[i]);
		}
		co = kthread_coro_create(coro_return_arg, t, NULL, 0);
		REQUIRE(co != NULL);
		CHECK(kthread_coro_resume(co, NULL) == t);
		kthread_coro_destroy(co);
	}
	CHECK_EQ(tu_err.count, 0);
	tu_default_errors();
	CHECK(segkp_check(seg) == 0);
}

/* A segment whose user took every cache slot. */
static segkp_t *
segment_without_slots(kas_t *kas, void *caches[SEGKP_MAX_CACHES])
{
	segkp_t *seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
	size_t ps;

	REQUIRE(seg != NULL);
	ps = segkp_pagesize(seg);
	for (int i = 0; i < SEGKP_MAX_CACHES; i++)
		REQUIRE((caches[i] = segkp_cache_init(seg, 4,
		    (size_t)(i + 8) * ps, KPD_HASREDZONE)) != NULL);
	return seg;
}

static void
segment_destroy_with(segkp_t *seg, void *caches[], int ncaches)
{
	for (int i = 0; i < ncaches; i++)
		segkp_cache_destroy(caches[i]);
	segkp_destroy(seg);
}

/*
 * kthread wants three stack caches on its segment (thread stacks,
 * coroutine stacks, signal stacks). On a segment whose user already took
 * six, seven or all eight slots, the kinds left without one get their
 * stacks straight from segkp; kthread_init used to report SEGKP_E_TOOMANY
 * (abort by default) or fail with ENOMEM when fewer than two were free.
 */
static void
test_kthread_on_segment_with_few_cache_slots(void)
{
	kas_t *kas = kas_create(NULL);

	REQUIRE(kas != NULL);
	for (int taken = 6; taken <= SEGKP_MAX_CACHES; taken++) {
		segkp_t *seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
		size_t ps;
		void *caches[SEGKP_MAX_CACHES];
		segkp_stats_t st;

		REQUIRE(seg != NULL);
		ps = segkp_pagesize(seg);
		for (int i = 0; i < taken; i++)
			REQUIRE((caches[i] = segkp_cache_init(seg, 4,
			    (size_t)(i + 8) * ps, KPD_HASREDZONE)) != NULL);
		kthreads_work_on(seg);
		CHECK_EQ(kthread_init(NULL), 0);    /* back to its own */
		segkp_get_stats(seg, &st);
		/* With no slot, every stack was got and given back alone. */
		CHECK(taken < SEGKP_MAX_CACHES || st.cache_hits == 0);
		CHECK(st.releases > 0 && st.inuse == 0);
		segment_destroy_with(seg, caches, taken);
	}
	kas_destroy(kas);
}

/*
 * The same when the process's table of caches is what is full. kthread
 * is parked first on a segment where it holds no cache, so that its own
 * caches do not free slots at the switch.
 */
static void
test_kthread_with_process_cache_table_full(void)
{
	enum { PER_KAS = 4, MAX_KAS = 16 };
	kas_config_t cfg;
	kas_t *sim[MAX_KAS], *kas;
	segkp_t *fill[MAX_KAS * PER_KAS], *seg, *parked;
	void *caches[MAX_KAS * PER_KAS * SEGKP_MAX_CACHES];
	void *parked_caches[SEGKP_MAX_CACHES];
	int nkas = 0, nseg = 0, ncache = 0;
	segkp_stats_t st;

	kas = kas_create(NULL);
	REQUIRE(kas != NULL);
	parked = segment_without_slots(kas, parked_caches);
	REQUIRE(kthread_init(parked) == 0);
	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.size = 64u << 20;
	tu_record_errors();
	while (tu_err.count == 0 && nkas < MAX_KAS) {
		REQUIRE((sim[nkas] = kas_create(&cfg)) != NULL);
		for (int k = 0; k < PER_KAS && tu_err.count == 0; k++) {
			REQUIRE((fill[nseg] = segkp_create(sim[nkas],
			    SEGKP_FROMHEAP, NULL, 0)) != NULL);
			for (int i = 0; i < SEGKP_MAX_CACHES &&
			    tu_err.count == 0; i++)
				if ((caches[ncache] = segkp_cache_init(
				    fill[nseg], 2, 4096, 0)) != NULL)
					ncache++;
			nseg++;
		}
		nkas++;
	}
	REQUIRE(tu_err.code == SEGKP_E_TOOMANY);
	tu_default_errors();
	seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
	REQUIRE(seg != NULL);
	kthreads_work_on(seg);
	segkp_get_stats(seg, &st);
	CHECK_EQ(st.cache_hits, 0);
	CHECK(st.releases > 0 && st.inuse == 0);
	for (int i = 0; i < ncache; i++)
		segkp_cache_destroy(caches[i]);
	for (int i = 0; i < nseg; i++)
		segkp_destroy(fill[i]);
	for (int i = 0; i < nkas; i++)
		kas_destroy(sim[i]);
	CHECK_EQ(kthread_init(NULL), 0);
	segkp_destroy(seg);
	segment_destroy_with(parked, parked_caches, SEGKP_MAX_CACHES);
	kas_destroy(kas);
}

/* A fault that is not segkp's goes to the handler installed before. */
static void
own_segv(int sig)
{
	(void)sig;
	_exit(7);
}

static void *
bad_deref_thread(void *arg)
{
	volatile int *p = arg;

	return (void *)(intptr_t)*p;
}

/* A page that is nobody's: not segkp's, not mapped. */
static void *
inaccessible_page(void)
{
	void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
	    -1, 0);

	REQUIRE(p != MAP_FAILED);
	return p;
}

static void
child_chain_to_previous(void)
{
	kthread_t *t;

	signal(SIGSEGV, own_segv);
	REQUIRE(kthread_init(NULL) == 0);
	t = kthread_create(bad_deref_thread, inaccessible_page(), NULL);
	REQUIRE(t != NULL);
	kthread_join(t, NULL);
}

static void
child_chain_to_default(void)
{
	kthread_t *t;

	REQUIRE(kthread_init(NULL) == 0);
	t = kthread_create(bad_deref_thread, inaccessible_page(), NULL);
	REQUIRE(t != NULL);
	kthread_join(t, NULL);
}

static void
test_other_faults_chain(void)
{
	child_result_t res;

	run_child(child_chain_to_previous, &res);
	CHECK(WIFEXITED(res.status) && WEXITSTATUS(res.status) == 7);
	CHECK(strstr(res.err, "stack overflow") == NULL);
	run_child(child_chain_to_default, &res);
#if defined(__SANITIZE_ADDRESS__)
	/* The handler before ours is AddressSanitizer's: it reports. */
	CHECK(strstr(res.err, "AddressSanitizer") != NULL);
#else
	CHECK(WIFSIGNALED(res.status) && WTERMSIG(res.status) == SIGSEGV);
#endif
	CHECK(strstr(res.err, "stack overflow") == NULL);
}

/* ------------------------------------------------------------------ */
/* Threads. */

static void *
report_self(void *arg)
{
	kthread_t *self = kthread_self();
	void *lo;
	size_t len;
	int local = 0;

	kthread_stack(self, &lo, &len);
	if ((char *)&local < (char *)lo || (char *)&local >= (char *)lo + len)
		return NULL;
	if (strcmp(kthread_name(self), (const char *)arg) != 0)
		return NULL;
	return self;
}

/* Stacks asked smaller than glibc accepts get its minimum (they used to
 * fail with EINVAL and no report). */
static void
test_small_stack_raised(void)
{
	static const size_t sizes[] = { 1, 4096, 8192, 12288 };
	kthread_attr_t a;

	REQUIRE(kthread_init(NULL) == 0);
	for (size_t i = 0; i < sizeof (sizes) / sizeof (sizes[0]); i++) {
		kthread_t *t;
		void *ret = NULL, *lo;
		size_t len;

		kthread_attr_init(&a);
		a.name = "small";
		a.stacksize = sizes[i];
		t = kthread_create(report_self, "small", &a);
		CHECK(t != NULL);
		if (t == NULL)
			continue;
		kthread_stack(t, &lo, &len);
		CHECK(len >= (size_t)PTHREAD_STACK_MIN);
		CHECK_EQ(kthread_join(t, &ret), 0);
		CHECK(ret == t);
	}
}

static void
test_create_join(void)
{
	kthread_attr_t a;
	kthread_t *t;
	void *ret = NULL;
	segkp_info_t in;
	void *lo;
	size_t len;

	REQUIRE(kthread_init(NULL) == 0);
	kthread_attr_init(&a);
	a.name = "alpha";
	t = kthread_create(report_self, "alpha", &a);
	REQUIRE(t != NULL);
	CHECK(strcmp(kthread_name(t), "alpha") == 0);
	kthread_stack(t, &lo, &len);
	CHECK_EQ(len, KTHREAD_STACK_PAGES * segkp_pagesize(kthread_segkp()));
	/* The structure is carved from the top of the stack. */
	CHECK((char *)t > (char *)lo && (char *)t < (char *)lo + len);
	CHECK(segkp_find(kthread_segkp(), lo, &in) == 1);
	CHECK_EQ(in.redzone, segkp_pagesize(kthread_segkp()));
	CHECK_EQ(in.size, 5 * segkp_pagesize(kthread_segkp()));
	CHECK_EQ(kthread_join(t, &ret), 0);
	CHECK(ret == t);
	CHECK(kthread_self() == NULL);
	/* Default names, a bigger stack outside the cache. */
	a.name = NULL;
	a.stacksize = 64 * 1024;
	t = kthread_create(report_self, "x", &a);
	REQUIRE(t != NULL);
	CHECK(strncmp(kthread_name(t), "kthread-", 8) == 0);
	kthread_stack(t, &lo, &len);
	CHECK_EQ(len, 64 * 1024);
	CHECK_EQ(kthread_join(t, &ret), 0);
	CHECK(ret == NULL);  /* name mismatch: "x" */
}

static atomic_int running;
static atomic_int peak;

static void *
count_alive(void *arg)
{
	int now = atomic_fetch_add(&running, 1) + 1;
	int p = atomic_load(&peak);

	while (now > p && !atomic_compare_exchange_weak(&peak, &p, now))
		;
	atomic_fetch_sub(&running, 1);
	return arg;
}

static void
test_ten_thousand_threads(void)
{
	int total = tu_slow_build() ? 1000 : 10000;
	int batch = tu_slow_build() ? 100 : 1000;
	kthread_t **t = calloc((size_t)batch, sizeof (*t));
	kthread_stats_t before, after;
	segkp_stats_t ss;
	int bad = 0;

	REQUIRE(t != NULL);
	REQUIRE(kthread_init(NULL) == 0);
	kthread_get_stats(&before);
	for (int done = 0; done < total; done += batch) {
		for (int i = 0; i < batch; i++) {
			t[i] = kthread_create(count_alive,
			    (void *)(intptr_t)(done + i), NULL);
			REQUIRE(t[i] != NULL);
		}
		for (int i = 0; i < batch; i++) {
			void *r;

			CHECK_EQ(kthread_join(t[i], &r), 0);
			bad += r != (void *)(intptr_t)(done + i);
		}
	}
	CHECK_EQ(bad, 0);
	kthread_get_stats(&after);
	CHECK_EQ(after.created - before.created, total);
	CHECK_EQ(after.joined - before.joined, total);
	CHECK_EQ(after.alive, 0);
	segkp_get_stats(kthread_segkp(), &ss);
	CHECK(ss.cache_hits >= (uint64_t)(total - 2 * batch));
	CHECK_EQ(ss.inuse, 0);
	CHECK(segkp_check(kthread_segkp()) == 0);
	printf("  %d threads, %d at a time; segkp: %llu cache hits, %llu "
	    "misses, %lu cached\n", total, batch,
	    (unsigned long long)ss.cache_hits,
	    (unsigned long long)ss.cache_misses, (unsigned long)ss.cached);
	free(t);
}

static atomic_int detached_ran;

static void *
detached_fn(void *arg)
{
	atomic_fetch_add(&detached_ran, 1);
	return arg;
}

static void
test_detached_reaped(void)
{
	int n = tu_slow_build() ? 50 : 300;
	kthread_attr_t a;
	kthread_stats_t st, before;

	REQUIRE(kthread_init(NULL) == 0);
	kthread_get_stats(&before);
	kthread_attr_init(&a);
	a.detached = 1;
	for (int i = 0; i < n; i++)
		REQUIRE(kthread_create(detached_fn, NULL, &a) != NULL);
	/* Wait (not on a clock) until the reaper joined every one. */
	do {
		(void)kthread_reap();
		sched_yield();
		kthread_get_stats(&st);
	} while (st.reaped - before.reaped < (uint64_t)n);
	CHECK_EQ(atomic_load(&detached_ran), n);
	CHECK_EQ(st.alive, 0);
	CHECK(segkp_check(kthread_segkp()) == 0);
}

static void
test_join_misuse(void)
{
	kthread_attr_t a;
	kthread_t *t;
	int not_a_thread[64] = { 0 };

	REQUIRE(kthread_init(NULL) == 0);
	tu_record_errors();
	t = kthread_create(detached_fn, NULL, NULL);
	REQUIRE(t != NULL);
	CHECK_EQ(kthread_join(t, NULL), 0);
	CHECK_EQ(kthread_join(t, NULL), EINVAL);   /* joined twice */
	CHECK_EQ(tu_err.code, KTHREAD_E_BADTHREAD);
	CHECK_EQ(kthread_join((kthread_t *)not_a_thread, NULL), EINVAL);
	CHECK_EQ(kthread_join(NULL, NULL), EINVAL);
	kthread_attr_init(&a);
	a.detached = 1;
	t = kthread_create(detached_fn, NULL, &a);
	REQUIRE(t != NULL);
	/* Joining a detached thread: refused (unless it is already gone). */
	CHECK_EQ(kthread_join(t, NULL), EINVAL);
	CHECK_EQ(tu_err.count, 4);
	CHECK(kthread_create(NULL, NULL, NULL) == NULL && errno == EINVAL);
	tu_default_errors();
	for (;;) {
		kthread_stats_t st;

		(void)kthread_reap();
		kthread_get_stats(&st);
		if (st.alive == 0)
			break;
		sched_yield();
	}
}

/*
 * kpd_flags segkp refuses are the caller's error: reported, EINVAL, and
 * nothing taken (it was EAGAIN, as if the segment had run out).
 */
static void
test_bad_kpd_flags(void)
{
	static const int bad[] = { 0x4000000, KPD_NO_ANON, 0x20 };
	kthread_attr_t a;
	kthread_stats_t before, after;
	segkp_stats_t s0, s1;

	REQUIRE(kthread_init(NULL) == 0);
	kthread_get_stats(&before);
	segkp_get_stats(kthread_segkp(), &s0);
	tu_record_errors();
	for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++) {
		kthread_attr_init(&a);
		a.kpd_flags = bad[i];
		errno = 0;
		tu_reset_errors();
		CHECK(kthread_create(detached_fn, NULL, &a) == NULL);
		CHECK_EQ(errno, EINVAL);
		CHECK_EQ(tu_err.count, 1);
		CHECK_EQ(tu_err.code, SEGKP_E_BADFLAGS);
		CHECK(strcmp(tu_err.call, "kthread_create") == 0);
	}
	tu_default_errors();
	kthread_get_stats(&after);
	CHECK_EQ(after.create_fail - before.create_fail, 3);
	CHECK_EQ(after.created, before.created);
	segkp_get_stats(kthread_segkp(), &s1);
	CHECK_EQ(s1.gets + s1.cache_hits, s0.gets + s0.cache_hits);
	/* Flags segkp takes still work. */
	kthread_attr_init(&a);
	a.kpd_flags = KPD_LOCKED | KPD_NO_ANON | KPD_REDZONE_PAGES(2);
	{
		kthread_t *t = kthread_create(detached_fn, &a, &a);
		void *ret = NULL;

		REQUIRE(t != NULL);
		CHECK_EQ(kthread_join(t, &ret), 0);
		CHECK(ret == &a);
	}
}

static void
test_init_rules(void)
{
	kas_config_t cfg;
	kas_t *sim;
	segkp_t *seg;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.size = 64u << 20;
	sim = kas_create(&cfg);
	REQUIRE(sim != NULL);
	seg = segkp_create(sim, SEGKP_FROMHEAP, NULL, 0);
	REQUIRE(seg != NULL);
	tu_record_errors();
	CHECK_EQ(kthread_init(seg), EINVAL);
	CHECK_EQ(tu_err.code, KTHREAD_E_NOTREAL);
	tu_default_errors();
	segkp_destroy(seg);
	kas_destroy(sim);
}

/* Threads on a segment of one's own, fixed placement. */
static void
test_fixed_segment_threads(void)
{
	kas_config_t cfg;
	kas_t *kas;
	segkp_t *seg;
	kthread_t *t[8];

	kas_config_init(&cfg);
	cfg.size = 64u << 20;
	cfg.nheap_spans = 1;
	cfg.heap_spans[0].start = 8u << 20;
	cfg.heap_spans[0].end = 64u << 20;
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);
	seg = segkp_create(kas, SEGKP_FIXED, (void *)kas_base(kas), 8u << 20);
	REQUIRE(seg != NULL);
	REQUIRE(kthread_init(seg) == 0);
	CHECK(kthread_segkp() == seg);
	for (int i = 0; i < 8; i++)
		REQUIRE((t[i] = kthread_create(count_alive, NULL, NULL)));
	/* No switching segments while threads run. */
	CHECK_EQ(kthread_init(NULL), EBUSY);
	for (int i = 0; i < 8; i++) {
		void *lo;
		size_t len;

		kthread_stack(t[i], &lo, &len);
		CHECK((uintptr_t)lo - kas_base(kas) < (8u << 20));
		CHECK_EQ(kthread_join(t[i], NULL), 0);
	}
	CHECK_EQ(kthread_init(NULL), 0);
	CHECK(kthread_segkp() != seg);
	segkp_destroy(seg);
	kas_destroy(kas);
}

/* ------------------------------------------------------------------ */
/* fork(). */

/*
 * Run body in a forked child under a watchdog, so that a thread the child
 * waits for in vain fails the test instead of hanging it; 0 if the child
 * exited with 0.
 */
static int
in_child(int (*body)(void))
{
	pid_t pid;
	int status;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		alarm(30);
		_exit(body());
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	fprintf(stderr, "  child %s %d\n", WIFEXITED(status) ? "exited with" :
	    "killed by signal", WIFEXITED(status) ? WEXITSTATUS(status) :
	    WTERMSIG(status));
	return -1;
}

/* Until n more detached kthreads have been reaped (or 5 s went by). */
static int
reaped_within(uint64_t before, int n)
{
	for (int ms = 0; ms < 5000; ms++) {
		kthread_stats_t st;
		struct timespec tick = { 0, 1000000 };

		kthread_get_stats(&st);
		if (st.reaped - before >= (uint64_t)n)
			return 1;
		nanosleep(&tick, NULL);
	}
	return 0;
}

static int
start_detached(int n)
{
	kthread_attr_t a;

	kthread_attr_init(&a);
	a.detached = 1;
	for (int i = 0; i < n; i++)
		if (kthread_create(detached_fn, NULL, &a) == NULL)
			return 0;
	return 1;
}

/* Detached kthreads of the child are reaped with no kthread_reap call. */
static int
child_detached_reaped(void)
{
	kthread_stats_t st;

	kthread_get_stats(&st);
	if (!start_detached(20))
		return 2;
	return reaped_within(st.reaped, 20) ? 0 : 3;
}

/*
 * The parent's reaper thread is not in a child: the child used to believe
 * it was running and never reaped a detached kthread (trial reproducer
 * t30_fork_reaper: kthread_create failed with EAGAIN after 14,298).
 */
static void
test_fork_child_reaps_detached(void)
{
	kthread_stats_t st;

	REQUIRE(kthread_init(NULL) == 0);
	kthread_get_stats(&st);
	REQUIRE(start_detached(5));
	REQUIRE(reaped_within(st.reaped, 5));  /* the reaper runs here */
	CHECK_EQ(in_child(child_detached_reaped), 0);
	/* And the parent's reaper still works. */
	kthread_get_stats(&st);
	REQUIRE(start_detached(5));
	CHECK(reaped_within(st.reaped, 5));
}

static atomic_int hold_released;
static kthread_t *held[4];
static size_t inuse_before;  /* segkp allocations in use before held[] */

static void *
hold_until_released(void *arg)
{
	struct timespec tick = { 0, 1000000 };

	while (!atomic_load(&hold_released))
		nanosleep(&tick, NULL);
	return arg;
}

/* kthreads that run until release_held(): four joinable (held[]), two
 * detached. */
static void
start_held(void)
{
	kthread_attr_t a;
	segkp_stats_t ss;

	segkp_get_stats(kthread_segkp(), &ss);
	inuse_before = ss.inuse;
	atomic_store(&hold_released, 0);
	for (int i = 0; i < 4; i++)
		REQUIRE((held[i] = kthread_create(hold_until_released,
		    &held[i], NULL)) != NULL);
	kthread_attr_init(&a);
	a.detached = 1;
	for (int i = 0; i < 2; i++)
		REQUIRE(kthread_create(hold_until_released, NULL, &a) != NULL);
}

static void
release_held(void)
{
	kthread_stats_t st;

	atomic_store(&hold_released, 1);
	for (int i = 0; i < 4; i++) {
		void *ret = NULL;

		CHECK_EQ(kthread_join(held[i], &ret), 0);
		CHECK(ret == &held[i]);
	}
	do {
		(void)kthread_reap();
		sched_yield();
		kthread_get_stats(&st);
	} while (st.alive != 0);
	CHECK(segkp_check(kthread_segkp()) == 0);
}

/* The segment's allocations in use are inuse_before + extra, and whole. */
static int
segment_holds(size_t extra)
{
	segkp_stats_t ss;

	segkp_get_stats(kthread_segkp(), &ss);
	return ss.inuse == inuse_before + extra &&
	    segkp_check(kthread_segkp()) == 0;
}

/* kthreads run on a segment of the child's own. */
static int
new_segment_works(void)
{
	kas_t *kas = kas_create(NULL);
	segkp_t *seg = kas != NULL ? segkp_create(kas, SEGKP_FROMHEAP, NULL,
	    0) : NULL;
	kthread_t *t;
	void *ret = NULL;

	if (seg == NULL || kthread_init(seg) != 0)
		return 0;
	t = kthread_create(return_arg, seg, NULL);
	return t != NULL && kthread_join(t, &ret) == 0 && ret == seg &&
	    kthread_segkp() == seg;
}

static int
child_without_parents_threads(void)
{
	kthread_stats_t st;

	kthread_get_stats(&st);
	if (st.alive != 0)
		return 2;
	if (!segment_holds(0))     /* their stacks went back */
		return 3;
	tu_record_errors();        /* a handle of theirs is stale here */
	if (kthread_join(held[0], NULL) != EINVAL ||
	    tu_err.code != KTHREAD_E_BADTHREAD)
		return 4;
	tu_default_errors();
	return new_segment_works() ? 0 : 5;
}

/*
 * In a child only the forking thread exists: the parent's running
 * kthreads used to count as alive there for ever, so kthread_init of
 * another segment returned EBUSY for good (trial reproducer
 * t31_fork_ghosts), and their stacks stayed in use. A join of one of
 * their handles waited for ever; it is now refused.
 */
static void
test_fork_child_forgets_parents_threads(void)
{
	REQUIRE(kthread_init(NULL) == 0);
	start_held();
	CHECK_EQ(in_child(child_without_parents_threads), 0);
	release_held();
}

static int
child_of_a_kthread(void)
{
	kthread_stats_t st;
	kas_t *kas;
	segkp_t *seg;
	kthread_t *t;
	void *ret = NULL;

	kthread_get_stats(&st);
	if (kthread_self() == NULL || st.alive != 1)
		return 2;
	if (!segment_holds(2))     /* its stack and its signal stack */
		return 3;
	t = kthread_create(return_arg, &st, NULL);
	if (t == NULL || kthread_join(t, &ret) != 0 || ret != &st)
		return 4;
	kas = kas_create(NULL);
	seg = kas != NULL ? segkp_create(kas, SEGKP_FROMHEAP, NULL, 0) : NULL;
	/* Its own stack is still on the old segment. */
	return seg != NULL && kthread_init(seg) == EBUSY ? 0 : 5;
}

static void *
fork_from_kthread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)in_child(child_of_a_kthread);
}

/* A kthread that forks is the child's one thread, and stays a kthread. */
static void
test_fork_in_kthread_keeps_itself(void)
{
	kthread_attr_t a;
	kthread_t *t;
	void *ret = (void *)1;

	REQUIRE(kthread_init(NULL) == 0);
	start_held();
	kthread_attr_init(&a);
	a.stacksize = 256 * 1024;   /* room for stdio in the child */
	REQUIRE((t = kthread_create(fork_from_kthread, NULL, &a)) != NULL);
	CHECK_EQ(kthread_join(t, &ret), 0);
	CHECK(ret == NULL);
	release_held();
}

int
main(void)
{
	/* Children first, before this process has threads of its own. */
	RUN(test_overflow_message_and_abort);
	RUN(test_overflow_action);
	RUN(test_overflow_action_with_stdio);
	RUN(test_jump_over_redzone_caught);
	RUN(test_kthread_on_segment_with_few_cache_slots);
	RUN(test_kthread_with_process_cache_table_full);
	RUN(test_stack_clash_caught);
	RUN(test_other_faults_chain);
	RUN(test_init_rules);
	RUN(test_create_join);
	RUN(test_small_stack_raised);
	RUN(test_ten_thousand_threads);
	RUN(test_detached_reaped);
	RUN(test_join_misuse);
	RUN(test_bad_kpd_flags);
	RUN(test_fixed_segment_threads);
	RUN(test_fork_child_reaps_detached);
	RUN(test_fork_child_forgets_parents_threads);
	RUN(test_fork_in_kthread_keeps_itself);
	return tu_finish();
}
