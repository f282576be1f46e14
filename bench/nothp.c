/*
 * lib-spacer benchmark: runs a command with transparent huge pages disabled for its process
 * (prctl PR_SET_THP_DISABLE, inherited across execve), so that qemu's guest RAM stays in 4 KiB
 * pages KSM can merge one by one.
 *
 *   nothp COMMAND [ARG]...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: nothp COMMAND [ARG]...\n");
		return 2;
	}
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)) {
		fprintf(stderr, "nothp: prctl(PR_SET_THP_DISABLE): %s\n", strerror(errno));
		return 1;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "nothp: %s: %s\n", argv[1], strerror(errno));
	return 127;
}
