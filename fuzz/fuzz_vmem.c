/*
 * Fuzz target: vmem arenas driven by the fuzz input, checked against a
 * reference model.
 *
 * The input is a program of operations: create an arena (a root with a
 * span, an arena importing through vmem_alloc from another, an xcreate
 * arena with a user import function that grows its spans, identifier
 * arenas; any quantum, quantum caches, every policy), vmem_alloc,
 * vmem_xalloc with any constraints, free/xfree, vmem_add (overlapping or
 * not, near the top of the address space), reap, walk, misuse (double
 * free, wrong size, foreign address, several policies, bad xalloc
 * arguments) and destroy, with or without live allocations. The model
 * keeps every live allocation; every arena that descends from one root
 * hands out disjoint ranges inside that root's spans, so each result is
 * checked for: inside a root span, overlapping no other live allocation of
 * the tree, aligned to the quantum, and meeting its xalloc constraints.
 * Misuse must be reported through the error handler and change nothing.
 * After every operation every arena passes vmem_check, and an arena with
 * no quantum caches and no importers has exactly the model's bytes
 * allocated. Operations never sleep (VM_NOSLEEP). One operation turns the
 * refusal of metadata pages on or off (the fault hook): while it is on,
 * creating an arena, adding a span and allocating may fail, but only
 * cleanly (the checks above still hold after every operation), and
 * frees and misuse reports work as before.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <string.h>

#include <vmem/vmem.h>

#include "fuzz_input.h"

#define FV_ARENAS 6
#define FV_SPANS 8
#define FV_LIVE 384

typedef struct fv_arena {
	vmem_t *vmp;
	int source;          /* arena index, or -1 for a root */
	int root;            /* index of the root of its tree */
	int nchildren;
	size_t quantum;
	size_t qcache_max;
	uintptr_t span_start[FV_SPANS];
	size_t span_size[FV_SPANS]; /* roots: spans added */
	int nspans;
} fv_arena_t;

typedef struct fv_live {
	int arena;           /* -1: slot free */
	uintptr_t addr;
	size_t size;         /* as given */
	size_t rsize;        /* rounded to the quantum */
	int x;               /* from vmem_xalloc */
} fv_live_t;

static fv_arena_t fv_arena[FV_ARENAS];
static fv_live_t fv_live[FV_LIVE];
static int fv_errors, fv_last_code;
static size_t fv_xgrow;
static int fv_trace = -1; /* extra bytes the xcreate import adds */
static int fv_refuse;      /* refuse metadata pages */

static int
fv_fault(const char *site, void *arg)
{
	(void)arg;
	return fv_refuse && strcmp(site, "metadata") == 0;
}

static void
fv_handler(const vmem_error_info_t *info, void *arg)
{
	(void)arg;
	fv_errors++;
	fv_last_code = info->code;
}

static size_t
round_up(size_t x, size_t q)
{
	return (x + q - 1) & ~(q - 1);
}

/* Last address of [a, a + size); size > 0. */
static uintptr_t
last_of(uintptr_t a, size_t size)
{
	return a + (size - 1);
}

static void *
fv_ximport(vmem_t *src, size_t *sizep, size_t align, int vmflag)
{
	(void)align;
	if (*sizep + fv_xgrow < *sizep)
		return NULL;
	*sizep += fv_xgrow;
	return vmem_alloc(src, *sizep, vmflag);
}

/* The range lies in one span of the root of arena i. */
static int
in_root_span(int i, uintptr_t a, size_t size)
{
	const fv_arena_t *r = &fv_arena[fv_arena[i].root];

	for (int k = 0; k < r->nspans; k++)
		if (a >= r->span_start[k] && last_of(a, size) <=
		    last_of(r->span_start[k], r->span_size[k]) &&
		    last_of(a, size) >= a)
			return 1;
	return 0;
}

static int
overlaps_live(int root, uintptr_t a, size_t size)
{
	for (int k = 0; k < FV_LIVE; k++) {
		const fv_live_t *l = &fv_live[k];
		if (l->arena < 0 || fv_arena[l->arena].root != root)
			continue;
		if (a <= last_of(l->addr, l->rsize) &&
		    l->addr <= last_of(a, size))
			return 1;
	}
	return 0;
}

