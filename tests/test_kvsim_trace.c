/*
 * Tests of kvsim's input and output formats: the trace parser (syntax,
 * liveness checks, line numbers, slot reuse, all-or-nothing), the size-mix
 * parser and sampler (the built-in default equals mixes/default.mix), the
 * example traces in the repository, and the JSON/SVG writers.
 *
 * The tool's sources are compiled in directly (they are not part of the
 * library).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#define _POSIX_C_SOURCE 200809L  /* open_memstream */
#include "../tools/kvsim/trace.c"
#include "../tools/kvsim/mix.c"
#include "../tools/kvsim/report.c"

#include <stdio.h>
#include <string.h>

#include "testutil.h"

static char errbuf[256];

static int
parse(const char *text, kvsim_trace_t *t)
{
	return kvsim_trace_parse(text, strlen(text), t, errbuf,
	    sizeof (errbuf));
}

/* The source tree, from this file's path. */
static void
src_path(char *out, size_t len, const char *rel)
{
	const char *slash = strrchr(__FILE__, '/');
	int dir = slash ? (int)(slash - __FILE__) : 1;

	snprintf(out, len, "%.*s/../%s", dir, slash ? __FILE__ : ".", rel);
}

static void
test_trace_basic(void)
{
	kvsim_trace_t t;
	const char *text =
	    "# comment line\n"
	    "\n"
	    "   \t\n"
	    "0 alloc 100 7\n"
	    "5\tthread_create 0 7   # same id, other name space\n"
	    "9 free 0 7\n"
	    "12 alloc 30 8\r\n"
	    "13 alloc 40 7\n"
	    "20 thread_exit 123 7\n"
	    "21 free 30 8";      /* no final newline */

	REQUIRE(parse(text, &t) == 0);
	CHECK_EQ(t.nevents, 7);
	CHECK_EQ(t.lines, 10);
	CHECK_EQ(t.count[KVSIM_OP_ALLOC], 3);
	CHECK_EQ(t.count[KVSIM_OP_FREE], 2);
	CHECK_EQ(t.count[KVSIM_OP_THREAD_CREATE], 1);
	CHECK_EQ(t.count[KVSIM_OP_THREAD_EXIT], 1);
	CHECK_EQ(t.events[0].op, KVSIM_OP_ALLOC);
	CHECK_EQ(t.events[0].line, 4);
	CHECK_EQ(t.events[0].size, 100);
	CHECK_EQ(t.events[1].op, KVSIM_OP_THREAD_CREATE);
	CHECK_EQ(t.events[1].time_us, 5);
	/* free of size 0 is filled in with the allocated size */
	CHECK_EQ(t.events[2].size, 100);
	CHECK_EQ(t.events[2].slot, t.events[0].slot);
	/* id 8 reuses the slot 7 freed; the new 7 needs a second slot */
	CHECK_EQ(t.events[3].slot, t.events[0].slot);
	CHECK(t.events[4].slot != t.events[3].slot);
	CHECK_EQ(t.events[5].size, 0);
	CHECK_EQ(t.events[6].size, 30);
	CHECK_EQ(t.alloc_slots, 2);
	CHECK_EQ(t.thread_slots, 1);
	kvsim_trace_free(&t);
	CHECK(parse("", &t) == 0);
	CHECK_EQ(t.nevents, 0);
	kvsim_trace_free(&t);
}

static void
expect_error(const char *text, const char *needle)
{
	kvsim_trace_t t;

	errbuf[0] = '\0';
	CHECK(parse(text, &t) == -1);
	CHECK(t.events == NULL && t.nevents == 0);  /* nothing half-applied */
	if (strstr(errbuf, needle) == NULL) {
		fprintf(stderr, "expected '%s' in '%s'\n", needle, errbuf);
		tu_failures++;
	}
}

