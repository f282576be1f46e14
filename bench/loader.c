/*
 * lib-spacer benchmark: loads one unikernel image into private anonymous memory the way the page
 * model of docs/metrics.md sees it, so that KSM can be measured against the model.
 *
 *   loader [--ro-only] IMAGE     (ELF32 or ELF64, little endian)
 *
 * Every PT_LOAD with memsz > 0 is placed at its virtual address modulo the page size: its file
 * bytes, then zeros up to memsz, segments in program-header order (a later segment wins where two
 * overlap). The page runs the segments cover are mapped MAP_PRIVATE|MAP_ANONYMOUS, marked
 * MADV_NOHUGEPAGE and MADV_MERGEABLE, and every page is written (so zero pages are present too and
 * KSM with use_zero_pages=1 merges them into the kernel's zero page). Then the loader prints
 * "ready <pages>" on stdout and sleeps until it is killed. With --ro-only, only pages no writable
 * PT_LOAD touches are marked MADV_MERGEABLE (code and read-only data; writable pages stay private).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096ULL
#define PT_LOAD 1

struct seg {
	uint64_t vaddr, memsz, filesz, offset;
	int writable;
};

struct run {
	uint64_t first, end; /* page numbers, end exclusive */
	unsigned char *mem;
};

static void die(const char *img, const char *what)
{
	fprintf(stderr, "loader: %s: %s%s%s\n", img, what, errno ? ": " : "", errno ? strerror(errno) : "");
	exit(1);
}

static uint64_t rd(const unsigned char *p, int n)
{
	uint64_t v = 0;
	int i;

	for (i = n - 1; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static int cmp_run(const void *a, const void *b)
{
	const struct run *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first ? 1 : 0;
}

/* Whether page number pg lies (even partly) in a writable segment. */
static int page_writable(const struct seg *segs, int nseg, uint64_t pg)
{
	int i;

	for (i = 0; i < nseg; i++)
		if (segs[i].writable && pg >= segs[i].vaddr / PAGE &&
		    pg <= (segs[i].vaddr + segs[i].memsz - 1) / PAGE)
			return 1;
	return 0;
}

/* MADV_MERGEABLE on a run's pages: all of them, or (ro_only) those of no writable segment. */
static void mark_mergeable(const char *img, const struct run *r, const struct seg *segs, int nseg,
			   int ro_only)
{
	uint64_t pg = r->first, start;

	while (pg < r->end) {
		if (ro_only && page_writable(segs, nseg, pg)) {
			pg++;
			continue;
		}
		start = pg;
		while (pg < r->end && !(ro_only && page_writable(segs, nseg, pg)))
			pg++;
		if (madvise(r->mem + (start - r->first) * PAGE, (size_t)((pg - start) * PAGE),
			    MADV_MERGEABLE))
			die(img, "madvise(MADV_MERGEABLE)");
	}
}

int main(int argc, char **argv)
{
	const char *img;
	unsigned char *data;
	long size;
	FILE *f;
	int is64, i, nseg = 0, nrun = 0, phnum, phentsize, ro_only = 0;
	uint64_t phoff, pages = 0;
	struct seg *segs;
	struct run *runs;

	if (argc == 3 && !strcmp(argv[1], "--ro-only"))
		ro_only = 1;
	else if (argc != 2) {
		fprintf(stderr, "usage: loader [--ro-only] IMAGE\n");
		return 2;
	}
	img = argv[argc - 1];
	f = fopen(img, "rb");
	if (!f)
		die(img, "cannot open");
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		die(img, "cannot size");
	data = malloc((size_t)size + 1);
	if (!data || fread(data, 1, (size_t)size, f) != (size_t)size)
		die(img, "cannot read");
	fclose(f);
	errno = 0;
	if (size < 52 || memcmp(data, "\177ELF", 4) || data[5] != 1)
		die(img, "not a little-endian ELF file");
	is64 = data[4] == 2;
	phoff = is64 ? rd(data + 32, 8) : rd(data + 28, 4);
	phentsize = (int)rd(data + (is64 ? 54 : 42), 2);
	phnum = (int)rd(data + (is64 ? 56 : 44), 2);
	if (phoff + (uint64_t)phnum * (uint64_t)phentsize > (uint64_t)size)
		die(img, "program headers beyond the end of the file");
	segs = calloc((size_t)phnum + 1, sizeof(*segs));
	runs = calloc((size_t)phnum + 1, sizeof(*runs));
	if (!segs || !runs)
		die(img, "out of memory");
	for (i = 0; i < phnum; i++) {
		const unsigned char *p = data + phoff + (uint64_t)i * (uint64_t)phentsize;
		struct seg s;

		if (rd(p, 4) != PT_LOAD)
			continue;
		s.writable = (rd(p + (is64 ? 4 : 24), 4) & 2) != 0; /* PF_W */
		if (is64) {
			s.offset = rd(p + 8, 8); s.vaddr = rd(p + 16, 8);
			s.filesz = rd(p + 32, 8); s.memsz = rd(p + 40, 8);
		} else {
			s.offset = rd(p + 4, 4); s.vaddr = rd(p + 8, 4);
			s.filesz = rd(p + 16, 4); s.memsz = rd(p + 20, 4);
		}
		if (s.memsz == 0)
			continue;
		if (s.filesz > s.memsz || s.offset + s.filesz > (uint64_t)size)
			die(img, "bad PT_LOAD");
		segs[nseg++] = s;
		runs[nrun].first = s.vaddr / PAGE;
		runs[nrun].end = (s.vaddr + s.memsz - 1) / PAGE + 1;
		nrun++;
	}
	if (!nseg)
		die(img, "no PT_LOAD with memsz > 0");
	/* Sort and merge overlapping or adjacent page runs. */
	qsort(runs, (size_t)nrun, sizeof(*runs), cmp_run);
	{
		int w = 0;

		for (i = 1; i < nrun; i++) {
			if (runs[i].first <= runs[w].end) {
				if (runs[i].end > runs[w].end)
					runs[w].end = runs[i].end;
			} else {
				runs[++w] = runs[i];
			}
		}
		nrun = w + 1;
	}
	for (i = 0; i < nrun; i++) {
		size_t len = (size_t)((runs[i].end - runs[i].first) * PAGE);

		runs[i].mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (runs[i].mem == MAP_FAILED)
			die(img, "mmap");
		if (madvise(runs[i].mem, len, MADV_NOHUGEPAGE))
			die(img, "madvise(MADV_NOHUGEPAGE)");
		mark_mergeable(img, &runs[i], segs, nseg, ro_only);
		/* Fault every page in (written as zeros first): the model counts every page. */
		memset(runs[i].mem, 0, len);
		pages += runs[i].end - runs[i].first;
	}
	/* Segments in program-header order: file bytes, then zeros to memsz. */
	for (i = 0; i < nseg; i++) {
		const struct seg *s = &segs[i];
		int r;

		for (r = 0; r < nrun; r++)
			if (s->vaddr / PAGE >= runs[r].first && s->vaddr / PAGE < runs[r].end)
				break;
		{
			unsigned char *dst = runs[r].mem + (s->vaddr - runs[r].first * PAGE);

			memcpy(dst, data + s->offset, (size_t)s->filesz);
			memset(dst + s->filesz, 0, (size_t)(s->memsz - s->filesz));
		}
	}
	free(data);
	printf("ready %llu\n", (unsigned long long)pages);
	fflush(stdout);
	for (;;)
		pause();
}
