/*
 * segkmem internals shared with the tests.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_SEGKMEM_IMPL_H
#define VMEM_SEGKMEM_IMPL_H

#include <vmem/segkmem.h>

/*
 * Test seam: if set, kas_classify calls it after it has found the arena
 * that holds the address and before it walks that arena, with no lock
 * held, so a test can forget and destroy the arena in that window. NULL
 * outside tests (one load and a branch per classification).
 */
extern void (*kas_classify_window_hook)(kas_t *kas, vmem_t *vmp);

/*
 * Set by segkp when its first segment is made: give back the pages of
 * every stack cached idle in kas's segments. A reservation that is about
 * to sleep calls it, with no lock held.
 */
extern void (*kas_stack_reclaim_hook)(kas_t *kas);

#endif
