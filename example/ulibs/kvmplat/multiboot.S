/*
 * kvmplat: multiboot entry for qemu's -kernel loader (x86_64).
 *
 * The loader enters _multiboot_entry in 32-bit protected mode, paging off,
 * with EAX = 0x2BADB002 and EBX = physical address of the multiboot info.
 * We zero .bss, load the static identity page tables (pagetable.S: the
 * first GiB with 2 MiB pages), turn on PAE, long mode, SSE and paging, and continue in 64-bit code
 * that sets a stack and calls the C entry _ukplat_entry64(mbi).
 */

#define MB_MAGIC        0x1BADB002
#define MB_FLAGS        0x00000003      /* page-align modules, want mem info */
#define MB_CHECKSUM     (-(MB_MAGIC + MB_FLAGS))

#define CR0_PE          0x00000001
#define CR0_MP          0x00000002
#define CR0_EM          0x00000004
#define CR0_PG          0x80000000
#define CR4_PAE         0x00000020
#define CR4_OSFXSR      0x00000200
#define CR4_OSXMMEXCPT  0x00000400
#define MSR_EFER        0xC0000080
#define EFER_LME        0x00000100


#define BOOT_STACK_SIZE 0x10000

/* --- multiboot header: first thing in the image (KEEP(*(.data.boot))) --- */
	.section .data.boot, "aw"
	.balign 4
	.globl _multiboot_header
_multiboot_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long MB_CHECKSUM

	.balign 8
_gdt64:
	.quad 0x0000000000000000        /* null */
	.quad 0x00af9a000000ffff        /* 0x08: 64-bit code, DPL0 */
	.quad 0x00cf92000000ffff        /* 0x10: data, DPL0 */
_gdt64_end:
	.balign 4
	.word 0
_gdt64_ptr:
	.word _gdt64_end - _gdt64 - 1
	.long _gdt64

	.balign 4
	.globl _mb_magic
_mb_magic:
	.long 0
	.globl _mb_info
_mb_info:
	.long 0

/* --- 32-bit entry --- */
	.section .text.boot, "ax"
	.code32
	.globl _multiboot_entry
	.type _multiboot_entry, @function
_multiboot_entry:
	cli
	cld
	/* Remember the loader's magic and info pointer (not in .bss). */
	movl %eax, _mb_magic
	movl %ebx, _mb_info

	/* Zero .bss: it holds the boot stack. The page tables are static, in .text (pagetable.S). */
	movl $__bss_start, %edi
	movl $_end, %ecx
	subl %edi, %ecx
	xorl %eax, %eax
	rep stosb

	/* PAE and SSE support in CR4, page tables in CR3. */
	movl %cr4, %eax
	orl $(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
	movl %eax, %cr4
	movl $_boot_pml4, %eax
	movl %eax, %cr3

	/* Long mode enable. */
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr

	/* Paging on (activates long mode), FPU/SSE usable. */
	movl %cr0, %eax
	andl $(~CR0_EM), %eax
	orl $(CR0_PG | CR0_PE | CR0_MP), %eax
	movl %eax, %cr0

	lgdt _gdt64_ptr
	ljmp $0x08, $_multiboot_entry64
	.size _multiboot_entry, . - _multiboot_entry

/* --- 64-bit continuation --- */
	.code64
	.type _multiboot_entry64, @function
_multiboot_entry64:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movq $_boot_stack_top, %rsp
	xorl %ebp, %ebp
	movl _mb_info, %edi
	movl _mb_magic, %esi
	call _ukplat_entry64
2:
	cli
	hlt
	jmp 2b
	.size _multiboot_entry64, . - _multiboot_entry64

/* --- boot stack (zeroed above) --- */
	.section .bss
	.balign 16
_boot_stack:
	.skip BOOT_STACK_SIZE
	.globl _boot_stack_top
_boot_stack_top:

	.section .note.GNU-stack, "", @progbits
