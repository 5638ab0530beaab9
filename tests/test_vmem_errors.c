/*
 * Every misuse of the vmem API the library can detect, checked through a
 * recording error handler: the code, the call's name, the arena (pointer
 * and name), the address and the size in the report; the arena unchanged
 * afterwards (same segments, same counters, vmem_check passes) and still
 * working. One forked child checks the default handler: it prints a single
 * line naming the call, the arena, the address and the size to stderr and
 * aborts (SIGABRT); another checks that a warning (leak at destroy) is
 * printed and the program goes on.
 *
 * Each misuse runs inside expect_error(): snapshot, call, compare.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmem/kmem.h>
#include <vmem/kthread.h>
#include <vmem/layout.h>
#include <vmem/segkmem.h>
#include <vmem/segkp.h>

#include "testutil.h"
#include "vmem_testlib.h"

#define Q 4096UL
#define BASE 0x100000UL

typedef struct {
	int count;
	vmem_error_info_t info;  /* last report (strings copied below) */
	char call[64], name[64], detail[256];
} rec_t;
static rec_t rec;

static void
rec_handler(const vmem_error_info_t *info, void *arg)
{
	(void)arg;
	rec.count++;
	rec.info = *info;
	snprintf(rec.call, sizeof (rec.call), "%s", info->call ? info->call :
	    "");
	snprintf(rec.name, sizeof (rec.name), "%s", info->name ? info->name :
	    "");
	snprintf(rec.detail, sizeof (rec.detail), "%s", info->detail ?
	    info->detail : "");
}

static void
rec_reset(void)
{
	memset(&rec, 0, sizeof (rec));
}

/* Check one report: code, call, arena, address and size. */
static void
check_report(int line, int code, const char *call, vmem_t *arena,
    uintptr_t addr, size_t size)
{
	if (rec.count != 1 || rec.info.code != code ||
	    strcmp(rec.call, call) != 0 || rec.info.arena != arena ||
	    (arena != NULL && strcmp(rec.name, vmem_name(arena)) != 0) ||
	    rec.info.addr != addr || rec.info.size != size ||
	    rec.info.warning != 0) {
		fprintf(stderr, "line %d: expected code %d %s(%s, %#lx, %lu); "
		    "got %d reports, last code %d %s('%s', %#lx, %lu) "
		    "warning %d: %s\n", line, code, call,
		    arena ? vmem_name(arena) : "-", (unsigned long)addr,
		    (unsigned long)size, rec.count, rec.info.code, rec.call,
		    rec.name, (unsigned long)rec.info.addr,
		    (unsigned long)rec.info.size, rec.info.warning,
		    rec.detail);
		tu_failures++;
	}
}

static tl_snap_t before, after;

static void
snap_before(vmem_t *v)
{
	rec_reset();
	tl_snap(v, &before);
}

/* The arena is as it was, consistent, and still allocates and frees. */
static void
check_intact(int line, vmem_t *v)
{
	void *a;

	tl_snap(v, &after);
	if (!tl_snap_equal(&before, &after)) {
		fprintf(stderr, "line %d: arena '%s' changed by a refused "
		    "call\n", line, vmem_name(v));
		tu_failures++;
	}
	CHECK_ARENA(v);
	a = vmem_alloc(v, Q, VM_NOSLEEP);
	CHECK(a != NULL);
	if (a != NULL)
		vmem_free(v, a, Q);
	CHECK_ARENA(v);
}

#define EXPECT(v, code, call, arena, addr, size, stmt) do { \
	snap_before(v); \
	stmt; \
	check_report(__LINE__, code, call, arena, (uintptr_t)(addr), \
	    (size_t)(size)); \
	check_intact(__LINE__, v); \
} while (0)

static vmem_t *
mk(const char *name, uintptr_t base, size_t size)
{
	vmem_t *v = vmem_create(name, TL_PTR(base), size, Q, NULL, NULL, NULL,
	    0, VM_SLEEP);

	REQUIRE(v != NULL);
	return v;
}

