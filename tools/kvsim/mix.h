/*
 * kvsim kmem_alloc size mixes: which request sizes the heap-growth and
 * frontier workloads draw, and how often.
 *
 * File format (mixes/default.mix documents itself): one class per line,
 * "LO-HI WEIGHT" (size uniform in LO..HI bytes) or "SIZE WEIGHT"; WEIGHT a
 * positive decimal, relative request frequency; '#' comments and blank
 * lines ignored. The default mix is compiled in (identical to
 * mixes/default.mix, which a test checks) so an installed kvsim needs no
 * data files.
 *
 * Sampling is deterministic for a given seed: a splitmix64 generator, a
 * binary search over cumulative weights, then a uniform size in the class.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef KVSIM_MIX_H
#define KVSIM_MIX_H

#include <stddef.h>
#include <stdint.h>

#define KVSIM_MIX_MAX 256

typedef struct kvsim_mix_class {
	uint64_t lo, hi;      /* request size range, bytes, lo <= hi */
	double weight;
	double cum;           /* cumulative weight up to and including this */
} kvsim_mix_class_t;

typedef struct kvsim_mix {
	kvsim_mix_class_t cls[KVSIM_MIX_MAX];
	int n;
	double total;
	char source[128];     /* file name or "built-in default" */
} kvsim_mix_t;

typedef struct kvsim_rng {
	uint64_t s;
} kvsim_rng_t;

/* The default mix's text (same as mixes/default.mix). */
extern const char kvsim_default_mix_text[];

/* Returns 0, or -1 with err = "line N: what is wrong". */
int kvsim_mix_parse(const char *text, size_t len, kvsim_mix_t *mix,
    char *err, size_t errlen);
int kvsim_mix_load(const char *path, kvsim_mix_t *mix, char *err,
    size_t errlen);
void kvsim_mix_default(kvsim_mix_t *mix);

/* Mean request size in bytes. */
double kvsim_mix_mean(const kvsim_mix_t *mix);
/* Draw one request size. */
uint64_t kvsim_mix_sample(const kvsim_mix_t *mix, kvsim_rng_t *rng);

void kvsim_rng_seed(kvsim_rng_t *rng, uint64_t seed);
uint64_t kvsim_rng_next(kvsim_rng_t *rng);

#endif
