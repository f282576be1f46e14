/*
 * kvmplat: the boot page tables, built by the assembler and kept in .text, as Unikraft's kvm
 * platform keeps them: identity map of the first GiB with 2 MiB pages. The upper levels hold the
 * addresses of the lower ones (R_X86_64_64 filled in by the linker), so where the platform's code
 * lands decides their bytes. A memory-region record follows, as data no function covers.
 */
#define PTE_P   0x001
#define PTE_RW  0x002
#define PTE_PS  0x080

	.text
	.align 0x1000
	.globl _boot_pml4
_boot_pml4:
	.quad _boot_pdpt + (PTE_P | PTE_RW)
	.fill 511, 8, 0

	.align 0x1000
_boot_pdpt:
	.quad _boot_pd + (PTE_P | PTE_RW)
	.fill 511, 8, 0

	.align 0x1000
_boot_pd:
	.set pfn, 0
	.rept 512
	.quad (pfn << 21) | (PTE_P | PTE_RW | PTE_PS)
	.set pfn, pfn + 1
	.endr

	/* The region the tables map, read by setup.c (base, length, flags). */
	.globl _boot_map_region
_boot_map_region:
	.quad 0, 0x40000000, PTE_P | PTE_RW | PTE_PS

	.section .note.GNU-stack, "", @progbits
