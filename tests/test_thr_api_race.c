/*
 * The public calls no other threaded test makes, raced on two or three
 * threads for ThreadSanitizer and helgrind:
 *
 *  - vmem_walk (locked, and VMEM_REENTRANT with a callback that allocates
 *    and frees in the arena), vmem_contains and vmem_add while two threads
 *    allocate: every locked walk sees spans tiled exactly by quantum-
 *    multiple segments, every snapshot's allocated segments are ordered,
 *    disjoint, inside the spans and cover what the walker held, and no
 *    quantum is ever handed to two owners;
 *  - vmem_create / vmem_xcreate / vmem_destroy of short-lived arenas
 *    (plain, with quantum caches, importing through functions that find
 *    their context with vmem_get_private) while another thread lists the
 *    arenas (vmem_foreach_arena, vmem_dump_arenas, the JSON dumps and the
 *    stdio printers) and a third allocates in a long-lived arena;
 *  - private kmem heaps created, used (kmem_heap_zalloc), reaped and
 *    destroyed while another thread uses the default heap and a third
 *    dumps the cache table (text, JSON, stdio);
 *  - kas fault classifiers registered and unregistered and fixed regions
 *    registered while two threads classify (kas_classify, kas_fault), on a
 *    simulated and on a real address space; and a classifier must not be
 *    called after kas_unregister_fault_classifier has returned;
 *  - segkp stack caches on two segments: one thread gets from and releases
 *    to a long-lived cache and releases stacks handed over from caches that
 *    another thread creates, frees (segkp_cache_free) and destroys, while
 *    a third reaps and checks; segkp_classify, segkp_describe and
 *    segkp_page_held on the stacks a thread holds.
 *
 * Every sub-test ends with its arenas, caches, heaps and segments empty
 * and destroyed, and no report through the error handler. Contracts kept:
 * foreach and dump callbacks create and destroy nothing; private pointers
 * are set while no other thread reads them; a segkp cache's cookie is not
 * used once its destroy may have begun; fixed regions cannot be removed,
 * so they only grow.
 *
 * A sub-test that deadlocks fails after 20 s (300 s in slow builds) with
 * its name; the arena churn, which has deadlocked, runs last so the others
 * report first. Arguments name the sub-tests to run (default: all).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vmem/kmem.h>
#include <vmem/segkmem.h>
#include <vmem/segkp.h>

#include "hg.h"
#include "json_check.h"
#include "testutil.h"

#define Q   ((size_t)4096)
#define KIB ((size_t)1024)
#define MIB (KIB * KIB)

static int
scaled(int normal, int slow)
{
	return tu_slow_build() ? slow : normal;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Workers count themselves out on this; the watcher polls it. It orders
 * nothing (results are read after pthread_join), so helgrind, which takes
 * atomics for plain accesses, is told it races on purpose.
 */
static void
running_init(atomic_int *running, int n)
{
	atomic_init(running, n);
	HG_BENIGN(running, "worker count, polled; results read after join");
}

/*
 * Where the dump calls write: out() runs with the arena or cache list
 * lock held, so it only copies into memory.
 */
typedef struct sink {
	char *buf;
	size_t len, cap;
	size_t last;  /* offset of the last line */
	int lines;
	int bad;      /* lines not ending in '\n' */
} sink_t;

static void
sink_out(void *arg, const char *line)
{
	sink_t *s = arg;
	size_t n = strlen(line);

	if (n == 0 || line[n - 1] != '\n')
		s->bad++;
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap != 0 ? s->cap : 4096;

		while (cap < s->len + n + 1)
			cap *= 2;
		s->buf = realloc(s->buf, cap);
		REQUIRE(s->buf != NULL);
		s->cap = cap;
	}
	memcpy(s->buf + s->len, line, n + 1);
	s->last = s->len;
	s->len += n;
	s->lines++;
}

static void
sink_reset(sink_t *s)
{
	if (s->buf == NULL) {
		s->buf = malloc(4096);
		REQUIRE(s->buf != NULL);
		s->cap = 4096;
	}
	s->buf[0] = '\0';
	s->len = s->last = 0;
	s->lines = s->bad = 0;
}

/* vmem_print_stats_json through a memory stream: the document parses. */
static int
stdio_json_ok(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int ok;

	REQUIRE(f != NULL);
	vmem_print_stats_json(f);
	REQUIRE(fclose(f) == 0);
	ok = text != NULL && json_valid(text) &&
	    strstr(text, "\"caches\":[") != NULL;
	free(text);
	return ok;
}

/* ------------------------------------------------------------------ */
/* vmem_walk, vmem_contains and vmem_add under allocation. */

#define W_BASE   ((uintptr_t)0x10000000)
#define W_SPAN   (64 * Q)
#define W_STRIDE (128 * Q)  /* a gap above every span */
#define W_NSPAN  12
#define W_NQ     (W_NSPAN * W_STRIDE / Q)
#define W_HOLD   16
#define W_MAXSEG 1024

/* The owner of every quantum (0: nobody): catches a double hand-out. */
static atomic_uchar w_owner[W_NQ];

typedef struct w_held {
	uintptr_t a;
	size_t size;
	int x;  /* from vmem_xalloc */
} w_held_t;

typedef struct w_thr {
	vmem_t *arena;
	unsigned char id;
	int iters;
	atomic_int *running;
	tu_rng_t rng;
	w_held_t held[W_HOLD];
	uint64_t allocs, fails, walks, locked_walks, segs;
	int bad;
	atomic_int progress;  /* iterations done, for pacing vmem_add */
	atomic_int *added;    /* spans in the arena (the main thread's) */
	/* The last snapshot (reentrant walk), in walk order. */
	uintptr_t seg_a[W_MAXSEG];
	size_t seg_n[W_MAXSEG];
	size_t nseg;
} w_thr_t;

static w_thr_t w_thr[2];

/* Take (or give back) the quanta of [a, a + size) for owner id. */
static int
w_own(uintptr_t a, size_t size, unsigned char id, int take)
{
	int bad = 0;

	if (a < W_BASE || a - W_BASE > W_NQ * Q - size || size % Q != 0)
		return 1;
	for (size_t i = (a - W_BASE) / Q; i < (a - W_BASE + size) / Q; i++) {
		unsigned char was = atomic_exchange(&w_owner[i],
		    take ? id : 0);

		if (was != (take ? 0 : id))
			bad++;
	}
	return bad;
}

static void
w_alloc(w_thr_t *t, w_held_t *h)
{
	size_t size;
	void *p;

	if (tu_range(&t->rng, 0, 3) == 0) {
		size = 4 * Q;
		p = vmem_xalloc(t->arena, size, 4 * Q, 0, 0, NULL, NULL,
		    VM_NOSLEEP);
		h->x = 1;
	} else {
		/* 1 and 2 quanta come from the quantum caches. */
		size = Q * tu_range(&t->rng, 1, 3);
		p = vmem_alloc(t->arena, size, VM_NOSLEEP);
		h->x = 0;
	}
	if (p == NULL) {
		t->fails++;
		return;
	}
	t->allocs++;
	h->a = (uintptr_t)p;
	h->size = size;
	t->bad += w_own(h->a, size, t->id, 1);
	if (h->x && (h->a & (4 * Q - 1)) != 0)
		t->bad++;
	if (!vmem_contains(t->arena, p, size))
		t->bad++;
}

static void
w_free(w_thr_t *t, w_held_t *h)
{
	if (!vmem_contains(t->arena, (void *)h->a, h->size))
		t->bad++;
	/* Given back before the free: the next owner is ordered after it
	 * by the arena's (or the cache's) lock. */
	t->bad += w_own(h->a, h->size, t->id, 0);
	if (h->x)
		vmem_xfree(t->arena, (void *)h->a, h->size);
	else
		vmem_free(t->arena, (void *)h->a, h->size);
	h->a = 0;
}

static void
w_step(w_thr_t *t)
{
	w_held_t *h = &t->held[tu_range(&t->rng, 0, W_HOLD - 1)];

	if (h->a == 0)
		w_alloc(t, h);
	else
		w_free(t, h);
}

/*
 * A locked walk of spans and segments runs with the arena lock held, so
 * its callback only looks. The address list is each span followed by the
 * segments that tile it, so an item that starts when the previous span is
 * fully tiled is the next span. (The callback is not told the type.)
 */
typedef struct w_tile {
	uintptr_t cur, end;
	size_t spans;
	int bad;
} w_tile_t;

