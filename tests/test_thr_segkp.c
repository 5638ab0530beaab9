/*
 * segkp and the thread layer under concurrency, for ThreadSanitizer and
 * helgrind: two threads churn on one segment (gets, stack-cache gets,
 * lookups, tags, releases, allocations handed to the other thread to
 * free) while the main thread reads statistics, checks the segment and
 * reaps the cache, in all four setups; two threads create, join and
 * detach kthreads while the main thread reaps them, and again while it
 * forks and checks each child; two threads run coroutines whose stacks
 * come from one shared cache.
 *
 * No overflows here: those stay in test_segkp_threads (child processes).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vmem/kthread.h>

#include "hg.h"
#include "testutil.h"

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)

/*
 * Under ThreadSanitizer glibc puts TSan's static TLS (about 900 KiB) at
 * the top of every stack given with pthread_attr_setstack, so a kthread on
 * the default 4-page stack cannot even start ("pre-allocated stack size is
 * insufficient"). The TSan build gives its kthreads 2 MiB stacks (outside
 * the stack cache); every other build uses the default, so that the cache
 * path is the one the ASan build and helgrind see.
 */
#if defined(__SANITIZE_THREAD__)
#define TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN_BUILD 1
#endif
#endif
#ifdef TSAN_BUILD
#define KT_STACKSIZE (2 * MIB)
#else
#define KT_STACKSIZE 0
#endif

/*
 * A child of a threaded process cannot start threads under the
 * sanitizers: TSan refuses, and this ASan takes no allocator lock around
 * fork(), so the child's first thread can wait for ever on one that a
 * thread of the parent held.
 */
#if defined(TSAN_BUILD) || defined(__SANITIZE_ADDRESS__)
#define CHILD_NO_THREADS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHILD_NO_THREADS 1
#endif
#endif

#define NWORKERS 2

