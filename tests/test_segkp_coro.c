/*
 * Coroutines on segkp stacks: yield and resume with values, nesting,
 * 10,000 coroutines with 1,000 alive at once, coroutines on a plain
 * pthread, misuse, and an overflow in a coroutine caught in its redzone
 * (in a child process).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmem/kthread.h>

#include "testutil.h"

static void *
counter(void *arg)
{
	intptr_t n = (intptr_t)arg;
	intptr_t sum = 0;

	for (intptr_t i = 1; i <= n; i++)
		sum += (intptr_t)kthread_coro_yield((void *)i);
	return (void *)sum;
}

static void
test_yield_resume(void)
{
	kthread_coro_t *co = kthread_coro_create(counter, (void *)5, "gen", 0);
	void *lo;
	size_t len;

	REQUIRE(co != NULL);
	CHECK(strcmp(kthread_coro_name(co), "gen") == 0);
	kthread_coro_stack(co, &lo, &len);
	CHECK_EQ(len, KTHREAD_CORO_STACK_PAGES *
	    segkp_pagesize(kthread_segkp()));
	CHECK((char *)co > (char *)lo && (char *)co < (char *)lo + len);
	/* First resume starts it; values flow both ways. */
	CHECK((intptr_t)kthread_coro_resume(co, NULL) == 1);
	for (intptr_t i = 2; i <= 5; i++)
		CHECK((intptr_t)kthread_coro_resume(co, (void *)(10 * (i - 1)))
		    == i);
	CHECK(!kthread_coro_done(co));
	CHECK((intptr_t)kthread_coro_resume(co, (void *)50) == 150);
	CHECK(kthread_coro_done(co));
	kthread_coro_destroy(co);
}

static void *
where_am_i(void *arg)
{
	kthread_coro_t *self = kthread_coro_self();
	void *lo;
	size_t len;
	int local;

	(void)arg;
	kthread_coro_stack(self, &lo, &len);
	return (void *)(intptr_t)((char *)&local >= (char *)lo &&
	    (char *)&local < (char *)lo + len);
}

static void *
outer(void *arg)
{
	kthread_coro_t *inner = kthread_coro_create(counter, (void *)3,
	    "inner", 0);
	intptr_t got = 0;

	(void)arg;
	REQUIRE(inner != NULL);
	while (!kthread_coro_done(inner)) {
		intptr_t v = (intptr_t)kthread_coro_resume(inner, NULL);

		if (!kthread_coro_done(inner))
			got += v;
		/* Pass each value on to whoever resumes us. */
		kthread_coro_yield((void *)v);
	}
	kthread_coro_destroy(inner);
	return (void *)(got + (intptr_t)where_am_i(NULL) * 1000);
}

static void
test_nesting_and_self(void)
{
	kthread_coro_t *co = kthread_coro_create(outer, NULL, "outer", 0);
	intptr_t last = 0;

	REQUIRE(co != NULL);
	CHECK(kthread_coro_self() == NULL);
	while (!kthread_coro_done(co))
		last = (intptr_t)kthread_coro_resume(co, NULL);
	CHECK_EQ(last, 1000 + 1 + 2 + 3);
	CHECK(kthread_coro_self() == NULL);
	kthread_coro_destroy(co);
}

static void *
three_steps(void *arg)
{
	kthread_coro_yield(arg);
	kthread_coro_yield(arg);
	return arg;
}

static void
test_ten_thousand_coroutines(void)
{
	int total = tu_slow_build() ? 1000 : 10000;
	int batch = tu_slow_build() ? 100 : 1000;
	kthread_coro_t **co = calloc((size_t)batch, sizeof (*co));
	kthread_stats_t before, after;
	segkp_stats_t ss;
	int bad = 0;

	REQUIRE(co != NULL);
	kthread_get_stats(&before);
	for (int done = 0; done < total; done += batch) {
		int live = batch;

		for (int i = 0; i < batch; i++)
			REQUIRE((co[i] = kthread_coro_create(three_steps,
			    (void *)(intptr_t)(done + i), NULL, 0)) != NULL);
		/* Round-robin until every one has finished. */
		while (live > 0) {
			for (int i = 0; i < batch; i++) {
				void *v;

				if (co[i] == NULL)
					continue;
				v = kthread_coro_resume(co[i], NULL);
				bad += v != (void *)(intptr_t)(done + i);
				if (kthread_coro_done(co[i])) {
					kthread_coro_destroy(co[i]);
					co[i] = NULL;
					live--;
				}
			}
		}
	}
	CHECK_EQ(bad, 0);
	kthread_get_stats(&after);
	CHECK_EQ(after.coro_created - before.coro_created, total);
	CHECK_EQ(after.coro_alive, 0);
	segkp_get_stats(kthread_segkp(), &ss);
	CHECK_EQ(ss.inuse, 0);
	CHECK(segkp_check(kthread_segkp()) == 0);
	free(co);
}

