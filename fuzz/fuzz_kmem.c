/*
 * Fuzz target: kmem object caches, quantum caches and a kmem heap driven
 * by the fuzz input, checked against a reference model.
 *
 * Two arenas per input: "memory" over a fixed host mapping (caches there
 * have buffers that are written and read), and "ids" over integers with
 * quantum caches (and KMC_NOTOUCH object caches). Operations: create a
 * cache (any size, alignment, constructor or not, no magazines, debug
 * flags), allocate, free, reap one cache / all / the quantum caches, end
 * a working-set interval, destroy (freeing first or leaking), kmem heap
 * alloc/free of any size, quantum-cache alloc/free, and misuse (a buffer
 * freed to the wrong cache, a double free on a KMF_DOUBLEFREE cache, a
 * heap free with another size class), which must be reported and change
 * nothing. Each buffer handed out is checked: aligned, inside its arena,
 * overlapping no live buffer of that arena, constructed if the cache has a
 * constructor; a stamp written into it must be intact when it is freed.
 * After every operation each cache's buf_inuse equals the model's count
 * and both arenas pass vmem_check. One operation turns the refusal of
 * metadata pages on or off (the fault hook): while it is on, creating a
 * cache and allocating may fail, only cleanly, and frees, reaps, magazine
 * resizing and misuse reports must work as before.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <string.h>
#include <sys/mman.h>

#include <vmem/kmem.h>
#include <vmem/vmem.h>

#include "fuzz_input.h"
#include "kmem_impl.h"   /* kmem_cache_owns */

#define FK_CACHES 4
#define FK_LIVE 512
#define FK_MEM_SIZE ((size_t)8 << 20)
#define FK_IDS_BASE ((uintptr_t)1 << 36)
#define FK_IDS_SIZE ((size_t)1 << 26)
#define FK_QUANTUM 16
#define FK_CTOR_BYTE 0xc5
#define FK_STAMP 8

enum { OWN_CACHE, OWN_HEAP, OWN_QCACHE };

typedef struct fk_cache {
	kmem_cache_t *cp;
	size_t bufsize, align;
	int memory;        /* over the memory arena (buffers writable) */
	int ctor;
	int doublefree;    /* KMF_DOUBLEFREE in force */
	long live;
} fk_cache_t;

typedef struct fk_live {
	int kind;          /* -1: free slot; OWN_* */
	int cache;
	uintptr_t addr;
	size_t size;
	int memory;
	uint8_t stamp;
} fk_live_t;

static uint8_t *fk_region;
static vmem_t *fk_mem, *fk_ids;
static kmem_heap_t *fk_heap;
static fk_cache_t fk_cache[FK_CACHES];
static fk_live_t fk_live[FK_LIVE];
static int fk_errors, fk_last_code;
static long fk_constructed;

static void
fk_handler(const vmem_error_info_t *info, void *arg)
{
	(void)arg;
	if (info->warning)
		return;
	fk_errors++;
	fk_last_code = info->code;
}

static int
fk_ctor(void *buf, void *priv, int kmflag)
{
	(void)kmflag;
	memset(buf, FK_CTOR_BYTE, ((fk_cache_t *)priv)->bufsize < FK_STAMP ?
	    ((fk_cache_t *)priv)->bufsize : FK_STAMP);
	fk_constructed++;
	return 0;
}

static void
fk_dtor(void *buf, void *priv)
{
	size_t n = ((fk_cache_t *)priv)->bufsize;

	for (size_t i = 0; i < n && i < FK_STAMP; i++)
		FZ_ASSERT(((uint8_t *)buf)[i] == FK_CTOR_BYTE);
	fk_constructed--;
}

static int
overlaps(int memory, uintptr_t a, size_t size)
{
	for (int k = 0; k < FK_LIVE; k++) {
		const fk_live_t *l = &fk_live[k];
		if (l->kind < 0 || l->memory != memory)
			continue;
		if (a < l->addr + l->size && l->addr < a + size)
			return 1;
	}
	return 0;
}