static void
pause_briefly(void)
{
	struct timespec ts = { 0, 1000000 };

	nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* segkp: two threads on one segment. */

#define NLIVE    32 /* allocations a worker holds at most */
#define NHANDOFF 8  /* allocations waiting for the other worker */
#define CACHE_MAX 8 /* small: releases also find the cache full */
#define CACHE_PAGES 2

typedef struct alloc {
	char *p;
	size_t len;
	int from_cache;
	unsigned char pat; /* first and last byte (real backing) */
} alloc_t;

struct worker;

typedef struct churn {
	segkp_t *seg;
	void *cache;
	size_t ps;
	int real;
	int iters;
	pthread_mutex_t lock;         /* the hand-off boxes */
	alloc_t box[NWORKERS][NHANDOFF]; /* box[i]: for worker i to free */
	int nbox[NWORKERS];
	struct worker *w[NWORKERS];
	atomic_int running;
} churn_t;

/* Counts are the worker's own: the main thread reads them after join. */
typedef struct worker {
	churn_t *ch;
	int id;
	uint64_t seed;
	alloc_t live[NLIVE];
	uint64_t gets, get_fail;       /* segkp_get */
	uint64_t cgets, cget_fail;     /* segkp_cache_get */
	uint64_t releases;             /* every segkp_release */
	uint64_t cache_releases;       /* of which from segkp_cache_get */
	uint64_t handed, received;
	uint64_t reaped;               /* pages its own reaps gave back */
	int bad;
} worker_t;

/*
 * Every address of a live allocation, redzone included, leads segkp_find
 * to it; on real memory its marker bytes are intact (an allocation handed
 * out twice would have overwritten them).
 */
static int
alloc_ok(churn_t *ch, const alloc_t *a, const void *tag)
{
	segkp_info_t in;
	const char *probe[3] = { a->p, a->p + a->len - 1, a->p - 1 };

	for (int k = 0; k < 3; k++) {
		if (segkp_find(ch->seg, probe[k], &in) != 1)
			return 0;
		if (in.addr != (uintptr_t)a->p || in.len != a->len ||
		    in.redzone != ch->ps || in.base != in.addr - ch->ps ||
		    in.size != a->len + ch->ps || in.cached)
			return 0;
		if (tag != NULL && in.tag != tag)
			return 0;
	}
	if (ch->real && ((unsigned char)a->p[0] != a->pat ||
	    (unsigned char)a->p[a->len - 1] != a->pat))
		return 0;
	return 1;
}

static void
alloc_release(worker_t *w, alloc_t *a)
{
	segkp_release(w->ch->seg, a->p);
	w->releases++;
	w->cache_releases += a->from_cache;
	a->p = NULL;
}

static void
alloc_new(worker_t *w, alloc_t *a, tu_rng_t *r)
{
	churn_t *ch = w->ch;
	int zero = 0;

	if (tu_range(r, 0, 1) == 0) {
		a->len = ch->ps * tu_range(r, 1, 4);
		zero = tu_range(r, 0, 2) == 0;
		a->p = segkp_get(ch->seg, a->len, KPD_HASREDZONE | KPD_NOWAIT |
		    (zero ? KPD_ZERO : 0));
		a->from_cache = 0;
		if (a->p == NULL) {
			w->get_fail++;
			return;
		}
		w->gets++;
	} else {
		a->len = CACHE_PAGES * ch->ps;
		a->p = segkp_cache_get(ch->cache);
		a->from_cache = 1;
		if (a->p == NULL) {
			w->cget_fail++;
			return;
		}
		w->cgets++;
	}
	if (segkp_set_tag(ch->seg, a->p, w) != 0)
		w->bad++;
	a->pat = (unsigned char)(tu_next(r) | 1);
	if (ch->real) {
		if (zero && (a->p[0] != 0 || a->p[a->len - 1] != 0))
			w->bad++;
		a->p[0] = (char)a->pat;
		a->p[a->len - 1] = (char)a->pat;
	}
	if (!alloc_ok(ch, a, w))
		w->bad++;
}

/* Free what the other worker handed over: it was allocated there. */
static void
drain_box(worker_t *w)
{
	churn_t *ch = w->ch;
	worker_t *from = ch->w[1 - w->id];
	alloc_t got[NHANDOFF];
	int n;

	pthread_mutex_lock(&ch->lock);
	n = ch->nbox[w->id];
	memcpy(got, ch->box[w->id], (size_t)n * sizeof (got[0]));
	ch->nbox[w->id] = 0;
	pthread_mutex_unlock(&ch->lock);
	for (int i = 0; i < n; i++) {
		if (!alloc_ok(ch, &got[i], from))
			w->bad++;
		/* Retag through an address inside, from this thread. */
		if (segkp_set_tag(ch->seg, got[i].p + got[i].len / 2, w) != 0 ||
		    !alloc_ok(ch, &got[i], w))
			w->bad++;
		w->received++;
		alloc_release(w, &got[i]);
	}
}

/* Hand a to the other worker; 0 if its box is full. */
static int
hand_off(worker_t *w, alloc_t *a)
{
	churn_t *ch = w->ch;
	int to = 1 - w->id, ok = 0;

	pthread_mutex_lock(&ch->lock);
	if (ch->nbox[to] < NHANDOFF) {
		ch->box[to][ch->nbox[to]++] = *a;
		ok = 1;
	}
	pthread_mutex_unlock(&ch->lock);
	if (ok) {
		w->handed++;
		a->p = NULL;
	}
	return ok;
}

static void *
churn_worker(void *arg)
{
	worker_t *w = arg;
	churn_t *ch = w->ch;
	tu_rng_t r;

	tu_seed(&r, w->seed);
	for (int it = 0; it < ch->iters; it++) {
		alloc_t *a = &w->live[tu_range(&r, 0, NLIVE - 1)];

		if ((it & 7) == 0)
			drain_box(w);
		/* Now and then a worker reaps and checks too, so that two
		 * reaps, and a check, can meet one that has stacks off their
		 * list with the lock dropped. */
		if ((it & 511) == 511) {
			segkp_stats_t st;

			w->reaped += segkp_cache_reap(ch->seg,
			    SEGKP_REAP_IDLE);
			segkp_get_stats(ch->seg, &st);
			if (st.gets != st.releases + st.inuse + st.cached ||
			    st.cached > CACHE_MAX ||
			    segkp_check(ch->seg) != 0)
				w->bad++;
		}
		if (a->p == NULL) {
			alloc_new(w, a, &r);
			continue;
		}
		if (!alloc_ok(ch, a, w))
			w->bad++;
		if (tu_range(&r, 0, 3) == 0 && hand_off(w, a))
			continue;
		alloc_release(w, a);
	}
	for (int i = 0; i < NLIVE; i++)
		if (w->live[i].p != NULL)
			alloc_release(w, &w->live[i]);
	drain_box(w);
	atomic_fetch_sub(&ch->running, 1);
	return NULL;
}

/*
 * The main thread's side while the workers run: statistics, the
 * consistency check, lookups of addresses the workers may be getting or
 * releasing at that moment, and reaps of the cache. (Until 2026-11-26 a
 * reap's stacks, off their list while it decommitted them, made a
 * concurrent check fail and let releases overfill the cache.)
 */
static void
watch_segment(churn_t *ch, uint64_t *reaped, int *bad, tu_rng_t *r)
{
	uintptr_t lo = kas_base(segkp_kas(ch->seg));
	segkp_stats_t st;
	segkp_info_t in;
	int round = 0;

	while (atomic_load(&ch->running) > 0) {
		/* The fixed segment, or the bottom of the heap, where a
		 * fromheap segment's imports land. */
		uintptr_t a = lo + (uintptr_t)tu_range(r, 0, 4 * MIB - 1);

		segkp_get_stats(ch->seg, &st);
		if (st.gets != st.releases + st.inuse + st.cached ||
		    st.cached > CACHE_MAX)
			(*bad)++;
		if (segkp_find(ch->seg, (void *)a, &in) == 1 &&
		    (a - in.base >= in.size || in.addr != in.base + in.redzone ||
		    in.len + in.redzone != in.size || in.redzone != ch->ps))
			(*bad)++;
		if (++round % 16 == 0 && segkp_check(ch->seg) != 0)
			(*bad)++;
		*reaped += segkp_cache_reap(ch->seg, SEGKP_REAP_IDLE);
		sched_yield();
	}
}

static void
churn_setup(kas_backing_t backing, segkp_placement_t pl)
{
	kas_config_t cfg;
	kas_t *kas;
	churn_t ch;
	worker_t w[NWORKERS];
	pthread_t pt[NWORKERS];
	segkp_stats_t st;
	uint64_t g = 0, gf = 0, cg = 0, cgf = 0, rel = 0, crel = 0;
	uint64_t handed = 0, received = 0, reaped = 0;
	int bad = 0;
	tu_rng_t r;

	kas_config_init(&cfg);
	cfg.backing = backing;
	cfg.size = 64 * MIB;
	cfg.name = backing == KAS_REAL ? "thr_real" : "thr_sim";
	if (pl == SEGKP_FIXED) {
		cfg.nheap_spans = 1;
		cfg.heap_spans[0].start = 4 * MIB;
		cfg.heap_spans[0].end = 64 * MIB;
	}
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);

	memset(&ch, 0, sizeof (ch));
	ch.seg = pl == SEGKP_FIXED ? segkp_create(kas, SEGKP_FIXED,
	    (void *)kas_base(kas), 4 * MIB) :
	    segkp_create(kas, SEGKP_FROMHEAP, NULL, 0);
	REQUIRE(ch.seg != NULL);
	ch.ps = segkp_pagesize(ch.seg);
	ch.real = backing == KAS_REAL;
	ch.iters = tu_slow_build() ? 10000 : 20000;
	ch.cache = segkp_cache_init(ch.seg, CACHE_MAX, CACHE_PAGES * ch.ps,
	    KPD_HASREDZONE | KPD_NOWAIT);
	REQUIRE(ch.cache != NULL);
	REQUIRE(pthread_mutex_init(&ch.lock, NULL) == 0);
	atomic_init(&ch.running, NWORKERS);
	memset(w, 0, sizeof (w));
	for (int i = 0; i < NWORKERS; i++) {
		w[i].ch = &ch;
		w[i].id = i;
		w[i].seed = 0x5e9c0 + 97 * (uint64_t)i + 13 * (uint64_t)pl +
		    (uint64_t)backing;
		ch.w[i] = &w[i];
	}
	for (int i = 0; i < NWORKERS; i++)
		REQUIRE(pthread_create(&pt[i], NULL, churn_worker, &w[i]) == 0);
	tu_seed(&r, 77);
	watch_segment(&ch, &reaped, &bad, &r);
	for (int i = 0; i < NWORKERS; i++)
		REQUIRE(pthread_join(pt[i], NULL) == 0);
	CHECK_EQ(bad, 0);

	/* Hand-offs the other worker was gone to take. */
	for (int i = 0; i < NWORKERS; i++) {
		for (int k = 0; k < ch.nbox[i]; k++)
			alloc_release(&w[1 - i], &ch.box[i][k]);
		ch.nbox[i] = 0;
	}
	for (int i = 0; i < NWORKERS; i++) {
		CHECK_EQ(w[i].bad, 0);
		g += w[i].gets;
		gf += w[i].get_fail;
		cg += w[i].cgets;
		cgf += w[i].cget_fail;
		rel += w[i].releases;
		crel += w[i].cache_releases;
		handed += w[i].handed;
		received += w[i].received;
		reaped += w[i].reaped;
	}
	/* Both sides of every path ran. */
	CHECK(g > 0 && cg > 0 && handed > 0 && received > 0);
	/* A 4 MiB segment holds 2 * (NLIVE + NHANDOFF) 5-page stacks. */
	CHECK_EQ(gf, 0);
	CHECK_EQ(cgf, 0);

	/*
	 * src/segkp.c: gets counts allocations made (segkp_get, cache
	 * misses); cache_hits + cache_misses every segkp_cache_get;
	 * get_fail every NULL (a hit whose reaped pages cannot come back
	 * counts as a hit, a release and a failure). A release of a cache's
	 * stack is a put or finds the cache full, then a release.
	 */
	segkp_get_stats(ch.seg, &st);
	CHECK_EQ(st.inuse, 0);
	CHECK_EQ(st.get_fail, gf + cgf);
	CHECK_EQ(st.cache_hits + st.cache_misses, cg + cgf);
	CHECK(st.gets + st.cache_hits >= g + cg &&
	    st.gets + st.cache_hits <= g + cg + cgf);
	CHECK_EQ(st.cache_puts + st.cache_full, crel);
	CHECK(st.releases + st.cache_puts >= rel &&
	    st.releases + st.cache_puts <= rel + cgf);
	CHECK(st.cache_hits > 0 && st.cache_puts > 0 && st.cache_full > 0);
	CHECK_EQ(st.gets, st.releases + st.cached);
	CHECK(st.cached <= CACHE_MAX);
	CHECK_EQ(st.reaped_pages, reaped);
	CHECK(segkp_check(ch.seg) == 0);

	segkp_cache_destroy(ch.cache);
	segkp_get_stats(ch.seg, &st);
	CHECK_EQ(st.cached, 0);
	CHECK_EQ(st.gets, st.releases);
	CHECK_EQ(st.pages_committed, 0);
	CHECK(segkp_check(ch.seg) == 0);
	pthread_mutex_destroy(&ch.lock);
	segkp_destroy(ch.seg);
	kas_destroy(kas);
}

