/*
 * Library identifiers (uklibid). The table of libraries is generated per
 * image at build time: its size depends on how many libraries the image has,
 * and each library's own ID is the symbol _uk_libid_self_<UK_LIBNAME>.
 */
#ifndef UK_LIBID_H
#define UK_LIBID_H

#include <uk/essentials.h>

#define UK_LIBID_NONE 0xffffU

unsigned int uk_libid_count(void);
const char *uk_libid_name(unsigned int id);
int uk_libid_find(const char *name);

extern const uint16_t uk_libid_table_count;
extern const char *const uk_libid_table[];

#ifdef UK_LIBNAME
extern const uint16_t UK_CONCAT(_uk_libid_self_, UK_LIBNAME);
#define uk_libid_self() ((unsigned int)UK_CONCAT(_uk_libid_self_, UK_LIBNAME))
#else
#define uk_libid_self() ((unsigned int)UK_LIBID_NONE)
#endif

#endif
