/* Port I/O and MSR helpers private to kvmplat. */
#ifndef KVMPLAT_IO_H
#define KVMPLAT_IO_H

#include <uk/essentials.h>

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ __volatile__("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ __volatile__("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ __volatile__("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ __volatile__("wrmsr"
			     : : "c"(msr), "a"((uint32_t)v),
			       "d"((uint32_t)(v >> 32)));
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

void kvmplat_serial_init(void);
void kvmplat_tls_init(void);
void kvmplat_traps_init(void);
/* diag.c: says why the boot stops, dumps what is known, and stops with `code`. */
void kvmplat_crash(int code, const uint64_t *regs) __attribute__((noreturn));
/* Takes memory from the start of the heap region (before ukalloc runs). */
void *kvmplat_reserve(size_t size, size_t align);

#endif
