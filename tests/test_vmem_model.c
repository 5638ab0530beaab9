/*
 * Model-based randomized test of the vmem core.
 *
 * A "world" of six arenas -- two roots (one may sit at the very top of the
 * address space), two children of the first root (one importing with
 * vmem_alloc, one created by vmem_xcreate with a user import function that
 * may grow the span and may honour alignment), a grandchild, and a child
 * of the second root with a minimum import (VMC_NO_QCACHE + qcache_max) --
 * receives random operations: allocations with every policy, vmem_xalloc
 * with random valid constraints, frees, vmem_add, walks, vmem_size and
 * vmem_contains. A reference model keeps, per arena, the spans and the live
 * segments as plain sorted arrays of intervals, and every step is checked:
 *
 *  - every result is a quantum multiple, not 0, inside one span, overlaps
 *    no live segment and satisfies its constraints;
 *  - if the model has a free range that fits the request (constraints
 *    included), the call must succeed: no policy may miss a fit;
 *  - a VM_SLEEP request to a root that no span could ever satisfy returns
 *    NULL at once (VM_SLEEP is only used where the outcome is certain);
 *  - spans that children import appear as allocated segments of the
 *    parent; an imported span is never left completely free (it goes back
 *    at once); vmem_size matches the model for every arena;
 *  - walks (plain, VMEM_REENTRANT, and VMEM_REENTRANT with no memory for
 *    its snapshot, so in chunks) return exactly the model's segments;
 *  - vmem_check() passes after every step for the arena operated on and
 *    its sources (the only ones a step can change), and for all arenas
 *    every 64 steps; no error is reported.
 * The model learns of imports by watching the children's import/release
 * counters and re-reading their spans when those move.
 *
 * Intervals are kept as [start, last] (inclusive) so that a span ending at
 * 2^N needs no special case. Runs 1,000,000 steps (100,000 under
 * sanitizers); VMEM_STEPS overrides, VMEM_SEED replays (the seed is
 * printed first).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "vmem_testlib.h"

#define NARENA 6
#define MAXLIVE 96       /* user allocations per arena */
#define MAXSPAN 512
#define MAXSEG 1024
#define RESET_EVERY 25000

enum { A0, A1, C1, C2, G1, M1 };
static const int parent_of[NARENA] = { -1, -1, A0, A0, C1, A1 };

typedef struct {
	uintptr_t s, l;   /* inclusive */
} iv_t;

typedef struct {
	uintptr_t s, l;
	size_t req;       /* size as asked (for the free) */
	int kind;         /* 0 alloc, 1 xalloc, 2 import by child */
	int child;
} seg_t;

typedef struct {
	vmem_t *v;
	size_t q;
	int root;
	iv_t span[MAXSPAN];
	int nspan;
	seg_t seg[MAXSEG];   /* sorted by s */
	int nseg;
	int nuser;
	uint64_t imports, releases;
	uintptr_t lo, hi;    /* range used for min/max and contains */
	int xalign;
	size_t min_import;
	/* root only: where vmem_add may put spans */
	uintptr_t add_next;
	size_t span_max;
} am_t;

static am_t W[NARENA];
static tu_rng_t R;
static long step_no;
static size_t xgrow;        /* C2's import rounds up to this */
static tl_segs_t walkbuf;
static long n_ok, n_null, n_must, n_never, n_sleep, n_free;

/* ---- interval helpers ---- */

