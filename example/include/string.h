/* String and memory functions provided by the nolibc micro-library. */
#ifndef EXAMPLE_STRING_H
#define EXAMPLE_STRING_H

#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strcpy(char *dst, const char *src);

#if defined(NOLIBC_FULL) || defined(NOLIBC_FULL_API)
/* Only present in nolibc built with -DNOLIBC_FULL. */
char *strchr(const char *s, int c);
char *strstr(const char *haystack, const char *needle);
size_t strnlen(const char *s, size_t max);
char *strtok_r(char *s, const char *delim, char **save);
#endif

#endif
