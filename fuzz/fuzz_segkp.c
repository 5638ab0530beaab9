/*
 * Fuzz target: segkp (guarded stacks and stack caches) driven by the fuzz
 * input, checked against a reference model.
 *
 * Each input gets a fresh simulated address space (KAS_SIM, 64 MiB, a
 * small page budget so KPD_LOCKED gets run out of pages) with two
 * segments: one SEGKP_FROMHEAP, one SEGKP_FIXED (the first input byte
 * chooses whether its range is a hole left outside heap_arena or is taken
 * from heap_arena at creation). Operations: segkp_get with any page count,
 * any KPD_* flags (KPD_REDZONE_PAGES(n) included; KPD_NOWAIT always, so a
 * full segment fails instead of waiting), misuse (a length that is 0 or
 * not a page multiple, KPD_NO_ANON without KPD_LOCKED, redzone pages
 * without KPD_HASREDZONE, unknown flag bits, release of an address segkp
 * never returned, double release, a destroyed cache's cookie), which must
 * be reported with its code and change nothing; release; stack caches
 * (init, get, release back, reap idle or all, segkp_cache_free, destroy
 * with stacks still out); segkp_find / segkp_classify probes; the
 * refusal of the library's metadata pages switched on and off (a stack
 * cache may then not be made; everything else must hold as before).
 *
 * The model keeps every live allocation (segment, address, len, flags,
 * redzone, owning cache) and every cache's LIFO list of idle stacks with
 * its low-water mark, so it predicts what a cache get returns, which
 * stacks a reap makes non-resident, and what segkp_find reports for any
 * address. After every operation: segkp_check on both segments, their
 * in-use and cached counts equal the model's, vmem_check on the segments'
 * arenas and heap_arena. At teardown everything is given back and the kas
 * is destroyed with no warning (no leak).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <string.h>

#include <vmem/segkmem.h>
#include <vmem/segkp.h>
#include <vmem/vmem.h>

#include "fuzz_input.h"

#define FP_PAGE 4096
#define FP_KAS_SIZE ((size_t)64 << 20)
#define FP_HEAP_SIZE ((size_t)48 << 20)   /* fixed range above it (hole) */
#define FP_FIXED_SIZE ((size_t)8 << 20)
#define FP_PHYSMEM 3072                   /* pages: 12 MiB */
#define FP_LIVE 256
#define FP_CACHES 6
#define FP_CACHE_MAX 16
#define FP_NSEG 2

typedef struct fp_alloc {
	int used;
	int seg;
	uintptr_t addr;     /* what segkp_get returned */
	size_t len;
	size_t redzone;     /* bytes */
	int flags;
	int cache;          /* model cache index it came from, or -1 */
	unsigned cache_id;  /* that cache's identity when it was taken */
} fp_alloc_t;

typedef struct fp_idle {
	fp_alloc_t a;
	int resident;
} fp_idle_t;

typedef struct fp_cache {
	void *cookie;       /* NULL: slot unused */
	unsigned id;        /* changes at every init */
	int seg;
	int maxsize;
	size_t len;
	int flags;
	int count, low;
	fp_idle_t idle[FP_CACHE_MAX]; /* idle[count - 1] is the top */
} fp_cache_t;

static kas_t *fp_kas;
static segkp_t *fp_seg[FP_NSEG];
static fp_alloc_t fp_live[FP_LIVE];
static fp_cache_t fp_cache[FP_CACHES];
static unsigned fp_next_id;
static void *fp_dead_cookie;
static size_t fp_base_committed; /* kas pages after setup, less metadata */
static int fp_errors, fp_warnings, fp_last_code, fp_trace;
static int fp_refuse;   /* refuse the library's metadata pages */

static int
fp_fault(const char *site, void *arg)
{
	(void)arg;
	return fp_refuse && strcmp(site, "metadata") == 0;
}

static void
fp_handler(const vmem_error_info_t *info, void *arg)
{
	(void)arg;
	if (info->warning) {
		fp_warnings++;
		return;
	}
	fp_errors++;
	fp_last_code = info->code;
}

