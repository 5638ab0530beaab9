/*
 * layout_draw -- the kernel layout drawn the way startup.c's comment draws
 * it, with the addresses layout_compute() found.
 *
 * Problem: a layout is easiest to check by eye as the familiar column of
 * boxes, top of the address space first, each boundary labelled with the
 * kernel variable that holds it, and each region's size beside it.
 *
 * Data: a small append-only text sink with snprintf semantics (it counts
 * what the whole drawing needs even when the caller's buffer is short), and
 * three emitters: a boundary line, a region line, a gap line.
 *
 * No locking; no allocation; output is deterministic.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <vmem/layout.h>

#define BOX_WIDTH 27

typedef struct sink {
	char *buf;
	size_t len;
	size_t used;            /* bytes the full drawing needs so far */
	int wide;               /* amd64 addresses */
} sink_t;

static void
put(sink_t *s, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof (line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof (line))
		n = sizeof (line) - 1;
	if (s->len > 0 && s->used < s->len - 1) {
		size_t room = s->len - 1 - s->used;
		size_t take = (size_t)n < room ? (size_t)n : room;

		memcpy(s->buf + s->used, line, take);
		s->buf[s->used + take] = '\0';
	}
	s->used += (size_t)n;
}

static void
fmt_addr(const sink_t *s, uint64_t a, char *out, size_t len)
{
	if (s->wide)
		snprintf(out, len, "0x%08llX.%08llX",
		    (unsigned long long)(a >> 32),
		    (unsigned long long)(a & 0xFFFFFFFFULL));
	else
		snprintf(out, len, "0x%08llX", (unsigned long long)a);
}

static int
addr_width(const sink_t *s)
{
	return s->wide ? 19 : 10;
}

static void
fmt_size(uint64_t bytes, char *out, size_t len)
{
	if (bytes >= (1ULL << 30) && bytes % (1ULL << 30) == 0)
		snprintf(out, len, "%llu GiB", (unsigned long long)(bytes >> 30));
	else if (bytes >= (10ULL << 30))
		snprintf(out, len, "%.1f GiB", (double)bytes / (1ULL << 30));
	else if (bytes >= (1ULL << 20) && bytes % (1ULL << 20) == 0)
		snprintf(out, len, "%llu MiB", (unsigned long long)(bytes >> 20));
	else if (bytes >= (1ULL << 20))
		snprintf(out, len, "%.1f MiB", (double)bytes / (1ULL << 20));
	else
		snprintf(out, len, "%llu KiB", (unsigned long long)(bytes >> 10));
}

/* " 0xD2800000  -|---------------------------|- kernelheap" */
static void
boundary(sink_t *s, uint64_t addr, const char *label)
{
	char a[32];

	fmt_addr(s, addr, a, sizeof (a));
	put(s, " %-*s -|%.*s|%s%s\n", addr_width(s), a, BOX_WIDTH,
	    "-----------------------------------", label[0] ? "- " : "", label);
}

/* A boundary whose address floats and is not worth printing. */
static void
boundary_noaddr(sink_t *s, const char *label)
{
	put(s, " %-*s  |%.*s|%s%s\n", addr_width(s), "", BOX_WIDTH,
	    "-----------------------------------", label[0] ? "- " : "", label);
}

static void
edge(sink_t *s, uint64_t addr, int show)
{
	char a[32] = "";

	if (show)
		fmt_addr(s, addr, a, sizeof (a));
	put(s, " %-*s  +%.*s+\n", addr_width(s), a, BOX_WIDTH,
	    "-----------------------------------");
}

/* "             |        Segkmap        |  16.0 MiB" */
static void
region(sink_t *s, const char *text, const char *note)
{
	int pad = BOX_WIDTH - (int)strlen(text);
	int left = pad > 0 ? pad / 2 : 0;
	int right = pad > 0 ? pad - left : 0;

	put(s, " %-*s  |%*s%s%*s|%s%s\n", addr_width(s), "", left, "", text,
	    right, "", note[0] ? "  " : "", note);
}

static void
region_sized(sink_t *s, const char *text, uint64_t bytes)
{
	char sz[32];

	fmt_size(bytes, sz, sizeof (sz));
	region(s, text, sz);
}

static void
gap(sink_t *s)
{
	put(s, " %-*s  :%*s:\n", addr_width(s), "", BOX_WIDTH, "");
}

static void
draw_title(sink_t *s, const layout_t *l)
{
	char mem[32];
	const layout_params_t *p = &l->params;

	fmt_size(l->physmem, mem, sizeof (mem));
	if (p->arch == LAYOUT_AMD64)
		put(s, "64-bit kernel's virtual memory layout (amd64, %s, "
		    "segkp %s, %u-page stacks)\n", mem,
		    layout_placement_name(p->placement), l->stack_pages);
	else
		put(s, "32-bit kernel's virtual memory layout (i386, %d rules, "
		    "%s, %s, segkp %s, %u-page stacks)\n", (int)p->rules, mem,
		    l->pae ? "PAE" : "no PAE",
		    layout_placement_name(p->placement), l->stack_pages);
}

static void
draw_heap_i386(sink_t *s, const layout_t *l)
{
	char sz[32], note[96];

	region_sized(s, "heaptext (module text)", l->heaptext_size);
	boundary(s, l->heaptext_start, "heaptext");
	fmt_size(l->heap_size, sz, sizeof (sz));
	snprintf(note, sizeof (note), "heap_arena %s, first page taken at "
	    "boot", sz);
	region(s, "", "");
	region(s, "kvseg", note);
	if (l->params.placement == LAYOUT_SEGKP_FROMHEAP)
		region(s, "(segkp is an arena", "");
	if (l->params.placement == LAYOUT_SEGKP_FROMHEAP)
		region(s, "in the heap)", "");
	region(s, "", "");
	if (l->params.placement == LAYOUT_SEGKP_FIXED) {
		boundary(s, l->heap_base, "heap_arena base");
		region_sized(s, "segkp (fixed)", l->segkp_size);
		boundary(s, l->kernelheap, "kernelheap, segkp_base");
	} else {
		boundary(s, l->kernelheap, "kernelheap (floating)");
	}
}

