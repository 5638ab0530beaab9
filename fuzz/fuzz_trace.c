/*
 * Fuzz target: the kvsim trace parser (tools/kvsim/trace.c).
 *
 * The input is trace text. The parser must never crash and must either
 * succeed or fail with "line N: ..." naming a line that exists, leaving
 * the trace empty. Oracles: on failure, the text before line N parses
 * (the error is at the first bad line) and the text through line N fails
 * with the same message; on success, there is one event per line that has
 * a field before any '#', in line order, slot numbers stay below the
 * counts the parser reports, every free names a live allocation slot of
 * the same size and every thread_exit a live thread slot, and the per-op
 * counts add up.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <string.h>

#include "trace.h"
#include "fuzz_input.h"

static int
has_field(const char *s, const char *e)
{
	for (; s < e && *s != '#'; s++)
		if (!(*s == ' ' || *s == '\t' || *s == '\r' || *s == '\v' ||
		    *s == '\f'))
			return 1;
	return 0;
}

/* Offset of the start of line n (1-based) in text, or len. */
static size_t
line_start(const char *text, size_t len, size_t n)
{
	size_t off = 0;

	while (n > 1 && off < len) {
		const char *nl = memchr(text + off, '\n', len - off);
		if (nl == NULL)
			return len;
		off = (size_t)(nl - text) + 1;
		n--;
	}
	return off;
}

static void
check_success(const char *text, size_t len, const kvsim_trace_t *t)
{
	size_t expect = 0, line = 0, counts[4] = { 0 };
	const char *s = text, *end = text + len;
	uint8_t *live[2];
	uint32_t *lsize;

	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *e = nl != NULL ? nl : end;
		expect += has_field(s, e);
		s = nl != NULL ? nl + 1 : end;
	}
	FZ_ASSERT(t->nevents == expect);
	live[0] = calloc(t->alloc_slots + 1, 1);
	live[1] = calloc(t->thread_slots + 1, 1);
	lsize = calloc(t->alloc_slots + 1, sizeof (uint32_t));
	FZ_ASSERT(live[0] != NULL && live[1] != NULL && lsize != NULL);
	for (size_t i = 0; i < t->nevents; i++) {
		const kvsim_event_t *ev = &t->events[i];
		int thr = ev->op >= KVSIM_OP_THREAD_CREATE;
		FZ_ASSERT(ev->op <= KVSIM_OP_THREAD_EXIT);
		FZ_ASSERT(ev->line > line);
		line = ev->line;
		FZ_ASSERT(ev->slot < (thr ? t->thread_slots : t->alloc_slots));
		counts[ev->op]++;
		switch (ev->op) {
		case KVSIM_OP_ALLOC:
			FZ_ASSERT(!live[0][ev->slot] && ev->size > 0);
			live[0][ev->slot] = 1;
			lsize[ev->slot] = ev->size;
			break;
		case KVSIM_OP_FREE:
			FZ_ASSERT(live[0][ev->slot]);
			FZ_ASSERT(lsize[ev->slot] == ev->size);
			live[0][ev->slot] = 0;
			break;
		case KVSIM_OP_THREAD_CREATE:
			FZ_ASSERT(!live[1][ev->slot]);
			live[1][ev->slot] = 1;
			break;
		default:
			FZ_ASSERT(live[1][ev->slot]);
			live[1][ev->slot] = 0;
			break;
		}
	}
	for (int k = 0; k < 4; k++)
		FZ_ASSERT(counts[k] == t->count[k]);
	FZ_ASSERT(t->lines >= line);
	free(live[0]);
	free(live[1]);
	free(lsize);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	char err[KVSIM_TRACE_ERRLEN], err2[KVSIM_TRACE_ERRLEN];
	kvsim_trace_t t, t2;
	unsigned long n;
	size_t nlines = 1, cut;
	int used;

	for (size_t i = 0; i < size; i++)
		nlines += data[i] == '\n';
	if (kvsim_trace_parse(text, size, &t, err, sizeof (err)) == 0) {
		check_success(text, size, &t);
		kvsim_trace_free(&t);
		return 0;
	}
	FZ_ASSERT(t.nevents == 0 && t.events == NULL);
	FZ_ASSERT(sscanf(err, "line %lu: %n", &n, &used) == 1 && used > 0);
	FZ_ASSERT(n >= 1 && n <= nlines);
	FZ_ASSERT(strlen(err) > (size_t)used);
	/* The lines before the bad one are a valid trace. */
	cut = line_start(text, size, (size_t)n);
	FZ_ASSERT(kvsim_trace_parse(text, cut, &t2, err2, sizeof (err2)) == 0);
	kvsim_trace_free(&t2);
	/* Through the bad line: the same error. */
	cut = line_start(text, size, (size_t)n + 1);
	FZ_ASSERT(kvsim_trace_parse(text, cut, &t2, err2, sizeof (err2)) != 0);
	FZ_ASSERT(strcmp(err, err2) == 0);
	return 0;
}
