/*
 * kmem's bookkeeping allocator: memory for cache structures, slab records,
 * magazines and hash tables, taken from platform pages and never from the
 * memory the caches manage (which may not be memory at all).
 *
 * Data structure: power-of-two size classes from 16 bytes to half a page,
 * each a singly linked list of free chunks carved from whole pages; larger
 * requests are whole pages straight from the platform. The caller gives the
 * size back at free time (every kmem record knows its own size), so no
 * header is needed. Small-class pages are kept for reuse, never unmapped.
 *
 * Invariants: a chunk of class c is 2^(c+4) bytes and aligned to its size;
 * kmeta_size(n) is exactly what kmeta_alloc(n) holds, so callers can keep
 * byte-exact accounts.
 *
 * Locking: one global mutex around the class lists; it is a leaf lock (no
 * other lock is taken while it is held, and the platform page calls do not
 * call back into the library).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "kmem_impl.h"

#include <stdatomic.h>
#include "vmem_string.h"

#define KMETA_MINSHIFT 4
#define KMETA_NCLASS 12 /* 16 B .. 32 KiB; classes above pagesize/2 unused */

typedef struct kmeta_chunk {
	struct kmeta_chunk *next;
} kmeta_chunk_t;

static plat_mutex_t kmeta_lock;
static kmeta_chunk_t *kmeta_free_list[KMETA_NCLASS];
static size_t kmeta_pages_bytes; /* all pages taken, for the curious */
static atomic_int kmeta_init_state;

static void
kmeta_init_once(void)
{
	plat_mutex_init(&kmeta_lock);
}

static void
kmeta_init(void)
{
	plat_once(&kmeta_init_state, kmeta_init_once);
}

static int
kmeta_class(size_t size)
{
	int c = 0;

	while (((size_t)1 << (c + KMETA_MINSHIFT)) < size)
		c++;
	return c;
}

static int
kmeta_is_small(size_t size)
{
	return size <= plat_pagesize() / 2;
}

size_t
kmeta_size(size_t size)
{
	size_t page = plat_pagesize();

	if (size == 0)
		size = 1;
	if (kmeta_is_small(size))
		return (size_t)1 << (kmeta_class(size) + KMETA_MINSHIFT);
	return (size + page - 1) & ~(page - 1);
}

/* Carve a fresh page into chunks of class c; called with kmeta_lock held. */
static int
kmeta_refill(int c)
{
	size_t page = plat_pagesize();
	size_t chunk = (size_t)1 << (c + KMETA_MINSHIFT);
	char *p = plat_pages_alloc(page);
	size_t off;

	if (p == NULL)
		return -1;
	kmeta_pages_bytes += page;
	for (off = page; off >= chunk; off -= chunk) {
		kmeta_chunk_t *ch = (kmeta_chunk_t *)(void *)(p + off - chunk);
		ch->next = kmeta_free_list[c];
		kmeta_free_list[c] = ch;
	}
	return 0;
}

void *
kmeta_alloc(size_t size)
{
	kmeta_chunk_t *ch;
	int c;

	kmeta_init();
	size = kmeta_size(size);
	if (!kmeta_is_small(size)) {
		void *p = plat_pages_alloc(size);
		return p;
	}
	c = kmeta_class(size);
	plat_mutex_lock(&kmeta_lock);
	if (kmeta_free_list[c] == NULL && kmeta_refill(c) != 0) {
		plat_mutex_unlock(&kmeta_lock);
		return NULL;
	}
	ch = kmeta_free_list[c];
	kmeta_free_list[c] = ch->next;
	plat_mutex_unlock(&kmeta_lock);
	memset(ch, 0, size);
	return ch;
}

void
kmeta_free(void *p, size_t size)
{
	kmeta_chunk_t *ch = p;
	int c;

	if (p == NULL)
		return;
	size = kmeta_size(size);
	if (!kmeta_is_small(size)) {
		plat_pages_free(p, size);
		return;
	}
	c = kmeta_class(size);
	plat_mutex_lock(&kmeta_lock);
	ch->next = kmeta_free_list[c];
	kmeta_free_list[c] = ch;
	plat_mutex_unlock(&kmeta_lock);
}

/* Held across fork() by kmem's fork handlers (taken last). */
void
kmeta_fork_lock(void)
{
	kmeta_init();
	plat_mutex_lock(&kmeta_lock);
}

void
kmeta_fork_unlock(void)
{
	plat_mutex_unlock(&kmeta_lock);
}