static size_t
redzone_bytes(int flags)
{
	int n;

	if (!(flags & KPD_HASREDZONE))
		return 0;
	n = (flags >> 8) & 0xff;
	return (size_t)(n == 0 ? 1 : n) * FP_PAGE;
}

/* A misuse call: exactly one error with this code. */
#define EXPECT_ERROR(code, call) do { \
	fp_errors = 0; \
	call; \
	FZ_ASSERT(fp_errors == 1 && fp_last_code == (code)); \
} while (0)

static int
live_count(void)
{
	int n = 0;

	for (int k = 0; k < FP_LIVE; k++)
		n += fp_live[k].used;
	return n;
}

static int
free_live_slot(void)
{
	for (int k = 0; k < FP_LIVE; k++)
		if (!fp_live[k].used)
			return k;
	return -1;
}

/* Check a fresh allocation and enter it in the model. */
static void
take(int seg, void *p, size_t len, int flags, int cache)
{
	segkp_info_t info;
	int k = free_live_slot();
	uintptr_t a = (uintptr_t)p;

	FZ_ASSERT(k >= 0);
	FZ_ASSERT(a % FP_PAGE == 0);
	FZ_ASSERT(segkp_find(fp_seg[seg], p, &info) == 1);
	FZ_ASSERT(info.addr == a && info.len == len);
	FZ_ASSERT(info.redzone == redzone_bytes(flags));
	FZ_ASSERT(info.base + info.redzone == a && info.size == len +
	    info.redzone);
	FZ_ASSERT(info.flags == flags && !info.cached && info.resident);
	if (segkp_placement(fp_seg[seg]) == SEGKP_FIXED) {
		vmem_t *ar = segkp_arena(fp_seg[seg]);
		FZ_ASSERT(vmem_contains(ar, (void *)info.base, info.size));
	}
	/* No overlap with anything live or idle, in either segment. */
	for (int j = 0; j < FP_LIVE; j++) {
		const fp_alloc_t *o = &fp_live[j];
		if (!o->used)
			continue;
		FZ_ASSERT(info.base + info.size <= o->addr - o->redzone ||
		    o->addr + o->len <= info.base);
	}
	for (int i = 0; i < FP_CACHES; i++)
		for (int j = 0; fp_cache[i].cookie != NULL &&
		    j < fp_cache[i].count; j++) {
			const fp_alloc_t *o = &fp_cache[i].idle[j].a;
			FZ_ASSERT(info.base + info.size <= o->addr - o->redzone ||
			    o->addr + o->len <= info.base);
		}
	fp_live[k] = (fp_alloc_t){ 1, seg, a, len, redzone_bytes(flags),
	    flags, cache, cache >= 0 ? fp_cache[cache].id : 0 };
}

static int
pick_live(fz_in_t *in)
{
	int start = (int)fz_u8(in) % FP_LIVE;

	for (int k = 0; k < FP_LIVE; k++) {
		int j = (start + k) % FP_LIVE;
		if (fp_live[j].used)
			return j;
	}
	return -1;
}

static int
pick_cache(fz_in_t *in)
{
	int start = (int)fz_below(in, FP_CACHES);

	for (int k = 0; k < FP_CACHES; k++) {
		int i = (start + k) % FP_CACHES;
		if (fp_cache[i].cookie != NULL)
			return i;
	}
	return -1;
}

/* Random legal flags (KPD_NOWAIT always: never wait in a fuzzer). */
static int
decode_flags(fz_in_t *in)
{
	uint8_t b = fz_u8(in);
	int flags = KPD_NOWAIT;

	if (b & 1)
		flags |= KPD_ZERO;
	if (b & 2)
		flags |= KPD_LOCKED;
	if ((b & 6) == 6)
		flags |= KPD_NO_ANON;
	if (b & 8) {
		flags |= KPD_HASREDZONE;
		if (b & 16)
			flags |= KPD_REDZONE_PAGES(fz_u8(in));
	}
	return flags;
}

static size_t
decode_len(fz_in_t *in)
{
	uint8_t b = fz_u8(in);

	/* Mostly stack-sized, sometimes large. */
	return (size_t)(b < 200 ? b % 8 + 1 : (b - 200) * 16 + 1) * FP_PAGE;
}