static int
seg_find(const am_t *m, uintptr_t s)  /* first index with seg.s >= s */
{
	int lo = 0, hi = m->nseg;

	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (m->seg[mid].s < s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int
overlaps_live(const am_t *m, uintptr_t s, uintptr_t l)
{
	int i = seg_find(m, s);

	if (i < m->nseg && m->seg[i].s <= l)
		return 1;
	if (i > 0 && m->seg[i - 1].l >= s)
		return 1;
	return 0;
}

static void
seg_insert(am_t *m, seg_t x)
{
	int i = seg_find(m, x.s);

	REQUIRE(m->nseg < MAXSEG);
	memmove(&m->seg[i + 1], &m->seg[i], (size_t)(m->nseg - i) *
	    sizeof (seg_t));
	m->seg[i] = x;
	m->nseg++;
	if (x.kind != 2)
		m->nuser++;
}

static void
seg_remove(am_t *m, int i)
{
	if (m->seg[i].kind != 2)
		m->nuser--;
	memmove(&m->seg[i], &m->seg[i + 1], (size_t)(m->nseg - i - 1) *
	    sizeof (seg_t));
	m->nseg--;
}

static int
span_of(const am_t *m, uintptr_t s, uintptr_t l)
{
	for (int i = 0; i < m->nspan; i++)
		if (m->span[i].s <= s && l <= m->span[i].l)
			return i;
	return -1;
}

static size_t
span_total(const am_t *m)
{
	size_t t = 0;

	for (int i = 0; i < m->nspan; i++)
		t += m->span[i].l - m->span[i].s + 1;
	return t;
}

static size_t
alloc_total(const am_t *m)
{
	size_t t = 0;

	for (int i = 0; i < m->nseg; i++)
		t += m->seg[i].l - m->seg[i].s + 1;
	return t;
}

static int
iv_cmp(const void *a, const void *b)
{
	const iv_t *x = a, *y = b;

	return x->s < y->s ? -1 : x->s > y->s;
}

/* Free intervals of the model, per span, in address order. */
static int
model_free(const am_t *m, iv_t *out, int max)
{
	iv_t sp[MAXSPAN];
	int n = 0;

	memcpy(sp, m->span, (size_t)m->nspan * sizeof (iv_t));
	qsort(sp, (size_t)m->nspan, sizeof (iv_t), iv_cmp);
	for (int k = 0; k < m->nspan; k++) {
		uintptr_t cur = sp[k].s;
		int done = 0;
		for (int i = seg_find(m, sp[k].s); i < m->nseg &&
		    m->seg[i].s <= sp[k].l; i++) {
			if (m->seg[i].s > cur) {
				REQUIRE(n < max);
				out[n].s = cur;
				out[n++].l = m->seg[i].s - 1;
			}
			if (m->seg[i].l == sp[k].l) {
				done = 1;
				break;
			}
			cur = m->seg[i].l + 1;
		}
		if (!done) {
			REQUIRE(n < max);
			out[n].s = cur;
			out[n++].l = sp[k].l;
		}
	}
	return n;
}

/* ---- requests and the reference fit ---- */

typedef struct {
	size_t size, rsize, align, phase, nocross;
	uintptr_t minaddr, maxaddr;
	int flags, x;
} req_t;

/* Lowest address in [s, l] satisfying r, or 0 (never a valid result). */
static uintptr_t
ref_fit(uintptr_t s, uintptr_t l, const req_t *r)
{
	uintptr_t lo = s, hi = l, a;
	size_t al = r->align ? r->align : 1;

	if (r->minaddr > lo)
		lo = r->minaddr;
	if (r->maxaddr != 0 && r->maxaddr - 1 < hi)
		hi = r->maxaddr - 1;
	if (lo > hi || hi - lo < r->rsize - 1)
		return 0;
	a = lo + ((r->phase - lo) & (al - 1));
	if (a < lo)
		return 0;
	if (r->nocross != 0 && UINTPTR_MAX - a >= r->rsize - 1 &&
	    (a & ~(r->nocross - 1)) != ((a + r->rsize - 1) &
	    ~(r->nocross - 1))) {
		uintptr_t b = (a & ~(r->nocross - 1)) + r->nocross;
		if (b == 0)
			return 0;
		a = b + ((r->phase - b) & (al - 1));
		if (a < b)
			return 0;
	}
	if (a > hi || hi - a < r->rsize - 1)
		return 0;
	return a;
}

static int
fit_exists(const am_t *m, const req_t *r)
{
	static iv_t fr[MAXSEG + MAXSPAN];
	int n = model_free(m, fr, MAXSEG + MAXSPAN);

	for (int i = 0; i < n; i++)
		if (ref_fit(fr[i].s, fr[i].l, r) != 0)
			return 1;
	return 0;
}

/*
 * Best fit's answer: the length of the smallest free range that holds r
 * (0 if none), and that range's index in fr[] for each of the n ranges.
 */
static uintptr_t
best_fit_len(const am_t *m, const req_t *r, iv_t *fr, int *n)
{
	uintptr_t best = 0;

	*n = model_free(m, fr, MAXSEG + MAXSPAN);
	for (int i = 0; i < *n; i++) {
		uintptr_t len = fr[i].l - fr[i].s;   /* length - 1 */
		if (ref_fit(fr[i].s, fr[i].l, r) != 0 &&
		    (best == 0 || len + 1 < best))
			best = len + 1;
	}
	return best;
}

/* The length of the free range of fr[] that holds a. */
static uintptr_t
range_len_at(const iv_t *fr, int n, uintptr_t a)
{
	for (int i = 0; i < n; i++)
		if (fr[i].s <= a && a <= fr[i].l)
			return fr[i].l - fr[i].s + 1;
	return 0;
}

static int
ever_fits(const am_t *m, const req_t *r)
{
	for (int i = 0; i < m->nspan; i++)
		if (ref_fit(m->span[i].s, m->span[i].l, r) != 0)
			return 1;
	return 0;
}

static int
satisfies(uintptr_t a, const req_t *r)
{
	uintptr_t l = a + r->rsize - 1;

	if (a == 0 || l < a)
		return 0;
	if (r->align && a % r->align != r->phase)
		return 0;
	if (r->nocross && (a & ~(r->nocross - 1)) != (l & ~(r->nocross - 1)))
		return 0;
	if (a < r->minaddr)
		return 0;
	if (r->maxaddr && l > r->maxaddr - 1)
		return 0;
	return 1;
}

/* ---- the world ---- */

static void *
c2_import(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	size_t sz = *sizep;
	void *a;

	if (xgrow > 0 && sz <= SIZE_MAX - xgrow)
		sz = (sz + xgrow - 1) / xgrow * xgrow;
	a = vmem_xalloc(src, sz, align > vmem_quantum(src) ? align : 0, 0, 0,
	    NULL, NULL, vmflag & VM_NOSLEEP);
	if (a != NULL)
		*sizep = sz;
	return a;
}

static void
c2_release(vmem_t *src, void *addr, size_t size)
{
	vmem_xfree(src, addr, size);
}

static void
model_add_span(am_t *m, uintptr_t s, size_t size)
{
	REQUIRE(m->nspan < MAXSPAN);
	m->span[m->nspan].s = s;
	m->span[m->nspan++].l = s + (size - 1);
}

static void
world_create(void)
{
	static const size_t qs[] = { 1, 16, 4096 };
	size_t q = qs[tu_range(&R, 0, 2)];
	size_t cq = q >= 16 && tu_range(&R, 0, 1) ? q / 4 : q;
	size_t n0 = tu_range(&R, 256, 1024), n1 = tu_range(&R, 64, 512);
	int idflag = q == 1 ? VMC_IDENTIFIER : 0;
	uintptr_t b0 = q * (2 * tu_range(&R, 1, 1000) + 1) * 4096;
	uintptr_t b1;
	int top = (int)tu_range(&R, 0, 2);

	memset(W, 0, sizeof (W));
	/* A1: at the top of the address space (ending at 2^N, or one or a
	 * few quanta below it), or in the middle. */
	if (top == 0)
		b1 = b0 + 64 * n0 * q;
	else
		b1 = (uintptr_t)0 - (n1 + tu_range(&R, 0, 2)) * q;
	W[A0].q = q;
	W[A0].root = 1;
	W[A0].v = vmem_create("m_root0", TL_PTR(b0), n0 * q, q, NULL, NULL,
	    NULL, 0, idflag | VM_SLEEP);
	model_add_span(&W[A0], b0, n0 * q);
	W[A0].add_next = b0 + n0 * q + tu_range(&R, 0, 4) * q;
	W[A0].span_max = 1024 * q;
	W[A0].lo = b0;
	W[A0].hi = b0 + 16 * 1024 * q;
	W[A1].q = q;
	W[A1].root = 1;
	W[A1].v = vmem_create("m_root1", TL_PTR(b1), n1 * q, q, NULL, NULL,
	    NULL, 0, idflag | VM_SLEEP);
	model_add_span(&W[A1], b1, n1 * q);
	W[A1].lo = b1;
	W[A1].hi = b1 + (n1 - 1) * q; /* no vmem_add near the top */
	W[A1].span_max = 0;

	W[C1].q = cq;
	W[C1].v = vmem_create("m_child1", NULL, 0, cq, vmem_alloc, vmem_free,
	    W[A0].v, 0, idflag | VM_SLEEP);
	xgrow = tu_range(&R, 0, 1) ? q * tu_range(&R, 1, 8) : 0;
	W[C2].q = cq;
	W[C2].xalign = (int)tu_range(&R, 0, 1);
	W[C2].v = vmem_xcreate("m_child2", NULL, 0, cq, c2_import, c2_release,
	    W[A0].v, 0, (W[C2].xalign ? VMC_XALIGN : 0) | idflag | VM_SLEEP);
	W[G1].q = cq;
	W[G1].v = vmem_create("m_grand", NULL, 0, cq, vmem_alloc, vmem_free,
	    W[C1].v, 0, idflag | VM_SLEEP);
	W[M1].q = q;
	{
		size_t qmax = q * tu_range(&R, 1, 4), slab = 64;
		while (slab <= 3 * qmax)
			slab <<= 1;
		W[M1].min_import = slab;
		W[M1].v = vmem_create("m_minimp", NULL, 0, q, vmem_alloc,
		    vmem_free, W[A1].v, qmax, VMC_NO_QCACHE | idflag |
		    VM_SLEEP);
	}
	for (int i = 0; i < NARENA; i++) {
		REQUIRE(W[i].v != NULL);
		if (!W[i].root) {
			W[i].lo = W[parent_of[i]].lo;
			W[i].hi = W[parent_of[i]].hi;
		}
	}
}

/* A child's spans as the arena reports them, re-read when they moved. */
static iv_t now_span[NARENA][MAXSPAN];
static int now_n[NARENA], moved[NARENA];

static void
read_spans(int c)
{
	am_t *m = &W[c];
	vmem_stats_t st = tl_stats(m->v);

	moved[c] = st.import != m->imports || st.release != m->releases;
	if (!moved[c]) {
		CHECK_EQ(st.nspans, (size_t)m->nspan);
		return;
	}
	m->imports = st.import;
	m->releases = st.release;
	tl_walk(m->v, VMEM_SPAN, &walkbuf);
	REQUIRE(walkbuf.n <= MAXSPAN);
	now_n[c] = (int)walkbuf.n;
	for (int i = 0; i < now_n[c]; i++) {
		now_span[c][i].s = walkbuf.v[i].start;
		now_span[c][i].l = walkbuf.v[i].start +
		    (walkbuf.v[i].size - 1);
	}
	CHECK_EQ(st.nspans, (size_t)now_n[c]);
}

static int
in_list(const iv_t *v, int n, const iv_t *x)
{
	for (int i = 0; i < n; i++)
		if (v[i].s == x->s && v[i].l == x->l)
			return 1;
	return 0;
}

/* Released spans leave the parent; they must have been empty. */
static void
sync_releases(int c)
{
	am_t *m = &W[c], *p = &W[parent_of[c]];

	if (!moved[c])
		return;
	for (int k = 0; k < m->nspan; k++) {
		if (in_list(now_span[c], now_n[c], &m->span[k]))
			continue;
		CHECK(!overlaps_live(m, m->span[k].s, m->span[k].l));
		int j = seg_find(p, m->span[k].s);
		CHECK(j < p->nseg && p->seg[j].s == m->span[k].s &&
		    p->seg[j].l == m->span[k].l && p->seg[j].kind == 2 &&
		    p->seg[j].child == c);
		if (j < p->nseg && p->seg[j].s == m->span[k].s)
			seg_remove(p, j);
		m->span[k--] = m->span[--m->nspan];
	}
}

/*
 * The operation being checked had an address window: an import then takes
 * less than the minimum import when the window cannot hold that much.
 */
static int op_windowed;

/* New spans are allocated segments of the parent. */
static void
sync_imports(int c)
{
	am_t *m = &W[c], *p = &W[parent_of[c]];

	if (!moved[c])
		return;
	for (int i = 0; i < now_n[c]; i++) {
		const iv_t *x = &now_span[c][i];
		if (in_list(m->span, m->nspan, x))
			continue;
		CHECK(span_of(p, x->s, x->l) >= 0);
		CHECK(!overlaps_live(p, x->s, x->l));
		CHECK(x->s % m->q == 0 && x->s % p->q == 0);
		if (m->min_import && !op_windowed)
			CHECK(x->l - x->s + 1 >= m->min_import);
		seg_t sg = { x->s, x->l, 0, 2, c };
		seg_insert(p, sg);
	}
	memcpy(m->span, now_span[c], (size_t)now_n[c] * sizeof (iv_t));
	m->nspan = now_n[c];
}

/* The full re-read: every child's spans from a walk. */
static void
sync_by_walk(void)
{
	static const int leaves_first[] = { G1, C1, C2, M1 };
	static const int roots_first[] = { C1, C2, M1, G1 };

	for (int k = 0; k < 4; k++) {
		W[leaves_first[k]].imports = UINT64_MAX; /* force */
		read_spans(leaves_first[k]);
	}
	for (int k = 0; k < 4; k++)
		sync_releases(leaves_first[k]);
	for (int k = 0; k < 4; k++)
		sync_imports(roots_first[k]);
}

static int
is_ancestor_or_self(int c, int ai)
{
	for (int x = ai; x >= 0; x = parent_of[x])
		if (x == c)
			return 1;
	return 0;
}

/* Bounds of child c's span holding anchor, found with vmem_contains. */
static int
probe_span(int c, uintptr_t anchor, iv_t *out)
{
	am_t *m = &W[c], *p = &W[parent_of[c]];
	int k = span_of(p, anchor, anchor);
	uintptr_t lo, hi;
	size_t q = m->q;

	if (k < 0 || !vmem_contains(m->v, TL_PTR(anchor), q))
		return 0;
	anchor -= anchor % q;
	/* smallest start s with [s, anchor + q) inside one span */
	lo = (p->span[k].s + q - 1) / q;
	hi = anchor / q;
	while (lo < hi) {
		uintptr_t mid = lo + (hi - lo) / 2;
		if (vmem_contains(m->v, TL_PTR(mid * q), anchor + q - mid * q))
			hi = mid;
		else
			lo = mid + 1;
	}
	out->s = lo * q;
	/* largest last l with [anchor, l] inside one span */
	lo = anchor / q;
	hi = p->span[k].l / q;
	while (lo < hi) {
		uintptr_t mid = lo + (hi - lo + 1) / 2;
		if (vmem_contains(m->v, TL_PTR(anchor), mid * q - anchor + q))
			lo = mid;
		else
			hi = mid - 1;
	}
	out->l = lo * q + q - 1;
	return 1;
}

static long n_walk_syncs;

/*
 * After an operation on arena ai (anchor: the address it returned, or 0):
 * spans the model says are empty must have gone back; a child that
 * imported holds a new span around the anchor. Walks only if the arena's
 * span count disagrees with that prediction.
 */
static void
sync_all(int ai, uintptr_t anchor)
{
	static const int leaves_first[] = { G1, C1, C2, M1 };
	static const int roots_first[] = { C1, C2, M1, G1 };
	vmem_stats_t st[NARENA];
	int mismatch = 0;

	for (int c = C1; c < NARENA; c++) {
		st[c] = tl_stats(W[c].v);
		moved[c] = st[c].import != W[c].imports ||
		    st[c].release != W[c].releases;
	}
	for (int k = 0; k < 4; k++) {
		int c = leaves_first[k];
		am_t *m = &W[c], *p = &W[parent_of[c]];
		for (int j = 0; moved[c] && j < m->nspan; j++) {
			iv_t sp = m->span[j];
			if (overlaps_live(m, sp.s, sp.l))
				continue;
			int i = seg_find(p, sp.s);
			CHECK(i < p->nseg && p->seg[i].s == sp.s &&
			    p->seg[i].l == sp.l && p->seg[i].kind == 2);
			if (i < p->nseg && p->seg[i].s == sp.s)
				seg_remove(p, i);
			m->span[j--] = m->span[--m->nspan];
		}
	}
	for (int k = 0; anchor != 0 && k < 4; k++) {
		int c = roots_first[k];
		am_t *m = &W[c], *p = &W[parent_of[c]];
		iv_t x;
		if (!moved[c] || !is_ancestor_or_self(c, ai) ||
		    span_of(m, anchor, anchor) >= 0 || !probe_span(c, anchor, &x))
			continue;
		CHECK(span_of(p, x.s, x.l) >= 0);
		CHECK(!overlaps_live(p, x.s, x.l));
		CHECK(x.s % p->q == 0);
		if (m->min_import && !op_windowed)
			CHECK(x.l - x.s + 1 >= m->min_import);
		seg_t sg = { x.s, x.l, 0, 2, c };
		seg_insert(p, sg);
		model_add_span(m, x.s, x.l - x.s + 1);
	}
	for (int c = C1; c < NARENA; c++) {
		W[c].imports = st[c].import;
		W[c].releases = st[c].release;
		if (st[c].nspans != (size_t)W[c].nspan)
			mismatch = 1;
	}
	if (mismatch) {
		n_walk_syncs++;
		sync_by_walk();
	}
}

/* No imported span is left completely free. */
static void
check_no_empty_imports(void)
{
	for (int c = C1; c < NARENA; c++)
		for (int k = 0; k < W[c].nspan; k++)
			if (!overlaps_live(&W[c], W[c].span[k].s,
			    W[c].span[k].l)) {
				fprintf(stderr, "arena %s: imported span "
				    "%#" PRIxPTR " left free\n",
				    vmem_name(W[c].v), W[c].span[k].s);
				tu_failures++;
			}
}

static void
check_sizes(int i)
{
	am_t *m = &W[i];
	size_t al = alloc_total(m), tot = span_total(m);

	CHECK_EQ(vmem_size(m->v, VMEM_ALLOC), al);
	CHECK_EQ(vmem_size(m->v, VMEM_FREE), tot - al);
	CHECK_EQ(vmem_size(m->v, VMEM_ALLOC | VMEM_FREE), tot);
}

static int
seg_cmp(const void *a, const void *b)
{
	const tl_seg_t *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Refuses metadata pages: a reentrant walk then has no room for its
 * snapshot and goes in chunks. */
static int
no_metadata(const char *site, void *arg)
{
	(void)arg;
	return strcmp(site, "metadata") == 0;
}

/* mode 0: locked walk; 1: reentrant; 2: reentrant without memory. */
static void
check_walks(int i, int mode)
{
	am_t *m = &W[i];
	static iv_t fr[MAXSEG + MAXSPAN];
	int rf = mode != 0 ? (int)VMEM_REENTRANT : 0;
	int n;

	if (mode == 2) {
		vmem_set_fault_hook(no_metadata, NULL);
		tl_walk(m->v, VMEM_ALLOC | rf, &walkbuf);
		vmem_set_fault_hook(NULL, NULL);
	} else {
		tl_walk(m->v, VMEM_ALLOC | rf, &walkbuf);
	}
	/* Walk order is address order within a span; spans may come in
	 * arrival order: sort before comparing. */
	qsort(walkbuf.v, walkbuf.n, sizeof (tl_seg_t), seg_cmp);
	CHECK_EQ(walkbuf.n, (size_t)m->nseg);
	for (size_t k = 0; k < walkbuf.n && k < (size_t)m->nseg; k++) {
		CHECK_EQ(walkbuf.v[k].start, m->seg[k].s);
		CHECK_EQ(walkbuf.v[k].size, m->seg[k].l - m->seg[k].s + 1);
	}
	n = model_free(m, fr, MAXSEG + MAXSPAN);
	tl_walk(m->v, VMEM_FREE | rf, &walkbuf);
	qsort(walkbuf.v, walkbuf.n, sizeof (tl_seg_t), seg_cmp);
	CHECK_EQ(walkbuf.n, (size_t)n);
	for (size_t k = 0; k < walkbuf.n && k < (size_t)n; k++) {
		CHECK_EQ(walkbuf.v[k].start, fr[k].s);
		CHECK_EQ(walkbuf.v[k].size, fr[k].l - fr[k].s + 1);
	}
	tl_walk(m->v, VMEM_SPAN, &walkbuf);
	CHECK_EQ(walkbuf.n, (size_t)m->nspan);
	for (size_t k = 0; k < walkbuf.n; k++) {
		iv_t x = { walkbuf.v[k].start, walkbuf.v[k].start +
		    (walkbuf.v[k].size - 1) };
		CHECK(in_list(m->span, m->nspan, &x));
	}
}

/* ---- operations ---- */

/*
 * Sizes in quanta: mostly 1-16 (classes of one size each below 16), but
 * one in six 17-64, where a class holds two to eight sizes and best fit
 * must still find the least fitting one (its learnt bounds could hide it),
 * and now and then up to 128.
 */
static size_t
rand_size(am_t *m, size_t *rsize)
{
	uint64_t pick = tu_range(&R, 0, 19);
	size_t n = pick == 0 ? tu_range(&R, 1, 128) :
	    pick <= 3 ? tu_range(&R, 17, 64) : tu_range(&R, 1, 16);
	size_t sz = n * m->q;

	if (m->q > 1 && tu_range(&R, 0, 3) == 0)
		sz -= tu_range(&R, 0, m->q - 1);
	*rsize = n * m->q;
	return sz;
}

/*
 * One of three fixed sets of constraints: a failed constrained scan is
 * remembered for its constraints only, so requests must repeat them for
 * the memo to be used (and for a wrong memo to miss a fit).
 */
static void
fixed_constraints(am_t *m, req_t *r)
{
	size_t q = m->q;
	uintptr_t eighth = (m->hi - m->lo) / q / 8 * q;

	switch (tu_range(&R, 0, 4)) {
	case 0:
		r->align = 8 * q;
		break;
	case 1:         /* as 0 but for the phase */
		r->align = 8 * q;
		r->phase = 4 * q;
		break;
	case 2:
		r->align = 4 * q;
		r->phase = q;
		if ((r->phase + r->rsize + 4 * q - 1) / (4 * q) * 4 * q <=
		    64 * q)
			r->nocross = 64 * q;
		break;
	default:        /* 3 and 4: two windows, the same otherwise */
		r->align = 2 * q;
		if (eighth == 0)
			break;
		r->minaddr = m->lo + eighth;
		if (tu_range(&R, 0, 1))
			r->minaddr += eighth;
		r->maxaddr = r->minaddr + 2 * eighth;
		break;
	}
}

static void
rand_constraints(am_t *m, req_t *r)
{
	size_t q = m->q;

	if (tu_range(&R, 0, 2) == 0) {
		fixed_constraints(m, r);
		return;
	}
	if (tu_range(&R, 0, 1))
		r->align = q << tu_range(&R, 0, 6);
	if (r->align > q)
		r->phase = tu_range(&R, 0, r->align / q - 1) * q;
	if (tu_range(&R, 0, 4) < 2) {
		size_t al = r->align ? r->align : q;
		r->nocross = q << tu_range(&R, 3, 9);
		if (al > r->nocross || (r->phase + r->rsize + al - 1) / al *
		    al > r->nocross)
			r->nocross = 0;
	}
	if (tu_range(&R, 0, 9) < 3)
		r->minaddr = m->lo + tu_range(&R, 0, (m->hi - m->lo) / q / 4) *
		    q;
	if (tu_range(&R, 0, 9) < 3) {
		uintptr_t from = r->minaddr ? r->minaddr : m->lo;
		r->maxaddr = from + tu_range(&R, 1, (m->hi - m->lo) / q / 2) *
		    q;
		if (r->maxaddr < from) /* wrapped at the top: no bound */
			r->maxaddr = 0;
	}
}

static void
fail_here(const char *what, int ai, const req_t *r, uintptr_t a)
{
	fprintf(stderr, "step %ld: %s in %s: size %#zx align %#zx phase %#zx "
	    "nocross %#zx min %#" PRIxPTR " max %#" PRIxPTR " flags %#x "
	    "xalloc %d -> %#" PRIxPTR "\n", step_no, what, vmem_name(W[ai].v),
	    r->size, r->align, r->phase, r->nocross, r->minaddr, r->maxaddr,
	    r->flags, r->x, a);
	tu_failures++;
}

static void
op_alloc(int ai, int x)
{
	am_t *m = &W[ai];
	req_t r;
	static iv_t before[MAXSEG + MAXSPAN];
	uintptr_t a, best = 0;
	int must, never = 0, pol, nbefore = 0;

	memset(&r, 0, sizeof (r));
	r.x = x;
	r.size = rand_size(m, &r.rsize);
	pol = (int)tu_range(&R, 0, x ? 2 : 3);
	r.flags = pol == 1 ? VM_BESTFIT : pol == 2 ? VM_FIRSTFIT :
	    pol == 3 ? VM_NEXTFIT : 0;
	if (pol != 3 && tu_range(&R, 0, 4) == 0)
		r.flags |= VM_ENDALLOC;
	if (x && (m->root || tu_range(&R, 0, 2) == 0))
		rand_constraints(m, &r);
	else if (x && tu_range(&R, 0, 1))
		r.align = m->q << tu_range(&R, 0, 4);
	must = fit_exists(m, &r);
	if (r.flags & VM_BESTFIT)
		best = best_fit_len(m, &r, before, &nbefore);
	if (m->root)
		never = !ever_fits(m, &r);
	r.flags |= (m->root && (must || never) && tu_range(&R, 0, 3) == 0) ?
	    VM_SLEEP : VM_NOSLEEP;
	op_windowed = x && (r.minaddr != 0 || r.maxaddr != 0);
	if (x)
		a = TL_U(vmem_xalloc(m->v, r.size, r.align, r.phase,
		    r.nocross, TL_PTR(r.minaddr), TL_PTR(r.maxaddr),
		    r.flags));
	else
		a = TL_U(vmem_alloc(m->v, r.size, r.flags));
	sync_all(ai, a);
	n_must += must;
	n_never += never;
	n_sleep += !(r.flags & VM_NOSLEEP);
	if (a == 0) {
		n_null++;
		if (must)
			fail_here("missed an existing fit", ai, &r, a);
		return;
	}
	if (never)
		fail_here("satisfied an impossible request", ai, &r, a);
	if (a % m->q != 0 || !satisfies(a, &r))
		fail_here("constraints violated", ai, &r, a);
	if (best != 0 && range_len_at(before, nbefore, a) != best)
		fail_here("best fit took a larger segment than the best",
		    ai, &r, a);
	if (span_of(m, a, a + r.rsize - 1) < 0)
		fail_here("result outside every span", ai, &r, a);
	if (overlaps_live(m, a, a + r.rsize - 1))
		fail_here("result overlaps a live segment", ai, &r, a);
	n_ok++;
	seg_t s = { a, a + r.rsize - 1, r.size, x, -1 };
	seg_insert(m, s);
}

static void
op_free(int ai)
{
	am_t *m = &W[ai];
	int k, i;

	if (m->nuser == 0)
		return;
	k = (int)tu_range(&R, 0, (uint64_t)m->nuser - 1);
	for (i = 0; i < m->nseg; i++)
		if (m->seg[i].kind != 2 && k-- == 0)
			break;
	seg_t s = m->seg[i];
	n_free++;
	seg_remove(m, i);
	if (s.kind == 1)
		vmem_xfree(m->v, TL_PTR(s.s), s.req);
	else
		vmem_free(m->v, TL_PTR(s.s), s.req);
	sync_all(ai, 0);
}

static void
op_add(int ai)
{
	am_t *m = &W[ai];
	size_t size;
	uintptr_t base;

	if (m->span_max == 0 || m->nspan >= 8)
		return;
	size = tu_range(&R, 16, 1024) * m->q;
	base = m->add_next + tu_range(&R, 0, 1) * tu_range(&R, 1, 64) * m->q;
	CHECK_EQ(TL_U(vmem_add(m->v, TL_PTR(base), size, VM_SLEEP)), base);
	model_add_span(m, base, size);
	m->add_next = base + size;
	if (m->add_next > m->hi)
		m->hi = m->add_next;
}

static void
op_contains(int ai)
{
	am_t *m = &W[ai];
	uintptr_t x;
	size_t len = tu_range(&R, 1, 8) * m->q;
	int expect, adj = 0;

	if (m->nspan > 0 && tu_range(&R, 0, 1)) {
		const iv_t *sp = &m->span[tu_range(&R, 0,
		    (uint64_t)m->nspan - 1)];
		x = sp->s + tu_range(&R, 0, (sp->l - sp->s) / m->q) * m->q;
		if (tu_range(&R, 0, 1))
			x -= m->q;
	} else {
		x = m->lo + tu_range(&R, 0, (m->hi - m->lo) / m->q) * m->q;
	}
	if (x == 0 || x + (len - 1) < x)
		return;
	expect = span_of(m, x, x + len - 1) >= 0;
	/* Ranges straddling two touching spans are left unspecified. */
	for (int i = 0; i < m->nspan; i++)
		for (int j = 0; j < m->nspan; j++)
			if (m->span[i].l + 1 == m->span[j].s &&
			    x <= m->span[i].l && x + len - 1 >= m->span[j].s)
				adj = 1;
	if (!adj)
		CHECK_EQ(vmem_contains(m->v, TL_PTR(x), len), expect);
}

static void
world_destroy(void)
{
	/* Free everything, leaves first, in random order. */
	static const int order[] = { G1, C1, C2, M1, A0, A1 };

	for (int k = 0; k < NARENA; k++) {
		am_t *m = &W[order[k]];
		while (m->nuser > 0)
			op_free(order[k]);
		CHECK_ARENA(m->v);
	}
	for (int k = 0; k < NARENA; k++) {
		CHECK_EQ(W[order[k]].nseg, 0);
		CHECK_EQ(vmem_size(W[order[k]].v, VMEM_ALLOC), 0);
		if (!W[order[k]].root)
			CHECK_EQ(W[order[k]].nspan, 0);
	}
	for (int k = 0; k < NARENA; k++)
		vmem_destroy(W[order[k]].v);
	CHECK_EQ(tu_err.count, 0);
}

static int
one_step(void)
{
	int ai = (int)tu_range(&R, 0, NARENA - 1);
	am_t *m = &W[ai];
	unsigned op = (unsigned)tu_range(&R, 0, 99);
	int full = m->nuser >= MAXLIVE;

	if (op < 40 && !full)
		op_alloc(ai, op >= 24);
	else if (op < 85 || full)
		op_free(ai);
	else if (op < 87)
		op_add(ai);
	else if (op < 90)
		check_walks(ai, (int)tu_range(&R, 0, 2));
	else
		op_contains(ai);
	return ai;
}

int
main(void)
{
	long dflt = tu_slow_build() ? 100000 : 1000000;
	long steps = tu_env_long("VMEM_STEPS", dflt);
	uint64_t seed = (uint64_t)tu_env_long("VMEM_SEED", 1);

	printf("test_vmem_model: seed %" PRIu64 " steps %ld "
	    "(replay with VMEM_SEED=%" PRIu64 " VMEM_STEPS=%ld)\n", seed, steps,
	    seed, steps);
	fflush(stdout);
	tu_seed(&R, seed);
	tu_record_errors();
	world_create();
	for (step_no = 0; step_no < steps; step_no++) {
		int before = tu_failures;
		if (step_no > 0 && step_no % RESET_EVERY == 0) {
			world_destroy();
			world_create();
		}
		int ai = one_step();
		check_no_empty_imports();
		/* vmem_check on every arena the step could change: the one
		 * operated on and its sources (imports and releases); all of
		 * them every 64 steps. */
		for (int i = 0; i < NARENA; i++) {
			if (step_no % 64 == 0 || is_ancestor_or_self(i, ai))
				CHECK_ARENA(W[i].v);
			check_sizes(i);
		}
		if (tu_err.count != 0) {
			fprintf(stderr, "unexpected error report: %s\n",
			    tu_err.line);
			tu_failures++;
			tu_reset_errors();
		}
		if (step_no % 4096 == 0)
			for (int i = 0; i < NARENA; i++)
				check_walks(i, 0);
		if (tu_failures != before) {
			fprintf(stderr, "first failure at step %ld (seed %"
			    PRIu64 ")\n", step_no, seed);
			break;
		}
	}
	if (tu_failures == 0) {
		for (int i = 0; i < NARENA; i++)
			check_walks(i, 1);
		world_destroy();
	}
	tl_segs_free(&walkbuf);
	tu_default_errors();
	printf("%ld steps: %ld allocations, %ld failed (%ld had a fit, %ld "
	    "could never fit, %ld VM_SLEEP), %ld frees\n", step_no,
	    n_ok + n_null, n_null, n_must, n_never, n_sleep, n_free);
	printf("%ld span re-reads by walk\n", n_walk_syncs);
	return tu_finish();
}
