// Compaction of the final (stripped) image.
//
// The aligned script gives every µlib its own output sections (`.text.<ulib>`, `.ind.<ulib>`,
// `.rodata.<ulib>`, ...): ld needs that to keep each µlib's mergeable strings to itself, and the
// .dbg keeps them for `spacer verify` and debuggers. The bootable image needs none of them: its
// loader reads program headers. Their section headers and names are most of what Spacer adds to
// the image file, so after `strip` each run of µlib sections that follow one another in a segment
// becomes one header (`.spacer.text`, `.spacer.rodata`, ...). Every other section (`.uk_bootinfo`,
// which the build patches by name, `.spacer.plan`) keeps its header.
//
// With `holes` (opt-in), whole pages of zeros between two sections of a segment (where an image
// lacks a group of shared µlibs) leave the file too: the segment is split at page boundaries, so
// every segment still starts on a page and file offsets stay congruent to addresses; nothing is
// loaded there. Off by default: Unikraft 0.17 hands such a page to its allocator as free memory
// and logs an error for a one-page region (seen booting a real image). `spacer compact` packs the
// image first (pack.ts), which leaves such zeros out of the file while they stay loaded; `holes`
// is for an image that was not packed.
// Every loaded byte is checked against the original before the file is replaced (atomically).
import { SpacerError } from './errors.js';
import {
  ElfFile,
  PT_LOAD,
  SHT_NOBITS,
  SHT_STRTAB,
  type ProgramHeader,
  type Section,
} from './elf.js';
import { writeFileAtomic } from './util/files.js';
import { PAGE_N } from './util/units.js';

const SHDR64 = 64,
  PHDR64 = 56;
const floorPage = (x: bigint) => x - (x % PAGE_N);
const ceilPage = (x: bigint) => floorPage(x + PAGE_N - 1n);
/** Names of the headers compaction writes for runs of µlib sections. */
export const COMPACTED = /^\.spacer\.(text|rodata|data|bss)$/;

/** The region kind of a µlib section made by the aligned script, or undefined for any other. */
export function ulibSectionKind(name: string): 'text' | 'rodata' | 'data' | 'bss' | undefined {
  const m = /^\.(ind|ptr|text|rodata|data|bss)\.[^.]|^\.spacer\.pad\.(rodata|data|bss)$/.exec(name);
  if (!m) return undefined;
  const k = m[1] ?? m[2];
  return k === 'ind' || k === 'ptr' ? 'text' : (k as 'text' | 'rodata' | 'data' | 'bss');
}

export interface CompactResult {
  image: string;
  before: number;
  after: number;
  headersBefore: number;
  headersAfter: number;
  /** Zero pages no longer in the file. */
  holePages: number;
  alreadyCompact: boolean;
}

interface Run {
  name: string;
  s: Section;
  end: bigint;
  kind?: string;
}
interface Hole {
  from: bigint;
  to: bigint;
  fileFrom: bigint;
}

/** A run's flags are its region's (ld marks the tables writable; they sit in the code segment). */
const RUN_FLAGS: Record<string, bigint> = { text: 0x6n, rodata: 0x2n, data: 0x3n, bss: 0x3n };

