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
import { EHDR, PHDR, SHDR, writeFields } from './elflayout.js';
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
  /** The compacted file (the input's bytes when already compact). */
  file: Buffer;
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

/**
 * Compacts a stripped ELF64 image in place; running it twice is a no-op. `elf`: the file as
 * already read (or packed in memory); `write: false` only gives the file.
 */
export function compactImage(
  path: string,
  opts: { holes?: boolean; elf?: ElfFile; write?: boolean } = {},
): CompactResult {
  const elf = opts.elf ?? ElfFile.load(path);
  const before = elf.data.length,
    headersBefore = elf.sections.length;
  const unchanged = {
    image: path,
    before,
    after: before,
    headersBefore,
    headersAfter: headersBefore,
    holePages: 0,
    alreadyCompact: true,
    file: elf.data,
  };
  refuseUncompactable(path, elf);
  if (elf.sections.some((s) => COMPACTED.test(s.name))) return unchanged;
  // 1. Holes: whole zero pages between two consecutive sections of a loaded segment.
  const { segs, holes } = findHoles(elf, Boolean(opts.holes));
  // 2. Section headers: one per run of µlib sections of one segment (a run never spans a hole).
  const runs = sectionRuns(elf, segs);
  if (!holes.length && runs.length + 2 >= headersBefore) return unchanged;
  // 3. The file: program headers, the bytes outside the holes, then names and section headers.
  const file = compactedFile(path, elf, segs, holes, runs);
  // 4. Every loaded byte must be what it was.
  checkLoadedBytes(path, elf, file, holes);
  // A build product: replaced whole, not synced (util/files.ts).
  if (opts.write !== false) writeFileAtomic(path, file, 'product');
  const holePages = Number(holes.reduce((n, h) => n + (h.to - h.from), 0n) / PAGE_N);
  return {
    image: path,
    before,
    after: file.length,
    headersBefore,
    headersAfter: runs.length + 2,
    holePages,
    alreadyCompact: false,
    file,
  };
}

/**
 * Refuses what compaction must not touch: an ELF32 image (compaction writes ELF64 headers) and
 * an image with symbols or relocations, whose section indices would no longer hold.
 */
function refuseUncompactable(path: string, elf: ElfFile): void {
  if (elf.header.class !== 64)
    throw new SpacerError(
      `${path}: not an ELF64 image; run 'spacer compact' on the stripped image, before any ELF32 conversion`,
    );
  if (elf.sections.some((s) => s.index !== 0 && s.link !== 0)) {
    throw new SpacerError(
      `${path}: the image has symbols or relocations (sections that link to others); run 'spacer compact' on the stripped image (strip -s), not on the .dbg`,
    );
  }
}

/** A section with bytes in the file that is loaded. */
const isProg = (s: Section) => (s.flags & 2n) !== 0n && s.type !== SHT_NOBITS && s.size > 0n;

/**
 * Step 1: the program headers with each loaded segment split around its holes (whole pages of
 * zeros between two consecutive sections, sought only with `holes`), and those holes. A hole
 * never starts a segment, so each piece still starts on a page at a congruent file offset.
 */
function findHoles(elf: ElfFile, withHoles: boolean): { segs: ProgramHeader[]; holes: Hole[] } {
  const data = elf.data;
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
          withHoles &&
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
  return { segs, holes };
}

/** The offset a byte of the original file at `off` has once the holes before it are gone. */
function offsetAfterHoles(holes: Hole[], off: bigint): bigint {
  return (
    off -
    holes.reduce((n, h) => (h.fileFrom + (h.to - h.from) <= off ? n + (h.to - h.from) : n), 0n)
  );
}

/**
 * Step 2: the section headers to write (section 0 and `.shstrtab` aside): each run of µlib
 * sections of one kind and type that follow one another in one segment (of `segs`, so a run
 * never spans a hole) becomes one, and every other section keeps its own.
 */
function sectionRuns(elf: ElfFile, segs: ProgramHeader[]): Run[] {
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
  return runs;
}

/**
 * Step 3: the compacted file: the original bytes up to the end of the last segment or run kept,
 * less the holes; the new name table; the new section headers; and the program and ELF headers
 * rewritten in place. Refuses (before writing anything) when the split segments' program
 * headers do not fit before the first section.
 */
