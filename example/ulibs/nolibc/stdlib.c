/* nolibc: malloc and friends over ukalloc, exit/abort over the platform. */
#include <stdlib.h>
#include <string.h>
#include <uk/alloc.h>
#include <uk/console.h>
#include <uk/plat.h>

void *malloc(size_t size)
{
	return uk_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	return uk_calloc(n, size);
}

void *realloc(void *ptr, size_t size)
{
	return uk_realloc(ptr, size);
}

void free(void *ptr)
{
	uk_free(ptr);
}

int abs(int v)
{
	return v < 0 ? -v : v;
}

void exit(int code)
{
	uk_console_flush();
	ukplat_terminate(code);
}

void abort(void)
{
	uk_console_write("abort()\n", 8);
	exit(134);
}

#ifdef NOLIBC_FULL
static int digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	return 99;
}

unsigned long strtoul(const char *s, char **end, int base)
{
	unsigned long v = 0;
	int d;

	while (*s == ' ' || *s == '\t' || *s == '\n')
		s++;
	if (*s == '+')
		s++;
	if ((base == 0 || base == 16) && s[0] == '0'
	    && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
		base = 16;
	} else if (base == 0) {
		base = *s == '0' ? 8 : 10;
	}
	while ((d = digit_value(*s)) < base) {
		v = v * (unsigned long)base + (unsigned long)d;
		s++;
	}
	if (end)
		*end = (char *)s;
	return v;
}

long strtol(const char *s, char **end, int base)
{
	int neg = 0;

	while (*s == ' ' || *s == '\t' || *s == '\n')
		s++;
	if (*s == '-') {
		neg = 1;
		s++;
	}
	return neg ? -(long)strtoul(s, end, base) : (long)strtoul(s, end, base);
}

int atoi(const char *s)
{
	return (int)strtol(s, NULL, 10);
}
#endif /* NOLIBC_FULL */
