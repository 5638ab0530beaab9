/*
 * The POSIX platform (Linux): futex locks and condition variables, mmap for
 * metadata pages, sched_getcpu() for the CPU id, stderr and abort() for
 * errors.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../platform.h"
#include "../hg.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

/*
 * Mutex states: 0 free, 1 held, 2 held with (possible) sleepers. The
 * acquire/release atomics give the happens-before edges that sanitizers
 * and the C memory model need; the futex only puts threads to sleep.
 */
enum { M_FREE, M_HELD, M_CONTENDED };

/*
 * Spinning, then napping, before sleeping. The critical sections this
 * library protects are tens of nanoseconds, so a waiter almost always gets
 * the lock within a few polls and without a system call. Backoff matters as
 * much as spinning: a waiter that polls the lock word steals its cache
 * line from the owner at every poll, and one that grabs the lock as soon
 * as it is free moves every arena line to its own core with it. A waiter
 * that polls ever more rarely lets the owner run many operations on hot
 * caches, which is what keeps two threads on one arena near the
 * throughput of one (W9 in docs/PERFORMANCE.md: 0.35x of one thread with
 * 100 quick polls, 0.8-1.2x with backoff). A pause is about 28 ns on the
 * EPYC machines we measure on: polls start 0.5 us apart and grow to 7 us
 * apart for about 20 us. A lock still held after that is busy, not
 * briefly held: the waiter then naps 20 us (plus the kernel's timer slack)
 * between polls instead of spinning, leaving the CPU to the owner and to
 * anyone else, without announcing itself, so the owner's unlocks stay
 * free of system calls. After 16 naps it sleeps until an unlock wakes it.
 * Napping instead of spinning for the previous 230 us cut W9's CPU per
 * operation by 40% at the same throughput.
 */
#define SPIN_DELAY_MIN 16      /* pauses before the first poll */
#define SPIN_DELAY_MAX 256     /* pauses between polls, at most */
#define SPIN_BUDGET 512        /* pauses in all before napping */
#define NAP_NS 20000           /* a nap between polls after that */
#define NAPS 16                /* naps before sleeping until woken */

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("pause");
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static long
futex(atomic_uint *addr, int op, unsigned val, const struct timespec *ts)
{
	return syscall(SYS_futex, addr, op | FUTEX_PRIVATE_FLAG, val, ts,
	    NULL, 0);
}

void
plat_mutex_init(plat_mutex_t *m)
{
	atomic_init(&m->state, M_FREE);
	HG_LOCK_CREATE(m);
}

void
plat_mutex_destroy(plat_mutex_t *m)
{
	(void)m;
	HG_LOCK_DESTROY(m);
}

/* Take the lock as `take` if it is free now. */
static int
mutex_try_take(plat_mutex_t *m, unsigned take)
{
	unsigned expected = M_FREE;

	return atomic_load_explicit(&m->state, memory_order_relaxed) ==
	    M_FREE && atomic_compare_exchange_weak_explicit(&m->state,
	    &expected, take, memory_order_acquire, memory_order_relaxed);
}

/* Poll with growing gaps, then between naps. Returns 1 if taken. */
static int
mutex_spin(plat_mutex_t *m, unsigned take)
{
	unsigned delay = SPIN_DELAY_MIN, spent = 0;
	const struct timespec nap = { 0, NAP_NS };

	while (spent < SPIN_BUDGET) {
		for (unsigned i = 0; i < delay; i++)
			cpu_relax();
		spent += delay;
		if (delay < SPIN_DELAY_MAX)
			delay <<= 1;
		if (mutex_try_take(m, take))
			return 1;
	}
	for (int n = 0; n < NAPS; n++) {
		/* Not a futex wait: an unlock's wake is for a sleeper, and a
		 * napper that took it would leave that sleeper asleep. */
		(void)nanosleep(&nap, NULL);
		if (mutex_try_take(m, take))
			return 1;
	}
	return 0;
}

/*
 * A thread that has slept takes the lock as M_CONTENDED from then on, so
 * that its unlock wakes the next sleeper: taking it as M_HELD could leave
 * another sleeper asleep with nobody left to wake it. After every wake-up
 * the thread spins again before sleeping, so an owner that keeps the lock
 * busy pays one wake-up per spin budget, not one per unlock.
 */
static void
mutex_lock_slow(plat_mutex_t *m)
{
	unsigned take = M_HELD;

	for (;;) {
		if (mutex_spin(m, take))
			return;
		if (atomic_exchange_explicit(&m->state, M_CONTENDED,
		    memory_order_acquire) == M_FREE)
			return;
		(void)futex(&m->state, FUTEX_WAIT, M_CONTENDED, NULL);
		take = M_CONTENDED;
	}
}

