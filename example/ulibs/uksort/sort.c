/*
 * uksort: introsort (median-of-three quicksort, insertion sort for short
 * ranges, heapsort when the recursion gets too deep) over elements of any
 * size, and an LSD radix sort for 32-bit keys.
 */
#include <uk/sort.h>
#include <uk/init.h>
#include <uk/console.h>
#include <uk/libinfo.h>
#include <string.h>

#define INSERTION_LIMIT 16

UK_LIB_INFO("uksort", "0.17", "BSD-3-Clause");

static inline void swap_elems(uint8_t *a, uint8_t *b, size_t size)
{
	if (a == b)
		return;
	if (size == 4 && !(((uintptr_t)a | (uintptr_t)b) & 3)) {
		uint32_t t = *(uint32_t *)(void *)a;

		*(uint32_t *)(void *)a = *(uint32_t *)(void *)b;
		*(uint32_t *)(void *)b = t;
		return;
	}
	while (size--) {
		uint8_t t = *a;

		*a++ = *b;
		*b++ = t;
	}
}

static void insertion_sort(uint8_t *base, size_t n, size_t size,
			   uk_cmp_func_t cmp)
{
	size_t i, j;

	for (i = 1; i < n; i++)
		for (j = i; j > 0 && cmp(base + (j - 1) * size,
					 base + j * size) > 0; j--)
			swap_elems(base + (j - 1) * size, base + j * size, size);
}

static void sift_down(uint8_t *base, size_t root, size_t n, size_t size,
		      uk_cmp_func_t cmp)
{
	for (;;) {
		size_t child = 2 * root + 1;

		if (child >= n)
			return;
		if (child + 1 < n && cmp(base + child * size,
					 base + (child + 1) * size) < 0)
			child++;
		if (cmp(base + root * size, base + child * size) >= 0)
			return;
		swap_elems(base + root * size, base + child * size, size);
		root = child;
	}
}

static void heap_sort(uint8_t *base, size_t n, size_t size, uk_cmp_func_t cmp)
{
	size_t i;

	for (i = n / 2; i-- > 0;)
		sift_down(base, i, n, size, cmp);
	for (i = n; i-- > 1;) {
		swap_elems(base, base + i * size, size);
		sift_down(base, 0, i, size, cmp);
	}
}

static void intro_sort(uint8_t *base, size_t n, size_t size,
		       uk_cmp_func_t cmp, unsigned int depth)
{
	while (n > INSERTION_LIMIT) {
		uint8_t *lo = base, *mid = base + (n / 2) * size;
		uint8_t *hi = base + (n - 1) * size;
		size_t i, j;

		if (depth-- == 0) {
			heap_sort(base, n, size, cmp);
			return;
		}
		/* Median of three, moved to the front as the pivot. */
		if (cmp(mid, lo) < 0)
			swap_elems(mid, lo, size);
		if (cmp(hi, lo) < 0)
			swap_elems(hi, lo, size);
		if (cmp(hi, mid) < 0)
			swap_elems(hi, mid, size);
		swap_elems(lo, mid, size);

		/* Hoare partition around base[0]. */
		i = 0;
		j = n;
		for (;;) {
			do
				i++;
			while (i < n && cmp(base + i * size, base) < 0);
			do
				j--;
			while (cmp(base + j * size, base) > 0);
			if (i >= j)
				break;
			swap_elems(base + i * size, base + j * size, size);
		}
		swap_elems(base, base + j * size, size);

		/* Recurse into the smaller side, loop over the larger. */
		if (j < n - j - 1) {
			intro_sort(base, j, size, cmp, depth);
			base += (j + 1) * size;
			n -= j + 1;
		} else {
			intro_sort(base + (j + 1) * size, n - j - 1, size, cmp,
				   depth);
			n = j;
		}
	}
	insertion_sort(base, n, size, cmp);
}

void uk_qsort(void *base, size_t n, size_t size, uk_cmp_func_t cmp)
{
	unsigned int depth = 0;
	size_t m;

	for (m = n; m; m >>= 1)
		depth += 2;
	intro_sort(base, n, size, cmp, depth);
}

int uk_is_sorted(const void *base, size_t n, size_t size, uk_cmp_func_t cmp)
{
	const uint8_t *p = base;
	size_t i;

	for (i = 1; i < n; i++)
		if (cmp(p + (i - 1) * size, p + i * size) > 0)
			return 0;
	return 1;
}

int uk_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

size_t uk_bsearch_u32(const uint32_t *a, size_t n, uint32_t key)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (a[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}
