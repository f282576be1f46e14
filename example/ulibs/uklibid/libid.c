/*
 * uklibid: library identifiers. The table itself (uk_libid_table,
 * uk_libid_table_count and one _uk_libid_self_<lib> per library) is
 * generated per image from its library list at build time, so this
 * library's size and content depend on the image.
 */
#include <uk/libid.h>
#include <uk/libinfo.h>
#include <string.h>

UK_LIB_INFO("uklibid", "0.17", "BSD-3-Clause");

unsigned int uk_libid_count(void)
{
	return uk_libid_table_count;
}

const char *uk_libid_name(unsigned int id)
{
	if (id >= uk_libid_table_count)
		return NULL;
	return uk_libid_table[id];
}

int uk_libid_find(const char *name)
{
	unsigned int i;

	for (i = 0; i < uk_libid_table_count; i++)
		if (!strcmp(uk_libid_table[i], name))
			return (int)i;
	return -1;
}
