/*
 * kvsim trace files: a user's own workload, one event per line.
 *
 * Format (whitespace separated):  TIME_US OP SIZE ID
 *   TIME_US  unsigned decimal microseconds (informational; events are
 *            replayed in file order)
 *   OP       alloc | free | thread_create | thread_exit
 *   SIZE     bytes. alloc: 1 .. 4294967295. free: 0 or the size that was
 *            allocated. thread_create: stack bytes, 0 = the default stack.
 *            thread_exit: ignored.
 *   ID       unsigned decimal; alloc/free and thread_create/thread_exit
 *            are two separate name spaces. An ID may be reused after it
 *            is freed / exited.
 * '#' starts a comment (to the end of the line); blank lines are ignored.
 *
 * The whole file is parsed and checked before anything is replayed: a bad
 * line (syntax, unknown op, free of an ID that is not live, ...) is an
 * error naming the line, and nothing is applied. Parsing resolves every ID
 * to a dense slot number so replay needs no lookups: slot s of a name space
 * is reused only after its previous owner was freed.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef KVSIM_TRACE_H
#define KVSIM_TRACE_H

#include <stddef.h>
#include <stdint.h>

typedef enum kvsim_op {
	KVSIM_OP_ALLOC = 0,
	KVSIM_OP_FREE = 1,
	KVSIM_OP_THREAD_CREATE = 2,
	KVSIM_OP_THREAD_EXIT = 3
} kvsim_op_t;

typedef struct kvsim_event {
	uint64_t time_us;
	uint32_t size;       /* bytes (free: the allocated size, filled in) */
	uint32_t slot;       /* dense index in the op's name space */
	uint32_t line;       /* line number in the file, for messages */
	uint8_t op;          /* kvsim_op_t */
} kvsim_event_t;

typedef struct kvsim_trace {
	kvsim_event_t *events;
	size_t nevents;
	size_t cap;
	uint32_t alloc_slots;    /* slots used by alloc/free */
	uint32_t thread_slots;   /* slots used by thread_create/exit */
	size_t count[4];         /* events per op */
	size_t lines;            /* lines read, comments included */
} kvsim_trace_t;

#define KVSIM_TRACE_ERRLEN 160

/*
 * Parse len bytes of trace text. Returns 0, or -1 with err holding
 * "line N: what is wrong" and *out left empty.
 */
int kvsim_trace_parse(const char *text, size_t len, kvsim_trace_t *out,
    char *err, size_t errlen);
/* Read and parse a file ("-" is standard input). Same contract. */
int kvsim_trace_load(const char *path, kvsim_trace_t *out, char *err,
    size_t errlen);
void kvsim_trace_free(kvsim_trace_t *t);
const char *kvsim_op_name(kvsim_op_t op);

#endif
