/*
 * ukconsole: a line-buffered console layer. Output is collected in a line
 * buffer and written to every registered device on newline, when the buffer
 * fills, or on uk_console_flush(). Before any device registers, output goes
 * straight to the platform's raw serial output.
 */
#include <uk/console.h>
#include <uk/init.h>
#include <uk/plat.h>
#include <uk/libinfo.h>
#include <stdio.h>
#include <string.h>

#define LINE_BUF 256

UK_LIB_INFO("ukconsole", "0.17", "BSD-3-Clause");

static struct uk_console_dev *devices;
static unsigned int nr_devices;
static char line[LINE_BUF];
static size_t line_len;
static unsigned long total_bytes;

static void emit(const char *buf, size_t len)
{
	struct uk_console_dev *d;

	if (!len)
		return;
	if (!devices) {
		ukplat_coutk(buf, len);
		return;
	}
	for (d = devices; d; d = d->next) {
		d->write(d, buf, len);
		d->bytes += len;
	}
}

void uk_console_flush(void)
{
	emit(line, line_len);
	line_len = 0;
}

void uk_console_write(const char *buf, size_t len)
{
	size_t i;

	total_bytes += len;
	for (i = 0; i < len; i++) {
		line[line_len++] = buf[i];
		if (buf[i] == '\n' || line_len == LINE_BUF)
			uk_console_flush();
	}
}

int uk_console_register(struct uk_console_dev *dev)
{
	struct uk_console_dev **p = &devices;

	if (!dev || !dev->write)
		return -1;
	while (*p)
		p = &(*p)->next;
	dev->next = NULL;
	dev->bytes = 0;
	*p = dev;
	nr_devices++;
	return 0;
}

unsigned long uk_console_bytes(void)
{
	return total_bytes;
}

int uk_vprintk(unsigned int libid, const char *fmt, va_list ap)
{
	char buf[256];
	const char *lib = uk_libid_name(libid);
	int n, m;

	n = snprintf(buf, sizeof(buf), "[%s] ", lib ? lib : "?");
	if (n < 0 || n >= (int)sizeof(buf))
		n = 0;
	m = vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n >= (int)sizeof(buf))
		n = sizeof(buf) - 1;
	uk_console_write(buf, (size_t)n);
	return n;
}

int uk_printk(unsigned int libid, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = uk_vprintk(libid, fmt, ap);
	va_end(ap);
	return r;
}

static int console_late(void)
{
	uk_pr_info("%u console device(s)\n", nr_devices);
	return 0;
}
uk_late_initcall(console_late, 9);

static volatile unsigned int irq_count[256];

void uk_console_irq(unsigned int vec)
{
	irq_count[vec & 0xff]++;
}

unsigned int uk_console_irq_count(unsigned int vec)
{
	return irq_count[vec & 0xff];
}