static void
op_get(fz_in_t *in)
{
	int seg = (int)fz_below(in, FP_NSEG);
	size_t len = decode_len(in);
	int flags = decode_flags(in);
	void *p;

	if (live_count() >= FP_LIVE)
		return;
	fp_errors = 0;
	p = segkp_get(fp_seg[seg], len, flags);
	FZ_ASSERT(fp_errors == 0); /* running out is not misuse */
	if (p != NULL)
		take(seg, p, len, flags, -1);
}

static void
op_get_misuse(fz_in_t *in)
{
	segkp_t *seg = fp_seg[fz_below(in, FP_NSEG)];
	size_t len = decode_len(in);
	int flags = decode_flags(in) & ~KPD_NO_ANON;
	void *p = NULL;

	switch (fz_below(in, 5)) {
	case 0:
		EXPECT_ERROR(SEGKP_E_BADLEN, p = segkp_get(seg, len -
		    (fz_u8(in) % FP_PAGE + 1), flags));
		break;
	case 1:
		EXPECT_ERROR(SEGKP_E_BADLEN, p = segkp_get(seg, 0, flags));
		break;
	case 2:
		EXPECT_ERROR(SEGKP_E_BADFLAGS, p = segkp_get(seg, len,
		    (flags & ~KPD_LOCKED) | KPD_NO_ANON));
		break;
	case 3:
		EXPECT_ERROR(SEGKP_E_BADFLAGS, p = segkp_get(seg, len,
		    (flags & ~KPD_HASREDZONE) | KPD_REDZONE_PAGES(
		    fz_u8(in) % 255 + 1)));
		break;
	default:
		EXPECT_ERROR(SEGKP_E_BADFLAGS, p = segkp_get(seg, len,
		    flags | 0x20 << fz_below(in, 3)));
		break;
	}
	FZ_ASSERT(p == NULL);
}

/* Release live allocation k, into its cache if the model says so. */
static void
release(int k)
{
	fp_alloc_t a = fp_live[k];
	fp_cache_t *c = a.cache >= 0 ? &fp_cache[a.cache] : NULL;

	fp_errors = 0;
	segkp_release(fp_seg[a.seg], (void *)a.addr);
	FZ_ASSERT(fp_errors == 0);
	fp_live[k].used = 0;
	if (c != NULL && c->cookie != NULL && c->id == a.cache_id &&
	    c->count < c->maxsize) {
		c->idle[c->count++] = (fp_idle_t){ a, 1 };
		FZ_ASSERT(segkp_find(fp_seg[a.seg], (void *)a.addr, NULL));
	} else {
		FZ_ASSERT(!segkp_find(fp_seg[a.seg], (void *)a.addr, NULL));
	}
}

static void
op_release(fz_in_t *in)
{
	int k = pick_live(in);

	if (k >= 0)
		release(k);
}

static void
op_release_misuse(fz_in_t *in)
{
	int k = pick_live(in);
	fp_alloc_t a;

	if (k < 0)
		return;
	a = fp_live[k];
	switch (fz_below(in, 3)) {
	case 0: /* release it, then once more */
		release(k);
		EXPECT_ERROR(SEGKP_E_DOUBLE, segkp_release(fp_seg[a.seg],
		    (void *)a.addr));
		break;
	case 1: /* an address inside it, or in its redzone */
		if (a.len > FP_PAGE)
			EXPECT_ERROR(SEGKP_E_NOTOWNED, segkp_release(
			    fp_seg[a.seg], (void *)(a.addr + FP_PAGE)));
		if (a.redzone != 0)
			EXPECT_ERROR(SEGKP_E_NOTOWNED, segkp_release(
			    fp_seg[a.seg], (void *)(a.addr - FP_PAGE)));
		break;
	default: /* to the other segment */
		EXPECT_ERROR(SEGKP_E_NOTOWNED, segkp_release(
		    fp_seg[1 - a.seg], (void *)a.addr));
		break;
	}
}