void
plat_mutex_lock(plat_mutex_t *m)
{
	unsigned expected = M_FREE;

	if (!atomic_compare_exchange_strong_explicit(&m->state, &expected,
	    M_HELD, memory_order_acquire, memory_order_relaxed))
		mutex_lock_slow(m);
	HG_LOCK_ACQUIRED(m);
}

int
plat_mutex_trylock(plat_mutex_t *m)
{
	unsigned expected = M_FREE;

	if (!atomic_compare_exchange_strong_explicit(&m->state, &expected,
	    M_HELD, memory_order_acquire, memory_order_relaxed))
		return 1;
	HG_LOCK_ACQUIRED(m);
	return 0;
}

void
plat_mutex_unlock(plat_mutex_t *m)
{
	HG_LOCK_RELEASED(m);
	if (atomic_exchange_explicit(&m->state, M_FREE,
	    memory_order_release) == M_CONTENDED)
		(void)futex(&m->state, FUTEX_WAKE, 1, NULL);
}

void
plat_cond_init(plat_cond_t *c)
{
	atomic_init(&c->seq, 0);
}

void plat_cond_destroy(plat_cond_t *c) { (void)c; }

void
plat_cond_broadcast(plat_cond_t *c)
{
	atomic_fetch_add_explicit(&c->seq, 1, memory_order_release);
	(void)futex(&c->seq, FUTEX_WAKE, INT32_MAX, NULL);
}

void
plat_cond_timedwait(plat_cond_t *c, plat_mutex_t *m, unsigned timeout_ms)
{
	unsigned seq = atomic_load_explicit(&c->seq, memory_order_acquire);
	struct timespec ts;

	ts.tv_sec = timeout_ms / 1000;
	ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
	plat_mutex_unlock(m);
	/* A broadcast after the load above changes seq: no lost wake-up. */
	(void)futex(&c->seq, FUTEX_WAIT, seq, &ts);
	plat_mutex_lock(m);
}

/*
 * The CPU id. glibc (2.35 and later) registers a restartable-sequences
 * area for every thread and exports its offset from the thread pointer;
 * the kernel keeps its cpu_id field current, so reading it costs one load
 * instead of a vDSO call. When rseq is not registered (older glibc, the
 * glibc.pthread.rseq=0 tunable, valgrind) cpu_id is negative and we fall
 * back to sched_getcpu(). VMEM_NO_RSEQ=1 in the environment forces the
 * fallback (to measure it).
 */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#include <sys/rseq.h>
#define PLAT_HAVE_RSEQ 1
#endif

static int plat_rseq_mode; /* 0 unknown, 1 rseq, 2 sched_getcpu */

static unsigned
plat_cpu_id_getcpu(void)
{
	int cpu = sched_getcpu();

	return cpu < 0 ? 0 : (unsigned)cpu;
}

#ifdef PLAT_HAVE_RSEQ
static int
plat_rseq_choose(void)
{
	const char *env = getenv("VMEM_NO_RSEQ");
	int mode = 2;

	HG_BENIGN(&plat_rseq_mode, "chosen once, same value by every thread");
	if ((env == NULL || env[0] == '\0' || env[0] == '0') &&
	    __rseq_size >= 8)
		mode = 1;
	__atomic_store_n(&plat_rseq_mode, mode, __ATOMIC_RELAXED);
	return mode;
}
#endif

unsigned
plat_cpu_id(void)
{
#ifdef PLAT_HAVE_RSEQ
	int mode = __atomic_load_n(&plat_rseq_mode, __ATOMIC_RELAXED);

	if (mode == 0)
		mode = plat_rseq_choose();
	if (mode == 1) {
		const struct rseq *rs = (const struct rseq *)(const void *)
		    ((const char *)__builtin_thread_pointer() + __rseq_offset);
		int32_t cpu = (int32_t)__atomic_load_n(&rs->cpu_id,
		    __ATOMIC_RELAXED);
		if (cpu >= 0)
			return (unsigned)cpu;
	}
#endif
	return plat_cpu_id_getcpu();
}

const char *
plat_cpu_id_method(void)
{
#ifdef PLAT_HAVE_RSEQ
	int mode = __atomic_load_n(&plat_rseq_mode, __ATOMIC_RELAXED);
	const struct rseq *rs;

	if (mode == 0)
		mode = plat_rseq_choose();
	rs = (const struct rseq *)(const void *)
	    ((const char *)__builtin_thread_pointer() + __rseq_offset);
	if (mode == 1 && (int32_t)__atomic_load_n(&rs->cpu_id,
	    __ATOMIC_RELAXED) >= 0)
		return "rseq";
#endif
	return "sched_getcpu";
}

unsigned
plat_ncpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_CONF);

	return n < 1 ? 1 : (unsigned)n;
}

static size_t pagesize;

static void
pagesize_init(void)
{
	pagesize = (size_t)sysconf(_SC_PAGESIZE);
}

