/*
 * kvsim trace parser (format in trace.h).
 *
 * Problem: replaying millions of user events must be fast and must never
 * stop half-way because of a typo, so all checking happens up front: the
 * parser reads the whole text, checks every line (syntax and ID liveness),
 * and turns IDs into dense slot numbers; replay then indexes arrays.
 *
 * Data: per name space (allocations, threads) an open-addressing hash map
 * from ID to {slot, size} with linear probing and backward-shift deletion
 * (no tombstones, so the table stays short under churn), and a stack of
 * free slot numbers. Events go to a growing array.
 *
 * Invariants: an ID is in its map exactly while it is live; a slot belongs
 * to at most one live ID; on any error every allocation is released and the
 * output trace is empty.
 *
 * Single-threaded; no locks.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

typedef struct id_entry {
	uint64_t id;
	uint32_t slot;
	uint32_t size;
	uint32_t line;           /* where it became live */
	int used;
} id_entry_t;

typedef struct id_space {
	id_entry_t *tab;
	size_t mask;             /* capacity - 1 (power of two) */
	size_t live;
	uint32_t *free_slots;
	size_t nfree, free_cap;
	uint32_t next_slot;
} id_space_t;

typedef struct parser {
	kvsim_trace_t *out;
	id_space_t space[2];     /* 0: allocations, 1: threads */
	char *err;
	size_t errlen;
	size_t line;
} parser_t;

static const char *const op_names[] = {
	"alloc", "free", "thread_create", "thread_exit"
};

const char *
kvsim_op_name(kvsim_op_t op)
{
	return (unsigned)op < 4 ? op_names[op] : "?";
}

