/*
 * The JSON statistics (src/stats_json.c): the documents parse, every
 * out() call is one '\n'-ended line, names with quotes, backslashes and
 * control characters are escaped, the numbers are the ones vmem_get_stats
 * and kmem_cache_get_stats return, and the validator itself rejects
 * broken JSON (so the test can fail).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <vmem/kmem.h>

#include "json_check.h"
#include "testutil.h"

typedef struct collect {
	char text[1 << 20];
	size_t len;
	int lines;
	int bad_lines;
} collect_t;

static collect_t doc;

static void
collect_line(void *arg, const char *line)
{
	collect_t *c = arg;
	size_t n = strlen(line);

	c->lines++;
	if (n == 0 || line[n - 1] != '\n' || memchr(line, '\n', n - 1) != NULL)
		c->bad_lines++;
	REQUIRE(c->len + n < sizeof (c->text));
	memcpy(c->text + c->len, line, n + 1);
	c->len += n;
}

static void
reset(void)
{
	doc.len = 0;
	doc.text[0] = '\0';
	doc.lines = doc.bad_lines = 0;
}

/* The record of the named object: from {"name":"<name>" to its '}'. */
static const char *
record_of(const char *name_json, char *buf, size_t len)
{
	char key[128];
	const char *p, *end;

	snprintf(key, sizeof (key), "{\"name\":%s,", name_json);
	p = strstr(doc.text, key);
	if (p == NULL)
		return NULL;
	end = strchr(p, '\n');
	REQUIRE(end != NULL && (size_t)(end - p) < len);
	memcpy(buf, p, (size_t)(end - p));
	buf[end - p] = '\0';
	return buf;
}

static unsigned long long
field(const char *record, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof (k), "\"%s\":", key);
	p = strstr(record, k);
	REQUIRE(p != NULL);
	return strtoull(p + strlen(k), NULL, 10);
}

static void
test_validator(void)
{
	CHECK(json_valid("{\"a\":[1,-2.5e3,\"x\\u00e9\",true,null,{}]}"));
	CHECK(!json_valid("{\"a\":[1,]}"));
	CHECK(!json_valid("{\"a\":\"\x01\"}"));
	CHECK(!json_valid("{\"a\":1}}"));
	CHECK(!json_valid("{\"a\" 1}"));
	CHECK(!json_valid("[01]"));
}

static void
test_arenas(void)
{
	vmem_t *src = vmem_create("json_src", (void *)0x100000, 1 << 20, 4096,
	    NULL, NULL, NULL, 0, VM_SLEEP);
	vmem_t *odd = vmem_create("json \"q\" \\ \t", NULL, 0, 4096,
	    vmem_alloc, vmem_free, src, 0, VM_SLEEP);
	char rec[4096];
	vmem_stats_t st;
	void *a = vmem_alloc(odd, 3 * 4096, VM_NOSLEEP);
	void *b = vmem_alloc(src, 4096, VM_NOSLEEP);

	REQUIRE(a != NULL && b != NULL);
	reset();
	vmem_dump_arenas_json(collect_line, &doc);
	CHECK(json_valid(doc.text));
	CHECK_EQ(doc.bad_lines, 0);
	CHECK(strncmp(doc.text, "{\"arenas\":[\n", 12) == 0);
	vmem_get_stats(src, &st);
	REQUIRE(record_of("\"json_src\"", rec, sizeof (rec)) != NULL);
	CHECK_EQ(field(rec, "quantum"), 4096);
	CHECK_EQ(field(rec, "mem_inuse"), st.mem_inuse);
	CHECK_EQ(field(rec, "mem_total"), 1 << 20);
	CHECK_EQ(field(rec, "alloc"), st.alloc);
	CHECK_EQ(field(rec, "nalloc_segs"), st.nalloc_segs);
	CHECK_EQ(field(rec, "largest_free"), st.largest_free);
	CHECK(strstr(rec, "\"source\":null") != NULL);
	REQUIRE(record_of("\"json \\\"q\\\" \\\\ \\u0009\"", rec,
	    sizeof (rec)) != NULL);
	CHECK(strstr(rec, "\"source\":\"json_src\"") != NULL);
	CHECK_EQ(field(rec, "mem_inuse"), 3 * 4096);
	CHECK_EQ(field(rec, "mem_import"), 3 * 4096);
	CHECK_EQ(field(rec, "import"), 1);
	vmem_free(odd, a, 3 * 4096);
	vmem_free(src, b, 4096);
	vmem_destroy(odd);
	vmem_destroy(src);
	/* Gone from the next document. */
	reset();
	vmem_dump_arenas_json(collect_line, &doc);
	CHECK(json_valid(doc.text));
	CHECK(strstr(doc.text, "json_src") == NULL);
}

/* Every byte sequence of text is well-formed UTF-8 (checked
 * independently of the library: lead byte, continuation count). */
