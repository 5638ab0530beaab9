/*
 * Statistics on a signal: `kill -USR1 <pid>` makes a running program
 * write its arena and cache tables (or the JSON document) to a file
 * descriptor, without the program having been written to ask for them.
 *
 * A signal handler may not take locks or allocate, and printing the
 * tables needs both. So the handler only writes one byte into a pipe (an
 * async-signal-safe write(2) that saves and restores errno); a helper
 * thread waits on the other end of the pipe, and prints. Several signals
 * that arrive before the helper wakes collapse into one report, which is
 * what a human pressing a key wants.
 *
 * The pipe is created once and kept for the life of the process, with
 * both ends non-blocking: the handler can never block on a full pipe, and
 * a handler running in another thread while the trigger is being turned
 * off can never write into a descriptor that was closed and reused.
 * Turning the trigger off restores the previous disposition, stops the
 * helper (a 'q' byte) and joins it, after the helper has served a signal
 * that came before (so raise() followed by turning the trigger off always
 * prints); bytes left over in the pipe are drained when it is turned on
 * again.
 *
 * Locking: trigger_lock (a pthread mutex) serializes on/off calls; the
 * handler reads only the atomic wake_fd. The helper takes the library's
 * locks through vmem_dump_arenas / kmem_dump_caches like any thread.
 *
 * fork(): the helper does not exist in the child, and the pipe is the
 * parent's. So the child starts with the trigger off: the previous
 * disposition back, its copies of the pipe closed (a signal in the child
 * must not wake the parent's helper, nor a re-arm stop it). A child that
 * wants the trigger calls vmem_stats_on_signal again and gets its own.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include <vmem/kmem.h>
#include <vmem/vmem.h>

#include "error.h"
#include "hg.h"

enum { FORMAT_TEXT, FORMAT_JSON };

static pthread_mutex_t trigger_lock = PTHREAD_MUTEX_INITIALIZER;
static int pipe_fds[2] = { -1, -1 };
static atomic_int wake_fd = -1;
static struct {
	int active;
	int signo;
	int out_fd;
	int format;
	pthread_t helper;
	struct sigaction previous;
} trigger;

static void
on_signal(int signo)
{
	int saved = errno;
	int fd = atomic_load_explicit(&wake_fd, memory_order_relaxed);
	char byte = 's';

	(void)signo;
	if (fd >= 0 && write(fd, &byte, 1) < 0) {
		/* A full pipe already holds a request: nothing lost. */
	}
	errno = saved;
}