static void *
plain_thread(void *arg)
{
	kthread_coro_t *co = kthread_coro_create(counter, (void *)4, NULL, 0);
	intptr_t last = 0;

	(void)arg;
	if (co == NULL)
		return NULL;
	while (!kthread_coro_done(co))
		last = (intptr_t)kthread_coro_resume(co, (void *)1);
	kthread_coro_destroy(co);
	return (void *)last;
}

/* A thread that is not a kthread runs coroutines (and gets an altstack). */
static void
test_on_plain_pthread(void)
{
	pthread_t pt;
	void *r;

	REQUIRE(pthread_create(&pt, NULL, plain_thread, NULL) == 0);
	REQUIRE(pthread_join(pt, &r) == 0);
	CHECK_EQ((intptr_t)r, 4);
}

static void
test_misuse(void)
{
	kthread_coro_t *co = kthread_coro_create(three_steps, NULL, NULL, 0);

	REQUIRE(co != NULL);
	tu_record_errors();
	CHECK(kthread_coro_yield(NULL) == NULL);   /* not in a coroutine */
	CHECK_EQ(tu_err.code, KTHREAD_E_BADCORO);
	while (!kthread_coro_done(co))
		kthread_coro_resume(co, NULL);
	CHECK(kthread_coro_resume(co, NULL) == NULL);  /* finished */
	CHECK_EQ(tu_err.code, KTHREAD_E_BADCORO);
	CHECK(strstr(tu_err.line, "finished") != NULL);
	CHECK(kthread_coro_create(NULL, NULL, NULL, 0) == NULL);
	CHECK_EQ(tu_err.count, 2);
	tu_default_errors();
	kthread_coro_destroy(co);
}

/* ------------------------------------------------------------------ */

static volatile int depth_limit = 1 << 30;

static int __attribute__((noinline))
deep(int depth)
{
	volatile char pad[256];

	pad[0] = (char)depth;
	if (depth > depth_limit)
		return 0;
	return deep(depth + 1) + pad[0];
}

static void *
overflowing(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)deep(0);
}

static void
test_overflow_in_coroutine(void)
{
	int fds[2], status;
	char err[2048];
	ssize_t n, got = 0;
	pid_t pid;

	REQUIRE(pipe(fds) == 0);
	fflush(stdout);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		kthread_coro_t *co;

		dup2(fds[1], STDERR_FILENO);
		co = kthread_coro_create(overflowing, NULL, "co-deep", 0);
		if (co != NULL)
			kthread_coro_resume(co, NULL);
		_exit(99);
	}
	close(fds[1]);
	while ((n = read(fds[0], err + got, sizeof (err) - 1 - (size_t)got))
	    > 0)
		got += n;
	err[got] = '\0';
	close(fds[0]);
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
	CHECK(strstr(err, "segkp: stack overflow: coroutine 'co-deep' ran "
	    "into the redzone of stack [0x") != NULL);
}

/*
 * A coroutine scheduler that survives an overflow: the action siglongjmps
 * back to the resumer. The coroutine is then finished, the thread is no
 * longer "in" it, it can be destroyed, and the next overflow is caught
 * the same way (SIGSEGV unblocked again by siglongjmp).
 */
static sigjmp_buf sched_env;

static void
jump_to_scheduler(const kthread_overflow_info_t *info, void *arg)
{
	(void)info;
	(void)arg;
	siglongjmp(sched_env, 1);
}

