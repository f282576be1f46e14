/*
 * ukboot: runs the init table, reports the image's libraries, and calls the
 * application's main(). The image name is compiled in (CONFIG_UK_NAME), as
 * in Unikraft, so this library is built once per application.
 */
#include <uk/plat.h>
#include <uk/init.h>
#include <uk/libinfo.h>
#include <uk/libid.h>
#include <uk/console.h>
#include <stdio.h>
#include <string.h>

#ifndef CONFIG_UK_NAME
#define CONFIG_UK_NAME "unikraft"
#endif

#define MAX_LIBINFO 32

UK_LIB_INFO("ukboot", "0.17", "BSD-3-Clause");

const char ukboot_app_name[] = CONFIG_UK_NAME;

extern int main(int argc, char *argv[]);

static char *app_argv[2] = { (char *)ukboot_app_name, NULL };

/*
 * The name again, as a local array: the compiler builds it from immediates in the code, so this
 * library's *code* differs per app, not only its data (Unikraft's boot code has such constants).
 */
static int name_matches(void)
{
	volatile char local[] = CONFIG_UK_NAME;
	unsigned int i;

	for (i = 0; i < sizeof(local); i++)
		if (local[i] != ukboot_app_name[i])
			return 0;
	return 1;
}

static void report_libraries(void)
{
	const struct uk_libinfo *li, *sorted[MAX_LIBINFO];
	unsigned int n = 0, i, j;
	char line[512];
	int len;

	/* Print in name order, so the output does not depend on the layout. */
	for (li = uk_libinfo_start; li < uk_libinfo_end && n < MAX_LIBINFO;
	     li++) {
		if (li->magic != UK_LIBINFO_MAGIC)
			continue;
		for (i = n; i > 0 && strcmp(sorted[i - 1]->name, li->name) > 0;
		     i--)
			sorted[i] = sorted[i - 1];
		sorted[i] = li;
		n++;
	}
	len = snprintf(line, sizeof(line), "libinfo:");
	for (j = 0; j < n && len < (int)sizeof(line); j++)
		len += snprintf(line + len, sizeof(line) - (size_t)len,
				" %s-%s", sorted[j]->name, sorted[j]->version);
	uk_pr_info("%s\n", line);
}

int ukboot_entry(void)
{
	const uk_init_func_t *fn;
	unsigned int count = 0;
	int rc;

	if (!name_matches())
		return 99;
	for (fn = uk_inittab_start; fn < uk_inittab_end; fn++) {
		rc = (*fn)();
		count++;
		if (rc < 0) {
			uk_pr_info("init function %u failed: %d\n", count, rc);
			uk_console_flush();
			return 100 + (int)count;
		}
	}
	uk_pr_info("%s: %u libraries, %u init functions\n", ukboot_app_name,
		   uk_libid_count(), count);
	report_libraries();

	rc = main(1, app_argv);

	uk_pr_info("main returned %d\n", rc);
	uk_console_flush();
	return rc;
}
