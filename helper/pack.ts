// Packing of the final (stripped) image: the file stores the loaded bytes, not the padding.
//
// Spacer pads µlibs to their map slots and groups to pages. That padding is in memory, where it is
// what makes pages identical; in the file it is only zeros. A loader reads program headers and
// zero-fills each segment from its file size to its memory size (qemu's multiboot loader does,
// booting the example images and real Unikraft ones here), so the padding need not be stored:
//   - each PT_LOAD is cut where a run of zeros between two sections (or one of Spacer's own zero
//     pads, `.spacer.pad.*`) crosses a page boundary: the piece before keeps the zeros up to the
//     page holding the next bytes as memory size (filesz < memsz), the next piece starts on that
// page (Unikraft's boot asserts every loaded segment starts on a page). The pieces cover exactly
// the
//     memory the segment covered: no page that was loaded is left out (Unikraft 0.17 treats an
//     unloaded page inside the image as free memory).
//   - file offsets no longer follow addresses modulo the page size: each piece is placed at the
//     next offset congruent to its address modulo 16 (its TLS alignment for the TLS piece), and
//     p_align says so. Unikraft's own multiboot step already shifts every offset of the ELF64 by
//     its ELF32 headers, so its loaders never relied on page-congruent offsets.
// Section headers follow their bytes (a Spacer pad becomes NOBITS; any other section keeps its
// bytes in the file even when they are zeros: the build patches some, like .uk_bootinfo). Every
// loaded byte is
// compared with the original before the file is replaced, atomically. Running it twice is a no-op.
import { SpacerError } from './errors.js';
import {
  ElfFile,
  ET_EXEC,
  PT_LOAD,
  PT_TLS,
  SHF_ALLOC,
  SHT_NOBITS,
  SHT_STRTAB,
  type ProgramHeader,
  type Section,
} from './elf.js';
import { EHDR, PHDR, SHDR, writeFields } from './elflayout.js';
import { writeFileAtomic } from './util/files.js';
import { PAGE_N } from './util/units.js';

/** Zero runs shorter than this stay in the file: a new program header costs 32 or 56 bytes. */
export const PACK_MIN_GAP = 512;
/** Spacer's own zero pads (a region's start when an image lacks its first µlib): never patched. */
const PAD = /^\.spacer\.pad\./;

export interface PackResult {
  image: string;
  before: number;
  after: number;
  loadsBefore: number;
  loadsAfter: number;
  /** Zero bytes of loaded memory that the file no longer stores. */
  dropped: number;
  alreadyPacked: boolean;
  /** The packed file (the input's bytes when already packed). */
  file: Buffer;
}

/** A PT_LOAD of the packed file: file bytes [vaddr, fileEnd), zero fill up to memEnd. */
interface Piece {
  vaddr: bigint;
  paddr: bigint;
  fileEnd: bigint;
  memEnd: bigint;
  flags: number;
  src: ProgramHeader;
  align: bigint;
  offset: bigint;
}

/** A zero tail no section covers: it gets a NOBITS section header of its own. */
interface ZeroTail {
  addr: bigint;
  size: bigint;
  flags: bigint;
}

/** The packed file as it is being laid out. */
interface Layout {
  elf: ElfFile;
  pieces: Piece[];
  /** File offset of each section's bytes. */
  secOff: Map<number, bigint>;
  /** Allocated sections whose bytes are all zeros and no longer in the file. */
  nobits: Set<number>;
  tails: ZeroTail[];
  /** The section name table, with `.spacer.zero` added when needed, and that name's offset. */
  names: Buffer;
  tailName: number;
  /** Bytes to place, at their file offsets. */
  body: [bigint, Buffer][];
  shoff: bigint;
}

const max = (a: bigint, b: bigint) => (a > b ? a : b);
const min = (a: bigint, b: bigint) => (a < b ? a : b);
const byStart = (a: [bigint, bigint], b: [bigint, bigint]) =>
  a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
const alignTo = (o: bigint, a: bigint, want: bigint) => o + ((((want - o) % a) + a) % a);

function isZero(data: Buffer, from: bigint, to: bigint): boolean {
  for (let i = Number(from); i < Number(to); i++) if (data[i] !== 0) return false;
  return true;
}

