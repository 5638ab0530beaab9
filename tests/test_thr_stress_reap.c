/*
 * Reaping while another thread allocates, and imports racing.
 *
 * Reap: one thread allocates and frees through an arena's quantum caches
 * and through a kmem object cache, while the other allocates too and,
 * between its own allocations, empties the caches (vmem_reap, kmem_reap,
 * kmem_cache_reap_now, kmem_update). Slabs go back to the arena under the
 * allocating thread's feet; no buffer may be lost or handed out twice.
 *
 * Imports: two threads allocate from child arenas that import from a
 * common parent -- through vmem_alloc (the internal chain), through the
 * parent's quantum caches, and through a user import function
 * (vmem_xcreate) -- so imports and releases of whole spans race with each
 * other and with allocations in the parent.
 *
 * Every address handed out is claimed in a shared bitmap of quanta: a
 * quantum claimed twice is an allocator bug. At the end everything is
 * freed, the caches reaped, every arena checked and empty, and every child
 * has given all its spans back.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <vmem/kmem.h>

#include "testutil.h"

#define Q       ((size_t)4096)
#define BASE    ((uintptr_t)0x40000000)
#define NQUANTA 4096               /* 16 MiB of integer address space */
#define NHOLD   128

static atomic_uchar owner[NQUANTA];

static void
claim(void *p, size_t size, int on)
{
	size_t first = ((uintptr_t)p - BASE) / Q, n = (size + Q - 1) / Q;

	if ((uintptr_t)p < BASE || first + n > NQUANTA) {
		fprintf(stderr, "address %p outside the arena\n", p);
		tu_failures++;
		return;
	}
	for (size_t i = first; i < first + n; i++) {
		unsigned char was = atomic_exchange(&owner[i],
		    (unsigned char)on);
		if (was == (unsigned char)on) {
			fprintf(stderr, "quantum %zu %s twice\n", i,
			    on ? "allocated" : "freed");
			tu_failures++;
		}
	}
}

static long
iterations(void)
{
	return tu_slow_build() ? 100000 : 1000000;
}

/* ------------------------------------------------------------------ */
/* Reaping while allocating */

static vmem_t *qarena, *memarena;
static kmem_cache_t *objcache;
static _Alignas(4096) char region[4 << 20];

typedef struct slot {
	void *p;
	size_t size;
	int kind;           /* 0 arena (vmem_alloc), 1 object cache */
} slot_t;

static void
slot_flip(slot_t *s, tu_rng_t *r)
{
	if (s->p != NULL) {
		if (s->kind == 0) {
			claim(s->p, s->size, 0);
			vmem_free(qarena, s->p, s->size);
		} else {
			/* The object's first word names its owner. */
			CHECK(*(uintptr_t *)s->p == (uintptr_t)s);
			kmem_cache_free(objcache, s->p);
		}
		s->p = NULL;
		return;
	}
	s->kind = (int)tu_range(r, 0, 1);
	if (s->kind == 0) {
		s->size = Q * tu_range(r, 1, 8);    /* 1..5 cached, 6..8 not */
		s->p = vmem_alloc(qarena, s->size, VM_SLEEP);
		CHECK(s->p != NULL);
		if (s->p != NULL)
			claim(s->p, s->size, 1);
	} else {
		s->p = kmem_cache_alloc(objcache, KM_SLEEP);
		CHECK(s->p != NULL);
		if (s->p != NULL)
			*(uintptr_t *)s->p = (uintptr_t)s;
	}
}

static void *
reap_worker(void *arg)
{
	static slot_t slots[2][NHOLD];
	int me = (int)(uintptr_t)arg;
	slot_t *mine = slots[me];
	tu_rng_t r;

	tu_seed(&r, 77 + (uint64_t)me);
	for (long it = 0; it < iterations(); it++) {
		slot_flip(&mine[tu_range(&r, 0, NHOLD - 1)], &r);
		if (me == 1 && tu_range(&r, 0, 255) == 0) {
			switch (tu_range(&r, 0, 3)) {
			case 0:
				vmem_reap(qarena);
				break;
			case 1:
				kmem_reap();
				break;
			case 2:
				kmem_cache_reap_now(objcache);
				break;
			default:
				kmem_update();
				break;
			}
		}
	}
	for (int i = 0; i < NHOLD; i++)
		if (mine[i].p != NULL)
			slot_flip(&mine[i], &r);
	return NULL;
}