static void
w_tile_cb(void *arg, void *start, size_t size)
{
	w_tile_t *t = arg;
	uintptr_t a = (uintptr_t)start;

	if (t->cur == t->end) {
		if (a < W_BASE || (a - W_BASE) % W_STRIDE != 0 ||
		    (a - W_BASE) / W_STRIDE >= W_NSPAN || size != W_SPAN ||
		    (t->spans > 0 && a <= t->end))
			t->bad++;
		t->cur = a;
		t->end = a + size;
		t->spans++;
		return;
	}
	if (a != t->cur || size == 0 || size % Q != 0 || size > t->end - a) {
		t->bad++;
		t->cur = t->end;
		return;
	}
	t->cur = a + size;
}

typedef struct w_spans {
	uintptr_t a[W_NSPAN];
	size_t n[W_NSPAN];
	size_t count;
} w_spans_t;

static void
w_span_cb(void *arg, void *start, size_t size)
{
	w_spans_t *sp = arg;

	if (sp->count < W_NSPAN) {
		sp->a[sp->count] = (uintptr_t)start;
		sp->n[sp->count] = size;
	}
	sp->count++;
}

/*
 * The reentrant walk calls back without the arena lock: check each
 * segment against the arena now (spans are never removed from this arena,
 * which imports nothing, so the segment is still inside one) and allocate
 * and free in the same arena, as the contract allows.
 */
static void
w_snap_cb(void *arg, void *start, size_t size)
{
	w_thr_t *t = arg;

	if (t->nseg < W_MAXSEG) {
		t->seg_a[t->nseg] = (uintptr_t)start;
		t->seg_n[t->nseg] = size;
	}
	t->nseg++;
	if (size == 0 || size % Q != 0 ||
	    !vmem_contains(t->arena, start, size))
		t->bad++;
	if ((t->nseg & 3) == 0)
		w_step(t);
}

static int
w_covered(const w_thr_t *t, uintptr_t a, size_t size)
{
	for (size_t i = 0; i < t->nseg && i < W_MAXSEG; i++)
		if (a >= t->seg_a[i] && a - t->seg_a[i] <= t->seg_n[i] - size)
			return 1;
	return 0;
}

/*
 * One snapshot walk of the allocated segments. The snapshot is taken in
 * one lock hold, so it is consistent: in address order (spans arrive in
 * address order here), disjoint, inside the spans, and covering every
 * allocation this thread held when it began (the callback may free some
 * of them, but only after the snapshot).
 */
static void
w_snapshot(w_thr_t *t)
{
	w_held_t before[W_HOLD];
	w_spans_t sp;

	memcpy(before, t->held, sizeof (before));
	t->nseg = 0;
	vmem_walk(t->arena, VMEM_ALLOC | VMEM_REENTRANT, w_snap_cb, t);
	if (t->nseg > W_MAXSEG) {
		t->bad++;
		return;
	}
	for (size_t i = 0; i + 1 < t->nseg; i++)
		if (t->seg_a[i] + t->seg_n[i] > t->seg_a[i + 1])
			t->bad++;
	memset(&sp, 0, sizeof (sp));
	vmem_walk(t->arena, VMEM_SPAN, w_span_cb, &sp);
	if (sp.count > W_NSPAN || sp.count < 2)
		t->bad++;
	for (size_t i = 0; i < t->nseg; i++) {
		int in = 0;

		for (size_t k = 0; k < sp.count && k < W_NSPAN; k++)
			if (t->seg_a[i] >= sp.a[k] &&
			    t->seg_a[i] - sp.a[k] <= sp.n[k] - t->seg_n[i])
				in = 1;
		if (!in)
			t->bad++;
	}
	for (int i = 0; i < W_HOLD; i++)
		if (before[i].a != 0 &&
		    !w_covered(t, before[i].a, before[i].size))
			t->bad++;
	t->walks++;
	t->segs += t->nseg;
}

static void *
w_churner(void *arg)
{
	w_thr_t *t = arg;

	for (int it = 0; it < t->iters; it++)
		w_step(t);
	atomic_fetch_sub(t->running, 1);
	return NULL;
}

static void *
w_walker(void *arg)
{
	w_thr_t *t = arg;

	int step = t->iters / W_NSPAN;

	for (int it = 0; it < t->iters; it++) {
		atomic_store(&t->progress, it);
		/*
		 * At each twelfth of the run, give the main thread its turn to
		 * add a span (bounded): the walks must meet vmem_add however
		 * the threads are scheduled.
		 */
		if (it > 0 && it % step == 0) {
			uint64_t t0 = now_ms();
			int want = it / step + 2;

			while (atomic_load(t->added) < (want < W_NSPAN ? want :
			    W_NSPAN) && now_ms() - t0 < 2000)
				sched_yield();
		}
		w_step(t);
		if (it % 16 == 0) {
			w_tile_t tile = { 0, 0, 0, 0 };

			vmem_walk(t->arena, VMEM_SPAN | VMEM_ALLOC | VMEM_FREE,
			    w_tile_cb, &tile);
			if (tile.bad != 0 || tile.cur != tile.end ||
			    tile.spans < 2)
				t->bad++;
			t->locked_walks++;
		}
		if (it % 64 == 32)
			w_snapshot(t);
	}
	atomic_fetch_sub(t->running, 1);
	return NULL;
}

static void
test_walk_add_contains(void)
{
	vmem_t *v;
	pthread_t pt[2];
	atomic_int running, added;
	size_t nspans = 2, held = 0;
	int round = 0, bad = 0;

	tu_record_errors();
	for (size_t i = 0; i < W_NQ; i++)
		atomic_init(&w_owner[i], 0);
	v = vmem_create("race_walk", (void *)W_BASE, W_SPAN, Q, NULL, NULL,
	    NULL, 2 * Q, VM_SLEEP);
	REQUIRE(v != NULL);
	REQUIRE(vmem_add(v, (void *)(W_BASE + W_STRIDE), W_SPAN, VM_SLEEP) ==
	    (void *)(W_BASE + W_STRIDE));
	running_init(&running, 2);
	atomic_init(&added, 2);
	HG_BENIGN(&added, "span count, orders no memory");
	memset(w_thr, 0, sizeof (w_thr));
	for (int i = 0; i < 2; i++) {
		w_thr[i].arena = v;
		w_thr[i].id = (unsigned char)(i + 1);
		w_thr[i].iters = scaled(30000, 6000);
		w_thr[i].running = &running;
		tu_seed(&w_thr[i].rng, 0xa11c + 31 * (uint64_t)i);
		atomic_init(&w_thr[i].progress, 0);
		w_thr[i].added = &added;
		HG_BENIGN(&w_thr[i].progress, "progress, orders no memory");
	}
	REQUIRE(pthread_create(&pt[0], NULL, w_churner, &w_thr[0]) == 0);
	REQUIRE(pthread_create(&pt[1], NULL, w_walker, &w_thr[1]) == 0);
	/*
	 * This thread adds the spans, spread over the walker's run (paced by
	 * its progress, whatever the scheduler does), and checks sizes.
	 */
	while (atomic_load(&running) > 0) {
		size_t done = (size_t)atomic_load(&w_thr[1].progress);

		round++;
		if (nspans < W_NSPAN && done >= (nspans - 1) *
		    (size_t)(w_thr[1].iters / W_NSPAN)) {
			uintptr_t s = W_BASE + nspans * W_STRIDE;

			if (vmem_add(v, (void *)s, W_SPAN, VM_NOSLEEP) !=
			    (void *)s)
				bad++;
			nspans++;
			/* Inside; not in the gaps around it, nor across. */
			if (!vmem_contains(v, (void *)s, W_SPAN) ||
			    !vmem_contains(v, (void *)(s + W_SPAN - Q), Q) ||
			    vmem_contains(v, (void *)(s + W_SPAN), Q) ||
			    vmem_contains(v, (void *)(s + W_SPAN - Q), 2 * Q) ||
			    vmem_contains(v, (void *)(s - Q), Q))
				bad++;
			atomic_store(&added, (int)nspans);
		}
		/* Only this thread changes the spans: sizes are exact. */
		if (vmem_size(v, VMEM_SPAN) != nspans * W_SPAN ||
		    vmem_size(v, VMEM_ALLOC | VMEM_FREE) != nspans * W_SPAN ||
		    vmem_size(v, VMEM_ALLOC) > nspans * W_SPAN)
			bad++;
		if (round % 16 == 0 && vmem_check(v) != 0)
			bad++;
		sched_yield();
	}
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_join(pt[i], NULL) == 0);
	CHECK_EQ(bad, 0);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(w_thr[i].bad, 0);
		CHECK(w_thr[i].allocs > 0);
		for (int k = 0; k < W_HOLD; k++)
			if (w_thr[i].held[k].a != 0)
				held += w_thr[i].held[k].size;
	}
	CHECK(w_thr[1].walks > 0 && w_thr[1].locked_walks > 0 &&
	    w_thr[1].segs > 0);
	CHECK(nspans > 2);
	/* The quantum caches' idle slabs do not count as allocated. */
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), held);
	CHECK_ARENA(v);
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < W_HOLD; k++)
			if (w_thr[i].held[k].a != 0)
				w_free(&w_thr[i], &w_thr[i].held[k]);
	for (int i = 0; i < 2; i++)
		CHECK_EQ(w_thr[i].bad, 0);
	for (size_t i = 0; i < W_NQ; i++)
		CHECK_EQ(atomic_load(&w_owner[i]), 0);
	CHECK_EQ(vmem_size(v, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_size(v, VMEM_SPAN), nspans * W_SPAN);
	CHECK_ARENA(v);
	vmem_destroy(v);
	CHECK_EQ(tu_err.count, 0);
	tu_default_errors();
}

