/* ukrand: xoshiro-style PRNG with per-thread (TLS) state. */
#ifndef UK_RAND_H
#define UK_RAND_H

#include <uk/essentials.h>

void uk_rand_seed(uint64_t seed);
uint64_t uk_rand_u64(void);
uint32_t uk_rand_u32(void);
uint32_t uk_rand_range(uint32_t n);
unsigned long uk_rand_calls(void);

#endif
