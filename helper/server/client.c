/*
 * spacer-client: what make runs for `spacer link`, `spacer finish` and the image rule's strip and
 * `spacer compact` (Linker.uk). It hands the command line, folder and environment to the link
 * server (server/serve.ts) over a Unix socket and relays its output and exit status, so that a
 * link step does not start Node three times. With no
 * server, it starts one in the background for the next link and runs this command itself; so it
 * does when the server says so (a rebuilt helper) or when SPACER_SERVER=off.
 *
 * Usage: spacer-client NODE CLI ARGS...   (as `NODE CLI ARGS...` would run)
 *        spacer-client --strip NODE CLI FLAGS... -- STRIP STRIP-ARGS...
 *        spacer-client --link NODE CLI LINK-ARGS... --spacer-finish FINISH-ARGS... --spacer-ld LD LD-ARGS...
 * The second form is the kvm image rule's STRIP through the server (Linker.uk): it runs strip,
 * then `NODE CLI compact FLAGS... OUT` (OUT: strip's argument after -o) as the first form, in
 * one process (scripts/spacer-strip.sh does the same with a shell, when Node runs each command).
 * The third is the `.dbg` rule's LD: `NODE CLI LINK-ARGS...` (the script ld reads), then ld, then
 * `NODE CLI FINISH-ARGS... OUT` (OUT: ld's -o), the link step in one process. A failing link runs
 * no ld; a failing finish removes OUT, so that make links again. SPACER_CLIENT_TIMES=FILE appends
 * `link US`, `ld US` and `finish US` lines to FILE, microseconds each took (the bench's figures).
 * Socket: $XDG_RUNTIME_DIR (else /tmp) / spacer-<uid> / <hash of NODE and CLI>.sock
 * Wire format: server/protocol.ts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Runs the command here: `NODE CLI ARGS...`. */
static void direct(char **cmd)
{
	execvp(cmd[0], cmd);
	fprintf(stderr, "spacer: %s: %s; install Node.js >= 20 or set SPACER_NODE\n",
		cmd[0], strerror(errno));
	_exit(127);
}

/*
 * Runs `argv` as a child and gives its exit status as a shell would. posix_spawn (a vfork under
 * glibc): no copy of this process to start ld or strip, half a millisecond less per link step.
 */
