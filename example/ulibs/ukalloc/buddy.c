/*
 * ukalloc: binary buddy allocator.
 *
 * Every block has a 16-byte header (so user pointers stay 16-byte aligned)
 * recording its order and whether it is free. Free blocks are kept in one
 * doubly-linked list per order. A block's buddy is found by flipping bit
 * <order> of its offset from the region base; two free buddies of equal
 * order merge. Blocks of order MIN_ORDER (32 bytes) .. MAX_ORDER are used.
 */
#include <uk/alloc.h>
#include <uk/init.h>
#include <uk/plat.h>
#include <uk/console.h>
#include <uk/libinfo.h>
#include <string.h>

#define MIN_ORDER     5
#define MAX_ORDER     28
#define NR_ORDERS     (MAX_ORDER + 1)
#define HDR_SIZE      16
#define MAX_REGIONS   4

#define MAGIC_USED    0x55534544U /* "USED" */
#define MAGIC_FREE    0x46524545U /* "FREE" */
#define MAGIC_ALIGNED 0x414c4e44U /* "ALND" */

UK_LIB_INFO("ukalloc", "0.17-buddy", "BSD-3-Clause");

struct blk_hdr {
	uint32_t magic;
	uint32_t order;
	uint64_t aux;      /* MAGIC_ALIGNED: offset back to the real block */
};

struct free_blk {
	struct blk_hdr h;
	struct free_blk *next;
	struct free_blk *prev;
};

struct region {
	uintptr_t base;
	size_t len;
};

static struct free_blk *free_lists[NR_ORDERS];
static struct region regions[MAX_REGIONS];
static unsigned int nr_regions;
static struct uk_alloc_stats stats;

static const struct region *region_of(uintptr_t addr)
{
	unsigned int i;

	for (i = 0; i < nr_regions; i++)
		if (addr >= regions[i].base
		    && addr < regions[i].base + regions[i].len)
			return &regions[i];
	return NULL;
}

static void list_push(struct free_blk *b, unsigned int order)
{
	b->h.magic = MAGIC_FREE;
	b->h.order = order;
	b->h.aux = 0;
	b->prev = NULL;
	b->next = free_lists[order];
	if (b->next)
		b->next->prev = b;
	free_lists[order] = b;
	stats.free += (size_t)1 << order;
}

static void list_remove(struct free_blk *b)
{
	unsigned int order = b->h.order;

	if (b->prev)
		b->prev->next = b->next;
	else
		free_lists[order] = b->next;
	if (b->next)
		b->next->prev = b->prev;
	b->h.magic = 0;
	stats.free -= (size_t)1 << order;
}

int uk_alloc_add_region(void *base, size_t len)
{
	uintptr_t start = ALIGN_UP((uintptr_t)base, PAGE_SIZE);
	size_t off = 0;

	if (nr_regions == MAX_REGIONS || len < PAGE_SIZE)
		return -1;
	len -= start - (uintptr_t)base;
	len = ALIGN_DOWN(len, (size_t)1 << MIN_ORDER);
	regions[nr_regions].base = start;
	regions[nr_regions].len = len;
	nr_regions++;

	/* Cut the region into the largest naturally aligned blocks. */
	while (len - off >= ((size_t)1 << MIN_ORDER)) {
		unsigned int order = MAX_ORDER;

		while (order > MIN_ORDER
		       && ((off & (((size_t)1 << order) - 1))
			   || off + ((size_t)1 << order) > len))
			order--;
		list_push((struct free_blk *)(start + off), order);
		off += (size_t)1 << order;
	}
	stats.total += len;
	return 0;
}

static unsigned int order_for(size_t size)
{
	unsigned int order = MIN_ORDER;

	while (order <= MAX_ORDER && ((size_t)1 << order) < size + HDR_SIZE)
		order++;
	return order;
}

static void *buddy_malloc(size_t size)
{
	unsigned int order, k;
	struct free_blk *b;

	if (size == 0)
		size = 1;
	order = order_for(size);
	for (k = order; k <= MAX_ORDER && !free_lists[k]; k++)
		;
	if (order > MAX_ORDER || k > MAX_ORDER) {
		stats.nb_fail++;
		return NULL;
	}
	b = free_lists[k];
	list_remove(b);
	while (k > order) {
		k--;
		list_push((struct free_blk *)((uintptr_t)b + ((size_t)1 << k)),
			  k);
	}
	b->h.magic = MAGIC_USED;
	b->h.order = order;
	b->h.aux = 0;
	stats.nb_alloc++;
	return (uint8_t *)b + HDR_SIZE;
}