size_t
plat_pagesize(void)
{
	/* Once: two first calls from two threads used to race to fill it
	 * (TSan and helgrind both saw it). plat_once, not pthread_once,
	 * because helgrind sees only plat_once's ordering. */
	static atomic_int once;

	plat_once(&once, pagesize_init);
	return pagesize;
}

void *
plat_pages_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void
plat_pages_free(void *addr, size_t size)
{
	(void)munmap(addr, size);
}

void
plat_write_error(const char *msg)
{
	size_t len = strlen(msg);

	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, msg, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		msg += n;
		len -= (size_t)n;
	}
}

void plat_abort(void) { abort(); }

static void defer_fork_register(void);
static pthread_once_t defer_fork_once = PTHREAD_ONCE_INIT;

/*
 * plat_defer's handlers go in before the library's first: prepare handlers
 * run in reverse order of registration, so defer_lock is then taken after
 * every library lock, as in normal operation, where plat_defer may be
 * called with a library lock held (segkmem's settle_lock, when the
 * metadata arena cannot import). Registered at the first plat_defer
 * instead, they would take defer_lock first and wait for settle_lock
 * while its holder waited for defer_lock.
 */
void
plat_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	(void)pthread_once(&defer_fork_once, defer_fork_register);
	(void)pthread_atfork(prepare, parent, child);
}

/*
 * plat_defer: one detached worker thread, started on first use. After a
 * run it rests DEFER_REST_MS before the next, so that a program failing
 * allocations in a loop starts at most one pass of reaping per rest, not
 * one per failure. The lock is a leaf: nothing is called with it held.
 */
#define DEFER_SLOTS     4
#define DEFER_REST_MS   100

static pthread_mutex_t defer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t defer_cv = PTHREAD_COND_INITIALIZER;
static void (*defer_pending[DEFER_SLOTS])(void);
static int defer_started;       /* 1 running; 0 not yet, or failed */

static void (*defer_take_locked(void))(void)
{
	for (int i = 0; i < DEFER_SLOTS; i++) {
		void (*fn)(void) = defer_pending[i];
		if (fn != NULL) {
			defer_pending[i] = NULL;
			return fn;
		}
	}
	return NULL;
}

static void *
defer_main(void *arg)
{
	const struct timespec rest = { 0, DEFER_REST_MS * 1000000L };

	(void)arg;
	pthread_mutex_lock(&defer_lock);
	for (;;) {
		void (*fn)(void);

		while ((fn = defer_take_locked()) == NULL)
			pthread_cond_wait(&defer_cv, &defer_lock);
		pthread_mutex_unlock(&defer_lock);
		fn();
		(void)nanosleep(&rest, NULL);
		pthread_mutex_lock(&defer_lock);
	}
	return NULL;
}

static void defer_fork_prepare(void) { pthread_mutex_lock(&defer_lock); }
static void defer_fork_parent(void) { pthread_mutex_unlock(&defer_lock); }

/* The worker is not in the child: forget it and what it had pending (the
 * requesters' own fork handlers forget that they asked). The forking
 * thread holds the lock, and is the child's thread. */
static void
defer_fork_child(void)
{
	pthread_cond_init(&defer_cv, NULL);
	memset(defer_pending, 0, sizeof(defer_pending));
	defer_started = 0;
	pthread_mutex_unlock(&defer_lock);
}

static void
defer_fork_register(void)
{
	(void)pthread_atfork(defer_fork_prepare, defer_fork_parent,
	    defer_fork_child);
}

static void
defer_start_locked(void)
{
	pthread_attr_t attr;
	pthread_t tid;

	(void)pthread_attr_init(&attr);
	(void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	defer_started = pthread_create(&tid, &attr, defer_main, NULL) == 0;
	(void)pthread_attr_destroy(&attr);
}

int
plat_defer(void (*fn)(void))
{
	int i, free_slot = -1, queued;

	/* Done already by the library's first plat_atfork; not under
	 * defer_lock, which fork's prepare handlers wait for while holding
	 * the registration lock. */
	(void)pthread_once(&defer_fork_once, defer_fork_register);
	pthread_mutex_lock(&defer_lock);
	for (i = 0; i < DEFER_SLOTS; i++) {
		if (defer_pending[i] == fn)
			break;
		if (defer_pending[i] == NULL && free_slot < 0)
			free_slot = i;
	}
	if (i == DEFER_SLOTS && free_slot >= 0) {
		defer_pending[free_slot] = fn;
		i = free_slot;
	}
	if (defer_started != 1)         /* first use, or retry a failure */
		defer_start_locked();
	/* Not queued, or no thread to run it (pthread_create fails when
	 * memory or threads are short, as they may be now): the caller must
	 * ask again, and that call retries the start. */
	queued = i < DEFER_SLOTS && defer_started == 1;
	pthread_cond_signal(&defer_cv);
	pthread_mutex_unlock(&defer_lock);
	return queued ? 0 : -1;
}
