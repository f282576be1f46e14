/*
 * Init table: every micro-library may register functions that run once at
 * boot, before the application's main(). Entries are function pointers in
 * sections named .uk_inittab<class><prio>; the platform linker script sorts
 * them by name between uk_inittab_start and uk_inittab_end, and ukboot calls
 * them in that order.
 */
#ifndef UK_INIT_H
#define UK_INIT_H

#include <uk/essentials.h>

typedef int (*uk_init_func_t)(void);

#define UK_INIT_CLASS_EARLY  1
#define UK_INIT_CLASS_PLAT   2
#define UK_INIT_CLASS_LIB    3
#define UK_INIT_CLASS_ROOTFS 4
#define UK_INIT_CLASS_SYS    5
#define UK_INIT_CLASS_LATE   6

#define uk_initcall_class_prio(fn, cls, prio)                               \
	static const uk_init_func_t __used                                  \
	__section(".uk_inittab" UK_STR(cls) UK_STR(prio))                   \
	UK_CONCAT(__uk_inittab_, fn) = (fn)

#define uk_early_initcall(fn, prio) uk_initcall_class_prio(fn, 1, prio)
#define uk_plat_initcall(fn, prio)  uk_initcall_class_prio(fn, 2, prio)
#define uk_lib_initcall(fn, prio)   uk_initcall_class_prio(fn, 3, prio)
#define uk_sys_initcall(fn, prio)   uk_initcall_class_prio(fn, 5, prio)
#define uk_late_initcall(fn, prio)  uk_initcall_class_prio(fn, 6, prio)

/* Boundaries, defined by the platform linker script. */
extern const uk_init_func_t uk_inittab_start[];
extern const uk_init_func_t uk_inittab_end[];

#endif
