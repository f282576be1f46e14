/*
 * kvmplat: what the platform prints when the boot stops on a state it cannot handle, as Unikraft's
 * kvm platform does (dump_regs, dump_mem, the unhandled-trap message). Never reached on a good
 * boot, but linked in every image. Its messages are string literals addressed with
 * `mov $str, reg` (absolute, the small code model), merged by ld into the platform's one string
 * table together with the image's name (CONFIG_UK_NAME): with names of other lengths the
 * messages sit at other offsets, so this code differs between apps as Unikraft's does.
 */
#include <stdint.h>
#include <uk/console.h>
#include <uk/plat.h>
#include "io.h"

#ifndef CONFIG_UK_NAME
#define CONFIG_UK_NAME "unikraft"
#endif

#define R(i, name) uk_pr_info("kvmplat: " name " %016lx\n", (unsigned long)r[i])

static uint64_t read_cr(int n)
{
	uint64_t v = 0;

	switch (n) {
	case 0: __asm__ __volatile__("mov %%cr0, %0" : "=r"(v)); break;
	case 2: __asm__ __volatile__("mov %%cr2, %0" : "=r"(v)); break;
	case 3: __asm__ __volatile__("mov %%cr3, %0" : "=r"(v)); break;
	case 4: __asm__ __volatile__("mov %%cr4, %0" : "=r"(v)); break;
	}
	return v;
}

/* The general registers the trap stub saved, in its order, then the control registers. */
__attribute__((noinline)) void kvmplat_dump_regs(const uint64_t *r)
{
	uk_pr_info("%s: register dump\n", CONFIG_UK_NAME);
	R(0, "RAX"); R(1, "RBX"); R(2, "RCX"); R(3, "RDX");
	R(4, "RSI"); R(5, "RDI"); R(6, "RBP"); R(7, "RSP");
	R(8, "R8 "); R(9, "R9 "); R(10, "R10"); R(11, "R11");
	R(12, "R12"); R(13, "R13"); R(14, "R14"); R(15, "R15");
	R(16, "RIP"); R(17, "RFLAGS"); R(18, "CS"); R(19, "SS");
	R(20, "DS"); R(21, "ES"); R(22, "FS"); R(23, "GS");
	R(24, "FS_BASE"); R(25, "GS_BASE"); R(26, "KERNEL_GS_BASE"); R(27, "EFER");
	R(28, "STAR"); R(29, "LSTAR"); R(30, "CSTAR"); R(31, "SFMASK");
	R(32, "PAT"); R(33, "APIC_BASE"); R(34, "TSC_AUX"); R(35, "TSC_DEADLINE");
	R(36, "DR0"); R(37, "DR1"); R(38, "DR2"); R(39, "DR3");
	R(40, "DR6"); R(41, "DR7"); R(42, "XCR0"); R(43, "MXCSR");
	R(44, "FCW"); R(45, "FSW"); R(46, "FTW"); R(47, "FOP");
	uk_pr_info("kvmplat: CR0 %016lx CR2 %016lx\n", (unsigned long)read_cr(0),
		   (unsigned long)read_cr(2));
	uk_pr_info("kvmplat: CR3 %016lx CR4 %016lx\n", (unsigned long)read_cr(3),
		   (unsigned long)read_cr(4));
}

/* `len` bytes from `p`, sixteen to a line. */
__attribute__((noinline)) void kvmplat_dump_mem(const void *p, unsigned long len)
{
	const uint8_t *b = p;
	unsigned long i, j;

	uk_pr_info("kvmplat: memory at %p, %lu bytes\n", p, len);
	for (i = 0; i < len; i += 16) {
		uk_pr_info("kvmplat:  %016lx:", (unsigned long)(uintptr_t)(b + i));
		for (j = i; j < i + 16 && j < len; j++)
			uk_pr_info(" %02x", b[j]);
		uk_pr_info("\n");
	}
}

/* What the boot found, region by region. */
__attribute__((noinline)) void kvmplat_dump_regions(void)
{
	const struct ukplat_bootinfo *bi = ukplat_bootinfo_get();
	uint32_t i;

	uk_pr_info("kvmplat: boot information at %p, %u of %u regions\n", (const void *)bi,
		   (unsigned int)bi->nr_regions, (unsigned int)bi->max_regions);
	uk_pr_info("kvmplat: command line '%s'\n", bi->cmdline);
	for (i = 0; i < bi->nr_regions; i++) {
		const struct ukplat_memregion *m = &bi->regions[i];

		uk_pr_info("kvmplat: region %u: %016lx-%016lx", (unsigned int)i,
			   (unsigned long)m->base, (unsigned long)(m->base + m->len));
		if (m->flags & UKPLAT_MEMRF_FREE)
			uk_pr_info(" free");
		if (m->flags & UKPLAT_MEMRF_HEAP)
			uk_pr_info(" heap");
		uk_pr_info("\n");
	}
}

/* The boot cannot go on: say so with the image's name, dump what is known, stop with `code`. */
__attribute__((noinline, noreturn)) void kvmplat_crash(int code, const uint64_t *regs)
{
	uk_pr_info("%s: the platform stops the boot (status %d)\n", CONFIG_UK_NAME, code);
	if (regs)
		kvmplat_dump_regs(regs);
	kvmplat_dump_regions();
	kvmplat_dump_mem(ukplat_bootinfo_get(), 64);
	uk_console_flush();
	ukplat_terminate(code);
	for (;;)
		;
}