static int run_child(char **argv)
{
	pid_t pid;
	int status;
	int err = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);

	if (err) {
		fprintf(stderr, "spacer: %s: %s\n", argv[0], strerror(err));
		return err == ENOENT ? 127 : 1;
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	if (!WIFEXITED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* Without the server: `cmd` replaces this process when it is the last thing to run, else a child. */
static int fallback(char **cmd, int last)
{
	if (last)
		direct(cmd);
	return run_child(cmd);
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* The folder of this user's sockets (made 0700; refused if someone else owns it). */
static int socket_dir(char *dir, size_t size)
{
	const char *base = getenv("XDG_RUNTIME_DIR");
	struct stat st;

	if (!base || !*base || stat(base, &st) || !S_ISDIR(st.st_mode))
		base = "/tmp";
	if ((size_t)snprintf(dir, size, "%s/spacer-%u", base, (unsigned)getuid()) >= size)
		return -1;
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -1;
	if (lstat(dir, &st) || !S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
	    (st.st_mode & 077))
		return -1;
	return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n)
{
	char *c = p;

	while (n) {
		ssize_t r = read(fd, c, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

/*
 * Starts `NODE CLI server --socket PATH` in the background, detached from make's files; once per
 * client (the link step's second request finds the one its first started, or runs Node itself).
 */
static void start_server(char **cmd, const char *path, const char *log)
{
	static int started;

	if (started++)
		return;
	pid_t pid = fork();

	if (pid < 0)
		return;
	if (pid) {
		waitpid(pid, NULL, 0);
		return;
	}
	setsid();
	if (fork())
		_exit(0);
	int in = open("/dev/null", O_RDONLY);
	struct stat st;
	/*
	 * Appended to: two clients may each start a server at once (the second finds the first's
	 * socket and stops), and a truncate would cut the first's log under it. Emptied past 1 MiB.
	 */
	int big = !stat(log, &st) && st.st_size > (1 << 20);
	int out = open(log, O_WRONLY | O_CREAT | O_CLOEXEC | (big ? O_TRUNC : O_APPEND), 0600);

	if (in < 0 || out < 0)
		_exit(1);
	dup2(in, 0);
	dup2(out, 1);
	dup2(out, 2);
	/* Nothing of make's (its pipes, the jobserver) stays open in the server. */
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	char *argv[] = { cmd[0], cmd[1], "server", "--socket", (char *)path, NULL };

	execvp(argv[0], argv);
	_exit(127);
}

/* The file a tool's command line `argv[from..argc)` writes: its last `-o` argument (NULL: none). */
static const char *output_of(int argc, char **argv, int from)
{
	const char *out = NULL;

	for (int i = from; i + 1 < argc; i++)
		if (!strcmp(argv[i], "-o"))
			out = argv[i + 1];
	return out;
}

/*
 * `--strip NODE CLI FLAGS... -- STRIP ARGS...`: runs strip and gives its status (-1: it went
 * well); then `*cmd` is `NODE CLI compact FLAGS... OUT`, or NULL when strip writes no -o file.
 */
static int strip_first(int argc, char **argv, char ***cmd)
{
	int sep = 4;

	while (sep < argc && strcmp(argv[sep], "--"))
		sep++;
	if (sep + 1 >= argc) {
		fprintf(stderr, "usage: spacer-client --strip NODE CLI FLAGS... -- STRIP ARGS...\n");
		return 2;
	}
	int code = run_child(argv + sep + 1);

	if (code)
		return code;
	const char *out = output_of(argc, argv, sep + 1);

	*cmd = NULL;
	if (!out)
		return 0;
	/* argv[0], NODE, CLI, "compact", the FLAGS, OUT, NULL */
	char **c = calloc((size_t)(sep - 4) + 6, sizeof(*c));

	if (!c) {
		fprintf(stderr, "spacer: out of memory\n");
		return 1;
	}
	int n = 0;

	c[n++] = argv[0];
	c[n++] = argv[2];
	c[n++] = argv[3];
	c[n++] = "compact";
	for (int i = 4; i < sep; i++)
		c[n++] = argv[i];
	c[n++] = (char *)out;
	*cmd = c;
	return -1;
}

/* Appends `s` and its NUL to the request. */
static int put(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t n = strlen(s) + 1;

	if (*len + n > *cap) {
		size_t c = (*cap ? *cap : 4096);

		while (c < *len + n)
			c *= 2;
		char *b = realloc(*buf, c);

		if (!b)
			return -1;
		*buf = b;
		*cap = c;
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	return 0;
}

/*
 * Runs `cmd` (`NODE CLI ARGS...`, NULL-terminated) through the server and gives its exit status;
 * without one (none answers, SPACER_SERVER=off, a stale server), Node runs it (fallback).
 */
static int serve(char **cmd, int last)
{
	char dir[256], path[sizeof(((struct sockaddr_un *)0)->sun_path)], log[300], num[32];
	const char *off = getenv("SPACER_SERVER");
	int argc = 0;

	while (cmd[argc])
		argc++;
	if (off && (!strcmp(off, "off") || !strcmp(off, "0")))
		return fallback(cmd, last);
	if (socket_dir(dir, sizeof(dir)))
		return fallback(cmd, last);
	uint64_t h = fnv1a(0xcbf29ce484222325ULL, cmd[0], strlen(cmd[0]) + 1);

	h = fnv1a(h, cmd[1], strlen(cmd[1]));
	if ((size_t)snprintf(path, sizeof(path), "%s/%016llx.sock", dir,
			     (unsigned long long)h) >= sizeof(path))
		return fallback(cmd, last);
	snprintf(log, sizeof(log), "%s/%016llx.log", dir, (unsigned long long)h);

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	strcpy(sa.sun_path, path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		if (fd >= 0)
			close(fd);
		start_server(cmd, path, log);
		return fallback(cmd, last);
	}

	/* The request: magic, folder, argv, environment. */
	char *buf = NULL, cwd[4096];
	size_t len = 4, cap = 0;
	int bad = put(&buf, &len, &cap, "") || !getcwd(cwd, sizeof(cwd));

	len = 4;
	bad = bad || put(&buf, &len, &cap, "spacer-request 1") || put(&buf, &len, &cap, cwd);
	snprintf(num, sizeof(num), "%d", argc - 2);
	bad = bad || put(&buf, &len, &cap, num);
	for (int i = 2; i < argc && !bad; i++)
		bad = put(&buf, &len, &cap, cmd[i]);
	int envc = 0;

	for (char **e = environ; *e; e++)
		envc++;
	snprintf(num, sizeof(num), "%d", envc);
	bad = bad || put(&buf, &len, &cap, num);
	for (char **e = environ; *e && !bad; e++)
		bad = put(&buf, &len, &cap, *e);
	uint32_t body = (uint32_t)(len - 4);

	if (!bad)
		memcpy(buf, &body, 4); /* little-endian hosts (x86-64, arm64) */
	if (bad || write_all(fd, buf, len)) {
		free(buf);
		close(fd);
		return fallback(cmd, last);
	}
	free(buf);

	/* The answer: output frames, then the exit status. */
	int said = 0;
	unsigned char head[5];

	while (!read_all(fd, head, 5)) {
		uint32_t n;

		memcpy(&n, head + 1, 4);
		char *data = malloc(n ? n : 1);

		if (!data || read_all(fd, data, n)) {
			free(data);
			break;
		}
		if (head[0] == 'o' || head[0] == 'e') {
			said = 1;
			write_all(head[0] == 'o' ? 1 : 2, data, n);
		} else if (head[0] == 'x' && n == 4) {
			int32_t code;

			memcpy(&code, data, 4);
			free(data);
			close(fd);
			return code;
		} else if (head[0] == 'r' && !said) {
			free(data);
			close(fd);
			return fallback(cmd, last);
		}
		free(data);
	}
	close(fd);
	if (!said)
		return fallback(cmd, last);
	fprintf(stderr, "spacer: the link server (%s) stopped during the command; run make "
		"again, or set SPACER_SERVER=off to run without it (its log: %s)\n", path, log);
	return 1;
}

static int64_t now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/*
 * `--link NODE CLI LINK-ARGS... --spacer-finish FINISH-ARGS... --spacer-ld LD LD-ARGS...`: the
 * link (served), ld, then the finish of ld's -o file (served).
 */
static int link_step(int argc, char **argv)
{
	int fin = 4, ld;

	while (fin < argc && strcmp(argv[fin], "--spacer-finish"))
		fin++;
	for (ld = fin; ld < argc && strcmp(argv[ld], "--spacer-ld"); ld++)
		;
	if (argc < 4 || ld + 1 >= argc) {
		fprintf(stderr, "usage: spacer-client --link NODE CLI LINK-ARGS... --spacer-finish "
			"FINISH-ARGS... --spacer-ld LD LD-ARGS...\n");
		return 2;
	}
	const char *out = output_of(argc, argv, ld + 1);

	if (!out) {
		fprintf(stderr, "spacer: the link command has no -o: %s\n", argv[ld + 1]);
		return 2;
	}
	/* NODE CLI + the larger of the two argument lists + OUT + NULL */
	char **cmd = calloc((size_t)argc + 4, sizeof(*cmd));

	if (!cmd) {
		fprintf(stderr, "spacer: out of memory\n");
		return 1;
	}
	int n = 0;

	cmd[n++] = argv[2];
	cmd[n++] = argv[3];
	for (int i = 4; i < fin; i++)
		cmd[n++] = argv[i];
	cmd[n] = NULL;
	int64_t t0 = now_us();
	int code = serve(cmd, 0);
	int64_t t1 = now_us();

	if (code)
		return code;
	code = run_child(argv + ld + 1);
	int64_t t2 = now_us();

	if (!code) {
		n = 2;
		for (int i = fin + 1; i < ld; i++)
			cmd[n++] = argv[i];
		cmd[n++] = (char *)out;
		cmd[n] = NULL;
		code = serve(cmd, 0);
		/* Not finished: make must not take this image as up to date. */
		if (code)
			unlink(out);
	}
	const char *times = getenv("SPACER_CLIENT_TIMES");
	FILE *f = times && *times ? fopen(times, "a") : NULL;

	if (f) {
		fprintf(f, "link %lld\nld %lld\nfinish %lld\n", (long long)(t1 - t0),
			(long long)(t2 - t1), (long long)(now_us() - t2));
		fclose(f);
	}
	return code;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "--link"))
		return link_step(argc, argv);
	if (argc > 1 && !strcmp(argv[1], "--strip")) {
		if (argc < 4) {
			fprintf(stderr, "usage: spacer-client --strip NODE CLI FLAGS... -- STRIP ARGS...\n");
			return 2;
		}
		int code = strip_first(argc, argv, &argv);

		if (code >= 0)
			return code;
		for (argc = 0; argv[argc]; argc++)
			;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: spacer-client NODE CLI ARGS...\n");
		return 2;
	}
	return serve(argv + 1, 1);
}