static void buddy_free(struct blk_hdr *h)
{
	uintptr_t addr = (uintptr_t)h;
	unsigned int order = h->order;
	const struct region *r = region_of(addr);

	if (!r)
		return;
	while (order < MAX_ORDER) {
		uintptr_t off = addr - r->base;
		uintptr_t boff = off ^ ((uintptr_t)1 << order);
		struct free_blk *buddy;

		if (boff + ((uintptr_t)1 << order) > r->len)
			break;
		buddy = (struct free_blk *)(r->base + boff);
		if (buddy->h.magic != MAGIC_FREE || buddy->h.order != order)
			break;
		list_remove(buddy);
		if (boff < off)
			addr = (uintptr_t)buddy;
		order++;
	}
	list_push((struct free_blk *)addr, order);
}

static void buddy_free_ptr(void *ptr)
{
	struct blk_hdr *h;

	if (!ptr)
		return;
	h = (struct blk_hdr *)((uint8_t *)ptr - HDR_SIZE);
	if (h->magic == MAGIC_ALIGNED) {
		buddy_free_ptr((uint8_t *)ptr - h->aux);
		return;
	}
	if (h->magic != MAGIC_USED) {
		stats.nb_fail++;
		return;
	}
	stats.nb_free++;
	buddy_free(h);
}

/*
 * The allocator's entry points, which a library may replace (as SQLite's sqlite3_config() does
 * for its own): every other function calls through them, so the code reaches its own data's
 * function pointers with `call`/`jmp [rip+...]`.
 */
struct uk_alloc_ops {
	void *(*malloc)(size_t size);
	void (*free)(void *ptr);
};
struct uk_alloc_ops uk_alloc_ops = { buddy_malloc, buddy_free_ptr };

void *uk_malloc(size_t size)
{
	return uk_alloc_ops.malloc(size);
}

void uk_free(void *ptr)
{
	uk_alloc_ops.free(ptr);
}

void *uk_calloc(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = uk_malloc(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

void *uk_realloc(void *ptr, size_t size)
{
	struct blk_hdr *h;
	size_t cap;
	void *n;

	if (!ptr)
		return uk_malloc(size);
	if (!size) {
		uk_free(ptr);
		return NULL;
	}
	h = (struct blk_hdr *)((uint8_t *)ptr - HDR_SIZE);
	if (h->magic == MAGIC_USED) {
		cap = ((size_t)1 << h->order) - HDR_SIZE;
		if (size <= cap)
			return ptr;
	} else {
		/* aligned block: copy conservatively what the caller may own */
		struct blk_hdr *real = (struct blk_hdr *)
			((uint8_t *)ptr - h->aux - HDR_SIZE);
		cap = ((size_t)1 << real->order) - HDR_SIZE - h->aux;
	}
	n = uk_malloc(size);
	if (!n)
		return NULL;
	memcpy(n, ptr, MIN(cap, size));
	uk_free(ptr);
	return n;
}

void *uk_memalign(size_t align, size_t size)
{
	uint8_t *raw, *p;
	struct blk_hdr *h;

	if (align <= HDR_SIZE)
		return uk_malloc(size);
	if (align & (align - 1))
		return NULL;
	raw = uk_malloc(size + align + HDR_SIZE);
	if (!raw)
		return NULL;
	p = (uint8_t *)ALIGN_UP((uintptr_t)raw + HDR_SIZE, align);
	h = (struct blk_hdr *)(p - HDR_SIZE);
	h->magic = MAGIC_ALIGNED;
	h->order = 0;
	h->aux = (uint64_t)(p - raw);
	return p;
}

void uk_alloc_stats_get(struct uk_alloc_stats *st)
{
	*st = stats;
}

/* Walks the free lists; returns the number of free blocks or -1. */
int uk_alloc_check(void)
{
	unsigned int o;
	int n = 0;
	size_t bytes = 0;

	for (o = 0; o < NR_ORDERS; o++) {
		const struct free_blk *b, *prev = NULL;

		for (b = free_lists[o]; b; prev = b, b = b->next) {
			if (b->h.magic != MAGIC_FREE || b->h.order != o
			    || b->prev != prev || !region_of((uintptr_t)b))
				return -1;
			bytes += (size_t)1 << o;
			n++;
		}
	}
	return bytes == stats.free ? n : -1;
}

static int ukalloc_init(void)
{
	uintptr_t base;
	size_t len;

	if (ukplat_memregion_heap(&base, &len) < 0) {
		uk_pr_info("no heap region\n");
		return -1;
	}
	if (uk_alloc_add_region((void *)base, len) < 0)
		return -1;
	uk_pr_info("buddy allocator ready (orders %u..%u)\n",
		   MIN_ORDER, MAX_ORDER);
	return 0;
}
uk_early_initcall(ukalloc_init, 0);
