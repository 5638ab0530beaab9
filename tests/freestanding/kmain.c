/*
 * A tiny "kernel" that embeds the libvmem core with no C library: it owns
 * 8 MiB of "physical memory" (a static array) and builds the allocators
 * a kernel would on top of it -- a page arena over the memory, a
 * kmem_va-like arena importing from it with quantum caches, an id arena
 * for process ids, an object cache with a constructor, the kmem heap --
 * then checks every result: addresses inside the memory, alignment and
 * boundary constraints, ids not reused at once, constructors paired with
 * destructors, errors reported through the handler with the core's own
 * formatter, and every arena consistent (vmem_check) and empty at the end.
 *
 * Output goes to file descriptor 1 through a raw write system call; the
 * exit status is the number of failed checks.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stddef.h>
#include <stdint.h>

#include <vmem/kmem.h>
#include <vmem/vmem.h>

#include "error.h" /* vmem_snprintf: the core's formatter */
#include "vmem_string.h"
#include "platform.h"

#define RAM_SIZE (8u << 20)
#define PAGE 4096u

static _Alignas(4096) unsigned char ram[RAM_SIZE];
static int checks, failures;

static void
say(const char *s)
{
	fs_write(1, s);
}

#define CHECK(cond) check((cond) != 0, #cond, __LINE__)

static void
check(int ok, const char *what, int line)
{
	char msg[256];

	checks++;
	if (ok)
		return;
	failures++;
	vmem_snprintf(msg, sizeof (msg), "kmain.c:%d: check failed: %s\n",
	    line, what);
	fs_write(2, msg);
}

static int
in_ram(const void *p, size_t size)
{
	uintptr_t a = (uintptr_t)p, lo = (uintptr_t)ram;

	return a >= lo && a + size <= lo + RAM_SIZE;
}

/* ---- the error handler: record instead of panicking ------------------- */

static int err_count, err_code;
static char err_line[256];

static void
record_error(const vmem_error_info_t *info, void *arg)
{
	(void)arg;
	err_count++;
	err_code = info->code;
	vmem_format_error(info, err_line, sizeof (err_line));
}

static int
contains(const char *hay, const char *needle)
{
	for (; *hay != '\0'; hay++) {
		size_t i = 0;
		while (needle[i] != '\0' && hay[i] == needle[i])
			i++;
		if (needle[i] == '\0')
			return 1;
	}
	return 0;
}

/* ---- arenas --------------------------------------------------------------- */

static vmem_t *page_arena, *va_arena;

static void
test_arenas(void)
{
	void *p[64];
	size_t sizes[64];

	page_arena = vmem_create("fs_pages", ram, RAM_SIZE, PAGE, NULL, NULL,
	    NULL, 0, VM_SLEEP);
	CHECK(page_arena != NULL);
	va_arena = vmem_create("fs_kmem_va", NULL, 0, PAGE, vmem_alloc,
	    vmem_free, page_arena, 8 * PAGE, VM_SLEEP);
	CHECK(va_arena != NULL);
	for (int i = 0; i < 64; i++) {
		sizes[i] = (size_t)(1 + i % 12) * PAGE;
		p[i] = vmem_alloc(va_arena, sizes[i], VM_NOSLEEP);
		CHECK(p[i] != NULL && in_ram(p[i], sizes[i]));
		CHECK((uintptr_t)p[i] % PAGE == 0);
		memset(p[i], i, sizes[i]); /* the memory is really ours */
	}
	for (int i = 0; i < 64; i++)
		for (int j = i + 1; j < 64; j++)
			CHECK((uintptr_t)p[i] + sizes[i] <= (uintptr_t)p[j] ||
			    (uintptr_t)p[j] + sizes[j] <= (uintptr_t)p[i]);
	CHECK(vmem_size(page_arena, VMEM_ALLOC) > 0);
	CHECK(vmem_check(va_arena) == 0 && vmem_check(page_arena) == 0);
	for (int i = 0; i < 64; i++) {
		unsigned char *b = p[i];
		CHECK(b[0] == (unsigned char)i && b[sizes[i] - 1] ==
		    (unsigned char)i);
		vmem_free(va_arena, p[i], sizes[i]);
	}
	/* Quantum caches keep slabs until reaped; then every span goes home. */
	vmem_reap(va_arena);
	CHECK(vmem_size(va_arena, VMEM_ALLOC) == 0);
	CHECK(vmem_size(page_arena, VMEM_ALLOC) == 0);
	CHECK(vmem_check(va_arena) == 0 && vmem_check(page_arena) == 0);
}

static void
test_constraints(void)
{
	const size_t align = 64 * 1024, nocross = 128 * 1024;

	for (int i = 0; i < 16; i++) {
		size_t size = (size_t)(1 + i % 10) * 3 * PAGE;
		void *p = vmem_xalloc(page_arena, size, align, PAGE, nocross,
		    NULL, NULL, VM_NOSLEEP);
		uintptr_t a = (uintptr_t)p;

		CHECK(p != NULL && in_ram(p, size));
		CHECK(a % align == PAGE);
		CHECK(a / nocross == (a + size - 1) / nocross);
		if (p != NULL)
			vmem_xfree(page_arena, p, size);
	}
	CHECK(vmem_size(page_arena, VMEM_ALLOC) == 0);
}

