/*
 * Example: the statistics tables a running program can print about
 * itself -- the vmem arenas (like mdb's ::vmem), the kmem caches (like
 * ::kmastat), a kernel address space (kas_print_stats) -- and the same
 * data as JSON for tools. With an argument "signal" it also installs
 * the SIGUSR1 trigger and raises the signal once, as `kill -USR1 <pid>`
 * from a shell would.
 *
 * The workload: a simulated 32-bit kernel address space (KAS_SIM, so
 * nothing is mapped), a few object caches over its kmem_default arena,
 * allocations of several sizes from its kmem heap, and a private arena
 * of ids.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmem/kmem.h>
#include <vmem/segkmem.h>
#include <vmem/vmem.h>

static int failures;

static void
expect(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "stats_tables: FAILED: %s\n", what);
		failures++;
	}
}

/* Count arenas and caches through the foreach interfaces. */
static void count_arena(vmem_t *vmp, void *arg) { (void)vmp; ++*(int *)arg; }
static void count_cache(kmem_cache_t *cp, void *arg) { (void)cp; ++*(int *)arg; }

typedef struct capture {
	char text[1 << 16];
	size_t len;
} capture_t;

static void
capture_line(void *arg, const char *line)
{
	capture_t *c = arg;
	size_t n = strlen(line);

	if (c->len + n < sizeof (c->text)) {
		memcpy(c->text + c->len, line, n + 1);
		c->len += n;
	}
}

int
main(int argc, char **argv)
{
	static capture_t json;
	kas_config_t cfg;
	kas_t *kas;
	kmem_heap_t *heap;
	kmem_cache_t *caches[3];
	void *objs[3][40], *heap_bufs[64];
	vmem_t *ids;
	int narenas = 0, ncaches = 0;

	kas_config_init(&cfg);
	cfg.backing = KAS_SIM;
	cfg.name = "kas32";
	cfg.size = 512u << 20;
	kas = kas_create(&cfg);
	expect(kas != NULL, "kas_create");
	if (kas == NULL)
		return EXIT_FAILURE;
	heap = kas_heap(kas);
	for (int i = 0; i < 3; i++) {
		char name[32];
		snprintf(name, sizeof (name), "example_obj_%d", 48 << i);
		/* The kas is simulated: its memory is never touched. */
		caches[i] = kmem_cache_create(name, (size_t)48 << i, 0, NULL,
		    NULL, NULL, NULL, kas_kmem_default(kas), KMC_NOTOUCH);
		for (int j = 0; j < 40; j++)
			objs[i][j] = kmem_cache_alloc(caches[i], KM_SLEEP);
	}
	for (int i = 0; i < 64; i++)
		heap_bufs[i] = kmem_heap_alloc(heap, (size_t)(16 + 100 * i),
		    KM_SLEEP);
	ids = vmem_create("example_ids", (void *)1, 1000, 1, NULL, NULL, NULL,
	    0, VMC_IDENTIFIER);
	for (int i = 0; i < 10; i++)
		(void)vmem_alloc(ids, 1, VM_SLEEP | VM_NEXTFIT);

	printf("== vmem arenas ==\n");
	vmem_print_arenas(stdout);
	printf("\n== kmem caches ==\n");
	kmem_print_caches(stdout);
	printf("\n== kernel address space ==\n");
	kas_print_stats(kas, stdout);

	vmem_dump_stats_json(capture_line, &json);
	printf("\n== JSON (first 300 bytes of %zu) ==\n%.300s...\n", json.len,
	    json.text);
	expect(strstr(json.text, "\"name\":\"example_ids\"") != NULL,
	    "JSON has the id arena");
	expect(strstr(json.text, "\"name\":\"example_obj_96\"") != NULL,
	    "JSON has the caches");
	vmem_foreach_arena(count_arena, &narenas);
	kmem_foreach_cache(count_cache, &ncaches);
	printf("%d arenas, %d caches\n", narenas, ncaches);
	expect(narenas >= 5 && ncaches >= 3, "arenas and caches listed");

	if (argc > 1 && strcmp(argv[1], "signal") == 0) {
		printf("\n== on SIGUSR1 (to stdout) ==\n");
		fflush(stdout);
		expect(vmem_stats_on_signal(SIGUSR1, STDOUT_FILENO) == 0,
		    "vmem_stats_on_signal");
		raise(SIGUSR1);
		/* Turning the trigger off waits until the report is out. */
		vmem_stats_on_signal(0, -1);
	}

	for (int i = 0; i < 10; i++)
		vmem_free(ids, (void *)(uintptr_t)(i + 1), 1);
	vmem_destroy(ids);
	for (int i = 0; i < 64; i++)
		kmem_heap_free(heap, heap_bufs[i], (size_t)(16 + 100 * i));
	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 40; j++)
			kmem_cache_free(caches[i], objs[i][j]);
		kmem_cache_destroy(caches[i]);
	}
	kas_destroy(kas);
	printf("%s\n", failures == 0 ? "stats_tables: ok" :
	    "stats_tables: FAILED");
	return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