static int
fail(parser_t *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(p->err, p->errlen, "line %zu: ", p->line);
	if (n < 0 || (size_t)n >= p->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

static size_t
hash_id(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (size_t)id;
}

static int
space_grow(id_space_t *s)
{
	size_t ncap = s->tab == NULL ? 1024 : (s->mask + 1) * 2;
	id_entry_t *nt = calloc(ncap, sizeof (*nt));
	size_t i, j;

	if (nt == NULL)
		return -1;
	for (i = 0; s->tab != NULL && i <= s->mask; i++) {
		if (!s->tab[i].used)
			continue;
		for (j = hash_id(s->tab[i].id) & (ncap - 1); nt[j].used;
		    j = (j + 1) & (ncap - 1))
			;
		nt[j] = s->tab[i];
	}
	free(s->tab);
	s->tab = nt;
	s->mask = ncap - 1;
	return 0;
}

/* The entry for id, or NULL. */
static id_entry_t *
space_find(id_space_t *s, uint64_t id)
{
	size_t i;

	if (s->tab == NULL)
		return NULL;
	for (i = hash_id(id) & s->mask; s->tab[i].used; i = (i + 1) & s->mask)
		if (s->tab[i].id == id)
			return &s->tab[i];
	return NULL;
}

static int
space_insert(id_space_t *s, uint64_t id, uint32_t size, uint32_t line,
    uint32_t *slot)
{
	size_t i;

	if (s->tab == NULL || (s->live + 1) * 2 > s->mask + 1)
		if (space_grow(s) != 0)
			return -1;
	if (s->nfree > 0) {
		*slot = s->free_slots[--s->nfree];
	} else {
		if (s->next_slot == UINT32_MAX)
			return -1;
		*slot = s->next_slot++;
	}
	for (i = hash_id(id) & s->mask; s->tab[i].used; i = (i + 1) & s->mask)
		;
	s->tab[i].id = id;
	s->tab[i].slot = *slot;
	s->tab[i].size = size;
	s->tab[i].line = line;
	s->tab[i].used = 1;
	s->live++;
	return 0;
}

/* Remove e, shifting later members of its probe run back into the hole. */
static int
space_remove(id_space_t *s, id_entry_t *e)
{
	size_t hole = (size_t)(e - s->tab);
	size_t i = hole;

	if (s->nfree == s->free_cap) {
		size_t ncap = s->free_cap ? s->free_cap * 2 : 1024;
		uint32_t *nf = realloc(s->free_slots, ncap * sizeof (*nf));

		if (nf == NULL)
			return -1;
		s->free_slots = nf;
		s->free_cap = ncap;
	}
	s->free_slots[s->nfree++] = e->slot;
	s->tab[hole].used = 0;
	for (;;) {
		size_t home;

		i = (i + 1) & s->mask;
		if (!s->tab[i].used)
			break;
		home = hash_id(s->tab[i].id) & s->mask;
		/* Move it if its home is not cyclically in (hole, i]. */
		if ((i > hole && (home <= hole || home > i)) ||
		    (i < hole && home <= hole && home > i)) {
			s->tab[hole] = s->tab[i];
			s->tab[i].used = 0;
			hole = i;
		}
	}
	s->live--;
	return 0;
}

static void
space_free(id_space_t *s)
{
	free(s->tab);
	free(s->free_slots);
	memset(s, 0, sizeof (*s));
}

static int
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Split [s, e) into at most 5 fields (5 means too many). */
static int
split(const char *s, const char *e, const char *f[5], size_t flen[5])
{
	int n = 0;

	while (s < e && n < 5) {
		while (s < e && is_blank(*s))
			s++;
		if (s == e || *s == '#')
			break;
		f[n] = s;
		while (s < e && !is_blank(*s) && *s != '#')
			s++;
		flen[n] = (size_t)(s - f[n]);
		n++;
	}
	return n;
}

/* Unsigned decimal; -1 if not a number or above 2^64 - 1. */
static int
parse_u64(const char *s, size_t len, uint64_t *v)
{
	uint64_t x = 0;
	size_t i;

	if (len == 0)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (d > 9 || x > (UINT64_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*v = x;
	return 0;
}

static int
parse_op(const char *s, size_t len)
{
	int i;

	for (i = 0; i < 4; i++)
		if (strlen(op_names[i]) == len &&
		    memcmp(op_names[i], s, len) == 0)
			return i;
	return -1;
}

static int
push_event(parser_t *p, const kvsim_event_t *ev)
{
	kvsim_trace_t *t = p->out;

	if (t->nevents == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 4096;
		kvsim_event_t *ne = realloc(t->events, ncap * sizeof (*ne));

		if (ne == NULL)
			return fail(p, "out of memory");
		t->events = ne;
		t->cap = ncap;
	}
	t->events[t->nevents++] = *ev;
	t->count[ev->op]++;
	return 0;
}

/* Check liveness and assign the slot of one event. */
static int
resolve(parser_t *p, kvsim_event_t *ev, uint64_t size, uint64_t id)
{
	int creates = ev->op == KVSIM_OP_ALLOC || ev->op == KVSIM_OP_THREAD_CREATE;
	int threads = ev->op >= KVSIM_OP_THREAD_CREATE;
	id_space_t *s = &p->space[threads];
	id_entry_t *e = space_find(s, id);
	const char *what = threads ? "thread" : "allocation";

	if (creates) {
		if (e != NULL)
			return fail(p, "%s id %llu is already live (since "
			    "line %u)", what, (unsigned long long)id, e->line);
		if (space_insert(s, id, (uint32_t)size, ev->line, &ev->slot) != 0)
			return fail(p, "out of memory");
		return 0;
	}
	if (e == NULL)
		return fail(p, "%s of %s id %llu, which is not live",
		    kvsim_op_name((kvsim_op_t)ev->op), what,
		    (unsigned long long)id);
	if (!threads && size != 0 && size != e->size)
		return fail(p, "free of id %llu with size %llu, but it was "
		    "allocated with size %u", (unsigned long long)id,
		    (unsigned long long)size, e->size);
	ev->slot = e->slot;
	ev->size = threads ? 0 : e->size;
	if (space_remove(s, e) != 0)
		return fail(p, "out of memory");
	return 0;
}

static int
parse_line(parser_t *p, const char *s, const char *e)
{
	const char *f[5];
	size_t flen[5];
	kvsim_event_t ev;
	uint64_t time_us, size, id;
	int n = split(s, e, f, flen);
	int op;

	if (n == 0)
		return 0;
	if (n != 4)
		return fail(p, "expected 4 fields TIME_US OP SIZE ID, found %s",
		    n > 4 ? "more" : n == 1 ? "1" : n == 2 ? "2" : "3");
	if (parse_u64(f[0], flen[0], &time_us) != 0)
		return fail(p, "TIME_US '%.*s' is not an unsigned integer",
		    (int)(flen[0] > 40 ? 40 : flen[0]), f[0]);
	if ((op = parse_op(f[1], flen[1])) < 0)
		return fail(p, "unknown OP '%.*s' (alloc, free, thread_create, "
		    "thread_exit)", (int)(flen[1] > 40 ? 40 : flen[1]), f[1]);
	if (parse_u64(f[2], flen[2], &size) != 0)
		return fail(p, "SIZE '%.*s' is not an unsigned integer",
		    (int)(flen[2] > 40 ? 40 : flen[2]), f[2]);
	if (parse_u64(f[3], flen[3], &id) != 0)
		return fail(p, "ID '%.*s' is not an unsigned integer",
		    (int)(flen[3] > 40 ? 40 : flen[3]), f[3]);
	if (op == KVSIM_OP_ALLOC && size == 0)
		return fail(p, "alloc of size 0");
	/* Both simulated layouts have 4 KiB pages; segkp takes whole ones. */
	if (op == KVSIM_OP_THREAD_CREATE && size % 4096 != 0)
		return fail(p, "thread_create stack SIZE %llu is not a multiple "
		    "of the 4096-byte page", (unsigned long long)size);
	if (op != KVSIM_OP_THREAD_EXIT && size > UINT32_MAX)
		return fail(p, "SIZE %llu is larger than 4294967295",
		    (unsigned long long)size);
	if (p->line > UINT32_MAX)
		return fail(p, "too many lines");
	memset(&ev, 0, sizeof (ev));
	ev.time_us = time_us;
	ev.op = (uint8_t)op;
	ev.line = (uint32_t)p->line;
	ev.size = op == KVSIM_OP_THREAD_EXIT ? 0 : (uint32_t)size;
	if (resolve(p, &ev, size, id) != 0)
		return -1;
	return push_event(p, &ev);
}

int
kvsim_trace_parse(const char *text, size_t len, kvsim_trace_t *out,
    char *err, size_t errlen)
{
	parser_t p;
	const char *s = text, *end = text + len;
	int rc = 0;

	memset(out, 0, sizeof (*out));
	memset(&p, 0, sizeof (p));
	p.out = out;
	p.err = err;
	p.errlen = errlen;
	if (errlen > 0)
		err[0] = '\0';
	while (s < end && rc == 0) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *e = nl != NULL ? nl : end;

		p.line++;
		rc = parse_line(&p, s, e);
		s = nl != NULL ? nl + 1 : end;
	}
	out->lines = p.line;
	out->alloc_slots = p.space[0].next_slot;
	out->thread_slots = p.space[1].next_slot;
	space_free(&p.space[0]);
	space_free(&p.space[1]);
	if (rc != 0)
		kvsim_trace_free(out);
	return rc;
}

static char *
read_all(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	size_t cap = 1 << 16, n = 0;
	char *buf;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(cap);
	while (buf != NULL) {
		size_t got = fread(buf + n, 1, cap - n, f);
		char *nb;

		n += got;
		if (n < cap)
			break;
		nb = realloc(buf, cap * 2);
		if (nb == NULL) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = nb;
		cap *= 2;
	}
	if (buf == NULL)
		snprintf(err, errlen, "%s: out of memory", path);
	else if (ferror(f)) {
		snprintf(err, errlen, "%s: read error", path);
		free(buf);
		buf = NULL;
	}
	if (f != stdin)
		fclose(f);
	*len = n;
	return buf;
}

int
kvsim_trace_load(const char *path, kvsim_trace_t *out, char *err,
    size_t errlen)
{
	size_t len;
	char *text = read_all(path, &len, err, errlen);
	char msg[KVSIM_TRACE_ERRLEN];
	int rc;

	memset(out, 0, sizeof (*out));
	if (text == NULL)
		return -1;
	rc = kvsim_trace_parse(text, len, out, msg, sizeof (msg));
	if (rc != 0)
		snprintf(err, errlen, "%s: %s", path, msg);
	free(text);
	return rc;
}

void
kvsim_trace_free(kvsim_trace_t *t)
{
	free(t->events);
	memset(t, 0, sizeof (*t));
}