/** Compacts a stripped ELF64 image in place; running it twice is a no-op. */
export function compactImage(path: string, opts: { holes?: boolean } = {}): CompactResult {
  const elf = ElfFile.load(path);
  const data = elf.data;
  const before = data.length,
    headersBefore = elf.sections.length;
  const unchanged = {
    image: path,
    before,
    after: before,
    headersBefore,
    headersAfter: headersBefore,
    holePages: 0,
    alreadyCompact: true,
  };
  if (elf.header.class !== 64)
    throw new SpacerError(
      `${path}: not an ELF64 image; run 'spacer compact' on the stripped image, before any ELF32 conversion`,
    );
  if (elf.sections.some((s) => s.index !== 0 && s.link !== 0)) {
    throw new SpacerError(
      `${path}: the image has symbols or relocations (sections that link to others); run 'spacer compact' on the stripped image (strip -s), not on the .dbg`,
    );
  }
  if (elf.sections.some((s) => COMPACTED.test(s.name))) return unchanged;
  const isProg = (s: Section) => (s.flags & 2n) !== 0n && s.type !== SHT_NOBITS && s.size > 0n;

  // 1. Holes: whole zero pages between two consecutive sections of a loaded segment.
  const segs: ProgramHeader[] = [];
  const holes: Hole[] = [];
  for (const p of elf.segments) {
    if (p.type !== PT_LOAD) {
      segs.push({ ...p });
      continue;
    }
    const inside = elf.sections
      .filter((s) => isProg(s) && s.addr >= p.vaddr && s.addr + s.size <= p.vaddr + p.filesz)
      .sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0));
    let cur: ProgramHeader = { ...p };
    let endPrev = 0n;
    for (let i = 0; i < inside.length; i++) {
      if (i > 0) {
        const from = ceilPage(endPrev),
          to = floorPage(inside[i].addr);
        const fileFrom = p.offset + (from - p.vaddr);
        if (
          opts.holes &&
          to > from &&
          from > cur.vaddr &&
          data.subarray(Number(fileFrom), Number(fileFrom + (to - from))).every((b) => b === 0)
        ) {
          holes.push({ from, to, fileFrom });
          segs.push({ ...cur, filesz: from - cur.vaddr, memsz: from - cur.vaddr });
          cur = {
            ...p,
            offset: p.offset + (to - p.vaddr),
            vaddr: to,
            paddr: p.paddr + (to - p.vaddr),
            filesz: p.vaddr + p.filesz - to,
            memsz: p.vaddr + p.memsz - to,
          };
        }
      }
      const e = inside[i].addr + inside[i].size;
      if (e > endPrev) endPrev = e;
    }
    segs.push(cur);
  }
  const newOff = (off: bigint) =>
    off -
    holes.reduce((n, h) => (h.fileFrom + (h.to - h.from) <= off ? n + (h.to - h.from) : n), 0n);

  // 2. Section headers: one per run of µlib sections of one segment (a run never spans a hole).
  const segOf = (s: Section) =>
    segs.findIndex(
      (p) => p.type === PT_LOAD && s.addr >= p.vaddr && s.addr + s.size <= p.vaddr + p.memsz,
    );
  const runs: Run[] = [];
  for (const s of elf.sections) {
    if (s.index === 0 || s.index === elf.header.shstrndx) continue;
    const kind = s.flags & 2n ? ulibSectionKind(s.name) : undefined;
    const prev = runs[runs.length - 1];
    if (
      kind &&
      prev?.kind === kind &&
      prev.s.type === s.type &&
      segOf(s) >= 0 &&
      segOf(prev.s) === segOf(s) &&
      s.addr >= prev.end &&
      (s.type === SHT_NOBITS || s.offset - prev.s.offset === s.addr - prev.s.addr)
    ) {
      prev.end = s.addr + s.size;
      continue;
    }
    runs.push({ name: kind ? `.spacer.${kind}` : s.name, s, end: s.addr + s.size, kind });
  }
  if (!holes.length && runs.length + 2 >= headersBefore) return unchanged;

  // 3. The file: program headers, the bytes outside the holes, then names and section headers.
  const phoff = Number(elf.header.phoff);
  const firstData = elf.sections
    .filter((s) => s.index !== 0 && s.type !== SHT_NOBITS && s.size > 0n)
    .reduce((m, s) => (s.offset < m ? s.offset : m), BigInt(data.length));
  if (phoff + segs.length * PHDR64 > Number(firstData))
    throw new SpacerError(
      `${path}: no room for ${segs.length} program headers before the first section; the image was left unchanged`,
    );
  const ends = [
    BigInt(phoff + elf.header.phnum * PHDR64),
    ...elf.segments.map((p) => p.offset + p.filesz),
  ];
  for (const r of runs) if (r.s.type !== SHT_NOBITS) ends.push(r.s.offset + (r.end - r.s.addr));
  const bodyEnd = ends.reduce((a, b) => (a > b ? a : b), 0n);
  const parts: Buffer[] = [];
  let at = 0n;
  for (const h of [...holes].sort((a, b) => (a.fileFrom < b.fileFrom ? -1 : 1))) {
    parts.push(data.subarray(Number(at), Number(h.fileFrom)));
    at = h.fileFrom + (h.to - h.from);
  }
  parts.push(data.subarray(Number(at), Number(bodyEnd)));
  const body = Buffer.concat(parts);

  const names: Buffer[] = [Buffer.alloc(1)];
  let nameLen = 1;
  const nameAt = new Map<string, number>();
  const nameOf = (n: string) => {
    let o = nameAt.get(n);
    if (o === undefined) {
      o = nameLen;
      nameAt.set(n, o);
      const b = Buffer.from(n + '\0');
      names.push(b);
      nameLen += b.length;
    }
    return o;
  };
  const runNames = runs.map((r) => nameOf(r.name));
  const shstrName = nameOf('.shstrtab');
  const strtab = Buffer.concat(names);
  const strOff = body.length;
  const shoff = Math.ceil((strOff + strtab.length) / 8) * 8;
  const shnum = runs.length + 2;
  const file = Buffer.alloc(shoff + shnum * SHDR64);
  body.copy(file, 0);
  strtab.copy(file, strOff);
  // Program headers (the table grows in place when segments were split).
  file.fill(0, phoff, phoff + elf.header.phnum * PHDR64);
  segs.forEach((p, i) => {
    const o = phoff + i * PHDR64;
    file.writeUInt32LE(p.type, o);
    file.writeUInt32LE(p.flags, o + 4);
    file.writeBigUInt64LE(p.filesz || p.offset ? newOff(p.offset) : p.offset, o + 8);
    file.writeBigUInt64LE(p.vaddr, o + 16);
    file.writeBigUInt64LE(p.paddr, o + 24);
    file.writeBigUInt64LE(p.filesz, o + 32);
    file.writeBigUInt64LE(p.memsz, o + 40);
    file.writeBigUInt64LE(p.align, o + 48);
  });
  const put = (
    i: number,
    nm: number,
    s: Pick<Section, 'type' | 'flags' | 'addr' | 'offset' | 'addralign' | 'entsize'>,
    size: bigint,
  ) => {
    const o = shoff + i * SHDR64;
    file.writeUInt32LE(nm, o);
    file.writeUInt32LE(s.type, o + 4);
    file.writeBigUInt64LE(s.flags, o + 8);
    file.writeBigUInt64LE(s.addr, o + 16);
    file.writeBigUInt64LE(s.offset, o + 24);
    file.writeBigUInt64LE(size, o + 32);
    file.writeBigUInt64LE(s.addralign, o + 48);
    file.writeBigUInt64LE(s.entsize, o + 56);
  };
  runs.forEach((r, i) =>
    put(
      i + 1,
      runNames[i],
      {
        ...r.s,
        offset: newOff(r.s.offset),
        ...(r.kind ? { flags: RUN_FLAGS[r.kind], entsize: 0n } : {}),
      },
      r.kind ? r.end - r.s.addr : r.s.size,
    ),
  );
  put(
    shnum - 1,
    shstrName,
    { type: SHT_STRTAB, flags: 0n, addr: 0n, offset: BigInt(strOff), addralign: 1n, entsize: 0n },
    BigInt(strtab.length),
  );
  file.writeBigUInt64LE(BigInt(shoff), 0x28);
  file.writeUInt16LE(segs.length, 0x38);
  file.writeUInt16LE(shnum, 0x3c);
  file.writeUInt16LE(shnum - 1, 0x3e);

  // Every loaded byte must be what it was, compared range by range; a hole held zeros (checked
  // when it was found) and nothing is loaded there now.
  const check = new ElfFile(path, file);
  const fail = (a: bigint): never => {
    throw new SpacerError(
      `${path}: compaction would change the byte at 0x${a.toString(16)}; the image was left unchanged`,
    );
  };
  for (const p of elf.loads) {
    let covered = holes.reduce(
      (n, h) => (h.from >= p.vaddr && h.to <= p.vaddr + p.filesz ? n + (h.to - h.from) : n),
      0n,
    );
    for (const q of check.loads) {
      const lo = p.vaddr > q.vaddr ? p.vaddr : q.vaddr;
      const hi = p.vaddr + p.filesz < q.vaddr + q.memsz ? p.vaddr + p.filesz : q.vaddr + q.memsz;
      if (lo >= hi) continue;
      const was = data.subarray(
        Number(p.offset + (lo - p.vaddr)),
        Number(p.offset + (hi - p.vaddr)),
      );
      const inFile = q.vaddr + q.filesz < hi ? q.vaddr + q.filesz : hi;
      const now =
        inFile > lo
          ? file.subarray(Number(q.offset + (lo - q.vaddr)), Number(q.offset + (inFile - q.vaddr)))
          : Buffer.alloc(0);
      if (!was.subarray(0, now.length).equals(now)) fail(lo);
      if (!was.subarray(now.length).every((b) => b === 0)) fail(lo + BigInt(now.length));
      covered += hi - lo;
    }
    if (covered < p.filesz) fail(p.vaddr);
  }
  writeFileAtomic(path, file);
  const holePages = Number(holes.reduce((n, h) => n + (h.to - h.from), 0n) / PAGE_N);
  return {
    image: path,
    before,
    after: file.length,
    headersBefore,
    headersAfter: shnum,
    holePages,
    alreadyCompact: false,
  };
}