static void test_churn_real_fixed(void) { churn_setup(KAS_REAL, SEGKP_FIXED); }
static void test_churn_real_fromheap(void)
{
	churn_setup(KAS_REAL, SEGKP_FROMHEAP);
}
static void test_churn_sim_fixed(void) { churn_setup(KAS_SIM, SEGKP_FIXED); }
static void test_churn_sim_fromheap(void)
{
	churn_setup(KAS_SIM, SEGKP_FROMHEAP);
}

/* ------------------------------------------------------------------ */
/* kthreads created, joined and detached from two threads. */

#define KT_PENDING 4 /* joinable kthreads a creator keeps running */

static size_t kt_expect_len;
static atomic_int kt_detached_ran;
static atomic_int kt_detached_bad;

/* The kthread runs on the stack kthread_stack says it has. */
static int
on_own_stack(void)
{
	kthread_t *self = kthread_self();
	void *lo;
	size_t len;
	int local = 0;

	if (self == NULL)
		return 0;
	kthread_stack(self, &lo, &len);
	return len == kt_expect_len && (char *)&local >= (char *)lo &&
	    (char *)&local < (char *)lo + len;
}

static void *
kt_joinable(void *arg)
{
	return on_own_stack() ? arg : NULL;
}

static void *
kt_detached(void *arg)
{
	if (!on_own_stack())
		atomic_fetch_add(&kt_detached_bad, 1);
	atomic_fetch_add(&kt_detached_ran, 1);
	return arg;
}