/**
 * Packs a stripped ELF executable (ELF32 or ELF64) in place (`write: false`: only says how small it
 * would be, and gives the file; `elf`: the file as already read).
 */
export function packImage(
  path: string,
  opts: { minGap?: number; write?: boolean; elf?: ElfFile } = {},
): PackResult {
  const elf = opts.elf ?? ElfFile.load(path);
  refuseUnpackable(path, elf);
  const loads = elf.loads;
  const result = (file: Buffer, pieces: number, dropped: bigint): PackResult => ({
    image: path,
    before: elf.data.length,
    after: file.length,
    loadsBefore: loads.length,
    loadsAfter: pieces,
    dropped: Number(dropped),
    alreadyPacked: file === elf.data,
    file,
  });
  const unchanged = result(elf.data, loads.length, 0n);
  // 1. Pieces: what each PT_LOAD must keep in the file, cut where zeros cross pages.
  const cut = cutPieces(elf, BigInt(opts.minGap ?? minGapOf(elf)));
  if (!cut) return unchanged;
  // 2. The file: headers, pieces, non-loaded sections, names, section headers.
  const file = layoutFile(elf, cut.pieces);
  if (!file || file.length >= elf.data.length) return unchanged;
  // 3. Every loaded byte, before and after: the same memory, the same coverage.
  check(path, elf, new ElfFile(path, file));
  // A build product: replaced whole, not synced (util/files.ts).
  if (opts.write !== false) writeFileAtomic(path, file, 'product');
  return result(file, cut.pieces.length, cut.dropped);
}

/**
 * The shortest run of zeros cut out. In ASLR mode (an image with seed salt, harden.ts) only whole
 * pages of zeros: each shuffled µlib's code starts on a page, so cutting the tail of each one's
 * last page would give the image one loaded segment per µlib in the seed's order, and Unikraft's
 * build lists every loaded segment in the image's boot info (`.uk_bootinfo`, mkbootinfo): a page
 * of data that would differ in every image. Kept whole, the segments are the same under every seed.
 */
function minGapOf(elf: ElfFile): number {
  return elf.sections.some((s) => s.name === '.spacer.salt') ? Number(PAGE_N) + 1 : PACK_MIN_GAP;
}

/** Only a stripped executable is packed (the .dbg keeps its layout for verify and report). */
function refuseUnpackable(path: string, elf: ElfFile): void {
  if (elf.header.type !== ET_EXEC)
    throw new SpacerError(
      `${path}: not an executable image (ELF type ${elf.header.type}); 'spacer compact' packs the final, stripped image`,
    );
  if (elf.sections.some((s) => s.index !== 0 && s.link !== 0))
    throw new SpacerError(
      `${path}: the image has symbols or relocations; run 'spacer compact' on the stripped image (strip -s), not on the .dbg`,
    );
}

/**
 * The pieces of every PT_LOAD, or undefined when the image is left as it is: a segment loads the
 * ELF headers themselves, or another segment's bytes (TLS template, notes) would not stay whole.
 */
function cutPieces(elf: ElfFile, minGap: bigint): { pieces: Piece[]; dropped: bigint } | undefined {
  const h = elf.header;
  const phEnd = h.phoff + BigInt(h.phnum * h.phentsize);
  if (elf.loads.some((p) => p.filesz > 0n && p.offset < phEnd)) return undefined;
  const pieces: Piece[] = [];
  let dropped = 0n;
  for (const p of elf.loads) {
    const runs = runsOf(keptRanges(elf, p), p, minGap);
    runs.forEach((r, i) =>
      pieces.push({
        vaddr: r[0],
        paddr: p.paddr + (r[0] - p.vaddr),
        fileEnd: r[1],
        memEnd: i + 1 < runs.length ? runs[i + 1][0] : p.vaddr + p.memsz,
        flags: p.flags,
        src: p,
        align: 16n,
        offset: 0n,
      }),
    );
    dropped += p.filesz - runs.reduce((n, r) => n + (r[1] - r[0]), 0n);
  }
  // The piece holding the TLS template keeps the TLS alignment in the file as well.
  const tls = elf.segments.find((p) => p.type === PT_TLS);
  if (tls && tls.filesz > 0n) {
    const q = pieceOf(pieces, tls.vaddr, tls.filesz);
    if (!q) return undefined;
    q.align = max(q.align, tls.align);
  }
  // a segment whose bytes we cannot place: leave the file
  const lost = elf.segments.some(
    (p) => p.type !== PT_LOAD && p.filesz > 0n && !pieceOf(pieces, p.vaddr, p.filesz),
  );
  return lost ? undefined : { pieces, dropped };
}

