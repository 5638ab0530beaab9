/*
 * The library's single error channel (internal side). Every subsystem
 * reports misuse through vmem_error_report(); the public side
 * (vmem_set_error_handler) is in <vmem/vmem.h>.
 *
 * Callers must not hold any arena or cache lock: an installed handler may
 * call back into the library.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#ifndef VMEM_ERROR_H
#define VMEM_ERROR_H

#include <stdarg.h>

#include <vmem/vmem.h>

/*
 * Report an error (warning == 0: a misuse the call refuses; the default
 * handler aborts) or a warning (the call goes on). detail is a printf-style
 * format for the human-readable part.
 */
void vmem_error_report(int code, int warning, const char *call,
    const vmem_t *arena, const char *name, uintptr_t addr, size_t size,
    const char *detail_fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 8, 9)))
#endif
    ;

/*
 * snprintf for the core (format.c): the integer and string subset of C11
 * printf, no C library needed, async-signal-safe.
 */
int vmem_snprintf(char *buf, size_t len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
int vmem_vsnprintf(char *buf, size_t len, const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 0)))
#endif
    ;

#endif
