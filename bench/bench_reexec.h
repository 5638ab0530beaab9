/*
 * Shared by the benchmark programs that load jemalloc with dlopen.
 *
 * jemalloc uses initial-exec TLS, which dlopen can only place in the static
 * TLS surplus glibc reserves at start-up; the default surplus is too small
 * for it. Run the program again, once, with a larger one. If exec fails,
 * the caller goes on and reports jemalloc as unavailable.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef BENCH_REEXEC_H
#define BENCH_REEXEC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void reexec_with_static_tls(char **argv)
{
	static const char tunable[] = "glibc.rtld.optional_static_tls=65536";
	const char *old = getenv("GLIBC_TUNABLES");
	char buf[1024];

	if (old != NULL && strstr(old, "optional_static_tls") != NULL)
		return;
	if (old != NULL && old[0] != '\0')
		snprintf(buf, sizeof(buf), "%s:%s", old, tunable);
	else
		snprintf(buf, sizeof(buf), "%s", tunable);
	setenv("GLIBC_TUNABLES", buf, 1);
	execv("/proc/self/exe", argv);
}

#endif
