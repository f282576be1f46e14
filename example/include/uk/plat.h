/* Interface of the kvmplat platform micro-library. */
#ifndef UK_PLAT_H
#define UK_PLAT_H

#include <uk/essentials.h>

#define UKPLAT_BOOTINFO_MAGIC 0x42494e46U /* "BINF" */
#define UKPLAT_MEMREGION_MAX  16

#define UKPLAT_MEMRF_FREE     0x1 /* usable RAM */
#define UKPLAT_MEMRF_KERNEL   0x2 /* image (text .. _end) */
#define UKPLAT_MEMRF_HEAP     0x4 /* handed to the allocator */

struct ukplat_memregion {
	uint64_t base;
	uint64_t len;
	uint32_t flags;
	uint32_t pad;
};

/* Lives in section .uk_bootinfo (placed by bootinfo.lds after .data). */
struct ukplat_bootinfo {
	uint32_t magic;
	uint32_t version;
	uint64_t mem_lower_kib;
	uint64_t mem_upper_kib;
	uint32_t nr_regions;
	uint32_t max_regions;
	char cmdline[64];
	struct ukplat_memregion regions[UKPLAT_MEMREGION_MAX];
};

struct ukplat_bootinfo *ukplat_bootinfo_get(void);

/* Raw, unbuffered output on the platform serial port (COM1). */
void ukplat_coutk(const char *buf, size_t len);

/* Finds the heap region prepared at boot. Returns 0 on success. */
int ukplat_memregion_heap(uintptr_t *base, size_t *len);

/* Time stamp counter. */
uint64_t ukplat_tsc(void);

/* Leaves the VM through the isa-debug-exit device; qemu exits with (code<<1)|1. */
void ukplat_terminate(int code) __noreturn;

/* Called by kvmplat once the CPU is in long mode with a stack and TLS. */
int ukboot_entry(void);

/* Image boundaries from the linker script. */
extern char _base_addr[], _text[], _etext[], _rodata[], _erodata[];
extern char _data[], _edata[], __bss_start[], _end[];
extern char _tls_start[], _etdata[], _tls_end[];

#endif
