/*
 * kvmplat: 64-bit C entry. Reads the multiboot information into the boot
 * information record (section .uk_bootinfo), prepares the heap region, sets
 * up the static TLS block and FS base, runs the early boot table, and hands
 * over to ukboot.
 */
#include <uk/plat.h>
#include <uk/boot.h>
#include <uk/libinfo.h>
#include <string.h>
#include "io.h"

/* The image name (compiled per app, as in Unikraft: CONFIG_UK_NAME). */
#ifndef CONFIG_UK_NAME
#define CONFIG_UK_NAME "unikraft"
#endif

/* pagetable.S: base, length and flags of the region the boot page tables map. */
extern const uint64_t _boot_map_region[3];

#define MB_BOOT_MAGIC      0x2BADB002U
#define MBI_FLAG_MEM       (1U << 0)
#define MBI_FLAG_CMDLINE   (1U << 2)
#define MBI_FLAG_MMAP      (1U << 6)
#define MB_MMAP_AVAILABLE  1

#define IDENTITY_LIMIT     (1ULL << 30) /* mapped by the boot page tables */

struct multiboot_info {
	uint32_t flags;
	uint32_t mem_lower;
	uint32_t mem_upper;
	uint32_t boot_device;
	uint32_t cmdline;
	uint32_t mods_count;
	uint32_t mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length;
	uint32_t mmap_addr;
} __packed;

struct multiboot_mmap_entry {
	uint32_t size;
	uint64_t addr;
	uint64_t len;
	uint32_t type;
} __packed;

static struct ukplat_bootinfo bootinfo __used __section(".uk_bootinfo") = {
	.magic = UKPLAT_BOOTINFO_MAGIC,
	.version = 1,
	.max_regions = UKPLAT_MEMREGION_MAX,
};

UK_LIB_INFO("kvmplat", "0.17-spacer-ex", "BSD-3-Clause");

struct ukplat_bootinfo *ukplat_bootinfo_get(void)
{
	return &bootinfo;
}

static void add_region(uint64_t base, uint64_t len, uint32_t flags)
{
	struct ukplat_memregion *r;

	if (bootinfo.nr_regions >= UKPLAT_MEMREGION_MAX || len == 0)
		return;
	r = &bootinfo.regions[bootinfo.nr_regions++];
	r->base = base;
	r->len = len;
	r->flags = flags;
}

static int cmdline_has(const char *p, const char *word);

/* `stay` on the full command line (bootinfo.cmdline keeps only its first 63 bytes). */
static int stay_mode;

static void parse_multiboot(uint32_t mbi_addr, uint32_t magic)
{
	const struct multiboot_info *mbi;
	uint64_t img_end = ALIGN_UP((uint64_t)(uintptr_t)_end, PAGE_SIZE);
	uint64_t info_end = img_end;
	uint64_t ram_end = 0;

	add_region((uintptr_t)_base_addr, img_end - (uintptr_t)_base_addr,
		   UKPLAT_MEMRF_KERNEL);
	if (magic != MB_BOOT_MAGIC || mbi_addr == 0)
		return;

	mbi = (const struct multiboot_info *)(uintptr_t)mbi_addr;
	info_end = MAX(info_end, (uint64_t)mbi_addr + sizeof(*mbi));

	if (mbi->flags & MBI_FLAG_MEM) {
		bootinfo.mem_lower_kib = mbi->mem_lower;
		bootinfo.mem_upper_kib = mbi->mem_upper;
		ram_end = 0x100000ULL + (uint64_t)mbi->mem_upper * 1024;
	}
	/* Only what the boot page tables map (pagetable.S) is usable. */
	if (ram_end > _boot_map_region[0] + _boot_map_region[1])
		ram_end = _boot_map_region[0] + _boot_map_region[1];
	if (mbi->flags & MBI_FLAG_CMDLINE) {
		const char *cl = (const char *)(uintptr_t)mbi->cmdline;
		size_t i;

		for (i = 0; i < sizeof(bootinfo.cmdline) - 1 && cl[i]; i++)
			bootinfo.cmdline[i] = cl[i];
		bootinfo.cmdline[i] = '\0';
		stay_mode = cmdline_has(cl, "stay");
		info_end = MAX(info_end, (uint64_t)mbi->cmdline + i + 1);
	} else {
		/* No command line: the image's name, as Unikraft's kvm platform does (its length is
		 * compiled into the code, so the platform is built per app).
		 */
		size_t len = MIN(sizeof(CONFIG_UK_NAME), sizeof(bootinfo.cmdline)) - 1;

		memcpy(bootinfo.cmdline, CONFIG_UK_NAME, len);
		bootinfo.cmdline[len] = '\0';
	}
	if (mbi->flags & MBI_FLAG_MMAP) {
		uint32_t off = 0;

		info_end = MAX(info_end,
			       (uint64_t)mbi->mmap_addr + mbi->mmap_length);
		while (off + sizeof(struct multiboot_mmap_entry)
		       <= mbi->mmap_length) {
			const struct multiboot_mmap_entry *e =
				(const void *)(uintptr_t)(mbi->mmap_addr + off);

			if (e->type == MB_MMAP_AVAILABLE && e->addr >= 0x100000)
				ram_end = MAX(ram_end, e->addr + e->len);
			off += e->size + sizeof(e->size);
		}
	}

	ram_end = MIN(ram_end, IDENTITY_LIMIT);
	info_end = ALIGN_UP(info_end, PAGE_SIZE);
	if (ram_end > info_end)
		add_region(info_end, ram_end - info_end,
			   UKPLAT_MEMRF_FREE | UKPLAT_MEMRF_HEAP);
}