static void
op_cache_init(fz_in_t *in)
{
	int i;
	fp_cache_t *c;

	for (i = 0; i < FP_CACHES && fp_cache[i].cookie != NULL; i++)
		;
	if (i == FP_CACHES)
		return;
	c = &fp_cache[i];
	memset(c, 0, sizeof (*c));
	c->seg = (int)fz_below(in, FP_NSEG);
	c->maxsize = (int)fz_below(in, FP_CACHE_MAX + 1);
	c->len = (size_t)(fz_below(in, 4) + 1) * FP_PAGE;
	c->flags = decode_flags(in);
	c->id = ++fp_next_id;
	fp_errors = 0;
	c->cookie = segkp_cache_init(fp_seg[c->seg], c->maxsize, c->len,
	    c->flags);
	if (c->cookie == NULL && fp_refuse) {
		memset(c, 0, sizeof (*c));
		return;
	}
	FZ_ASSERT(fp_errors == 0 && c->cookie != NULL);
}

static void
op_cache_get(fz_in_t *in)
{
	int i = pick_cache(in);
	fp_cache_t *c;
	void *p;

	if (i < 0 || live_count() >= FP_LIVE)
		return;
	c = &fp_cache[i];
	fp_errors = 0;
	p = segkp_cache_get(c->cookie);
	FZ_ASSERT(fp_errors == 0);
	if (c->count > 0) {
		fp_idle_t top = c->idle[--c->count];
		if (c->count < c->low)
			c->low = c->count;
		/* LIFO; only a reaped stack can fail (no pages). */
		FZ_ASSERT(p == NULL ? !top.resident : (uintptr_t)p ==
		    top.a.addr);
		if (p == NULL) {
			FZ_ASSERT(!segkp_find(fp_seg[c->seg], (void *)
			    top.a.addr, NULL));
			return;
		}
		FZ_ASSERT(segkp_find(fp_seg[c->seg], p, NULL));
		top.a.cache_id = c->id;
		for (int k = 0; k < FP_LIVE; k++)
			if (!fp_live[k].used) {
				fp_live[k] = top.a;
				break;
			}
		return;
	}
	if (p != NULL)
		take(c->seg, p, c->len, c->flags, i);
}

/* Model of segkp_cache_reap on one cache. */
static void
model_reap(fp_cache_t *c, int how)
{
	int n = how == SEGKP_REAP_ALL ? c->count : c->low;

	for (int j = 0; j < n; j++)
		c->idle[j].resident = 0;
	c->low = c->count;
}

static void
model_empty(fp_cache_t *c)
{
	c->count = 0;
	c->low = 0;
}

static void
op_cache_maint(fz_in_t *in)
{
	int seg = (int)fz_below(in, FP_NSEG), i;
	unsigned what = fz_below(in, 4);

	if (fp_trace)
		fprintf(stderr, "  maint %u seg %d\n", what, seg);
	switch (what) {
	case 0:
	case 1: {
		int how = fz_below(in, 2) ? SEGKP_REAP_ALL : SEGKP_REAP_IDLE;
		(void)segkp_cache_reap(fp_seg[seg], how);
		for (i = 0; i < FP_CACHES; i++)
			if (fp_cache[i].cookie != NULL && fp_cache[i].seg == seg)
				model_reap(&fp_cache[i], how);
		break;
	}
	case 2: {
		int all = fz_below(in, 2) == 0; /* NULL: every segment */
		segkp_cache_free_seg(all ? NULL : fp_seg[seg]);
		for (i = 0; i < FP_CACHES; i++)
			if (fp_cache[i].cookie != NULL &&
			    (all || fp_cache[i].seg == seg))
				model_empty(&fp_cache[i]);
		break;
	}
	default:
		if ((i = pick_cache(in)) < 0)
			break;
		fp_errors = 0;
		segkp_cache_destroy(fp_cache[i].cookie);
		FZ_ASSERT(fp_errors == 0);
		fp_dead_cookie = fp_cache[i].cookie;
		fp_cache[i].cookie = NULL;
		EXPECT_ERROR(SEGKP_E_BADCOOKIE, FZ_ASSERT(segkp_cache_get(
		    fp_dead_cookie) == NULL));
		break;
	}
}

