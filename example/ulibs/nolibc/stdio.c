/*
 * nolibc: a small vsnprintf and printf onto ukconsole.
 * Supports %d %i %u %x %X %c %s %p %% with the l, ll and z length modifiers,
 * the 0 and - flags and a field width. The NOLIBC_FULL variant also supports
 * precision for %s, the + and space flags, %o and %b.
 */
#include <stdio.h>
#include <string.h>
#include <uk/console.h>

struct outbuf {
	char *buf;
	size_t size;
	size_t len;
};

static void out_char(struct outbuf *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void out_pad(struct outbuf *o, char c, int n)
{
	while (n-- > 0)
		out_char(o, c);
}

static void out_str(struct outbuf *o, const char *s, size_t n, int width,
		    int left)
{
	int pad = width > (int)n ? width - (int)n : 0;

	if (!left)
		out_pad(o, ' ', pad);
	while (n--)
		out_char(o, *s++);
	if (left)
		out_pad(o, ' ', pad);
}

static void out_num(struct outbuf *o, unsigned long long v, unsigned int base,
		    int upper, int neg, char sign, int width, int zero,
		    int left)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[72];
	int n = 0, len;

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	len = n + ((neg || sign) ? 1 : 0);
	if (!left && !zero)
		out_pad(o, ' ', width - len);
	if (neg)
		out_char(o, '-');
	else if (sign)
		out_char(o, sign);
	if (!left && zero)
		out_pad(o, '0', width - len);
	while (n)
		out_char(o, tmp[--n]);
	if (left)
		out_pad(o, ' ', width - len);
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct outbuf o = { buf, size, 0 };

	for (; *fmt; fmt++) {
		int zero = 0, left = 0, width = 0, lng = 0;
		char sign = 0;
		int prec = -1;
		unsigned long long uv;
		long long sv;

		if (*fmt != '%') {
			out_char(&o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '0')
				zero = 1;
			else if (*fmt == '-')
				left = 1;
#ifdef NOLIBC_FULL
			else if (*fmt == '+')
				sign = '+';
			else if (*fmt == ' ' && !sign)
				sign = ' ';
#endif
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
#ifdef NOLIBC_FULL
		if (*fmt == '.') {
			fmt++;
			prec = 0;
			while (*fmt >= '0' && *fmt <= '9')
				prec = prec * 10 + (*fmt++ - '0');
		}
#endif
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
		case 'i':
			sv = lng ? va_arg(ap, long long) : va_arg(ap, int);
			uv = sv < 0 ? -(unsigned long long)sv
				    : (unsigned long long)sv;
			out_num(&o, uv, 10, 0, sv < 0, sign, width, zero, left);
			break;
		case 'u':
		case 'x':
		case 'X':
#ifdef NOLIBC_FULL
		case 'o':
		case 'b':
#endif
		{
			unsigned int base = *fmt == 'u' ? 10
					  : (*fmt == 'o' ? 8
					  : (*fmt == 'b' ? 2 : 16));

			uv = lng ? va_arg(ap, unsigned long long)
				 : va_arg(ap, unsigned int);
			out_num(&o, uv, base, *fmt == 'X', 0, 0, width, zero,
				left);
			break;
		}
		case 'p':
			uv = (uintptr_t)va_arg(ap, void *);
			out_char(&o, '0');
			out_char(&o, 'x');
			out_num(&o, uv, 16, 0, 0, 0, width, zero, left);
			break;
		case 'c': {
			char c = (char)va_arg(ap, int);

			out_str(&o, &c, 1, width, left);
			break;
		}
		case 's': {
			const char *s = va_arg(ap, const char *);
			size_t n;

			if (!s)
				s = "(null)";
			n = strlen(s);
			if (prec >= 0 && (size_t)prec < n)
				n = (size_t)prec;
			out_str(&o, s, n, width, left);
			break;
		}
		case '%':
			out_char(&o, '%');
			break;
		case '\0':
			fmt--;
			break;
		default:
			out_char(&o, '%');
			out_char(&o, *fmt);
			break;
		}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = '\0';
	return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return r;
}

int vprintf(const char *fmt, va_list ap)
{
	char buf[512];
	int r;
	va_list aq;

	va_copy(aq, ap);
	r = vsnprintf(buf, sizeof(buf), fmt, aq);
	va_end(aq);
	uk_console_write(buf, r < (int)sizeof(buf) ? (size_t)r
						   : sizeof(buf) - 1);
	return r;
}

int printf(const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vprintf(fmt, ap);
	va_end(ap);
	return r;
}

int putchar(int c)
{
	char ch = (char)c;

	uk_console_write(&ch, 1);
	return (unsigned char)c;
}

int puts(const char *s)
{
	uk_console_write(s, strlen(s));
	uk_console_write("\n", 1);
	return 0;
}
