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
#include "fault.h"

#define KMETA_MINSHIFT 4
#define KMETA_NCLASS 12 /* 16 B .. 32 KiB; classes above pagesize/2 unused */

typedef struct kmeta_chunk {
	struct kmeta_chunk *next;
} kmeta_chunk_t;

static plat_mutex_t kmeta_lock;
static kmeta_chunk_t *kmeta_free_list[KMETA_NCLASS];
static size_t kmeta_pages_bytes; /* all pages taken, for the curious */
static atomic_int kmeta_init_state;
/* plat_pagesize(), read once at init (every size check needs it). */
static atomic_size_t kmeta_page;

static void
kmeta_init_once(void)
{
	plat_mutex_init(&kmeta_lock);
	atomic_store_explicit(&kmeta_page, plat_pagesize(),
	    memory_order_relaxed);
}

static void
kmeta_init(void)
{
	plat_once(&kmeta_init_state, kmeta_init_once);
}

/* The class of a small size: the power of two at or above it, from 16. */
static int
kmeta_class(size_t size)
{
	if (size <= ((size_t)1 << KMETA_MINSHIFT))
		return 0;
#if defined(__GNUC__)
	return (int)(sizeof (unsigned long long) * 8) -
	    __builtin_clzll((unsigned long long)(size - 1)) - KMETA_MINSHIFT;
#else
	{
		int c = 0;

		while (((size_t)1 << (c + KMETA_MINSHIFT)) < size)
			c++;
		return c;
	}
#endif
}

static size_t
kmeta_pagesize(void)
{
	size_t page = atomic_load_explicit(&kmeta_page, memory_order_relaxed);

	return page != 0 ? page : plat_pagesize();
}

static int
kmeta_is_small(size_t size)
{
	return size <= kmeta_pagesize() / 2;
}

size_t
kmeta_size(size_t size)
{
	size_t page = kmeta_pagesize();

	if (size == 0)
		size = 1;
	if (size <= page / 2)
		return (size_t)1 << (kmeta_class(size) + KMETA_MINSHIFT);
	return (size + page - 1) & ~(page - 1);
}

/* Carve a fresh page into chunks of class c; called with kmeta_lock held. */
static int
kmeta_refill(int c)
{
	size_t page = plat_pagesize();
	size_t chunk = (size_t)1 << (c + KMETA_MINSHIFT);
	char *p = meta_pages_alloc(page);
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
	if (size == 0)
		size = 1;
	if (!kmeta_is_small(size))
		return meta_pages_alloc(kmeta_size(size));
	c = kmeta_class(size);
	size = (size_t)1 << (c + KMETA_MINSHIFT);
	plat_mutex_lock(&kmeta_lock);
	if (kmeta_free_list[c] == NULL && kmeta_refill(c) != 0) {
		plat_mutex_unlock(&kmeta_lock);
		return NULL;
	}
	ch = kmeta_free_list[c];
	kmeta_free_list[c] = ch->next;
	plat_mutex_unlock(&kmeta_lock);
	if (size <= 64) {
		/* Magazines and slab records: a few words, no library call. */
		uint64_t *w = (uint64_t *)(void *)ch;
		size_t i;

		for (i = 0; i < size / 8; i++)
			w[i] = 0;
	} else {
		memset(ch, 0, size);
	}
	return ch;
}

void
kmeta_free(void *p, size_t size)
{
	kmeta_chunk_t *ch = p;
	int c;

	if (p == NULL)
		return;
	if (size == 0)
		size = 1;
	if (!kmeta_is_small(size)) {
		plat_pages_free(p, kmeta_size(size));
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
