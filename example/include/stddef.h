/* Minimal freestanding <stddef.h> for the lib-spacer example workspace. */
#ifndef EXAMPLE_STDDEF_H
#define EXAMPLE_STDDEF_H

typedef __SIZE_TYPE__ size_t;
typedef __PTRDIFF_TYPE__ ptrdiff_t;
typedef long ssize_t;

#ifndef NULL
#define NULL ((void *)0)
#endif

#define offsetof(type, member) __builtin_offsetof(type, member)

#endif
