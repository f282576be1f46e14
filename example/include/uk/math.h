/* ukmath: integer number theory helpers. */
#ifndef UK_MATH_H
#define UK_MATH_H

#include <uk/essentials.h>

uint64_t uk_isqrt(uint64_t v);
uint64_t uk_gcd(uint64_t a, uint64_t b);
uint64_t uk_mulmod(uint64_t a, uint64_t b, uint64_t m);
uint64_t uk_powmod(uint64_t b, uint64_t e, uint64_t m);
int uk_is_prime(uint64_t n);
/* Sieve of Eratosthenes below n; returns the count and the sum of primes. */
size_t uk_sieve(uint32_t n, uint64_t *sum);
uint64_t uk_fib_mod(uint64_t n, uint64_t m);
/* Hand-written (dispatch.S): 0 a+b, 1 a-b, 2 a*b, 3 gcd, 4 strlen((char *)a), 5 a checksum; else 0. */
uint64_t uk_math_op(unsigned int op, uint64_t a, uint64_t b);

#endif