static void
test_pids(void)
{
	vmem_t *pids = vmem_create("fs_pids", (void *)1, 30000, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);
	uintptr_t first, again;

	CHECK(pids != NULL);
	first = (uintptr_t)vmem_alloc(pids, 1, VM_NOSLEEP | VM_NEXTFIT);
	vmem_free(pids, (void *)first, 1);
	again = (uintptr_t)vmem_alloc(pids, 1, VM_NOSLEEP | VM_NEXTFIT);
	CHECK(first == 1 && again == 2); /* next fit: no immediate reuse */
	vmem_free(pids, (void *)again, 1);
	CHECK(vmem_check(pids) == 0);
	vmem_destroy(pids);
}

/* ---- object caches -------------------------------------------------------- */

#ifdef VMEM_WITH_KMEM
typedef struct proc {
	uint64_t magic;
	int pid;
	unsigned char pad[180];
} proc_t;

static int constructed, destructed;

static int
proc_ctor(void *buf, void *priv, int kmflag)
{
	proc_t *pp = buf;

	(void)priv;
	(void)kmflag;
	pp->magic = 0x50524f43; /* "PROC" */
	pp->pid = -1;
	constructed++;
	return 0;
}

static void
proc_dtor(void *buf, void *priv)
{
	proc_t *pp = buf;

	(void)priv;
	if (pp->magic == 0x50524f43)
		destructed++;
}

static void
test_cache(void)
{
	kmem_cache_t *cp = kmem_cache_create("fs_proc_cache", sizeof (proc_t),
	    64, proc_ctor, proc_dtor, NULL, NULL, va_arena, 0);
	static proc_t *objs[500];
	kmem_cache_stats_t st;

	CHECK(cp != NULL);
	for (unsigned cpu = 0; cpu < FS_NCPUS; cpu++) {
		fs_set_cpu(cpu);
		for (int i = 0; i < 500; i++) {
			objs[i] = kmem_cache_alloc(cp, KM_NOSLEEP);
			CHECK(objs[i] != NULL && in_ram(objs[i], sizeof (proc_t)));
			CHECK((uintptr_t)objs[i] % 64 == 0);
			CHECK(objs[i]->magic == 0x50524f43);
			objs[i]->pid = i;
		}
		/* Free from another CPU: the buffers land in its magazines. */
		fs_set_cpu(cpu + 1);
		for (int i = 0; i < 500; i++)
			kmem_cache_free(cp, objs[i]);
	}
	kmem_cache_get_stats(cp, &st);
	CHECK(st.buf_inuse == 0 && st.alloc == 4 * 500 && st.free == 4 * 500);
	kmem_cache_reap_now(cp);
	kmem_cache_destroy(cp);
	CHECK(constructed > 0 && constructed == destructed);
	vmem_reap(va_arena);
	CHECK(vmem_size(page_arena, VMEM_ALLOC) == 0);
}

static void
test_heaps(void)
{
	kmem_heap_t *heap = kmem_heap_create("fs_heap", va_arena);
	void *small, *big, *dflt;

	CHECK(heap != NULL);
	small = kmem_heap_zalloc(heap, 100, KM_NOSLEEP);
	big = kmem_heap_alloc(heap, 3 * PAGE + 5, KM_NOSLEEP);
	CHECK(small != NULL && in_ram(small, 100) && big != NULL &&
	    in_ram(big, 3 * PAGE + 5));
	CHECK(small != NULL && ((unsigned char *)small)[99] == 0);
	kmem_heap_free(heap, small, 100);
	kmem_heap_free(heap, big, 3 * PAGE + 5);
	kmem_heap_destroy(heap);
	/* The default heap's memory comes from the platform's page pool. */
	dflt = kmem_zalloc(1000, KM_NOSLEEP);
	CHECK(dflt != NULL && !in_ram(dflt, 1000));
	kmem_free(dflt, 1000);
	vmem_reap(va_arena);
	CHECK(vmem_size(page_arena, VMEM_ALLOC) == 0);
}
#endif

static void
test_errors(void)
{
	vmem_error_handler_t *old = vmem_set_error_handler(record_error, NULL);
	void *p = vmem_alloc(page_arena, PAGE, VM_NOSLEEP);

	vmem_free(page_arena, (char *)p + 2 * PAGE, PAGE);
	CHECK(err_count == 1 && (err_code == VMEM_E_BADFREE ||
	    err_code == VMEM_E_DOUBLEFREE));
	CHECK(contains(err_line, "vmem_free") && contains(err_line, "fs_pages"));
	vmem_free(page_arena, p, PAGE);
	CHECK(err_count == 1);
	CHECK(vmem_xalloc(page_arena, PAGE, 3 * PAGE, 0, 0, NULL, NULL,
	    VM_NOSLEEP) == NULL);
	CHECK(err_count == 2 && err_code == VMEM_E_XALLOC_ARGS);
	vmem_set_error_handler(old, NULL);
	say("error line: ");
	say(err_line);
	say("\n");
}

