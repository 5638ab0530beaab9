/*
 * Fault injection switch: the public vmem_set_fault_hook().
 *
 * The platform keeps one hook pointer, plat_fail_hook(site), consulted at
 * every failure point (src/fault.h). The public hook takes an argument, so
 * it is stored here and reached through a trampoline installed as the
 * platform hook. Installing and removing are meant for single-threaded
 * test set-up: the hook and its argument are written before the platform
 * pointer is set, and the platform pointer is cleared first on removal.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <vmem/vmem.h>

#include "fault.h"

static vmem_fault_hook_t *fault_hook;
static void *fault_arg;

static int
fault_trampoline(const char *site)
{
	vmem_fault_hook_t *hook = fault_hook;

	return hook != NULL && hook(site, fault_arg) != 0;
}

void
vmem_set_fault_hook(vmem_fault_hook_t *hook, void *arg)
{
	plat_fail_hook = NULL;
	fault_hook = hook;
	fault_arg = arg;
	if (hook != NULL)
		plat_fail_hook = fault_trampoline;
}
