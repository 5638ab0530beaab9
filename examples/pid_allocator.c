/*
 * Example: process ids from a vmem arena, the way the illumos kernel
 * hands out pids.
 *
 * An identifier arena (VMC_IDENTIFIER: the integers are not memory, so
 * nothing is ever touched) with no quantum caches (qcache_max 0: a cache
 * would hand a freed id straight back, whatever the policy) spans the pid
 * range [1, PID_MAX]; ids start at 1 because 0 is the failure value. VM_NEXTFIT makes the arena hand out the id after
 * the last one it gave, going round the range, so a pid that was just
 * freed is not reused at once: a stale kill(2) or wait(2) on an old pid
 * is far less likely to hit a new process. Only when the allocator has
 * gone all the way round does it come back to freed ids.
 *
 * The program starts a few "processes", lets one exit, starts more and
 * shows the freed pid is skipped; then it fills the whole range to show
 * the wrap-around, and checks every claim it prints.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <vmem/vmem.h>

#define PID_MAX 99

static int failures;

static void
expect(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "pid_allocator: FAILED: %s\n", what);
		failures++;
	}
}

static vmem_t *pid_arena;

static int
pid_alloc(void)
{
	/* Arena addresses are the ids themselves; 0 (NULL) means none left. */
	return (int)(uintptr_t)vmem_alloc(pid_arena, 1,
	    VM_NOSLEEP | VM_NEXTFIT);
}

static void
pid_free(int pid)
{
	vmem_free(pid_arena, (void *)(uintptr_t)pid, 1);
}

int
main(void)
{
	int first[5], pid, count;

	/* Ids 1..PID_MAX: base 1, size PID_MAX, quantum 1. */
	pid_arena = vmem_create("pids", (void *)1, PID_MAX, 1, NULL, NULL,
	    NULL, 0, VMC_IDENTIFIER);
	expect(pid_arena != NULL, "vmem_create");

	printf("fork x5:");
	for (int i = 0; i < 5; i++) {
		first[i] = pid_alloc();
		printf(" %d", first[i]);
		expect(first[i] == i + 1, "pids start at 1 and go up");
	}
	printf("\nexit %d, then fork x3:", first[2]);
	pid_free(first[2]);
	for (int i = 0; i < 3; i++) {
		pid = pid_alloc();
		printf(" %d", pid);
		expect(pid == 6 + i, "the freed pid 3 is not reused at once");
	}
	printf("\n");

	/* Fill the range: the allocator goes to PID_MAX, then wraps to 3. */
	count = 7; /* 5 + 3 forks, 1 exit */
	int last = 0;
	while ((pid = pid_alloc()) != 0) {
		count++;
		last = pid;
	}
	printf("filled the range: %d pids in use, the last one handed out "
	    "was %d (the freed pid, after wrapping round)\n", count, last);
	expect(count == PID_MAX, "every pid can be used");
	expect(last == 3, "pid 3 came back only after the wrap-around");
	expect(vmem_size(pid_arena, VMEM_FREE) == 0, "no pid left");

	/* Free everything; the arena is one free segment again. */
	for (pid = 1; pid <= PID_MAX; pid++)
		pid_free(pid);
	expect(vmem_size(pid_arena, VMEM_ALLOC) == 0, "all pids free");
	expect(vmem_check(pid_arena) == 0, "arena consistent");
	vmem_destroy(pid_arena);
	printf("%s\n", failures == 0 ? "pid_allocator: ok" :
	    "pid_allocator: FAILED");
	return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
