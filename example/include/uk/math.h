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

#endif
