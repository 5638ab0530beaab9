/*
 * The platform mutex (src/platform/posix.c): mutual exclusion under
 * contention, the spin-then-sleep path, trylock and the condition
 * variable's timed wait.
 *
 * Every critical section flips an "inside" flag with an atomic exchange
 * and checks nobody else was inside, and bumps a plain counter that only
 * the lock protects (TSan reports a race if the lock's acquire/release
 * edges are wrong; the final count catches lost updates without TSan).
 * The sleep rounds hold the lock for milliseconds, far beyond the spin
 * budget, so the waiters must go to sleep on the futex and be woken one by
 * one through the contended state.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "platform.h"
#include "testutil.h"

#define NTHREADS 4
#define ROUNDS 100000

static plat_mutex_t lock;
static atomic_int inside;
static unsigned long counter;

static void
enter(void)
{
	CHECK(atomic_exchange(&inside, 1) == 0);
}

static void
leave(void)
{
	CHECK(atomic_exchange(&inside, 0) == 1);
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void *
hammer(void *arg)
{
	long rounds = (long)(intptr_t)arg;

	for (long i = 0; i < rounds; i++) {
		plat_mutex_lock(&lock);
		enter();
		counter++;
		leave();
		plat_mutex_unlock(&lock);
	}
	return NULL;
}

/*
 * A thread run through job_main counts itself finished, so that a waiter
 * left asleep by a lost wake-up fails the test within a deadline instead
 * of hanging until CTest's timeout.
 */
typedef struct job {
	void *(*fn)(void *);
	void *arg;
} job_t;

static atomic_int finished;

static void *
job_main(void *p)
{
	job_t *j = p;

	j->fn(j->arg);
	atomic_fetch_add(&finished, 1);
	return NULL;
}

static void
wait_finished(int n)
{
	for (int ms = 0; atomic_load(&finished) < n && ms < 30000; ms++)
		sleep_ms(1);
	if (atomic_load(&finished) < n) {
		CHECK(!"a lock waiter was never woken");
		tu_finish();
		_exit(1);
	}
}

static void
test_contended_counter(void)
{
	pthread_t t[NTHREADS];
	job_t job = { hammer, (void *)(intptr_t)ROUNDS };

	counter = 0;
	atomic_store(&finished, 0);
	for (int i = 0; i < NTHREADS; i++)
		CHECK(pthread_create(&t[i], NULL, job_main, &job) == 0);
	wait_finished(NTHREADS);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	CHECK(counter == (unsigned long)NTHREADS * ROUNDS);
}

/* Each waiter takes the lock a few times while a holder keeps it for
 * milliseconds at a time: waiters outlast the spin budget and sleep. */
static void *
slow_holder(void *arg)
{
	(void)arg;
	for (int i = 0; i < 5; i++) {
		plat_mutex_lock(&lock);
		enter();
		sleep_ms(10);
		counter++;
		leave();
		plat_mutex_unlock(&lock);
		sleep_ms(1);
	}
	return NULL;
}

static void
test_sleepers_are_woken(void)
{
	pthread_t holder, w[NTHREADS];

	job_t slow = { slow_holder, NULL };
	job_t quick = { hammer, (void *)(intptr_t)20 };

	counter = 0;
	atomic_store(&finished, 0);
	CHECK(pthread_create(&holder, NULL, job_main, &slow) == 0);
	sleep_ms(2);
	for (int i = 0; i < NTHREADS; i++)
		CHECK(pthread_create(&w[i], NULL, job_main, &quick) == 0);
	wait_finished(NTHREADS + 1);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(w[i], NULL);
	pthread_join(holder, NULL);
	CHECK(counter == 5 + NTHREADS * 20);
	/* Everyone is gone: the word is free, no sleeper mark left over. */
	CHECK(atomic_load(&lock.state) == 0);
}

static void *
try_while_held(void *arg)
{
	(void)arg;
	CHECK(plat_mutex_trylock(&lock) != 0);
	return NULL;
}

static void
test_trylock(void)
{
	pthread_t t;

	CHECK(plat_mutex_trylock(&lock) == 0);
	CHECK(pthread_create(&t, NULL, try_while_held, NULL) == 0);
	pthread_join(t, NULL);
	plat_mutex_unlock(&lock);
	CHECK(plat_mutex_trylock(&lock) == 0);
	plat_mutex_unlock(&lock);
}

static void
test_cond_timeout_relocks(void)
{
	plat_cond_t cv;
	pthread_t t;

	plat_cond_init(&cv);
	plat_mutex_lock(&lock);
	plat_cond_timedwait(&cv, &lock, 5);
	/* Back with the lock held: another thread cannot take it. */
	CHECK(pthread_create(&t, NULL, try_while_held, NULL) == 0);
	pthread_join(t, NULL);
	plat_mutex_unlock(&lock);
	plat_cond_destroy(&cv);
}

int
main(void)
{
	plat_mutex_init(&lock);
	RUN(test_contended_counter);
	RUN(test_sleepers_are_woken);
	RUN(test_trylock);
	RUN(test_cond_timeout_relocks);
	plat_mutex_destroy(&lock);
	return tu_finish();
}