/* What the model says about addr in segment seg. */
static const fp_alloc_t *
model_lookup(int seg, uintptr_t a, int *cached, int *resident)
{
	for (int k = 0; k < FP_LIVE; k++) {
		const fp_alloc_t *o = &fp_live[k];
		if (o->used && o->seg == seg && a >= o->addr - o->redzone &&
		    a < o->addr + o->len) {
			*cached = 0;
			*resident = 1;
			return o;
		}
	}
	for (int i = 0; i < FP_CACHES; i++) {
		const fp_cache_t *c = &fp_cache[i];
		for (int j = 0; c->cookie != NULL && c->seg == seg &&
		    j < c->count; j++) {
			const fp_alloc_t *o = &c->idle[j].a;
			if (a >= o->addr - o->redzone && a < o->addr + o->len) {
				*cached = 1;
				*resident = c->idle[j].resident;
				return o;
			}
		}
	}
	return NULL;
}

static void
probe(int seg, uintptr_t a)
{
	segkp_info_t info;
	int cached = 0, resident = 0, found;
	const fp_alloc_t *o = model_lookup(seg, a, &cached, &resident);
	segkp_fault_t f;

	found = segkp_find(fp_seg[seg], (void *)a, &info);
	f = segkp_classify(fp_seg[seg], (void *)a, NULL);
	if (o == NULL) {
		FZ_ASSERT(!found);
		FZ_ASSERT(f == SEGKP_FAULT_NOTSEGKP ||
		    f == SEGKP_FAULT_NOMAPPING);
		FZ_ASSERT(!segkp_page_held(fp_seg[seg], (void *)a));
		return;
	}
	FZ_ASSERT(found && info.addr == o->addr && info.len == o->len);
	FZ_ASSERT(info.redzone == o->redzone && info.flags == o->flags);
	FZ_ASSERT(info.cached == cached && info.resident == resident);
	FZ_ASSERT(f == (a < o->addr ? SEGKP_FAULT_REDZONE :
	    SEGKP_FAULT_MAPPED));
	FZ_ASSERT(segkp_page_held(fp_seg[seg], (void *)a));
}

static void
op_probe(fz_in_t *in)
{
	int k = pick_live(in);

	if (k >= 0 && fz_below(in, 2)) {
		const fp_alloc_t *o = &fp_live[k];
		probe(o->seg, o->addr);
		probe(o->seg, o->addr + o->len - 1);
		probe(o->seg, o->addr + o->len);
		if (o->redzone != 0) {
			probe(o->seg, o->addr - 1);
			probe(o->seg, o->addr - o->redzone);
		}
		probe(o->seg, o->addr - o->redzone - 1);
	} else {
		uintptr_t a = kas_base(fp_kas) + (uintptr_t)(fz_u32(in) %
		    FP_KAS_SIZE);
		probe((int)fz_below(in, FP_NSEG), a);
	}
}

static void
check_all(void)
{
	for (int s = 0; s < FP_NSEG; s++) {
		segkp_stats_t st;
		size_t inuse = 0, cached = 0;

		FZ_ASSERT(segkp_check(fp_seg[s]) == 0);
		FZ_ASSERT(vmem_check(segkp_arena(fp_seg[s])) == 0);
		for (int k = 0; k < FP_LIVE; k++)
			inuse += fp_live[k].used && fp_live[k].seg == s;
		for (int i = 0; i < FP_CACHES; i++)
			if (fp_cache[i].cookie != NULL && fp_cache[i].seg == s)
				cached += (size_t)fp_cache[i].count;
		segkp_get_stats(fp_seg[s], &st);
		if (fp_trace)
			fprintf(stderr, "  seg %d: inuse %zu/%zu cached %zu/%zu\n",
			    s, st.inuse, inuse, st.cached, cached);
		FZ_ASSERT(st.inuse == inuse);
		FZ_ASSERT(st.cached == cached);
	}
	FZ_ASSERT(vmem_check(kas_heap_arena(fp_kas)) == 0);
}

