/*
 * ukcompress: LZSS.
 *
 * Stream: 4-byte little-endian original length, then groups of one flag
 * byte followed by up to 8 items. Flag bit i (LSB first) set = literal byte,
 * clear = match of two bytes, little-endian 16-bit value
 * ((distance - 1) << 4) | (length - MIN_MATCH), with distance 1..4096 and
 * length MIN_MATCH..MAX_MATCH. The encoder finds matches through hash chains
 * over 3-byte prefixes (tables from ukalloc), trying at most MAX_CHAIN
 * candidates, and takes the longest, nearest first.
 */
#include <uk/compress.h>
#include <uk/alloc.h>
#include <uk/init.h>
#include <uk/console.h>
#include <uk/libinfo.h>
#include <string.h>

#define WINDOW      4096
#define MIN_MATCH   3
#define MAX_MATCH   18
#define HASH_BITS   12
#define HASH_SIZE   (1 << HASH_BITS)
#define MAX_CHAIN   48
#define NIL         (-1)

UK_LIB_INFO("ukcompress", "0.17", "BSD-3-Clause");

static inline unsigned int hash3(const uint8_t *p)
{
	uint32_t v = ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];

	return (v * 2654435761U) >> (32 - HASH_BITS);
}

long uk_lzss_compress(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	int32_t *head, *prev;
	size_t ip = 0, op = 4, flag_pos = 0;
	unsigned int bit = 8;
	long ret = -1;

	if (cap < 4 || n > 0xffffffffUL)
		return -1;
	head = uk_malloc(sizeof(int32_t) * HASH_SIZE);
	prev = uk_malloc(sizeof(int32_t) * WINDOW);
	if (!head || !prev)
		goto out;
	memset(head, 0xff, sizeof(int32_t) * HASH_SIZE);   /* NIL */

	out[0] = (uint8_t)n;
	out[1] = (uint8_t)(n >> 8);
	out[2] = (uint8_t)(n >> 16);
	out[3] = (uint8_t)(n >> 24);

	while (ip < n) {
		size_t best_len = 0, best_dist = 0, adv, k;

		if (bit == 8) {
			if (op >= cap)
				goto out;
			flag_pos = op++;
			out[flag_pos] = 0;
			bit = 0;
		}
		if (ip + MIN_MATCH <= n) {
			int32_t cand = head[hash3(in + ip)];
			unsigned int chain = 0;
			size_t maxlen = MIN(n - ip, (size_t)MAX_MATCH);

			while (cand != NIL && chain++ < MAX_CHAIN
			       && ip - (size_t)cand <= WINDOW) {
				const uint8_t *a = in + cand, *b = in + ip;
				size_t l = 0;

				while (l < maxlen && a[l] == b[l])
					l++;
				if (l > best_len) {
					best_len = l;
					best_dist = ip - (size_t)cand;
					if (l == maxlen)
						break;
				}
				cand = prev[cand % WINDOW];
			}
		}
		if (best_len >= MIN_MATCH) {
			uint16_t v = (uint16_t)(((best_dist - 1) << 4)
						| (best_len - MIN_MATCH));

			if (op + 2 > cap)
				goto out;
			out[op++] = (uint8_t)v;
			out[op++] = (uint8_t)(v >> 8);
			adv = best_len;
		} else {
			if (op + 1 > cap)
				goto out;
			out[flag_pos] |= (uint8_t)(1U << bit);
			out[op++] = in[ip];
			adv = 1;
		}
		bit++;
		/* Insert every position we step over into the hash chains. */
		for (k = 0; k < adv; k++, ip++) {
			if (ip + MIN_MATCH <= n) {
				unsigned int h = hash3(in + ip);

				prev[ip % WINDOW] = head[h];
				head[h] = (int32_t)ip;
			}
		}
	}
	ret = (long)op;
out:
	uk_free(prev);
	uk_free(head);
	return ret;
}

long uk_lzss_decompress(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t ip = 4, op = 0, total;
	unsigned int bit = 8;
	uint8_t flags = 0;

	if (n < 4)
		return -1;
	total = (size_t)in[0] | ((size_t)in[1] << 8) | ((size_t)in[2] << 16)
	      | ((size_t)in[3] << 24);
	if (total > cap)
		return -1;
	while (op < total) {
		if (bit == 8) {
			if (ip >= n)
				return -1;
			flags = in[ip++];
			bit = 0;
		}
		if (flags & (1U << bit)) {
			if (ip >= n)
				return -1;
			out[op++] = in[ip++];
		} else {
			uint16_t v;
			size_t dist, len;

			if (ip + 2 > n)
				return -1;
			v = (uint16_t)(in[ip] | (in[ip + 1] << 8));
			ip += 2;
			dist = (size_t)(v >> 4) + 1;
			len = (size_t)(v & 15) + MIN_MATCH;
			if (dist > op || op + len > total)
				return -1;
			while (len--) {
				out[op] = out[op - dist];
				op++;
			}
		}
		bit++;
	}
	return (long)op;
}

static int ukcompress_selftest(void)
{
	static const char text[] =
		"abcabcabcabcabcabc, the rain in spain stays mainly in the plain";
	uint8_t packed[UK_LZSS_BOUND(sizeof(text))];
	uint8_t unpacked[sizeof(text)];
	long c, d;

	c = uk_lzss_compress((const uint8_t *)text, sizeof(text), packed,
			     sizeof(packed));
	d = c < 0 ? -1 : uk_lzss_decompress(packed, (size_t)c, unpacked,
					      sizeof(unpacked));
	if (d != (long)sizeof(text) || memcmp(text, unpacked, sizeof(text))) {
		uk_pr_info("LZSS self-test FAILED\n");
		return -1;
	}
	uk_pr_info("self-test ok (%ld -> %ld bytes)\n", (long)sizeof(text), c);
	return 0;
}
uk_lib_initcall(ukcompress_selftest, 2);
