/*
 * kmem_print_caches(): the cache table (kmem_dump_caches) written to a
 * stdio stream. Kept apart from kmem.c, which a freestanding build
 * compiles without a C library: only this wrapper needs <stdio.h>.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdio.h>

#include <vmem/kmem.h>

static void
print_line(void *arg, const char *line)
{
	fputs(line, (FILE *)arg);
}

void
kmem_print_caches(void *stdio_file)
{
	kmem_dump_caches(print_line, stdio_file != NULL ? stdio_file : stdout);
}