static int refused;

static int
refuse_metadata(const char *site, void *arg)
{
	(void)arg;
	if (contains(site, "metadata")) {
		refused++;
		return 1;
	}
	return 0;
}

/* The fault switch works here too: the core asks it, not the platform. */
static void
test_fault_hook(void)
{
	unsigned long before = fs_pool_pages_used();
	vmem_t *v;
	void *p;

	vmem_set_fault_hook(refuse_metadata, NULL);
	v = vmem_create("fs_refused", (void *)0x1000, 0x10000, PAGE, NULL,
	    NULL, NULL, 0, VM_NOSLEEP);
	vmem_set_fault_hook(NULL, NULL);
	CHECK(v == NULL && refused > 0);
	CHECK(fs_pool_pages_used() == before);
	v = vmem_create("fs_refused", (void *)0x1000, 0x10000, PAGE, NULL,
	    NULL, NULL, 0, VM_NOSLEEP);
	CHECK(v != NULL);
	p = vmem_alloc(v, PAGE, VM_NOSLEEP);
	CHECK(p != NULL);
	vmem_free(v, p, PAGE);
	vmem_destroy(v);
}

#ifdef VMEM_WITH_KMEM
static void
out_line(void *arg, const char *line)
{
	(void)arg;
	say(line);
}
#endif

static int json_lines;

static void
count_json(void *arg, const char *line)
{
	(void)arg;
	json_lines++;
	say(line);
}

/*
 * The ::vmem-style table (vmem_dump_arenas, vmem_print.c) needs no C
 * library either: a header, then one line per arena, each starting with
 * the arena's name and as long as the header (the columns line up).
 */
typedef struct table {
	int lines, pages, va;
	size_t width;	/* the header's length */
	int bad;	/* a line not ending in '\n', not starting as expected
			 * or not as long as the header */
} table_t;

static int
starts_with(const char *s, const char *prefix)
{
	while (*prefix != '\0')
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

static void
table_line(void *arg, const char *line)
{
	table_t *t = arg;
	size_t n = 0;

	while (line[n] != '\0')
		n++;
	say(line);
	if (n == 0 || line[n - 1] != '\n')
		t->bad++;
	if (t->lines++ == 0) {
		t->width = n;
		if (!starts_with(line, "ARENA ") || !contains(line, "IMPORTS"))
			t->bad++;
		return;
	}
	if (n != t->width)
		t->bad++;
	if (starts_with(line, "fs_pages "))
		t->pages++;
	else if (starts_with(line, "fs_kmem_va "))
		t->va++;
}

static void
test_table(void)
{
	table_t t = { 0, 0, 0, 0, 0 };

	vmem_dump_arenas(table_line, &t);
	CHECK(t.bad == 0);
	CHECK(t.pages == 1 && t.va == 1);
#ifdef VMEM_WITH_KMEM
	CHECK(t.lines == 1 + 3); /* fs_pages, fs_kmem_va, kmem_default */
#else
	CHECK(t.lines == 1 + 2);
#endif
}

int
kmain(void)
{
	char line[160];

	say("freestanding libvmem: no C library, own platform\n");
	test_arenas();
	test_constraints();
	test_pids();
#ifdef VMEM_WITH_KMEM
	test_cache();
	test_heaps();
#endif
	test_errors();
	test_fault_hook();
	test_table();
#ifdef VMEM_WITH_KMEM
	kmem_dump_caches(out_line, NULL);
	/* JSON needs no C library either: one line per arena, plus two. */
	vmem_dump_arenas_json(count_json, NULL);
	CHECK(json_lines == 2 + 3); /* fs_pages, fs_kmem_va, kmem_default */
#else
	say("vmem alone: no object caches, no kmem heap\n");
	vmem_dump_stats_json(count_json, NULL);
	CHECK(json_lines == 4 + 2); /* fs_pages, fs_kmem_va; caches: none */
#endif
	vmem_destroy(va_arena);
	CHECK(vmem_size(page_arena, VMEM_ALLOC) == 0);
	CHECK(vmem_check(page_arena) == 0);
	vmem_destroy(page_arena);
	vmem_snprintf(line, sizeof (line),
	    "metadata pool: %lu pages now, %lu at most; %lu condition waits\n",
	    fs_pool_pages_used(), fs_pool_pages_peak(), fs_cond_waits());
	say(line);
	CHECK(fs_cond_waits() == 0);
	vmem_snprintf(line, sizeof (line), "%d passed, %d failed\n",
	    checks - failures, failures);
	say(line);
	return failures != 0;
}
