/*
 * Threads and coroutines on segkp stacks, and stack-overflow reporting.
 *
 * Theory
 * ------
 * Every thread or coroutine stack is a segkp allocation with a redzone
 * below it, taken from a stack cache of one segment (kthread_init). Its
 * control structure (kthread_t, kthread_coro_t) is carved from the top of
 * the stack, as illumos carves kthread_t, so creating one costs one cache
 * pop and no other allocation. A real thread is started with
 * pthread_attr_setstack on the part below the structure; glibc puts its
 * own thread block and TLS at the top of that. glibc refuses a stack under
 * PTHREAD_STACK_MIN (16 KiB, which is the default 4 pages), so when the
 * structure makes the part too small, glibc is told that its stack starts
 * that many bytes lower, inside the redzone: it never touches the bottom
 * of a stack it did not allocate, and an overflow still faults at the
 * same address, the top of the redzone.
 *
 * A thread's stack is given back only after pthread_join: glibc runs on
 * the stack until the very end of the thread. Detached threads are
 * created joinable; when their function returns they put themselves on a
 * zombie list that a reaper thread (or kthread_reap) joins.
 *
 * Overflow. Each kthread gets an alternate signal stack (a 2-page segkp
 * allocation); a SIGSEGV handler installed once asks: is the fault in the
 * redzone of the stack the current thread or coroutine runs on (a
 * thread-local pointer, no lock)? If not, is it in the redzone of any
 * segkp allocation (a non-blocking lookup)? Then it writes one line and
 * runs the configured action, then aborts. Any other fault goes to the
 * handler that was installed before (or the default action).
 *
 * Coroutines switch with a 20-instruction assembly routine on x86-64 that
 * saves the callee-saved registers, MXCSR and the x87 control word on the
 * old stack and swaps stack pointers (ucontext on other machines). Each
 * switch tells AddressSanitizer about the stack change; stacks are
 * registered with valgrind when its header is available.
 *
 * fork(). Only the forking thread exists in the child, so the child must
 * know every thread that holds stacks: they are on a list (kt.live) from
 * creation until their stacks are given back, and the moments a thread
 * holds stacks off the list (a create before it is listed, a join or reap
 * after) are "in flight": fork waits until none is, and none starts while
 * a fork waits. The child gives back the stacks of every listed thread but
 * itself; nobody runs on its copies of them.
 *
 * Locking: kt.lock protects the configuration, the lists, the in-flight
 * count and the statistics; outside kthread_init it is never held while
 * calling into segkp or pthread_join.
 * Coroutines are not thread-safe objects: one thread resumes a coroutine at
 * a time.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmem/kthread.h>

#include "error.h"
#include "segkp_impl.h"

#if defined(__SANITIZE_ADDRESS__)
#define KT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KT_ASAN 1
#endif
#endif
#ifdef KT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define KT_VALGRIND 1
#endif
#endif

#if !defined(__x86_64__) || defined(__linux__)
#include <ucontext.h>
#endif

#define KT_MAGIC    0x4b544852u /* "KTHR" */
#define CORO_MAGIC  0x434f524fu /* "CORO" */
#define CARVE_ALIGN 64

/* What the overflow handler needs to know about the running stack. */
typedef struct kt_ctx {
	const char *kind;
	const char *name;
	uintptr_t redzone_lo; /* redzone [redzone_lo, lo) */
	uintptr_t lo;         /* usable stack [lo, hi) */
	uintptr_t hi;
} kt_ctx_t;

struct kthread {
	unsigned magic;
	char name[KTHREAD_NAMELEN];
	kt_ctx_t ctx;
	pthread_t pt;
	kthread_func_t *fn;
	void *arg;
	void *ret;
	char *stack;          /* usable stack as segkp_get returned it */
	size_t len;
	char *alt;
	bool from_cache;
	bool detached;
	bool restore_alt;
	atomic_int joined;
	stack_t old_alt;
	kthread_t *zombie_next;  /* also the child's list of threads gone */
	kthread_t *live_prev, *live_next;
};

enum { CO_NEW, CO_SUSPENDED, CO_RUNNING, CO_DONE };

struct kthread_coro {
	unsigned magic;
	char name[KTHREAD_NAMELEN];
	kt_ctx_t ctx;
	kthread_coro_func_t *fn;
	void *arg;
	void *transfer;
	int state;
	char *stack;
	size_t len;
	bool from_cache;
	const kt_ctx_t *caller_ctx;
	kthread_coro_t *caller_coro;
#if defined(__x86_64__)
	void *sp;
	void *caller_sp;
#else
	ucontext_t uc;
	ucontext_t caller_uc;
#endif
#ifdef KT_ASAN
	void *fake_stack;
	void *resumer_fake;   /* the resumer's, while co runs */
	const void *caller_bottom;
	size_t caller_size;
#endif
#ifdef KT_VALGRIND
	unsigned vg_id;
#endif
};

static struct {
	pthread_mutex_t lock;
	segkp_t *seg;
	kas_t *own_kas;
	segkp_t *own_seg;
	void *thread_cache;   /* KTHREAD_STACK_PAGES + redzone */
	void *small_cache;    /* 2 pages + redzone: coroutines */
	void *alt_cache;      /* alt_size + redzone: signal stacks */
	size_t alt_size;
	size_t pagesize;
	kthread_t *zombies;
	pthread_cond_t zombie_cv;
	kthread_t *live;          /* every thread whose stacks are out */
	unsigned in_flight;       /* threads with stacks but not on live */
	unsigned forks_waiting;
	pthread_cond_t flight_cv;
	bool reaper_started;
	bool handler_installed;
	struct sigaction old_segv;
	kthread_overflow_fn *action;
	void *action_arg;
	int quiet;
	uint64_t created, create_fail, joined, reaped, coro_created;
	uint64_t coro_destroyed;
	_Atomic uint64_t overflow_caught;
	size_t alive, coro_alive;
} kt = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.zombie_cv = PTHREAD_COND_INITIALIZER,
	.flight_cv = PTHREAD_COND_INITIALIZER,
};