function compactedFile(
  path: string,
  elf: ElfFile,
  segs: ProgramHeader[],
  holes: Hole[],
  runs: Run[],
): Buffer {
  const phoff = Number(elf.header.phoff);
  const firstData = elf.sections
    .filter((s) => s.index !== 0 && s.type !== SHT_NOBITS && s.size > 0n)
    .reduce((m, s) => (s.offset < m ? s.offset : m), BigInt(elf.data.length));
  if (phoff + segs.length * PHDR64 > Number(firstData))
    throw new SpacerError(
      `${path}: no room for ${segs.length} program headers before the first section; the image was left unchanged`,
    );
  const body = bodyWithoutHoles(elf, holes, runs);
  const { strtab, runNames, shstrName } = nameTable(runs);
  const strOff = body.length;
  const shoff = Math.ceil((strOff + strtab.length) / 8) * 8;
  const shnum = runs.length + 2;
  const file = Buffer.alloc(shoff + shnum * SHDR64);
  body.copy(file, 0);
  strtab.copy(file, strOff);
  // Program headers (the table grows in place when segments were split).
  file.fill(0, phoff, phoff + elf.header.phnum * PHDR64);
  segs.forEach((p, i) =>
    writeFields(file, phoff + i * PHDR64, PHDR[64], {
      type: p.type,
      flags: p.flags,
      offset: p.filesz || p.offset ? offsetAfterHoles(holes, p.offset) : p.offset,
      vaddr: p.vaddr,
      paddr: p.paddr,
      filesz: p.filesz,
      memsz: p.memsz,
      align: p.align,
    }),
  );
  runs.forEach((r, i) =>
    writeSectionHeader(
      file,
      shoff + (i + 1) * SHDR64,
      runNames[i],
      {
        ...r.s,
        offset: offsetAfterHoles(holes, r.s.offset),
        ...(r.kind ? { flags: RUN_FLAGS[r.kind], entsize: 0n } : {}),
      },
      r.kind ? r.end - r.s.addr : r.s.size,
    ),
  );
  writeSectionHeader(
    file,
    shoff + (shnum - 1) * SHDR64,
    shstrName,
    { type: SHT_STRTAB, flags: 0n, addr: 0n, offset: BigInt(strOff), addralign: 1n, entsize: 0n },
    BigInt(strtab.length),
  );
  writeFields(file, 0, EHDR[64], { shoff, phnum: segs.length, shnum, shstrndx: shnum - 1 });
  return file;
}

/**
 * The original file up to the end of what is kept (the old program header table, every segment's
 * bytes and every run's), without the holes' bytes.
 */
function bodyWithoutHoles(elf: ElfFile, holes: Hole[], runs: Run[]): Buffer {
  const data = elf.data;
  const ends = [
    BigInt(Number(elf.header.phoff) + elf.header.phnum * PHDR64),
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
  return Buffer.concat(parts);
}

/**
 * The new section name table (each name once, in the order of first use, `.shstrtab` last) and
 * the offsets of the runs' names and its own.
 */
function nameTable(runs: Run[]): { strtab: Buffer; runNames: number[]; shstrName: number } {
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
  return { strtab: Buffer.concat(names), runNames, shstrName };
}

/** Writes one ELF64 section header; sh_link and sh_info stay 0 (a compacted image has none). */
function writeSectionHeader(
  file: Buffer,
  at: number,
  name: number,
  s: Pick<Section, 'type' | 'flags' | 'addr' | 'offset' | 'addralign' | 'entsize'>,
  size: bigint,
): void {
  writeFields(file, at, SHDR[64], {
    name,
    type: s.type,
    flags: s.flags,
    addr: s.addr,
    offset: s.offset,
    size,
    addralign: s.addralign,
    entsize: s.entsize,
  });
}

/**
 * Step 4: every loaded byte must be what it was, compared range by range; a hole held zeros
 * (checked when it was found) and nothing is loaded there now. Throws (the image left unchanged)
 * at the first byte that differs or is no longer loaded.
 */
function checkLoadedBytes(path: string, elf: ElfFile, file: Buffer, holes: Hole[]): void {
  const data = elf.data;
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
}