static void
record(int i, void *p, size_t size, int x)
{
	size_t rsize = round_up(size, fv_arena[i].quantum);
	uintptr_t a = (uintptr_t)p;

	FZ_ASSERT(a % fv_arena[i].quantum == 0);
	FZ_ASSERT(in_root_span(i, a, rsize));
	FZ_ASSERT(!overlaps_live(fv_arena[i].root, a, rsize));
	FZ_ASSERT(vmem_contains(fv_arena[i].vmp, p, rsize));
	for (int k = 0; k < FV_LIVE; k++) {
		if (fv_live[k].arena < 0) {
			fv_live[k] = (fv_live_t){ i, a, size, rsize, x };
			return;
		}
	}
	/* Model full: give it straight back. */
	if (x)
		vmem_xfree(fv_arena[i].vmp, p, size);
	else
		vmem_free(fv_arena[i].vmp, p, size);
}

static void
release(int k)
{
	fv_live_t *l = &fv_live[k];
	vmem_t *vmp = fv_arena[l->arena].vmp;

	if (l->x)
		vmem_xfree(vmp, (void *)l->addr, l->size);
	else
		vmem_free(vmp, (void *)l->addr, l->size);
	l->arena = -1;
}

static int
pick_arena(fz_in_t *in)
{
	int start = (int)fz_below(in, FV_ARENAS);

	for (int k = 0; k < FV_ARENAS; k++) {
		int i = (start + k) % FV_ARENAS;
		if (fv_arena[i].vmp != NULL)
			return i;
	}
	return -1;
}

static int
free_slot(void)
{
	for (int i = 0; i < FV_ARENAS; i++)
		if (fv_arena[i].vmp == NULL)
			return i;
	return -1;
}

static size_t
pick_quantum(fz_in_t *in)
{
	static const unsigned shift[] = { 0, 3, 4, 6, 12, 13 };

	return (size_t)1 << shift[fz_below(in, 6)];
}

/* A span start: low in the slot's own region, or near the top. */
static uintptr_t
pick_span(fz_in_t *in, int slot, size_t q, size_t *sizep)
{
	size_t size = (size_t)(fz_u16(in) + 1) * q;
	uintptr_t start;

	if (fz_below(in, 8) == 0) {
		/* Ends at the very top: no arithmetic may wrap. */
		start = UINTPTR_MAX - size + 1;
		start &= ~(uintptr_t)(q - 1);
		start -= (uintptr_t)fz_below(in, 4) * size;
	} else {
		start = ((uintptr_t)(slot + 1) << 40) +
		    (uintptr_t)fz_u16(in) * q * 64;
	}
	*sizep = size;
	return start;
}

static void
op_create(fz_in_t *in)
{
	int i = free_slot(), kind = (int)fz_below(in, 4), src;
	fv_arena_t *a;
	char name[32];
	size_t size;
	uintptr_t start;
	int flags = VM_NOSLEEP;

	if (i < 0)
		return;
	a = &fv_arena[i];
	memset(a, 0, sizeof (*a));
	a->quantum = pick_quantum(in);
	a->qcache_max = a->quantum * fz_below(in, 10);
	if (fz_below(in, 4) == 0)
		flags |= VMC_NO_QCACHE;
	if (fz_below(in, 4) == 0)
		flags |= VMC_IDENTIFIER;
	snprintf(name, sizeof (name), "fv%d", i);
	src = pick_arena(in);
	if (kind == 0 || src < 0) {
		start = pick_span(in, i, a->quantum, &size);
		a->vmp = vmem_create(name, (void *)start, size, a->quantum,
		    NULL, NULL, NULL, a->qcache_max, flags);
		a->source = -1;
		a->root = i;
		a->nspans = 1;
		a->span_start[0] = start;
		a->span_size[0] = size;
	} else if (kind == 3) {
		fv_xgrow = (size_t)fz_below(in, 4) * fv_arena[src].quantum;
		a->vmp = vmem_xcreate(name, NULL, 0, a->quantum, fv_ximport,
		    vmem_free, fv_arena[src].vmp, a->qcache_max, flags);
		a->source = src;
	} else {
		a->vmp = vmem_create(name, NULL, 0, a->quantum, vmem_alloc,
		    vmem_free, fv_arena[src].vmp, a->qcache_max, flags);
		a->source = src;
	}
	if (a->vmp == NULL) {
		FZ_ASSERT(fv_refuse);
		memset(a, 0, sizeof (*a));
		return;
	}
	if (fv_trace)
		fprintf(stderr, "  create %d kind %d q %zu qcache %zu src %d "
		    "flags 0x%x\n", i, kind, a->quantum, a->qcache_max,
		    a->source, flags);
	if (a->source >= 0) {
		a->root = fv_arena[src].root;
		fv_arena[src].nchildren++;
	}
}

