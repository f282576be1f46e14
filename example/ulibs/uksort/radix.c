/* uksort: LSD radix sort, 8 bits per pass, for 32-bit unsigned keys. */
#include <uk/sort.h>
#include <uk/init.h>
#include <uk/console.h>
#include <string.h>

void uk_radix_sort_u32(uint32_t *a, size_t n, uint32_t *tmp)
{
	size_t count[256];
	unsigned int shift;
	uint32_t *src = a, *dst = tmp, *t;
	size_t i, sum;

	for (shift = 0; shift < 32; shift += 8) {
		memset(count, 0, sizeof(count));
		for (i = 0; i < n; i++)
			count[(src[i] >> shift) & 0xff]++;
		for (i = 0, sum = 0; i < 256; i++) {
			size_t c = count[i];

			count[i] = sum;
			sum += c;
		}
		for (i = 0; i < n; i++)
			dst[count[(src[i] >> shift) & 0xff]++] = src[i];
		t = src;
		src = dst;
		dst = t;
	}
	/* Four passes: the result is back in a. */
}

static int uksort_selftest(void)
{
	uint32_t v[40], w[40], tmp[40];
	uint32_t x = 12345;
	unsigned int i;

	for (i = 0; i < 40; i++) {
		x = x * 1103515245U + 12345U;
		v[i] = w[i] = x;
	}
	uk_qsort(v, 40, sizeof(v[0]), uk_cmp_u32);
	uk_radix_sort_u32(w, 40, tmp);
	for (i = 0; i < 40; i++)
		if (v[i] != w[i])
			return -1;
	if (!uk_is_sorted(v, 40, sizeof(v[0]), uk_cmp_u32))
		return -1;
	uk_pr_info("self-test ok\n");
	return 0;
}
uk_lib_initcall(uksort_selftest, 3);
