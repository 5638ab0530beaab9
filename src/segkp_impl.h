/*
 * segkp internals shared with the thread layer (kthread.c) and the tests.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_SEGKP_IMPL_H
#define VMEM_SEGKP_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include <vmem/segkp.h>

/*
 * Classify addr in every live segment without blocking (for a signal
 * handler): a segment whose lock stays busy for a bounded number of tries
 * is skipped, since the faulting thread may hold it.
 */
segkp_fault_t segkp_classify_any_nowait(uintptr_t addr, segkp_info_t *info);

/* Would segkp_get accept these flags? (The thread layer checks a caller's
 * flags before it takes anything, to refuse them as EINVAL.) */
bool segkp_flags_valid(int flags);

/* segkp_cache_init for a layer that can do without a cache: NULL, with no
 * report, when the segment's table or the process's is full (a user who
 * took the slots did nothing wrong). Bad arguments are still reported. */
void *segkp_cache_try_init(segkp_t *seg, int maxsize, size_t len,
    int flags);

/*
 * Test seam: if set, segkp_cache_reap calls it with seg's lock dropped
 * while the stacks it reaps are off their cache's list, so a test can
 * release, get and check in that window deterministically. NULL outside
 * tests (one load and a branch per reaped cache).
 */
extern void (*segkp_reap_window_hook)(segkp_t *seg);

#endif
