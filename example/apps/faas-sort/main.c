/* faas-sort: sorts 100000 pseudo-random keys two ways and some words. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uk/sort.h>

#define N 100000
#define NWORDS 500

static uint32_t lcg = 42;

static uint32_t next(void)
{
	lcg = lcg * 1664525U + 1013904223U;
	return lcg;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc __unused, char *argv[] __unused)
{
	uint32_t *a = malloc(N * sizeof(uint32_t));
	uint32_t *b = malloc(N * sizeof(uint32_t));
	uint32_t *tmp = malloc(N * sizeof(uint32_t));
	char **words = malloc(NWORDS * sizeof(char *));
	uint64_t weighted = 0;
	unsigned int i, j, distinct = 0;

	if (!a || !b || !tmp || !words)
		return 1;
	printf("faas-sort: start\n");
	for (i = 0; i < N; i++)
		a[i] = b[i] = next() >> 8;   /* 24-bit keys: duplicates occur */

	uk_qsort(a, N, sizeof(uint32_t), uk_cmp_u32);
	uk_radix_sort_u32(b, N, tmp);
	printf("sorted: %s, agree: %s\n",
	       uk_is_sorted(a, N, sizeof(uint32_t), uk_cmp_u32) ? "yes" : "no",
	       memcmp(a, b, N * sizeof(uint32_t)) ? "no" : "yes");
	for (i = 0; i < N; i++) {
		weighted += (uint64_t)a[i] * (i + 1);
		if (i == 0 || a[i] != a[i - 1])
			distinct++;
	}
	printf("min %u median %u max %u distinct %u\n", a[0], a[N / 2],
	       a[N - 1], distinct);
	printf("weighted sum %llx\n", (unsigned long long)weighted);
	printf("rank of 8388608: %u\n",
	       (unsigned int)uk_bsearch_u32(a, N, 8388608U));

	/* Words of 3..8 letters. */
	for (i = 0; i < NWORDS; i++) {
		unsigned int len = 3 + next() % 6;

		words[i] = malloc(len + 1);
		if (!words[i])
			return 1;
		for (j = 0; j < len; j++)
			words[i][j] = (char)('a' + (next() >> 16) % 26);
		words[i][len] = '\0';
	}
	uk_qsort(words, NWORDS, sizeof(char *), cmp_str);
	printf("words: first %s, last %s, sorted: %s\n", words[0],
	       words[NWORDS - 1],
	       uk_is_sorted(words, NWORDS, sizeof(char *), cmp_str) ? "yes"
								    : "no");
	for (i = 0; i < NWORDS; i++)
		free(words[i]);
	free(words);
	free(tmp);
	free(b);
	free(a);
	printf("faas-sort: done\n");
	return 0;
}
