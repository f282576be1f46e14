// The page model of docs/metrics.md: an image's memory is its PT_LOAD segments (file bytes, then
// zeros up to memsz) cut into 4 KiB pages at page-aligned virtual addresses; a page partly covered
// by two segments holds both. A zero page is a page whose 4096 bytes are all zero (KSM with
// use_zero_pages=1 merges those into the kernel's zero page).
//
// Pages are named by their page number (vaddr / 4096), a JavaScript number: that is exact for every
// 64-bit address (at most 2^52). Only pages that receive file bytes are built and hashed; pages
// covered by memsz alone are zero by construction and only counted, so a large .bss costs nothing.
import { createHash } from 'node:crypto';
import { type ElfFile, num, type ProgramHeader } from './elf.js';

export const PAGE_SIZE = 4096;
const PAGE_BITS = 12n;
const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/** A run of pages: [first page number, end page number), end exclusive. */
export type PageRange = readonly [first: number, end: number];

/** Pages of an image: how many, which, and the content hash of each non-zero one. */
export interface PageScan {
  /** Pages in memory (distinct page-aligned addresses covered by a PT_LOAD with memsz > 0). */
  pages: number;
  /** Pages whose content is all zero. */
  zeroPages: number;
  /** The pages in memory as sorted, merged runs of page numbers. */
  ranges: PageRange[];
  /** Every non-zero page: page number → content hash, in ascending page order. */
  nonzero: Map<number, string>;
}

type Load = Pick<ProgramHeader, 'vaddr' | 'memsz'> &
  Partial<Pick<ProgramHeader, 'offset' | 'filesz'>>;

/** Sorts and merges page runs (overlapping or adjacent runs become one). */
function mergeRanges(runs: [number, number][]): [number, number][] {
  runs.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: [number, number][] = [];
  for (const [s, e] of runs) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/** The pages a byte range [addr, addr + size) overlaps, as a run; null when size is 0. */
export function pagesOf(addr: bigint, size: bigint): [number, number] | null {
  if (size <= 0n) return null;
  return [
    num(addr >> PAGE_BITS, 'page number'),
    num((addr + size - 1n) >> PAGE_BITS, 'page number') + 1,
  ];
}

/** The pages loadable segments cover (segments with memsz 0 cover none), sorted and merged. */
export function loadedPageRanges(loads: readonly Load[]): PageRange[] {
  const runs: [number, number][] = [];
  for (const p of loads) {
    const r = pagesOf(p.vaddr, p.memsz);
    if (r) runs.push(r);
  }
  return mergeRanges(runs);
}

/** Number of pages in a set of runs. */
export function countPages(ranges: readonly PageRange[]): number {
  let n = 0;
  for (const [s, e] of ranges) n += e - s;
  return n;
}

/** Whether a page number lies in sorted, merged runs. */
export function inRanges(ranges: readonly PageRange[], page: number): boolean {
  let lo = 0,
    hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const [s, e] = ranges[mid];
    if (page < s) hi = mid - 1;
    else if (page >= e) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Content hash of one page (SHA-256, as a 32-character latin1 string: a compact Map/Set key). */
export function pageHash(page: Buffer): string {
  return createHash('sha256').update(page).digest().toString('latin1');
}

export function isZeroPage(page: Buffer): boolean {
  return page.equals(ZERO_PAGE);
}

/**
 * A PT_LOAD in numbers relative to its first page: bytes [so, so+filesz) come from the file at
 * `off`.
 */
interface Seg {
  sp: number;
  so: number;
  filesz: number;
  memsz: number;
  off: number;
}

function segsOf(elf: ElfFile): Seg[] {
  return elf.loads
    .filter((p) => p.memsz > 0n)
    .map((p) => ({
      sp: num(p.vaddr >> PAGE_BITS, 'page number'),
      so: Number(p.vaddr & 0xfffn),
      filesz: num(p.filesz, 'segment size'),
      memsz: num(p.memsz, 'segment size'),
      off: num(p.offset, 'segment offset'),
    }));
}

/**
 * Writes page `page` as the loader leaves it into `out` (4096 bytes): segments in program header
 * order, each copying its file bytes and zeroing the rest of its memsz, so a later segment wins
 * where two overlap byte for byte (as qemu's multiboot loader and Linux do).
 */
function fillPage(data: Buffer, segs: readonly Seg[], page: number, out: Buffer): void {
  out.fill(0);
  for (const s of segs) {
    const base = (page - s.sp) * PAGE_SIZE; // page start, in bytes from the segment's first page
    const ms = Math.max(s.so, base),
      me = Math.min(s.so + s.memsz, base + PAGE_SIZE);
    if (ms >= me) continue;
    const fe = Math.max(ms, Math.min(s.so + s.filesz, me));
    if (fe > ms) data.copy(out, ms - base, s.off + (ms - s.so), s.off + (fe - s.so));
    if (me > fe) out.fill(0, fe - base, me - base);
  }
}

/** Contents of one page of the image's memory (all zero for a page no segment covers). */
export function pageContent(elf: ElfFile, page: number): Buffer {
  const out = Buffer.alloc(PAGE_SIZE);
  fillPage(elf.data, segsOf(elf), page, out);
  return out;
}

/** Cuts an image's memory into pages and hashes each non-zero page once. */
export function scanPages(elf: ElfFile): PageScan {
  const segs = segsOf(elf);
  const ranges = loadedPageRanges(elf.loads);
  // Only pages that receive file bytes can be non-zero.
  const fileRuns = mergeRanges(
    segs
      .filter((s) => s.filesz > 0)
      .map((s) => [s.sp, s.sp + Math.floor((s.so + s.filesz - 1) / PAGE_SIZE) + 1]),
  );
  const nonzero = new Map<number, string>();
  const scratch = Buffer.allocUnsafe(PAGE_SIZE);
  for (const [first, end] of fileRuns) {
    for (let p = first; p < end; p++) {
      fillPage(elf.data, segs, p, scratch);
      if (!isZeroPage(scratch)) nonzero.set(p, pageHash(scratch));
    }
  }
  const pages = countPages(ranges);
  return { pages, zeroPages: pages - nonzero.size, ranges, nonzero };
}

/** Hex address of a page number (exact for any 64-bit address). */
export function pageAddr(page: number): string {
  return '0x' + (BigInt(page) << PAGE_BITS).toString(16);
}
