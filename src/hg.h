/*
 * Helgrind annotations (build option VMEM_HELGRIND, off by default).
 *
 * libvmem's locks are futex words and atomic spin locks, which helgrind
 * cannot see: without help it reports every access to correctly locked
 * data as a race. With VMEM_HELGRIND the platform mutex, kmem's CPU slot
 * locks and plat_once tell helgrind when they are taken and released, and
 * the few fields that are read on purpose without a lock (hints and
 * statistics, all C11 atomics) are marked as benign races. The macros are
 * valgrind client requests: a few instructions each, no effect outside
 * valgrind, and not compiled at all in normal builds.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_HG_H
#define VMEM_HG_H

#if defined(VMEM_HELGRIND) && VMEM_HELGRIND
#include <valgrind/helgrind.h>
#define HG_LOCK_CREATE(lock) ANNOTATE_RWLOCK_CREATE(lock)
#define HG_LOCK_DESTROY(lock) ANNOTATE_RWLOCK_DESTROY(lock)
#define HG_LOCK_ACQUIRED(lock) ANNOTATE_RWLOCK_ACQUIRED(lock, 1)
#define HG_LOCK_RELEASED(lock) ANNOTATE_RWLOCK_RELEASED(lock, 1)
#define HG_HAPPENS_BEFORE(obj) ANNOTATE_HAPPENS_BEFORE(obj)
#define HG_HAPPENS_AFTER(obj) ANNOTATE_HAPPENS_AFTER(obj)
#define HG_BENIGN(addr, why) ANNOTATE_BENIGN_RACE_SIZED(addr, \
	sizeof (*(addr)), why)
/* Memory whose history must be forgotten (a lock rebuilt after fork). */
#define HG_FORGET(addr) VALGRIND_HG_CLEAN_MEMORY(addr, sizeof (*(addr)))
#else
#define HG_LOCK_CREATE(lock) ((void)0)
#define HG_LOCK_DESTROY(lock) ((void)0)
#define HG_LOCK_ACQUIRED(lock) ((void)0)
#define HG_LOCK_RELEASED(lock) ((void)0)
#define HG_HAPPENS_BEFORE(obj) ((void)0)
#define HG_HAPPENS_AFTER(obj) ((void)0)
#define HG_BENIGN(addr, why) ((void)0)
#define HG_FORGET(addr) ((void)0)
#endif

#endif
