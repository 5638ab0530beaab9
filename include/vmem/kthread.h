/*
 * libvmem -- threads and coroutines on segkp stacks.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * kthread_create starts a real POSIX thread on a guarded segkp stack taken
 * from a stack cache (pthread_attr_setstack), with the thread's own
 * structure carved from the top of that stack as illumos does. The default
 * real-thread stack is KTHREAD_STACK_PAGES (4) pages plus a redzone page:
 * glibc refuses stacks under 16 KiB and keeps its thread block and TLS at
 * the top, and 5 pages of address space are still quantum-cached. The
 * stack goes back to its cache at kthread_join, or, for detached threads,
 * when a reaper has joined them: glibc still runs on a stack after the
 * thread function returns.
 *
 * Coroutines (kthread_coro_*) run on 2-page guarded stacks, the kernel
 * default, with a small assembly context switch on x86-64 (ucontext
 * elsewhere). Switches are annotated for AddressSanitizer and the stacks
 * registered with valgrind.
 *
 * Overflow: a SIGSEGV handler on an alternate signal stack (each kthread
 * gets one, from the same segment) turns a redzone hit into one line
 *   segkp: stack overflow: thread 'worker-7' ran into the redzone of
 *   stack [0x...,0x...)
 * and aborts (or calls an action installed with
 * kthread_set_overflow_action first). Faults that are not segkp's go to
 * the handler installed before.
 *
 * fork(): only the calling thread exists in the child. The other kthreads
 * are forgotten there (not alive; their stacks go back to the segment and
 * their handles are stale); a kthread that forks stays one; the child
 * reaps its own detached threads.
 *
 * Threads on small stacks cannot run under ThreadSanitizer (it needs far
 * larger stacks); use AddressSanitizer.
 */
#ifndef VMEM_KTHREAD_H
#define VMEM_KTHREAD_H

#include <stddef.h>
#include <stdint.h>

#include <vmem/segkp.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KTHREAD_NAMELEN          32
#define KTHREAD_STACK_PAGES      4   /* real threads, plus a redzone */
#define KTHREAD_CORO_STACK_PAGES 2   /* coroutines, plus a redzone */
#define KTHREAD_ALTSTACK_PAGES   2   /* signal stack: at least; sized from
                                         SIGSTKSZ + 32 KiB for the action */
#define KTHREAD_STACK_CACHE      256 /* cached thread stacks at most */
#define KTHREAD_CORO_CACHE       1024 /* cached 2-page stacks at most */

/*
 * Use seg (real backing) for every thread and coroutine stack; NULL makes
 * a fromheap segment in kas_default(). Installs the overflow handler and
 * gives the calling thread an alternate signal stack. Called implicitly by
 * the first create. Takes up to three of seg's stack-cache slots; stacks
 * of a kind that finds no free slot come from segkp_get uncached. Returns
 * 0, EBUSY if threads or coroutines still use another segment (or a
 * create or join on it is under way), EINVAL
 * (reported) for a simulated segment, ENOMEM if NULL's segment cannot be
 * made.
 */
int kthread_init(segkp_t *seg);
/* The segment in use (NULL before kthread_init). */
segkp_t *kthread_segkp(void);

typedef struct kthread kthread_t;
typedef void *kthread_func_t(void *arg);

typedef struct kthread_attr {
	const char *name;   /* copied (KTHREAD_NAMELEN); NULL: "kthread-N" */
	size_t stacksize;   /* the whole stack, rounded up to pages and to
	                     * at least PTHREAD_STACK_MIN (16 KiB on Linux,
	                     * what glibc needs); glibc's thread block and
	                     * TLS take about 4.7 KiB of it; 0: default */
	int detached;       /* the stack is reaped, not joined */
	int kpd_flags;      /* added segkp flags: KPD_LOCKED,
	                       KPD_REDZONE_PAGES(n) (not from the cache);
	                       flags segkp_get refuses: EINVAL */
} kthread_attr_t;
void kthread_attr_init(kthread_attr_t *attr);

/* Start fn(arg) on a new thread. attr may be NULL. NULL and errno on
 * failure: EINVAL for a NULL fn or kpd_flags segkp_get would refuse
 * (reported as SEGKP_E_BADFLAGS), EAGAIN when the segment gives no stack
 * (or pthread_create's error), ENOMEM when the implicit kthread_init
 * failed. */