static void
test_bad_frees(void)
{
	vmem_t *v = mk("frees", BASE, 64 * Q);
	vmem_t *w = mk("other", 0x8000000UL, 16 * Q);
	uintptr_t a = TL_U(vmem_alloc(v, 4 * Q, VM_NOSLEEP));
	uintptr_t b = TL_U(vmem_alloc(v, Q, VM_NOSLEEP));
	uintptr_t x = TL_U(vmem_xalloc(v, 2 * Q, 0, 0, 0, NULL, NULL,
	    VM_NOSLEEP));
	uintptr_t o = TL_U(vmem_alloc(w, Q, VM_NOSLEEP));

	REQUIRE(a && b && x && o);
	vmem_free(v, TL_PTR(b), Q);
	/* Never allocated, inside an allocated segment. */
	EXPECT(v, VMEM_E_BADFREE, "vmem_free", v, a + Q, Q,
	    vmem_free(v, TL_PTR(a + Q), Q));
	EXPECT(v, VMEM_E_BADFREE, "vmem_xfree", v, x + Q, Q,
	    vmem_xfree(v, TL_PTR(x + Q), Q));
	/* Double free; and a free inside a free segment. */
	EXPECT(v, VMEM_E_DOUBLEFREE, "vmem_free", v, b, Q,
	    vmem_free(v, TL_PTR(b), Q));
	EXPECT(v, VMEM_E_DOUBLEFREE, "vmem_xfree", v, b, Q,
	    vmem_xfree(v, TL_PTR(b), Q));
	EXPECT(v, VMEM_E_DOUBLEFREE, "vmem_free", v, BASE + 40 * Q, 2 * Q,
	    vmem_free(v, TL_PTR(BASE + 40 * Q), 2 * Q));
	/* Wrong size, larger and smaller. */
	EXPECT(v, VMEM_E_WRONGSIZE, "vmem_free", v, a, 8 * Q,
	    vmem_free(v, TL_PTR(a), 8 * Q));
	EXPECT(v, VMEM_E_WRONGSIZE, "vmem_free", v, a, 3 * Q,
	    vmem_free(v, TL_PTR(a), 3 * Q));
	EXPECT(v, VMEM_E_WRONGSIZE, "vmem_xfree", v, x, Q,
	    vmem_xfree(v, TL_PTR(x), Q));
	/* Outside every span: wrong arena (including another's block). */
	EXPECT(v, VMEM_E_WRONGARENA, "vmem_free", v, o, Q,
	    vmem_free(v, TL_PTR(o), Q));
	EXPECT(v, VMEM_E_WRONGARENA, "vmem_xfree", v, BASE - Q, Q,
	    vmem_xfree(v, TL_PTR(BASE - Q), Q));
	EXPECT(v, VMEM_E_WRONGARENA, "vmem_free", v, BASE + 64 * Q, Q,
	    vmem_free(v, TL_PTR(BASE + 64 * Q), Q));
	/* Size 0. */
	EXPECT(v, VMEM_E_BADARG, "vmem_free", v, a, 0,
	    vmem_free(v, TL_PTR(a), 0));
	/* The right size after rounding is no error. */
	rec_reset();
	vmem_free(v, TL_PTR(a), 4 * Q - 1);
	vmem_xfree(v, TL_PTR(x), 2 * Q);
	vmem_free(w, TL_PTR(o), Q);
	CHECK_EQ(rec.count, 0);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_ARENA(v);
	CHECK_ARENA(w);
	vmem_destroy(w);
	vmem_destroy(v);
}

