/*
 * kvsim size mixes: parser, loader, default and sampler (format in mix.h).
 *
 * Problem: the heap workloads need a realistic, swappable distribution of
 * kmem_alloc request sizes, drawn fast and reproducibly.
 *
 * Data: up to KVSIM_MIX_MAX classes with cumulative weights; sampling finds
 * the class through a guide table (a bucket of the weight range names the
 * class to start from; see class_of), then draws a uniform size inside it.
 *
 * Invariants: after a successful parse n >= 1, every class has lo >= 1,
 * lo <= hi and weight > 0, and cum is strictly increasing with
 * cls[n-1].cum == total. A failed parse leaves the mix empty.
 *
 * Single-threaded; no locks.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mix.h"

/* Keep identical to mixes/default.mix (tests/test_kvsim_trace.c checks). */
const char kvsim_default_mix_text[] =
	"# kvsim kmem_alloc size mix (default).\n"
	"#\n"
	"# One class per line: LO-HI WEIGHT (a request size drawn uniformly from\n"
	"# LO..HI bytes) or SIZE WEIGHT (exactly SIZE bytes). WEIGHT is the relative\n"
	"# frequency of requests; '#' starts a comment.\n"
	"#\n"
	"# Classes: the illumos kmem_alloc caches of a 32-bit kernel -- the\n"
	"# kmem_alloc_sizes table (8 .. 4096 bytes) and the kmem_big_alloc_sizes up\n"
	"# to KMEM_BIG_MAXBUF_32BIT (32 KiB). Each line covers the request sizes that\n"
	"# land in that cache: one byte above the previous cache up to the cache size.\n"
	"#\n"
	"# Weights: ASSUMPTION, not a measurement. No published profile of kernel\n"
	"# allocation sizes was at hand, so request frequency is taken inversely\n"
	"# proportional to the cache size (weight = 32768 / size): every cache then\n"
	"# receives about the same number of bytes, small objects dominate by count\n"
	"# (mean request about 72 bytes), and no single size class dominates the heap.\n"
	"# Replace this file (--mix FILE) with a measured profile when you have one,\n"
	"# e.g. from ::kmastat buffer counts of a real system.\n"
	"\n"
	"1-8           4096.0000\n"
	"9-16          2048.0000\n"
	"17-24         1365.3333\n"
	"25-32         1024.0000\n"
	"33-40          819.2000\n"
	"41-48          682.6667\n"
	"49-56          585.1429\n"
	"57-64          512.0000\n"
	"65-80          409.6000\n"
	"81-96          341.3333\n"
	"97-112         292.5714\n"
	"113-128        256.0000\n"
	"129-160        204.8000\n"
	"161-192        170.6667\n"
	"193-224        146.2857\n"
	"225-256        128.0000\n"
	"257-320        102.4000\n"
	"321-384         85.3333\n"
	"385-448         73.1429\n"
	"449-512         64.0000\n"
	"513-640         51.2000\n"
	"641-768         42.6667\n"
	"769-896         36.5714\n"
	"897-1152        28.4444\n"
	"1153-1344       24.3810\n"
	"1345-1600       20.4800\n"
	"1601-2048       16.0000\n"
	"2049-2688       12.1905\n"
	"2689-4096        8.0000\n"
	"4097-8192        4.0000\n"
	"8193-12288       2.6667\n"
	"12289-16384      2.0000\n"
	"16385-24576      1.3333\n"
	"24577-32768      1.0000\n";

void
kvsim_rng_seed(kvsim_rng_t *rng, uint64_t seed)
{
	rng->s = seed;
}

