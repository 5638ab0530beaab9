/*
 * Shared helpers of the fuzz targets: a reader that decodes the fuzz input
 * into small integers (running out of input reads zeros, so every input
 * is a valid program), and the failure macro (abort with the line, which
 * libFuzzer and the replay runner both catch).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_FUZZ_INPUT_H
#define VMEM_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct fz_in {
	const uint8_t *p;
	size_t n;
} fz_in_t;

static inline uint8_t
fz_u8(fz_in_t *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

static inline uint32_t
fz_u16(fz_in_t *in)
{
	uint32_t v = fz_u8(in);

	return v | (uint32_t)fz_u8(in) << 8;
}

static inline uint64_t
fz_u32(fz_in_t *in)
{
	uint64_t v = fz_u16(in);

	return v | (uint64_t)fz_u16(in) << 16;
}

/* Uniform-ish below n (n > 0). */
static inline unsigned
fz_below(fz_in_t *in, unsigned n)
{
	return (unsigned)(fz_u8(in) % n);
}

#define FZ_ASSERT(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, \
		    __LINE__, #cond); \
		abort(); \
	} \
} while (0)

#endif
