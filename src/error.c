/*
 * The error channel: one handler for the whole library.
 *
 * Misuse (a bad free, invalid constraints, a double release of a stack...)
 * is detected in release builds too and reported here with the call, the
 * object's name, the address and the size. The default handler prints one
 * line to stderr and aborts, since a program that frees what it does not
 * own is already corrupting something. Tests and careful programs install
 * their own handler; when it returns, the reporting call backs out with its
 * failure value, having changed nothing.
 *
 * The handler pointer is read without a lock: installing a handler while
 * other threads report errors is a race the caller must avoid, as with
 * signal(2).
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include "error.h"

#include <stdarg.h>

#include "platform.h"
#include "vmem_string.h"

/* Every subsystem's codes, for vmem_strerror (enums only: freestanding). */
#include <vmem/kmem.h>
#include <vmem/kthread.h>
#include <vmem/layout.h>
#include <vmem/segkmem.h>
#include <vmem/segkp.h>

static vmem_error_handler_t *error_handler = vmem_default_error_handler;
static void *error_arg;

vmem_error_handler_t *
vmem_set_error_handler(vmem_error_handler_t *handler, void *arg)
{
	vmem_error_handler_t *old = error_handler;

	error_handler = handler != NULL ? handler : vmem_default_error_handler;
	error_arg = handler != NULL ? arg : NULL;
	return old;
}

void
vmem_get_error_handler(vmem_error_handler_t **handler, void **arg)
{
	if (handler != NULL)
		*handler = error_handler;
	if (arg != NULL)
		*arg = error_arg;
}

static const char *const error_names[] = {
	[VMEM_E_NONE] = "no error",
	[VMEM_E_BADARG] = "invalid argument",
	[VMEM_E_POLICY] = "more than one allocation policy",
	[VMEM_E_XALLOC_ARGS] = "invalid xalloc constraints",
	[VMEM_E_ZEROADDR] = "span contains address 0 or wraps",
	[VMEM_E_OVERLAP] = "span overlaps an existing span",
	[VMEM_E_BADFREE] = "free of an address never allocated",
	[VMEM_E_DOUBLEFREE] = "double free",
	[VMEM_E_WRONGSIZE] = "free with the wrong size",
	[VMEM_E_WRONGARENA] = "free to the wrong arena",
	[VMEM_E_XFREE_QCACHE] = "vmem_xfree of a quantum-cached allocation",
	[VMEM_E_LEAK] = "leak at destroy",
	[VMEM_E_PANIC] = "allocation failed (VM_PANIC)",
	[VMEM_E_CORRUPT] = "consistency check failed",
	[VMEM_E_NOMEM] = "out of metadata memory",
	[VMEM_E_MISUSE] = "misuse",
	[KMEM_E_WRONGCACHE] = "buffer not from this cache",
	[KMEM_E_DOUBLEFREE] = "buffer already free",
	[KMEM_E_WRONGSIZE] = "kmem_free with the wrong size",
	[KMEM_E_REDZONE] = "write past the end of a buffer",
	[KMEM_E_MODIFIED] = "free buffer modified",
	[KMEM_E_BADARG] = "invalid kmem argument",
	[KMEM_E_LEAK] = "cache destroyed with buffers allocated",
	[KMEM_E_PANIC] = "allocation failed (KM_PANIC)",
	[KMEM_E_BUSY] = "cache in use",
	[SEGKMEM_E_BADCONFIG] = "invalid address space configuration",
	[SEGKMEM_E_BADRANGE] = "range not in the address space",
	[SEGKMEM_E_NOTKAS] = "no address space",
	[SEGKMEM_E_UNRESV] = "unreserve of pages never reserved",
	[SEGKMEM_E_TABLEFULL] = "table full",
	[SEGKMEM_E_BUSY] = "address space destroyed with pages in use",
	[SEGKP_E_BADLEN] = "invalid stack length",
	[SEGKP_E_BADFLAGS] = "invalid segkp flags",
	[SEGKP_E_NOTOWNED] = "address not owned by segkp",
	[SEGKP_E_DOUBLE] = "double release",
	[SEGKP_E_BADCOOKIE] = "invalid stack-cache cookie",
	[SEGKP_E_BADCONFIG] = "invalid segkp configuration",
	[SEGKP_E_TOOMANY] = "too many stack caches",
	[SEGKP_E_BUSY] = "segment destroyed with stacks in use",
	[SEGKP_E_CORRUPT] = "segkp consistency check failed",
	[KTHREAD_E_BADTHREAD] = "not a joinable kthread",
	[KTHREAD_E_BADCORO] = "invalid coroutine operation",
	[KTHREAD_E_NOTREAL] = "kthreads need a real address space",
	[VMEM_E_LAYOUT_BADARG] = "layout tunable out of range",
	[VMEM_E_LAYOUT_NOHEAP] = "no room for the kernel heap",
	[VMEM_E_LAYOUT_NOSEGKP] = "fixed segkp leaves no heap",
};

const char *
vmem_strerror(int code)
{
	if (code >= 0 && (size_t)code < sizeof (error_names) /
	    sizeof (error_names[0]) && error_names[code] != NULL)
		return error_names[code];
	if (code >= VMEM_E_KVSIM)
		return "kvsim error";
	if (code >= VMEM_E_SEGKP)
		return "segkp error";
	if (code >= VMEM_E_KMEM)
		return "kmem error";
	return "unknown error";
}

int
vmem_format_error(const vmem_error_info_t *info, char *buf, size_t len)
{
	const char *detail = info->detail != NULL && info->detail[0] != '\0' ?
	    info->detail : vmem_strerror(info->code);

	return vmem_snprintf(buf, len,
	    "libvmem: %s%s(%s '%s', addr 0x%lx, size %lu): %s",
	    info->warning ? "warning: " : "", info->call ? info->call : "?",
	    info->arena != NULL ? "arena" : "object",
	    info->name ? info->name : "?", (unsigned long)info->addr,
	    (unsigned long)info->size, detail);
}

void
vmem_default_error_handler(const vmem_error_info_t *info, void *arg)
{
	char line[512];
	int n;

	(void)arg;
	n = vmem_format_error(info, line, sizeof (line) - 1);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof (line) - 2)
		n = (int)sizeof (line) - 2;
	line[n] = '\n';
	line[n + 1] = '\0';
	plat_write_error(line);
	if (!info->warning)
		plat_abort();
}

void
vmem_error_report(int code, int warning, const char *call,
    const vmem_t *arena, const char *name, uintptr_t addr, size_t size,
    const char *detail_fmt, ...)
{
	vmem_error_info_t info;
	char detail[256];
	va_list ap;

	detail[0] = '\0';
	if (detail_fmt != NULL) {
		va_start(ap, detail_fmt);
		vmem_vsnprintf(detail, sizeof (detail), detail_fmt, ap);
		va_end(ap);
	}
	memset(&info, 0, sizeof (info));
	info.code = code;
	info.warning = warning;
	info.call = call;
	info.arena = arena;
	info.name = name != NULL ? name :
	    (arena != NULL ? vmem_name(arena) : NULL);
	info.addr = addr;
	info.size = size;
	info.detail = detail;
	error_handler(&info, error_arg);
}
