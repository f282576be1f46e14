/* Common attributes and helpers for the lib-spacer example micro-libraries. */
#ifndef UK_ESSENTIALS_H
#define UK_ESSENTIALS_H

#include <stddef.h>
#include <stdint.h>

#define __section(s)    __attribute__((section(s)))
#define __used          __attribute__((used))
#define __unused        __attribute__((unused))
#define __noreturn      __attribute__((noreturn))
#define __align(x)      __attribute__((aligned(x)))
#define __weak          __attribute__((weak))
#define __packed        __attribute__((packed))
#define likely(x)       __builtin_expect(!!(x), 1)
#define unlikely(x)     __builtin_expect(!!(x), 0)

#define UK_XSTR(x)      #x
#define UK_STR(x)       UK_XSTR(x)
#define UK_XCONCAT(a, b) a##b
#define UK_CONCAT(a, b) UK_XCONCAT(a, b)

#define ARRAY_SIZE(a)   (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(v, a)  (((v) + ((a) - 1)) & ~((__typeof__(v))(a) - 1))
#define ALIGN_DOWN(v, a) ((v) & ~((__typeof__(v))(a) - 1))
#define MIN(a, b)       ((a) < (b) ? (a) : (b))
#define MAX(a, b)       ((a) > (b) ? (a) : (b))

#define PAGE_SIZE       4096UL

#endif
