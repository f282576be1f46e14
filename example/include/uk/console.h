/* Console layer (ukconsole): line-buffered output onto registered devices. */
#ifndef UK_CONSOLE_H
#define UK_CONSOLE_H

#include <uk/essentials.h>
#include <stdarg.h>

struct uk_console_dev {
	const char *name;
	void (*write)(struct uk_console_dev *dev, const char *buf, size_t len);
	struct uk_console_dev *next;
	unsigned long bytes;
};

int uk_console_register(struct uk_console_dev *dev);
void uk_console_write(const char *buf, size_t len);
void uk_console_flush(void);
unsigned long uk_console_bytes(void);

/* Interrupts: the platform's stubs call uk_console_irq with the vector (as Unikraft's kvm stubs
 * call the interrupt controller's handler, in another library); the boot reads the counts back. */
void uk_console_irq(unsigned int vec);
unsigned int uk_console_irq_count(unsigned int vec);

/* Kernel messages: "[<library>] message", the library found through uklibid. */
int uk_vprintk(unsigned int libid, const char *fmt, va_list ap);
int uk_printk(unsigned int libid, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define uk_pr_info(fmt, ...) uk_printk(uk_libid_self(), fmt, ##__VA_ARGS__)

#include <uk/libid.h>

#endif
