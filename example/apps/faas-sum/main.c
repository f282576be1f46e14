/* faas-sum: number theory sums and checks. */
#include <stdio.h>
#include <uk/math.h>

#define MOD 1000000007ULL

int main(int argc __unused, char *argv[] __unused)
{
	uint64_t sum, squares = 0, x;
	size_t count;
	unsigned int i, window = 0;

	printf("faas-sum: start\n");
	count = uk_sieve(2000000, &sum);
	printf("primes below 2000000: %u, sum %llu\n", (unsigned int)count,
	       (unsigned long long)sum);
	for (x = 1000000000000ULL; x < 1000000000000ULL + 1000; x++)
		window += uk_is_prime(x);
	printf("primes in [10^12, 10^12+1000): %u\n", window);
	printf("2^61-1 prime: %d, 2^61+1 prime: %d\n",
	       uk_is_prime((1ULL << 61) - 1), uk_is_prime((1ULL << 61) + 1));
	printf("isqrt(10^18) = %llu, isqrt(2^64-1) = %llu\n",
	       (unsigned long long)uk_isqrt(1000000000000000000ULL),
	       (unsigned long long)uk_isqrt(~0ULL));
	printf("gcd(2^40*3^5, 2^12*3^9*7) = %llu\n",
	       (unsigned long long)uk_gcd((1ULL << 40) * 243,
					  (1ULL << 12) * 19683 * 7));
	printf("2^(10^18) mod p = %llu\n",
	       (unsigned long long)uk_powmod(2, 1000000000000000000ULL, MOD));
	printf("fib(10^15) mod p = %llu\n",
	       (unsigned long long)uk_fib_mod(1000000000000000ULL, MOD));
	for (i = 1; i <= 100000; i++)
		squares += (uint64_t)i * i;
	printf("sum of squares 1..100000 = %llu\n",
	       (unsigned long long)squares);
	printf("faas-sum: done\n");
	return 0;
}
