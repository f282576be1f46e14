/*
 * kvmplat: static TLS for the single boot thread (x86_64 TLS variant II).
 * The thread pointer (FS base) points just past the TLS block and at itself;
 * the linker resolves local-exec accesses as negative offsets from it, the
 * block size being rounded up to the TLS segment's alignment. This library
 * owns an initialised TLS word aligned to TLS_ALIGN so that every image has a
 * non-empty .tdata (the tls_load segment is never empty) and a known segment
 * alignment. The block is carved from the start of the heap region, so any
 * TLS segment size works (a layout may spread .tdata/.tbss over pages).
 */
#include <uk/plat.h>
#include <string.h>
#include "io.h"

#define TLS_ALIGN       64
#define MSR_FS_BASE     0xC0000100

__thread uint64_t kvmplat_tls_marker __align(TLS_ALIGN) = 0x6b766d706c6174ULL;

void kvmplat_tls_init(void)
{
	size_t tdata = (size_t)(_etdata - _tls_start);
	size_t memsz = (size_t)(_tls_end - _tls_start);
	size_t block = ALIGN_UP(memsz, TLS_ALIGN);
	uint8_t *area = kvmplat_reserve(block + sizeof(uintptr_t), TLS_ALIGN);
	uintptr_t tp;

	if (!area)
		kvmplat_crash(0x7e, NULL);

	memcpy(area, _tls_start, tdata);
	memset(area + tdata, 0, block - tdata);
	tp = (uintptr_t)area + block;
	*(uintptr_t *)tp = tp;
	wrmsr(MSR_FS_BASE, tp);
}

uint64_t kvmplat_tls_check(void)
{
	return kvmplat_tls_marker;
}
