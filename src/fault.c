/*
 * Fault injection switch: the public vmem_set_fault_hook().
 *
 * The public hook and its argument are kept here and asked at every
 * failure point (fault_point() in src/fault.h); metadata pages are asked
 * through the metadata hook, plat_fail_hook (meta_pages_alloc), where a
 * trampoline to the public hook is installed. Installing and removing are meant for single-threaded
 * test set-up: the hook and its argument are written before the platform
 * pointer is set, and the platform pointer is cleared first on removal.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <vmem/vmem.h>

#include "fault.h"

int (*plat_fail_hook)(const char *what);
vmem_fault_hook_t *fault_hook_fn;
void *fault_hook_arg;

static int
fault_trampoline(const char *site)
{
	return fault_point(site);
}

void
vmem_set_fault_hook(vmem_fault_hook_t *hook, void *arg)
{
	plat_fail_hook = NULL;
	fault_hook_fn = NULL;
	fault_hook_arg = arg;
	fault_hook_fn = hook;
	if (hook != NULL)
		plat_fail_hook = fault_trampoline;
}
