/*
 * The POSIX platform: pthreads for locks and condition variables, mmap for
 * metadata pages, sched_getcpu() for the CPU id, stderr and abort() for
 * errors.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../platform.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int (*plat_fail_hook)(const char *what);

void
plat_mutex_init(plat_mutex_t *m)
{
	pthread_mutexattr_t attr;

	pthread_mutexattr_init(&attr);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
	/* Spin briefly before sleeping: arena critical sections are short. */
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
	pthread_mutex_init(m, &attr);
	pthread_mutexattr_destroy(&attr);
}

void plat_mutex_destroy(plat_mutex_t *m) { pthread_mutex_destroy(m); }
void plat_mutex_lock(plat_mutex_t *m) { pthread_mutex_lock(m); }
void plat_mutex_unlock(plat_mutex_t *m) { pthread_mutex_unlock(m); }

void
plat_cond_init(plat_cond_t *c)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(c, &attr);
	pthread_condattr_destroy(&attr);
}

void plat_cond_destroy(plat_cond_t *c) { pthread_cond_destroy(c); }
void plat_cond_broadcast(plat_cond_t *c) { pthread_cond_broadcast(c); }

void
plat_cond_timedwait(plat_cond_t *c, plat_mutex_t *m, unsigned timeout_ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	(void)pthread_cond_timedwait(c, m, &ts);
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

size_t
plat_pagesize(void)
{
	static size_t pagesize;

	if (pagesize == 0)
		pagesize = (size_t)sysconf(_SC_PAGESIZE);
	return pagesize;
}

void *
plat_pages_alloc(size_t size)
{
	void *p;

	if (plat_fail_hook != NULL && plat_fail_hook("metadata"))
		return NULL;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
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

void
plat_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	(void)pthread_atfork(prepare, parent, child);
}
