/*
 * kvmplat: the interrupt entry stubs (vectors 32..255), written out in full, one function each,
 * with unwind information for every register they save, as Unikraft's kvm platform writes its
 * IRQ stubs. That gives the platform object a large .eh_frame whose FDEs hold PC-relative
 * addresses of its code, and a table in .rodata with the absolute address of every stub.
 * Like Unikraft's (ENTRY without END), the stubs are function symbols without a size, so the
 * rewriter sees data in code; and like Unikraft's, each calls into another library (ukconsole's
 * interrupt handler), so a call in those bytes names an address that ASLR moves.
 */
	.altmacro

/* Save or restore one register, and say so to the unwinder. */
.macro SAVE reg
	pushq %\reg
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset \reg, 0
.endm
.macro RESTORE reg
	popq %\reg
	.cfi_adjust_cfa_offset -8
	.cfi_restore \reg
.endm

/* One stub: the CPU pushed SS, RSP, RFLAGS, CS, RIP (no error code for these vectors). */
.macro STUB vec
	.globl kvmplat_irq_\vec
	.type kvmplat_irq_\vec, @function
	.align 16
kvmplat_irq_\vec:
	.cfi_startproc simple
	.cfi_signal_frame
	.cfi_def_cfa rsp, 40
	.cfi_offset rip, -40
	.cfi_offset rsp, -16
	SAVE rdi
	SAVE rsi
	SAVE rdx
	SAVE rcx
	SAVE rax
	SAVE r8
	SAVE r9
	SAVE r10
	SAVE r11
	SAVE rbx
	SAVE rbp
	SAVE r12
	SAVE r13
	SAVE r14
	SAVE r15
	movl $\vec, %edi
	call uk_console_irq
	RESTORE r15
	RESTORE r14
	RESTORE r13
	RESTORE r12
	RESTORE rbp
	RESTORE rbx
	RESTORE r11
	RESTORE r10
	RESTORE r9
	RESTORE r8
	RESTORE rax
	RESTORE rcx
	RESTORE rdx
	RESTORE rsi
	RESTORE rdi
	iretq
	.cfi_endproc
.endm

.macro ADDR vec
	.quad kvmplat_irq_\vec
.endm

	.text
	.set vec, 32
	.rept 224
	STUB %vec
	.set vec, vec + 1
	.endr

	/* The stubs' addresses, read by traps.c to fill the IDT. */
	.section .rodata
	.align 8
	.globl kvmplat_irq_stubs
	.type kvmplat_irq_stubs, @object
kvmplat_irq_stubs:
	.set vec, 32
	.rept 224
	ADDR %vec
	.set vec, vec + 1
	.endr
	.size kvmplat_irq_stubs, . - kvmplat_irq_stubs

	.section .note.GNU-stack, "", @progbits
