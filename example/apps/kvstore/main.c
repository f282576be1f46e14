/*
 * kvstore: a chained hash table driven by the TLS-based PRNG of ukrand,
 * exercising the allocator (nodes, string keys, table growth).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uk/alloc.h>
#include <uk/hash.h>
#include <uk/rand.h>
#include <uk/sort.h>

#define OPS      30000
#define KEYSPACE 5000

struct node {
	struct node *next;
	uint64_t value;
	char key[];
};

static struct node **buckets;
static size_t nbuckets = 16, nentries;

static uint32_t hash_key(const char *k)
{
	return uk_crc32(0, k, strlen(k));
}

static int grow(void)
{
	size_t nb = nbuckets * 2, i;
	struct node **t = calloc(nb, sizeof(*t));

	if (!t)
		return -1;
	for (i = 0; i < nbuckets; i++) {
		struct node *n = buckets[i], *next;

		for (; n; n = next) {
			next = n->next;
			n->next = t[hash_key(n->key) & (nb - 1)];
			t[hash_key(n->key) & (nb - 1)] = n;
		}
	}
	free(buckets);
	buckets = t;
	nbuckets = nb;
	return 0;
}

static struct node **lookup(const char *k)
{
	struct node **p = &buckets[hash_key(k) & (nbuckets - 1)];

	while (*p && strcmp((*p)->key, k))
		p = &(*p)->next;
	return p;
}

static int put(const char *k, uint64_t v)
{
	struct node **p = lookup(k), *n;

	if (*p) {
		(*p)->value = v;
		return 0;
	}
	n = malloc(sizeof(*n) + strlen(k) + 1);
	if (!n)
		return -1;
	strcpy(n->key, k);
	n->value = v;
	n->next = NULL;
	*p = n;
	if (++nentries > nbuckets * 2)
		return grow();
	return 0;
}

static unsigned long strtoul_dec(const char *s)
{
	unsigned long v = 0;

	while (*s >= '0' && *s <= '9')
		v = v * 10 + (unsigned long)(*s++ - '0');
	return v;
}

static int del(const char *k)
{
	struct node **p = lookup(k), *n = *p;

	if (!n)
		return 0;
	*p = n->next;
	free(n);
	nentries--;
	return 1;
}

int main(int argc __unused, char *argv[] __unused)
{
	unsigned int i, puts_ = 0, hits = 0, dels = 0;
	uint64_t vsum = 0;
	uint32_t *keys;
	size_t k = 0;
	char key[16];
	uint8_t d[UK_SHA256_DIGEST_LEN];
	char hex[2 * UK_SHA256_DIGEST_LEN + 1];

	printf("kvstore: start\n");
	buckets = calloc(nbuckets, sizeof(*buckets));
	if (!buckets)
		return 1;
	uk_rand_seed(2024);
	for (i = 0; i < OPS; i++) {
		uint64_t r = uk_rand_u64();
		unsigned int id = (unsigned int)((r >> 8) % KEYSPACE);

		snprintf(key, sizeof(key), "key-%u", id);
		switch (r & 3) {
		case 0:
		case 1:
			if (put(key, r) < 0)
				return 2;
			puts_++;
			break;
		case 2:
			hits += *lookup(key) != NULL;
			break;
		default:
			dels += (unsigned int)del(key);
			break;
		}
	}
	printf("ops %u: puts %u, hits %u, deletes %u, entries %u, buckets %u\n",
	       OPS, puts_, hits, dels, (unsigned int)nentries,
	       (unsigned int)nbuckets);

	keys = malloc(nentries * sizeof(uint32_t));
	if (!keys)
		return 1;
	for (i = 0; i < nbuckets; i++) {
		struct node *n;

		for (n = buckets[i]; n; n = n->next) {
			keys[k++] = (uint32_t)strtoul_dec(n->key + 4);
			vsum += n->value;
		}
	}
	uk_qsort(keys, k, sizeof(uint32_t), uk_cmp_u32);
	uk_sha256(keys, k * sizeof(uint32_t), d);
	printf("value sum %016llx\n", (unsigned long long)vsum);
	printf("sorted keys sha256 %s\n", uk_hex(hex, d, sizeof(d)));
	printf("rand calls (TLS counter): %lu, heap check: %s\n",
	       uk_rand_calls(), uk_alloc_check() >= 0 ? "ok" : "FAILED");
	printf("kvstore: done\n");
	return 0;
}
