/*
 * The core's own formatter (src/format.c) against the C library's
 * snprintf: every directive the library uses, flags, widths, precisions,
 * length modifiers, extreme values, and truncation (result length and
 * termination). A random sweep mixes them.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "testutil.h"

static int compared;

/* Format with both and compare text and return value. */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void
same(const char *fmt, ...)
{
	char mine[256], theirs[256];
	va_list ap, ap2;
	int n1, n2;

	memset(mine, 'Z', sizeof (mine));
	va_start(ap, fmt);
	va_copy(ap2, ap);
	n1 = vmem_vsnprintf(mine, sizeof (mine), fmt, ap);
	n2 = vsnprintf(theirs, sizeof (theirs), fmt, ap2);
	va_end(ap2);
	va_end(ap);
	compared++;
	if (n1 != n2 || strcmp(mine, theirs) != 0) {
		fprintf(stderr, "format \"%s\": got %d \"%s\", want %d \"%s\"\n",
		    fmt, n1, mine, n2, theirs);
		tu_failures++;
	}
}

static void
test_integers(void)
{
	same("%d %i %u", 0, -1, 4000000000u);
	same("%d %d", INT_MIN, INT_MAX);
	same("%ld %lu %lx", LONG_MIN, ULONG_MAX, ULONG_MAX);
	same("%lld %llu %llX", LLONG_MIN, ULLONG_MAX, 0xdeadbeefcafeULL);
	same("%zu %zx %zd", (size_t)-1, (size_t)4096, (size_t)12345);
	same("%jd %ju", (intmax_t)-42, (uintmax_t)UINTMAX_MAX);
	same("%td", (ptrdiff_t)-7);
	same("%hhd %hhu %hd %hu", 300, 300, 70000, 70000);
	same("%o %#o %#o %#x %#X %#x", 8u, 8u, 0u, 255u, 255u, 0u);
	same("[%5d] [%-5d] [%05d] [%+d] [% d] [%+5d] [%-+5d]", 42, 42, 42,
	    42, 42, -42, 42);
	same("[%.3d] [%.0d] [%5.3d] [%-8.4x] [%.0u]", 7, 0, -7, 0xabu, 0u);
	same("[%*d] [%-*d] [%*d] [%.*d] [%.*d]", 6, 1, 6, 1, -6, 1, 4, 9,
	    -1, 9);
	same("[%#.5o] [%#5o] [%#08x] [%#-8x]", 8u, 8u, 0x1fu, 0x1fu);
	same("0x%lx 0x%016lx", 0xC0000000ul, 0xC0000000ul);
}

/* '0' with a precision is ignored; GCC warns about it in a literal. */
static void
test_zero_flag_with_precision(void)
{
	const char *fmt = "[%08.3d] [%06.0x]";

	same(fmt, 5, 0u);
}

static void
test_strings(void)
{
	same("[%s] [%10s] [%-10s] [%.2s] [%6.2s] [%-6.2s]", "abc", "abc",
	    "abc", "abc", "abc", "abc");
	same("[%.*s] [%*s]", 3, "abcdef", -5, "x");
	same("[%c] [%3c] [%-3c]", 'a', 'b', 'c');
	same("%%d %s%%", "x");
	same("%-24s %8lu %14lu\n", "kmem_va_4096", 4096ul, 123456789ul);
	same("%-26s %6zu %7zu %7zu %9zu %10llu %5llu %4zu %8zu\n",
	    "kmem_alloc_64", (size_t)64, (size_t)3, (size_t)63,
	    (size_t)4096, 10ull, 0ull, (size_t)15, (size_t)300);
	same("%s", "");
	same("no directives at all");
}

static void
test_pointer(void)
{
	int x;

	same("%p", (void *)&x);
	same("[%20p] [%-20p]", (void *)&x, (void *)&x);
}

static void
test_truncation(void)
{
	char buf[8];
	int n;

	memset(buf, 'Z', sizeof (buf));
	n = vmem_snprintf(buf, sizeof (buf), "%s-%d", "abcdef", 12345);
	CHECK_EQ(n, 12);
	CHECK(strcmp(buf, "abcdef-") == 0);
	n = vmem_snprintf(buf, 1, "%d", 99);
	CHECK_EQ(n, 2);
	CHECK_EQ(buf[0], '\0');
	buf[0] = 'Q';
	n = vmem_snprintf(buf, 0, "%d", 99);
	CHECK_EQ(n, 2);
	CHECK_EQ(buf[0], 'Q');
	n = vmem_snprintf(NULL, 0, "%s%s", "abc", "de");
	CHECK_EQ(n, 5);
}

static void
test_random_sweep(void)
{
	static const char *const convs[] = { "d", "u", "x", "X", "o", "ld",
	    "lu", "lx", "llu", "lld", "zu" };
	static const char *const flags[] = { "", "-", "0", "+", " ", "#",
	    "-#", "0#", "+0" };
	tu_rng_t rng;
	int rounds = tu_slow_build() ? 400 : 4000;

	tu_seed(&rng, 7);
	for (int i = 0; i < rounds; i++) {
		const char *conv = convs[tu_range(&rng, 0, 10)];
		const char *flag = flags[tu_range(&rng, 0, 8)];
		char fmt[32];
		uint64_t v = tu_next(&rng) >> tu_range(&rng, 0, 63);
		int width = (int)tu_range(&rng, 0, 24);
		int prec = (int)tu_range(&rng, 0, 30) - 5;

		if ((flag[0] == '+' || flag[0] == ' ') && strchr(conv, 'd') == NULL)
			flag = "";
		if (flag[0] == '#' && (strchr(conv, 'd') != NULL ||
		    strchr(conv, 'u') != NULL))
			flag = "-";
		if (prec >= 0)
			snprintf(fmt, sizeof (fmt), "[%%%s%d.%d%s]", flag, width,
			    prec, conv);
		else
			snprintf(fmt, sizeof (fmt), "[%%%s%d%s]", flag, width,
			    conv);
		if (strcmp(conv, "d") == 0 || strcmp(conv, "u") == 0 ||
		    strcmp(conv, "x") == 0 || strcmp(conv, "X") == 0 ||
		    strcmp(conv, "o") == 0)
			same(fmt, (unsigned)v);
		else if (conv[0] == 'z')
			same(fmt, (size_t)v);
		else if (conv[1] == 'l')
			same(fmt, (unsigned long long)v);
		else
			same(fmt, (unsigned long)v);
	}
}

int
main(void)
{
	RUN(test_integers);
	RUN(test_zero_flag_with_precision);
	RUN(test_strings);
	RUN(test_pointer);
	RUN(test_truncation);
	RUN(test_random_sweep);
	printf("%d formats compared with the C library\n", compared);
	return tu_finish();
}
