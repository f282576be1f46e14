/* uksort: generic introsort and an LSD radix sort for 32-bit keys. */
#ifndef UK_SORT_H
#define UK_SORT_H

#include <uk/essentials.h>

typedef int (*uk_cmp_func_t)(const void *a, const void *b);

void uk_qsort(void *base, size_t n, size_t size, uk_cmp_func_t cmp);
void uk_radix_sort_u32(uint32_t *a, size_t n, uint32_t *tmp);
int uk_is_sorted(const void *base, size_t n, size_t size, uk_cmp_func_t cmp);
int uk_cmp_u32(const void *a, const void *b);
size_t uk_bsearch_u32(const uint32_t *a, size_t n, uint32_t key);

#endif
