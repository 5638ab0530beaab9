/*
 * vmem internals for the layers above it (segkmem). Not installed; the
 * names are kept out of libvmem.so by src/vmem.map.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_VMEM_IMPL_H
#define VMEM_VMEM_IMPL_H

#include <vmem/vmem.h>

/* How many arenas import from vmp now (vmem_destroy refuses while any). */
unsigned vmem_importer_count(const vmem_t *vmp);

/* vmem_xalloc for a quantum cache's slab: the flags vmem gave the cache
 * (its internal try flags among them) pass unfiltered. */
void *vmem_qcache_slab_xalloc(vmem_t *vmp, size_t size, size_t align,
    int vmflag);

/* Nonzero if vmp was created with VMC_IDENTIFIER. */
int vmem_is_identifier(const vmem_t *vmp);

/* Test seam: how many steps next fit walks before the freelists answer
 * (-1, the default: the arena's own budget). */
extern long vmem_nextfit_test_budget;

/*
 * A call for vmp could not get the library's metadata pages: a quantum
 * cache of vmp could not record a new slab, or vmp's own import function
 * (one with no source arena, such as the default kmem heap's) was refused
 * platform pages. Counted as a stop on vmp, so the VM_SLEEP caller fails
 * with a warning instead of waiting for pages no free will bring back.
 */
void vmem_count_nometa(vmem_t *vmp);

#endif
