/*
 * The kmem heap: kmem_alloc()/kmem_free() of any size over one arena.
 *
 * Problem: general-purpose allocation with the speed of object caches and
 * the illumos contract that the caller gives the size back at free time
 * (so no per-buffer header is needed).
 *
 * Data structure: one object cache per size class, 8 bytes to 8 KiB:
 * 8, 16, 32, 48, 64, then four classes per power of two (80, 96, 112, 128,
 * 160, ..., 7168, 8192), 33 caches, at most 25% internal waste above 64
 * bytes. A table indexed by (size - 1) / 8 maps a size to its class in one
 * load. Requests above 8 KiB go straight to the arena (vmem_alloc), which
 * keeps its own exact-size check.
 *
 * Wrong size at free: kmem_free(buf, size) goes to the class of size; if
 * that cache does not own buf, the heap finds the class that does and
 * reports KMEM_E_WRONGSIZE naming both sizes (a buffer of no class is
 * reported as never allocated). A cache's slab records know the class
 * size, so this costs nothing on correct frees beyond the ownership check
 * every kmem_cache_free makes.
 *
 * The default heap (kmem_alloc without a heap argument) is set by the
 * program (segkmem sets one over kmem_va) or, on first use, created over
 * a private arena whose spans are platform pages.
 *
 * Locking: the heap itself is immutable after creation; the default heap
 * pointer is an atomic, created once under a mutex.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "kmem_impl.h"

#include <stdatomic.h>
#include "vmem_string.h"

#include "error.h"
#include "fault.h"
#include "vmem_impl.h"

static const uint16_t kmem_heap_sizes[] = {
	8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256,
	320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048,
	2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192
};
#define KMEM_HEAP_NCLASS (sizeof (kmem_heap_sizes) / sizeof (kmem_heap_sizes[0]))

struct kmem_heap {
	char name[VMEM_NAMELEN];
	vmem_t *arena;
	int cflags;
	int owns_arena;
	kmem_cache_t *cache[KMEM_HEAP_NCLASS];
	uint8_t class_of[KMEM_HEAP_MAXCACHED / 8]; /* by (size - 1) / 8 */
};

static kmem_cache_t *
heap_cache(const kmem_heap_t *heap, size_t size)
{
	return heap->cache[heap->class_of[(size - 1) >> 3]];
}

void
kmem_heap_destroy(kmem_heap_t *heap)
{
	size_t i;

	if (heap == NULL)
		return;
	for (i = 0; i < KMEM_HEAP_NCLASS; i++)
		kmem_cache_destroy(heap->cache[i]);
	if (heap->owns_arena)
		vmem_destroy(heap->arena);
	kmeta_free(heap, sizeof (*heap));
}

kmem_heap_t *
kmem_heap_create_flags(const char *name, vmem_t *arena, int cflags)
{
	kmem_heap_t *heap;
	size_t i, cls = 0;

	if (name == NULL || arena == NULL) {
		vmem_error_report(KMEM_E_BADARG, 0, "kmem_heap_create", arena,
		    name, 0, 0, "%s", "heap needs a name and an arena");
		return NULL;
	}
	heap = kmeta_alloc(sizeof (*heap));
	if (heap == NULL)
		return NULL;
	(void)vmem_snprintf(heap->name, sizeof (heap->name), "%s", name);
	heap->arena = arena;
	heap->cflags = cflags & (KMC_NOTOUCH | KMC_NODEBUG | KMC_NOMAGAZINE);
	for (i = 0; i < KMEM_HEAP_MAXCACHED / 8; i++) {
		while (kmem_heap_sizes[cls] < (i + 1) * 8)
			cls++;
		heap->class_of[i] = (uint8_t)cls;
	}
	for (i = 0; i < KMEM_HEAP_NCLASS; i++) {
		char cname[KMEM_CACHE_NAMELEN];
		size_t size = kmem_heap_sizes[i];

		(void)vmem_snprintf(cname, sizeof (cname), "%s_%zu", name,
		    size);
		heap->cache[i] = kmem_cache_create(cname, size,
		    size >= 16 ? 16 : 8, NULL, NULL, NULL, NULL, arena,
		    heap->cflags | KMC_KMEM_ALLOC);
		if (heap->cache[i] == NULL) {
			kmem_heap_destroy(heap);
			return NULL;
		}
	}
	return heap;
}

kmem_heap_t *
kmem_heap_create(const char *name, vmem_t *arena)
{
	return kmem_heap_create_flags(name, arena, 0);
}

vmem_t *
kmem_heap_arena(const kmem_heap_t *heap)
{
	return heap->arena;
}

void
kmem_heap_reap(kmem_heap_t *heap)
{
	size_t i;

	for (i = 0; i < KMEM_HEAP_NCLASS; i++)
		kmem_cache_reap_now(heap->cache[i]);
}

#if defined(__GNUC__)
#define KMEM_HEAP_NOINLINE __attribute__((noinline))
#else
#define KMEM_HEAP_NOINLINE
#endif

/* Above the largest class: straight to the arena (out of line, so the
 * class path is a bare tail call). */
static KMEM_HEAP_NOINLINE void *
heap_alloc_large(kmem_heap_t *heap, size_t size, int kmflag)
{
	void *buf;

	buf = vmem_alloc(heap->arena, size, (kmflag & KM_VMFLAGS) & ~VM_PANIC);
	if (buf == NULL && (kmflag & KM_PANIC))
		vmem_error_report(KMEM_E_PANIC, 0, "kmem_alloc", heap->arena,
		    heap->name, 0, size, "%s", "allocation failed (KM_PANIC)");
	return buf;
}

