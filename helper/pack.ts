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
} from './elf.js';
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
}

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

const max = (a: bigint, b: bigint) => (a > b ? a : b);
const min = (a: bigint, b: bigint) => (a < b ? a : b);

/**
 * Packs a stripped ELF executable (ELF32 or ELF64) in place (`write: false`: only says how small it
 * would be).
 */
export function packImage(
  path: string,
  opts: { minGap?: number; write?: boolean } = {},
): PackResult {
  const minGap = BigInt(opts.minGap ?? PACK_MIN_GAP);
  const elf = ElfFile.load(path);
  const data = elf.data,
    h = elf.header,
    is64 = h.class === 64;
  const loads = elf.segments.filter((p) => p.type === PT_LOAD);
  const unchanged: PackResult = {
    image: path,
    before: data.length,
    after: data.length,
    loadsBefore: loads.length,
    loadsAfter: loads.length,
    dropped: 0,
    alreadyPacked: true,
  };
  if (h.type !== ET_EXEC)
    throw new SpacerError(
      `${path}: not an executable image (ELF type ${h.type}); 'spacer compact' packs the final, stripped image`,
    );
  if (elf.sections.some((s) => s.index !== 0 && s.link !== 0)) {
    throw new SpacerError(
      `${path}: the image has symbols or relocations; run 'spacer compact' on the stripped image (strip -s), not on the .dbg`,
    );
  }
  const phEnd = h.phoff + BigInt(h.phnum * h.phentsize);
  // A segment that loads the ELF headers themselves is left as it is: nothing to pack then.
  if (loads.some((p) => p.filesz > 0n && p.offset < phEnd)) return unchanged;
  const isZero = (from: bigint, to: bigint) => {
    for (let i = Number(from); i < Number(to); i++) if (data[i] !== 0) return false;
    return true;
  };

  // 1. Pieces: per PT_LOAD, the ranges its file part must keep (every section but Spacer's zero
  //    pads, and any non-zero byte outside sections), merged over gaps shorter than minGap.
  const pieces: Piece[] = [];
  let dropped = 0n;
  for (const p of loads) {
    const fileEnd = p.vaddr + p.filesz,
      memEnd = p.vaddr + p.memsz;
    const keep: [bigint, bigint][] = [];
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
      .sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0));
    const fileOf = (a: bigint) => p.offset + (a - p.vaddr);
    let cur = p.vaddr;
    const between = (lo: bigint, hi: bigint) => {
      // Bytes no section claims: kept only where they are not zero (ld fills gaps with zeros).
      if (hi > lo && !isZero(fileOf(lo), fileOf(hi))) keep.push([lo, hi]);
    };
    for (const s of inside) {
      const lo = max(s.addr, p.vaddr),
        hi = min(s.addr + s.size, fileEnd);
      if (lo > cur) between(cur, lo);
      if (!PAD.test(s.name) || !isZero(fileOf(lo), fileOf(hi))) keep.push([lo, hi]);
      if (hi > cur) cur = hi;
    }
    between(cur, fileEnd);
    keep.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    // A piece starts on a page (Unikraft's boot makes each loaded segment a memory region and
    // asserts it is page-aligned): a cut leaves out the zeros up to the page holding the next
    // bytes.
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
    runs.forEach((r, i) => {
      const end = i + 1 < runs.length ? runs[i + 1][0] : memEnd;
      pieces.push({
        vaddr: r[0],
        paddr: p.paddr + (r[0] - p.vaddr),
        fileEnd: r[1],
        memEnd: end,
        flags: p.flags,
        src: p,
        align: 16n,
        offset: 0n,
      });
    });
    dropped += p.filesz - runs.reduce((n, r) => n + (r[1] - r[0]), 0n);
  }
  // The piece holding the TLS template keeps the TLS alignment in the file as well.
  const tls = elf.segments.find((p) => p.type === PT_TLS);
  const pieceOf = (a: bigint, len: bigint) =>
    pieces.find((q) => a >= q.vaddr && a + len <= q.fileEnd);
  if (tls && tls.filesz > 0n) {
    const q = pieceOf(tls.vaddr, tls.filesz);
    if (!q) return unchanged;
    q.align = max(q.align, tls.align);
  }
  for (const p of elf.segments) {
    if (p.type === PT_LOAD || p.filesz === 0n) continue;
    // a segment whose bytes we cannot place: leave the file
    if (!pieceOf(p.vaddr, p.filesz)) return unchanged;
  }

  // 2. The file: headers, pieces, non-loaded sections, names, section headers.
  const phentsize = is64 ? 56 : 32,
    shentsize = is64 ? 64 : 40;
  const others = elf.segments.filter((p) => p.type !== PT_LOAD);
  const phnum = pieces.length + others.length;
  let off = BigInt(h.ehsize + phnum * phentsize);
  const alignTo = (o: bigint, a: bigint, want: bigint) => o + ((((want - o) % a) + a) % a);
  for (const q of pieces) {
    if (q.fileEnd === q.vaddr) {
      q.offset = 0n;
      continue;
    }
    q.offset = alignTo(off, q.align, q.vaddr % q.align);
    off = q.offset + (q.fileEnd - q.vaddr);
  }
  const secOff = new Map<number, bigint>();
  const nobits = new Set<number>();
  for (const s of elf.sections) {
    if (s.index === 0) continue;
    if (s.flags & SHF_ALLOC) {
      const q =
        pieces.find((x) => s.addr >= x.vaddr && s.addr < max(x.memEnd, x.vaddr + 1n)) ??
        pieces.find((x) => s.addr === x.memEnd);
      if (s.type !== SHT_NOBITS && s.size > 0n) {
        const inFile = q && s.addr + s.size <= q.fileEnd;
        if (!inFile) {
          const src = loads.find((p) => s.addr >= p.vaddr && s.addr + s.size <= p.vaddr + p.filesz);
          if (
            !src ||
            !isZero(src.offset + (s.addr - src.vaddr), src.offset + (s.addr + s.size - src.vaddr))
          )
            return unchanged;
          nobits.add(s.index); // all zeros: loaded as zero fill
        }
      }
      secOff.set(
        s.index,
        q
          ? (q.fileEnd > q.vaddr ? q.offset : off) + min(s.addr - q.vaddr, q.fileEnd - q.vaddr)
          : off,
      );
    }
  }
  // Zero tails no section covers get a NOBITS section of their own (`.spacer.zero`): objcopy,
  // which Unikraft runs on the image afterwards (boot info), sizes segments from their sections.
  const gaps: { addr: bigint; size: bigint; flags: bigint }[] = [];
  for (const q of pieces) {
    let end = q.fileEnd;
    for (const s of elf.sections) {
      if (s.index === 0 || !(s.flags & SHF_ALLOC) || s.addr < q.vaddr || s.addr >= q.memEnd)
        continue;
      if (s.addr + s.size > end) end = s.addr + s.size;
    }
    if (end < q.memEnd)
      gaps.push({
        addr: end,
        size: q.memEnd - end,
        flags: SHF_ALLOC | (q.flags & 2 ? 1n : 0n) | (q.flags & 1 ? 4n : 0n),
      });
  }
  const shstr = elf.sections[h.shstrndx];
  // no section names: nothing to name the zero tails with
  if (!shstr || h.shstrndx === 0 || shstr.type !== SHT_STRTAB) return unchanged;
  let names = data.subarray(Number(shstr.offset), Number(shstr.offset + shstr.size));
  let gapName = names.indexOf(Buffer.from('\0.spacer.zero\0'));
  if (gapName >= 0) gapName += 1;
  else if (gaps.length) {
    gapName = names.length;
    names = Buffer.concat([names, Buffer.from('.spacer.zero\0')]);
  }
  const body: [bigint, Buffer][] = [];
  for (const q of pieces)
    if (q.fileEnd > q.vaddr)
      body.push([
        q.offset,
        data.subarray(
          Number(q.src.offset + (q.vaddr - q.src.vaddr)),
          Number(q.src.offset + (q.fileEnd - q.src.vaddr)),
        ),
      ]);
  for (const s of elf.sections) {
    if (s.index === 0 || s.flags & SHF_ALLOC) continue;
    if (s.type === SHT_NOBITS || s.size === 0n) {
      secOff.set(s.index, off);
      continue;
    }
    off = alignTo(off, max(1n, s.addralign), 0n);
    secOff.set(s.index, off);
    const bytes =
      s.index === h.shstrndx ? names : data.subarray(Number(s.offset), Number(s.offset + s.size));
    body.push([off, bytes]);
    off += BigInt(bytes.length);
  }
  const shoff = alignTo(off, is64 ? 8n : 4n, 0n);
  const shnum = elf.sections.length + gaps.length;
  const total = Number(shoff) + shnum * shentsize;
  if (total >= data.length) return unchanged;
  const file = Buffer.alloc(total);
  data.copy(file, 0, 0, h.ehsize);
  for (const [o, b] of body) b.copy(file, Number(o));

  // ELF header: where the tables are now.
  if (is64) {
    file.writeBigUInt64LE(BigInt(h.ehsize), 32);
    file.writeBigUInt64LE(shoff, 40);
    file.writeUInt16LE(phentsize, 54);
    file.writeUInt16LE(phnum, 56);
    file.writeUInt16LE(shentsize, 58);
    file.writeUInt16LE(shnum, 60);
  } else {
    file.writeUInt32LE(h.ehsize, 28);
    file.writeUInt32LE(Number(shoff), 32);
    file.writeUInt16LE(phentsize, 42);
    file.writeUInt16LE(phnum, 44);
    file.writeUInt16LE(shentsize, 46);
    file.writeUInt16LE(shnum, 48);
  }
  // Program headers: the pieces in address order, then the others at their bytes' new offsets.
  const phdrs: ProgramHeader[] = [
    ...pieces.map((q) => ({
      type: PT_LOAD,
      flags: q.flags,
      offset: q.offset,
      vaddr: q.vaddr,
      paddr: q.paddr,
      filesz: q.fileEnd - q.vaddr,
      memsz: q.memEnd - q.vaddr,
      align: q.align,
    })),
    ...others.map((p) => {
      if (p.filesz === 0n) {
        // No bytes (a TLS segment of .tbss only, GNU_STACK): an offset inside the file, where its
        // address would be.
        const q = pieces.find(
          (x) => p.vaddr >= x.vaddr && p.vaddr <= x.fileEnd && x.fileEnd > x.vaddr,
        );
        return {
          ...p,
          offset: p.memsz === 0n && p.vaddr === 0n ? 0n : q ? q.offset + (p.vaddr - q.vaddr) : 0n,
        };
      }
      const q = pieceOf(p.vaddr, p.filesz)!;
      return { ...p, offset: q.offset + (p.vaddr - q.vaddr) };
    }),
  ];
  phdrs.forEach((p, i) => {
    const o = h.ehsize + i * phentsize;
    if (is64) {
      file.writeUInt32LE(p.type, o);
      file.writeUInt32LE(p.flags, o + 4);
      file.writeBigUInt64LE(p.offset, o + 8);
      file.writeBigUInt64LE(p.vaddr, o + 16);
      file.writeBigUInt64LE(p.paddr, o + 24);
      file.writeBigUInt64LE(p.filesz, o + 32);
      file.writeBigUInt64LE(p.memsz, o + 40);
      file.writeBigUInt64LE(p.align, o + 48);
    } else {
      const w = (v: bigint, at: number) => file.writeUInt32LE(Number(v), o + at);
      file.writeUInt32LE(p.type, o);
      w(p.offset, 4);
      w(p.vaddr, 8);
      w(p.paddr, 12);
      w(p.filesz, 16);
      w(p.memsz, 20);
      file.writeUInt32LE(p.flags, o + 24);
      w(p.align, 28);
    }
  });
  // Section headers: the original entries, with their new offsets (and NOBITS for zero sections).
  elf.sections.forEach((s, i) => {
    const src = Number(h.shoff) + i * h.shentsize,
      dst = Number(shoff) + i * shentsize;
    data.copy(file, dst, src, src + shentsize);
    if (s.index === 0) return;
    if (nobits.has(s.index)) file.writeUInt32LE(SHT_NOBITS, dst + 4);
    const o = secOff.get(s.index) ?? 0n;
    if (is64) file.writeBigUInt64LE(o, dst + 24);
    else file.writeUInt32LE(Number(o), dst + 16);
    if (s.index === h.shstrndx) {
      if (is64) file.writeBigUInt64LE(BigInt(names.length), dst + 32);
      else file.writeUInt32LE(names.length, dst + 20);
    }
  });
  gaps.forEach((g, k) => {
    const dst = Number(shoff) + (elf.sections.length + k) * shentsize;
    const q = pieces.find((x) => g.addr >= x.vaddr && g.addr < x.memEnd)!;
    const o = (q.fileEnd > q.vaddr ? q.offset : 0n) + (q.fileEnd - q.vaddr);
    file.writeUInt32LE(gapName, dst);
    file.writeUInt32LE(SHT_NOBITS, dst + 4);
    if (is64) {
      file.writeBigUInt64LE(g.flags, dst + 8);
      file.writeBigUInt64LE(g.addr, dst + 16);
      file.writeBigUInt64LE(o, dst + 24);
      file.writeBigUInt64LE(g.size, dst + 32);
      file.writeBigUInt64LE(1n, dst + 48);
    } else {
      const w = (v: bigint, at: number) => file.writeUInt32LE(Number(v), dst + at);
      w(g.flags, 8);
      w(g.addr, 12);
      w(o, 16);
      w(g.size, 20);
      w(1n, 32);
    }
  });

  // 3. Every loaded byte, before and after: the same memory, the same coverage.
  check(path, elf, new ElfFile(path, file));
  if (opts.write !== false) writeFileAtomic(path, file);
  return {
    image: path,
    before: data.length,
    after: file.length,
    loadsBefore: loads.length,
    loadsAfter: pieces.length,
    dropped: Number(dropped),
    alreadyPacked: false,
  };
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

/** Whether two images load the same bytes over the same ranges. */
export function sameLoadedMemory(a: ElfFile, b: ElfFile): boolean {
  const x = loadedMemory(a),
    y = loadedMemory(b);
  return x.length === y.length && x.every((r, i) => r.lo === y[i].lo && r.mem.equals(y[i].mem));
}

/** The loaded memory of both files must be the same bytes over the same ranges. */
function check(path: string, was: ElfFile, now: ElfFile): void {
  if (!sameLoadedMemory(was, now))
    throw new SpacerError(
      `${path}: packing would change the loaded memory; the image was left unchanged (report this)`,
    );
}
