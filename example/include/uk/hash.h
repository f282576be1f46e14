/* ukhash: SHA-256 and CRC-32. */
#ifndef UK_HASH_H
#define UK_HASH_H

#include <uk/essentials.h>

#define UK_SHA256_DIGEST_LEN 32

struct uk_sha256 {
	uint32_t state[8];
	uint64_t bytes;
	uint8_t buf[64];
	uint32_t buflen;
};

void uk_sha256_init(struct uk_sha256 *ctx);
void uk_sha256_update(struct uk_sha256 *ctx, const void *data, size_t len);
void uk_sha256_final(struct uk_sha256 *ctx, uint8_t out[UK_SHA256_DIGEST_LEN]);
void uk_sha256(const void *data, size_t len, uint8_t out[UK_SHA256_DIGEST_LEN]);

uint32_t uk_crc32(uint32_t crc, const void *data, size_t len);

/* Writes 2*len hex digits and a NUL into out. */
char *uk_hex(char *out, const uint8_t *in, size_t len);

#endif