static void
write_all(void *arg, const char *line)
{
	int fd = *(const int *)arg;
	size_t len = 0;

	while (line[len] != '\0')
		len++;
	while (len > 0) {
		ssize_t n = write(fd, line, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		line += n;
		len -= (size_t)n;
	}
}

static void
report(int fd, int format)
{
	if (format == FORMAT_JSON) {
		vmem_dump_stats_json(write_all, &fd);
		return;
	}
	vmem_dump_arenas(write_all, &fd);
	write_all(&fd, "\n");
	kmem_dump_caches(write_all, &fd);
	write_all(&fd, "\n");
}

static void *
helper_main(void *arg)
{
	struct pollfd pfd = { pipe_fds[0], POLLIN, 0 };
	int fd = trigger.out_fd, format = trigger.format;

	(void)arg;
	for (;;) {
		char bytes[64];
		int quit = 0, wanted = 0;
		ssize_t n;

		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			break;
		while ((n = read(pipe_fds[0], bytes, sizeof (bytes))) > 0) {
			for (ssize_t i = 0; i < n; i++) {
				quit |= bytes[i] == 'q';
				wanted |= bytes[i] == 's';
			}
		}
		/* A request that came before the stop is still served. */
		if (wanted)
			report(fd, format);
		if (quit)
			break;
	}
	return NULL;
}

static int
open_pipe(void)
{
	if (pipe_fds[0] >= 0)
		return 0;
	if (pipe(pipe_fds) != 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		(void)fcntl(pipe_fds[i], F_SETFL, O_NONBLOCK);
		(void)fcntl(pipe_fds[i], F_SETFD, FD_CLOEXEC);
	}
	return 0;
}

static void
trigger_stop(void)
{
	char q = 'q';

	if (!trigger.active)
		return;
	(void)sigaction(trigger.signo, &trigger.previous, NULL);
	atomic_store(&wake_fd, -1);
	while (write(pipe_fds[1], &q, 1) < 0 && errno == EINTR)
		continue;
	(void)pthread_join(trigger.helper, NULL);
	trigger.active = 0;
}

/* fork: trigger_lock is held across it, so the state is whole in the
 * child; there the trigger is turned off without a helper to stop. */
static void
fork_prepare(void)
{
	pthread_mutex_lock(&trigger_lock);
}

static void
fork_parent(void)
{
	pthread_mutex_unlock(&trigger_lock);
}

static void
fork_child(void)
{
	/* The parent's helper read these; it does not exist here. */
	HG_FORGET(&pipe_fds);
	HG_FORGET(&trigger);
	atomic_store(&wake_fd, -1);
	if (trigger.active)
		(void)sigaction(trigger.signo, &trigger.previous, NULL);
	trigger.active = 0;
	for (int i = 0; i < 2; i++) {
		if (pipe_fds[i] >= 0)
			(void)close(pipe_fds[i]);
		pipe_fds[i] = -1;
	}
	pthread_mutex_unlock(&trigger_lock);
}

static void
register_atfork(void)
{
	(void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static int
trigger_start(int signo, int fd, int format)
{
	struct sigaction sa;
	sigset_t all, old;
	char drain[64];
	int err;

	if (open_pipe() != 0)
		return -1;
	while (read(pipe_fds[0], drain, sizeof (drain)) > 0)
		continue;
	trigger.signo = signo;
	trigger.out_fd = fd;
	trigger.format = format;
	/* The helper blocks every signal: they go to the program's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&trigger.helper, NULL, helper_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		errno = err;
		return -1;
	}
	atomic_store(&wake_fd, pipe_fds[1]);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	trigger.active = 1;
	if (sigaction(signo, &sa, &trigger.previous) != 0) {
		err = errno;
		trigger.previous.sa_handler = SIG_DFL;
		trigger_stop();
		errno = err;
		return -1;
	}
	return 0;
}

static int
stats_on_signal(const char *call, int signo, int fd, int format)
{
	int ret = 0;

	if (signo < 0 || signo >= NSIG || signo == SIGKILL ||
	    signo == SIGSTOP || (signo > 0 && (fd < 0 ||
	    fcntl(fd, F_GETFD) < 0))) {
		vmem_error_report(VMEM_E_BADARG, 0, call, NULL, "stats",
		    (uintptr_t)fd, (size_t)signo,
		    "signal %d cannot be caught, or descriptor %d is invalid",
		    signo, fd);
		errno = EINVAL;
		return -1;
	}
	static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

	(void)pthread_once(&atfork_once, register_atfork);
	pthread_mutex_lock(&trigger_lock);
	trigger_stop();
	if (signo > 0)
		ret = trigger_start(signo, fd, format);
	pthread_mutex_unlock(&trigger_lock);
	return ret;
}

int
vmem_stats_on_signal(int signo, int fd)
{
	return stats_on_signal("vmem_stats_on_signal", signo, fd, FORMAT_TEXT);
}

int
vmem_stats_on_signal_json(int signo, int fd)
{
	return stats_on_signal("vmem_stats_on_signal_json", signo, fd,
	    FORMAT_JSON);
}

static void
print_line(void *arg, const char *line)
{
	fputs(line, (FILE *)arg);
}

void
vmem_print_stats_json(void *stdio_file)
{
	vmem_dump_stats_json(print_line, stdio_file != NULL ? stdio_file :
	    stdout);
}
