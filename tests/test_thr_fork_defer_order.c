/*
 * fork() against a pressure request made with a library lock held: the
 * platform's deferred-work lock must be taken last by the fork handlers,
 * as it is in normal operation. Settling a kas' metadata holds its
 * settle_lock, and when kmem_metadata cannot import (the heap is full)
 * the failing allocation asks for a pressure pass (plat_defer). With the
 * worker's handlers registered at its first use, after segkmem's, fork
 * took defer_lock first and then waited for settle_lock: both threads
 * hung. A handler of the test's own, registered between the two, holds
 * fork at that point while the settling thread runs, so the old order
 * hangs every time (into the watchdog).
 *
 * Its own program: the order depends on what the process did first.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vmem/segkmem.h>

#include "kmem_impl.h"
#include "testutil.h"

#define PAGE ((size_t)4096)

static kas_t *kas;
static atomic_int armed, go;

static void
sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };

	(void)nanosleep(&t, NULL);
}

/* Runs after the handlers registered later than it (the worker's, on
 * the old code) and before segkmem's. */
static void
hold_fork_here(void)
{
	if (!atomic_load(&armed))
		return;
	atomic_store(&go, 1);
	sleep_ms(300);
}

static void *
settler(void *arg)
{
	(void)arg;
	while (!atomic_load(&go))
		sleep_ms(1);
	kas_settle_metadata(kas);
	return NULL;
}

static void
on_alarm(int sig)
{
	static const char msg[] = "test_thr_fork_defer_order: fork and a "
	    "settling thread deadlocked\n";

	(void)sig;
	(void)!write(2, msg, sizeof msg - 1);
	_exit(1);
}

static void
test_fork_while_settling_asks_for_a_pass(void)
{
	kas_config_t cfg;
	pthread_t t;
	pid_t pid;
	int status = -1;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.size = 64 * PAGE;
	cfg.charge_metadata = 1;
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);
	REQUIRE(pthread_atfork(hold_fork_here, NULL, NULL) == 0);
	/* Fill the heap; the failing call is the first pressure request. */
	while (vmem_alloc(kas_heap_arena(kas), PAGE, VM_NOSLEEP) != NULL)
		continue;
	while (kmem_pressure_test_passes() == 0)
		sleep_ms(10);
	sleep_ms(300);          /* the pass ran, the worker rested */
	/* A debt that settling cannot pay: kmem_metadata cannot import. */
	kas_charge_metadata(kas, KAS_META_OTHER, 4 * (long)PAGE);
	(void)signal(SIGALRM, on_alarm);
	alarm(tu_slow_build() ? 60 : 10);
	REQUIRE(pthread_create(&t, NULL, settler, NULL) == 0);
	atomic_store(&armed, 1);
	pid = fork();
	if (pid == 0)
		_exit(0);
	atomic_store(&armed, 0);
	REQUIRE(pid > 0);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	REQUIRE(pthread_join(t, NULL) == 0);
	alarm(0);
}

int
main(void)
{
	RUN(test_fork_while_settling_asks_for_a_pass);
	return tu_finish();
}
