/* ukmath: integer number theory. */
#include <uk/math.h>
#include <uk/alloc.h>
#include <uk/init.h>
#include <uk/console.h>
#include <uk/libinfo.h>
#include <string.h>

UK_LIB_INFO("ukmath", "0.17", "BSD-3-Clause");

uint64_t uk_isqrt(uint64_t v)
{
	uint64_t r = 0, bit = 1ULL << 62;

	while (bit > v)
		bit >>= 2;
	while (bit) {
		if (v >= r + bit) {
			v -= r + bit;
			r = (r >> 1) + bit;
		} else {
			r >>= 1;
		}
		bit >>= 2;
	}
	return r;
}

uint64_t uk_gcd(uint64_t a, uint64_t b)
{
	unsigned int shift;

	if (!a)
		return b;
	if (!b)
		return a;
	shift = (unsigned int)__builtin_ctzll(a | b);
	a >>= __builtin_ctzll(a);
	do {
		b >>= __builtin_ctzll(b);
		if (a > b) {
			uint64_t t = a;

			a = b;
			b = t;
		}
		b -= a;
	} while (b);
	return a << shift;
}

/* (a * b) mod m with a 128-bit product: mul then div (a, b < m). */
uint64_t uk_mulmod(uint64_t a, uint64_t b, uint64_t m)
{
	uint64_t hi, lo, q, r;

	a %= m;
	b %= m;
	__asm__("mulq %3" : "=a"(lo), "=d"(hi) : "a"(a), "rm"(b));
	__asm__("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(m));
	(void)q;
	return r;
}

uint64_t uk_powmod(uint64_t b, uint64_t e, uint64_t m)
{
	uint64_t r = 1 % m;

	b %= m;
	while (e) {
		if (e & 1)
			r = uk_mulmod(r, b, m);
		b = uk_mulmod(b, b, m);
		e >>= 1;
	}
	return r;
}

/* Deterministic Miller-Rabin for 64-bit integers. */
int uk_is_prime(uint64_t n)
{
	static const uint64_t bases[] = { 2, 3, 5, 7, 11, 13, 17, 19, 23, 29,
					  31, 37 };
	uint64_t d;
	unsigned int s = 0, i, j;

	if (n < 2)
		return 0;
	for (i = 0; i < ARRAY_SIZE(bases); i++) {
		if (n == bases[i])
			return 1;
		if (n % bases[i] == 0)
			return 0;
	}
	d = n - 1;
	while (!(d & 1)) {
		d >>= 1;
		s++;
	}
	for (i = 0; i < ARRAY_SIZE(bases); i++) {
		uint64_t x = uk_powmod(bases[i], d, n);

		if (x == 1 || x == n - 1)
			continue;
		for (j = 1; j < s; j++) {
			x = uk_mulmod(x, x, n);
			if (x == n - 1)
				break;
		}
		if (j == s)
			return 0;
	}
	return 1;
}

size_t uk_sieve(uint32_t n, uint64_t *sum)
{
	uint8_t *composite;
	size_t count = 0;
	uint64_t s = 0;
	uint32_t i, j;

	if (n < 3) {
		*sum = 0;
		return 0;
	}
	composite = uk_calloc(n / 8 + 1, 1);
	if (!composite) {
		*sum = 0;
		return 0;
	}
	for (i = 2; i < n; i++) {
		if (composite[i >> 3] & (1U << (i & 7)))
			continue;
		count++;
		s += i;
		if ((uint64_t)i * i < n)
			for (j = i * i; j < n; j += i)
				composite[j >> 3] |= (uint8_t)(1U << (j & 7));
	}
	uk_free(composite);
	*sum = s;
	return count;
}

/* Fibonacci numbers modulo m by fast doubling. */
uint64_t uk_fib_mod(uint64_t n, uint64_t m)
{
	uint64_t a = 0, b = 1 % m;   /* F(k), F(k+1) */
	int bit;

	for (bit = 63; bit >= 0; bit--) {
		uint64_t c = uk_mulmod(a, (2 * b + m - a) % m, m); /* F(2k) */
		uint64_t d = (uk_mulmod(a, a, m) + uk_mulmod(b, b, m)) % m;

		if ((n >> bit) & 1) {
			a = d;
			b = (c + d) % m;
		} else {
			a = c;
			b = d;
		}
	}
	return a;
}

static int ukmath_selftest(void)
{
	if (uk_isqrt(1000000) != 1000 || uk_gcd(1071, 462) != 21
	    || !uk_is_prime(1000000007ULL) || uk_is_prime(561)
	    || uk_fib_mod(10, 1000) != 55
	    /* The hand-written dispatcher: jump table and constants inside .text. */
	    || uk_math_op(0, 40, 2) != 42 || uk_math_op(1, 40, 2) != 38
	    || uk_math_op(2, 6, 7) != 42 || uk_math_op(3, 1071, 462) != 21
	    || uk_math_op(4, (uint64_t)(uintptr_t)"sixteen", 0) != 7
	    || uk_math_op(5, 0, 0) != 0x9e3779b97f4a7c15ULL + 0x0123456789abcdefULL
	    || uk_math_op(6, 1, 1) != 0) {
		uk_pr_info("self-test FAILED\n");
		return -1;
	}
	uk_pr_info("self-test ok\n");
	return 0;
}
uk_lib_initcall(ukmath_selftest, 4);