static void
test_bad_alloc_args(void)
{
	vmem_t *v = mk("allocargs", BASE, 64 * Q);
	uintptr_t keep = TL_U(vmem_alloc(v, 3 * Q, VM_NOSLEEP));

	EXPECT(v, VMEM_E_BADARG, "vmem_alloc", v, 0, 0,
	    CHECK(vmem_alloc(v, 0, VM_NOSLEEP) == NULL));
	EXPECT(v, VMEM_E_POLICY, "vmem_alloc", v, 0, Q,
	    CHECK(vmem_alloc(v, Q, VM_BESTFIT | VM_FIRSTFIT | VM_NOSLEEP)
	    == NULL));
	EXPECT(v, VMEM_E_POLICY, "vmem_alloc", v, 0, Q,
	    CHECK(vmem_alloc(v, Q, VM_NEXTFIT | VM_FIRSTFIT | VM_NOSLEEP)
	    == NULL));
	EXPECT(v, VMEM_E_POLICY, "vmem_alloc", v, 0, Q,
	    CHECK(vmem_alloc(v, Q, VM_NEXTFIT | VM_BESTFIT | VM_FIRSTFIT)
	    == NULL));
	EXPECT(v, VMEM_E_POLICY, "vmem_xalloc", v, 0, Q,
	    CHECK(vmem_xalloc(v, Q, 0, 0, 0, NULL, NULL,
	    VM_NEXTFIT | VM_NOSLEEP) == NULL));
	EXPECT(v, VMEM_E_POLICY, "vmem_xalloc", v, 0, Q,
	    CHECK(vmem_xalloc(v, Q, 0, 0, 0, NULL, NULL,
	    VM_BESTFIT | VM_FIRSTFIT | VM_NOSLEEP) == NULL));
	/* Size 0 in vmem_xalloc (reported as BADARG or XALLOC_ARGS). */
	snap_before(v);
	CHECK(vmem_xalloc(v, 0, 0, 0, 0, NULL, NULL, VM_NOSLEEP) == NULL);
	CHECK_EQ(rec.count, 1);
	CHECK(rec.info.code == VMEM_E_BADARG ||
	    rec.info.code == VMEM_E_XALLOC_ARGS);
	CHECK(strcmp(rec.call, "vmem_xalloc") == 0);
	check_intact(__LINE__, v);
	vmem_free(v, TL_PTR(keep), 3 * Q);
	vmem_destroy(v);
}

struct xbad {
	size_t size, align, phase, nocross;
	uintptr_t minaddr, maxaddr;
	const char *why;
};

static void
test_bad_xalloc_constraints(void)
{
	static const struct xbad bad[] = {
		{ Q, 3 * Q, 0, 0, 0, 0, "align not a power of two" },
		{ Q, Q / 2, 0, 0, 0, 0, "align below the quantum" },
		{ Q, 4 * Q + 8, 0, 0, 0, 0, "align not a quantum multiple" },
		{ Q, 0, 0, 3 * Q, 0, 0, "nocross not a power of two" },
		{ Q, 0, 0, Q / 2, 0, 0, "nocross below the quantum" },
		{ Q, 4 * Q, 4 * Q, 0, 0, 0, "phase == align" },
		{ Q, 4 * Q, 8 * Q, 0, 0, 0, "phase > align" },
		{ Q, 4 * Q, Q + 1, 0, 0, 0, "phase not a quantum multiple" },
		{ Q, 0, Q, 0, 0, 0, "phase without align" },
		{ Q, 0, 0, 0, BASE + 8 * Q, BASE + 8 * Q, "min == max" },
		{ Q, 0, 0, 0, BASE + 9 * Q, BASE + 8 * Q, "min > max" },
		{ 8 * Q, 0, 0, 4 * Q, 0, 0, "size > nocross" },
		{ 3 * Q, 4 * Q, 2 * Q, 4 * Q, 0, 0, "phase+size > nocross" },
	};
	vmem_t *v = mk("xargs", BASE, 64 * Q);

	for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++) {
		const struct xbad *b = &bad[i];
		snap_before(v);
		CHECK(vmem_xalloc(v, b->size, b->align, b->phase, b->nocross,
		    TL_PTR(b->minaddr), TL_PTR(b->maxaddr), VM_NOSLEEP) ==
		    NULL);
		if (rec.count != 1 || rec.info.code != VMEM_E_XALLOC_ARGS ||
		    strcmp(rec.call, "vmem_xalloc") != 0 ||
		    rec.info.arena != v || strcmp(rec.name, "xargs") != 0) {
			fprintf(stderr, "xalloc '%s': %d reports, code %d "
			    "call %s\n", b->why, rec.count, rec.info.code,
			    rec.call);
			tu_failures++;
		}
		check_intact(__LINE__, v);
	}
	/* Valid edge cases are no error. */
	rec_reset();
	void *a = vmem_xalloc(v, 4 * Q, 4 * Q, 0, 4 * Q, NULL, NULL,
	    VM_NOSLEEP);
	CHECK(a != NULL);
	vmem_xfree(v, a, 4 * Q);
	a = vmem_xalloc(v, Q, 8 * Q, 7 * Q, 0, TL_PTR(BASE), TL_PTR(BASE +
	    8 * Q), VM_NOSLEEP);
	CHECK_EQ(TL_U(a), BASE + 7 * Q);
	vmem_xfree(v, a, Q);
	CHECK_EQ(rec.count, 0);
	vmem_destroy(v);
}