static void
take(int kind, int cache, void *p, size_t size, int memory, size_t align,
    int ctor)
{
	uintptr_t a = (uintptr_t)p;
	uint8_t stamp;

	if (memory)
		FZ_ASSERT(a >= (uintptr_t)fk_region &&
		    a + size <= (uintptr_t)fk_region + FK_MEM_SIZE);
	else
		FZ_ASSERT(a >= FK_IDS_BASE && a + size <= FK_IDS_BASE +
		    FK_IDS_SIZE);
	FZ_ASSERT(align == 0 || a % align == 0);
	FZ_ASSERT(!overlaps(memory, a, size));
	stamp = (uint8_t)(a >> 4);
	if (memory) {
		for (size_t i = 0; ctor && i < size && i < FK_STAMP; i++)
			FZ_ASSERT(((uint8_t *)p)[i] == FK_CTOR_BYTE);
		memset(p, stamp, size < FK_STAMP ? size : FK_STAMP);
	}
	for (int k = 0; k < FK_LIVE; k++) {
		if (fk_live[k].kind < 0) {
			fk_live[k] = (fk_live_t){ kind, cache, a, size, memory,
			    stamp };
			if (kind == OWN_CACHE)
				fk_cache[cache].live++;
			return;
		}
	}
	FZ_ASSERT(!"model full"); /* FK_LIVE bounds every op below */
}

static int
live_count(void)
{
	int n = 0;

	for (int k = 0; k < FK_LIVE; k++)
		n += fk_live[k].kind >= 0;
	return n;
}

/* Check the stamp and hand the buffer back. */
static void
give_back(int k)
{
	fk_live_t *l = &fk_live[k];
	uint8_t *p = (uint8_t *)l->addr;

	if (l->memory) {
		for (size_t i = 0; i < l->size && i < FK_STAMP; i++)
			FZ_ASSERT(p[i] == l->stamp);
		if (l->kind == OWN_CACHE && fk_cache[l->cache].ctor)
			memset(p, FK_CTOR_BYTE, l->size < FK_STAMP ? l->size :
			    FK_STAMP);
	}
	fk_errors = 0;
	switch (l->kind) {
	case OWN_CACHE:
		kmem_cache_free(fk_cache[l->cache].cp, p);
		fk_cache[l->cache].live--;
		break;
	case OWN_HEAP:
		kmem_heap_free(fk_heap, p, l->size);
		break;
	default:
		vmem_free(fk_ids, p, l->size);
		break;
	}
	FZ_ASSERT(fk_errors == 0);
	l->kind = -1;
}

static int
pick_cache(fz_in_t *in)
{
	int start = (int)fz_below(in, FK_CACHES);

	for (int k = 0; k < FK_CACHES; k++) {
		int i = (start + k) % FK_CACHES;
		if (fk_cache[i].cp != NULL)
			return i;
	}
	return -1;
}

static int fk_refuse;      /* refuse metadata pages */

static int
fk_fault(const char *site, void *arg)
{
	(void)arg;
	return fk_refuse && strcmp(site, "metadata") == 0;
}

static void
op_create(fz_in_t *in)
{
	static const size_t aligns[] = { 0, 8, 16, 64, 512 };
	static const int debugs[] = { 0, KMF_DEADBEEF, KMF_REDZONE,
	    KMF_DOUBLEFREE, KMF_DEBUG };
	int i, cflags = 0, old, dbg;
	fk_cache_t *c;
	char name[32];

	for (i = 0; i < FK_CACHES && fk_cache[i].cp != NULL; i++)
		;
	if (i == FK_CACHES)
		return;
	c = &fk_cache[i];
	memset(c, 0, sizeof (*c));
	c->bufsize = (size_t)fz_u16(in) % 3000 + 1;
	c->align = aligns[fz_below(in, 5)];
	c->memory = fz_below(in, 3) != 0;
	c->ctor = c->memory && fz_below(in, 2);
	if (fz_below(in, 4) == 0)
		cflags |= KMC_NOMAGAZINE;
	if (!c->memory)
		cflags |= KMC_NOTOUCH;
	dbg = debugs[fz_below(in, 5)];
	c->doublefree = (dbg & KMF_DOUBLEFREE) != 0;
	snprintf(name, sizeof (name), "fk%d", i);
	old = kmem_set_debug_flags(dbg);
	c->cp = kmem_cache_create(name, c->bufsize, c->align,
	    c->ctor ? fk_ctor : NULL, c->ctor ? fk_dtor : NULL, NULL, c,
	    c->memory ? fk_mem : fk_ids, cflags);
	(void)kmem_set_debug_flags(old);
	if (c->cp == NULL) {
		FZ_ASSERT(fk_refuse);
		memset(c, 0, sizeof (*c));
	}
}

