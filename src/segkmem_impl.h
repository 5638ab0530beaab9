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
 * Set by segkp when its first segment is made: fn gives back the pages of
 * every stack cached idle in kas's segments. The reclaimer thread calls it
 * when a reservation in kas is about to sleep, with no lock held.
 */
void kas_set_stack_reclaim(void (*fn)(kas_t *kas));

/* Entries of an address space's table of fault classifiers. */
#define KAS_MAX_CLASSIFIERS 8

/* kas_register_fault_classifier without the report: -1 if the table is
 * full (for callers that report after dropping their own locks). */
int kas_classifier_add(kas_t *kas, kas_classifier_t *fn, void *arg);

#endif