static int
utf8_ok(const char *text)
{
	const unsigned char *p = (const unsigned char *)text;

	while (*p != '\0') {
		int n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 && *p >= 0xc2 ? 2 :
		    (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 &&
		    *p <= 0xf4 ? 4 : 0;

		if (n == 0)
			return 0;
		for (int i = 1; i < n; i++)
			if ((p[i] & 0xc0) != 0x80)
				return 0;
		p += n;
	}
	return 1;
}

/*
 * Names are bytes. One cut at VMEM_NAMELEN inside a UTF-8 character, or
 * not UTF-8 at all, must still give valid JSON (U+FFFD in its place);
 * well-formed UTF-8 passes through unchanged.
 */
static void
test_names_not_utf8(void)
{
	const char *names[3] = {
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9",  /* cut after 0xc3 */
	    "\xff\xfe bytes",
	    "caf\xc3\xa9 \xe2\x82\xac",                 /* cafe' euro */
	};
	vmem_t *v[3];

	/* The checker can fail. */
	CHECK(!utf8_ok("x\xc3\""));
	CHECK(!utf8_ok("\xff"));
	CHECK(utf8_ok("caf\xc3\xa9"));
	for (int i = 0; i < 3; i++) {
		v[i] = vmem_create(names[i], (void *)(uintptr_t)(0x100000 + (i << 20)),
		    1 << 20, 4096, NULL, NULL, NULL, 0, VM_SLEEP);
		REQUIRE(v[i] != NULL);
	}
	reset();
	vmem_dump_arenas_json(collect_line, &doc);
	CHECK(json_valid(doc.text));
	CHECK(utf8_ok(doc.text));
	CHECK(strstr(doc.text, "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\ufffd\"")
	    != NULL);
	CHECK(strstr(doc.text, "\"\\ufffd\\ufffd bytes\"") != NULL);
	CHECK(strstr(doc.text, "\"caf\xc3\xa9 \xe2\x82\xac\"") != NULL);
	for (int i = 0; i < 3; i++)
		vmem_destroy(v[i]);
}

static void
test_caches(void)
{
	vmem_t *arena = vmem_create("json_cache_arena", (void *)0x400000,
	    1 << 20, 4096, NULL, NULL, NULL, 0, VM_SLEEP);
	kmem_cache_t *cp = kmem_cache_create("json_cache", 100, 8, NULL, NULL,
	    NULL, NULL, arena, KMC_NOTOUCH);
	kmem_cache_stats_t st;
	void *bufs[10];
	char rec[4096];

	for (int i = 0; i < 10; i++)
		bufs[i] = kmem_cache_alloc(cp, KM_NOSLEEP);
	reset();
	kmem_dump_caches_json(collect_line, &doc);
	CHECK(json_valid(doc.text));
	CHECK_EQ(doc.bad_lines, 0);
	kmem_cache_get_stats(cp, &st);
	REQUIRE(record_of("\"json_cache\"", rec, sizeof (rec)) != NULL);
	CHECK_EQ(field(rec, "bufsize"), 100);
	CHECK_EQ(field(rec, "buf_inuse"), 10);
	CHECK_EQ(field(rec, "alloc"), 10);
	CHECK_EQ(field(rec, "slabs"), st.slabs);
	CHECK_EQ(field(rec, "cflags"), (unsigned)st.cflags);
	/* The combined document holds both lists. */
	reset();
	vmem_dump_stats_json(collect_line, &doc);
	CHECK(json_valid(doc.text));
	CHECK(strstr(doc.text, "{\"name\":\"json_cache\",") != NULL);
	CHECK(strstr(doc.text, "{\"name\":\"json_cache_arena\",") != NULL);
	CHECK(strstr(doc.text, "\n],\n\"caches\":[\n") != NULL);
	for (int i = 0; i < 10; i++)
		kmem_cache_free(cp, bufs[i]);
	kmem_cache_destroy(cp);
	vmem_destroy(arena);
}

/* Many arenas: one line each, and the document stays valid. */
static void
test_many(void)
{
	vmem_t *v[200];
	int n = tu_slow_build() ? 50 : 200;

	for (int i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof (name), "json_many_%d", i);
		v[i] = vmem_create(name, (void *)(uintptr_t)((i + 1) * 4096),
		    4096, 16, NULL, NULL, NULL, 0, VM_SLEEP);
	}
	reset();
	vmem_dump_arenas_json(collect_line, &doc);
	CHECK(json_valid(doc.text));
	CHECK(doc.lines >= n + 2);
	for (int i = 0; i < n; i++)
		vmem_destroy(v[i]);
}

int
main(void)
{
	RUN(test_validator);
	RUN(test_arenas);
	RUN(test_names_not_utf8);
	RUN(test_caches);
	RUN(test_many);
	return tu_finish();
}
