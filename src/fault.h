/*
 * Fault injection points (internal side of vmem_set_fault_hook).
 *
 * Every place where the library depends on a resource that can run out --
 * metadata pages, an import from a source, a slab, a page commit, a page
 * reservation, an mlock -- asks fault_point(site) first and, when it says
 * yes, takes the very path it takes when the resource really is missing.
 * Metadata pages are asked for through meta_pages_alloc, which consults
 * plat_fail_hook("metadata") first: a hook of its own because tests that
 * count or refuse page requests install it directly, and
 * vmem_set_fault_hook installs a trampoline to the public hook there. The
 * core does this itself, so every platform, freestanding ones included,
 * gets the same switch without writing a line. The other sites ask the
 * public hook directly through fault_point(). Without a hook the cost is
 * one load and a predictable branch.
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
#define FAULT_SLABTABLE "slabtable" /* a kmem cache grows its slab table */
#define FAULT_COMMIT   "commit"   /* kas pages made read-write */
#define FAULT_RESV     "resv"     /* kas page budget reservation */
#define FAULT_MLOCK    "mlock"    /* kas pages locked */

#include <vmem/vmem.h>

/* The installed public hook and its argument (src/fault.c), linked with
 * the library's prefix (see platform.h). */
#define fault_hook_fn           vmem_fault_hook_fn
#define fault_hook_arg          vmem_fault_hook_arg
extern vmem_fault_hook_t *fault_hook_fn;
extern void *fault_hook_arg;

/* Nonzero from the hook: refuse this metadata request (src/fault.c). */
extern int (*plat_fail_hook)(const char *what);

/* Nonzero: this failure point must fail now. */
static inline int
fault_point(const char *site)
{
	vmem_fault_hook_t *hook = fault_hook_fn;

	return hook != NULL && hook(site, fault_hook_arg) != 0;
}

/* Metadata pages from the platform, unless the metadata hook refuses. */
static inline void *
meta_pages_alloc(size_t size)
{
	int (*hook)(const char *) = plat_fail_hook;

	if (hook != NULL && hook(FAULT_METADATA))
		return NULL;
	return plat_pages_alloc(size);
}

#endif