static _Thread_local const kt_ctx_t *cur_ctx;
static _Thread_local kthread_t *cur_thread;
static _Thread_local kthread_coro_t *cur_coro;
static _Thread_local bool has_altstack;
static _Thread_local volatile sig_atomic_t coro_overflowed;
static _Atomic unsigned long name_seq;
static atomic_bool kt_ready;    /* kthread_init has succeeded */
static pthread_key_t alt_key;
static pthread_once_t alt_key_once = PTHREAD_ONCE_INIT;

static void install_handler_locked(void);
static void start_reaper(void);
static void fork_handlers_register(void);

/* ------------------------------------------------------------------ */
/* Setup. */

static size_t
carve_size(size_t sz)
{
	return (sz + CARVE_ALIGN - 1) & ~(size_t)(CARVE_ALIGN - 1);
}

/*
 * The signal stack the overflow report and the user's action run on. The
 * kernel puts the signal frame (with the CPU's whole extended state: about
 * 13 KiB with AVX-512) on it first, so it is sized from the system's
 * SIGSTKSZ, plus room for an action that calls stdio (an unbuffered
 * fprintf needs about 8 KiB), and never below KTHREAD_ALTSTACK_PAGES.
 * Pages that are never touched cost no memory.
 */
#define ALT_ACTION_ROOM ((size_t)32 << 10)

static size_t
altstack_bytes(size_t ps)
{
	long sig = sysconf(_SC_SIGSTKSZ);
	size_t want = (sig > 0 ? (size_t)sig : (size_t)SIGSTKSZ) +
	    ALT_ACTION_ROOM;

#ifdef KT_ASAN
	want *= 4;      /* instrumented frames are several times larger */
#endif
	want = (want + ps - 1) & ~(ps - 1);
	return want > KTHREAD_ALTSTACK_PAGES * ps ? want :
	    KTHREAD_ALTSTACK_PAGES * ps;
}

static void
drop_caches(void)
{
	if (kt.thread_cache != NULL)
		segkp_cache_destroy(kt.thread_cache);
	if (kt.small_cache != NULL)
		segkp_cache_destroy(kt.small_cache);
	if (kt.alt_cache != NULL)
		segkp_cache_destroy(kt.alt_cache);
	kt.thread_cache = kt.small_cache = kt.alt_cache = NULL;
}

/*
 * One cache per kind of stack while the segment (8 slots) and the process
 * (256) have a slot free; the segment's user may have taken them, which is
 * no misuse. A kind left without a cache gets its stacks from segkp_get,
 * a system call more per get and per release. Thread stacks are served
 * first, then coroutine stacks, then signal stacks.
 */
static void
setup_caches(segkp_t *seg)
{
	size_t ps = segkp_pagesize(seg);

	kt.pagesize = ps;
	kt.alt_size = altstack_bytes(ps);
	kt.thread_cache = segkp_cache_try_init(seg, KTHREAD_STACK_CACHE,
	    KTHREAD_STACK_PAGES * ps, KPD_HASREDZONE | KPD_NOWAIT);
	kt.small_cache = segkp_cache_try_init(seg, KTHREAD_CORO_CACHE,
	    KTHREAD_CORO_STACK_PAGES * ps, KPD_HASREDZONE | KPD_NOWAIT);
	kt.alt_cache = segkp_cache_try_init(seg, KTHREAD_CORO_CACHE,
	    kt.alt_size, KPD_HASREDZONE | KPD_NOWAIT);
}

static int
init_locked(segkp_t *seg)
{
	if (seg == NULL) {
		kas_t *kas;

		if (kt.own_seg == NULL && (kas = kas_default()) != NULL)
			kt.own_seg = segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
		if (kt.own_seg == NULL)
			return ENOMEM;
		seg = kt.own_seg;
	}
	if (seg == kt.seg)
		return 0;
	/* A create in flight has read kt.seg and the caches (after its
	 * flight began, under this lock): they must not change under it. */
	if (kt.alive != 0 || kt.coro_alive != 0 || kt.zombies != NULL ||
	    kt.in_flight != 0)
		return EBUSY;
	if (kas_backing(segkp_kas(seg)) != KAS_REAL)
		return EINVAL;
	drop_caches();
	kt.seg = seg;
	setup_caches(seg);
	install_handler_locked();
	fork_handlers_register();
	atomic_store(&kt_ready, true);
	return 0;
}

int
kthread_init(segkp_t *seg)
{
	int err;

	pthread_mutex_lock(&kt.lock);
	err = init_locked(seg);
	pthread_mutex_unlock(&kt.lock);
	if (err == EINVAL)
		vmem_error_report(KTHREAD_E_NOTREAL, 0, "kthread_init",
		    segkp_arena(seg), "segkp", 0, 0, "threads need a segment "
		    "on real memory, not a simulated one");
	if (err == 0)
		(void)kthread_altstack_install();
	return err;
}

segkp_t *
kthread_segkp(void)
{
	segkp_t *seg;

	pthread_mutex_lock(&kt.lock);
	seg = kt.seg;
	pthread_mutex_unlock(&kt.lock);
	return seg;
}

static bool
ensure_init(void)
{
	int err = 0;

	if (atomic_load(&kt_ready))
		return true;
	pthread_mutex_lock(&kt.lock);
	if (!atomic_load(&kt_ready))
		err = init_locked(NULL);
	pthread_mutex_unlock(&kt.lock);
	if (err == 0)
		(void)kthread_altstack_install();
	return err == 0;
}

/* ------------------------------------------------------------------ */
/* Stacks. */

