/*
 * Platform types for the freestanding test kernel (VMEM_PLATFORM_HEADER):
 * a test-and-set spinlock and a sequence-number condition variable. Only
 * compiler-provided headers are used.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef FS_PLATFORM_H
#define FS_PLATFORM_H

#include <stdatomic.h>

typedef struct plat_mutex { atomic_flag held; } plat_mutex_t;
typedef struct plat_cond { atomic_uint seq; } plat_cond_t;

/* The test kernel's own services (fs_platform.c). */
void fs_write(int fd, const char *s);
_Noreturn void fs_exit(int status);
/* Pretend the caller now runs on CPU cpu (< FS_NCPUS). */
#define FS_NCPUS 4
void fs_set_cpu(unsigned cpu);
/* Metadata pool accounting: pages handed out now, and the most ever. */
unsigned long fs_pool_pages_used(void);
unsigned long fs_pool_pages_peak(void);
/* Calls to plat_cond_timedwait (nobody else can ever wake a waiter). */
unsigned long fs_cond_waits(void);

#endif
