/*
 * Fault injection points (internal side of vmem_set_fault_hook).
 *
 * Every place where the library depends on a resource that can run out --
 * metadata pages, an import from a source, a slab, a page commit, a page
 * reservation, an mlock -- asks fault_point(site) first and, when it says
 * yes, takes the very path it takes when the resource really is missing.
 * The hook lives in the platform layer (plat_fail_hook), so a freestanding
 * platform gets the same switch; without a hook the cost is one load and
 * a predictable branch.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_FAULT_H
#define VMEM_FAULT_H

#include "platform.h"

/* Site names, as the hook sees them. */
#define FAULT_METADATA "metadata" /* plat_pages_alloc */
#define FAULT_IMPORT   "import"   /* a span imported from a source */
#define FAULT_SLAB     "slab"     /* a kmem cache takes a slab */
#define FAULT_COMMIT   "commit"   /* kas pages made read-write */
#define FAULT_RESV     "resv"     /* kas page budget reservation */
#define FAULT_MLOCK    "mlock"    /* kas pages locked */

/* Nonzero: this failure point must fail now. */
static inline int
fault_point(const char *site)
{
	int (*hook)(const char *) = plat_fail_hook;

	return hook != NULL && hook(site) != 0;
}

#endif
