/*
 * Early boot table: functions that kvmplat calls with the boot information
 * before any init table entry runs (no allocator, no console yet).
 * Sections .uk_boot_earlytab<prio>, gathered by earlytab.lds.
 */
#ifndef UK_BOOT_H
#define UK_BOOT_H

#include <uk/plat.h>

typedef void (*uk_boot_early_func_t)(struct ukplat_bootinfo *bi);

#define UK_BOOT_EARLYTAB_ENTRY(fn, prio)                                    \
	static const uk_boot_early_func_t __used                            \
	__section(".uk_boot_earlytab" UK_STR(prio))                         \
	UK_CONCAT(__uk_boot_earlytab_, fn) = (fn)

extern const uk_boot_early_func_t uk_boot_earlytab_start[];
extern const uk_boot_early_func_t uk_boot_earlytab_end[];

#endif
