/*
 * A small snprintf for the core: error messages, cache names and the
 * statistics tables are formatted here, so that vmem and kmem need no C
 * library (a kernel embedding them has no vsnprintf, or one with other
 * rules).
 *
 * It implements the integer and string subset of C11 printf that the
 * library uses: flags '-', '0', '+', ' ', '#'; a field width and a
 * precision, either given or '*'; length modifiers hh, h, l, ll, z, j, t;
 * conversions d, i, u, o, x, X, c, s, p and %%. Floating point and %n are
 * not supported (an unknown conversion is copied through as text). The
 * result follows snprintf: the output is cut to len - 1 characters and
 * always terminated when len > 0, and the return value is the length the
 * whole output needs.
 *
 * The output goes through a sink that counts every character and stores
 * the ones that fit; it holds no state between calls, so the formatter is
 * reentrant and safe in a signal handler.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* INT_MAX without <limits.h>, which GCC cannot give without a libc. */
#define FORMAT_INT_MAX ((size_t)(~0u >> 1))

typedef struct sink {
	char *buf;
	size_t len;   /* capacity, including the terminating NUL */
	size_t count; /* characters produced so far */
} sink_t;

static void
put(sink_t *s, char c)
{
	if (s->count + 1 < s->len)
		s->buf[s->count] = c;
	s->count++;
}

static void
put_repeat(sink_t *s, char c, size_t n)
{
	while (n-- > 0)
		put(s, c);
}

typedef struct spec {
	int left;        /* '-' */
	int zero;        /* '0' */
	int plus;        /* '+' */
	int space;       /* ' ' */
	int alt;         /* '#' */
	size_t width;
	int precision;   /* -1: none */
} spec_t;

/* Lay out [prefix][zeros][digits] in the field as the flags ask. */
static void
put_number(sink_t *s, const spec_t *sp, const char *prefix,
    const char *digits, size_t ndigits)
{
	size_t nprefix = 0, zeros = 0, body, pad;

	while (prefix[nprefix] != '\0')
		nprefix++;
	if (sp->precision >= 0 && (size_t)sp->precision > ndigits)
		zeros = (size_t)sp->precision - ndigits;
	body = nprefix + zeros + ndigits;
	pad = sp->width > body ? sp->width - body : 0;
	if (sp->zero && !sp->left && sp->precision < 0) {
		zeros += pad;
		pad = 0;
	}
	if (!sp->left)
		put_repeat(s, ' ', pad);
	for (size_t i = 0; i < nprefix; i++)
		put(s, prefix[i]);
	put_repeat(s, '0', zeros);
	for (size_t i = 0; i < ndigits; i++)
		put(s, digits[i]);
	if (sp->left)
		put_repeat(s, ' ', pad);
}

static void
format_unsigned(sink_t *s, const spec_t *sp, uintmax_t v, unsigned base,
    int upper, const char *sign)
{
	const char *set = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[3 * sizeof (uintmax_t) + 1];
	char prefix[4];
	size_t n = sizeof (tmp), np = 0;
	uintmax_t x = v;

	/* Precision 0 with value 0 prints no digits at all (C11 7.21.6.1). */
	if (!(v == 0 && sp->precision == 0)) {
		do {
			tmp[--n] = set[x % base];
			x /= base;
		} while (x != 0);
	}
	while (*sign != '\0')
		prefix[np++] = *sign++;
	if (sp->alt && base == 16 && v != 0) {
		prefix[np++] = '0';
		prefix[np++] = upper ? 'X' : 'x';
	}
	if (sp->alt && base == 8 && (n == sizeof (tmp) || tmp[n] != '0') &&
	    !(sp->precision > 0 && (size_t)sp->precision > sizeof (tmp) - n))
		tmp[--n] = '0';
	prefix[np] = '\0';
	put_number(s, sp, prefix, tmp + n, sizeof (tmp) - n);
}

static void
format_signed(sink_t *s, const spec_t *sp, intmax_t v)
{
	uintmax_t magnitude = v < 0 ? (uintmax_t)0 - (uintmax_t)v :
	    (uintmax_t)v;
	const char *sign = v < 0 ? "-" : sp->plus ? "+" : sp->space ? " " : "";

	format_unsigned(s, sp, magnitude, 10, 0, sign);
}

static void
format_string(sink_t *s, const spec_t *sp, const char *str)
{
	size_t n = 0, pad;

	if (str == NULL)
		str = "(null)";
	while (str[n] != '\0' && (sp->precision < 0 ||
	    n < (size_t)sp->precision))
		n++;
	pad = sp->width > n ? sp->width - n : 0;
	if (!sp->left)
		put_repeat(s, ' ', pad);
	for (size_t i = 0; i < n; i++)
		put(s, str[i]);
	if (sp->left)
		put_repeat(s, ' ', pad);
}

enum length { LEN_INT, LEN_CHAR, LEN_SHORT, LEN_LONG, LEN_LLONG, LEN_SIZE,
	LEN_MAX, LEN_PTRDIFF };