static void
test_bad_spans(void)
{
	vmem_t *v = mk("spans", BASE, 16 * Q);
	vmem_t *n;

	EXPECT(v, VMEM_E_OVERLAP, "vmem_add", v, BASE, 16 * Q,
	    CHECK(vmem_add(v, TL_PTR(BASE), 16 * Q, VM_SLEEP) == NULL));
	EXPECT(v, VMEM_E_OVERLAP, "vmem_add", v, BASE - 4 * Q, 5 * Q,
	    CHECK(vmem_add(v, TL_PTR(BASE - 4 * Q), 5 * Q, VM_SLEEP) ==
	    NULL));
	EXPECT(v, VMEM_E_OVERLAP, "vmem_add", v, BASE + 15 * Q, 4 * Q,
	    CHECK(vmem_add(v, TL_PTR(BASE + 15 * Q), 4 * Q, VM_SLEEP) ==
	    NULL));
	EXPECT(v, VMEM_E_OVERLAP, "vmem_add", v, BASE - Q, 32 * Q,
	    CHECK(vmem_add(v, TL_PTR(BASE - Q), 32 * Q, VM_SLEEP) == NULL));
	EXPECT(v, VMEM_E_OVERLAP, "vmem_add", v, BASE + 4 * Q, Q,
	    CHECK(vmem_add(v, TL_PTR(BASE + 4 * Q), Q, VM_SLEEP) == NULL));
	EXPECT(v, VMEM_E_ZEROADDR, "vmem_add", v, 0, 4 * Q,
	    CHECK(vmem_add(v, NULL, 4 * Q, VM_SLEEP) == NULL));
	EXPECT(v, VMEM_E_ZEROADDR, "vmem_add", v, UINTPTR_MAX - Q + 1, 2 * Q,
	    CHECK(vmem_add(v, TL_PTR(UINTPTR_MAX - Q + 1), 2 * Q, VM_SLEEP)
	    == NULL));
	/* Adjacent spans are fine. */
	rec_reset();
	CHECK(vmem_add(v, TL_PTR(BASE + 16 * Q), 4 * Q, VM_SLEEP) != NULL);
	CHECK(vmem_add(v, TL_PTR(BASE - 4 * Q), 4 * Q, VM_SLEEP) != NULL);
	CHECK_EQ(rec.count, 0);
	CHECK_ARENA(v);
	vmem_destroy(v);

	/* vmem_create: span with 0, wrapping span, bad quantum. */
	rec_reset();
	n = vmem_create("zero", NULL, 4 * Q, Q, NULL, NULL, NULL, 0, VM_SLEEP);
	CHECK(n == NULL);
	CHECK_EQ(rec.count, 1);
	CHECK_EQ(rec.info.code, VMEM_E_ZEROADDR);
	CHECK(strcmp(rec.call, "vmem_create") == 0);
	CHECK(strcmp(rec.name, "zero") == 0);
	CHECK_EQ(rec.info.size, 4 * Q);
	rec_reset();
	n = vmem_create("wrap", TL_PTR(UINTPTR_MAX - Q + 1), 4 * Q, Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	CHECK(n == NULL);
	CHECK_EQ(rec.info.code, VMEM_E_ZEROADDR);
	CHECK_EQ(rec.info.addr, UINTPTR_MAX - Q + 1);
	for (size_t q = 0; q < 3; q++) {
		static const size_t bq[] = { 0, 3 * Q, 4097 };
		rec_reset();
		n = vmem_create("badq", TL_PTR(BASE), 4 * Q, bq[q], NULL, NULL,
		    NULL, 0, VM_SLEEP);
		CHECK(n == NULL);
		CHECK_EQ(rec.count, 1);
		CHECK_EQ(rec.info.code, VMEM_E_BADARG);
		CHECK(strcmp(rec.call, "vmem_create") == 0);
	}
	rec_reset();
	n = vmem_xcreate("badx", TL_PTR(BASE), 4 * Q, 0, NULL, NULL, NULL, 0,
	    VM_SLEEP);
	CHECK(n == NULL);
	CHECK_EQ(rec.info.code, VMEM_E_BADARG);
	CHECK(strcmp(rec.call, "vmem_xcreate") == 0);
}

static void
test_panic(void)
{
	vmem_t *v = mk("panic", BASE, 16 * Q);
	void *a = vmem_alloc(v, 2 * Q, VM_NOSLEEP);
	uint64_t fails = tl_stats(v).fail;

	EXPECT(v, VMEM_E_PANIC, "vmem_alloc", v, 0, 32 * Q,
	    CHECK(vmem_alloc(v, 32 * Q, VM_NOSLEEP | VM_PANIC) == NULL));
	/* A VM_SLEEP request that can never be met fails: with VM_PANIC
	 * that is reported too. */
	snap_before(v);
	CHECK(vmem_xalloc(v, Q, 0, 0, 0, TL_PTR(BASE + 32 * Q), NULL,
	    VM_PANIC) == NULL);
	CHECK_EQ(rec.count, 1);
	CHECK_EQ(rec.info.code, VMEM_E_PANIC);
	CHECK(strcmp(rec.call, "vmem_xalloc") == 0);
	CHECK(rec.info.arena == v);
	check_intact(__LINE__, v);
	CHECK_EQ(tl_stats(v).fail, fails + 2);
	vmem_free(v, a, 2 * Q);
	vmem_destroy(v);
}

static void
test_leak_warning(void)
{
	vmem_t *v = mk("leaky", BASE, 16 * Q);
	vmem_t *ids;

	CHECK(vmem_alloc(v, 3 * Q, VM_NOSLEEP) != NULL);
	rec_reset();
	vmem_destroy(v);
	CHECK_EQ(rec.count, 1);
	CHECK_EQ(rec.info.code, VMEM_E_LEAK);
	CHECK_EQ(rec.info.warning, 1);
	CHECK(strcmp(rec.call, "vmem_destroy") == 0);
	CHECK(strcmp(rec.name, "leaky") == 0);
	CHECK(strstr(rec.detail, "leaked 12288 bytes") != NULL);

	ids = vmem_create("idleak", TL_PTR(1), 100, 1, NULL, NULL, NULL, 0,
	    VMC_IDENTIFIER | VM_SLEEP);
	REQUIRE(ids != NULL);
	CHECK(vmem_alloc(ids, 5, VM_NOSLEEP) != NULL);
	rec_reset();
	vmem_destroy(ids);
	CHECK_EQ(rec.info.code, VMEM_E_LEAK);
	CHECK(strstr(rec.detail, "leaked 5 identifiers") != NULL);

	/* A leaking child gives its span back to the parent anyway. */
	{
		vmem_t *p = mk("leakparent", BASE, 16 * Q);
		vmem_t *c = vmem_create("leakchild", NULL, 0, Q, vmem_alloc,
		    vmem_free, p, 0, VM_SLEEP);
		REQUIRE(c != NULL);
		CHECK(vmem_alloc(c, 2 * Q, VM_NOSLEEP) != NULL);
		rec_reset();
		vmem_destroy(c);
		CHECK_EQ(rec.info.code, VMEM_E_LEAK);
		CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
		CHECK_ARENA(p);
		rec_reset();
		vmem_destroy(p);
		CHECK_EQ(rec.count, 0);
	}
}

/* An importing arena reports misuse under its own name. */
static void
test_errors_in_child(void)
{
	vmem_t *p = mk("eparent", BASE, 64 * Q);
	vmem_t *c = vmem_create("echild", NULL, 0, Q, vmem_alloc, vmem_free, p,
	    0, VM_SLEEP);
	uintptr_t a;

	REQUIRE(c != NULL);
	a = TL_U(vmem_alloc(c, 2 * Q, VM_NOSLEEP));
	REQUIRE(a != 0);
	EXPECT(c, VMEM_E_WRONGSIZE, "vmem_free", c, a, Q,
	    vmem_free(c, TL_PTR(a), Q));
	EXPECT(c, VMEM_E_BADFREE, "vmem_free", c, a + Q, Q,
	    vmem_free(c, TL_PTR(a + Q), Q));
	EXPECT(c, VMEM_E_WRONGARENA, "vmem_free", c, BASE + 60 * Q, Q,
	    vmem_free(c, TL_PTR(BASE + 60 * Q), Q));
	/* Freeing the child's block to the parent: a wrong size there. */
	EXPECT(p, VMEM_E_BADFREE, "vmem_free", p, a + Q, Q,
	    vmem_free(p, TL_PTR(a + Q), Q));
	vmem_free(c, TL_PTR(a), 2 * Q);
	CHECK_EQ(vmem_size(p, VMEM_ALLOC), 0);
	vmem_destroy(c);
	vmem_destroy(p);
}

static void
test_strerror_and_format(void)
{
	vmem_error_info_t info;
	char buf[256];

	static const int codes[] = {
		KMEM_E_WRONGCACHE, KMEM_E_DOUBLEFREE, KMEM_E_WRONGSIZE,
		KMEM_E_REDZONE, KMEM_E_MODIFIED, KMEM_E_BADARG, KMEM_E_LEAK,
		KMEM_E_PANIC, KMEM_E_BUSY, SEGKMEM_E_BADCONFIG,
		SEGKMEM_E_BADRANGE, SEGKMEM_E_NOTKAS, SEGKMEM_E_UNRESV,
		SEGKMEM_E_TABLEFULL, SEGKMEM_E_BUSY, SEGKP_E_BADLEN,
		SEGKP_E_BADFLAGS, SEGKP_E_NOTOWNED, SEGKP_E_DOUBLE,
		SEGKP_E_BADCOOKIE, SEGKP_E_BADCONFIG, SEGKP_E_TOOMANY,
		SEGKP_E_BUSY, SEGKP_E_CORRUPT, KTHREAD_E_BADTHREAD,
		KTHREAD_E_BADCORO, KTHREAD_E_NOTREAL, VMEM_E_LAYOUT_BADARG,
		VMEM_E_LAYOUT_NOHEAP, VMEM_E_LAYOUT_NOSEGKP,
	};
	const int ncodes = (int)(sizeof (codes) / sizeof (codes[0]));

	for (int c = VMEM_E_NONE; c <= VMEM_E_MISUSE; c++)
		CHECK(vmem_strerror(c) != NULL && vmem_strerror(c)[0] != '\0');
	CHECK(strcmp(vmem_strerror(VMEM_E_DOUBLEFREE), "double free") == 0);
	/* Every subsystem's codes have names of their own, all different. */
	for (int i = 0; i < ncodes; i++) {
		const char *n = vmem_strerror(codes[i]);

		CHECK(n != NULL && strcmp(n, "kmem error") != 0 &&
		    strcmp(n, "segkp error") != 0 &&
		    strcmp(n, "kvsim error") != 0 &&
		    strcmp(n, "unknown error") != 0);
		for (int k = 0; k < i; k++)
			CHECK(strcmp(n, vmem_strerror(codes[k])) != 0);
	}
	CHECK(strcmp(vmem_strerror(KMEM_E_DOUBLEFREE), "buffer already free")
	    == 0);
	CHECK(strcmp(vmem_strerror(VMEM_E_SEGKP + 15), "segkp error") == 0);
	memset(&info, 0, sizeof (info));
	info.code = VMEM_E_BADFREE;
	info.call = "vmem_free";
	info.name = "fmt";
	info.addr = 0x1234000;
	info.size = 8192;
	CHECK(vmem_format_error(&info, buf, sizeof (buf)) > 0);
	CHECK(strstr(buf, "vmem_free") && strstr(buf, "fmt") &&
	    strstr(buf, "0x1234000") && strstr(buf, "8192"));
	CHECK(strchr(buf, '\n') == NULL);
}

/* ---- the default handler, in a child process ---- */

static int
run_forked(void (*fn)(void), char *out, size_t outlen, int *status)
{
	int fd[2];
	pid_t pid;
	size_t n = 0;
	ssize_t k;

	REQUIRE(pipe(fd) == 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		close(fd[0]);
		dup2(fd[1], STDERR_FILENO);
		close(fd[1]);
		vmem_set_error_handler(NULL, NULL);
		fn();
		_exit(0);
	}
	close(fd[1]);
	while (n < outlen - 1 && (k = read(fd[0], out + n, outlen - 1 - n)) >
	    0)
		n += (size_t)k;
	out[n] = '\0';
	close(fd[0]);
	REQUIRE(waitpid(pid, status, 0) == pid);
	return (int)n;
}

static void
child_double_free(void)
{
	vmem_t *v = mk("deflt", BASE, 16 * Q);
	void *a = vmem_alloc(v, 2 * Q, VM_NOSLEEP);

	vmem_free(v, a, 2 * Q);
	vmem_free(v, a, 2 * Q); /* aborts */
	_exit(3);
}

static void
child_leak(void)
{
	vmem_t *v = mk("defleak", BASE, 16 * Q);

	(void)vmem_alloc(v, Q, VM_NOSLEEP);
	vmem_destroy(v); /* warns and goes on */
	_exit(7);
}

static void
test_default_handler_aborts(void)
{
	char out[4096], addr[32];
	int status, n;

	n = run_forked(child_double_free, out, sizeof (out), &status);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
	snprintf(addr, sizeof (addr), "%#lx", BASE);
	CHECK(n > 0 && out[n - 1] == '\n');
	CHECK(strchr(out, '\n') == out + n - 1); /* exactly one line */
	CHECK(strstr(out, "vmem_free") != NULL);
	CHECK(strstr(out, "deflt") != NULL);
	CHECK(strstr(out, addr) != NULL);
	CHECK(strstr(out, "8192") != NULL);
	if (tu_failures)
		fprintf(stderr, "default handler wrote: %s", out);

	n = run_forked(child_leak, out, sizeof (out), &status);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
	CHECK(n > 0 && strchr(out, '\n') == out + n - 1);
	CHECK(strstr(out, "vmem_destroy") != NULL);
	CHECK(strstr(out, "defleak") != NULL);
	CHECK(strstr(out, "leaked 4096 bytes") != NULL);
}

/* An import function that makes its spans import_extra bytes larger. */
static size_t import_extra;

static void *
ximport_extra(vmem_t *src, size_t *sizep, size_t align, int flags)
{
	(void)align;
	*sizep += import_extra;
	return vmem_alloc(src, *sizep, flags);
}

/*
 * An import function that breaks its contract is reported, and the call
 * fails there: it does not go on to reap quantum caches and retry (which
 * used to succeed after the report), nor wait and import again (a VM_SLEEP
 * call used to report every 100 ms, forever).
 */
static void
test_broken_import_fails_the_call(void)
{
	vmem_t *src = vmem_create("bi_src", TL_PTR(BASE), 1024 * Q, 64, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	vmem_t *v = vmem_xcreate("bi", NULL, 0, Q, ximport_extra, vmem_free,
	    src, 2 * Q, VM_SLEEP);
	vmem_t *w = vmem_xcreate("bi_sleep", NULL, 0, Q, ximport_extra,
	    vmem_free, src, 0, VM_SLEEP);
	void *a, *b, *c;

	REQUIRE(src != NULL && v != NULL && w != NULL);
	/*
	 * One span of 24 quanta: a quantum cache's 8-quantum slab and c fill
	 * it exactly. VMEM_FREE counts the slab's idle buffers too.
	 */
	import_extra = 16 * Q;
	a = vmem_alloc(v, Q, VM_NOSLEEP);
	REQUIRE(a != NULL);
	c = vmem_alloc(v, 16 * Q, VM_NOSLEEP);
	REQUIRE(c != NULL);
	CHECK_EQ(vmem_size(v, VMEM_SPAN), 24 * Q);
	CHECK_EQ(vmem_size(v, VMEM_FREE), 7 * Q);
	vmem_free(v, a, Q);     /* idle in the cache: a reap would free it */

	import_extra = 64;      /* not whole quanta of v */
	rec_reset();
	b = vmem_xalloc(v, 4 * Q, 0, 0, 0, NULL, NULL, VM_NOSLEEP);
	CHECK(b == NULL);
	CHECK_EQ(rec.count, 1);
	CHECK_EQ(rec.info.code, VMEM_E_MISUSE);
	CHECK(strcmp(rec.call, "vmem_import") == 0);
	CHECK_ARENA(v);
	CHECK_ARENA(src);

	rec_reset();
	b = vmem_alloc(w, 4 * Q, VM_SLEEP);
	CHECK(b == NULL);
	CHECK_EQ(rec.count, 1);
	CHECK_EQ(vmem_size(w, VMEM_SPAN), 0);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), vmem_size(v, VMEM_SPAN));

	/* The same through a quantum cache: its slab import is the one. */
	vmem_t *qc = vmem_xcreate("bi_qc", NULL, 0, Q, ximport_extra,
	    vmem_free, src, 4 * Q, VM_SLEEP);
	REQUIRE(qc != NULL);
	rec_reset();
	b = vmem_alloc(qc, Q, VM_SLEEP);
	CHECK(b == NULL);
	CHECK_EQ(rec.count, 1);
	vmem_destroy(qc);

	/* Mended, both work again. */
	import_extra = 0;
	rec_reset();
	b = vmem_xalloc(v, 4 * Q, 0, 0, 0, NULL, NULL, VM_NOSLEEP);
	CHECK(b != NULL);
	if (b != NULL)
		vmem_xfree(v, b, 4 * Q);
	b = vmem_alloc(w, 4 * Q, VM_SLEEP);
	CHECK(b != NULL);
	if (b != NULL)
		vmem_free(w, b, 4 * Q);
	CHECK_EQ(rec.count, 0);
	vmem_free(v, c, 16 * Q);
	vmem_destroy(w);
	vmem_destroy(v);
	CHECK_EQ(vmem_size(src, VMEM_ALLOC), 0);
	vmem_destroy(src);
}

