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

unsigned
plat_cpu_id(void)
{
	int cpu = sched_getcpu();

	return cpu < 0 ? 0 : (unsigned)cpu;
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