static void
test_trace_errors(void)
{
	expect_error("0 alloc 8 1\n1 alloc 8\n", "line 2: expected 4 fields");
	expect_error("0 alloc 8 1 9\n", "line 1: expected 4 fields");
	expect_error("# c\n0 malloc 8 1\n", "line 2: unknown OP 'malloc'");
	expect_error("x alloc 8 1\n", "line 1: TIME_US 'x'");
	expect_error("-1 alloc 8 1\n", "line 1: TIME_US");
	expect_error("0 alloc 8k 1\n", "line 1: SIZE '8k'");
	expect_error("0 alloc 8 one\n", "line 1: ID 'one'");
	expect_error("0 alloc 0 1\n", "line 1: alloc of size 0");
	expect_error("0 alloc 4294967296 1\n", "larger than 4294967295");
	expect_error("0 alloc 99999999999999999999 1\n", "SIZE");
	expect_error("0 alloc 8 1\n\n\n1 alloc 8 1\n",
	    "line 4: allocation id 1 is already live (since line 1)");
	expect_error("0 free 8 1\n", "line 1: free of allocation id 1, which "
	    "is not live");
	expect_error("0 alloc 8 1\n1 free 8 1\n2 free 8 1\n",
	    "line 3: free of allocation id 1");
	expect_error("0 alloc 8 1\n1 free 16 1\n", "line 2: free of id 1 with "
	    "size 16, but it was allocated with size 8");
	expect_error("0 thread_exit 0 3\n", "line 1: thread_exit of thread id "
	    "3, which is not live");
	expect_error("0 thread_create 0 3\n1 thread_create 0 3\n",
	    "line 2: thread id 3 is already live");
	/* An error after many good lines still leaves nothing behind. */
	{
		char big[64 * 1024];
		size_t n = 0;
		int i;

		for (i = 0; i < 2000; i++)
			n += (size_t)snprintf(big + n, sizeof (big) - n,
			    "%d alloc 16 %d\n", i, i);
		snprintf(big + n, sizeof (big) - n, "9 free 16 5000\n");
		expect_error(big, "line 2001: free of allocation id 5000");
	}
}

/* Many IDs with churn: the map and slot reuse stay consistent. */
static void
test_trace_churn(void)
{
	size_t cap = 1 << 20, n = 0;
	char *text = malloc(cap);
	unsigned live[512];
	tu_rng_t r;
	kvsim_trace_t t;
	unsigned next = 1, i, nlive = 0, steps = tu_slow_build() ? 3000 :
	    30000;

	REQUIRE(text != NULL);
	tu_seed(&r, 42);
	for (i = 0; i < steps; i++) {
		if (nlive < 512 && (nlive == 0 || tu_next(&r) % 3 != 0)) {
			live[nlive++] = next;
			n += (size_t)snprintf(text + n, cap - n,
			    "%u alloc %u %u\n", i, next % 100 + 1, next);
			next++;
		} else {
			unsigned k = (unsigned)(tu_next(&r) % nlive);

			n += (size_t)snprintf(text + n, cap - n,
			    "%u free 0 %u\n", i, live[k]);
			live[k] = live[--nlive];
		}
		REQUIRE(n < cap - 64);
	}
	REQUIRE(parse(text, &t) == 0);
	CHECK_EQ(t.nevents, steps);
	CHECK(t.alloc_slots <= 512);
	/* Replaying slots: an alloc never lands on a slot that is in use. */
	{
		unsigned char *used = calloc(t.alloc_slots, 1);
		size_t k;

		REQUIRE(used != NULL);
		for (k = 0; k < t.nevents; k++) {
			const kvsim_event_t *e = &t.events[k];

			REQUIRE(e->slot < t.alloc_slots);
			if (e->op == KVSIM_OP_ALLOC) {
				CHECK(!used[e->slot]);
				used[e->slot] = 1;
			} else {
				CHECK(used[e->slot]);
				used[e->slot] = 0;
			}
		}
		free(used);
	}
	kvsim_trace_free(&t);
	free(text);
}

static void
test_example_traces(void)
{
	static const char *const files[] = { "tools/kvsim/traces/small.trace",
	    "tools/kvsim/traces/burst.trace" };
	char path[1024], err[256];
	kvsim_trace_t t;
	size_t i;

	for (i = 0; i < 2; i++) {
		src_path(path, sizeof (path), files[i]);
		if (kvsim_trace_load(path, &t, err, sizeof (err)) != 0) {
			fprintf(stderr, "%s\n", err);
			tu_failures++;
			continue;
		}
		CHECK(t.nevents > 0);
		CHECK_EQ(t.count[KVSIM_OP_ALLOC] + t.count[KVSIM_OP_FREE] +
		    t.count[KVSIM_OP_THREAD_CREATE] +
		    t.count[KVSIM_OP_THREAD_EXIT], t.nevents);
		kvsim_trace_free(&t);
	}
	CHECK(kvsim_trace_load("/nonexistent/x.trace", &t, err,
	    sizeof (err)) == -1);
	CHECK(strstr(err, "/nonexistent/x.trace") != NULL);
}

