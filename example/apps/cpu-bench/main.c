/*
 * cpu-bench: a CPU-bound SHA-256 chain, for timing the same work on
 * differently laid out images. digest_0 = SHA-256(seed),
 * digest_i = SHA-256(digest_{i-1}).
 */
#include <stdio.h>
#include <string.h>
#include <uk/hash.h>
#include <uk/plat.h>

#ifndef CPU_BENCH_ROUNDS
#define CPU_BENCH_ROUNDS 600000
#endif

int main(int argc __unused, char *argv[] __unused)
{
	static const char seed[] = "lib-spacer cpu-bench";
	uint8_t d[UK_SHA256_DIGEST_LEN];
	char hex[2 * UK_SHA256_DIGEST_LEN + 1];
	unsigned long i;

	printf("cpu-bench: start, %u rounds\n", CPU_BENCH_ROUNDS);
	uk_sha256(seed, strlen(seed), d);
	for (i = 1; i < CPU_BENCH_ROUNDS; i++)
		uk_sha256(d, sizeof(d), d);
	printf("cpu-bench: digest %s\n", uk_hex(hex, d, sizeof(d)));
	printf("cpu-bench: done\n");
	return 0;
}
