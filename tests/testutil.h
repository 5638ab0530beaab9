/*
 * Small helpers shared by the tests: assertions that name the line, a
 * seeded PRNG, and an error handler that records instead of aborting.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_TESTUTIL_H
#define VMEM_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <vmem/segkmem.h>
#include <vmem/vmem.h>

extern int tu_failures;

#define CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
		    __LINE__, #cond); \
		tu_failures++; \
	} \
} while (0)

#define REQUIRE(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: requirement failed: %s\n", \
		    __FILE__, __LINE__, #cond); \
		exit(1); \
	} \
} while (0)

#define CHECK_EQ(a, b) do { \
	unsigned long long tu_a = (unsigned long long)(a); \
	unsigned long long tu_b = (unsigned long long)(b); \
	if (tu_a != tu_b) { \
		fprintf(stderr, "%s:%d: %s == %s failed: 0x%llx != 0x%llx\n", \
		    __FILE__, __LINE__, #a, #b, tu_a, tu_b); \
		tu_failures++; \
	} \
} while (0)

/* Run a named test function, printing its name. */
#define RUN(fn) do { \
	int tu_before = tu_failures; \
	fn(); \
	printf("%s %s\n", tu_failures == tu_before ? "ok  " : "FAIL", #fn); \
	fflush(stdout); \
} while (0)

/* Exit status for main(): prints "N passed, N failed". */
int tu_finish(void);

/* xorshift64* PRNG. */
typedef struct { uint64_t s; } tu_rng_t;
void tu_seed(tu_rng_t *r, uint64_t seed);
uint64_t tu_next(tu_rng_t *r);
/* Uniform in [lo, hi]. */
uint64_t tu_range(tu_rng_t *r, uint64_t lo, uint64_t hi);

/*
 * Recording error handler: counts reports and keeps the last one. Installed
 * by tu_record_errors(), removed by tu_default_errors().
 */
typedef struct {
	int count;
	int code;
	int warning;
	char call[64];
	char name[64];
	uintptr_t addr;
	size_t size;
	char line[512];
} tu_errlog_t;
extern tu_errlog_t tu_err;
void tu_record_errors(void);
void tu_default_errors(void);
void tu_reset_errors(void);

/* A fault classifier that claims no address (fills a kas's table). */
kas_fault_t tu_classify_nothing(void *arg, uintptr_t addr, char *buf,
    size_t len);

/* vmem_check() must pass. */
#define CHECK_ARENA(vmp) CHECK(vmem_check(vmp) == 0)

/* Environment knob: integer from getenv(name) or dflt. */
long tu_env_long(const char *name, long dflt);
/* False when built with ASan or TSan: their runtimes turn mlock into a
 * no-op that returns 0, so a test of locking limits cannot see them. */
int tu_mlock_works(void);
/* False under ASan and TSan: a child of a threaded process cannot start
 * threads there (TSan refuses; ASan's child may wait for ever on an
 * allocator lock a thread of the parent held). */
int tu_child_threads_work(void);
/* True when run under valgrind (its preload library is in LD_PRELOAD). */
int tu_under_valgrind(void);
/* True when built with a sanitizer or run under valgrind (size tests down). */
int tu_slow_build(void);

/*
 * Fork forks times while other threads of the test keep working; each
 * child runs child() under a 10 s alarm (60 s in slow builds) and exits
 * with its result, which must be 0. A parent stuck in fork() for 30 s
 * (120 s) prints "fork deadlocked in the parent: <why>" and exits 3.
 */
void tu_fork_children(int forks, int (*child)(void), const char *why);

#endif
