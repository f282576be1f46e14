/*
 * ukcompress: run-length encoding. Control byte c < 0x80: c + 1 literal
 * bytes follow; c >= 0x80: the next byte repeats c - 0x7e times (2..129).
 */
#include <uk/compress.h>

long uk_rle_compress(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t ip = 0, op = 0;

	while (ip < n) {
		size_t run = 1;

		while (ip + run < n && run < 129 && in[ip + run] == in[ip])
			run++;
		if (run >= 2) {
			if (op + 2 > cap)
				return -1;
			out[op++] = (uint8_t)(0x7e + run);
			out[op++] = in[ip];
			ip += run;
		} else {
			size_t lit = 1;

			while (ip + lit < n && lit < 128
			       && !(ip + lit + 1 < n
				    && in[ip + lit] == in[ip + lit + 1]))
				lit++;
			if (op + 1 + lit > cap)
				return -1;
			out[op++] = (uint8_t)(lit - 1);
			while (lit--)
				out[op++] = in[ip++];
		}
	}
	return (long)op;
}

long uk_rle_decompress(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t ip = 0, op = 0;

	while (ip < n) {
		uint8_t c = in[ip++];

		if (c < 0x80) {
			size_t lit = (size_t)c + 1;

			if (ip + lit > n || op + lit > cap)
				return -1;
			while (lit--)
				out[op++] = in[ip++];
		} else {
			size_t run = (size_t)c - 0x7e;

			if (ip >= n || op + run > cap)
				return -1;
			while (run--)
				out[op++] = in[ip];
			ip++;
		}
	}
	return (long)op;
}
