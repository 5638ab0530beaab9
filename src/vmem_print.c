/*
 * Printing the arena table, like mdb's ::vmem: one line per arena with its
 * sizes and the counters that tell whether it is healthy (allocation
 * failures, waits, imports). Lives apart from vmem.c because it needs
 * stdio, which a freestanding build of the core does without.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdio.h>

#include <vmem/vmem.h>

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
	snprintf(line, sizeof (line),
	    "%-24s %8lu %14lu %14lu %14lu %10llu %10llu %6llu %6llu %8llu\n",
	    st.name, (unsigned long)st.quantum, (unsigned long)st.mem_inuse,
	    (unsigned long)st.mem_total, (unsigned long)st.mem_import,
	    (unsigned long long)st.alloc, (unsigned long long)st.free,
	    (unsigned long long)st.fail, (unsigned long long)st.wait,
	    (unsigned long long)st.import);
	ctx->out(ctx->arg, line);
}

void
vmem_dump_arenas(void (*out)(void *arg, const char *line), void *arg)
{
	dump_ctx_t ctx = { out, arg };
	char header[256];

	snprintf(header, sizeof (header),
	    "%-24s %8s %14s %14s %14s %10s %10s %6s %6s %8s\n", "ARENA",
	    "QUANTUM", "INUSE", "TOTAL", "IMPORTED", "ALLOC", "FREE", "FAIL",
	    "WAIT", "IMPORTS");
	out(arg, header);
	vmem_foreach_arena(dump_one, &ctx);
}

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