/* Read flags, width, precision and length; returns the conversion. */
static const char *
parse_spec(const char *f, spec_t *sp, enum length *len, va_list *ap)
{
	for (;; f++) {
		if (*f == '-')
			sp->left = 1;
		else if (*f == '0')
			sp->zero = 1;
		else if (*f == '+')
			sp->plus = 1;
		else if (*f == ' ')
			sp->space = 1;
		else if (*f == '#')
			sp->alt = 1;
		else
			break;
	}
	if (*f == '*') {
		int w = va_arg(*ap, int);
		if (w < 0) {
			sp->left = 1;
			w = -w;
		}
		sp->width = (size_t)w;
		f++;
	} else {
		while (*f >= '0' && *f <= '9')
			sp->width = sp->width * 10 + (size_t)(*f++ - '0');
	}
	if (*f == '.') {
		f++;
		sp->precision = 0;
		if (*f == '*') {
			int p = va_arg(*ap, int);
			sp->precision = p < 0 ? -1 : p;
			f++;
		} else {
			while (*f >= '0' && *f <= '9')
				sp->precision = sp->precision * 10 + (*f++ - '0');
		}
	}
	*len = LEN_INT;
	if (f[0] == 'h' && f[1] == 'h') {
		*len = LEN_CHAR;
		f += 2;
	} else if (f[0] == 'l' && f[1] == 'l') {
		*len = LEN_LLONG;
		f += 2;
	} else if (*f == 'h') {
		*len = LEN_SHORT;
		f++;
	} else if (*f == 'l') {
		*len = LEN_LONG;
		f++;
	} else if (*f == 'z') {
		*len = LEN_SIZE;
		f++;
	} else if (*f == 'j') {
		*len = LEN_MAX;
		f++;
	} else if (*f == 't') {
		*len = LEN_PTRDIFF;
		f++;
	}
	return f;
}

static intmax_t
signed_arg(enum length len, va_list *ap)
{
	switch (len) {
	case LEN_CHAR: return (signed char)va_arg(*ap, int);
	case LEN_SHORT: return (short)va_arg(*ap, int);
	case LEN_LONG: return va_arg(*ap, long);
	case LEN_LLONG: return va_arg(*ap, long long);
	case LEN_SIZE: return (intmax_t)va_arg(*ap, size_t);
	case LEN_MAX: return va_arg(*ap, intmax_t);
	case LEN_PTRDIFF: return va_arg(*ap, ptrdiff_t);
	default: return va_arg(*ap, int);
	}
}

static uintmax_t
unsigned_arg(enum length len, va_list *ap)
{
	switch (len) {
	case LEN_CHAR: return (unsigned char)va_arg(*ap, unsigned);
	case LEN_SHORT: return (unsigned short)va_arg(*ap, unsigned);
	case LEN_LONG: return va_arg(*ap, unsigned long);
	case LEN_LLONG: return va_arg(*ap, unsigned long long);
	case LEN_SIZE: return va_arg(*ap, size_t);
	case LEN_MAX: return va_arg(*ap, uintmax_t);
	case LEN_PTRDIFF: return (uintmax_t)va_arg(*ap, ptrdiff_t);
	default: return va_arg(*ap, unsigned);
	}
}

/* One conversion at f (just past the '%'); returns where the text goes on. */
static const char *
format_one(sink_t *s, const char *f, va_list *ap)
{
	spec_t sp = { 0, 0, 0, 0, 0, 0, -1 };
	const char *start = f - 1;
	enum length len;
	char c[2] = { 0, 0 };

	f = parse_spec(f, &sp, &len, ap);
	switch (*f) {
	case 'd':
	case 'i':
		format_signed(s, &sp, signed_arg(len, ap));
		break;
	case 'u':
		format_unsigned(s, &sp, unsigned_arg(len, ap), 10, 0, "");
		break;
	case 'o':
		format_unsigned(s, &sp, unsigned_arg(len, ap), 8, 0, "");
		break;
	case 'x':
	case 'X':
		format_unsigned(s, &sp, unsigned_arg(len, ap), 16, *f == 'X',
		    "");
		break;
	case 'p':
		sp.alt = 1;
		format_unsigned(s, &sp, (uintptr_t)va_arg(*ap, void *), 16, 0,
		    "");
		break;
	case 'c':
		c[0] = (char)va_arg(*ap, int);
		sp.precision = -1;
		if (c[0] == '\0') {
			/* A NUL character still takes its place. */
			if (!sp.left)
				put_repeat(s, ' ', sp.width > 1 ? sp.width - 1 : 0);
			put(s, '\0');
			if (sp.left)
				put_repeat(s, ' ', sp.width > 1 ? sp.width - 1 : 0);
		} else {
			format_string(s, &sp, c);
		}
		break;
	case 's':
		format_string(s, &sp, va_arg(*ap, const char *));
		break;
	case '%':
		put(s, '%');
		break;
	default:
		/* Not supported: copy the directive through as it stands. */
		while (start < f)
			put(s, *start++);
		if (*f == '\0')
			return f;
		put(s, *f);
		break;
	}
	return f + 1;
}

int
vmem_vsnprintf(char *buf, size_t len, const char *fmt, va_list ap)
{
	sink_t s = { buf, len, 0 };
	va_list args;

	va_copy(args, ap);
	while (*fmt != '\0') {
		if (*fmt != '%') {
			put(&s, *fmt++);
			continue;
		}
		fmt = format_one(&s, fmt + 1, &args);
	}
	va_end(args);
	if (len > 0)
		buf[s.count < len ? s.count : len - 1] = '\0';
	return s.count > FORMAT_INT_MAX ? (int)FORMAT_INT_MAX : (int)s.count;
}

int
vmem_snprintf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vmem_vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return n;
}