static void
op_alloc(fz_in_t *in)
{
	int i = pick_cache(in), n = (int)fz_below(in, 8) + 1;

	for (int j = 0; j < n && i >= 0 && live_count() < FK_LIVE; j++) {
		fk_cache_t *c = &fk_cache[i];
		void *p = kmem_cache_alloc(c->cp, KM_NOSLEEP);
		if (p != NULL)
			take(OWN_CACHE, i, p, c->bufsize, c->memory,
			    c->align != 0 ? c->align : 8, c->ctor);
	}
}

static void
op_heap(fz_in_t *in)
{
	size_t size = (size_t)fz_u16(in) % 12000 + 1;
	void *p;

	if (live_count() >= FK_LIVE)
		return;
	p = fz_below(in, 2) ? kmem_heap_alloc(fk_heap, size, KM_NOSLEEP) :
	    kmem_heap_zalloc(fk_heap, size, KM_NOSLEEP);
	if (p != NULL)
		take(OWN_HEAP, -1, p, size, 1, 8, 0);
}

static void
op_qcache(fz_in_t *in)
{
	size_t size = ((size_t)fz_below(in, 10) + 1) * FK_QUANTUM;
	void *p;

	if (live_count() >= FK_LIVE)
		return;
	p = vmem_alloc(fk_ids, size, VM_NOSLEEP);
	if (p != NULL)
		take(OWN_QCACHE, -1, p, size, 0, FK_QUANTUM, 0);
}

static int
pick_live(fz_in_t *in)
{
	int start = (int)fz_u16(in) % FK_LIVE;

	for (int k = 0; k < FK_LIVE; k++) {
		int j = (start + k) % FK_LIVE;
		if (fk_live[j].kind >= 0)
			return j;
	}
	return -1;
}

static void
op_free(fz_in_t *in)
{
	int k = pick_live(in);

	if (k >= 0)
		give_back(k);
}

static void
op_misuse(fz_in_t *in)
{
	int k = pick_live(in), how = (int)fz_below(in, 3);
	fk_live_t *l;

	if (k < 0)
		return;
	l = &fk_live[k];
	if (how == 0 && l->kind == OWN_CACHE) {
		/* To another cache that does not own it. */
		int other = pick_cache(in);
		if (other < 0 || other == l->cache)
			return;
		fk_errors = 0;
		kmem_cache_free(fk_cache[other].cp, (void *)l->addr);
		FZ_ASSERT(fk_errors == 1 && fk_last_code == KMEM_E_WRONGCACHE);
	} else if (how == 1 && l->kind == OWN_CACHE &&
	    fk_cache[l->cache].doublefree) {
		kmem_cache_t *cp = fk_cache[l->cache].cp;
		void *p = (void *)l->addr;
		int owned;
		give_back(k);
		/* If that free emptied p's slab and the slab went back to
		 * the arena, p belongs to no slab of the cache any more: the
		 * second free is then a foreign pointer (docs/ERRORS.md,
		 * "Where detection is limited"). */
		owned = kmem_cache_owns(cp, p);
		fk_errors = 0;
		kmem_cache_free(cp, p);
		FZ_ASSERT(fk_errors == 1 && fk_last_code == (owned ?
		    KMEM_E_DOUBLEFREE : KMEM_E_WRONGCACHE));
	} else if (how == 2 && l->kind == OWN_HEAP && l->size <= 4096) {
		/* A size of another class (four times larger). */
		fk_errors = 0;
		kmem_heap_free(fk_heap, (void *)l->addr, l->size * 4 + 64);
		FZ_ASSERT(fk_errors == 1);
	}
}

static void
drop_cache(int i, int leak)
{
	fk_cache_t *c = &fk_cache[i];

	for (int k = 0; k < FK_LIVE; k++) {
		if (fk_live[k].kind != OWN_CACHE || fk_live[k].cache != i)
			continue;
		if (leak)
			fk_live[k].kind = -1;
		else
			give_back(k);
	}
	kmem_cache_destroy(c->cp);
	c->cp = NULL;
}