/* A stack of len usable bytes (0: dflt, from cache if there is one), or
 * NULL. */
static char *
stack_get(size_t len, int extra, void *cache, size_t dflt, bool *from_cache,
    size_t *lenp)
{
	size_t ps = kt.pagesize;

	len = (len + ps - 1) & ~(ps - 1);
	if ((len == 0 || len == dflt) && extra == 0 && cache != NULL) {
		*from_cache = true;
		*lenp = dflt;
		return segkp_cache_get(cache);
	}
	*from_cache = false;
	*lenp = len == 0 ? dflt : len;
	return segkp_get(kt.seg, *lenp, KPD_HASREDZONE | KPD_NOWAIT | extra);
}

static void
fill_ctx(kt_ctx_t *c, const char *kind, const char *name, char *stack,
    size_t len, char *top)
{
	segkp_info_t in;

	c->kind = kind;
	c->name = name;
	c->lo = (uintptr_t)stack;
	c->hi = (uintptr_t)top;
	c->redzone_lo = (uintptr_t)stack;
	if (segkp_find(kt.seg, stack, &in))
		c->redzone_lo = in.base;
	(void)len;
}

static void
set_name(char *dst, const char *name, const char *prefix)
{
	if (name != NULL) {
		snprintf(dst, KTHREAD_NAMELEN, "%s", name);
		return;
	}
	snprintf(dst, KTHREAD_NAMELEN, "%s-%lu", prefix,
	    (unsigned long)atomic_fetch_add(&name_seq, 1) + 1);
}

/* ------------------------------------------------------------------ */
/* Alternate signal stacks. */

/*
 * Threads that are not kthreads (the main thread, plain pthreads resuming
 * coroutines) get a signal stack of their own from mmap, freed when the
 * thread exits: it must not depend on a segment that may change.
 */
static void
alt_key_destroy(void *alt)
{
	stack_t off = { .ss_flags = SS_DISABLE };

	(void)sigaltstack(&off, NULL);
	(void)munmap(alt, altstack_bytes((size_t)sysconf(_SC_PAGESIZE)));
}

static void
alt_key_make(void)
{
	(void)pthread_key_create(&alt_key, alt_key_destroy);
}

int
kthread_altstack_install(void)
{
	size_t size = altstack_bytes((size_t)sysconf(_SC_PAGESIZE));
	stack_t cur, ss;
	void *alt;

	if (has_altstack)
		return 0;
	if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) &&
	    cur.ss_size >= size) {
		has_altstack = true;  /* someone (a sanitizer) gave one */
		return 0;
	}
	alt = mmap(NULL, size, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (alt == MAP_FAILED)
		return ENOMEM;
	ss.ss_sp = alt;
	ss.ss_size = size;
	ss.ss_flags = 0;
	if (sigaltstack(&ss, NULL) != 0) {
		int err = errno;

		(void)munmap(alt, size);
		return err;
	}
	pthread_once(&alt_key_once, alt_key_make);
	(void)pthread_setspecific(alt_key, alt);
	has_altstack = true;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Overflow handling (signal context: no locks, no stdio). */

static size_t
put_str(char *buf, size_t pos, size_t cap, const char *s)
{
	while (*s != '\0' && pos + 1 < cap)
		buf[pos++] = *s++;
	buf[pos] = '\0';
	return pos;
}

static size_t
put_hex(char *buf, size_t pos, size_t cap, uintptr_t v)
{
	char tmp[2 + 2 * sizeof (v) + 1];
	int n = 0;
	char digits[2 * sizeof (v)];

	do {
		digits[n++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v != 0);
	tmp[0] = '0';
	tmp[1] = 'x';
	for (int i = 0; i < n; i++)
		tmp[2 + i] = digits[n - 1 - i];
	tmp[2 + n] = '\0';
	return put_str(buf, pos, cap, tmp);
}

static void
chain_previous(int sig, siginfo_t *si, void *uc)
{
	const struct sigaction *old = &kt.old_segv;

	if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction != NULL) {
		old->sa_sigaction(sig, si, uc);
		return;
	}
	if (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN) {
		/* Return and fault again with the default action. */
		struct sigaction dfl;

		memset(&dfl, 0, sizeof (dfl));
		dfl.sa_handler = SIG_DFL;
		sigemptyset(&dfl.sa_mask);
		(void)sigaction(sig, &dfl, NULL);
		return;
	}
	old->sa_handler(sig);
}

/*
 * A coroutine that overflowed never runs again: the handler marks it
 * finished (result NULL) before the action runs. Where the action then
 * siglongjmps to -- the resumer, or any context further out -- is found
 * afterwards: the next coroutine call on the thread (coro_unwind) pops
 * every coroutine it is no longer running on.
 */
static void
coro_mark_overflowed(kthread_coro_t *co)
{
	co->transfer = NULL;
	co->state = CO_DONE;
	coro_overflowed = 1;
}

/*
 * A frame larger than the redzone can jump over it: the stack pointer
 * then lies below the stack's redzone and the fault lands further down.
 * A thread's stack pointer never leaves its stack, so a fault at or just
 * below an interrupted stack pointer that is below (and within 64 MiB
 * of) the current stack's redzone is that stack's overflow.
 */
#define JUMP_LIMIT ((uintptr_t)64 << 20)

static bool
jumped_redzone(const kt_ctx_t *c, uintptr_t fault, void *uc)
{
#if defined(__x86_64__) && defined(__linux__)
	uintptr_t sp = (uintptr_t)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RSP];

	return sp < c->redzone_lo && c->redzone_lo - sp <= JUMP_LIMIT &&
	    fault < c->redzone_lo && fault + 4096 >= sp;
#else
	(void)c;
	(void)fault;
	(void)uc;
	return false;
#endif
}