/* ------------------------------------------------------------------ */
/* Arenas created and destroyed while another thread lists them. */

#define L_PARENT_BASE ((uintptr_t)0x40000000)
#define L_KEEP_BASE   ((uintptr_t)0x60000000)
#define L_TMP_BASE    ((uintptr_t)0x80000000)
#define L_KEEP_HOLD   32

/* The parent arena's private pointer: import functions find it there. */
static int l_parent_ctx;
static atomic_int l_import_bad;

static void *
l_import(vmem_t *src, size_t size, int vmflag)
{
	if (vmem_get_private(src) != &l_parent_ctx)
		atomic_fetch_add(&l_import_bad, 1);
	return vmem_alloc(src, size, vmflag);
}

static void *
l_ximport(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	(void)align;
	if (vmem_get_private(src) != &l_parent_ctx)
		atomic_fetch_add(&l_import_bad, 1);
	return vmem_alloc(src, *sizep, vmflag);
}

static void
l_release(vmem_t *src, void *addr, size_t size)
{
	vmem_free(src, addr, size);
}

typedef struct l_thr {
	vmem_t *parent, *keep;
	int iters;
	atomic_int *running;
	tu_rng_t rng;
	int bad, made;
	uint64_t lists;
	sink_t sink;
	FILE *devnull;
} l_thr_t;

/* Short-lived arenas of four kinds, one at a time. */
static void *
l_creator(void *arg)
{
	l_thr_t *c = arg;

	for (int i = 0; i < c->iters; i++) {
		char name[VMEM_NAMELEN];
		uintptr_t got[8];
		size_t sz[8], sum = 0;
		vmem_t *v, *src = NULL;
		void *priv = &got[i % 8];

		(void)snprintf(name, sizeof (name), "race_tmp%d", i);
		switch (i % 4) {
		case 0:
			v = vmem_create(name, (void *)L_TMP_BASE, 256 * Q, Q,
			    NULL, NULL, NULL, 0, VM_SLEEP);
			break;
		case 1:
			/* Four 16-quantum slabs, one per cache, and room. */
			v = vmem_create(name, (void *)L_TMP_BASE, 256 * Q, Q,
			    NULL, NULL, NULL, 4 * Q, VM_SLEEP);
			break;
		case 2:
			src = c->parent;
			v = vmem_create(name, NULL, 0, Q, l_import, l_release,
			    src, 0, VM_SLEEP);
			break;
		default:
			src = c->parent;
			v = vmem_xcreate(name, NULL, 0, Q, l_ximport,
			    l_release, src, 2 * Q, VM_SLEEP);
			break;
		}
		if (v == NULL) {
			c->bad++;
			continue;
		}
		c->made++;
		/* A plain store, and the header promises nothing more: no
		 * other thread reads this arena's private pointer. */
		vmem_set_private(v, priv);
		if (vmem_get_private(v) != priv ||
		    strcmp(vmem_name(v), name) != 0 || vmem_quantum(v) != Q ||
		    vmem_source(v) != src)
			c->bad++;
		for (int k = 0; k < 8; k++) {
			sz[k] = Q * tu_range(&c->rng, 1, 6);
			got[k] = (uintptr_t)vmem_alloc(v, sz[k], VM_NOSLEEP);
			if (got[k] == 0 ||
			    !vmem_contains(v, (void *)got[k], sz[k]))
				c->bad++;
			else
				sum += sz[k];
		}
		if (vmem_size(v, VMEM_ALLOC) != sum)
			c->bad++;
		for (int k = 0; k < 8; k++)
			if (got[k] != 0)
				vmem_free(v, (void *)got[k], sz[k]);
		if (vmem_size(v, VMEM_ALLOC) != 0 || vmem_check(v) != 0)
			c->bad++;
		vmem_destroy(v);
	}
	atomic_fetch_sub(c->running, 1);
	return NULL;
}

typedef struct l_seen {
	vmem_t *parent, *keep;
	int parent_seen, keep_seen, tmp, bad;
} l_seen_t;

/*
 * What the dumps do for every arena they list, plus some checks. Called
 * with the arena list locked: it creates and destroys nothing, as
 * vmem_foreach_arena requires. An arena on the list may be in the middle
 * of vmem_destroy on the creator's thread; its statistics (which ask its
 * quantum caches for their counts) must still be those of a live arena.
 */
static void
l_seen_cb(vmem_t *v, void *arg)
{
	l_seen_t *s = arg;
	const char *name = vmem_name(v);
	vmem_stats_t st;

	if (v == s->parent)
		s->parent_seen++;
	if (v == s->keep)
		s->keep_seen++;
	vmem_get_stats(v, &st);
	if (strcmp(st.name, name) != 0 || st.quantum != vmem_quantum(v) ||
	    st.mem_inuse > st.mem_total || st.mem_import > st.mem_total)
		s->bad++;
	/* The creator makes 8 allocations in each: its caches served no
	 * more (more is another cache's count, read through a stale
	 * pointer). */
	if (strncmp(name, "race_tmp", 8) == 0) {
		s->tmp++;
		if (st.qcache_alloc > 8 || st.qcache_free > 8)
			s->bad++;
	}
}

static void *
l_lister(void *arg)
{
	l_thr_t *l = arg;
	sink_t *s = &l->sink;

	for (int it = 0; atomic_load(l->running) > 0 || it < 10; it++) {
		l_seen_t seen = { l->parent, l->keep, 0, 0, 0, 0 };

		sink_reset(s);
		switch (it % 5) {
		case 0:
			vmem_foreach_arena(l_seen_cb, &seen);
			/* The creator holds one short-lived arena at most. */
			if (seen.bad != 0 || seen.parent_seen != 1 ||
			    seen.keep_seen != 1 || seen.tmp > 1)
				l->bad++;
			break;
		case 1:
			vmem_dump_arenas(sink_out, s);
			if (s->bad != 0 || s->lines < 3 ||
			    strncmp(s->buf, "ARENA", 5) != 0 ||
			    strstr(s->buf, "race_parent") == NULL ||
			    strstr(s->buf, "race_keep") == NULL)
				l->bad++;
			break;
		case 2:
			vmem_dump_arenas_json(sink_out, s);
			if (s->bad != 0 || !json_valid(s->buf) ||
			    strstr(s->buf, "{\"name\":\"race_keep\",") == NULL)
				l->bad++;
			break;
		case 3:
			vmem_dump_stats_json(sink_out, s);
			if (s->bad != 0 || !json_valid(s->buf) ||
			    strstr(s->buf, "\"caches\":[") == NULL)
				l->bad++;
			break;
		default:
			vmem_print_arenas(l->devnull);
			if (!stdio_json_ok())
				l->bad++;
			break;
		}
		l->lists++;
	}
	return NULL;
}

