/*
 * The four memory functions the core uses (memset, memcpy, memmove,
 * memcmp). A hosted build takes them from <string.h>. A freestanding build
 * (VMEM_FREESTANDING) has no <string.h>; it declares them here with their
 * standard signatures, and the embedding environment provides them: GCC
 * and Clang require exactly these four from every freestanding environment
 * anyway, since they may emit calls to them for structure copies and
 * clears. Nothing else from the C library is used by vmem or kmem.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_STRING_H
#define VMEM_STRING_H

#include <stddef.h>

#ifdef VMEM_FREESTANDING
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
#else
#include <string.h>
#endif

#endif