static void
op_alloc(fz_in_t *in)
{
	static const int policy[] = { 0, VM_BESTFIT, VM_FIRSTFIT,
	    VM_NEXTFIT, VM_BESTFIT | VM_FIRSTFIT, VM_NEXTFIT | VM_BESTFIT };
	int i = pick_arena(in), p = (int)fz_below(in, 6), bad = p >= 4;
	size_t size;
	void *r;

	if (i < 0)
		return;
	size = (size_t)fz_u16(in) % (fv_arena[i].quantum * 40) + 1;
	if (fz_below(in, 16) == 0)
		size = (size_t)fz_u32(in) << fz_below(in, 33);
	fv_errors = 0;
	r = vmem_alloc(fv_arena[i].vmp, size, VM_NOSLEEP | policy[p]);
	if (bad) {
		FZ_ASSERT(r == NULL && fv_errors == 1 &&
		    fv_last_code == VMEM_E_POLICY);
		return;
	}
	if (size == 0)
		FZ_ASSERT(r == NULL);
	if (fv_trace)
		fprintf(stderr, "  alloc %d size %zu -> %p\n", i, size, r);
	if (r != NULL)
		record(i, r, size, 0);
}

static void
op_xalloc(fz_in_t *in)
{
	int i = pick_arena(in), flags = VM_NOSLEEP;
	size_t q, size, align = 0, phase = 0, nocross = 0;
	uintptr_t minaddr = 0, maxaddr = 0, a;
	unsigned sel;
	void *r;

	if (i < 0)
		return;
	q = fv_arena[i].quantum;
	size = ((size_t)fz_below(in, 64) + 1) * q;
	sel = fz_u8(in);
	if (sel & 1)
		align = q << fz_below(in, 8);
	if (sel & 2)
		phase = (size_t)fz_below(in, 8) * q;
	if (sel & 4)
		nocross = q << fz_below(in, 12);
	if (sel & 8) {
		const fv_arena_t *rt = &fv_arena[fv_arena[i].root];
		minaddr = rt->span_start[0] + (uintptr_t)fz_u16(in) * q;
	}
	if (sel & 16) {
		const fv_arena_t *rt = &fv_arena[fv_arena[i].root];
		maxaddr = rt->span_start[0] + (uintptr_t)fz_u16(in) * q * 4;
	}
	if (sel & 32)
		flags |= VM_ENDALLOC;
	if (sel & 64)
		flags |= VM_BESTFIT;
	if (sel & 128)
		size += fz_below(in, 3); /* not a multiple of the quantum */
	fv_errors = 0;
	r = vmem_xalloc(fv_arena[i].vmp, size, align, phase, nocross,
	    (void *)minaddr, (void *)maxaddr, flags);
	if (fv_trace)
		fprintf(stderr, "  xalloc %d size %zu align %zu phase %zu "
		    "nocross %zu min %#lx max %#lx flags %#x -> %p (errors %d, "
		    "code %d)\n", i, size, align, phase, nocross,
		    (unsigned long)minaddr, (unsigned long)maxaddr, flags, r,
		    fv_errors, fv_last_code);
	if (fv_errors != 0)
		FZ_ASSERT(r == NULL);
	if (r == NULL)
		return;
	a = (uintptr_t)r;
	size_t rsize = round_up(size, q);
	if (align != 0)
		FZ_ASSERT(a % align == phase);
	else if (phase != 0)
		FZ_ASSERT(a % q == phase % q);
	if (nocross != 0)
		FZ_ASSERT(a / nocross == last_of(a, rsize) / nocross);
	if (minaddr != 0)
		FZ_ASSERT(a >= minaddr);
	if (maxaddr != 0)
		FZ_ASSERT(last_of(a, rsize) < maxaddr);
	record(i, r, size, 1);
}