static void
test_mix(void)
{
	kvsim_mix_t d, f, m;
	char path[1024], err[256];
	kvsim_rng_t rng;
	uint64_t counts[3] = { 0, 0, 0 };
	int i, n = tu_slow_build() ? 20000 : 200000;

	kvsim_mix_default(&d);
	CHECK_EQ(d.n, 34);
	CHECK_EQ(d.cls[0].lo, 1);
	CHECK_EQ(d.cls[0].hi, 8);
	CHECK_EQ(d.cls[28].hi, 4096);
	CHECK_EQ(d.cls[33].hi, 32768);
	src_path(path, sizeof (path), "tools/kvsim/mixes/default.mix");
	REQUIRE(kvsim_mix_load(path, &f, err, sizeof (err)) == 0);
	CHECK_EQ(f.n, d.n);
	for (i = 0; i < d.n && i < f.n; i++) {
		CHECK_EQ(f.cls[i].lo, d.cls[i].lo);
		CHECK_EQ(f.cls[i].hi, d.cls[i].hi);
		CHECK(f.cls[i].weight == d.cls[i].weight);
	}
	/* Weights are followed and sizes stay in their class. */
	REQUIRE(kvsim_mix_parse("10 1\n20-29 2 # two\n\n4096 1\n",
	    strlen("10 1\n20-29 2 # two\n\n4096 1\n"), &m, err,
	    sizeof (err)) == 0);
	CHECK_EQ(m.n, 3);
	CHECK(m.total == 4.0);
	kvsim_rng_seed(&rng, 7);
	for (i = 0; i < n; i++) {
		uint64_t s = kvsim_mix_sample(&m, &rng);

		if (s == 10)
			counts[0]++;
		else if (s >= 20 && s <= 29)
			counts[1]++;
		else if (s == 4096)
			counts[2]++;
		else
			CHECK(0);
	}
	CHECK(counts[0] > (uint64_t)n / 4 - n / 50 &&
	    counts[0] < (uint64_t)n / 4 + n / 50);
	CHECK(counts[1] > (uint64_t)n / 2 - n / 50 &&
	    counts[1] < (uint64_t)n / 2 + n / 50);
	CHECK(kvsim_mix_mean(&m) == (10.0 + 2 * 24.5 + 4096.0) / 4);
	/* Errors name the line. */
	CHECK(kvsim_mix_parse("8 1\n16 0\n", 9, &m, err, sizeof (err)) == -1);
	CHECK(strstr(err, "line 2") != NULL);
	CHECK_EQ(m.n, 0);
	CHECK(kvsim_mix_parse("30-20 1\n", 8, &m, err, sizeof (err)) == -1);
	CHECK(kvsim_mix_parse("8\n", 2, &m, err, sizeof (err)) == -1);
	CHECK(kvsim_mix_parse("8 1 2\n", 6, &m, err, sizeof (err)) == -1);
	CHECK(kvsim_mix_parse("# nothing\n", 10, &m, err, sizeof (err)) == -1);
	CHECK(strstr(err, "no size classes") != NULL);
}

/* Writers: JSON carries the layout; SVG needs frontier points. */
static void
test_writers(void)
{
	layout_params_t p;
	kvsim_run_t runs[2];
	kvsim_point_t pts[3] = { { 0, 16000 }, { 16 << 20, 16000 },
	    { 32 << 20, 15000 } };
	kvsim_report_config_t cfg;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	memset(runs, 0, sizeof (runs));
	layout_params_default(&p);
	layout_compute(&p, &runs[0].layout);
	p.placement = LAYOUT_SEGKP_FROMHEAP;
	layout_compute(&p, &runs[1].layout);
	memset(&cfg, 0, sizeof (cfg));
	cfg.charge_metadata = 1;
	cfg.mix_source = "built-in \"default\"";
	f = open_memstream(&buf, &len);
	REQUIRE(f != NULL);
	kvsim_report_json(f, &cfg, runs, 2);
	fclose(f);
	CHECK(strstr(buf, "\"kvsim\": 1") != NULL);
	CHECK(strstr(buf, "\"kernelbase\": \"0xd1800000\"") != NULL);
	CHECK(strstr(buf, "\"heap_size\": 440393728") != NULL);
	CHECK(strstr(buf, "\"heap_size\": 650108928") != NULL);
	CHECK(strstr(buf, "\"storm\": null") != NULL);
	CHECK(strstr(buf, "built-in \\\"default\\\"") != NULL);
	free(buf);
	f = open_memstream(&buf, &len);
	REQUIRE(f != NULL);
	CHECK(kvsim_report_svg(f, runs, 2) == -1);
	runs[0].frontier = pts;
	runs[0].nfrontier = 3;
	runs[0].done = KVSIM_W_FRONTIER;
	CHECK(kvsim_report_svg(f, runs, 2) == 0);
	fclose(f);
	CHECK(strstr(buf, "<svg") == buf);
	CHECK(strstr(buf, "<polyline") != NULL);
	CHECK(strstr(buf, ">fixed</text>") != NULL);
	CHECK(strstr(buf, "</svg>\n") != NULL);
	free(buf);
}

int
main(void)
{
	RUN(test_trace_basic);
	RUN(test_trace_errors);
	RUN(test_trace_churn);
	RUN(test_example_traces);
	RUN(test_mix);
	RUN(test_writers);
	return tu_finish();
}