void *
kmem_heap_alloc(kmem_heap_t *heap, size_t size, int kmflag)
{
	if (size - 1 < KMEM_HEAP_MAXCACHED)  /* 1 .. MAXCACHED */
		return kmem_cache_alloc(heap_cache(heap, size), kmflag);
	if (size == 0)
		return NULL;
	return heap_alloc_large(heap, size, kmflag);
}

void *
kmem_heap_zalloc(kmem_heap_t *heap, size_t size, int kmflag)
{
	void *buf = kmem_heap_alloc(heap, size, kmflag);

	if (buf != NULL && !(heap->cflags & KMC_NOTOUCH))
		memset(buf, 0, size);
	return buf;
}

/* The class cache that owns buf, or NULL. */
static kmem_cache_t *
heap_owner(kmem_heap_t *heap, const void *buf)
{
	size_t i;

	for (i = 0; i < KMEM_HEAP_NCLASS; i++)
		if (kmem_cache_owns(heap->cache[i], buf))
			return heap->cache[i];
	return NULL;
}

static void
report_wrong_size(kmem_heap_t *heap, const void *buf, size_t size)
{
	kmem_cache_t *owner = heap_owner(heap, buf);

	if (owner != NULL)
		vmem_error_report(KMEM_E_WRONGSIZE, 0, "kmem_free", NULL,
		    kmem_cache_name(owner), (uintptr_t)buf, size,
		    "freed with size %zu but allocated with a size of class %zu",
		    size, kmem_cache_bufsize(owner));
	else
		vmem_error_report(KMEM_E_WRONGCACHE, 0, "kmem_free", NULL,
		    heap->name, (uintptr_t)buf, size, "%s",
		    "buffer was not allocated from this heap");
}

void
kmem_heap_free(kmem_heap_t *heap, void *buf, size_t size)
{
	if (buf == NULL)
		return;
	if (size == 0) {
		report_wrong_size(heap, buf, size);
		return;
	}
	if (size <= KMEM_HEAP_MAXCACHED) {
		if (kmem_cache_free_quiet(heap_cache(heap, size), buf,
		    "kmem_free") != 0)
			report_wrong_size(heap, buf, size);
		return;
	}
	if (heap_owner(heap, buf) != NULL) {
		report_wrong_size(heap, buf, size);
		return;
	}
	vmem_free(heap->arena, buf, size);
}

/* ------------------------------------------------------------------ */
/* The default heap */

static _Atomic(kmem_heap_t *) kmem_default;
static atomic_int kmem_default_init; /* 0 none, 1 creating, 2 mutex ready */
static plat_mutex_t kmem_default_lock;

static void
default_lock_init_once(void)
{
	plat_mutex_init(&kmem_default_lock);
}

static void
default_lock_init(void)
{
	plat_once(&kmem_default_init, default_lock_init_once);
}

/* Held across fork() by kmem's fork handlers (taken first). */
void
kmem_heap_fork_lock(void)
{
	default_lock_init();
	plat_mutex_lock(&kmem_default_lock);
}

void
kmem_heap_fork_unlock(void)
{
	plat_mutex_unlock(&kmem_default_lock);
}

/* The private arena of the default heap, once made. */
static vmem_t *_Atomic default_arena;

/*
 * Spans of the private default arena are platform pages. Pages refused
 * are a shortage no free is bound to mend: counted as a metadata stop, so
 * a KM_SLEEP caller fails with a warning instead of polling for ever.
 */
static void *
default_import(vmem_t *src, size_t size, int vmflag)
{
	void *p = meta_pages_alloc(size);

	(void)src;
	(void)vmflag;
	if (p == NULL)
		vmem_count_nometa(atomic_load_explicit(&default_arena,
		    memory_order_relaxed));
	return p;
}

static void
default_release(vmem_t *src, void *addr, size_t size)
{
	(void)src;
	plat_pages_free(addr, size);
}

kmem_heap_t *
kmem_set_default_heap(kmem_heap_t *heap)
{
	default_lock_init();
	return atomic_exchange(&kmem_default, heap);
}

kmem_heap_t *
kmem_default_heap(void)
{
	kmem_heap_t *heap = atomic_load_explicit(&kmem_default,
	    memory_order_acquire);
	vmem_t *arena;

	if (heap != NULL)
		return heap;
	default_lock_init();
	plat_mutex_lock(&kmem_default_lock);
	heap = atomic_load(&kmem_default);
	if (heap == NULL) {
		arena = vmem_create("kmem_default", NULL, 0, plat_pagesize(),
		    default_import, default_release, NULL, 0, VM_SLEEP);
		atomic_store_explicit(&default_arena, arena,
		    memory_order_relaxed);
		if (arena != NULL) {
			heap = kmem_heap_create("kmem_alloc", arena);
			if (heap != NULL)
				heap->owns_arena = 1;
			else
				vmem_destroy(arena);
		}
		atomic_store(&kmem_default, heap);
	}
	plat_mutex_unlock(&kmem_default_lock);
	return heap;
}

void *
kmem_alloc(size_t size, int kmflag)
{
	kmem_heap_t *heap = kmem_default_heap();

	return heap != NULL ? kmem_heap_alloc(heap, size, kmflag) : NULL;
}

void *
kmem_zalloc(size_t size, int kmflag)
{
	kmem_heap_t *heap = kmem_default_heap();

	return heap != NULL ? kmem_heap_zalloc(heap, size, kmflag) : NULL;
}

void
kmem_free(void *buf, size_t size)
{
	kmem_heap_t *heap;

	if (buf == NULL)
		return;
	heap = kmem_default_heap();
	if (heap != NULL)
		kmem_heap_free(heap, buf, size);
}