typedef struct creator {
	int id;
	int n;
	atomic_int *running;
	int created, detached, joined, fail, bad;
} creator_t;

static void
join_one(creator_t *c, kthread_t *t, void *expect)
{
	void *ret = NULL;

	if (kthread_join(t, &ret) != 0 || ret != expect)
		c->bad++;
	else
		c->joined++;
}

static void *
kt_creator(void *arg)
{
	creator_t *c = arg;
	kthread_t *pend[KT_PENDING];
	void *parg[KT_PENDING];
	int npend = 0;
	kthread_attr_t a;

	kthread_attr_init(&a);
	a.stacksize = KT_STACKSIZE;
	for (int i = 0; i < c->n; i++) {
		void *targ = (void *)(uintptr_t)(((uintptr_t)c->id << 20) |
		    (uintptr_t)(i + 1));
		kthread_t *t;

		a.detached = i % 4 == 3;
		t = kthread_create(a.detached ? kt_detached : kt_joinable,
		    targ, &a);
		if (t == NULL) {
			c->fail++;
			continue;
		}
		c->created++;
		/* A detached kthread may be reaped already: t is stale. */
		if (a.detached) {
			c->detached++;
			continue;
		}
		if (npend == KT_PENDING) {
			join_one(c, pend[0], parg[0]);
			memmove(pend, pend + 1, (KT_PENDING - 1) *
			    sizeof (pend[0]));
			memmove(parg, parg + 1, (KT_PENDING - 1) *
			    sizeof (parg[0]));
			npend--;
		}
		pend[npend] = t;
		parg[npend++] = targ;
	}
	for (int i = 0; i < npend; i++)
		join_one(c, pend[i], parg[i]);
	atomic_fetch_sub(c->running, 1);
	return NULL;
}