static void
overflow_handler(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	const kt_ctx_t *c = cur_ctx;
	kthread_overflow_info_t info;
	char msg[256];
	size_t n = 0;
	int saved = errno;
	bool jumped = false;

	memset(&info, 0, sizeof (info));
	info.kind = c != NULL ? c->kind : "thread";
	info.name = c != NULL ? c->name : "(not a kthread)";
	info.fault_addr = a;
	if (c != NULL && a >= c->redzone_lo && a < c->lo) {
		info.stack_lo = c->lo;
		info.stack_hi = c->hi;
	} else if (c != NULL && jumped_redzone(c, a, uc)) {
		info.stack_lo = c->lo;
		info.stack_hi = c->hi;
		jumped = true;
	} else {
		segkp_info_t in;

		if (segkp_classify_any_nowait(a, &in) != SEGKP_FAULT_REDZONE) {
			errno = saved;
			chain_previous(sig, si, uc);
			return;
		}
		info.stack_lo = in.addr;
		info.stack_hi = in.addr + in.len;
	}
	n = put_str(msg, n, sizeof (msg), "segkp: stack overflow: ");
	n = put_str(msg, n, sizeof (msg), info.kind);
	n = put_str(msg, n, sizeof (msg), " '");
	n = put_str(msg, n, sizeof (msg), info.name);
	n = put_str(msg, n, sizeof (msg), jumped ?
	    "' jumped over the redzone of stack [" :
	    "' ran into the redzone of stack [");
	n = put_hex(msg, n, sizeof (msg), info.stack_lo);
	n = put_str(msg, n, sizeof (msg), ",");
	n = put_hex(msg, n, sizeof (msg), info.stack_hi);
	n = put_str(msg, n, sizeof (msg), ")");
	info.message = msg;
	if (!kt.quiet) {
		char line[sizeof (msg) + 1];

		memcpy(line, msg, n);
		line[n] = '\n';
		(void)!write(STDERR_FILENO, line, n + 1);
	}
	if (kt.action != NULL) {
		atomic_fetch_add(&kt.overflow_caught, 1);
		if (c != NULL && cur_coro != NULL && c == &cur_coro->ctx)
			coro_mark_overflowed(cur_coro);
		kt.action(&info, kt.action_arg);
	}
	abort();
}

static void
install_handler_locked(void)
{
	struct sigaction sa;

	if (kt.handler_installed)
		return;
	memset(&sa, 0, sizeof (sa));
	sa.sa_sigaction = overflow_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &kt.old_segv) == 0)
		kt.handler_installed = true;
}

void
kthread_set_overflow_action(kthread_overflow_fn *fn, void *arg, int quiet)
{
	pthread_mutex_lock(&kt.lock);
	kt.action = fn;
	kt.action_arg = arg;
	kt.quiet = quiet;
	pthread_mutex_unlock(&kt.lock);
}

/* ------------------------------------------------------------------ */
/* Threads. */

static void
zombie_push(kthread_t *t)
{
	pthread_mutex_lock(&kt.lock);
	t->zombie_next = kt.zombies;
	kt.zombies = t;
	pthread_cond_signal(&kt.zombie_cv);
	pthread_mutex_unlock(&kt.lock);
}

static void
thread_exit_cleanup(void *arg)
{
	kthread_t *t = arg;

	if (t->restore_alt)
		(void)sigaltstack(&t->old_alt, NULL);
	cur_ctx = NULL;
	cur_thread = NULL;
	has_altstack = false;
	if (t->detached)
		zombie_push(t);
}

static void *
thread_start(void *arg)
{
	kthread_t *t = arg;
	stack_t ss;

	cur_thread = t;
	cur_ctx = &t->ctx;
	if (t->alt != NULL) {
		ss.ss_sp = t->alt;
		ss.ss_size = kt.alt_size;
		ss.ss_flags = 0;
		if (sigaltstack(&ss, &t->old_alt) == 0) {
			has_altstack = true;
			t->restore_alt = !(t->old_alt.ss_flags & SS_DISABLE);
		}
	}
	pthread_cleanup_push(thread_exit_cleanup, t);
	t->ret = t->fn(t->arg);
	pthread_cleanup_pop(1);
	return t->ret;
}

/* Give a finished thread's stacks back (after pthread_join). */
static void
thread_free_stacks(kthread_t *t)
{
	char *stack = t->stack, *alt = t->alt;

	t->magic = 0;
	if (alt != NULL)
		segkp_release(kt.seg, alt);
	segkp_release(kt.seg, stack);
}

/* Stacks are about to be held off kt.live (see the theory above). A fork
 * that waits goes first, or a steady stream of creates and joins could
 * keep it waiting for ever. */
static void
flight_begin_locked(void)
{
	while (kt.forks_waiting != 0)
		pthread_cond_wait(&kt.flight_cv, &kt.lock);
	kt.in_flight++;
}

static void
flight_end_locked(void)
{
	if (--kt.in_flight == 0 && kt.forks_waiting != 0)
		pthread_cond_broadcast(&kt.flight_cv);
}

static void
flight_begin(void)
{
	pthread_mutex_lock(&kt.lock);
	flight_begin_locked();
	pthread_mutex_unlock(&kt.lock);
}

static void
flight_end(void)
{
	pthread_mutex_lock(&kt.lock);
	flight_end_locked();
	pthread_mutex_unlock(&kt.lock);
}

static void
live_link_locked(kthread_t *t)
{
	t->live_prev = NULL;
	t->live_next = kt.live;
	if (kt.live != NULL)
		kt.live->live_prev = t;
	kt.live = t;
}

static void
live_unlink_locked(kthread_t *t)
{
	if (t->live_prev != NULL)
		t->live_prev->live_next = t->live_next;
	else
		kt.live = t->live_next;
	if (t->live_next != NULL)
		t->live_next->live_prev = t->live_prev;
}