static int
fail_slabs(const char *site, void *arg)
{
	(void)arg;
	return strcmp(site, "slab") == 0;
}

/*
 * A quantum cache that cannot make a slab although its arena has room
 * (its own bookkeeping memory ran out): a VM_SLEEP request fails instead
 * of trying for ever.
 */
static void
test_qcache_sleep_without_slabs(void)
{
	vmem_t *v = vmem_create("noslab", TL_PTR(BASE), 64 * Q, Q, NULL, NULL,
	    NULL, 2 * Q, VM_SLEEP);
	vmem_stats_t st;

	REQUIRE(v != NULL);
	rec_reset();
	vmem_set_fault_hook(fail_slabs, NULL);
	CHECK(vmem_alloc(v, Q, VM_SLEEP) == NULL);
	vmem_set_fault_hook(NULL, NULL);
	CHECK_EQ(rec.count, 0);
	vmem_get_stats(v, &st);
	CHECK_EQ(st.fail, 1);
	void *p = vmem_alloc(v, Q, VM_SLEEP);
	CHECK(p != NULL);
	if (p != NULL)
		vmem_free(v, p, Q);
	CHECK_ARENA(v);
	vmem_destroy(v);
}

/* A handler that counts, then passes the report on to the one it
 * replaced, found through vmem_get_error_handler. */