static void
test_kthreads_two_creators(void)
{
	creator_t c[NWORKERS];
	pthread_t pt[NWORKERS];
	kthread_stats_t before, after;
	atomic_int running;
	segkp_stats_t st;
	int created = 0, detached = 0, joined = 0, polls = 0;
	size_t reaped_here = 0;

	REQUIRE(kthread_init(NULL) == 0);
	kt_expect_len = KT_STACKSIZE != 0 ? KT_STACKSIZE :
	    KTHREAD_STACK_PAGES * segkp_pagesize(kthread_segkp());
	kthread_get_stats(&before);
	atomic_init(&running, NWORKERS);
	memset(c, 0, sizeof (c));
	for (int i = 0; i < NWORKERS; i++) {
		c[i].id = i;
		c[i].n = tu_slow_build() ? 300 : 600;
		c[i].running = &running;
		REQUIRE(pthread_create(&pt[i], NULL, kt_creator, &c[i]) == 0);
	}
	/*
	 * The library's reaper thread joins detached kthreads too; this
	 * loop races it, and the segment sees both kinds of release. A
	 * kthread is counted before pthread_create, so a detached one that
	 * finishes and is reaped at once never makes reaped exceed created
	 * or alive wrap below 0 (it did until 2026-11-26).
	 */
	while (atomic_load(&running) > 0) {
		kthread_stats_t s;

		reaped_here += kthread_reap();
		kthread_get_stats(&s);
		CHECK(s.reaped - before.reaped <= s.created - before.created);
		CHECK(s.alive <= (size_t)(s.created - before.created) +
		    before.alive);
		if (++polls % 16 == 0) {
			CHECK(segkp_check(kthread_segkp()) == 0);
			(void)segkp_cache_reap(kthread_segkp(), SEGKP_REAP_IDLE);
		}
		sched_yield();
	}
	for (int i = 0; i < NWORKERS; i++) {
		REQUIRE(pthread_join(pt[i], NULL) == 0);
		CHECK_EQ(c[i].fail, 0);
		CHECK_EQ(c[i].bad, 0);
		created += c[i].created;
		detached += c[i].detached;
		joined += c[i].joined;
	}
	/* Detached kthreads still finishing: reap until every one is. */
	for (int ms = 0; ms < 60000; ms++) {
		kthread_get_stats(&after);
		if (after.reaped - before.reaped >= (uint64_t)detached)
			break;
		reaped_here += kthread_reap();
		pause_briefly();
	}
	kthread_get_stats(&after);
	CHECK(detached > 0 && joined > 0);
	CHECK_EQ(atomic_load(&kt_detached_ran), detached);
	CHECK_EQ(atomic_load(&kt_detached_bad), 0);
	CHECK_EQ(after.created - before.created, created);
	CHECK_EQ(after.create_fail - before.create_fail, 0);
	CHECK_EQ(after.joined - before.joined, joined);
	CHECK_EQ(after.reaped - before.reaped, detached);
	CHECK(reaped_here <= (size_t)detached);
	CHECK_EQ(after.alive, 0);
	CHECK(segkp_check(kthread_segkp()) == 0);
	segkp_get_stats(kthread_segkp(), &st);
	CHECK_EQ(st.inuse, 0);
}

/* ------------------------------------------------------------------ */
/* Coroutines on two threads; their stacks go through one cache. */

#define NCORO  4
#define NYIELD 6

typedef struct coro_arg {
	uintptr_t base;
	int bad;
} coro_arg_t;

/* Yields base + 1 .. base + NYIELD, expects 1000 + each back. */
static void *
coro_body(void *arg)
{
	coro_arg_t *ca = arg;
	kthread_coro_t *self = kthread_coro_self();
	void *lo;
	size_t len;
	int local = 0;

	kthread_coro_stack(self, &lo, &len);
	if ((char *)&local < (char *)lo || (char *)&local >= (char *)lo + len ||
	    kthread_self() != NULL)
		ca->bad++;
	for (uintptr_t i = 1; i <= NYIELD; i++) {
		void *back = kthread_coro_yield((void *)(ca->base + i));

		if ((uintptr_t)back != ca->base + i + 1000)
			ca->bad++;
	}
	return (void *)~ca->base;
}

