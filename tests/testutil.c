/*
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int tu_failures;
tu_errlog_t tu_err;

int
tu_finish(void)
{
	printf("%d passed, %d failed\n", tu_failures == 0 ? 1 : 0,
	    tu_failures == 0 ? 0 : 1);
	return tu_failures == 0 ? 0 : 1;
}

void
tu_seed(tu_rng_t *r, uint64_t seed)
{
	r->s = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

uint64_t
tu_next(tu_rng_t *r)
{
	uint64_t x = r->s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

uint64_t
tu_range(tu_rng_t *r, uint64_t lo, uint64_t hi)
{
	if (hi <= lo)
		return lo;
	if (lo == 0 && hi == UINT64_MAX)
		return tu_next(r);
	return lo + tu_next(r) % (hi - lo + 1);
}

static void
tu_handler(const vmem_error_info_t *info, void *arg)
{
	(void)arg;
	tu_err.count++;
	tu_err.code = info->code;
	tu_err.warning = info->warning;
	snprintf(tu_err.call, sizeof (tu_err.call), "%s",
	    info->call ? info->call : "");
	snprintf(tu_err.name, sizeof (tu_err.name), "%s",
	    info->name ? info->name : "");
	tu_err.addr = info->addr;
	tu_err.size = info->size;
	vmem_format_error(info, tu_err.line, sizeof (tu_err.line));
}

void
tu_reset_errors(void)
{
	memset(&tu_err, 0, sizeof (tu_err));
}

void
tu_record_errors(void)
{
	tu_reset_errors();
	vmem_set_error_handler(tu_handler, NULL);
}

void
tu_default_errors(void)
{
	vmem_set_error_handler(NULL, NULL);
}

long
tu_env_long(const char *name, long dflt)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? strtol(v, NULL, 0) : dflt;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TU_SANITIZED 1
#endif
#endif
#ifndef TU_SANITIZED
#define TU_SANITIZED 0
#endif

int
tu_mlock_works(void)
{
	return !TU_SANITIZED;
}

kas_fault_t
tu_classify_nothing(void *arg, uintptr_t addr, char *buf, size_t len)
{
	(void)arg;
	(void)addr;
	(void)buf;
	(void)len;
	return KAS_FAULT_NONE;
}

int
tu_child_threads_work(void)
{
	return !TU_SANITIZED;
}

int
tu_under_valgrind(void)
{
	const char *preload = getenv("LD_PRELOAD");

	return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

int
tu_slow_build(void)
{
	return TU_SANITIZED || getenv("VMEM_SLOW_BUILD") != NULL;
}

static const char *fork_hang_why;

static void
fork_hung(int sig)
{
	static const char head[] = "fork deadlocked in the parent: ";

	(void)sig;
	(void)write(2, head, sizeof (head) - 1);
	(void)write(2, fork_hang_why, strlen(fork_hang_why));
	(void)write(2, "\n", 1);
	_exit(3);
}

void
tu_fork_children(int forks, int (*child)(void), const char *why)
{
	int slow = tu_slow_build();

	fork_hang_why = why;
	signal(SIGALRM, fork_hung);
	for (int i = 0; i < forks && tu_failures == 0; i++) {
		int status;
		pid_t pid;

		alarm(slow ? 120 : 30);
		fflush(NULL);
		pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			alarm(slow ? 60 : 10);
			_exit(child());
		}
		REQUIRE(waitpid(pid, &status, 0) == pid);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "fork %d: child %s %d\n", i,
			    WIFSIGNALED(status) ? "killed by signal" :
			    "exited with", WIFSIGNALED(status) ?
			    WTERMSIG(status) : WEXITSTATUS(status));
			tu_failures++;
		}
	}
	alarm(0);
	signal(SIGALRM, SIG_DFL);
}
