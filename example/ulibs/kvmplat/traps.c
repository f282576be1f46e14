/*
 * kvmplat: the interrupt descriptor table. Vectors 32..255 go to the stubs of traps.S; the boot
 * checks them with a few software interrupts (no device interrupt is ever enabled), so a stub or a
 * table entry that a layout broke stops the boot with a status of its own.
 */
#include <stdint.h>
#include <uk/console.h>
#include <uk/plat.h>
#include "io.h"

#define IRQ_FIRST 32
#define IRQ_COUNT 224
#define GATE_INTR 0x8e /* present, DPL 0, 64-bit interrupt gate */
#define CODE_SEL  0x08 /* multiboot.S's 64-bit code segment */

struct gate {
	uint16_t off_lo;
	uint16_t sel;
	uint8_t ist;
	uint8_t type;
	uint16_t off_mid;
	uint32_t off_hi;
	uint32_t zero;
} __attribute__((packed));

struct idt_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

extern void (*const kvmplat_irq_stubs[IRQ_COUNT])(void);

static struct gate idt[256] __attribute__((aligned(16)));

static void set_gate(unsigned int vec, uintptr_t addr)
{
	struct gate *g = &idt[vec];

	g->off_lo = (uint16_t)addr;
	g->sel = CODE_SEL;
	g->ist = 0;
	g->type = GATE_INTR;
	g->off_mid = (uint16_t)(addr >> 16);
	g->off_hi = (uint32_t)(addr >> 32);
	g->zero = 0;
}

#define RAISE(v) __asm__ __volatile__("int %0" : : "i"(v) : "memory")

void kvmplat_traps_init(void)
{
	struct idt_ptr p = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	unsigned int i;

	for (i = 0; i < IRQ_COUNT; i++)
		set_gate(IRQ_FIRST + i, (uintptr_t)kvmplat_irq_stubs[i]);
	__asm__ __volatile__("lidt %0" : : "m"(p));

	/* The first, a middle and the last stub, twice the middle one. */
	RAISE(32);
	RAISE(128);
	RAISE(128);
	RAISE(255);
	if (uk_console_irq_count(32) != 1 || uk_console_irq_count(128) != 2 ||
	    uk_console_irq_count(255) != 1 || uk_console_irq_count(33) != 0)
		kvmplat_crash(0x3e, NULL);
}