static void
test_reap_while_allocating(void)
{
	pthread_t t0, t1;

	qarena = vmem_create("rp_q", (void *)BASE, NQUANTA * Q, Q, NULL,
	    NULL, NULL, 5 * Q, VM_SLEEP);
	memarena = vmem_create("rp_mem", region, sizeof (region), Q, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	objcache = kmem_cache_create("rp_obj", 48, 0, NULL, NULL, NULL, NULL,
	    memarena, 0);
	REQUIRE(qarena && memarena && objcache);
	REQUIRE(pthread_create(&t0, NULL, reap_worker, (void *)0) == 0);
	REQUIRE(pthread_create(&t1, NULL, reap_worker, (void *)1) == 0);
	pthread_join(t0, NULL);
	pthread_join(t1, NULL);

	vmem_reap(qarena);
	kmem_cache_reap_now(objcache);
	CHECK_ARENA(qarena);
	CHECK_ARENA(memarena);
	CHECK_EQ(vmem_size(qarena, VMEM_ALLOC), 0);
	CHECK_EQ(vmem_size(memarena, VMEM_ALLOC), 0);
	for (size_t i = 0; i < NQUANTA; i++)
		CHECK_EQ(atomic_load(&owner[i]), 0);
	kmem_cache_destroy(objcache);
	vmem_destroy(memarena);
	vmem_destroy(qarena);
}

/* ------------------------------------------------------------------ */
/* Imports racing */

static vmem_t *parent, *kids[3];

static void *
ximport(vmem_t *src, size_t *sizep, size_t align, int flags)
{
	(void)align;
	/* Grow the import: vmem_xcreate lets the function return more. */
	*sizep += Q;
	return vmem_alloc(src, *sizep, flags);
}

static void *
import_worker(void *arg)
{
	static struct { void *p; size_t size; int kid; } held[2][NHOLD];
	int me = (int)(uintptr_t)arg;
	tu_rng_t r;

	tu_seed(&r, 991 + (uint64_t)me);
	for (long it = 0; it < iterations() / 2; it++) {
		unsigned i = (unsigned)tu_range(&r, 0, NHOLD - 1);

		if (held[me][i].p != NULL) {
			claim(held[me][i].p, held[me][i].size, 0);
			vmem_free(kids[held[me][i].kid], held[me][i].p,
			    held[me][i].size);
			held[me][i].p = NULL;
			continue;
		}
		held[me][i].kid = (int)tu_range(&r, 0, 2);
		held[me][i].size = Q * tu_range(&r, 1, 6);
		held[me][i].p = vmem_alloc(kids[held[me][i].kid],
		    held[me][i].size, VM_SLEEP);
		CHECK(held[me][i].p != NULL);
		if (held[me][i].p != NULL)
			claim(held[me][i].p, held[me][i].size, 1);
		if (tu_range(&r, 0, 1023) == 0)
			vmem_reap(parent);
	}
	for (unsigned i = 0; i < NHOLD; i++)
		if (held[me][i].p != NULL) {
			claim(held[me][i].p, held[me][i].size, 0);
			vmem_free(kids[held[me][i].kid], held[me][i].p,
			    held[me][i].size);
		}
	return NULL;
}

static void
test_imports_racing(void)
{
	pthread_t t0, t1;

	parent = vmem_create("im_parent", (void *)BASE, NQUANTA * Q, Q, NULL,
	    NULL, NULL, 8 * Q, VM_SLEEP);
	/* Imports of 1..6 quanta go through the parent's quantum caches. */
	kids[0] = vmem_create("im_chain", NULL, 0, Q, vmem_alloc, vmem_free,
	    parent, 0, VM_SLEEP);
	/* Larger minimum imports (no caches of its own): parent's arena. */
	kids[1] = vmem_create("im_noqc", NULL, 0, Q, vmem_alloc, vmem_free,
	    parent, 4 * Q, VM_SLEEP | VMC_NO_QCACHE);
	/* A user import function (no internal chain). */
	kids[2] = vmem_xcreate("im_user", NULL, 0, Q, ximport, vmem_free,
	    parent, 0, VM_SLEEP);
	REQUIRE(parent && kids[0] && kids[1] && kids[2]);
	REQUIRE(pthread_create(&t0, NULL, import_worker, (void *)0) == 0);
	REQUIRE(pthread_create(&t1, NULL, import_worker, (void *)1) == 0);
	pthread_join(t0, NULL);
	pthread_join(t1, NULL);

	for (int k = 0; k < 3; k++) {
		CHECK_ARENA(kids[k]);
		CHECK_EQ(vmem_size(kids[k], VMEM_ALLOC), 0);
		CHECK_EQ(vmem_size(kids[k], VMEM_SPAN), 0);
	}
	vmem_reap(parent);
	CHECK_ARENA(parent);
	CHECK_EQ(vmem_size(parent, VMEM_ALLOC), 0);
	for (size_t i = 0; i < NQUANTA; i++)
		CHECK_EQ(atomic_load(&owner[i]), 0);
	for (int k = 0; k < 3; k++)
		vmem_destroy(kids[k]);
	vmem_destroy(parent);
}

int
main(void)
{
	tu_record_errors();
	RUN(test_reap_while_allocating);
	RUN(test_imports_racing);
	CHECK_EQ(tu_err.count, 0);
	return tu_finish();
}