static void
test_arena_list_churn(void)
{
	vmem_t *parent, *keep;
	l_thr_t c, l;
	pthread_t pc, pl;
	atomic_int running;
	uintptr_t held[L_KEEP_HOLD];
	size_t hsz[L_KEEP_HOLD];
	l_seen_t seen;
	tu_rng_t r;
	int round = 0, bad = 0;

	tu_record_errors();
	atomic_init(&l_import_bad, 0);
	parent = vmem_create("race_parent", (void *)L_PARENT_BASE, 1024 * Q, Q,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	keep = vmem_create("race_keep", (void *)L_KEEP_BASE, 256 * Q, Q, NULL,
	    NULL, NULL, 4 * Q, VM_SLEEP);
	REQUIRE(parent != NULL && keep != NULL);
	/* Set before the threads start: nothing sets it while they run. */
	vmem_set_private(parent, &l_parent_ctx);
	running_init(&running, 1);
	memset(&c, 0, sizeof (c));
	c.parent = parent;
	c.keep = keep;
	c.iters = scaled(600, 120);
	c.running = &running;
	tu_seed(&c.rng, 0x11c);
	l = c;
	l.devnull = fopen("/dev/null", "w");
	REQUIRE(l.devnull != NULL);
	REQUIRE(pthread_create(&pc, NULL, l_creator, &c) == 0);
	REQUIRE(pthread_create(&pl, NULL, l_lister, &l) == 0);
	/* Meanwhile the listed statistics move: allocations in keep. */
	memset(held, 0, sizeof (held));
	tu_seed(&r, 0x4ee9);
	while (atomic_load(&running) > 0) {
		int k = (int)tu_range(&r, 0, L_KEEP_HOLD - 1);

		if (held[k] == 0) {
			hsz[k] = Q * tu_range(&r, 1, 8);
			held[k] = (uintptr_t)vmem_alloc(keep, hsz[k],
			    VM_NOSLEEP);
			if (held[k] == 0)
				bad++;
		} else {
			vmem_free(keep, (void *)held[k], hsz[k]);
			held[k] = 0;
		}
		if (++round % 64 == 0)
			vmem_reap(keep);
		if (round % 256 == 0 && (vmem_check(keep) != 0 ||
		    vmem_check(parent) != 0))
			bad++;
		if (round % 8 == 0)
			sched_yield();
	}
	REQUIRE(pthread_join(pc, NULL) == 0);
	REQUIRE(pthread_join(pl, NULL) == 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(c.bad, 0);
	CHECK_EQ(l.bad, 0);
	CHECK_EQ(c.made, c.iters);
	CHECK(l.lists >= 10);
	CHECK_EQ(atomic_load(&l_import_bad), 0);
	memset(&seen, 0, sizeof (seen));
	seen.parent = parent;
	seen.keep = keep;
	vmem_foreach_arena(l_seen_cb, &seen);
	CHECK_EQ(seen.tmp, 0);
	CHECK_EQ(seen.bad, 0);
	for (int k = 0; k < L_KEEP_HOLD; k++)
		if (held[k] != 0)
			vmem_free(keep, (void *)held[k], hsz[k]);
	CHECK_EQ(vmem_size(keep, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_size(parent, VMEM_ALLOC), 0);
	CHECK_ARENA(keep);
	CHECK_ARENA(parent);
	vmem_destroy(keep);
	vmem_destroy(parent);
	fclose(l.devnull);
	free(l.sink.buf);
	CHECK_EQ(tu_err.count, 0);
	tu_default_errors();
}

/* ------------------------------------------------------------------ */
/* Private kmem heaps next to the default heap, under cache dumps. */

#define H_REGION ((size_t)4 << 20)
#define H_NOBJ   48
#define H_LIVE   32

typedef struct h_obj {
	unsigned char *p;
	size_t size;
	unsigned char pat;
} h_obj_t;

typedef struct h_thr {
	unsigned char *region;
	int iters;
	atomic_int *running;
	tu_rng_t rng;
	int bad;
	uint64_t objs;
} h_thr_t;

/* The ends and a stride through the middle. */
static int
h_zero(const unsigned char *p, size_t size)
{
	for (size_t i = 0; i < size; i += size > 256 ? 61 : 1)
		if (p[i] != 0)
			return 0;
	return p[size - 1] == 0;
}

static void
h_fill(h_obj_t *o, tu_rng_t *r)
{
	o->pat = (unsigned char)(tu_next(r) | 1);
	memset(o->p, o->pat, o->size);
}

static int
h_intact(const h_obj_t *o)
{
	return o->p[0] == o->pat && o->p[o->size / 2] == o->pat &&
	    o->p[o->size - 1] == o->pat;
}

static size_t
h_size(tu_rng_t *r)
{
	/* Now and then above the largest class: straight to the arena. */
	if (tu_range(r, 0, 7) == 0)
		return (size_t)tu_range(r, KMEM_HEAP_MAXCACHED + 1, 20000);
	return (size_t)tu_range(r, 1, 2048);
}

/* Zero-filled, also where an earlier object left its pattern. */
static void
h_zalloc(h_thr_t *t, kmem_heap_t *h, h_obj_t *o)
{
	o->size = h_size(&t->rng);
	o->p = kmem_heap_zalloc(h, o->size, KM_NOSLEEP);
	if (o->p == NULL) {
		t->bad++;
		return;
	}
	if (!h_zero(o->p, o->size))
		t->bad++;
	h_fill(o, &t->rng);
	t->objs++;
}

static void
h_free(h_thr_t *t, kmem_heap_t *h, h_obj_t *o)
{
	if (o->p == NULL)
		return;
	if (!h_intact(o))
		t->bad++;
	kmem_heap_free(h, o->p, o->size);
	o->p = NULL;
}

static void *
h_private(void *arg)
{
	h_thr_t *t = arg;
	h_obj_t o[H_NOBJ];

	for (int round = 0; round < t->iters; round++) {
		char aname[VMEM_NAMELEN], hname[VMEM_NAMELEN];
		vmem_t *a;
		kmem_heap_t *h;

		(void)snprintf(aname, sizeof (aname), "race_harena%d", round);
		(void)snprintf(hname, sizeof (hname), "rh%d", round);
		a = vmem_create(aname, t->region, H_REGION, Q, NULL, NULL,
		    NULL, 0, VM_SLEEP);
		h = a != NULL ? kmem_heap_create(hname, a) : NULL;
		if (h == NULL || kmem_heap_arena(h) != a) {
			t->bad++;
			kmem_heap_destroy(h);
			vmem_destroy(a);
			continue;
		}
		memset(o, 0, sizeof (o));
		for (int k = 0; k < H_NOBJ; k++)
			h_zalloc(t, h, &o[k]);
		for (int k = 0; k < H_NOBJ; k += 2)
			h_free(t, h, &o[k]);
		kmem_heap_reap(h);
		/* Reused memory, dirty from the objects just freed. */
		for (int k = 0; k < H_NOBJ; k += 2)
			h_zalloc(t, h, &o[k]);
		kmem_heap_reap(h);
		for (int k = 0; k < H_NOBJ; k++)
			h_free(t, h, &o[k]);
		kmem_heap_reap(h);
		kmem_heap_destroy(h);
		if (vmem_size(a, VMEM_ALLOC) != 0)
			t->bad++;
		vmem_destroy(a);
	}
	atomic_fetch_sub(t->running, 1);
	return NULL;
}

static void *
h_default(void *arg)
{
	h_thr_t *t = arg;
	h_obj_t o[H_LIVE];

	memset(o, 0, sizeof (o));
	for (int it = 0; it < t->iters; it++) {
		h_obj_t *x = &o[tu_range(&t->rng, 0, H_LIVE - 1)];

		if (x->p != NULL) {
			if (!h_intact(x))
				t->bad++;
			kmem_free(x->p, x->size);
			x->p = NULL;
			continue;
		}
		x->size = h_size(&t->rng);
		if (it & 1) {
			x->p = kmem_zalloc(x->size, KM_NOSLEEP);
			if (x->p != NULL && !h_zero(x->p, x->size))
				t->bad++;
		} else {
			x->p = kmem_alloc(x->size, KM_NOSLEEP);
		}
		if (x->p == NULL) {
			t->bad++;
			continue;
		}
		h_fill(x, &t->rng);
		t->objs++;
	}
	for (int k = 0; k < H_LIVE; k++) {
		if (o[k].p != NULL) {
			if (!h_intact(&o[k]))
				t->bad++;
			kmem_free(o[k].p, o[k].size);
		}
	}
	atomic_fetch_sub(t->running, 1);
	return NULL;
}

static void
count_rh(kmem_cache_t *cp, void *arg)
{
	int *n = arg;

	if (strncmp(kmem_cache_name(cp), "rh", 2) == 0)
		(*n)++;
}

static void
test_heaps_and_cache_dumps(void)
{
	h_thr_t t[2];
	pthread_t pt[2];
	atomic_int running;
	unsigned char *region;
	sink_t s;
	FILE *devnull = fopen("/dev/null", "w");
	int round = 0, bad = 0, rh = 0;

	REQUIRE(devnull != NULL);
	tu_record_errors();
	region = aligned_alloc(Q, H_REGION);
	REQUIRE(region != NULL);
	memset(&s, 0, sizeof (s));
	memset(t, 0, sizeof (t));
	running_init(&running, 2);
	t[0].region = region;
	t[0].iters = scaled(60, 12);
	t[1].iters = scaled(30000, 6000);
	for (int i = 0; i < 2; i++) {
		t[i].running = &running;
		tu_seed(&t[i].rng, 0x4ea9 + 7 * (uint64_t)i);
	}
	REQUIRE(pthread_create(&pt[0], NULL, h_private, &t[0]) == 0);
	REQUIRE(pthread_create(&pt[1], NULL, h_default, &t[1]) == 0);
	while (atomic_load(&running) > 0 || round < 10) {
		int n = 0;

		sink_reset(&s);
		switch (round++ % 5) {
		case 0:
			kmem_dump_caches(sink_out, &s);
			if (s.bad != 0 || s.lines < 5 ||
			    strncmp(s.buf, "cache", 5) != 0 ||
			    strncmp(s.buf + s.last, "Total", 5) != 0)
				bad++;
			break;
		case 1:
			kmem_dump_caches_json(sink_out, &s);
			if (s.bad != 0 || !json_valid(s.buf) ||
			    strncmp(s.buf, "{\"caches\":[", 11) != 0)
				bad++;
			break;
		case 2:
			kmem_print_caches(devnull);
			break;
		case 3:
			/* One private heap at a time: 33 caches at most. */
			kmem_foreach_cache(count_rh, &n);
			if (n > 33)
				bad++;
			break;
		default:
			vmem_dump_stats_json(sink_out, &s);
			if (s.bad != 0 || !json_valid(s.buf))
				bad++;
			break;
		}
		sched_yield();
	}
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_join(pt[i], NULL) == 0);
	CHECK_EQ(bad, 0);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(t[i].bad, 0);
		CHECK(t[i].objs > 0);
	}
	kmem_foreach_cache(count_rh, &rh);
	CHECK_EQ(rh, 0);
	free(region);
	free(s.buf);
	fclose(devnull);
	CHECK_EQ(tu_err.count, 0);
	tu_default_errors();
}

/* ------------------------------------------------------------------ */
/* kas fault classifiers and regions while two threads classify. */

#define K_NREG    8
#define K_REGSIZE ((uintptr_t)64 * KIB)

typedef struct k_cls {
	uintptr_t lo, hi;
	const char *name;
	atomic_uint *epoch;  /* NULL: registered throughout */
	atomic_long calls;
	atomic_long late;    /* called after its unregister returned */
} k_cls_t;

/* Pure: answers for its window, asks nothing of the library. */
static kas_fault_t
k_cls_fn(void *arg, uintptr_t addr, char *buf, size_t len)
{
	k_cls_t *c = arg;

	if (addr < c->lo || addr >= c->hi)
		return KAS_FAULT_NONE;
	atomic_fetch_add(&c->calls, 1);
	if (c->epoch != NULL && atomic_load(c->epoch) % 4 == 0)
		atomic_fetch_add(&c->late, 1);
	(void)snprintf(buf, len, "%s", c->name);
	return KAS_FAULT_REDZONE;
}

/*
 * The registrar moves epoch through 4n+1 (registering B), 4n+2 (B
 * registered), 4n+3 (unregistering), 4n+4 (B unregistered). A classify
 * call that reads the same epoch before and after ran entirely in one
 * stable state, so its answer for B's window is known.
 */
typedef struct k_ctx {
	kas_t *kas;
	uintptr_t base;
	size_t size, ps;
	k_cls_t a, b;
	atomic_uint epoch;
	atomic_int nreg;       /* regions registered */
	atomic_int nreg_begun; /* regions whose registration has begun */
	atomic_uint progress;  /* stable answers seen by the classifier */
	uintptr_t reg_base;
	atomic_int running;
	int iters;
} k_ctx_t;

typedef struct k_thr {
	k_ctx_t *k;
	tu_rng_t rng;
	int bad;
	uint64_t faults[KAS_FAULT_NKINDS];
	uint64_t nfault, on, off, regions, owned;
} k_thr_t;

static kas_fault_t
k_ask(k_thr_t *t, uintptr_t addr, char *buf, size_t len)
{
	kas_fault_t f;

	if (tu_range(&t->rng, 0, 1) == 0) {
		f = kas_fault(t->k->kas, addr, buf, len);
		if ((unsigned)f < KAS_FAULT_NKINDS)
			t->faults[f]++;
		t->nfault++;
	} else {
		f = kas_classify(t->k->kas, addr, buf, len);
	}
	if (f == KAS_FAULT_NONE || (unsigned)f >= KAS_FAULT_NKINDS)
		t->bad++;
	return f;
}

static void
k_wait_progress(k_ctx_t *k)
{
	unsigned p0 = atomic_load(&k->progress);

	for (int y = 0; y < 200 && atomic_load(&k->progress) == p0 &&
	    atomic_load(&k->running) > 0; y++)
		sched_yield();
}

static void *
k_registrar(void *arg)
{
	k_thr_t *t = arg;
	k_ctx_t *k = t->k;
	unsigned e = 0;

	/* As long as the classifier runs, and until every region is in. */
	for (int it = 0; atomic_load(&k->running) > 0 || it < 4 * K_NREG;
	    it++) {
		atomic_store(&k->epoch, ++e);
		if (kas_register_fault_classifier(k->kas, k_cls_fn, &k->b) != 0)
			t->bad++;
		atomic_store(&k->epoch, ++e);
		k_wait_progress(k);
		atomic_store(&k->epoch, ++e);
		kas_unregister_fault_classifier(k->kas, k_cls_fn, &k->b);
		atomic_store(&k->epoch, ++e);
		k_wait_progress(k);
		if (it % 4 == 3 && atomic_load(&k->nreg) < K_NREG) {
			int n = atomic_load(&k->nreg);
			char name[16];

			(void)snprintf(name, sizeof (name), "reg%d", n);
			atomic_store(&k->nreg_begun, n + 1);
			if (kas_register_region(k->kas, name,
			    k->reg_base + (uintptr_t)n * K_REGSIZE,
			    k->reg_base + (uintptr_t)(n + 1) * K_REGSIZE) != 0)
				t->bad++;
			atomic_store(&k->nreg, n + 1);
		}
	}
	return NULL;
}

static int
k_in_windows(const k_ctx_t *k, uintptr_t a, size_t size)
{
	return a + size > k->a.lo && a < k->b.hi;
}

static void
k_classify_one(k_thr_t *t)
{
	k_ctx_t *k = t->k;
	char buf[160], name[16];
	uintptr_t a;
	unsigned e0, e1;
	int i, n0, n1;
	kas_fault_t f;
	void *p;

	switch (tu_range(&t->rng, 0, 4)) {
	case 0:
		a = k->a.lo + tu_range(&t->rng, 0, k->a.hi - k->a.lo - 1);
		f = k_ask(t, a, buf, sizeof (buf));
		if (f != KAS_FAULT_REDZONE || strcmp(buf, "clsA") != 0)
			t->bad++;
		break;
	case 1:
		a = k->b.lo + tu_range(&t->rng, 0, k->b.hi - k->b.lo - 1);
		e0 = atomic_load(&k->epoch);
		f = k_ask(t, a, buf, sizeof (buf));
		e1 = atomic_load(&k->epoch);
		if (e0 != e1 || e0 % 2 != 0)
			break;
		if (e0 % 4 == 2) {
			if (f != KAS_FAULT_REDZONE || strcmp(buf, "clsB") != 0)
				t->bad++;
			t->on++;
		} else {
			if (f == KAS_FAULT_REDZONE || strcmp(buf, "clsB") == 0)
				t->bad++;
			t->off++;
		}
		atomic_fetch_add(&k->progress, 1);
		break;
	case 2:
		i = (int)tu_range(&t->rng, 0, K_NREG - 1);
		a = k->reg_base + (uintptr_t)i * K_REGSIZE +
		    tu_range(&t->rng, 0, K_REGSIZE - 1);
		n0 = atomic_load(&k->nreg);
		f = k_ask(t, a, buf, sizeof (buf));
		n1 = atomic_load(&k->nreg_begun);
		(void)snprintf(name, sizeof (name), "reg%d", i);
		/* Registered before the call, or not begun by its end. */
		if (i < n0) {
			if (f != KAS_FAULT_REGION || strcmp(buf, name) != 0)
				t->bad++;
			t->regions++;
		} else if (i >= n1 && f != KAS_FAULT_OUTSIDE) {
			t->bad++;
		}
		break;
	case 3:
		/* Its own allocation: allocated, then committed. */
		p = vmem_alloc(kas_heap_arena(k->kas), 2 * k->ps, VM_NOSLEEP);
		if (p == NULL) {
			t->bad++;
			break;
		}
		a = (uintptr_t)p + k->ps;
		if (!k_in_windows(k, (uintptr_t)p, 2 * k->ps)) {
			f = k_ask(t, a, buf, sizeof (buf));
			if (f != KAS_FAULT_UNBACKED || strstr(buf,
			    "heap_arena: allocated, not committed") == NULL)
				t->bad++;
			if (kas_pages_commit(k->kas, p, 2 * k->ps, 0) != 0) {
				t->bad++;
			} else {
				f = k_ask(t, a, buf, sizeof (buf));
				if (f != KAS_FAULT_VALID)
					t->bad++;
				kas_pages_decommit(k->kas, p, 2 * k->ps);
			}
			t->owned++;
		}
		vmem_free(kas_heap_arena(k->kas), p, 2 * k->ps);
		break;
	default:
		/* Below the address space: no classifier, no region. */
		a = k->base - 1 - tu_range(&t->rng, 0, 64 * KIB);
		if (k_ask(t, a, buf, sizeof (buf)) != KAS_FAULT_OUTSIDE)
			t->bad++;
		break;
	}
}

static void *
k_classifier(void *arg)
{
	k_thr_t *t = arg;

	/* Until the registrar has had time to put every region in. */
	for (int it = 0; it < t->k->iters ||
	    atomic_load(&t->k->nreg) < K_NREG; it++)
		k_classify_one(t);
	atomic_fetch_sub(&t->k->running, 1);
	return NULL;
}

static void
kas_classify_race(kas_backing_t backing)
{
	kas_config_t cfg;
	k_ctx_t k;
	k_thr_t t[3];
	pthread_t pr, pc;
	kas_stats_t st0, st;
	uint64_t faults = 0, last = 0;
	char buf[160];
	int bad = 0;

	tu_record_errors();
	kas_config_init(&cfg);
	cfg.backing = backing;
	cfg.size = 16 * MIB;
	cfg.name = backing == KAS_REAL ? "race_kas_real" : "race_kas_sim";
	memset(&k, 0, sizeof (k));
	k.kas = kas_create(&cfg);
	REQUIRE(k.kas != NULL);
	k.base = kas_base(k.kas);
	k.size = kas_size(k.kas);
	k.ps = kas_pagesize(k.kas);
	/* Two classifier windows at the top of the heap, regions above. */
	k.a.lo = k.base + 14 * MIB;
	k.a.hi = k.base + 15 * MIB;
	k.a.name = "clsA";
	k.b.lo = k.a.hi;
	k.b.hi = k.base + 16 * MIB;
	k.b.name = "clsB";
	k.b.epoch = &k.epoch;
	k.reg_base = k.base + k.size + MIB;
	k.iters = scaled(20000, 3000);
	atomic_init(&k.epoch, 0);
	atomic_init(&k.nreg, 0);
	atomic_init(&k.nreg_begun, 0);
	atomic_init(&k.progress, 0);
	/* The epoch and counters are the test's own handshakes: they order
	 * no memory, the library's locks must do that. */
	HG_BENIGN(&k.epoch, "registration epoch, orders no memory");
	HG_BENIGN(&k.nreg, "region count, orders no memory");
	HG_BENIGN(&k.nreg_begun, "region count, orders no memory");
	HG_BENIGN(&k.progress, "progress counter, orders no memory");
	HG_BENIGN(&k.b.late, "counter");
	HG_BENIGN(&k.b.calls, "counter");
	HG_BENIGN(&k.a.calls, "counter");
	running_init(&k.running, 1);
	REQUIRE(kas_register_fault_classifier(k.kas, k_cls_fn, &k.a) == 0);
	kas_get_stats(k.kas, &st0);
	memset(t, 0, sizeof (t));
	for (int i = 0; i < 3; i++) {
		t[i].k = &k;
		tu_seed(&t[i].rng, 0xc1a5 + 11 * (uint64_t)i +
		    (uint64_t)backing);
	}
	REQUIRE(pthread_create(&pr, NULL, k_registrar, &t[0]) == 0);
	REQUIRE(pthread_create(&pc, NULL, k_classifier, &t[1]) == 0);
	/* Anywhere in and around the address space, while it classifies. */
	while (atomic_load(&k.running) > 0) {
		uintptr_t a = k.base - MIB +
		    tu_range(&t[2].rng, 0, k.size + 4 * MIB);
		kas_fault_t f = k_ask(&t[2], a, buf, sizeof (buf));

		if (a < k.base && f != KAS_FAULT_OUTSIDE)
			bad++;
		if (a >= k.a.lo && a < k.a.hi && f != KAS_FAULT_REDZONE)
			bad++;
		kas_get_stats(k.kas, &st);
		if (st.faults < last)
			bad++;
		last = st.faults;
		sched_yield();
	}
	REQUIRE(pthread_join(pc, NULL) == 0);
	REQUIRE(pthread_join(pr, NULL) == 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(t[0].bad, 0);
	CHECK_EQ(t[1].bad, 0);
	CHECK_EQ(t[2].bad, 0);
	/* Both stable states were seen, and regions, and own allocations. */
	CHECK(t[1].on > 0 && t[1].off > 0);
	CHECK(t[1].regions > 0 && t[1].owned > 0);
	CHECK_EQ(atomic_load(&k.nreg), K_NREG);
	/* kas_fault counted every call once, by kind. */
	kas_get_stats(k.kas, &st);
	for (int i = 0; i < 3; i++)
		faults += t[i].nfault;
	CHECK_EQ(st.faults - st0.faults, faults);
	for (int kind = 0; kind < KAS_FAULT_NKINDS; kind++)
		CHECK_EQ(st.faults_by_kind[kind] - st0.faults_by_kind[kind],
		    t[1].faults[kind] + t[2].faults[kind]);
	/* Late calls are the subject of test_kas_unregister_quiesces. */
	CHECK(kas_classify(k.kas, k.b.lo, buf, sizeof (buf)) !=
	    KAS_FAULT_REDZONE);
	kas_unregister_fault_classifier(k.kas, k_cls_fn, &k.a);
	CHECK(kas_classify(k.kas, k.a.lo, buf, sizeof (buf)) !=
	    KAS_FAULT_REDZONE);
	CHECK(kas_classify(k.kas, k.reg_base, buf, sizeof (buf)) ==
	    KAS_FAULT_REGION && strcmp(buf, "reg0") == 0);
	kas_destroy(k.kas);
	CHECK_EQ(tu_err.count, 0);
	tu_default_errors();
}

static void test_kas_classify_sim(void) { kas_classify_race(KAS_SIM); }
static void test_kas_classify_real(void) { kas_classify_race(KAS_REAL); }

/*
 * Once kas_unregister_fault_classifier has returned, its caller may free
 * what the classifier looks at (segkp_destroy frees the segment at once):
 * a kas_classify already under way must not call it any more. Made
 * certain here: the first classifier holds the call inside it until the
 * second has been unregistered. (If unregistering waited for calls in
 * flight instead, the first classifier gives up after wait_ms and the
 * second is then called before unregister returns: no late call.)
 */
typedef struct q_ctx {
	kas_t *kas;
	uintptr_t trap;
	int wait_ms;
	atomic_int inside, unregistered;
	atomic_long late, calls;
	kas_fault_t got;
	char buf[128];
} q_ctx_t;

static kas_fault_t
q_first(void *arg, uintptr_t addr, char *buf, size_t len)
{
	q_ctx_t *q = arg;
	uint64_t t0 = now_ms();

	(void)buf;
	(void)len;
	if (addr != q->trap)
		return KAS_FAULT_NONE;
	atomic_store(&q->inside, 1);
	while (!atomic_load(&q->unregistered) &&
	    now_ms() - t0 < (uint64_t)q->wait_ms)
		sched_yield();
	return KAS_FAULT_NONE;
}

static kas_fault_t
q_second(void *arg, uintptr_t addr, char *buf, size_t len)
{
	q_ctx_t *q = arg;

	if (addr != q->trap)
		return KAS_FAULT_NONE;
	atomic_fetch_add(&q->calls, 1);
	if (atomic_load(&q->unregistered))
		atomic_fetch_add(&q->late, 1);
	(void)snprintf(buf, len, "second");
	return KAS_FAULT_REDZONE;
}

static void *
q_classify(void *arg)
{
	q_ctx_t *q = arg;

	q->got = kas_classify(q->kas, q->trap, q->buf, sizeof (q->buf));
	return NULL;
}

static void
test_kas_unregister_quiesces(void)
{
	kas_config_t cfg;
	q_ctx_t q;
	pthread_t t;
	uint64_t t0;

	tu_record_errors();
	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.size = 16 * MIB;
	cfg.name = "race_quiesce";
	cfg.create_kmem_heap = 0;
	memset(&q, 0, sizeof (q));
	q.kas = kas_create(&cfg);
	REQUIRE(q.kas != NULL);
	q.trap = kas_base(q.kas) + 8 * MIB;
	q.wait_ms = scaled(300, 2000);
	atomic_init(&q.inside, 0);
	atomic_init(&q.unregistered, 0);
	atomic_init(&q.late, 0);
	atomic_init(&q.calls, 0);
	HG_BENIGN(&q.inside, "hand-shake flag, orders no memory");
	HG_BENIGN(&q.unregistered, "hand-shake flag, orders no memory");
	HG_BENIGN(&q.late, "counter");
	HG_BENIGN(&q.calls, "counter");
	REQUIRE(kas_register_fault_classifier(q.kas, q_first, &q) == 0);
	REQUIRE(kas_register_fault_classifier(q.kas, q_second, &q) == 0);
	REQUIRE(pthread_create(&t, NULL, q_classify, &q) == 0);
	t0 = now_ms();
	while (!atomic_load(&q.inside) && now_ms() - t0 < 60000)
		sched_yield();
	CHECK(atomic_load(&q.inside));
	kas_unregister_fault_classifier(q.kas, q_second, &q);
	atomic_store(&q.unregistered, 1);
	REQUIRE(pthread_join(t, NULL) == 0);
	CHECK_EQ(atomic_load(&q.late), 0);
	/* Its answer came back if, and only if, it was asked (once). */
	CHECK(atomic_load(&q.calls) <= 1);
	CHECK((q.got == KAS_FAULT_REDZONE) == (atomic_load(&q.calls) == 1));
	/* A call that begins now does not see it. */
	CHECK(kas_classify(q.kas, q.trap, NULL, 0) != KAS_FAULT_REDZONE);
	kas_unregister_fault_classifier(q.kas, q_first, &q);
	kas_destroy(q.kas);
	CHECK_EQ(tu_err.count, 0);
	tu_default_errors();
}

/* ------------------------------------------------------------------ */
/* segkp stack caches on two segments. */

#define S_LIVE 16
#define S_BOX  8

typedef struct s_stack {
	char *p;
	size_t len;
	segkp_t *seg;
	unsigned char pat;  /* first and last byte (real memory) */
} s_stack_t;

typedef struct s_ctx {
	kas_t *kas[2];       /* real, simulated */
	segkp_t *seg[2];     /* real fromheap, simulated fixed */
	size_t ps;
	void *c1;            /* long-lived cache on seg[0] */
	pthread_mutex_t lock;
	s_stack_t box[S_BOX]; /* handed from the cache owner to the user */
	int nbox;
	atomic_int running;
	int iters;
} s_ctx_t;

typedef struct s_thr {
	s_ctx_t *s;
	tu_rng_t rng;
	s_stack_t live[S_LIVE];
	int bad;
	uint64_t gets, cgets, fails, releases, received, rounds;
} s_thr_t;

/* Everything segkp says about a stack its caller holds. */
static int
s_held_ok(const s_ctx_t *s, const s_stack_t *k)
{
	segkp_info_t in;
	char buf[160];
	size_t ps = s->ps;

	if (segkp_classify(k->seg, k->p, &in) != SEGKP_FAULT_MAPPED ||
	    in.addr != (uintptr_t)k->p || in.len != k->len ||
	    in.redzone != ps || in.base != in.addr - ps || in.cached ||
	    !in.resident)
		return 0;
	if (segkp_classify(k->seg, k->p + k->len - 1, NULL) !=
	    SEGKP_FAULT_MAPPED)
		return 0;
	if (segkp_classify(k->seg, k->p - 1, &in) != SEGKP_FAULT_REDZONE ||
	    in.addr != (uintptr_t)k->p)
		return 0;
	if (segkp_describe(k->seg, k->p - 1, buf, sizeof (buf)) !=
	    SEGKP_FAULT_REDZONE || strstr(buf, "redzone") == NULL)
		return 0;
	if (segkp_describe(k->seg, k->p, buf, sizeof (buf)) !=
	    SEGKP_FAULT_MAPPED || strstr(buf, "mapped part") == NULL)
		return 0;
	if (!segkp_page_held(k->seg, k->p) ||
	    !segkp_page_held(k->seg, k->p - ps) ||
	    !segkp_page_held(k->seg, k->p + k->len - ps))
		return 0;
	if (k->seg == s->seg[0] && ((unsigned char)k->p[0] != k->pat ||
	    (unsigned char)k->p[k->len - 1] != k->pat))
		return 0;
	return 1;
}

static void
s_mark(const s_ctx_t *s, s_stack_t *k, tu_rng_t *r)
{
	k->pat = (unsigned char)(tu_next(r) | 1);
	if (k->seg == s->seg[0]) {
		k->p[0] = (char)k->pat;
		k->p[k->len - 1] = (char)k->pat;
	}
}

static void
s_release(s_thr_t *t, s_stack_t *k)
{
	if (!s_held_ok(t->s, k))
		t->bad++;
	segkp_release(k->seg, k->p);
	k->p = NULL;
	t->releases++;
}

/* Stacks from the other thread's caches, kept a while before release. */
static void
s_take_box(s_thr_t *t)
{
	s_ctx_t *s = t->s;
	s_stack_t got[S_BOX];
	int n;

	pthread_mutex_lock(&s->lock);
	n = s->nbox;
	memcpy(got, s->box, (size_t)n * sizeof (got[0]));
	s->nbox = 0;
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < n; i++) {
		s_stack_t *k = &t->live[tu_range(&t->rng, 0, S_LIVE - 1)];

		t->received++;
		if (k->p != NULL)
			s_release(t, k);
		*k = got[i];
		if (!s_held_ok(s, k))
			t->bad++;
	}
}

static void *
s_user(void *arg)
{
	s_thr_t *t = arg;
	s_ctx_t *s = t->s;

	for (int it = 0; it < s->iters; it++) {
		s_stack_t *k = &t->live[tu_range(&t->rng, 0, S_LIVE - 1)];

		if (it % 8 == 0)
			s_take_box(t);
		if (k->p != NULL) {
			s_release(t, k);
			continue;
		}
		k->seg = s->seg[0];
		if (tu_range(&t->rng, 0, 2) != 0) {
			k->len = 2 * s->ps;
			k->p = segkp_cache_get(s->c1);
			t->cgets++;
		} else {
			k->len = s->ps * tu_range(&t->rng, 1, 3);
			k->p = segkp_get(s->seg[0], k->len,
			    KPD_HASREDZONE | KPD_NOWAIT);
			t->gets++;
		}
		if (k->p == NULL) {
			t->fails++;
			continue;
		}
		s_mark(s, k, &t->rng);
		if (!s_held_ok(s, k))
			t->bad++;
	}
	atomic_fetch_sub(&s->running, 1);
	return NULL;
}

static int
s_stats_ok(segkp_t *seg)
{
	segkp_stats_t st;

	segkp_get_stats(seg, &st);
	return st.gets == st.releases + st.inuse + st.cached;
}

/*
 * Short-lived caches, on each segment in turn: some of their stacks go
 * back to them, some to the user thread (released there, often after the
 * cache is gone, which the header allows), one is released here after the
 * destroy. Only this thread uses a short-lived cache's cookie: a get
 * racing the destroy of its own cache would be a stale cookie (misuse,
 * reported), not a race the library has to survive. The slot a destroyed
 * cache leaves is taken again by the next one, on the other segment.
 */
static void *
s_owner(void *arg)
{
	s_thr_t *t = arg;
	s_ctx_t *s = t->s;

	for (int round = 0; atomic_load(&s->running) > 1 || round < 4;
	    round++) {
		segkp_t *seg = s->seg[round & 1];
		s_stack_t got[6];
		void *c2 = segkp_cache_init(seg, 4, s->ps,
		    KPD_HASREDZONE | KPD_NOWAIT);

		if (c2 == NULL) {
			t->bad++;
			continue;
		}
		for (int k = 0; k < 6; k++) {
			got[k].seg = seg;
			got[k].len = s->ps;
			got[k].p = segkp_cache_get(c2);
			if (got[k].p == NULL) {
				t->fails++;
				continue;
			}
			s_mark(s, &got[k], &t->rng);
			if (!s_held_ok(s, &got[k]))
				t->bad++;
		}
		for (int k = 0; k < 3; k++)
			if (got[k].p != NULL)
				s_release(t, &got[k]);
		/* Back from the cache, possibly reaped meanwhile. */
		for (int k = 0; k < 2; k++) {
			got[k].p = segkp_cache_get(c2);
			if (got[k].p == NULL) {
				t->fails++;
				continue;
			}
			s_mark(s, &got[k], &t->rng);
			s_release(t, &got[k]);
		}
		pthread_mutex_lock(&s->lock);
		for (int k = 3; k < 5; k++) {
			if (got[k].p != NULL && s->nbox < S_BOX) {
				s->box[s->nbox++] = got[k];
				got[k].p = NULL;
			}
		}
		pthread_mutex_unlock(&s->lock);
		for (int k = 3; k < 5; k++)
			if (got[k].p != NULL)
				s_release(t, &got[k]);
		/* While the user gets from and releases to c1. */
		if (round % 4 == 1)
			segkp_cache_free_seg(seg);
		if (round % 8 == 5)
			segkp_cache_free();
		segkp_cache_destroy(c2);
		if (got[5].p != NULL)
			s_release(t, &got[5]);
		if (!s_stats_ok(seg))
			t->bad++;
		t->rounds++;
	}
	atomic_fetch_sub(&s->running, 1);
	return NULL;
}

static void
test_segkp_caches_two_segments(void)
{
	kas_config_t cfg;
	s_ctx_t s;
	s_thr_t t[2];
	pthread_t pu, po;
	segkp_stats_t st[2];
	uint64_t reaped = 0;
	tu_rng_t r;
	int round = 0, bad = 0;

	tu_record_errors();
	memset(&s, 0, sizeof (s));
	kas_config_init(&cfg);
	cfg.backing = KAS_REAL;
	cfg.size = 64 * MIB;
	cfg.name = "race_kp_real";
	s.kas[0] = kas_create(&cfg);
	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.size = 64 * MIB;
	cfg.name = "race_kp_sim";
	cfg.nheap_spans = 1;
	cfg.heap_spans[0].start = 4 * MIB;
	cfg.heap_spans[0].end = 64 * MIB;
	s.kas[1] = kas_create(&cfg);
	REQUIRE(s.kas[0] != NULL && s.kas[1] != NULL);
	s.seg[0] = segkp_create(s.kas[0], SEGKP_FROMHEAP, NULL, 0);
	s.seg[1] = segkp_create(s.kas[1], SEGKP_FIXED,
	    (void *)kas_base(s.kas[1]), 4 * MIB);
	REQUIRE(s.seg[0] != NULL && s.seg[1] != NULL);
	s.ps = segkp_pagesize(s.seg[0]);
	REQUIRE(segkp_pagesize(s.seg[1]) == s.ps);
	s.c1 = segkp_cache_init(s.seg[0], 8, 2 * s.ps,
	    KPD_HASREDZONE | KPD_NOWAIT);
	REQUIRE(s.c1 != NULL);
	REQUIRE(pthread_mutex_init(&s.lock, NULL) == 0);
	s.iters = scaled(20000, 4000);
	running_init(&s.running, 2);
	memset(t, 0, sizeof (t));
	for (int i = 0; i < 2; i++) {
		t[i].s = &s;
		tu_seed(&t[i].rng, 0x5e6 + 3 * (uint64_t)i);
	}
	REQUIRE(pthread_create(&pu, NULL, s_user, &t[0]) == 0);
	REQUIRE(pthread_create(&po, NULL, s_owner, &t[1]) == 0);
	tu_seed(&r, 0x4ea);
	while (atomic_load(&s.running) > 0) {
		uintptr_t a = kas_base(s.kas[0]) +
		    tu_range(&r, 0, 8 * MIB - 1);
		segkp_info_t in;
		segkp_fault_t f;

		for (int w = 0; w < 2; w++) {
			if (!s_stats_ok(s.seg[w]))
				bad++;
			if (round % 4 == w)
				reaped += segkp_cache_reap(s.seg[w],
				    round % 8 < 4 ? SEGKP_REAP_IDLE :
				    SEGKP_REAP_ALL);
			if (round % 16 == 8 + w && segkp_check(s.seg[w]) != 0)
				bad++;
		}
		/* Whatever it finds there is a consistent allocation. */
		f = segkp_classify(s.seg[0], (void *)a, &in);
		if ((f == SEGKP_FAULT_MAPPED || f == SEGKP_FAULT_REDZONE) &&
		    (a - in.base >= in.size ||
		    in.addr != in.base + in.redzone ||
		    in.len + in.redzone != in.size ||
		    (f == SEGKP_FAULT_REDZONE) != (a < in.addr)))
			bad++;
		round++;
		sched_yield();
	}
	REQUIRE(pthread_join(pu, NULL) == 0);
	REQUIRE(pthread_join(po, NULL) == 0);
	CHECK_EQ(bad, 0);
	/* What the user was handed after its last look at the box. */
	s_take_box(&t[0]);
	for (int k = 0; k < S_LIVE; k++)
		if (t[0].live[k].p != NULL)
			s_release(&t[0], &t[0].live[k]);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(t[i].bad, 0);
		CHECK_EQ(t[i].fails, 0);
	}
	CHECK(t[0].cgets > 0 && t[0].gets > 0 && t[0].received > 0);
	CHECK(t[1].rounds >= 4);
	for (int w = 0; w < 2; w++) {
		segkp_get_stats(s.seg[w], &st[w]);
		CHECK_EQ(st[w].inuse, 0);
		CHECK_EQ(st[w].gets, st[w].releases + st[w].cached);
		CHECK_EQ(st[w].get_fail, 0);
		CHECK(st[w].cache_hits > 0 && st[w].cache_puts > 0);
		CHECK(segkp_check(s.seg[w]) == 0);
	}
	/* Only c1 is left, on the real segment; only this thread reaped. */
	CHECK(st[0].cached <= 8);
	CHECK_EQ(st[1].cached, 0);
	CHECK_EQ(st[0].reaped_pages + st[1].reaped_pages, reaped);
	segkp_cache_destroy(s.c1);
	for (int w = 0; w < 2; w++) {
		segkp_get_stats(s.seg[w], &st[w]);
		CHECK_EQ(st[w].cached, 0);
		CHECK_EQ(st[w].gets, st[w].releases);
		CHECK_EQ(st[w].pages_committed, 0);
		CHECK(segkp_check(s.seg[w]) == 0);
		segkp_destroy(s.seg[w]);
		kas_destroy(s.kas[w]);
	}
	pthread_mutex_destroy(&s.lock);
	CHECK_EQ(tu_err.count, 0);
	tu_default_errors();
}