const pieceOf = (pieces: Piece[], a: bigint, len: bigint) =>
  pieces.find((q) => a >= q.vaddr && a + len <= q.fileEnd);

/**
 * The address ranges of one PT_LOAD whose bytes the file must keep: every section but Spacer's
 * zero pads, and any non-zero byte outside sections (ld fills gaps between sections with zeros).
 */
function keptRanges(elf: ElfFile, p: ProgramHeader): [bigint, bigint][] {
  const fileEnd = p.vaddr + p.filesz;
  const fileOf = (a: bigint) => p.offset + (a - p.vaddr);
  const zeros = (lo: bigint, hi: bigint) => isZero(elf.data, fileOf(lo), fileOf(hi));
  const inside = elf.sections
    .filter(
      (s) =>
        s.index !== 0 &&
        s.flags & SHF_ALLOC &&
        s.type !== SHT_NOBITS &&
        s.size > 0n &&
        s.addr < fileEnd &&
        s.addr + s.size > p.vaddr,
    )
    .sort((a, b) => byStart([a.addr, 0n], [b.addr, 0n]));
  const keep: [bigint, bigint][] = [];
  let cur = p.vaddr;
  for (const s of inside) {
    const lo = max(s.addr, p.vaddr),
      hi = min(s.addr + s.size, fileEnd);
    if (lo > cur && !zeros(cur, lo)) keep.push([cur, lo]);
    if (!PAD.test(s.name) || !zeros(lo, hi)) keep.push([lo, hi]);
    if (hi > cur) cur = hi;
  }
  if (fileEnd > cur && !zeros(cur, fileEnd)) keep.push([cur, fileEnd]);
  return keep.sort(byStart);
}

/**
 * The kept ranges merged over gaps shorter than minGap, each starting on a page (Unikraft's boot
 * makes each loaded segment a memory region and asserts it is page-aligned): a cut leaves out the
 * zeros up to the page holding the next bytes. The first run always starts at the segment.
 */
function runsOf(keep: [bigint, bigint][], p: ProgramHeader, minGap: bigint): [bigint, bigint][] {
  const runs: [bigint, bigint][] = [];
  for (const r of keep) {
    const last = runs[runs.length - 1];
    const start = r[0] - (r[0] % PAGE_N);
    if (last && start - last[1] < minGap) last[1] = max(last[1], r[1]);
    else runs.push([last || start >= p.vaddr ? max(start, p.vaddr) : p.vaddr, r[1]]);
  }
  // Leading zeros shorter than minGap stay with the first run; the segment keeps its start.
  if (runs.length && runs[0][0] - p.vaddr < minGap) runs[0][0] = p.vaddr;
  // a piece of zeros only
  if (!runs.length || runs[0][0] > p.vaddr) runs.unshift([p.vaddr, p.vaddr]);
  return runs;
}