/* splitmix64 */
uint64_t
kvsim_rng_next(kvsim_rng_t *rng)
{
	uint64_t z = (rng->s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int
parse_size(const char *s, char **end, uint64_t *v)
{
	unsigned long long x;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	x = strtoull(s, end, 10);
	if (errno != 0 || x == 0)
		return -1;
	*v = x;
	return 0;
}

/* One non-comment line: "LO-HI WEIGHT" or "SIZE WEIGHT". */
static int
parse_class(char *s, kvsim_mix_class_t *c, char *err, size_t errlen,
    int line)
{
	char *p = s, *end;

	while (*p == ' ' || *p == '\t')
		p++;
	if (parse_size(p, &end, &c->lo) != 0) {
		snprintf(err, errlen, "line %d: expected a size of at least 1 "
		    "byte", line);
		return -1;
	}
	c->hi = c->lo;
	if (*end == '-') {
		if (parse_size(end + 1, &end, &c->hi) != 0 || c->hi < c->lo) {
			snprintf(err, errlen, "line %d: bad size range", line);
			return -1;
		}
	}
	if (*end != ' ' && *end != '\t') {
		snprintf(err, errlen, "line %d: expected SIZE WEIGHT or LO-HI "
		    "WEIGHT", line);
		return -1;
	}
	errno = 0;
	c->weight = strtod(end, &p);
	while (*p == ' ' || *p == '\t' || *p == '\r')
		p++;
	if (p == end || errno != 0 || *p != '\0' || !(c->weight > 0) ||
	    !isfinite(c->weight)) {
		snprintf(err, errlen, "line %d: WEIGHT must be a positive "
		    "number, alone after the size", line);
		return -1;
	}
	return 0;
}

int
kvsim_mix_parse(const char *text, size_t len, kvsim_mix_t *mix, char *err,
    size_t errlen)
{
	const char *s = text, *end = text + len;
	int line = 0;

	memset(mix, 0, sizeof (*mix));
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t n = (size_t)((nl ? nl : end) - s);
		char buf[256], *hash;
		char *q;

		line++;
		if (n >= sizeof (buf)) {
			snprintf(err, errlen, "line %d: too long", line);
			goto bad;
		}
		memcpy(buf, s, n);
		buf[n] = '\0';
		s = nl ? nl + 1 : end;
		if ((hash = strchr(buf, '#')) != NULL)
			*hash = '\0';
		for (q = buf; *q == ' ' || *q == '\t' || *q == '\r'; q++)
			;
		if (*q == '\0')
			continue;
		if (mix->n == KVSIM_MIX_MAX) {
			snprintf(err, errlen, "line %d: more than %d classes",
			    line, KVSIM_MIX_MAX);
			goto bad;
		}
		if (parse_class(q, &mix->cls[mix->n], err, errlen, line) != 0)
			goto bad;
		mix->total += mix->cls[mix->n].weight;
		mix->cls[mix->n].cum = mix->total;
		mix->n++;
	}
	if (mix->n == 0) {
		snprintf(err, errlen, "no size classes");
		goto bad;
	}
	return 0;
bad:
	memset(mix, 0, sizeof (*mix));
	return -1;
}

int
kvsim_mix_load(const char *path, kvsim_mix_t *mix, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;
	char msg[160];
	int rc;

	memset(mix, 0, sizeof (*mix));
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	buf = malloc(1 << 20);
	n = buf ? fread(buf, 1, 1 << 20, f) : 0;
	fclose(f);
	if (buf == NULL || n == (1 << 20)) {
		snprintf(err, errlen, "%s: %s", path,
		    buf ? "larger than 1 MiB" : "out of memory");
		free(buf);
		return -1;
	}
	rc = kvsim_mix_parse(buf, n, mix, msg, sizeof (msg));
	free(buf);
	if (rc != 0)
		snprintf(err, errlen, "%s: %s", path, msg);
	else
		snprintf(mix->source, sizeof (mix->source), "%s", path);
	return rc;
}

void
kvsim_mix_default(kvsim_mix_t *mix)
{
	char err[160];

	if (kvsim_mix_parse(kvsim_default_mix_text,
	    strlen(kvsim_default_mix_text), mix, err, sizeof (err)) != 0)
		abort(); /* the built-in text is checked by a test */
	snprintf(mix->source, sizeof (mix->source), "built-in default");
}

double
kvsim_mix_mean(const kvsim_mix_t *mix)
{
	double sum = 0;
	int i;

	for (i = 0; i < mix->n; i++)
		sum += mix->cls[i].weight *
		    ((double)mix->cls[i].lo + (double)mix->cls[i].hi) / 2;
	return mix->n ? sum / mix->total : 0;
}

/*
 * The guide table: bucket b of GUIDE_BUCKETS equal slices of [0, total)
 * names the first class whose cumulative weight exceeds the slice's lower
 * end, so a draw starts at (or just below) its class and walks a step or
 * two instead of a binary search. The walk checks both neighbours, so the
 * class found is exactly the binary search's whatever the start: a stale
 * or approximate table costs speed, never a different size. mix.h has no
 * room for the table, so the last mix sampled keeps one per thread.
 */
#define GUIDE_BUCKETS 256

typedef struct mix_guide {
	const kvsim_mix_t *mix;
	int n;
	double total, scale;  /* scale = GUIDE_BUCKETS / total */
	uint8_t start[GUIDE_BUCKETS];
} mix_guide_t;

static _Thread_local mix_guide_t guide_cache;

static void
guide_build(mix_guide_t *g, const kvsim_mix_t *mix)
{
	int b, i = 0;

	g->mix = mix;
	g->n = mix->n;
	g->total = mix->total;
	g->scale = GUIDE_BUCKETS / mix->total;
	for (b = 0; b < GUIDE_BUCKETS; b++) {
		double lo = (double)b * mix->total / GUIDE_BUCKETS;

		while (i < mix->n - 1 && mix->cls[i].cum <= lo)
			i++;
		g->start[b] = (uint8_t)i;
	}
}

/* The class of u: the first with u < cum, or the last (as a binary
 * search over cls[0 .. n-2] finds it). */
static int
class_of(const kvsim_mix_t *mix, double u)
{
	mix_guide_t *g = &guide_cache;
	unsigned b;
	int i;

	if (g->mix != mix || g->n != mix->n || g->total != mix->total)
		guide_build(g, mix);
	b = (unsigned)(u * g->scale);
	/* start[] <= n - 1 for the n it was built with, checked above. */
	i = g->start[b < GUIDE_BUCKETS ? b : GUIDE_BUCKETS - 1];
	while (i > 0 && u < mix->cls[i - 1].cum)
		i--;
	while (i < mix->n - 1 && u >= mix->cls[i].cum)
		i++;
	return i;
}

uint64_t
kvsim_mix_sample(const kvsim_mix_t *mix, kvsim_rng_t *rng)
{
	double u = (double)(kvsim_rng_next(rng) >> 11) * 0x1.0p-53 *
	    mix->total;
	const kvsim_mix_class_t *c = &mix->cls[class_of(mix, u)];

	if (c->hi == c->lo)
		return c->lo;
	return c->lo + kvsim_rng_next(rng) % (c->hi - c->lo + 1);
}