static void
check_all(void)
{
	for (int i = 0; i < FK_CACHES; i++) {
		kmem_cache_stats_t st;
		if (fk_cache[i].cp == NULL)
			continue;
		kmem_cache_get_stats(fk_cache[i].cp, &st);
		FZ_ASSERT(st.buf_inuse == (size_t)fk_cache[i].live);
		FZ_ASSERT(st.buf_inuse <= st.buf_total);
	}
	FZ_ASSERT(vmem_check(fk_mem) == 0);
	FZ_ASSERT(vmem_check(fk_ids) == 0);
}

static void
setup(void)
{
	if (fk_region == NULL) {
		void *p = mmap(NULL, FK_MEM_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		FZ_ASSERT(p != MAP_FAILED);
		fk_region = p;
	}
	fk_mem = vmem_create("fk_mem", fk_region, FK_MEM_SIZE, 4096, NULL,
	    NULL, NULL, 0, VM_NOSLEEP);
	fk_ids = vmem_create("fk_ids", (void *)FK_IDS_BASE, FK_IDS_SIZE,
	    FK_QUANTUM, NULL, NULL, NULL, 10 * FK_QUANTUM, VM_NOSLEEP);
	FZ_ASSERT(fk_mem != NULL && fk_ids != NULL);
	fk_heap = kmem_heap_create("fk_heap", fk_mem);
	FZ_ASSERT(fk_heap != NULL);
	memset(fk_cache, 0, sizeof (fk_cache));
	for (int k = 0; k < FK_LIVE; k++)
		fk_live[k].kind = -1;
	fk_constructed = 0;
}

/*
 * Free everything; unless a cache was destroyed with buffers out (their
 * slabs stay allocated, as in illumos), both arenas are then empty and
 * every constructed object was destroyed.
 */
static void
teardown(int leaked_cache)
{
	for (int i = 0; i < FK_CACHES; i++)
		if (fk_cache[i].cp != NULL)
			drop_cache(i, 0);
	for (int k = 0; k < FK_LIVE; k++)
		if (fk_live[k].kind >= 0)
			give_back(k);
	kmem_heap_destroy(fk_heap);
	vmem_reap(fk_ids);
	if (!leaked_cache) {
		FZ_ASSERT(fk_constructed == 0);
		FZ_ASSERT(vmem_size(fk_mem, VMEM_ALLOC) == 0);
		FZ_ASSERT(vmem_size(fk_ids, VMEM_ALLOC) == 0);
	}
	vmem_destroy(fk_ids);
	vmem_destroy(fk_mem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_in_t in = { data, size };
	int steps = 0, leaked_cache = 0;

	vmem_set_error_handler(fk_handler, NULL);
	setup();
	fk_refuse = 0;
	vmem_set_fault_hook(fk_fault, NULL);
	while (in.n > 0 && steps++ < 3000) {
		int i;

		switch (fz_below(&in, 15)) {
		case 0: op_create(&in); break;
		case 1: case 2: case 3: op_alloc(&in); break;
		case 4: op_heap(&in); break;
		case 5: op_qcache(&in); break;
		case 6: case 7: case 8: op_free(&in); break;
		case 9: op_misuse(&in); break;
		case 10:
			if ((i = pick_cache(&in)) >= 0) {
				int leak = fz_below(&in, 4) == 0;
				leaked_cache |= leak && fk_cache[i].live > 0;
				drop_cache(i, leak);
			}
			break;
		case 11:
			if ((i = pick_cache(&in)) >= 0)
				kmem_cache_reap_now(fk_cache[i].cp);
			break;
		case 12:
			kmem_update();
			break;
		case 13:
			fk_refuse = !fk_refuse;
			break;
		default:
			if (fz_below(&in, 2))
				kmem_reap();
			else
				vmem_reap(fk_ids);
			break;
		}
		check_all();
	}
	fk_refuse = 0;
	vmem_set_fault_hook(NULL, NULL);
	teardown(leaked_cache);
	vmem_set_error_handler(NULL, NULL);
	return 0;
}