#define NSEEN 512

/*
 * One hand-over of stacks is made certain: runner 2 starts when runner 1
 * has given its first coroutines' stacks back, and runner 1 goes on when
 * runner 2 has taken them (and the main thread reaps only after that, so
 * they are still on top of the cache). Relaxed atomics on purpose: the
 * reused stack memory must be ordered by segkp's lock alone for TSan and
 * helgrind to judge it, not by this flag. Helgrind takes relaxed
 * accesses for plain ones, so the flag is marked as a benign race there.
 */
static atomic_int coro_stage;

static void
stage_wait(int stage)
{
	while (atomic_load_explicit(&coro_stage, memory_order_relaxed) < stage)
		sched_yield();
}

static void
stage_set(int stage)
{
	atomic_store_explicit(&coro_stage, stage, memory_order_relaxed);
}

typedef struct coro_runner {
	int id;
	int rounds;
	atomic_int *running;
	int created, bad;
	void *seen[NSEEN]; /* distinct stacks this thread ran on */
	int nseen;
} coro_runner_t;

static void
saw_stack(coro_runner_t *cr, kthread_coro_t *co)
{
	void *lo;
	size_t len;

	kthread_coro_stack(co, &lo, &len);
	for (int i = 0; i < cr->nseen; i++)
		if (cr->seen[i] == lo)
			return;
	if (cr->nseen < NSEEN)
		cr->seen[cr->nseen++] = lo;
}

static int
saw_both(const coro_runner_t *a, const coro_runner_t *b)
{
	for (int i = 0; i < a->nseen; i++)
		for (int k = 0; k < b->nseen; k++)
			if (a->seen[i] == b->seen[k])
				return 1;
	return 0;
}

static void *
coro_thread(void *arg)
{
	coro_runner_t *cr = arg;
	kthread_coro_t *co[NCORO];
	coro_arg_t ca[NCORO];

	if (cr->id == 2)
		stage_wait(1);
	for (int round = 0; round < cr->rounds; round++) {
		int live = 0;

		for (int i = 0; i < NCORO; i++) {
			ca[i].base = ((uintptr_t)cr->id << 24) |
			    ((uintptr_t)round << 8) | ((uintptr_t)i << 4);
			ca[i].bad = 0;
			co[i] = kthread_coro_create(coro_body, &ca[i], NULL, 0);
			if (co[i] == NULL) {
				cr->bad++;
				continue;
			}
			cr->created++;
			live++;
			saw_stack(cr, co[i]);
		}
		if (round == 0 && cr->id == 2)
			stage_set(2);
		/* Interleave them; resume i gets yield i (1-based). */
		for (uintptr_t step = 0; live > 0; step++) {
			for (int i = 0; i < NCORO; i++) {
				void *v;

				if (co[i] == NULL)
					continue;
				v = kthread_coro_resume(co[i], step == 0 ?
				    NULL : (void *)(ca[i].base + step + 1000));
				if (kthread_coro_done(co[i])) {
					if ((uintptr_t)v != ~ca[i].base ||
					    step != NYIELD)
						cr->bad++;
					cr->bad += ca[i].bad;
					kthread_coro_destroy(co[i]);
					co[i] = NULL;
					live--;
				} else if ((uintptr_t)v != ca[i].base + step + 1) {
					cr->bad++;
				}
			}
		}
		if (round == 0 && cr->id == 1) {
			stage_set(1);
			stage_wait(2);
		}
	}
	atomic_fetch_sub(cr->running, 1);
	return NULL;
}

