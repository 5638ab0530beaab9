/*
 * A platform for the core without any C library: the way a small kernel
 * embeds libvmem. Everything the core needs is here -- spinlocks, a
 * condition variable, a CPU id, metadata pages from a static pool, an
 * error sink and panic -- plus the four memory functions every GCC or
 * Clang freestanding environment must provide, the raw Linux system calls
 * write and exit_group, and the _start entry point.
 *
 * The metadata pool is a static array of pages with one byte per page in
 * a map: a run of n pages is found first-fit, handed out zeroed, and
 * marked free again on plat_pages_free. The program is single-threaded,
 * so a spinlock never spins; the spinlock is still a real one (atomic
 * test-and-set with acquire/release ordering) as an SMP kernel's would be.
 * A condition wait cannot be woken by anyone else: it drops the lock and
 * takes it again, which the core's contract allows (spurious wake-ups).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stddef.h>
#include <stdint.h>

#include "platform.h"

/* ---- raw system calls (x86_64 Linux) ---------------------------------- */

static long
sys3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ __volatile__("syscall" : "=a"(ret)
	    : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

enum { SYS_WRITE = 1, SYS_EXIT_GROUP = 231 };

void
fs_write(int fd, const char *s)
{
	size_t n = 0;

	while (s[n] != '\0')
		n++;
	while (n > 0) {
		long w = sys3(SYS_WRITE, fd, (long)s, (long)n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

_Noreturn void
fs_exit(int status)
{
	for (;;)
		(void)sys3(SYS_EXIT_GROUP, status, 0, 0);
}

/* The entry point: align the stack, call kmain, exit with its status. */
int kmain(void);

__asm__(".text\n"
    ".globl _start\n"
    "_start:\n"
    "	xor %ebp, %ebp\n"
    "	and $-16, %rsp\n"
    "	call fs_start\n"
    "	hlt\n");

_Noreturn void fs_start(void);

_Noreturn void
fs_start(void)
{
	fs_exit(kmain());
}

/* ---- memory functions (required by the compiler, used by the core) ---- */

void *
memset(void *dst, int c, size_t n)
{
	volatile unsigned char *d = dst;

	while (n-- > 0)
		*d++ = (unsigned char)c;
	return dst;
}

void *
memcpy(void *restrict dst, const void *restrict src, size_t n)
{
	volatile unsigned char *d = dst;
	const unsigned char *s = src;

	while (n-- > 0)
		*d++ = *s++;
	return dst;
}

void *
memmove(void *dst, const void *src, size_t n)
{
	volatile unsigned char *d = dst;
	const unsigned char *s = src;

	if (d < s) {
		while (n-- > 0)
			*d++ = *s++;
	} else {
		while (n-- > 0)
			d[n] = s[n];
	}
	return dst;
}

int
memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (; n > 0; n--, x++, y++)
		if (*x != *y)
			return *x < *y ? -1 : 1;
	return 0;
}

/* ---- locks -------------------------------------------------------------- */

void
plat_mutex_init(plat_mutex_t *m)
{
	atomic_flag_clear_explicit(&m->held, memory_order_relaxed);
}

void plat_mutex_destroy(plat_mutex_t *m) { (void)m; }

void
plat_mutex_lock(plat_mutex_t *m)
{
	while (atomic_flag_test_and_set_explicit(&m->held,
	    memory_order_acquire))
		__asm__ __volatile__("pause");
}

void
plat_mutex_unlock(plat_mutex_t *m)
{
	atomic_flag_clear_explicit(&m->held, memory_order_release);
}

static unsigned long cond_waits;

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
}

void
plat_cond_timedwait(plat_cond_t *c, plat_mutex_t *m, unsigned timeout_ms)
{
	(void)c;
	(void)timeout_ms;
	cond_waits++;
	plat_mutex_unlock(m);
	plat_mutex_lock(m);
}

unsigned long fs_cond_waits(void) { return cond_waits; }

/* ---- CPUs --------------------------------------------------------------- */

static unsigned current_cpu;

void fs_set_cpu(unsigned cpu) { current_cpu = cpu % FS_NCPUS; }
unsigned plat_cpu_id(void) { return current_cpu; }
unsigned plat_ncpus(void) { return FS_NCPUS; }
const char *plat_cpu_id_method(void) { return "fs_set_cpu"; }

/* ---- metadata pages: a static pool ------------------------------------ */

/* The page size can be set (-DFS_PAGESIZE=...) to run the core on pages
 * larger than its own 64 KiB tag chunks. */
#ifndef FS_PAGESIZE
#define FS_PAGESIZE 4096u
#endif
#define FS_POOL_BYTES (4u << 20)
#define FS_POOL_PAGES (FS_POOL_BYTES / FS_PAGESIZE)

static _Alignas(FS_PAGESIZE) unsigned char pool[FS_POOL_BYTES];
static unsigned char pool_map[FS_POOL_PAGES]; /* 1: page handed out */
static unsigned long pool_used, pool_peak;
static plat_mutex_t pool_lock;

size_t plat_pagesize(void) { return FS_PAGESIZE; }

void *
plat_pages_alloc(size_t size)
{
	size_t n = (size + FS_PAGESIZE - 1) / FS_PAGESIZE, run = 0;
	void *p = NULL;

	if (n == 0)
		return NULL;
	/* The contract (FREESTANDING.md): whole pages only. */
	if (size % FS_PAGESIZE != 0) {
		fs_write(2, "fs kernel: plat_pages_alloc size is not a multiple "
		    "of plat_pagesize()\n");
		plat_abort();
	}
	plat_mutex_lock(&pool_lock);
	for (size_t i = 0; i < FS_POOL_PAGES; i++) {
		run = pool_map[i] ? 0 : run + 1;
		if (run == n) {
			size_t first = i + 1 - n;
			for (size_t j = first; j <= i; j++)
				pool_map[j] = 1;
			pool_used += n;
			if (pool_used > pool_peak)
				pool_peak = pool_used;
			p = pool + first * FS_PAGESIZE;
			break;
		}
	}
	plat_mutex_unlock(&pool_lock);
	if (p != NULL)
		memset(p, 0, n * FS_PAGESIZE);
	return p;
}

void
plat_pages_free(void *addr, size_t size)
{
	size_t n = (size + FS_PAGESIZE - 1) / FS_PAGESIZE;
	size_t first = (size_t)((unsigned char *)addr - pool) / FS_PAGESIZE;

	plat_mutex_lock(&pool_lock);
	for (size_t j = first; j < first + n; j++)
		pool_map[j] = 0;
	pool_used -= n;
	plat_mutex_unlock(&pool_lock);
}

unsigned long fs_pool_pages_used(void) { return pool_used; }
unsigned long fs_pool_pages_peak(void) { return pool_peak; }

/* ---- errors ------------------------------------------------------------- */

void plat_write_error(const char *msg) { fs_write(2, msg); }

void
plat_abort(void)
{
	fs_write(2, "fs kernel: panic\n");
	fs_exit(134);
}

/* One thread, no fork: nothing to do around a fork. */
void
plat_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	(void)prepare;
	(void)parent;
	(void)child;
}

/* One thread and no deferred-work context: ask for nothing (the contract
 * allows it; a waiting allocation then waits for a free). 0: asking again
 * would not help either. */
int
plat_defer(void (*fn)(void))
{
	(void)fn;
	return 0;
}
