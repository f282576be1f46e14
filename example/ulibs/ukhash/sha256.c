/* ukhash: SHA-256 (FIPS 180-4). */
#include <uk/hash.h>
#include <uk/init.h>
#include <uk/console.h>
#include <uk/libinfo.h>
#include <string.h>

UK_LIB_INFO("ukhash", "0.17", "BSD-3-Clause");

/* First 32 bits of the fractional parts of the cube roots of the first 64 primes. */
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5,
	0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
	0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
	0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5,
	0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* First 32 bits of the fractional parts of the square roots of the first 8 primes. */
static const uint32_t H0[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static inline uint32_t ror32(uint32_t x, unsigned int n)
{
	return (x >> n) | (x << (32 - n));
}

static void sha256_block(uint32_t st[8], const uint8_t *p)
{
	uint32_t w[64];
	uint32_t a, b, c, d, e, f, g, h;
	unsigned int i;

	for (i = 0; i < 16; i++)
		w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16)
		     | ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18)
			    ^ (w[i - 15] >> 3);
		uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19)
			    ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = st[0]; b = st[1]; c = st[2]; d = st[3];
	e = st[4]; f = st[5]; g = st[6]; h = st[7];
	for (i = 0; i < 64; i++) {
		uint32_t S1 = ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = h + S1 + ch + K[i] + w[i];
		uint32_t S0 = ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = S0 + maj;

		h = g; g = f; f = e; e = d + t1;
		d = c; c = b; b = a; a = t1 + t2;
	}
	st[0] += a; st[1] += b; st[2] += c; st[3] += d;
	st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

void uk_sha256_init(struct uk_sha256 *ctx)
{
	memcpy(ctx->state, H0, sizeof(H0));
	ctx->bytes = 0;
	ctx->buflen = 0;
}

void uk_sha256_update(struct uk_sha256 *ctx, const void *data, size_t len)
{
	const uint8_t *p = data;

	ctx->bytes += len;
	if (ctx->buflen) {
		size_t take = MIN(len, 64 - (size_t)ctx->buflen);

		memcpy(ctx->buf + ctx->buflen, p, take);
		ctx->buflen += (uint32_t)take;
		p += take;
		len -= take;
		if (ctx->buflen < 64)
			return;
		sha256_block(ctx->state, ctx->buf);
		ctx->buflen = 0;
	}
	while (len >= 64) {
		sha256_block(ctx->state, p);
		p += 64;
		len -= 64;
	}
	if (len) {
		memcpy(ctx->buf, p, len);
		ctx->buflen = (uint32_t)len;
	}
}

void uk_sha256_final(struct uk_sha256 *ctx, uint8_t out[UK_SHA256_DIGEST_LEN])
{
	uint64_t bits = ctx->bytes * 8;
	unsigned int i;

	ctx->buf[ctx->buflen++] = 0x80;
	if (ctx->buflen > 56) {
		memset(ctx->buf + ctx->buflen, 0, 64 - ctx->buflen);
		sha256_block(ctx->state, ctx->buf);
		ctx->buflen = 0;
	}
	memset(ctx->buf + ctx->buflen, 0, 56 - ctx->buflen);
	for (i = 0; i < 8; i++)
		ctx->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
	sha256_block(ctx->state, ctx->buf);
	for (i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(ctx->state[i] >> 24);
		out[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
		out[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
		out[4 * i + 3] = (uint8_t)ctx->state[i];
	}
}

void uk_sha256(const void *data, size_t len, uint8_t out[UK_SHA256_DIGEST_LEN])
{
	struct uk_sha256 ctx;

	uk_sha256_init(&ctx);
	uk_sha256_update(&ctx, data, len);
	uk_sha256_final(&ctx, out);
}

char *uk_hex(char *out, const uint8_t *in, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
	return out;
}

/* Known answer: SHA-256("abc"). */
static const uint8_t abc_digest[32] = {
	0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
	0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
	0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
	0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
};

static int ukhash_selftest(void)
{
	uint8_t d[32];

	uk_sha256("abc", 3, d);
	if (memcmp(d, abc_digest, sizeof(d))) {
		uk_pr_info("SHA-256 self-test FAILED\n");
		return -1;
	}
	if (uk_crc32(0, "123456789", 9) != 0xcbf43926U) {
		uk_pr_info("CRC-32 self-test FAILED\n");
		return -1;
	}
	uk_pr_info("self-test ok\n");
	return 0;
}
uk_lib_initcall(ukhash_selftest, 1);