/*
 * A sub-test that stops making progress (a deadlock in the library) fails
 * with its name instead of running into CTest's 900 s timeout.
 */
static atomic_int wd_current = -1;
static atomic_ullong wd_since;

typedef struct subtest {
	const char *name;
	void (*fn)(void);
} subtest_t;

static const subtest_t subtests[] = {
	/* First: the library's first calls then come from two threads at
	 * once (vmem_create and kmem_alloc), as in a program whose threads
	 * start using it together. */
	{ "test_heaps_and_cache_dumps", test_heaps_and_cache_dumps },
	{ "test_walk_add_contains", test_walk_add_contains },
	{ "test_kas_classify_sim", test_kas_classify_sim },
	{ "test_kas_classify_real", test_kas_classify_real },
	{ "test_kas_unregister_quiesces", test_kas_unregister_quiesces },
	{ "test_segkp_caches_two_segments", test_segkp_caches_two_segments },
	{ "test_arena_list_churn", test_arena_list_churn },
};
#define NSUBTESTS ((int)(sizeof (subtests) / sizeof (subtests[0])))

static void *
watchdog(void *arg)
{
	uint64_t limit_ms = (uint64_t)scaled(20, 300) * 1000;

	(void)arg;
	for (;;) {
		struct timespec ts = { 1, 0 };
		int cur = atomic_load(&wd_current);

		nanosleep(&ts, NULL);
		if (cur >= 0 && cur == atomic_load(&wd_current) &&
		    now_ms() - atomic_load(&wd_since) > limit_ms) {
			fprintf(stderr, "%s: no progress in %llu s: "
			    "deadlock?\n", subtests[cur].name,
			    (unsigned long long)(limit_ms / 1000));
			printf("FAIL %s (stuck)\n", subtests[cur].name);
			fflush(NULL);
			_Exit(1);
		}
	}
	return NULL;
}

/* With arguments, only the sub-tests they name. */
int
main(int argc, char **argv)
{
	pthread_t wd;

	HG_BENIGN(&wd_current, "watchdog: which sub-test runs");
	HG_BENIGN(&wd_since, "watchdog: since when");
	REQUIRE(pthread_create(&wd, NULL, watchdog, NULL) == 0);
	REQUIRE(pthread_detach(wd) == 0);
	for (int i = 0; i < NSUBTESTS; i++) {
		int before = tu_failures, run = argc < 2;

		for (int a = 1; a < argc; a++)
			if (strcmp(argv[a], subtests[i].name) == 0)
				run = 1;
		if (!run)
			continue;
		atomic_store(&wd_since, now_ms());
		atomic_store(&wd_current, i);
		subtests[i].fn();
		atomic_store(&wd_current, -1);
		printf("%s %s\n", tu_failures == before ? "ok  " : "FAIL",
		    subtests[i].name);
		fflush(stdout);
	}
	return tu_finish();
}
