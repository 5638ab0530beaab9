/*
 * The arena and cache statistics as JSON, for programs that collect
 * them (monitoring, CI dashboards, kvsim-like tools) rather than read
 * tables.
 *
 * Each document is produced through the caller's out() one '\n'-ended
 * line at a time: the opening, one line per arena or cache, and the
 * closing, so a consumer that reads lines sees whole records, and memory
 * use is one line buffer on the stack whatever the number of arenas. Records follow
 * the order of vmem_foreach_arena / kmem_foreach_cache (creation order).
 * Every field of vmem_stats_t and kmem_cache_stats_t is emitted under its
 * C name, numbers as JSON integers; names are escaped. The list lock of
 * the foreach is held while records are produced, so out() must not
 * create or destroy arenas or caches.
 *
 * Only the core's own formatter is used: this file builds freestanding,
 * like vmem.c and kmem.c.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stddef.h>
#include <stdint.h>

#include <vmem/kmem.h>
#include <vmem/vmem.h>

#include "error.h"

#define JSON_LINE 3072

typedef struct json_line {
	char buf[JSON_LINE];
	size_t len;
} json_line_t;

typedef struct json_ctx {
	void (*out)(void *, const char *);
	void *arg;
	int count;
} json_ctx_t;

static void
add(json_line_t *l, const char *s)
{
	while (*s != '\0' && l->len + 1 < sizeof (l->buf))
		l->buf[l->len++] = *s++;
	l->buf[l->len] = '\0';
}

/*
 * Length of the well-formed UTF-8 sequence at s (2 to 4), or 0. Names
 * are bytes: one cut at VMEM_NAMELEN inside a character, or not UTF-8 at
 * all, must still give valid JSON.
 */
static size_t
utf8_len(const unsigned char *s)
{
	size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 :
	    s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;

	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((n == 3 && s[0] == 0xe0 && s[1] < 0xa0) ||    /* overlong */
	    (n == 3 && s[0] == 0xed && s[1] >= 0xa0) ||   /* surrogate */
	    (n == 4 && s[0] == 0xf0 && s[1] < 0x90) ||    /* overlong */
	    (n == 4 && s[0] == 0xf4 && s[1] >= 0x90))     /* > U+10FFFF */
		return 0;
	return n;
}

static void
add_string(json_line_t *l, const char *s)
{
	char esc[8];

	add(l, "\"");
	for (; s != NULL && *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x80) {
			size_t n = utf8_len((const unsigned char *)s);

			if (n == 0) {
				add(l, "\\ufffd");  /* not UTF-8: U+FFFD */
				continue;
			}
			for (size_t i = 0; i < n; i++)
				esc[i] = s[i];
			esc[n] = '\0';
			s += n - 1;
		} else if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			esc[2] = '\0';
		} else if (c < 0x20) {
			vmem_snprintf(esc, sizeof (esc), "\\u%04x", c);
		} else {
			esc[0] = (char)c;
			esc[1] = '\0';
		}
		add(l, esc);
	}
	add(l, "\"");
}

static void
add_key(json_line_t *l, const char *key)
{
	if (l->len > 0 && l->buf[l->len - 1] != '{' &&
	    l->buf[l->len - 1] != '[')
		add(l, ",");
	add_string(l, key);
	add(l, ":");
}

static void
add_num(json_line_t *l, const char *key, uint64_t v)
{
	char num[24];

	add_key(l, key);
	vmem_snprintf(num, sizeof (num), "%llu", (unsigned long long)v);
	add(l, num);
}

static void
add_str_field(json_line_t *l, const char *key, const char *s)
{
	add_key(l, key);
	if (s == NULL)
		add(l, "null");
	else
		add_string(l, s);
}

/* Start a record: a comma before every record but the first. */
static void
record_begin(json_line_t *l, json_ctx_t *ctx)
{
	l->len = 0;
	l->buf[0] = '\0';
	add(l, ctx->count++ > 0 ? ",{" : "{");
}

static void
record_end(json_line_t *l, json_ctx_t *ctx)
{
	add(l, "}\n");
	ctx->out(ctx->arg, l->buf);
}