static size_t
committed_less_metadata(void)
{
	kas_stats_t st;

	kas_settle_metadata(fp_kas);
	kas_get_stats(fp_kas, &st);
	FZ_ASSERT(st.meta_pages_unsettled == 0);
	return st.pages_committed - st.meta_pages_total;
}

static void
setup(int hole)
{
	kas_config_t cfg;
	void *fixed_base = NULL;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.name = "fuzz_segkp";
	cfg.size = FP_KAS_SIZE;
	cfg.physmem_pages = FP_PHYSMEM;
	if (hole) {
		cfg.nheap_spans = 1;
		cfg.heap_spans[0] = (kas_span_t){ 0, FP_HEAP_SIZE };
	}
	fp_kas = kas_create(&cfg);
	FZ_ASSERT(fp_kas != NULL);
	if (hole)
		fixed_base = (void *)(kas_base(fp_kas) + FP_HEAP_SIZE);
	fp_seg[0] = segkp_create(fp_kas, SEGKP_FROMHEAP, NULL, 0);
	fp_seg[1] = segkp_create(fp_kas, SEGKP_FIXED, fixed_base,
	    FP_FIXED_SIZE);
	FZ_ASSERT(fp_seg[0] != NULL && fp_seg[1] != NULL);
	memset(fp_live, 0, sizeof (fp_live));
	memset(fp_cache, 0, sizeof (fp_cache));
	fp_base_committed = committed_less_metadata();
}

static void
teardown(void)
{
	kas_stats_t st;

	for (int k = 0; k < FP_LIVE; k++)
		if (fp_live[k].used)
			release(k);
	for (int i = 0; i < FP_CACHES; i++)
		if (fp_cache[i].cookie != NULL) {
			segkp_cache_destroy(fp_cache[i].cookie);
			fp_cache[i].cookie = NULL;
		}
	check_all();
	for (int s = 0; s < FP_NSEG; s++) {
		segkp_stats_t sst;
		segkp_get_stats(fp_seg[s], &sst);
		FZ_ASSERT(sst.inuse == 0 && sst.cached == 0);
		FZ_ASSERT(sst.pages_committed == 0 && sst.pages_locked == 0);
		FZ_ASSERT(sst.va_allocated == 0);
	}
	FZ_ASSERT(committed_less_metadata() == fp_base_committed);
	kas_get_stats(fp_kas, &st);
	FZ_ASSERT(st.pages_locked == 0);
	FZ_ASSERT(st.pages_reserved == st.meta_pages_total);
	for (int s = 0; s < FP_NSEG; s++)
		segkp_destroy(fp_seg[s]);
	kas_destroy(fp_kas);
	FZ_ASSERT(fp_errors == 0 && fp_warnings == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_in_t in = { data, size };
	int steps = 0;

	vmem_set_error_handler(fp_handler, NULL);
	fp_errors = fp_warnings = 0;
	fp_refuse = 0;
	setup(fz_below(&in, 2));
	vmem_set_fault_hook(fp_fault, NULL);
	fp_trace = getenv("FUZZ_TRACE") != NULL;
	while (in.n > 0 && steps++ < 2000) {
		unsigned op = fz_below(&in, 13);

		if (fp_trace)
			fprintf(stderr, "step %d op %u (live %d)\n", steps, op,
			    live_count());
		switch (op) {
		case 0: case 1: case 2: op_get(&in); break;
		case 3: op_get_misuse(&in); break;
		case 4: case 5: op_release(&in); break;
		case 6: op_release_misuse(&in); break;
		case 7: op_cache_init(&in); break;
		case 8: case 9: op_cache_get(&in); break;
		case 10: op_cache_maint(&in); break;
		case 12: fp_refuse = !fp_refuse; break;
		default: op_probe(&in); break;
		}
		fp_errors = 0;
		check_all();
		FZ_ASSERT(fp_errors == 0 && fp_warnings == 0);
	}
	fp_refuse = 0;
	vmem_set_fault_hook(NULL, NULL);
	teardown();
	vmem_set_error_handler(NULL, NULL);
	return 0;
}
