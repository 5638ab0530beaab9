/*
 * Printing the arena table, like mdb's ::vmem: one line per arena with its
 * sizes and the counters that tell whether it is healthy (allocation
 * failures, waits, imports).
 *
 * vmem_dump_arenas() formats with the core's own vmem_snprintf (format.c)
 * and hands each line to a callback, so it builds freestanding with the
 * rest of the core (docs/FREESTANDING.md). Only vmem_print_arenas(), which
 * writes to a stdio FILE *, needs a C library: a freestanding build
 * (-DVMEM_FREESTANDING) leaves it out.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stddef.h>
#ifndef VMEM_FREESTANDING
#include <stdio.h>
#endif

#include <vmem/vmem.h>

#include "error.h" /* vmem_snprintf */

/*
 * The name column is as wide as the longest name an arena can have
 * (vmem_create cuts names at VMEM_NAMELEN - 1), so that every line lines
 * up with the header whatever the names.
 */
#define NAME_WIDTH ((int)VMEM_NAMELEN - 1)

typedef struct dump_ctx {
	void (*out)(void *, const char *);
	void *arg;
} dump_ctx_t;

static void
dump_one(vmem_t *vmp, void *arg)
{
	dump_ctx_t *ctx = arg;
	vmem_stats_t st;
	char line[256];

	vmem_get_stats(vmp, &st);
	(void)vmem_snprintf(line, sizeof (line),
	    "%-*s %8zu %14zu %14zu %14zu %10llu %10llu %6llu %6llu %8llu\n",
	    NAME_WIDTH, st.name, st.quantum, st.mem_inuse, st.mem_total,
	    st.mem_import, (unsigned long long)st.alloc,
	    (unsigned long long)st.free, (unsigned long long)st.fail,
	    (unsigned long long)st.wait, (unsigned long long)st.import);
	ctx->out(ctx->arg, line);
}

void
vmem_dump_arenas(void (*out)(void *arg, const char *line), void *arg)
{
	dump_ctx_t ctx = { out, arg };
	char header[256];

	(void)vmem_snprintf(header, sizeof (header),
	    "%-*s %8s %14s %14s %14s %10s %10s %6s %6s %8s\n", NAME_WIDTH,
	    "ARENA", "QUANTUM", "INUSE", "TOTAL", "IMPORTED", "ALLOC", "FREE",
	    "FAIL", "WAIT", "IMPORTS");
	out(arg, header);
	vmem_foreach_arena(dump_one, &ctx);
}

#ifndef VMEM_FREESTANDING
static void
print_line(void *arg, const char *line)
{
	fputs(line, (FILE *)arg);
}

void
vmem_print_arenas(void *stdio_file)
{
	vmem_dump_arenas(print_line, stdio_file != NULL ? stdio_file : stdout);
}
#endif