/*
 * Counted and listed before it can run: a detached thread may finish and
 * be reaped before pthread_create returns. Ends the create's flight.
 */
static void
thread_enlist(kthread_t *t)
{
	pthread_mutex_lock(&kt.lock);
	kt.created++;
	kt.alive++;
	live_link_locked(t);
	flight_end_locked();
	pthread_mutex_unlock(&kt.lock);
}

typedef enum { RETIRE_JOINED, RETIRE_REAPED, RETIRE_UNSTARTED } retire_t;

/* Off the list and its stacks given back: after pthread_join, or when
 * pthread_create failed. The flight starts before t leaves the list, so a
 * fork sees t either listed or gone for good. */
static void
thread_retire(kthread_t *t, retire_t how)
{
	pthread_mutex_lock(&kt.lock);
	flight_begin_locked();
	live_unlink_locked(t);
	pthread_mutex_unlock(&kt.lock);
	thread_free_stacks(t);
	pthread_mutex_lock(&kt.lock);
	flight_end_locked();
	kt.alive--;
	if (how == RETIRE_JOINED)
		kt.joined++;
	else if (how == RETIRE_REAPED)
		kt.reaped++;
	else {
		kt.created--;
		kt.create_fail++;
	}
	pthread_mutex_unlock(&kt.lock);
}

/* The glibc stack below the carved structure (see the theory above). */
static int
glibc_stack(kthread_t *t, pthread_attr_t *pa)
{
	char *lo = t->stack;
	size_t size = (size_t)((char *)t - lo);
	size_t min = PTHREAD_STACK_MIN;

	if (size < min) {
		size_t short_by = min - size;

		if ((uintptr_t)lo - t->ctx.redzone_lo < short_by)
			return EINVAL;
		lo -= short_by;
		size = min;
	}
	return pthread_attr_setstack(pa, lo, size);
}

void
kthread_attr_init(kthread_attr_t *attr)
{
	memset(attr, 0, sizeof (*attr));
}

/*
 * Flags segkp would refuse are the caller's mistake: reported, and EINVAL,
 * not the EAGAIN of a stack that could not be had. Checked before anything
 * is taken, since segkp_get's own report could not tell the two apart.
 */
static bool
attr_flags_ok(const kthread_attr_t *attr)
{
	int flags = attr->kpd_flags | KPD_HASREDZONE | KPD_NOWAIT;

	if (segkp_flags_valid(flags))
		return true;
	vmem_error_report(SEGKP_E_BADFLAGS, 0, "kthread_create", NULL,
	    attr->name != NULL ? attr->name : "kthread", 0, 0,
	    "invalid kpd_flags 0x%x%s", (unsigned)attr->kpd_flags,
	    (flags & KPD_NO_ANON) && !(flags & KPD_LOCKED) ?
	    ": KPD_NO_ANON requires KPD_LOCKED" : "");
	return false;
}

static kthread_t *
create_refused(int err)
{
	pthread_mutex_lock(&kt.lock);
	kt.create_fail++;
	pthread_mutex_unlock(&kt.lock);
	errno = err;
	return NULL;
}

/* A thread's stack (len usable bytes) and signal stack, or false. */
static bool
thread_stacks_get(const kthread_attr_t *attr, char **stack, char **alt,
    size_t *len, bool *from_cache)
{
	/* glibc runs no thread on less; smaller requests get that much. */
	size_t want = attr->stacksize;

	if (want != 0 && want < (size_t)PTHREAD_STACK_MIN)
		want = (size_t)PTHREAD_STACK_MIN;
	*stack = stack_get(want, attr->kpd_flags, kt.thread_cache,
	    KTHREAD_STACK_PAGES * kt.pagesize, from_cache, len);
	if (*stack == NULL)
		return false;
	*alt = kt.alt_cache != NULL ? segkp_cache_get(kt.alt_cache) :
	    segkp_get(kt.seg, kt.alt_size, KPD_HASREDZONE | KPD_NOWAIT);
	if (*alt == NULL) {
		segkp_release(kt.seg, *stack);
		return false;
	}
	return true;
}

/* The kthread_t, carved from the top of its stack (see the theory). */
static kthread_t *
thread_carve(char *stack, size_t len, char *alt, const char *name)
{
	kthread_t *t = (kthread_t *)(stack + len - carve_size(sizeof (*t)));

	memset(t, 0, sizeof (*t));
	t->magic = KT_MAGIC;
	set_name(t->name, name, "kthread");
	t->stack = stack;
	t->len = len;
	t->alt = alt;
	fill_ctx(&t->ctx, "thread", t->name, stack, len, (char *)t);
	(void)segkp_set_tag(kt.seg, stack, t);
	return t;
}

kthread_t *
kthread_create(kthread_func_t *fn, void *arg, const kthread_attr_t *attr)
{
	kthread_attr_t dflt;
	pthread_attr_t pa;
	kthread_t *t;
	char *stack, *alt;
	bool from_cache;
	size_t len;
	int err;

	if (attr == NULL) {
		kthread_attr_init(&dflt);
		attr = &dflt;
	}
	if (fn == NULL || !attr_flags_ok(attr))
		return create_refused(EINVAL);
	if (!ensure_init())
		return create_refused(ENOMEM);
	flight_begin();
	if (!thread_stacks_get(attr, &stack, &alt, &len, &from_cache)) {
		flight_end();
		return create_refused(EAGAIN);
	}
	t = thread_carve(stack, len, alt, attr->name);
	t->fn = fn;
	t->arg = arg;
	t->from_cache = from_cache;
	t->detached = attr->detached != 0;
	if (t->detached)
		start_reaper();
	thread_enlist(t);
	pthread_attr_init(&pa);
	err = glibc_stack(t, &pa);
	if (err == 0)
		err = pthread_create(&t->pt, &pa, thread_start, t);
	pthread_attr_destroy(&pa);
	if (err != 0) {
		thread_retire(t, RETIRE_UNSTARTED);
		errno = err;
		return NULL;
	}
	return t;
}

