/* A few <stdlib.h> functions provided by nolibc (memory comes from ukalloc). */
#ifndef EXAMPLE_STDLIB_H
#define EXAMPLE_STDLIB_H

#include <stddef.h>

void *malloc(size_t size);
void *calloc(size_t n, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
int abs(int v);
void abort(void) __attribute__((noreturn));
void exit(int code) __attribute__((noreturn));

#if defined(NOLIBC_FULL) || defined(NOLIBC_FULL_API)
/* Only present in nolibc built with -DNOLIBC_FULL. */
unsigned long strtoul(const char *s, char **end, int base);
long strtol(const char *s, char **end, int base);
int atoi(const char *s);
#endif

#endif
