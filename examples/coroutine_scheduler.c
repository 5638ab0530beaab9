/*
 * Example: a round-robin scheduler of coroutines on guarded segkp stacks.
 *
 * Each task is a coroutine with a 2-page stack (the kernel's default
 * thread stack on 32-bit x86) taken from a segkp stack cache, with an
 * unmapped redzone page below it. The scheduler resumes the runnable
 * tasks in turn; a task yields after each step of work and finishes by
 * returning. Stacks come back to the cache as tasks end, so starting the
 * next batch of tasks costs a list pop, not a system call.
 *
 * Then, in a child process (so this program survives to check the
 * result), a task recurses without bound: it runs off the bottom of its
 * stack into the redzone, and instead of silently overwriting whatever
 * lies below, it faults. The library's SIGSEGV handler, on an alternate
 * signal stack, names the coroutine and the stack and calls the overflow
 * action installed here, which exits with a code the parent checks.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmem/kthread.h>
#include <vmem/segkp.h>

#define NTASKS 6
#define OVERFLOW_EXIT 42

static int failures;

static void
expect(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "coroutine_scheduler: FAILED: %s\n", what);
		failures++;
	}
}

/* A task: sum the numbers 1..n, one per step, yielding after each. */
static void *
summer(void *arg)
{
	uintptr_t n = (uintptr_t)arg, sum = 0;

	for (uintptr_t i = 1; i <= n; i++) {
		sum += i;
		kthread_coro_yield(NULL);
	}
	return (void *)sum;
}

/* Run the tasks round robin until all are done; returns the steps taken. */
static int
schedule(kthread_coro_t **tasks, void **results, int n)
{
	int steps = 0, running = n;

	while (running > 0) {
		running = 0;
		for (int i = 0; i < n; i++) {
			if (kthread_coro_done(tasks[i]))
				continue;
			void *r = kthread_coro_resume(tasks[i], NULL);
			steps++;
			if (kthread_coro_done(tasks[i]))
				results[i] = r;
			else
				running++;
		}
	}
	return steps;
}

static void
run_batch(int batch)
{
	kthread_coro_t *tasks[NTASKS];
	void *results[NTASKS];
	int steps;

	for (int i = 0; i < NTASKS; i++) {
		char name[32];
		snprintf(name, sizeof (name), "task-%d.%d", batch, i);
		tasks[i] = kthread_coro_create(summer,
		    (void *)(uintptr_t)(10 * (i + 1)), name, 0);
		expect(tasks[i] != NULL, "kthread_coro_create");
	}
	if (batch == 0) {
		for (int i = 0; i < 2; i++) {
			void *lo;
			size_t len;
			kthread_coro_stack(tasks[i], &lo, &len);
			printf("%s: stack [%p, %p), %zu bytes, redzone below\n",
			    kthread_coro_name(tasks[i]), lo, (char *)lo + len, len);
		}
	}
	steps = schedule(tasks, results, NTASKS);
	for (int i = 0; i < NTASKS; i++) {
		uintptr_t n = 10 * (uintptr_t)(i + 1);
		expect((uintptr_t)results[i] == n * (n + 1) / 2, "task result");
		kthread_coro_destroy(tasks[i]);
	}
	printf("batch %d: %d tasks, %d resumes\n", batch, NTASKS, steps);
}

/* ---- the overflow, in a child ------------------------------------------- */

static volatile int depth_limit = 1 << 30; /* never reached */

static int
recurse(int depth)
{
	volatile char frame[512];

	frame[0] = (char)depth;
	if (depth > depth_limit)
		return 0;
	return recurse(depth + 1) + frame[0];
}

static void *
runaway(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)recurse(0);
}

static void
on_overflow(const kthread_overflow_info_t *info, void *arg)
{
	(void)arg;
	/* In the signal handler: only async-signal-safe calls from here. */
	_exit(strcmp(info->kind, "coroutine") == 0 &&
	    info->fault_addr < info->stack_lo ? OVERFLOW_EXIT : 1);
}

static void
child_overflow(void)
{
	kthread_coro_t *co;

	kthread_set_overflow_action(on_overflow, NULL, 0);
	co = kthread_coro_create(runaway, NULL, "runaway", 0);
	if (co == NULL)
		_exit(2);
	kthread_coro_resume(co, NULL);
	_exit(3); /* not reached: the recursion never returns */
}

static void
show_overflow_caught(void)
{
	int fds[2], status = 0;
	char msg[1024];
	ssize_t n = 0, r;
	pid_t pid;

	if (pipe(fds) != 0) {
		expect(0, "pipe");
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], STDERR_FILENO);
		child_overflow();
	}
	close(fds[1]);
	while ((r = read(fds[0], msg + n, sizeof (msg) - 1 - (size_t)n)) > 0)
		n += r;
	msg[n] = '\0';
	close(fds[0]);
	waitpid(pid, &status, 0);
	printf("child: %s", msg);
	printf("child exit status %d (the overflow action's %d)\n",
	    WIFEXITED(status) ? WEXITSTATUS(status) : -1, OVERFLOW_EXIT);
	expect(WIFEXITED(status) && WEXITSTATUS(status) == OVERFLOW_EXIT,
	    "overflow caught by the action");
	expect(strstr(msg, "stack overflow: coroutine 'runaway'") != NULL,
	    "overflow message names the coroutine");
}

int
main(void)
{
	segkp_stats_t st;
	kthread_stats_t kst;

	expect(kthread_init(NULL) == 0, "kthread_init");
	for (int batch = 0; batch < 3; batch++)
		run_batch(batch);
	segkp_get_stats(kthread_segkp(), &st);
	printf("segkp: %llu stacks allocated, %llu cache hits, %zu cached now\n",
	    (unsigned long long)st.gets, (unsigned long long)st.cache_hits,
	    st.cached);
	expect(st.cache_hits >= 2 * NTASKS, "later batches reuse stacks");
	kthread_get_stats(&kst);
	expect(kst.coro_alive == 0, "every coroutine destroyed");
	show_overflow_caught();
	printf("%s\n", failures == 0 ? "coroutine_scheduler: ok" :
	    "coroutine_scheduler: FAILED");
	return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
