/*
 * Per-library information record. Each micro-library places one record in
 * the .uk_libinfo section; the libinfo.lds extension script gathers them into
 * one output section bounded by uk_libinfo_start / uk_libinfo_end.
 */
#ifndef UK_LIBINFO_H
#define UK_LIBINFO_H

#include <uk/essentials.h>

#define UK_LIBINFO_MAGIC 0x4c49424fU /* "LIBO" */

struct uk_libinfo {
	uint32_t magic;
	uint32_t size;      /* sizeof(struct uk_libinfo), for forward compat */
	const char *name;
	const char *version;
	const char *license;
};

#define UK_LIB_INFO(libname, libversion, liblicense)                        \
	static const struct uk_libinfo __used __align(8)                    \
	__section(".uk_libinfo") __uk_libinfo_record = {                    \
		.magic = UK_LIBINFO_MAGIC,                                  \
		.size = sizeof(struct uk_libinfo),                          \
		.name = (libname),                                          \
		.version = (libversion),                                    \
		.license = (liblicense),                                    \
	}

extern const struct uk_libinfo uk_libinfo_start[];
extern const struct uk_libinfo uk_libinfo_end[];

#endif
