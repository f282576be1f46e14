/* ukalloc: a binary buddy allocator over the heap region found at boot. */
#ifndef UK_ALLOC_H
#define UK_ALLOC_H

#include <uk/essentials.h>

struct uk_alloc_stats {
	size_t total;       /* bytes managed */
	size_t free;        /* bytes in free blocks */
	unsigned long nb_alloc;
	unsigned long nb_free;
	unsigned long nb_fail;
};

int uk_alloc_add_region(void *base, size_t len);
void *uk_malloc(size_t size);
void *uk_calloc(size_t n, size_t size);
void *uk_realloc(void *ptr, size_t size);
void *uk_memalign(size_t align, size_t size);
void uk_free(void *ptr);
void uk_alloc_stats_get(struct uk_alloc_stats *st);
int uk_alloc_check(void);

#endif
