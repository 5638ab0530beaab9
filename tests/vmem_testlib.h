/*
 * Helpers shared by the vmem tests: collecting a walk into an array,
 * reading statistics in one expression, and comparing two snapshots of an
 * arena so that a test can prove "nothing changed" after a refused call.
 *
 * Everything here is static inline so each test program takes only what it
 * uses (no unused-function warnings) and tests/CMakeLists.txt needs no
 * change. A snapshot is the full segment list (allocated and free, in walk
 * order) plus the counters that a refused call must not move.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_TESTLIB_H
#define VMEM_TESTLIB_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <vmem/vmem.h>

typedef struct {
	uintptr_t start;
	size_t size;
	int type; /* the walk mask it was collected with */
} tl_seg_t;

typedef struct {
	tl_seg_t *v;
	size_t n, cap;
	int type;
} tl_segs_t;

static inline void
tl_segs_push(tl_segs_t *s, uintptr_t start, size_t size, int type)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->v = (tl_seg_t *)realloc(s->v, s->cap * sizeof (tl_seg_t));
		if (s->v == NULL)
			abort();
	}
	s->v[s->n].start = start;
	s->v[s->n].size = size;
	s->v[s->n].type = type;
	s->n++;
}

static inline void
tl_collect_cb(void *arg, void *start, size_t size)
{
	tl_segs_t *s = (tl_segs_t *)arg;

	tl_segs_push(s, (uintptr_t)start, size, s->type);
}

/* Replace *s with the segments of the given type(s); returns their count. */
static inline size_t
tl_walk(vmem_t *vmp, int typemask, tl_segs_t *s)
{
	s->n = 0;
	s->type = typemask;
	vmem_walk(vmp, typemask, tl_collect_cb, s);
	return s->n;
}

static inline void
tl_segs_free(tl_segs_t *s)
{
	free(s->v);
	memset(s, 0, sizeof (*s));
}

static inline size_t
tl_segs_total(const tl_segs_t *s)
{
	size_t t = 0;

	for (size_t i = 0; i < s->n; i++)
		t += s->v[i].size;
	return t;
}

static inline vmem_stats_t
tl_stats(vmem_t *vmp)
{
	vmem_stats_t st;

	memset(&st, 0, sizeof (st));
	vmem_get_stats(vmp, &st);
	return st;
}

/* What a refused call must leave exactly as it was. */
typedef struct {
	tl_segs_t alloc, free, span;
	size_t mem_inuse, mem_total, mem_import;
	uint64_t nalloc, nfree, import, release;
} tl_snap_t;

static inline void
tl_snap(vmem_t *vmp, tl_snap_t *sn)
{
	vmem_stats_t st = tl_stats(vmp);

	tl_walk(vmp, VMEM_ALLOC, &sn->alloc);
	tl_walk(vmp, VMEM_FREE, &sn->free);
	tl_walk(vmp, VMEM_SPAN, &sn->span);
	sn->mem_inuse = st.mem_inuse;
	sn->mem_total = st.mem_total;
	sn->mem_import = st.mem_import;
	sn->nalloc = st.alloc;
	sn->nfree = st.free;
	sn->import = st.import;
	sn->release = st.release;
}

static inline int
tl_segs_equal(const tl_segs_t *a, const tl_segs_t *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (a->v[i].start != b->v[i].start ||
		    a->v[i].size != b->v[i].size)
			return 0;
	return 1;
}

static inline int
tl_snap_equal(const tl_snap_t *a, const tl_snap_t *b)
{
	return tl_segs_equal(&a->alloc, &b->alloc) &&
	    tl_segs_equal(&a->free, &b->free) &&
	    tl_segs_equal(&a->span, &b->span) &&
	    a->mem_inuse == b->mem_inuse && a->mem_total == b->mem_total &&
	    a->mem_import == b->mem_import && a->nalloc == b->nalloc &&
	    a->nfree == b->nfree && a->import == b->import &&
	    a->release == b->release;
}

static inline void
tl_snap_free(tl_snap_t *sn)
{
	tl_segs_free(&sn->alloc);
	tl_segs_free(&sn->free);
	tl_segs_free(&sn->span);
}

#define TL_PTR(x) ((void *)(uintptr_t)(x))
#define TL_U(p) ((uintptr_t)(p))

#endif