static void
op_free(fz_in_t *in)
{
	int start = (int)fz_u16(in) % FV_LIVE;

	for (int k = 0; k < FV_LIVE; k++) {
		int j = (start + k) % FV_LIVE;
		if (fv_live[j].arena >= 0) {
			fv_errors = 0;
			release(j);
			FZ_ASSERT(fv_errors == 0);
			return;
		}
	}
}

static void
op_add(fz_in_t *in)
{
	int i = pick_arena(in), overlap = 0;
	fv_arena_t *a;
	uintptr_t start;
	size_t size;
	void *r;

	/* Roots only, while the model can remember every span. */
	if (i < 0 || fv_arena[i].source >= 0 ||
	    fv_arena[i].nspans == FV_SPANS)
		return;
	a = &fv_arena[i];
	start = pick_span(in, i, a->quantum, &size);
	for (int k = 0; k < a->nspans; k++)
		if (start <= last_of(a->span_start[k], a->span_size[k]) &&
		    a->span_start[k] <= last_of(start, size))
			overlap = 1;
	fv_errors = 0;
	r = vmem_add(a->vmp, (void *)start, size, VM_NOSLEEP);
	if (overlap) {
		FZ_ASSERT(r == NULL && fv_errors == 1 &&
		    fv_last_code == VMEM_E_OVERLAP);
		return;
	}
	if (fv_trace)
		fprintf(stderr, "  add %d [%#lx, +%#zx) -> %p (errors %d, "
		    "code %d)\n", i, (unsigned long)start, size, r, fv_errors,
		    fv_last_code);
	if (r == NULL && fv_refuse)
		return;
	FZ_ASSERT(r == (void *)start);
	a->span_start[a->nspans] = start;
	a->span_size[a->nspans++] = size;
}

/* Is [a, a + size) the start of a live segment of vmp with that size? */
typedef struct fv_probe {
	uintptr_t a;
	size_t size;
	int hit;
} fv_probe_t;

static void
probe_seg(void *arg, void *start, size_t size)
{
	fv_probe_t *p = arg;

	if ((uintptr_t)start == p->a && (size == p->size || p->size == 0))
		p->hit = 1;
}

static void
op_misuse(fz_in_t *in)
{
	int i = pick_arena(in), how = (int)fz_below(in, 4);
	fv_arena_t *a;
	fv_probe_t pr;
	uintptr_t addr;
	size_t size;

	if (i < 0)
		return;
	a = &fv_arena[i];
	switch (how) {
	case 0: /* a freed or never allocated address */
		addr = fv_arena[a->root].span_start[0] +
		    (uintptr_t)fz_u16(in) * a->quantum;
		size = ((size_t)fz_below(in, 8) + 1) * a->quantum;
		break;
	case 1: { /* a live allocation, another size */
		int k = (int)fz_u16(in) % FV_LIVE;
		if (fv_live[k].arena != i)
			return;
		addr = fv_live[k].addr;
		size = fv_live[k].rsize + a->quantum;
		break;
	}
	case 2: /* outside every span */
		addr = ((uintptr_t)(i + 1) << 40) - a->quantum * 4;
		size = a->quantum;
		break;
	default: /* invalid xalloc arguments: phase >= align */
		fv_errors = 0;
		FZ_ASSERT(vmem_xalloc(a->vmp, a->quantum, a->quantum * 2,
		    a->quantum * 2, 0, NULL, NULL, VM_NOSLEEP) == NULL);
		FZ_ASSERT(fv_errors == 1 &&
		    fv_last_code == VMEM_E_XALLOC_ARGS);
		return;
	}
	/* Sizes served by quantum caches are not checked by the arena. */
	if (size <= a->qcache_max)
		return;
	/* Never hit something that is really allocated there. */
	pr.a = addr;
	pr.size = 0;
	pr.hit = 0;
	vmem_walk(a->vmp, VMEM_ALLOC, probe_seg, &pr);
	if (pr.hit)
		return;
	fv_errors = 0;
	vmem_free(a->vmp, (void *)addr, size);
	FZ_ASSERT(fv_errors == 1);
}