/** The packed file's bytes, or undefined when some section cannot be placed. */
function layoutFile(elf: ElfFile, pieces: Piece[]): Buffer | undefined {
  const h = elf.header,
    is64 = h.class === 64;
  const phnum = pieces.length + elf.segments.filter((p) => p.type !== PT_LOAD).length;
  let off = BigInt(h.ehsize) + BigInt(phnum) * (is64 ? 56n : 32n);
  for (const q of pieces) {
    if (q.fileEnd === q.vaddr) continue; // zero fill only: offset 0
    q.offset = alignTo(off, q.align, q.vaddr % q.align);
    off = q.offset + (q.fileEnd - q.vaddr);
  }
  const placed = placeLoadedSections(elf, pieces, off);
  const shstr = elf.sections[h.shstrndx];
  // no section names: nothing to name the zero tails with
  if (!placed || !shstr || h.shstrndx === 0 || shstr.type !== SHT_STRTAB) return undefined;
  const tails = zeroTails(elf, pieces);
  const named = withTailName(
    elf.data.subarray(Number(shstr.offset), Number(shstr.offset + shstr.size)),
    tails,
  );
  const l: Layout = { elf, pieces, ...placed, tails, ...named, body: [], shoff: 0n };
  for (const q of pieces)
    if (q.fileEnd > q.vaddr) {
      const from = q.src.offset + (q.vaddr - q.src.vaddr);
      l.body.push([q.offset, elf.data.subarray(Number(from), Number(from + q.fileEnd - q.vaddr))]);
    }
  off = placeOtherSections(l, off);
  l.shoff = alignTo(off, is64 ? 8n : 4n, 0n);
  const file = Buffer.alloc(
    Number(l.shoff) + (elf.sections.length + tails.length) * (is64 ? 64 : 40),
  );
  elf.data.copy(file, 0, 0, h.ehsize);
  for (const [o, b] of l.body) b.copy(file, Number(o));
  writeHeaders(file, l);
  return file;
}

/**
 * File offsets of the allocated sections (inside their piece); a section whose bytes fall out of
 * the file must be all zeros, and becomes NOBITS. Undefined when one is not.
 */
function placeLoadedSections(
  elf: ElfFile,
  pieces: Piece[],
  off: bigint,
): { secOff: Map<number, bigint>; nobits: Set<number> } | undefined {
  const secOff = new Map<number, bigint>();
  const nobits = new Set<number>();
  for (const s of elf.sections) {
    if (s.index === 0 || !(s.flags & SHF_ALLOC)) continue;
    const q =
      pieces.find((x) => s.addr >= x.vaddr && s.addr < max(x.memEnd, x.vaddr + 1n)) ??
      pieces.find((x) => s.addr === x.memEnd);
    if (s.type !== SHT_NOBITS && s.size > 0n && !(q && s.addr + s.size <= q.fileEnd)) {
      if (!allZeros(elf, s)) return undefined;
      nobits.add(s.index); // all zeros: loaded as zero fill
    }
    secOff.set(
      s.index,
      q ? (q.fileEnd > q.vaddr ? q.offset : off) + min(s.addr - q.vaddr, q.fileEnd - q.vaddr) : off,
    );
  }
  return { secOff, nobits };
}

/** Whether a loaded section's bytes are all zeros in the input file. */
function allZeros(elf: ElfFile, s: Section): boolean {
  const src = elf.loads.find((p) => s.addr >= p.vaddr && s.addr + s.size <= p.vaddr + p.filesz);
  if (!src) return false;
  const at = src.offset + (s.addr - src.vaddr);
  return isZero(elf.data, at, at + s.size);
}

/**
 * Zero tails no section covers get a NOBITS section of their own (`.spacer.zero`): objcopy,
 * which Unikraft runs on the image afterwards (boot info), sizes segments from their sections.
 */
function zeroTails(elf: ElfFile, pieces: Piece[]): ZeroTail[] {
  const tails: ZeroTail[] = [];
  for (const q of pieces) {
    let end = q.fileEnd;
    for (const s of elf.sections) {
      if (s.index === 0 || !(s.flags & SHF_ALLOC) || s.addr < q.vaddr || s.addr >= q.memEnd)
        continue;
      if (s.addr + s.size > end) end = s.addr + s.size;
    }
    if (end < q.memEnd)
      tails.push({
        addr: end,
        size: q.memEnd - end,
        flags: SHF_ALLOC | (q.flags & 2 ? 1n : 0n) | (q.flags & 1 ? 4n : 0n),
      });
  }
  return tails;
}

/** The section names, with `.spacer.zero` added when a zero tail needs it and it is not there. */
function withTailName(names: Buffer, tails: ZeroTail[]): { names: Buffer; tailName: number } {
  const at = names.indexOf(Buffer.from('\0.spacer.zero\0'));
  if (at >= 0) return { names, tailName: at + 1 };
  if (!tails.length) return { names, tailName: -1 };
  return {
    names: Buffer.concat([names, Buffer.from('.spacer.zero\0')]),
    tailName: names.length,
  };
}

