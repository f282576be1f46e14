/*
 * faas-parse: parses a configuration string. Uses functions and printf
 * formats that only the NOLIBC_FULL variant of nolibc provides.
 */
#define NOLIBC_FULL_API 1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uk/hash.h>

static const char config[] =
	"name=spacer;pages=4096;ratio=0x1f;offset=-42;mode=ksm-merge;"
	"octal=0755;tags=alpha,beta,gamma";

int main(int argc __unused, char *argv[] __unused)
{
	char buf[sizeof(config)];
	char out[512];
	char *save, *tok;
	unsigned int fields = 0;
	int len = 0;
	uint8_t d[UK_SHA256_DIGEST_LEN];
	char hex[2 * UK_SHA256_DIGEST_LEN + 1];

	printf("faas-parse: start\n");
	strcpy(buf, config);
	for (tok = strtok_r(buf, ";", &save); tok;
	     tok = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(tok, '=');
		const char *key, *val;

		if (!eq)
			continue;
		*eq = '\0';
		key = tok;
		val = eq + 1;
		fields++;
		if (!strcmp(key, "pages") || !strcmp(key, "ratio")
		    || !strcmp(key, "octal")) {
			unsigned long v = strtoul(val, NULL, 0);

			printf("%-8s| %8lu | oct %o\n", key, v, (unsigned int)v);
			printf("%-8s| hex %lx bin %b\n", key, v, (unsigned int)v);
		} else if (!strcmp(key, "offset")) {
			printf("%-8s| %+d | %+d\n", key, atoi(val),
			       -atoi(val));
		} else if (!strcmp(key, "tags")) {
			char tags[64], *s2, *t;
			unsigned int n = 0;

			strcpy(tags, val);
			for (t = strtok_r(tags, ",", &s2); t;
			     t = strtok_r(NULL, ",", &s2))
				printf("%-8s| tag %u: %.3s (%u chars)\n", key,
				       n++, t, (unsigned int)strnlen(t, 16));
		} else {
			printf("%-8s| %s%s\n", key, val,
			       strstr(val, "ksm") ? " [ksm]" : "");
		}
		len += snprintf(out + len, sizeof(out) - (size_t)len, "%s=%s\n",
				key, val);
	}
	uk_sha256(out, (size_t)len, d);
	printf("fields %u, canonical sha256 %s\n", fields,
	       uk_hex(hex, d, sizeof(d)));
	printf("faas-parse: done\n");
	return 0;
}