static void
drop_arena(int i)
{
	fv_arena_t *a = &fv_arena[i];

	for (int k = 0; k < FV_LIVE; k++)
		if (fv_live[k].arena == i)
			fv_live[k].arena = -1;
	vmem_destroy(a->vmp);
	if (a->source >= 0)
		fv_arena[a->source].nchildren--;
	a->vmp = NULL;
}

static void
op_destroy(fz_in_t *in)
{
	int i = pick_arena(in), leak = (int)fz_below(in, 2);

	if (i < 0 || fv_arena[i].nchildren > 0)
		return;
	if (fv_trace)
		fprintf(stderr, "  destroy %d leak %d\n", i, leak);
	if (!leak)
		for (int k = 0; k < FV_LIVE; k++)
			if (fv_live[k].arena == i)
				release(k);
	fv_errors = 0;
	drop_arena(i);
}

typedef struct fv_sum {
	size_t bytes;
} fv_sum_t;

static void
sum_seg(void *arg, void *start, size_t size)
{
	(void)start;
	((fv_sum_t *)arg)->bytes += size;
}

static void
check_all(void)
{
	for (int i = 0; i < FV_ARENAS; i++) {
		fv_arena_t *a = &fv_arena[i];
		size_t model = 0;
		fv_sum_t walked = { 0 };

		if (a->vmp == NULL)
			continue;
		FZ_ASSERT(vmem_check(a->vmp) == 0);
		if (a->nchildren > 0 || a->qcache_max >= a->quantum)
			continue;
		for (int k = 0; k < FV_LIVE; k++)
			if (fv_live[k].arena == i)
				model += fv_live[k].rsize;
		vmem_walk(a->vmp, VMEM_ALLOC, sum_seg, &walked);
		if (vmem_size(a->vmp, VMEM_ALLOC) != model)
			fprintf(stderr, "arena %d (q %zu src %d): size %zu "
			    "walked %zu model %zu\n", i, a->quantum, a->source,
			    vmem_size(a->vmp, VMEM_ALLOC), walked.bytes, model);
		FZ_ASSERT(vmem_size(a->vmp, VMEM_ALLOC) == model);
		FZ_ASSERT(walked.bytes == model);
	}
}

static void
teardown(void)
{
	int left;

	do {
		left = 0;
		for (int i = 0; i < FV_ARENAS; i++) {
			if (fv_arena[i].vmp == NULL)
				continue;
			if (fv_arena[i].nchildren > 0) {
				left = 1;
				continue;
			}
			drop_arena(i);
		}
	} while (left);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_in_t in = { data, size };
	int steps = 0;

	if (fv_trace < 0)
		fv_trace = getenv("FUZZ_TRACE") != NULL;
	vmem_set_error_handler(fv_handler, NULL);
	fv_refuse = 0;
	vmem_set_fault_hook(fv_fault, NULL);
	memset(fv_arena, 0, sizeof (fv_arena));
	for (int k = 0; k < FV_LIVE; k++)
		fv_live[k].arena = -1;
	while (in.n > 0 && steps++ < 4000) {
		unsigned op = fz_below(&in, 13);
		if (fv_trace)
			fprintf(stderr, "step %d op %u\n", steps, op);
		switch (op) {
		case 0: op_create(&in); break;
		case 1: case 2: case 3: op_alloc(&in); break;
		case 4: case 5: op_xalloc(&in); break;
		case 6: case 7: op_free(&in); break;
		case 8: op_add(&in); break;
		case 9: op_misuse(&in); break;
		case 10: op_destroy(&in); break;
		case 11: fv_refuse = !fv_refuse; break;
		default: {
			int i = pick_arena(&in);
			if (i >= 0)
				vmem_reap(fv_arena[i].vmp);
			break;
		}
		}
		check_all();
	}
	fv_refuse = 0;
	teardown();
	vmem_set_fault_hook(NULL, NULL);
	vmem_set_error_handler(NULL, NULL);
	return 0;
}