/** Sections that are not loaded follow the pieces, each at its alignment; returns the end. */
function placeOtherSections(l: Layout, off: bigint): bigint {
  const h = l.elf.header;
  for (const s of l.elf.sections) {
    if (s.index === 0 || s.flags & SHF_ALLOC) continue;
    if (s.type === SHT_NOBITS || s.size === 0n) {
      l.secOff.set(s.index, off);
      continue;
    }
    off = alignTo(off, max(1n, s.addralign), 0n);
    l.secOff.set(s.index, off);
    const bytes =
      s.index === h.shstrndx
        ? l.names
        : l.elf.data.subarray(Number(s.offset), Number(s.offset + s.size));
    l.body.push([off, bytes]);
    off += BigInt(bytes.length);
  }
  return off;
}

/** The ELF header, program headers and section headers of the packed file. */
function writeHeaders(file: Buffer, l: Layout): void {
  const { elf, pieces } = l;
  const h = elf.header,
    cls = h.class === 64 ? 64 : 32;
  const [phentsize, shentsize] = cls === 64 ? [56, 64] : [32, 40];
  const phdrs = programHeaders(elf, pieces);
  const shnum = elf.sections.length + l.tails.length;
  writeFields(file, 0, EHDR[cls], {
    phoff: h.ehsize,
    shoff: l.shoff,
    phentsize,
    phnum: phdrs.length,
    shentsize,
    shnum,
  });
  phdrs.forEach((p, i) => writeFields(file, h.ehsize + i * phentsize, PHDR[cls], { ...p }));
  // Section headers: the original entries, with their new offsets (and NOBITS for zero sections).
  elf.sections.forEach((s, i) => {
    const src = Number(h.shoff) + i * h.shentsize,
      dst = Number(l.shoff) + i * shentsize;
    elf.data.copy(file, dst, src, src + shentsize);
    if (s.index === 0) return;
    writeFields(file, dst, SHDR[cls], {
      offset: l.secOff.get(s.index) ?? 0n,
      ...(l.nobits.has(s.index) ? { type: SHT_NOBITS } : {}),
      ...(s.index === h.shstrndx ? { size: l.names.length } : {}),
    });
  });
  l.tails.forEach((g, k) => {
    const q = pieces.find((x) => g.addr >= x.vaddr && g.addr < x.memEnd)!;
    writeFields(file, Number(l.shoff) + (elf.sections.length + k) * shentsize, SHDR[cls], {
      name: l.tailName,
      type: SHT_NOBITS,
      flags: g.flags,
      addr: g.addr,
      offset: (q.fileEnd > q.vaddr ? q.offset : 0n) + (q.fileEnd - q.vaddr),
      size: g.size,
      addralign: 1n,
    });
  });
}

/** The pieces in address order, then the other segments at their bytes' new offsets. */
function programHeaders(elf: ElfFile, pieces: Piece[]): ProgramHeader[] {
  const loads = pieces.map((q) => ({
    type: PT_LOAD,
    flags: q.flags,
    offset: q.offset,
    vaddr: q.vaddr,
    paddr: q.paddr,
    filesz: q.fileEnd - q.vaddr,
    memsz: q.memEnd - q.vaddr,
    align: q.align,
  }));
  const others = elf.segments
    .filter((p) => p.type !== PT_LOAD)
    .map((p) => {
      if (p.filesz > 0n) {
        const q = pieceOf(pieces, p.vaddr, p.filesz)!;
        return { ...p, offset: q.offset + (p.vaddr - q.vaddr) };
      }
      // No bytes (a TLS segment of .tbss only, GNU_STACK): an offset inside the file, where its
      // address would be.
      const q = pieces.find(
        (x) => p.vaddr >= x.vaddr && p.vaddr <= x.fileEnd && x.fileEnd > x.vaddr,
      );
      const at = p.memsz === 0n && p.vaddr === 0n ? 0n : q ? q.offset + (p.vaddr - q.vaddr) : 0n;
      return { ...p, offset: at };
    });
  return [...loads, ...others];
}

