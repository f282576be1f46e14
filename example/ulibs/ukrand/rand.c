/*
 * ukrand: xorshift128+ with per-thread state kept in TLS. The initial state
 * lives in .tdata and the call counter in .tbss, so images with this library
 * carry both TLS sections.
 */
#include <uk/rand.h>
#include <uk/init.h>
#include <uk/console.h>
#include <uk/libinfo.h>

UK_LIB_INFO("ukrand", "0.17", "BSD-3-Clause");

static __thread uint64_t rand_state[2] = {
	0x9e3779b97f4a7c15ULL, 0xd1b54a32d192ed03ULL
};
static __thread unsigned long rand_calls;

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void uk_rand_seed(uint64_t seed)
{
	rand_state[0] = splitmix64(&seed);
	rand_state[1] = splitmix64(&seed);
	rand_calls = 0;
}

uint64_t uk_rand_u64(void)
{
	uint64_t s1 = rand_state[0];
	const uint64_t s0 = rand_state[1];

	rand_calls++;
	rand_state[0] = s0;
	s1 ^= s1 << 23;
	rand_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return rand_state[1] + s0;
}

uint32_t uk_rand_u32(void)
{
	return (uint32_t)(uk_rand_u64() >> 32);
}

uint32_t uk_rand_range(uint32_t n)
{
	return (uint32_t)(((uint64_t)uk_rand_u32() * n) >> 32);
}

unsigned long uk_rand_calls(void)
{
	return rand_calls;
}

static int ukrand_init(void)
{
	/* The TLS block must hold the .tdata image and a zeroed .tbss. */
	if (rand_state[0] != 0x9e3779b97f4a7c15ULL || rand_calls != 0) {
		uk_pr_info("TLS not initialised\n");
		return -1;
	}
	uk_pr_info("TLS state ok\n");
	return 0;
}
uk_lib_initcall(ukrand_init, 5);
