/* faas-sha: SHA-256 and CRC-32 of a few well-known inputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uk/hash.h>

static const char *const vectors[] = {
	"",
	"abc",
	"The quick brown fox jumps over the lazy dog",
	"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
};

int main(int argc __unused, char *argv[] __unused)
{
	uint8_t d[UK_SHA256_DIGEST_LEN];
	char hex[2 * UK_SHA256_DIGEST_LEN + 1];
	struct uk_sha256 ctx;
	uint8_t *chunk;
	unsigned int i;
	uint32_t crc = 0;

	printf("faas-sha: start\n");
	for (i = 0; i < ARRAY_SIZE(vectors); i++) {
		uk_sha256(vectors[i], strlen(vectors[i]), d);
		printf("sha256(\"%s\") = %s\n", vectors[i],
		       uk_hex(hex, d, sizeof(d)));
	}

	/* One million 'a', fed in 1000-byte chunks. */
	chunk = malloc(1000);
	if (!chunk)
		return 1;
	memset(chunk, 'a', 1000);
	uk_sha256_init(&ctx);
	for (i = 0; i < 1000; i++) {
		uk_sha256_update(&ctx, chunk, 1000);
		crc = uk_crc32(crc, chunk, 1000);
	}
	uk_sha256_final(&ctx, d);
	free(chunk);
	printf("sha256(1M x 'a') = %s\n", uk_hex(hex, d, sizeof(d)));
	printf("crc32(1M x 'a') = %08x\n", crc);
	printf("crc32(\"%s\") = %08x\n", vectors[2],
	       uk_crc32(0, vectors[2], strlen(vectors[2])));
	printf("faas-sha: done\n");
	return 0;
}