static void
test_coroutines_two_threads(void)
{
	coro_runner_t cr[NWORKERS];
	pthread_t pt[NWORKERS];
	kthread_stats_t before, after;
	atomic_int running;
	segkp_stats_t st0, st;
	int created = 0, polls = 0;

	REQUIRE(kthread_init(NULL) == 0);
	kthread_get_stats(&before);
	segkp_get_stats(kthread_segkp(), &st0);
	atomic_init(&running, NWORKERS);
	stage_set(0);
	HG_BENIGN(&coro_stage, "hand-off flag, orders no memory");
	memset(cr, 0, sizeof (cr));
	for (int i = 0; i < NWORKERS; i++) {
		cr[i].id = i + 1;
		cr[i].rounds = tu_slow_build() ? 1000 : 2000;
		cr[i].running = &running;
		REQUIRE(pthread_create(&pt[i], NULL, coro_thread, &cr[i]) == 0);
	}
	/* A reaped cached stack comes back as fresh pages at its next get. */
	while (atomic_load(&running) > 0) {
		if (++polls % 16 == 0) {
			CHECK(segkp_check(kthread_segkp()) == 0);
			if (atomic_load_explicit(&coro_stage,
			    memory_order_relaxed) == 2)
				(void)segkp_cache_reap(kthread_segkp(),
				    SEGKP_REAP_IDLE);
		}
		sched_yield();
	}
	for (int i = 0; i < NWORKERS; i++) {
		REQUIRE(pthread_join(pt[i], NULL) == 0);
		CHECK_EQ(cr[i].bad, 0);
		created += cr[i].created;
	}
	kthread_get_stats(&after);
	CHECK_EQ(created, NWORKERS * cr[0].rounds * NCORO);
	CHECK_EQ(after.coro_created - before.coro_created, created);
	CHECK_EQ(after.coro_destroyed - before.coro_destroyed, created);
	CHECK_EQ(after.coro_alive, 0);
	CHECK(segkp_check(kthread_segkp()) == 0);
	segkp_get_stats(kthread_segkp(), &st);
	CHECK_EQ(st.inuse, 0);
	/* A stack one thread gave back, the other ran on. */
	CHECK(st.cache_hits - st0.cache_hits > 0);
	CHECK(saw_both(&cr[0], &cr[1]));
}

/* ------------------------------------------------------------------ */
/* fork() while kthreads come and go. */

#ifndef CHILD_NO_THREADS
/* A kthread and a detached one run in the child, and the child reaps the
 * detached one without being asked to. */
static int
child_runs_kthreads(void)
{
	kthread_attr_t a;
	kthread_stats_t st;
	kthread_t *t;
	void *ret = NULL;

	kthread_get_stats(&st);
	t = kthread_create(kt_joinable, &st, NULL);
	if (t == NULL || kthread_join(t, &ret) != 0 || ret != &st)
		return 0;
	kthread_attr_init(&a);
	a.detached = 1;
	if (kthread_create(kt_detached, NULL, &a) == NULL)
		return 0;
	for (int ms = 0; ms < 5000; ms++) {
		kthread_stats_t now;

		kthread_get_stats(&now);
		if (now.reaped > st.reaped)
			return 1;
		pause_briefly();
	}
	return 0;
}
#endif

/*
 * Only the forking thread (no kthread here) is in the child: whatever
 * the creators were doing at the instant of the fork -- taking stacks,
 * starting, joining, reaping -- none of their kthreads may count as alive
 * there, and every one of their stacks must be back in the segment. Then
 * it runs kthreads of its own (not under the sanitizers, see above).
 */
static int
fork_child_check(void)
{
	kthread_stats_t st;
	segkp_stats_t ss;

	kthread_get_stats(&st);
	segkp_get_stats(kthread_segkp(), &ss);
	if (st.alive != 0)
		return 2;
	if (ss.inuse != 0)
		return 3;
	if (segkp_check(kthread_segkp()) != 0)
		return 4;
#ifndef CHILD_NO_THREADS
	if (!child_runs_kthreads())
		return 5;
#endif
	return 0;
}

static void
parent_hung(int sig)
{
	static const char msg[] = "fork deadlocked in the parent (kthread's "
	    "prepare handler waits for stacks in flight)\n";

	(void)sig;
	(void)!write(2, msg, sizeof (msg) - 1);
	_exit(3);
}

static int
fork_and_check(void)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		signal(SIGALRM, SIG_DFL);   /* a hung child is killed */
		alarm(tu_slow_build() ? 60 : 10);
		_exit(fork_child_check());
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 1;
	fprintf(stderr, "  child: status 0x%x\n", (unsigned)status);
	return 0;
}