int ukplat_memregion_heap(uintptr_t *base, size_t *len)
{
	uint32_t i;

	for (i = 0; i < bootinfo.nr_regions; i++) {
		if (bootinfo.regions[i].flags & UKPLAT_MEMRF_HEAP) {
			*base = (uintptr_t)bootinfo.regions[i].base;
			*len = (size_t)bootinfo.regions[i].len;
			return 0;
		}
	}
	return -1;
}

void *kvmplat_reserve(size_t size, size_t align)
{
	uint32_t i;

	for (i = 0; i < bootinfo.nr_regions; i++) {
		struct ukplat_memregion *r = &bootinfo.regions[i];
		uint64_t start, end;

		if (!(r->flags & UKPLAT_MEMRF_HEAP))
			continue;
		start = ALIGN_UP(r->base, (uint64_t)align);
		end = ALIGN_UP(start + size, (uint64_t)PAGE_SIZE);
		if (end > r->base + r->len)
			return NULL;
		r->len -= end - r->base;
		r->base = end;
		return (void *)(uintptr_t)start;
	}
	return NULL;
}

uint64_t ukplat_tsc(void)
{
	return rdtsc();
}

void ukplat_terminate(int code)
{
	/* isa-debug-exit: qemu exits with status (value << 1) | 1. */
	outl(0xf4, (uint32_t)code);
	for (;;)
		__asm__ __volatile__("cli; hlt");
}

/* Whether command line `p` has the word `word` (qemu passes "<kernel> <-append>"). */
static int cmdline_has(const char *p, const char *word)
{
	size_t n = 0;

	while (word[n])
		n++;
	while (*p) {
		size_t i = 0;

		while (*p == ' ')
			p++;
		while (p[i] && p[i] != ' ')
			i++;
		if (i == n && memcmp(p, word, n) == 0)
			return 1;
		p += i;
	}
	return 0;
}

void _ukplat_entry64(uint32_t mbi_addr, uint32_t magic)
{
	const uk_boot_early_func_t *fn;
	int ret;

	parse_multiboot(mbi_addr, magic);
	kvmplat_tls_init();
	kvmplat_traps_init();

	for (fn = uk_boot_earlytab_start; fn < uk_boot_earlytab_end; fn++)
		(*fn)(&bootinfo);

	ret = ukboot_entry();
	/* `-append stay`: keep the guest alive (halted) after main, e.g. for page sharing
	 * measurements; by default the guest exits with main's status. */
	if (stay_mode) {
		static const char msg[] = "kvmplat: stay: halted\n";

		ukplat_coutk(msg, sizeof(msg) - 1);
		for (;;)
			__asm__ __volatile__("cli; hlt");
	}
	ukplat_terminate(ret);
}