static void
test_overflow_recovered_by_siglongjmp(void)
{
	kthread_stats_t before, after;

	kthread_set_overflow_action(jump_to_scheduler, NULL, 1);
	kthread_get_stats(&before);
	for (int round = 0; round < 3; round++) {
		kthread_coro_t *volatile co = kthread_coro_create(overflowing,
		    NULL, "co-recover", 0);

		REQUIRE(co != NULL);
		if (sigsetjmp(sched_env, 1) == 0) {
			kthread_coro_resume(co, NULL);
			CHECK(!"the overflowing coroutine returned");
		}
		CHECK(kthread_coro_self() == NULL);
		CHECK(kthread_coro_done(co));
		tu_record_errors();
		CHECK(kthread_coro_yield((void *)1) == NULL); /* not in one */
		CHECK_EQ(tu_err.count, 1);
		CHECK(kthread_coro_resume(co, NULL) == NULL); /* finished */
		CHECK_EQ(tu_err.count, 2);
		tu_default_errors();
		kthread_coro_destroy(co);
	}
	kthread_get_stats(&after);
	CHECK_EQ(after.coro_alive, before.coro_alive);
	CHECK_EQ(after.overflow_caught - before.overflow_caught, 3);
	kthread_set_overflow_action(NULL, NULL, 0);
}

/*
 * Nested: A resumes B, B overflows. A jump to the scheduler (outside
 * both) finishes both; a jump back into A (where A resumed B) finishes
 * only B, and A goes on to return normally.
 */
static kthread_coro_t *inner;
static sigjmp_buf a_env;
static int jump_into_a;
static int a_continued;

static void
jump_nested(const kthread_overflow_info_t *info, void *arg)
{
	(void)info;
	(void)arg;
	if (jump_into_a)
		siglongjmp(a_env, 1);
	siglongjmp(sched_env, 1);
}

static void *
outer_fn(void *arg)
{
	(void)arg;
	if (sigsetjmp(a_env, 1) == 0) {
		kthread_coro_resume(inner, NULL);
		return (void *)1;       /* never: inner overflows */
	}
	/* Back in A after inner's overflow: A is running, inner is not. */
	a_continued = kthread_coro_self() != NULL &&
	    strcmp(kthread_coro_name(kthread_coro_self()), "co-outer") == 0 &&
	    kthread_coro_done(inner);
	return (void *)2;
}

static void *
big_locals(void *arg)
{
	volatile char local[1024];

	(void)arg;
	memset((char *)local, 1, sizeof (local));
	return (void *)(intptr_t)local[5];
}

static void
test_nested_overflow_recovery(void)
{
	kthread_set_overflow_action(jump_nested, NULL, 1);
	for (jump_into_a = 0; jump_into_a < 2; jump_into_a++) {
		kthread_coro_t *volatile outer = kthread_coro_create(outer_fn,
		    NULL, "co-outer", 0);
		void *volatile r = NULL;

		inner = kthread_coro_create(overflowing, NULL, "co-inner", 0);
		REQUIRE(outer != NULL && inner != NULL);
		a_continued = 0;
		if (sigsetjmp(sched_env, 1) == 0)
			r = kthread_coro_resume(outer, NULL);
		CHECK(kthread_coro_self() == NULL);
		CHECK(kthread_coro_done(inner));
		CHECK(kthread_coro_done(outer));
		if (jump_into_a) {
			CHECK(a_continued);
			CHECK(r == (void *)2);
		} else {
			CHECK(r == NULL);
		}
		tu_record_errors();
		CHECK(kthread_coro_yield(NULL) == NULL); /* not in one */
		CHECK_EQ(tu_err.count, 1);
		tu_default_errors();
		kthread_coro_destroy(inner);
		kthread_coro_destroy(outer);
	}
	kthread_set_overflow_action(NULL, NULL, 0);
	/* The stacks went back to the cache: reusing them is clean (under
	 * ASan, no poison left over from the frames that never returned). */
	for (int i = 0; i < 4; i++) {
		kthread_coro_t *co = kthread_coro_create(big_locals, NULL,
		    "co-reuse", 0);

		REQUIRE(co != NULL);
		CHECK(kthread_coro_resume(co, NULL) == (void *)1);
		kthread_coro_destroy(co);
	}
}

int
main(void)
{
	REQUIRE(kthread_init(NULL) == 0);
	RUN(test_overflow_in_coroutine);
	RUN(test_overflow_recovered_by_siglongjmp);
	RUN(test_nested_overflow_recovery);
	RUN(test_yield_resume);
	RUN(test_nesting_and_self);
	RUN(test_ten_thousand_coroutines);
	RUN(test_on_plain_pthread);
	RUN(test_misuse);
	return tu_finish();
}
