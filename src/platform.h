/*
 * The platform layer: everything the core (vmem, kmem) needs from the
 * world outside it. The POSIX implementation lives in platform/posix.c; a
 * kernel or a freestanding program supplies its own by building with
 * VMEM_PLATFORM_HEADER naming a header that defines the two types below
 * and implementing the functions.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_PLATFORM_H
#define VMEM_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

/*
 * Link names. The sources call these plat_*, but the objects define and
 * use vmem_plat_*, so that libvmem.a cannot clash with a program's own
 * symbols (libvmem.so hides them anyway). A platform header and its
 * implementation include this file, so they get the same names.
 */
#define plat_mutex_init         vmem_plat_mutex_init
#define plat_mutex_destroy      vmem_plat_mutex_destroy
#define plat_mutex_lock         vmem_plat_mutex_lock
#define plat_mutex_unlock       vmem_plat_mutex_unlock
#define plat_mutex_trylock      vmem_plat_mutex_trylock
#define plat_cond_init          vmem_plat_cond_init
#define plat_cond_destroy       vmem_plat_cond_destroy
#define plat_cond_timedwait     vmem_plat_cond_timedwait
#define plat_cond_broadcast     vmem_plat_cond_broadcast
#define plat_cpu_id             vmem_plat_cpu_id
#define plat_ncpus              vmem_plat_ncpus
#define plat_cpu_id_method      vmem_plat_cpu_id_method
#define plat_pagesize           vmem_plat_pagesize
#define plat_pages_alloc        vmem_plat_pages_alloc
#define plat_pages_free         vmem_plat_pages_free
#define plat_write_error        vmem_plat_write_error
#define plat_abort              vmem_plat_abort
#define plat_atfork             vmem_plat_atfork
#define plat_defer              vmem_plat_defer
#define plat_fail_hook          vmem_plat_fail_hook

#ifdef VMEM_PLATFORM_HEADER
#include VMEM_PLATFORM_HEADER
#else
/*
 * POSIX platform: a futex-based mutex (one atomic exchange to take and
 * release it uncontended, a short spin before sleeping) and a sequence
 * condition variable. pthread_mutex_lock costs four times as many
 * instructions, and arena critical sections are short.
 */
#include <stdatomic.h>
typedef struct plat_mutex { atomic_uint state; } plat_mutex_t;
typedef struct plat_cond { atomic_uint seq; } plat_cond_t;
#endif

void plat_mutex_init(plat_mutex_t *m);
void plat_mutex_destroy(plat_mutex_t *m);
void plat_mutex_lock(plat_mutex_t *m);
void plat_mutex_unlock(plat_mutex_t *m);
/* Take m if it is free; 0 if taken, nonzero if busy (never sleeps). */
int plat_mutex_trylock(plat_mutex_t *m);

void plat_cond_init(plat_cond_t *c);
void plat_cond_destroy(plat_cond_t *c);
/* Wait at most timeout_ms; spurious wake-ups are allowed. */
void plat_cond_timedwait(plat_cond_t *c, plat_mutex_t *m, unsigned timeout_ms);
void plat_cond_broadcast(plat_cond_t *c);

/* The CPU the caller runs on (a hint: it may change at once), and how many. */
unsigned plat_cpu_id(void);
unsigned plat_ncpus(void);
/* How plat_cpu_id() finds the CPU ("rseq", "sched_getcpu", ...). */
const char *plat_cpu_id_method(void);

/*
 * Memory for the library's own metadata (boundary tags, hash tables, arena
 * and cache structures), in multiples of plat_pagesize(). Returns NULL on
 * failure. Pages come back zeroed.
 */
size_t plat_pagesize(void);
void *plat_pages_alloc(size_t size);
void plat_pages_free(void *addr, size_t size);

/* Write a message for a human (stderr); abort the process. */
void plat_write_error(const char *msg);
void plat_abort(void);

/*
 * Run fn soon on a thread of the platform's own (a worker thread, a
 * deferred-work queue): never in the caller's thread, and holding no lock
 * of the library's or the caller's. kmem asks this when an allocation is
 * failing or about to wait, so that caches give back what they hold idle
 * (illumos' kmem_reap, which runs on a taskq): the caller may hold a lock
 * that a destructor, reclaim callback or release function takes. Requests
 * for a function already pending coalesce; the platform may rate-limit
 * runs. A platform with no such context may do nothing: a waiting
 * allocation then gets memory only when something is freed. It may be
 * called with library locks held: a lock of its own that its fork
 * handling holds must be taken after every library lock there.
 * Returns 0 if fn will run (or nothing ever runs: asking again would not
 * help); nonzero if fn cannot run for now (no worker could be started),
 * and the caller will ask again at its next need.
 */
int plat_defer(void (*fn)(void));

/*
 * Fork support: the three functions run before fork, in the parent after
 * it and in the child after it. Registered once.
 */
void plat_atfork(void (*prepare)(void), void (*parent)(void),
    void (*child)(void));

/*
 * Run init() exactly once, whoever calls first; later and concurrent
 * callers return only after it has finished. *state starts at 0. Built on
 * C11 atomics alone, so freestanding platforms get it too.
 */
#include <stdatomic.h>
#include "hg.h"
static inline void
plat_once(atomic_int *state, void (*init)(void))
{
	int expected = 0;

	if (atomic_load_explicit(state, memory_order_acquire) == 2) {
		HG_HAPPENS_AFTER(state);
		return;
	}
	/* Only while not yet initialised: helgrind keeps every mark. */
	HG_BENIGN(state, "plat_once state: atomics, ordered below");
	if (atomic_compare_exchange_strong(state, &expected, 1)) {
		init();
		HG_HAPPENS_BEFORE(state);
		atomic_store_explicit(state, 2, memory_order_release);
		return;
	}
	while (atomic_load_explicit(state, memory_order_acquire) != 2)
		continue;
	HG_HAPPENS_AFTER(state);
}

#endif
