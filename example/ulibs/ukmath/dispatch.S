/*
 * ukmath: uk_math_op(op, a, b), hand-written with its jump table and constants inside .text, as
 * platform and assembly code often keeps them. The table sits in the middle of the function (typed
 * @object, so a rewriter knows it is data); the constants follow the function, outside its .size,
 * and have no type at all. Both hold addresses the linker fills in (R_X86_64_64).
 *
 *   op 0: a + b    op 1: a - b    op 2: a * b    op 3: gcd(a, b) (a tail call into ukmath's C)
 *   op 4: strlen((const char *)a) (a tail call into nolibc)    op 5: the table's own checksum
 */
	.text
	.globl uk_math_op
	.type uk_math_op, @function
	.align 16
uk_math_op:
	cmpl $5, %edi
	ja 9f
	movl %edi, %eax
	jmp *uk_math_op_table(, %rax, 8)

	.align 8
	.type uk_math_op_table, @object
uk_math_op_table:
	.quad 10f, 11f, 12f, 13f, 14f, 15f
	.size uk_math_op_table, . - uk_math_op_table

10:	leaq (%rsi, %rdx), %rax
	ret
11:	movq %rsi, %rax
	subq %rdx, %rax
	ret
12:	movq %rsi, %rax
	imulq %rdx, %rax
	ret
13:	movq %rsi, %rdi
	movq %rdx, %rsi
	jmp uk_gcd
14:	movq %rsi, %rdi
	jmp strlen
15:	/* Sum of the constants below, read through their absolute addresses. */
	movq uk_math_consts_ptr(%rip), %rcx
	movq (%rcx), %rax
	addq 8(%rcx), %rax
	ret
9:	xorl %eax, %eax
	ret
	.size uk_math_op, . - uk_math_op

	/* No type, no size: bytes no function covers are data. */
	.align 8
uk_math_consts:
	.quad 0x9e3779b97f4a7c15, 0x0123456789abcdef
uk_math_consts_ptr:
	.quad uk_math_consts

	.section .note.GNU-stack, "", @progbits