static void
test_fork_while_kthreads_come_and_go(void)
{
	creator_t c[NWORKERS];
	pthread_t pt[NWORKERS];
	atomic_int running;
	kthread_stats_t st;
	int forks = 0, max_forks = tu_slow_build() ? 10 : 40;

	REQUIRE(kthread_init(NULL) == 0);
	kt_expect_len = KT_STACKSIZE != 0 ? KT_STACKSIZE :
	    KTHREAD_STACK_PAGES * segkp_pagesize(kthread_segkp());
	atomic_init(&running, NWORKERS);
	memset(c, 0, sizeof (c));
	for (int i = 0; i < NWORKERS; i++) {
		c[i].id = i;
		c[i].n = tu_slow_build() ? 300 : 2000;
		c[i].running = &running;
		REQUIRE(pthread_create(&pt[i], NULL, kt_creator, &c[i]) == 0);
	}
	signal(SIGALRM, parent_hung);
	while (atomic_load(&running) > 0 && forks < max_forks) {
		alarm(tu_slow_build() ? 120 : 30);
		CHECK(fork_and_check());
		forks++;
	}
	alarm(0);
	signal(SIGALRM, SIG_DFL);
	for (int i = 0; i < NWORKERS; i++) {
		REQUIRE(pthread_join(pt[i], NULL) == 0);
		CHECK_EQ(c[i].fail, 0);
		CHECK_EQ(c[i].bad, 0);
	}
	for (int ms = 0; ms < 60000; ms++) {
		(void)kthread_reap();
		kthread_get_stats(&st);
		if (st.alive == 0)
			break;
		pause_briefly();
	}
	CHECK_EQ(st.alive, 0);
	CHECK(forks > 0);
	CHECK_EQ(atomic_load(&kt_detached_bad), 0);
	CHECK(segkp_check(kthread_segkp()) == 0);
	printf("  %d forks while kthreads came and went\n", forks);
}

static uint64_t
arena_waits(vmem_t *v)
{
	vmem_stats_t st;

	vmem_get_stats(v, &st);
	return st.wait;
}

typedef struct getter {
	segkp_t *seg;
	size_t len;
	atomic_int done;
	void *got;
} getter_t;

static void *
get_waiting(void *arg)
{
	getter_t *g = arg;

	g->got = segkp_get(g->seg, g->len, KPD_HASREDZONE);
	HG_HAPPENS_BEFORE(&g->done);
	atomic_store(&g->done, 1);
	return NULL;
}

/*
 * A get without KPD_NOWAIT on a full fixed segment waits until a stack is
 * released. Stacks up to 5 pages come from the arena's quantum caches, and
 * the release puts the stack back into one: the waiter used to wait in the
 * arena for a whole new slab, for ever.
 */
static void
test_fixed_get_waits_for_release(void)
{
	kas_config_t cfg;
	kas_t *kas;
	segkp_t *seg;
	void *held[64];
	int n = 0;
	getter_t g;
	pthread_t t;

	kas_config_init(&cfg);
	cfg.size = 64 * MIB;
	cfg.name = "thr_wait";
	cfg.nheap_spans = 1;
	cfg.heap_spans[0].start = 4 * MIB;
	cfg.heap_spans[0].end = 64 * MIB;
	kas = kas_create(&cfg);
	REQUIRE(kas != NULL);
	/* Three 64 KiB slabs of 2-page stacks with their redzones. */
	seg = segkp_create(kas, SEGKP_FIXED, (void *)kas_base(kas), 192 * KIB);
	REQUIRE(seg != NULL);
	memset(&g, 0, sizeof (g));
	g.seg = seg;
	g.len = 2 * segkp_pagesize(seg);
	while (n < 64 && (held[n] = segkp_get(seg, g.len,
	    KPD_HASREDZONE | KPD_NOWAIT)) != NULL)
		n++;
	REQUIRE(n > 3 && n < 64);
	for (int round = 0; round < 5; round++) {
		uint64_t w0 = arena_waits(segkp_arena(seg));
		int k = (round * 5) % n;

		atomic_init(&g.done, 0);
		REQUIRE(pthread_create(&t, NULL, get_waiting, &g) == 0);
		while (arena_waits(segkp_arena(seg)) == w0)
			sched_yield();
		CHECK_EQ(atomic_load(&g.done), 0);
		segkp_release(seg, held[k]);
		pthread_join(t, NULL);
		HG_HAPPENS_AFTER(&g.done);
		CHECK(g.got != NULL);
		held[k] = g.got;
	}
	for (int i = 0; i < n; i++)
		segkp_release(seg, held[i]);
	CHECK(segkp_check(seg) == 0);
	segkp_destroy(seg);
	kas_destroy(kas);
}

int
main(void)
{
	RUN(test_churn_real_fixed);
	RUN(test_churn_real_fromheap);
	RUN(test_churn_sim_fixed);
	RUN(test_churn_sim_fromheap);
	RUN(test_kthreads_two_creators);
	RUN(test_fork_while_kthreads_come_and_go);
	RUN(test_coroutines_two_threads);
	RUN(test_fixed_get_waits_for_release);
	return tu_finish();
}