/**
 * What an image loads: each run of adjacent PT_LOADs (packing cuts one segment into pieces that
 * follow one another) as its start address and bytes (file bytes, then zeros up to memsz).
 */
export function loadedMemory(e: ElfFile): { lo: bigint; mem: Buffer }[] {
  const out: { lo: bigint; hi: bigint; parts: Buffer[] }[] = [];
  for (const p of e.loads
    .filter((x) => x.memsz > 0n)
    .sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0))) {
    const mem = Buffer.alloc(Number(p.memsz));
    e.data.copy(mem, 0, Number(p.offset), Number(p.offset + p.filesz));
    const last = out[out.length - 1];
    if (last && last.hi === p.vaddr) {
      last.parts.push(mem);
      last.hi += p.memsz;
    } else out.push({ lo: p.vaddr, hi: p.vaddr + p.memsz, parts: [mem] });
  }
  return out.map((r) => ({ lo: r.lo, mem: Buffer.concat(r.parts) }));
}

/** One contiguous range of loaded memory: its segments' file bytes, each then zeros to its size. */
interface LoadRun {
  lo: bigint;
  hi: bigint;
  pieces: { bytes: Buffer; size: number }[];
}

/** The runs loadedMemory builds, without building them (nothing copied). */
function loadRuns(e: ElfFile): LoadRun[] {
  const out: LoadRun[] = [];
  for (const p of e.loads
    .filter((x) => x.memsz > 0n)
    .sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0))) {
    const size = Number(p.memsz);
    const from = Number(p.offset);
    const bytes = e.data.subarray(from, Math.min(from + Number(p.filesz), from + size));
    const last = out[out.length - 1];
    if (last && last.hi === p.vaddr) {
      last.pieces.push({ bytes, size });
      last.hi += p.memsz;
    } else out.push({ lo: p.vaddr, hi: p.vaddr + p.memsz, pieces: [{ bytes, size }] });
  }
  return out;
}

const ZEROS = Buffer.alloc(1 << 16);

/** Whether `b` is all zeros. */
function allZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - at);
    if (!b.subarray(at, at + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}

/** A run's bytes as (offset, bytes or undefined for zeros, length) spans, in order. */
function spans(r: LoadRun): { at: number; bytes?: Buffer; len: number }[] {
  const out: { at: number; bytes?: Buffer; len: number }[] = [];
  let at = 0;
  for (const p of r.pieces) {
    if (p.bytes.length) out.push({ at, bytes: p.bytes, len: p.bytes.length });
    if (p.size > p.bytes.length)
      out.push({ at: at + p.bytes.length, len: p.size - p.bytes.length });
    at += p.size;
  }
  return out;
}

/** Whether two runs of equal extent hold the same bytes (compared span by span, no copies). */
function sameRun(a: LoadRun, b: LoadRun): boolean {
  const x = spans(a),
    y = spans(b);
  let i = 0,
    j = 0;
  while (i < x.length && j < y.length) {
    const from = Math.max(x[i].at, y[j].at);
    const to = Math.min(x[i].at + x[i].len, y[j].at + y[j].len);
    const u = x[i].bytes?.subarray(from - x[i].at, to - x[i].at);
    const v = y[j].bytes?.subarray(from - y[j].at, to - y[j].at);
    if (u && v ? !u.equals(v) : u ? !allZero(u) : v ? !allZero(v) : false) return false;
    if (x[i].at + x[i].len === to) i++;
    if (y[j].at + y[j].len === to) j++;
  }
  return true;
}

/** Whether two images load the same bytes over the same ranges. */
export function sameLoadedMemory(a: ElfFile, b: ElfFile): boolean {
  const x = loadRuns(a),
    y = loadRuns(b);
  return (
    x.length === y.length &&
    x.every((r, i) => r.lo === y[i].lo && r.hi === y[i].hi && sameRun(r, y[i]))
  );
}

/** The loaded memory of both files must be the same bytes over the same ranges. */
function check(path: string, was: ElfFile, now: ElfFile): void {
  if (!sameLoadedMemory(was, now))
    throw new SpacerError(
      `${path}: packing would change the loaded memory; the image was left unchanged (report this)`,
    );
}
