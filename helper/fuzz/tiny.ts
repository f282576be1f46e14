// A tiny ELF64 writer for minimal reproducers: an ELF header, program headers, section data and
// a section header table (with `.shstrtab` added last), where any header field can be given a
// value no linker would write.
import { EM_X86_64, ET_EXEC } from '../elf.js';
import { EHDR, PHDR, SHDR, writeFields } from '../elflayout.js';

export interface TinySection {
  name: string;
  /** sh_name as written (default: the offset of `name` in `.shstrtab`). */
  nameOff?: number;
  type: number;
  flags?: bigint;
  addr?: bigint;
  data?: Buffer | string;
  /** Overrides of what the layout gives. */
  offset?: bigint;
  size?: bigint;
  link?: number;
  info?: number;
  align?: bigint;
  entsize?: bigint;
}

export interface TinySegment {
  type: number;
  flags: number;
  /** Offset in the file; a section name means that section's data. */
  offset: bigint | string;
  vaddr: bigint;
  filesz: bigint;
  memsz: bigint;
  align?: bigint;
}

export interface TinyElf {
  type?: number;
  machine?: number;
  entry?: bigint;
  sections: TinySection[];
  segments?: TinySegment[];
  /** e_shstrndx as written (default: `.shstrtab`, the last section). */
  shstrndx?: number;
  /** Overrides of `.shstrtab`'s header (it is the last section). */
  shstrtab?: Partial<Pick<TinySection, 'offset' | 'size' | 'type'>>;
}

const align8 = (n: number) => (n + 7) & ~7;

/**
 * The file: ELF header, program headers, each section's data at an 8-byte aligned offset,
 * `.shstrtab`, then the section headers.
 */
export function tinyElf64(o: TinyElf): Buffer {
  const secs = [...o.sections];
  const { names, strtab } = nameTable(secs);
  const segs = o.segments ?? [];
  const datas = secs.map((s) =>
    typeof s.data === 'string' ? Buffer.from(s.data, 'latin1') : (s.data ?? Buffer.alloc(0)),
  );
  const l = layOut(datas, 64 + 56 * segs.length, strtab);
  const shnum = secs.length + 2;
  const sht = sectionHeaders(o, names, datas, l, strtab);
  const eh = elfHeader(o, segs.length, l.shoff, shnum);
  const ph = programHeaders(segs, secs, l.offsets);
  return Buffer.concat([eh, ph, ...l.chunks, sht]);
}

/**
 * `.shstrtab`'s text and each section's name offset in it (`.shstrtab`'s own last); offset 0 is
 * the empty name of section 0.
 */
function nameTable(secs: TinySection[]): { names: number[]; strtab: string } {
  const names: number[] = [];
  let strtab = '\0';
  for (const s of [...secs.map((x) => x.name), '.shstrtab']) {
    names.push(strtab.length);
    strtab += `${s}\0`;
  }
  return { names, strtab };
}

interface TinyLayout {
  /** The file from `start` up to the section headers: data, `.shstrtab`, zero pads. */
  chunks: Buffer[];
  /** Each section's data offset. */
  offsets: number[];
  strAt: number;
  shoff: number;
}

/**
 * Where each section's data and `.shstrtab` go from `start` (just after the program headers),
 * each 8-byte aligned, and where the section headers start.
 */
function layOut(datas: Buffer[], start: number, strtab: string): TinyLayout {
  let off = start;
  const offsets: number[] = [];
  const chunks: Buffer[] = [];
  for (const d of datas) {
    const at = align8(off);
    chunks.push(Buffer.alloc(at - off));
    offsets.push(at);
    chunks.push(d);
    off = at + d.length;
  }
  const strAt = align8(off);
  chunks.push(Buffer.alloc(strAt - off), Buffer.from(strtab, 'latin1'));
  off = strAt + strtab.length;
  const shoff = align8(off);
  chunks.push(Buffer.alloc(shoff - off));
  return { chunks, offsets, strAt, shoff };
}

/**
 * The section header table: section 0, the given sections (any field can be overridden), then
 * `.shstrtab` (its type, offset and size can be).
 */
function sectionHeaders(
  o: TinyElf,
  names: number[],
  datas: Buffer[],
  l: TinyLayout,
  strtab: string,
): Buffer {
  const secs = o.sections;
  const shnum = secs.length + 2;
  const sht = Buffer.alloc(64 * shnum);
  secs.forEach((s, k) =>
    writeFields(sht, (k + 1) * 64, SHDR[64], {
      name: s.nameOff ?? names[k],
      type: s.type,
      flags: s.flags ?? 0n,
      addr: s.addr ?? 0n,
      offset: s.offset ?? BigInt(l.offsets[k]),
      size: s.size ?? BigInt(datas[k].length),
      link: s.link ?? 0,
      info: s.info ?? 0,
      addralign: s.align ?? 1n,
      entsize: s.entsize ?? 0n,
    }),
  );
  writeFields(sht, (shnum - 1) * 64, SHDR[64], {
    name: names[secs.length],
    type: o.shstrtab?.type ?? 3,
    flags: 0n,
    addr: 0n,
    offset: o.shstrtab?.offset ?? BigInt(l.strAt),
    size: o.shstrtab?.size ?? BigInt(strtab.length),
    link: 0,
    info: 0,
    addralign: 1n,
    entsize: 0n,
  });
  return sht;
}

/** The ELF header of a little-endian ELF64 file (type, machine, entry and e_shstrndx as given). */
function elfHeader(o: TinyElf, phnum: number, shoff: number, shnum: number): Buffer {
  const eh = Buffer.alloc(64);
  eh.writeUInt32BE(0x7f454c46, 0);
  eh[4] = 2;
  eh[5] = 1;
  eh[6] = 1;
  eh.writeUInt32LE(1, 20);
  writeFields(eh, 0, EHDR[64], {
    type: o.type ?? ET_EXEC,
    machine: o.machine ?? EM_X86_64,
    entry: o.entry ?? 0n,
    phoff: phnum ? 64n : 0n,
    shoff: BigInt(shoff),
    ehsize: 64,
    phentsize: 56,
    phnum,
    shentsize: 64,
    shnum,
    shstrndx: o.shstrndx ?? shnum - 1,
  });
  return eh;
}

/** The program headers; a segment's offset can name a section (its data's offset). */
function programHeaders(segs: TinySegment[], secs: TinySection[], offsets: number[]): Buffer {
  const ph = Buffer.alloc(56 * segs.length);
  segs.forEach((p, i) => {
    const fo =
      typeof p.offset === 'string'
        ? BigInt(offsets[secs.findIndex((s) => s.name === p.offset)])
        : p.offset;
    writeFields(ph, i * 56, PHDR[64], {
      type: p.type,
      flags: p.flags,
      offset: fo,
      vaddr: p.vaddr,
      paddr: p.vaddr,
      filesz: p.filesz,
      memsz: p.memsz,
      align: p.align ?? 0x1000n,
    });
  });
  return ph;
}