static void
arena_record(vmem_t *vmp, void *arg)
{
	json_ctx_t *ctx = arg;
	vmem_t *src = vmem_source(vmp);
	json_line_t l;
	vmem_stats_t st;
	int nclass = VMEM_NCLASS_POW2;

	vmem_get_stats(vmp, &st);
	record_begin(&l, ctx);
	add_str_field(&l, "name", st.name);
	add_str_field(&l, "source", src != NULL ? vmem_name(src) : NULL);
	add_num(&l, "quantum", st.quantum);
	add_num(&l, "qcache_max", st.qcache_max);
	add_num(&l, "mem_inuse", st.mem_inuse);
	add_num(&l, "mem_import", st.mem_import);
	add_num(&l, "mem_total", st.mem_total);
	add_num(&l, "alloc", st.alloc);
	add_num(&l, "free", st.free);
	add_num(&l, "wait", st.wait);
	add_num(&l, "fail", st.fail);
	add_num(&l, "lookup", st.lookup);
	add_num(&l, "search", st.search);
	add_num(&l, "populate_fail", st.populate_fail);
	add_num(&l, "contains", st.contains);
	add_num(&l, "import", st.import);
	add_num(&l, "release", st.release);
	add_num(&l, "qcache_alloc", st.qcache_alloc);
	add_num(&l, "qcache_free", st.qcache_free);
	add_num(&l, "nspans", st.nspans);
	add_num(&l, "nalloc_segs", st.nalloc_segs);
	add_num(&l, "nfree_segs", st.nfree_segs);
	add_num(&l, "largest_free", st.largest_free);
	add_num(&l, "hash_buckets", st.hash_buckets);
	add_num(&l, "tags", st.tags);
	add_num(&l, "meta_bytes", st.meta_bytes);
	/* Free segments by power-of-two class, up to the last non-empty one. */
	while (nclass > 0 && st.free_by_class[nclass - 1] == 0)
		nclass--;
	add_key(&l, "free_by_class");
	add(&l, "[");
	for (int i = 0; i < nclass; i++) {
		char num[24];
		vmem_snprintf(num, sizeof (num), i > 0 ? ",%zu" : "%zu",
		    st.free_by_class[i]);
		add(&l, num);
	}
	add(&l, "]");
	record_end(&l, ctx);
}

/* opening and closing are whole lines: every out() call ends in '\n'. */
static void
arena_list(void (*out)(void *, const char *), void *arg, const char *opening,
    const char *closing)
{
	json_ctx_t ctx = { out, arg, 0 };

	out(arg, opening);
	vmem_foreach_arena(arena_record, &ctx);
	out(arg, closing);
}

#ifdef VMEM_WITH_KMEM
static void
cache_record(kmem_cache_t *cp, void *arg)
{
	json_ctx_t *ctx = arg;
	json_line_t l;
	kmem_cache_stats_t st;

	kmem_cache_get_stats(cp, &st);
	record_begin(&l, ctx);
	add_str_field(&l, "name", st.name);
	add_num(&l, "bufsize", st.bufsize);
	add_num(&l, "chunksize", st.chunksize);
	add_num(&l, "align", st.align);
	add_num(&l, "slabsize", st.slabsize);
	add_num(&l, "bufs_per_slab", st.bufs_per_slab);
	add_num(&l, "cflags", (unsigned)st.cflags);
	add_num(&l, "debug", (unsigned)st.debug);
	add_num(&l, "buf_total", st.buf_total);
	add_num(&l, "buf_inuse", st.buf_inuse);
	add_num(&l, "buf_cached", st.buf_cached);
	add_num(&l, "slabs", st.slabs);
	add_num(&l, "mem_total", st.mem_total);
	add_num(&l, "meta_bytes", st.meta_bytes);
	add_num(&l, "magsize", st.magsize);
	add_num(&l, "depot_full", st.depot_full);
	add_num(&l, "depot_empty", st.depot_empty);
	add_num(&l, "alloc", st.alloc);
	add_num(&l, "alloc_fail", st.alloc_fail);
	add_num(&l, "free", st.free);
	add_num(&l, "slab_alloc", st.slab_alloc);
	add_num(&l, "slab_free", st.slab_free);
	add_num(&l, "slab_create", st.slab_create);
	add_num(&l, "slab_destroy", st.slab_destroy);
	add_num(&l, "depot_alloc", st.depot_alloc);
	add_num(&l, "depot_free", st.depot_free);
	add_num(&l, "depot_contention", st.depot_contention);
	add_num(&l, "mag_resize", st.mag_resize);
	add_num(&l, "mag_grow_traffic", st.mag_grow_traffic);
	add_num(&l, "reap", st.reap);
	add_num(&l, "construct", st.construct);
	add_num(&l, "destruct", st.destruct);
	record_end(&l, ctx);
}
#endif

static void
cache_list(void (*out)(void *, const char *), void *arg, const char *opening,
    const char *closing)
{
	out(arg, opening);
#ifdef VMEM_WITH_KMEM
	{
		json_ctx_t ctx = { out, arg, 0 };

		kmem_foreach_cache(cache_record, &ctx);
	}
#endif
	/* vmem built alone (docs/FREESTANDING.md) has no caches to list. */
	out(arg, closing);
}

void
vmem_dump_arenas_json(void (*out)(void *arg, const char *line), void *arg)
{
	arena_list(out, arg, "{\"arenas\":[\n", "]}\n");
}

#ifdef VMEM_WITH_KMEM
void
kmem_dump_caches_json(void (*out)(void *arg, const char *line), void *arg)
{
	cache_list(out, arg, "{\"caches\":[\n", "]}\n");
}
#endif

void
vmem_dump_stats_json(void (*out)(void *arg, const char *line), void *arg)
{
	arena_list(out, arg, "{\"arenas\":[\n", "],\n");
	cache_list(out, arg, "\"caches\":[\n", "]}\n");
}