/* Is t a live, joinable kthread? (Its stack is a segkp allocation in use
 * whose tag is t.) */
static bool
valid_thread(kthread_t *t)
{
	segkp_info_t in;

	return t != NULL && kt.seg != NULL &&
	    segkp_find(kt.seg, t, &in) && !in.cached && in.tag == t &&
	    t->magic == KT_MAGIC;
}

int
kthread_join(kthread_t *t, void **retval)
{
	void *ret;
	int err;

	if (!valid_thread(t) || t->detached ||
	    atomic_exchange(&t->joined, 1) != 0) {
		vmem_error_report(KTHREAD_E_BADTHREAD, 0, "kthread_join", NULL,
		    "kthread", (uintptr_t)t, 0, "not a joinable kthread "
		    "(unknown, detached or already joined)");
		return EINVAL;
	}
	err = pthread_join(t->pt, &ret);
	if (err != 0) {
		atomic_store(&t->joined, 0);
		return err;
	}
	if (retval != NULL)
		*retval = ret;
	thread_retire(t, RETIRE_JOINED);
	return 0;
}

static size_t
reap_list(kthread_t *list)
{
	size_t n = 0;
	kthread_t *next;

	for (; list != NULL; list = next) {
		next = list->zombie_next;
		(void)pthread_join(list->pt, NULL);
		thread_retire(list, RETIRE_REAPED);
		n++;
	}
	return n;
}

size_t
kthread_reap(void)
{
	kthread_t *list;

	pthread_mutex_lock(&kt.lock);
	list = kt.zombies;
	kt.zombies = NULL;
	pthread_mutex_unlock(&kt.lock);
	return reap_list(list);
}

static void *
reaper_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&kt.lock);
	for (;;) {
		kthread_t *list;

		while (kt.zombies == NULL)
			pthread_cond_wait(&kt.zombie_cv, &kt.lock);
		list = kt.zombies;
		kt.zombies = NULL;
		pthread_mutex_unlock(&kt.lock);
		(void)reap_list(list);
		pthread_mutex_lock(&kt.lock);
	}
	return NULL;
}

/* Called before the first detached thread starts. */
static void
start_reaper(void)
{
	pthread_t pt;
	bool start;

	pthread_mutex_lock(&kt.lock);
	start = !kt.reaper_started;
	kt.reaper_started = true;
	pthread_mutex_unlock(&kt.lock);
	if (start && pthread_create(&pt, NULL, reaper_main, NULL) == 0)
		pthread_detach(pt);
}

kthread_t *
kthread_self(void)
{
	return cur_thread;
}

const char *
kthread_name(const kthread_t *t)
{
	return t->name;
}

void
kthread_stack(const kthread_t *t, void **lo, size_t *len)
{
	*lo = t->stack;
	*len = t->len;
}

void
kthread_get_stats(kthread_stats_t *st)
{
	pthread_mutex_lock(&kt.lock);
	st->created = kt.created;
	st->create_fail = kt.create_fail;
	st->joined = kt.joined;
	st->reaped = kt.reaped;
	st->coro_created = kt.coro_created;
	st->coro_destroyed = kt.coro_destroyed;
	st->alive = kt.alive;
	st->coro_alive = kt.coro_alive;
	pthread_mutex_unlock(&kt.lock);
	st->overflow_caught = atomic_load(&kt.overflow_caught);
}

/* ------------------------------------------------------------------ */
/* Fork. */

/* kt.lock is held across fork(), with no stacks in flight, so the child
 * finds the lists and counts whole. */
static void
fork_prepare(void)
{
	pthread_mutex_lock(&kt.lock);
	kt.forks_waiting++;
	while (kt.in_flight != 0)
		pthread_cond_wait(&kt.flight_cv, &kt.lock);
	kt.forks_waiting--;
}

static void
fork_parent(void)
{
	/* Flights that waited for this fork may start. */
	pthread_cond_broadcast(&kt.flight_cv);
	pthread_mutex_unlock(&kt.lock);
}

/* In the child: take every thread but the caller off the list and count
 * it gone (neither joined nor reaped). Returns them, linked by
 * zombie_next: the zombie list is dropped with them. */
static kthread_t *
forget_other_threads_locked(void)
{
	kthread_t *gone = NULL, *t, *next;

	for (t = kt.live; t != NULL; t = next) {
		next = t->live_next;
		if (t == cur_thread)
			continue;
		live_unlink_locked(t);
		t->zombie_next = gone;
		gone = t;
		kt.alive--;
	}
	kt.zombies = NULL;
	return gone;
}

/*
 * Only the forking thread exists in the child. The others' stacks are the
 * child's copies with nobody on them: they go back to the segment, which
 * segkp's child handler (run before this one) has unlocked, so kthread_init
 * may move to another segment. The reaper is not there either: the next
 * detached create starts one. Waits of the parent's threads (a reaper on
 * zombie_cv, forks on flight_cv) may still be counted in the condition
 * variables, so they are made anew.
 */
static void
fork_child(void)
{
	kthread_t *gone = forget_other_threads_locked(), *next;

	kt.reaper_started = false;
	kt.forks_waiting = 0;
	(void)pthread_cond_init(&kt.zombie_cv, NULL);
	(void)pthread_cond_init(&kt.flight_cv, NULL);
	pthread_mutex_unlock(&kt.lock);
	for (; gone != NULL; gone = next) {
		next = gone->zombie_next;
		thread_free_stacks(gone);
	}
}

