/*
 * Statistics on a signal (src/stats_signal.c): after
 * vmem_stats_on_signal(SIGUSR1, fd), raising the signal makes the helper
 * thread write the arena and cache tables to fd; the JSON variant writes
 * a document that parses; turning the trigger off restores the previous
 * disposition; an uncatchable signal is refused through the error
 * handler. Reads block until the report is complete (a 60 s poll limit
 * only guards against a hang), so nothing here depends on timing.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmem/kmem.h>

#include "json_check.h"
#include "testutil.h"

static char report[1 << 18];

/*
 * Read from fd until the text read so far contains must_contain and ends
 * with end_marker (a pipe may split a report anywhere).
 */
static int
read_until(int fd, const char *must_contain, const char *end_marker)
{
	size_t len = 0, mlen = strlen(end_marker);

	report[0] = '\0';
	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t n;

		if (len >= mlen && strcmp(report + len - mlen, end_marker) == 0 &&
		    strstr(report, must_contain) != NULL)
			return 0;
		if (poll(&pfd, 1, 60000) <= 0)
			return -1;
		n = read(fd, report + len, sizeof (report) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		len += (size_t)n;
		report[len] = '\0';
	}
}

static void
test_text(void)
{
	int p[2];
	vmem_t *arena;
	kmem_cache_t *cp;

	REQUIRE(pipe(p) == 0);
	arena = vmem_create("signal_arena", (void *)0x10000, 65536, 16, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	cp = kmem_cache_create("signal_cache", 64, 0, NULL, NULL, NULL, NULL,
	    arena, KMC_NOTOUCH);
	CHECK(vmem_stats_on_signal(SIGUSR1, p[1]) == 0);
	CHECK(raise(SIGUSR1) == 0);
	/* The cache table ends with its Total line and a blank line. */
	REQUIRE(read_until(p[0], "\nTotal", "\n\n") == 0);
	CHECK(strstr(report, "ARENA") != NULL);
	CHECK(strstr(report, "signal_arena") != NULL);
	CHECK(strstr(report, "signal_cache") != NULL);
	CHECK(strstr(report, "Total") != NULL);
	/* A second signal, a second report. */
	CHECK(raise(SIGUSR1) == 0);
	REQUIRE(read_until(p[0], "\nTotal", "\n\n") == 0);
	CHECK(strstr(report, "signal_arena") != NULL);
	/* A signal just before the trigger goes off is still served. */
	CHECK(raise(SIGUSR1) == 0);
	CHECK(vmem_stats_on_signal(0, -1) == 0);
	REQUIRE(read_until(p[0], "\nTotal", "\n\n") == 0);
	CHECK(strstr(report, "signal_cache") != NULL);
	kmem_cache_destroy(cp);
	vmem_destroy(arena);
	close(p[0]);
	close(p[1]);
}

static void
test_json(void)
{
	int p[2];
	vmem_t *arena;

	REQUIRE(pipe(p) == 0);
	arena = vmem_create("signal_json_arena", (void *)0x10000, 65536, 16,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	CHECK(vmem_stats_on_signal_json(SIGUSR2, p[1]) == 0);
	CHECK(raise(SIGUSR2) == 0);
	REQUIRE(read_until(p[0], "\"caches\":[", "]}\n") == 0);
	CHECK(json_valid(report));
	CHECK(strstr(report, "{\"name\":\"signal_json_arena\",") != NULL);
	CHECK(strstr(report, "\"caches\":[") != NULL);
	CHECK(vmem_stats_on_signal(0, -1) == 0);
	vmem_destroy(arena);
	close(p[0]);
	close(p[1]);
}

/*
 * fork(): the child starts with the trigger off and arms its own. Its
 * report must reach its own descriptor (not the parent's helper), and the
 * parent's trigger must keep working after the child armed and left.
 */
static void
test_fork_child_arms_its_own(void)
{
	int parent_p[2], child_p[2], status;
	vmem_t *arena;
	pid_t pid;

	REQUIRE(pipe(parent_p) == 0 && pipe(child_p) == 0);
	arena = vmem_create("parent_arena", (void *)0x10000, 65536, 16, NULL,
	    NULL, NULL, 0, VM_SLEEP);
	REQUIRE(arena != NULL);
	CHECK(vmem_stats_on_signal(SIGUSR1, parent_p[1]) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		vmem_t *mine = vmem_create("child_only", (void *)0x20000, 65536,
		    16, NULL, NULL, NULL, 0, VM_SLEEP);
		int ok;

		alarm(60);
		/* TSan cannot start threads in the child of a multithreaded
		 * parent (nor does helgrind see them well): there the child
		 * only leaves, and the parent's checks below still hold. */
		if (tu_slow_build())
			_exit(mine != NULL ? 0 : 1);
		ok = mine != NULL &&
		    vmem_stats_on_signal(SIGUSR1, child_p[1]) == 0 &&
		    raise(SIGUSR1) == 0 &&
		    read_until(child_p[0], "child_only", "\n\n") == 0;
		ok = ok && vmem_stats_on_signal(0, -1) == 0;
		_exit(ok ? 0 : 1);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Nothing of the child's reached the parent's descriptor. */
	{
		struct pollfd pfd = { parent_p[0], POLLIN, 0 };

		CHECK(poll(&pfd, 1, 200) == 0);
	}
	/* The parent's helper is still there. */
	CHECK(raise(SIGUSR1) == 0);
	REQUIRE(read_until(parent_p[0], "\nTotal", "\n\n") == 0);
	CHECK(strstr(report, "parent_arena") != NULL);
	CHECK(strstr(report, "child_only") == NULL);
	CHECK(vmem_stats_on_signal(0, -1) == 0);
	vmem_destroy(arena);
	for (int i = 0; i < 2; i++) {
		close(parent_p[i]);
		close(child_p[i]);
	}
}

static volatile sig_atomic_t ignored_count;

static void
count_signal(int signo)
{
	(void)signo;
	ignored_count++;
}

static void
test_off_restores_previous(void)
{
	struct sigaction sa, now;

	memset(&sa, 0, sizeof (sa));
	sa.sa_handler = count_signal;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);
	CHECK(vmem_stats_on_signal(SIGUSR1, 1) == 0);
	REQUIRE(sigaction(SIGUSR1, NULL, &now) == 0);
	CHECK(now.sa_handler != count_signal);
	/* Replacing the trigger with another signal gives SIGUSR1 back. */
	CHECK(vmem_stats_on_signal(SIGUSR2, 1) == 0);
	REQUIRE(sigaction(SIGUSR1, NULL, &now) == 0);
	CHECK(now.sa_handler == count_signal);
	CHECK(vmem_stats_on_signal(0, -1) == 0);
	REQUIRE(sigaction(SIGUSR2, NULL, &now) == 0);
	CHECK(now.sa_handler == SIG_DFL);
	CHECK(raise(SIGUSR1) == 0);
	CHECK_EQ(ignored_count, 1);
	signal(SIGUSR1, SIG_DFL);
}

static void
test_bad_arguments(void)
{
	tu_record_errors();
	CHECK(vmem_stats_on_signal(SIGKILL, 1) == -1);
	CHECK_EQ(tu_err.count, 1);
	CHECK_EQ(tu_err.code, VMEM_E_BADARG);
	CHECK(vmem_stats_on_signal_json(SIGUSR1, -1) == -1);
	CHECK_EQ(tu_err.count, 2);
	/* A descriptor that is not open (a closed pipe end). */
	{
		int p[2];

		REQUIRE(pipe(p) == 0);
		close(p[1]);
		CHECK(vmem_stats_on_signal(SIGUSR1, p[1]) == -1);
		CHECK_EQ(tu_err.count, 3);
		CHECK(errno == EINVAL);
		close(p[0]);
	}
	tu_default_errors();
}

int
main(void)
{
	RUN(test_text);
	RUN(test_json);
	RUN(test_off_restores_previous);
	RUN(test_fork_child_arms_its_own);
	RUN(test_bad_arguments);
	return tu_finish();
}