static void
draw_i386(sink_t *s, const layout_t *l)
{
	int y2005 = l->params.rules == LAYOUT_RULES_2005;

	edge(s, 0, 0);
	region(s, "", "");
	boundary(s, l->argsbase, "ARGSBASE");
	region(s, "debugger", "");
	boundary(s, l->segdebugbase, "SEGDEBUGBASE");
	region(s, "Kernel Data", "");
	boundary(s, l->kernel_data, "");
	region(s, "Kernel Text", "");
	boundary(s, l->kernel_text, "KERNEL_TEXT");
	region_sized(s, "page_t structures", l->valloc_sz);
	region(s, "memsegs, memlists,", "");
	region(s, "page hash, etc.", "");
	if (y2005) {
		boundary(s, l->valloc_base, "valloc_base (floating)");
		region(s, "ptable_va", "2 pages");
		boundary(s, l->ptable_va, "ekernelheap, ptable_va");
	} else {
		boundary(s, l->valloc_base, "ekernelheap, valloc_base (floating)");
	}
	draw_heap_i386(s, l);
	region_sized(s, "Segkmap", l->segmapsize);
	boundary(s, l->segmap_start, "segmap_start (floating)");
	region(s, "Red Zone", "8 KiB");
	boundary(s, l->kernelbase, "kernelbase / userlimit (floating)");
	region(s, "Shared objects", "");
	gap(s);
	region(s, "user data", "");
	boundary_noaddr(s, "");
	region(s, "user text", "");
	boundary(s, l->user_text, "");
	region(s, "user stack", "");
	gap(s);
	region(s, "invalid", "");
	edge(s, 0, 1);
}

static void
draw_amd64(sink_t *s, const layout_t *l)
{
	edge(s, 0, 0);
	boundary(s, l->argsbase, "ARGSBASE");
	region(s, "debugger (?)", "");
	boundary(s, l->segdebugbase, "SEGDEBUGBASE");
	region(s, "unused", "");
	edge(s, 0, 0);
	region(s, "Kernel Data", "");
	boundary(s, l->kernel_data, "");
	region(s, "Kernel Text", "");
	boundary(s, l->kernel_text, "KERNEL_TEXT");
	region_sized(s, "Core heap", l->core_size);
	boundary(s, l->core_base, "core_base / ekernelheap");
	region_sized(s, "Kernel heap", l->heap_size);
	boundary(s, l->kernelheap, "kernelheap (floating)");
	region_sized(s, "segmap", l->segmapsize);
	boundary(s, l->segmap_start, "segmap_start (floating)");
	region_sized(s, "device mappings", l->toxic_size);
	boundary(s, l->toxic_addr, "toxic_addr (floating)");
	region_sized(s, "segzio", l->segzio_size);
	boundary(s, l->segzio_base, "segzio_base (floating)");
	if (l->params.placement == LAYOUT_SEGKP_FIXED)
		region_sized(s, "segkp", l->segkp_size);
	else
		region(s, "(segkp is in the heap)", "");
	boundary(s, l->segkp_base, "segkp_base (floating)");
	region_sized(s, "page_t structures", l->valloc_sz);
	region(s, "memsegs, memlists,", "");
	region(s, "page hash, etc.", "");
	boundary(s, l->valloc_base, "valloc_base");
	region_sized(s, "segkpm", l->valloc_base - l->segkpm_base);
	boundary(s, l->segkpm_base, "");
	region_sized(s, "Red Zone", l->redzone_end - l->redzone_start);
	boundary(s, l->kernelbase, "KERNELBASE");
	region(s, "User stack", "");
	region(s, "shared objects, etc", "");
	gap(s);
	boundary(s, 0xFFFF800000000000ULL, "");
	region(s, "VA Hole / unused", "");
	boundary(s, 0x0000800000000000ULL, "");
	gap(s);
	region(s, "user heap", "");
	region(s, "user data", "");
	boundary_noaddr(s, "");
	region(s, "user text", "");
	boundary(s, l->user_text, "");
	region(s, "invalid", "");
	edge(s, 0, 1);
}

static void
draw_messages(sink_t *s, const layout_t *l)
{
	int i;

	for (i = 0; i < l->nwarnings; i++)
		put(s, "WARNING: %s\n", l->warnings[i]);
	if (l->error_code != 0)
		put(s, "panic: %s\n", l->error);
}

size_t
layout_draw(const layout_t *l, char *buf, size_t len)
{
	sink_t s = { buf, len, 0, l->params.arch == LAYOUT_AMD64 };

	if (len > 0)
		buf[0] = '\0';
	draw_title(&s, l);
	if (l->error_code == 0) {
		if (s.wide)
			draw_amd64(&s, l);
		else
			draw_i386(&s, l);
	}
	draw_messages(&s, l);
	return s.used;
}

void
layout_print(const layout_t *l, void *stdio_file)
{
	FILE *f = stdio_file != NULL ? (FILE *)stdio_file : stdout;
	size_t need = layout_draw(l, NULL, 0);
	char small[8192];

	if (need < sizeof (small)) {
		layout_draw(l, small, sizeof (small));
		fputs(small, f);
		return;
	}
	/* Drawings are far smaller than this; never truncate silently. */
	fprintf(f, "(layout drawing of %zu bytes too large)\n", need);
}