static vmem_error_handler_t *chained_fn;
static void *chained_arg;
static int chain_count;

static void
counting_chain(const vmem_error_info_t *info, void *arg)
{
	chain_count += *(int *)arg;
	chained_fn(info, chained_arg);
}

static void
test_handler_chaining(void)
{
	vmem_error_handler_t *fn;
	void *arg;
	int weight = 3;
	vmem_t *v = vmem_create("chain", (void *)0x100000, 16 * 4096, 4096,
	    NULL, NULL, NULL, 0, VM_SLEEP);

	REQUIRE(v != NULL);
	vmem_get_error_handler(&fn, &arg);
	CHECK(fn == rec_handler && arg == NULL);
	chained_fn = fn;
	chained_arg = arg;
	CHECK(vmem_set_error_handler(counting_chain, &weight) == rec_handler);
	vmem_get_error_handler(&fn, &arg);
	CHECK(fn == counting_chain && arg == &weight);
	vmem_get_error_handler(NULL, NULL);
	rec_reset();
	vmem_free(v, (void *)0x100000, 4096);   /* never allocated */
	CHECK_EQ(chain_count, 3);
	CHECK_EQ(rec.count, 1);                 /* the old handler saw it */
	rec_reset();
	vmem_set_error_handler(chained_fn, chained_arg);
	vmem_destroy(v);
}

int
main(void)
{
	vmem_set_error_handler(rec_handler, NULL);
	RUN(test_handler_chaining);
	RUN(test_bad_frees);
	RUN(test_bad_alloc_args);
	RUN(test_bad_xalloc_constraints);
	RUN(test_bad_spans);
	RUN(test_broken_import_fails_the_call);
	RUN(test_qcache_sleep_without_slabs);
	RUN(test_panic);
	RUN(test_leak_warning);
	RUN(test_errors_in_child);
	RUN(test_strerror_and_format);
	RUN(test_default_handler_aborts);
	vmem_set_error_handler(NULL, NULL);
	tl_snap_free(&before);
	tl_snap_free(&after);
	return tu_finish();
}
