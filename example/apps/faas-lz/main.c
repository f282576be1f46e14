/* faas-lz: LZSS and RLE round trips over generated text and runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uk/compress.h>
#include <uk/hash.h>

#define TEXT_SIZE 65536
#define RUNS_SIZE 16384

static const char *const vocab[] = {
	"unikernel", "page", "library", "kernel", "memory", "the", "of",
	"share", "merge", "layout", "image", "a", "linker", "section",
	"dedup", "qemu",
};

static uint32_t lcg = 7;

static uint32_t next(void)
{
	lcg = lcg * 1103515245U + 12345U;
	return (lcg >> 16) & 0x7fff;
}

int main(int argc __unused, char *argv[] __unused)
{
	uint8_t *text = malloc(TEXT_SIZE);
	uint8_t *packed = malloc(UK_LZSS_BOUND(TEXT_SIZE));
	uint8_t *back = malloc(TEXT_SIZE);
	size_t n = 0, words = 0;
	long c, d;

	if (!text || !packed || !back)
		return 1;
	printf("faas-lz: start\n");
	while (n < TEXT_SIZE) {
		const char *w = vocab[next() % ARRAY_SIZE(vocab)];
		size_t l = strlen(w);

		if (n + l + 1 > TEXT_SIZE)
			break;
		memcpy(text + n, w, l);
		n += l;
		text[n++] = (++words % 12) ? ' ' : '\n';
	}
	printf("text: %u bytes, %u words, crc32 %08x\n", (unsigned int)n,
	       (unsigned int)words, uk_crc32(0, text, n));

	c = uk_lzss_compress(text, n, packed, UK_LZSS_BOUND(TEXT_SIZE));
	d = c < 0 ? -1 : uk_lzss_decompress(packed, (size_t)c, back, TEXT_SIZE);
	printf("lzss: %ld bytes, crc32 %08x, roundtrip %s\n", c,
	       c < 0 ? 0 : uk_crc32(0, packed, (size_t)c),
	       d == (long)n && !memcmp(text, back, n) ? "ok" : "FAILED");

	/* Runs of random length 1..64 of random bytes from a small alphabet. */
	for (n = 0; n < RUNS_SIZE;) {
		size_t run = 1 + next() % 64;
		uint8_t v = (uint8_t)('A' + next() % 4);

		while (run-- && n < RUNS_SIZE)
			text[n++] = v;
	}
	c = uk_rle_compress(text, n, packed, UK_LZSS_BOUND(TEXT_SIZE));
	d = c < 0 ? -1 : uk_rle_decompress(packed, (size_t)c, back, TEXT_SIZE);
	printf("rle: %u -> %ld bytes, crc32 %08x, roundtrip %s\n",
	       (unsigned int)n, c, c < 0 ? 0 : uk_crc32(0, packed, (size_t)c),
	       d == (long)n && !memcmp(text, back, n) ? "ok" : "FAILED");
	c = uk_lzss_compress(text, n, packed, UK_LZSS_BOUND(TEXT_SIZE));
	printf("lzss(runs): %ld bytes\n", c);

	free(back);
	free(packed);
	free(text);
	printf("faas-lz: done\n");
	return 0;
}