kthread_t *kthread_create(kthread_func_t *fn, void *arg,
    const kthread_attr_t *attr);
/* Wait for t, store its result, give its stack back. 0 or an errno value
 * (EINVAL, reported: not a joinable live kthread). */
int kthread_join(kthread_t *t, void **retval);
/* The calling kthread, or NULL. */
kthread_t *kthread_self(void);
const char *kthread_name(const kthread_t *t);
/* The stack segkp gave the thread, [*lo, *lo + *len) without its redzone.
 * The kthread_t is carved from its top, so an overflow report (and
 * kthread_overflow_info_t.stack_hi) ends the usable part below that. */
void kthread_stack(const kthread_t *t, void **lo, size_t *len);
/* Join the detached threads that have finished, now; returns how many. */
size_t kthread_reap(void);

typedef struct kthread_stats {
	uint64_t created;
	uint64_t create_fail;
	uint64_t joined;
	uint64_t reaped;       /* detached threads joined by a reaper */
	uint64_t coro_created;
	uint64_t coro_destroyed;
	uint64_t overflow_caught; /* redzone hits handled (action returned) */
	size_t alive;          /* created, not yet joined or reaped */
	size_t coro_alive;
} kthread_stats_t;
void kthread_get_stats(kthread_stats_t *st);

/* Coroutines. */
typedef struct kthread_coro kthread_coro_t;
typedef void *kthread_coro_func_t(void *arg);

/* A coroutine that runs fn(arg) at its first resume; stacksize 0 means
 * KTHREAD_CORO_STACK_PAGES pages (from a cache). NULL on failure. */
kthread_coro_t *kthread_coro_create(kthread_coro_func_t *fn, void *arg,
    const char *name, size_t stacksize);
/* Run co until it yields (returns the yielded value) or returns (returns
 * fn's result; kthread_coro_done becomes true). value is what the pending
 * kthread_coro_yield returns inside co. */
void *kthread_coro_resume(kthread_coro_t *co, void *value);
/* Inside a coroutine: back to the resumer with value. */
void *kthread_coro_yield(void *value);
int kthread_coro_done(const kthread_coro_t *co);
/* Give the stack back. A suspended coroutine is abandoned (not unwound). */
void kthread_coro_destroy(kthread_coro_t *co);
/* The running coroutine, or NULL. */
kthread_coro_t *kthread_coro_self(void);
const char *kthread_coro_name(const kthread_coro_t *co);
void kthread_coro_stack(const kthread_coro_t *co, void **lo, size_t *len);

/* Overflow reporting. */
typedef struct kthread_overflow_info {
	const char *kind;    /* "thread" or "coroutine" */
	const char *name;
	uintptr_t fault_addr;
	uintptr_t stack_lo;  /* usable stack [stack_lo, stack_hi) */
	uintptr_t stack_hi;
	const char *message; /* the line written to stderr (no newline) */
} kthread_overflow_info_t;
typedef void kthread_overflow_fn(const kthread_overflow_info_t *info,
    void *arg);
/*
 * fn runs in the signal handler (on the alternate stack) after the line
 * is written; it may _exit, siglongjmp out, or return, in which case the
 * process aborts. NULL: just abort (the default). quiet nonzero: do not
 * write the line. Use siglongjmp to a sigsetjmp(env, 1) point: SIGSEGV is
 * blocked while fn runs, and a plain longjmp would leave it blocked, so
 * the next overflow would kill the process unreported. A coroutine that
 * overflowed is finished (result NULL). fn may jump to the context that
 * resumed it or to any context further out (a scheduler loop around
 * kthread_coro_resume): every coroutine the thread is no longer running
 * on is then finished as well, and all of them can be destroyed.
 */
void kthread_set_overflow_action(kthread_overflow_fn *fn, void *arg,
    int quiet);
/* Give the calling thread an alternate signal stack (kthreads and
 * threads resuming coroutines get one automatically). 0 or errno. */
int kthread_altstack_install(void);

/* Error codes. */
enum {
	KTHREAD_E_BADTHREAD = SEGKP_E_KTHREAD, /* 112: join of a non-kthread,
	                                          a detached or joined one */
	KTHREAD_E_BADCORO,   /* resume of a finished/running coroutine,
	                        yield outside a coroutine, bad handle */
	KTHREAD_E_NOTREAL    /* kthread_init on a simulated segment */
};

#ifdef __cplusplus
}
#endif
#endif /* VMEM_KTHREAD_H */
