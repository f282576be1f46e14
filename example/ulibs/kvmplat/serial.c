/* kvmplat: 16550 UART on COM1, used as the platform console. */
#include <uk/plat.h>
#include <uk/boot.h>
#include <uk/console.h>
#include <uk/init.h>
#include "io.h"

#define COM1        0x3f8
#define UART_THR    0   /* transmit holding (DLAB=0) */
#define UART_DLL    0   /* divisor low (DLAB=1) */
#define UART_IER    1
#define UART_DLM    1   /* divisor high (DLAB=1) */
#define UART_FCR    2
#define UART_LCR    3
#define UART_MCR    4
#define UART_LSR    5
#define LCR_DLAB    0x80
#define LCR_8N1     0x03
#define LSR_THRE    0x20

static int serial_ready;

void kvmplat_serial_init(void)
{
	outb(COM1 + UART_IER, 0x00);
	outb(COM1 + UART_LCR, LCR_DLAB);
	outb(COM1 + UART_DLL, 0x01);   /* 115200 baud */
	outb(COM1 + UART_DLM, 0x00);
	outb(COM1 + UART_LCR, LCR_8N1);
	outb(COM1 + UART_FCR, 0xc7);   /* enable and clear FIFOs */
	outb(COM1 + UART_MCR, 0x03);   /* DTR + RTS */
	serial_ready = 1;
}

static void serial_putc(char c)
{
	/*
	 * Wait as long as it takes: qemu holds THRE clear while its output
	 * backend cannot take more (a busy host, a slow reader), and a byte
	 * written then is lost.
	 */
	while (!(inb(COM1 + UART_LSR) & LSR_THRE))
		;
	outb(COM1 + UART_THR, (uint8_t)c);
}

void ukplat_coutk(const char *buf, size_t len)
{
	size_t i;

	if (unlikely(!serial_ready))
		kvmplat_serial_init();
	for (i = 0; i < len; i++)
		serial_putc(buf[i]);
}

static void serial_early(struct ukplat_bootinfo *bi __unused)
{
	kvmplat_serial_init();
}
UK_BOOT_EARLYTAB_ENTRY(serial_early, 0);

/* The serial port as a ukconsole device. */
static void serial_dev_write(struct uk_console_dev *dev __unused,
			     const char *buf, size_t len)
{
	ukplat_coutk(buf, len);
}

static struct uk_console_dev serial_dev = {
	.name = "ns16550-com1",
	.write = serial_dev_write,
};

static int serial_console_init(void)
{
	return uk_console_register(&serial_dev);
}
uk_plat_initcall(serial_console_init, 0);