static void
fork_handlers_add(void)
{
	(void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/*
 * At the first kthread_init, when segkp_create has registered segkp's
 * handlers (and segkp the layers below it). Prepare handlers run in the
 * reverse order of registration, so fork takes kt.lock before segkp's
 * locks, the order kthread_init takes them in; child handlers run in
 * order, so segkp's locks are free again when kthread's runs.
 */
static void
fork_handlers_register(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	(void)pthread_once(&once, fork_handlers_add);
}

/* ------------------------------------------------------------------ */
/* Coroutines: the context switch. */

#if defined(__x86_64__)
/*
 * vmem_kt_switch(save, next): push the callee-saved registers, MXCSR and
 * the x87 control word, store the stack pointer in *save, load next,
 * pop the same from there and return into the other context.
 * vmem_kt_entry is where a new coroutine's first switch returns to: its
 * structure is in %rbx.
 */
void vmem_kt_switch(void **save, void *next)
    __attribute__((visibility("hidden")));
void vmem_kt_coro_main(kthread_coro_t *co)
    __attribute__((visibility("hidden"), noreturn));
extern char vmem_kt_entry[] __attribute__((visibility("hidden")));
__asm__(
	".text\n"
	".globl vmem_kt_switch\n"
	".hidden vmem_kt_switch\n"
	".type vmem_kt_switch,@function\n"
	"vmem_kt_switch:\n"
	"	pushq %rbp\n"
	"	pushq %rbx\n"
	"	pushq %r12\n"
	"	pushq %r13\n"
	"	pushq %r14\n"
	"	pushq %r15\n"
	"	subq $16, %rsp\n"
	"	stmxcsr 8(%rsp)\n"
	"	fnstcw 12(%rsp)\n"
	"	movq %rsp, (%rdi)\n"
	"	movq %rsi, %rsp\n"
	"	ldmxcsr 8(%rsp)\n"
	"	fldcw 12(%rsp)\n"
	"	addq $16, %rsp\n"
	"	popq %r15\n"
	"	popq %r14\n"
	"	popq %r13\n"
	"	popq %r12\n"
	"	popq %rbx\n"
	"	popq %rbp\n"
	"	ret\n"
	".size vmem_kt_switch, .-vmem_kt_switch\n"
	".globl vmem_kt_entry\n"
	".hidden vmem_kt_entry\n"
	".type vmem_kt_entry,@function\n"
	"vmem_kt_entry:\n"
	"	movq %rbx, %rdi\n"
	"	call vmem_kt_coro_main\n"
	"	ud2\n"
	".size vmem_kt_entry, .-vmem_kt_entry\n");

/* Build the frame vmem_kt_switch pops: it "returns" into vmem_kt_entry
 * with a 16-byte-aligned stack pointer and co in %rbx. */
static void
coro_prepare(kthread_coro_t *co, char *top)
{
	uintptr_t a = (uintptr_t)top & ~(uintptr_t)15;
	uint64_t *f = (uint64_t *)(a - 72);
	uint32_t mxcsr = 0x1f80;
	uint16_t fpucw = 0x037f;

	memset(f, 0, 72);
	memcpy((char *)f + 8, &mxcsr, sizeof (mxcsr));
	memcpy((char *)f + 12, &fpucw, sizeof (fpucw));
	f[6] = (uint64_t)(uintptr_t)co;       /* %rbx, at a - 24 */
	f[8] = (uint64_t)(uintptr_t)vmem_kt_entry; /* return, at a - 8 */
	co->sp = f;
}

static void
switch_into(kthread_coro_t *co)
{
	vmem_kt_switch(&co->caller_sp, co->sp);
}

static void
switch_out(kthread_coro_t *co)
{
	vmem_kt_switch(&co->sp, co->caller_sp);
}
#else
void vmem_kt_coro_main(kthread_coro_t *co);
static _Thread_local kthread_coro_t *starting_coro;

static void
uc_entry(void)
{
	vmem_kt_coro_main(starting_coro);
}

static void
coro_prepare(kthread_coro_t *co, char *top)
{
	getcontext(&co->uc);
	co->uc.uc_stack.ss_sp = co->stack;
	co->uc.uc_stack.ss_size = (size_t)(top - co->stack);
	co->uc.uc_link = NULL;
	makecontext(&co->uc, uc_entry, 0);
}

static void
switch_into(kthread_coro_t *co)
{
	if (co->state == CO_NEW)
		starting_coro = co;
	swapcontext(&co->caller_uc, &co->uc);
}

static void
switch_out(kthread_coro_t *co)
{
	swapcontext(&co->uc, &co->caller_uc);
}
#endif

/* ------------------------------------------------------------------ */
/* Coroutines. */

static bool
coro_ok(const kthread_coro_t *co)
{
	return co != NULL && co->magic == CORO_MAGIC;
}

/* The running frame is on co's stack (its redzone included). */
static bool
on_coro_stack(const kthread_coro_t *co)
{
	uintptr_t fp = (uintptr_t)__builtin_frame_address(0);

	return fp >= co->ctx.redzone_lo && fp < co->ctx.hi;
}

/*
 * After an overflow's action jumped out (coro_overflowed set): pop every
 * coroutine the thread no longer runs on, innermost first, marking each
 * finished, so the thread is back where the jump landed. ASan is told
 * of each fiber left for good, as a return from it would have.
 */
static void
coro_unwind(void)
{
	kthread_coro_t *co;

	if (!coro_overflowed)
		return;
	while ((co = cur_coro) != NULL &&
	    (co->state == CO_DONE || !on_coro_stack(co))) {
		co->state = CO_DONE;
#ifdef KT_ASAN
		__sanitizer_start_switch_fiber(NULL, co->caller_bottom,
		    co->caller_size);
		__sanitizer_finish_switch_fiber(co->resumer_fake, NULL, NULL);
#endif
		cur_coro = co->caller_coro;
		cur_ctx = co->caller_ctx;
	}
	coro_overflowed = 0;
}

static void
coro_misuse(const kthread_coro_t *co, const char *call, const char *why)
{
	vmem_error_report(KTHREAD_E_BADCORO, 0, call, NULL,
	    coro_ok(co) ? co->name : "coroutine", (uintptr_t)co, 0, "%s",
	    why);
}

void
vmem_kt_coro_main(kthread_coro_t *co)
{
	void *result;

#ifdef KT_ASAN
	__sanitizer_finish_switch_fiber(NULL, &co->caller_bottom,
	    &co->caller_size);
#endif
	result = co->fn(co->arg);
	co->transfer = result;
	co->state = CO_DONE;
#ifdef KT_ASAN
	/* This fiber ends: ASan may free its fake stack. */
	__sanitizer_start_switch_fiber(NULL, co->caller_bottom,
	    co->caller_size);
#endif
	switch_out(co);
	abort(); /* a finished coroutine is never resumed */
}

kthread_coro_t *
kthread_coro_create(kthread_coro_func_t *fn, void *arg, const char *name,
    size_t stacksize)
{
	kthread_coro_t *co;
	char *stack;
	bool from_cache;
	size_t len;

	if (fn == NULL || !ensure_init())
		return NULL;
	/* In flight until counted: kthread_init must not switch segments
	 * (and drop the cache) under it. */
	flight_begin();
	stack = stack_get(stacksize, 0, kt.small_cache,
	    KTHREAD_CORO_STACK_PAGES * kt.pagesize, &from_cache, &len);
	if (stack == NULL) {
		flight_end();
		return NULL;
	}
	co = (kthread_coro_t *)(stack + len - carve_size(sizeof (*co)));
	memset(co, 0, sizeof (*co));
	co->magic = CORO_MAGIC;
	set_name(co->name, name, "coroutine");
	co->fn = fn;
	co->arg = arg;
	co->stack = stack;
	co->len = len;
	co->from_cache = from_cache;
	co->state = CO_NEW;
	fill_ctx(&co->ctx, "coroutine", co->name, stack, len, (char *)co);
	coro_prepare(co, (char *)co);
#ifdef KT_VALGRIND
	co->vg_id = VALGRIND_STACK_REGISTER(stack, (char *)co);
#endif
	pthread_mutex_lock(&kt.lock);
	kt.coro_created++;
	kt.coro_alive++;
	flight_end_locked();
	pthread_mutex_unlock(&kt.lock);
	return co;
}

void *
kthread_coro_resume(kthread_coro_t *co, void *value)
{
	coro_unwind();
	if (!coro_ok(co) || co->state == CO_DONE || co->state == CO_RUNNING) {
		coro_misuse(co, "kthread_coro_resume", !coro_ok(co) ?
		    "not a coroutine" : co->state == CO_DONE ?
		    "coroutine has finished" : "coroutine is running");
		return NULL;
	}
	if (!has_altstack)
		(void)kthread_altstack_install();
	co->transfer = value;
	co->caller_ctx = cur_ctx;
	co->caller_coro = cur_coro;
	cur_coro = co;
	cur_ctx = &co->ctx;
	co->state = CO_RUNNING;
#ifdef KT_ASAN
	co->resumer_fake = NULL;
	__sanitizer_start_switch_fiber(&co->resumer_fake, co->stack,
	    (size_t)((char *)co - co->stack));
#endif
	switch_into(co);
#ifdef KT_ASAN
	__sanitizer_finish_switch_fiber(co->resumer_fake, NULL, NULL);
#endif
	cur_coro = co->caller_coro;
	cur_ctx = co->caller_ctx;
	return co->transfer;
}

void *
kthread_coro_yield(void *value)
{
	kthread_coro_t *co;

	coro_unwind();
	co = cur_coro;
	if (co == NULL) {
		coro_misuse(NULL, "kthread_coro_yield", "not in a coroutine");
		return NULL;
	}
	co->transfer = value;
	co->state = CO_SUSPENDED;
#ifdef KT_ASAN
	__sanitizer_start_switch_fiber(&co->fake_stack, co->caller_bottom,
	    co->caller_size);
#endif
	switch_out(co);
#ifdef KT_ASAN
	__sanitizer_finish_switch_fiber(co->fake_stack, &co->caller_bottom,
	    &co->caller_size);
#endif
	return co->transfer;
}

int
kthread_coro_done(const kthread_coro_t *co)
{
	return coro_ok(co) && co->state == CO_DONE;
}

void
kthread_coro_destroy(kthread_coro_t *co)
{
	coro_unwind();
	if (!coro_ok(co) || co->state == CO_RUNNING) {
		coro_misuse(co, "kthread_coro_destroy", !coro_ok(co) ?
		    "not a coroutine" : "coroutine is running");
		return;
	}
#ifdef KT_VALGRIND
	VALGRIND_STACK_DEREGISTER(co->vg_id);
#endif
#ifdef KT_ASAN
	/* Frames that never returned (a suspended or overflowed coroutine)
	 * leave their redzones poisoned; the next user of the stack must
	 * not inherit them. */
	__asan_unpoison_memory_region(co->stack,
	    (size_t)((char *)co - co->stack));
#endif
	co->magic = 0;
	segkp_release(kt.seg, co->stack);
	pthread_mutex_lock(&kt.lock);
	kt.coro_destroyed++;
	kt.coro_alive--;
	pthread_mutex_unlock(&kt.lock);
}

kthread_coro_t *
kthread_coro_self(void)
{
	coro_unwind();
	return cur_coro;
}

const char *
kthread_coro_name(const kthread_coro_t *co)
{
	return co->name;
}

void
kthread_coro_stack(const kthread_coro_t *co, void **lo, size_t *len)
{
	*lo = co->stack;
	*len = co->len;
}
