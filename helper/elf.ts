// A small typed ELF reader: headers, sections, program headers, symbols and relocations,
// for ELF32 and ELF64 little-endian files. 64-bit fields are BigInt so nothing above 2^53
// is silently rounded; `num()` converts where a JavaScript number is safe.
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { EHDR, PHDR, readFields, SHDR, SYM, writeFields } from './elflayout.js';
import { SpacerError } from './errors.js';

export const SHT_NULL = 0,
  SHT_PROGBITS = 1,
  SHT_SYMTAB = 2,
  SHT_STRTAB = 3,
  SHT_RELA = 4,
  SHT_NOBITS = 8,
  SHT_REL = 9,
  SHT_SYMTAB_SHNDX = 18;
export const SHF_WRITE = 0x1n,
  SHF_ALLOC = 0x2n,
  SHF_EXECINSTR = 0x4n,
  SHF_TLS = 0x400n;
export const PT_LOAD = 1,
  PT_TLS = 7;
/** Program header flags: executable, writable, readable. */
export const PF_X = 1,
  PF_W = 2,
  PF_R = 4;
export const ET_REL = 1,
  ET_EXEC = 2,
  ET_DYN = 3;
/** x86-64 virtual addresses have 48 bits: anything loaded above that is a damaged file. */
const ADDRESS_LIMIT = 1n << 48n;
export const EM_386 = 3,
  EM_X86_64 = 62;
export const SHN_UNDEF = 0,
  SHN_ABS = 0xfff1,
  SHN_COMMON = 0xfff2,
  SHN_XINDEX = 0xffff;
export const STT_NOTYPE = 0,
  STT_OBJECT = 1,
  STT_FUNC = 2,
  STT_SECTION = 3,
  STT_FILE = 4,
  STT_TLS = 6,
  STT_GNU_IFUNC = 10;
export const STB_LOCAL = 0,
  STB_GLOBAL = 1,
  STB_WEAK = 2;

export interface ElfHeader {
  class: 32 | 64;
  type: number;
  machine: number;
  entry: bigint;
  phoff: bigint;
  shoff: bigint;
  flags: number;
  ehsize: number;
  phentsize: number;
  phnum: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

export interface Section {
  index: number;
  name: string;
  type: number;
  flags: bigint;
  addr: bigint;
  offset: bigint;
  size: bigint;
  link: number;
  info: number;
  addralign: bigint;
  entsize: bigint;
}

export interface ProgramHeader {
  type: number;
  flags: number;
  offset: bigint;
  vaddr: bigint;
  paddr: bigint;
  filesz: bigint;
  memsz: bigint;
  align: bigint;
}

export interface ElfSymbol {
  index: number;
  name: string;
  value: bigint;
  size: bigint;
  bind: number;
  type: number;
  other: number;
  shndx: number;
}

/** A record's fields as the file has them: `name` is the offset of the name in its string table. */
type Named<T> = Omit<T, 'index' | 'name'> & { name: number };
/** A symbol as the file has it: st_info holds its binding and type. */
type RawSymbol = Omit<Named<ElfSymbol>, 'bind' | 'type'> & { info: number };

export interface Relocation {
  offset: bigint;
  type: number;
  sym: number;
  addend: bigint;
}

/** Converts a BigInt file quantity to a number, refusing values a double cannot hold exactly. */
export function num(v: bigint, what = 'value'): number {
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER))
    throw new RangeError(`${what} ${v} is out of range`);
  return Number(v);
}

export class ElfFile {
  readonly header: ElfHeader;
  readonly sections: Section[];
  readonly segments: ProgramHeader[];
  private symtabCache?: ElfSymbol[];
  private relocIndex?: Map<number, Section[]>;
  /** Relocations per target section, parsed once (callers only read them). */
  private relocsOf = new Map<number, readonly Relocation[]>();

  constructor(
    readonly path: string,
    readonly data: Buffer,
  ) {
    this.header = this.readHeader();
    this.sections = this.readSections();
    this.segments = this.readSegments();
  }

  /** The file at `path`, read whole by `read` (util/buffers.ts's `readWhole` for an image the
   *  link server may read into a kept buffer). */
  static load(path: string, read: (path: string) => Buffer = readFileSync): ElfFile {
    let data: Buffer;
    try {
      data = read(path);
    } catch (e) {
      throw new SpacerError(
        `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? e}); check the path`,
      );
    }
    return new ElfFile(path, data);
  }

  /**
   * An ELF64 relocatable object as a link reads it: its header, section headers, allocated
   * sections, symbols, strings and the relocations of allocated sections, gathered into one small
   * buffer (a Unikraft object is mostly debug information, which stays unread: those sections read
   * as empty SHT_NOBITS ones). Anything else (an image, a damaged file) is loaded whole, so it
   * fails as `load` would.
   */
  static loadAllocated(path: string): ElfFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return ElfFile.load(path);
    }
    try {
      return ElfFile.gather(path, fd) ?? ElfFile.load(path);
    } finally {
      closeSync(fd);
    }
  }

  private static gather(path: string, fd: number): ElfFile | undefined {
    const size = fstatSync(fd).size;
    const read = (off: number, len: number): Buffer | undefined => {
      const b = Buffer.allocUnsafe(len);
      return off >= 0 && off + len <= size && readSync(fd, b, 0, len, off) === len ? b : undefined;
    };
    const eh = read(0, 64);
    if (!eh || eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) return undefined;
    const h = readFields<Omit<ElfHeader, 'class'>>(eh, 0, EHDR[64]);
    if (h.type !== ET_REL || h.shentsize !== 64 || h.phnum) return undefined;
    const shoff = Number(h.shoff);
    const sh = Number.isSafeInteger(shoff) && h.shnum ? read(shoff, h.shnum * 64) : undefined;
    if (!sh) return undefined;
    const hdrs = Array.from({ length: h.shnum }, (_, i) =>
      readFields<Named<Section>>(sh, i * 64, SHDR[64]),
    );
    const alloc = (i: number) => i < h.shnum && !!(hdrs[i].flags & SHF_ALLOC);
    const wanted = (i: number, x: Named<Section>) =>
      i === h.shstrndx ||
      [SHT_SYMTAB, SHT_STRTAB, SHT_SYMTAB_SHNDX].includes(x.type) ||
      ((x.type === SHT_RELA || x.type === SHT_REL) && alloc(x.info)) ||
      alloc(i);
    // The new file: header, section headers, then each wanted section's bytes (8-aligned).
    const parts: Buffer[] = [eh, sh];
    let at = 64 + h.shnum * 64;
    for (const [i, x] of hdrs.entries()) {
      if (x.type === SHT_NOBITS || x.type === SHT_NULL) continue;
      if (!wanted(i, x)) {
        writeFields(sh, i * 64, SHDR[64], { type: SHT_NOBITS, offset: 0n });
        continue;
      }
      const off = Number(x.offset),
        len = Number(x.size);
      const bytes = Number.isSafeInteger(off) && Number.isSafeInteger(len) && read(off, len);
      if (!bytes) return undefined;
      const pad = (8 - (at % 8)) % 8;
      if (pad) parts.push(Buffer.alloc(pad));
      at += pad;
      writeFields(sh, i * 64, SHDR[64], { offset: BigInt(at) });
      parts.push(bytes);
      at += len;
    }
    writeFields(eh, 0, EHDR[64], { shoff: 64n });
    return new ElfFile(path, Buffer.concat(parts));
  }

  get is64(): boolean {
    return this.header.class === 64;
  }

  private fail(msg: string): never {
    throw new SpacerError(`${this.path}: ${msg}`);
  }

  /** A file quantity as a number, or one clear error naming the file. */
  private n(v: bigint, what: string): number {
    if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER))
      this.fail(`${what} ${v} is out of range; not a valid ELF file`);
    return Number(v);
  }

  private need(off: bigint | number, len: number, what: string): number {
    const o = typeof off === 'bigint' ? off : BigInt(off);
    if (o < 0n || o + BigInt(len) > BigInt(this.data.length)) {
      this.fail(
        `truncated ELF file (${what} at offset ${o} needs ${len} bytes, file has ${this.data.length}); rebuild it`,
      );
    }
    return Number(o);
  }

  private readHeader(): ElfHeader {
    const d = this.data;
    if (d.length < 16 || d.readUInt32BE(0) !== 0x7f454c46)
      this.fail('not an ELF file; pass a linked image or object');
    const cls = d[4];
    if (cls !== 1 && cls !== 2) this.fail(`unknown ELF class ${cls}; not a valid ELF file`);
    if (d[5] !== 1)
      this.fail(
        'big-endian ELF is not supported; lib-spacer handles x86-64 (little-endian) images',
      );
    const is64 = cls === 2;
    this.need(0, is64 ? 64 : 52, 'ELF header');
    const bits = is64 ? 64 : 32;
    // The fields after e_ident (its class and data bytes were checked above).
    const fields = EHDR[bits].filter((f) => f.name.startsWith('e_'));
    const h: ElfHeader = { class: bits, ...readFields<Omit<ElfHeader, 'class'>>(d, 0, fields) };
    if (h.machine !== EM_X86_64 && h.machine !== EM_386) {
      this.fail(
        `foreign architecture (e_machine ${h.machine}); lib-spacer handles x86-64 images only`,
      );
    }
    const shsz = is64 ? 64 : 40,
      phsz = is64 ? 56 : 32;
    if (h.shnum && h.shentsize !== shsz)
      this.fail(`bad section header size ${h.shentsize}; not a valid ELF file`);
    if (h.phnum && h.phentsize !== phsz)
      this.fail(`bad program header size ${h.phentsize}; not a valid ELF file`);
    return h;
  }

  private readSections(): Section[] {
    const h = this.header,
      d = this.data,
      is64 = this.is64;
    if (h.shoff === 0n) return [];
    let shnum = h.shnum;
    const entsz = is64 ? 64 : 40;
    const base = this.need(h.shoff, entsz, 'section header 0');
    const layout = SHDR[h.class];
    if (shnum === 0) shnum = this.n(readFields<Section>(d, base, layout).size, 'section count');
    this.need(h.shoff, shnum * entsz, 'section header table');
    const raw: Section[] = [],
      nameOffs: number[] = [];
    for (let i = 0; i < shnum; i++) {
      const at = base + i * entsz;
      const { name: nameOff, ...f } = readFields<Named<Section>>(d, at, layout);
      raw.push({ index: i, name: '', ...f });
      nameOffs.push(nameOff);
    }
    let shstrndx = h.shstrndx;
    if (shstrndx === SHN_XINDEX) shstrndx = raw[0].link;
    const strtab = raw[shstrndx];
    if (!strtab)
      this.fail(`section name table index ${shstrndx} out of range; not a valid ELF file`);
    // Every section's bytes lie in the file (the name table first: names are read from it).
    for (const s of [strtab, ...raw]) {
      if (s.type !== SHT_NOBITS && s.type !== SHT_NULL)
        this.need(s.offset, this.n(s.size, `section ${s.index} size`), `section ${s.index}`);
    }
    for (const s of raw) {
      if (s.flags & SHF_ALLOC && s.addr + s.size > ADDRESS_LIMIT)
        this.fail(`section ${s.index} lies outside the x86-64 address space; not a valid image`);
      s.name = this.cstr(strtab, nameOffs[s.index]);
    }
    return raw;
  }

  private readSegments(): ProgramHeader[] {
    const h = this.header,
      d = this.data,
      is64 = this.is64;
    if (h.phoff === 0n || h.phnum === 0) return [];
    const entsz = is64 ? 56 : 32;
    const base = this.need(h.phoff, h.phnum * entsz, 'program header table');
    const out: ProgramHeader[] = [];
    for (let i = 0; i < h.phnum; i++) {
      const ph = readFields<ProgramHeader>(d, base + i * entsz, PHDR[h.class]);
      if (ph.type === PT_LOAD) {
        if (ph.filesz > ph.memsz) this.fail(`segment ${i} has filesz > memsz; not a valid image`);
        if (ph.vaddr + ph.memsz > ADDRESS_LIMIT)
          this.fail(`segment ${i} lies outside the x86-64 address space; not a valid image`);
        this.need(ph.offset, this.n(ph.filesz, `segment ${i} size`), `segment ${i}`);
      }
      out.push(ph);
    }
    return out;
  }

  private cstr(strtab: Section, off: number): string {
    if (strtab.type === SHT_NOBITS) return '';
    if (strtab.type === SHT_NULL)
      this.fail(`string table ${strtab.index} has no contents; not a valid ELF file`);
    const start = this.n(strtab.offset, 'string table offset') + off;
    const end = this.n(strtab.offset + strtab.size, 'string table end');
    if (off >= Number(strtab.size)) {
      if (off === 0) return '';
      this.fail(
        `string offset ${off} outside string table section ${strtab.index}; not a valid ELF file`,
      );
    }
    let i = start;
    while (i < end && this.data[i] !== 0) i++;
    return this.data.toString('latin1', start, i);
  }

  section(name: string): Section | undefined {
    // By name, built on first use (the first of a name, as a search would find): a finish asks
    // for each µlib's sections again and again.
    if (!this.byName) {
      this.byName = new Map();
      for (const s of this.sections) if (!this.byName.has(s.name)) this.byName.set(s.name, s);
    }
    return this.byName.get(name);
  }
  private byName?: Map<string, Section>;

  /** Bytes of a section (empty for NOBITS). */
  contents(s: Section): Buffer {
    if (s.type === SHT_NOBITS) return Buffer.alloc(0);
    const o = this.need(s.offset, this.n(s.size, `section ${s.index} size`), `section ${s.index}`);
    return this.data.subarray(o, o + this.n(s.size, `section ${s.index} size`));
  }

  get loads(): ProgramHeader[] {
    return this.segments.filter((p) => p.type === PT_LOAD);
  }

  /** The symbol table (.symtab, else .dynsym), with names resolved. */
  symbols(): ElfSymbol[] {
    if (this.symtabCache) return this.symtabCache;
    const tab =
      this.sections.find((s) => s.type === SHT_SYMTAB) ?? this.sections.find((s) => s.type === 11);
    if (!tab) return (this.symtabCache = []);
    const strtab = this.sections[tab.link];
    if (!strtab)
      this.fail(`symbol table links to missing string table ${tab.link}; not a valid ELF file`);
    const xndxSec = this.sections.find((s) => s.type === SHT_SYMTAB_SHNDX && s.link === tab.index);
    const entsz = this.is64 ? 24 : 16;
    const n = this.n(tab.size, 'symbol table size') / entsz;
    if (!Number.isInteger(n))
      this.fail(
        `symbol table size ${tab.size} is not a multiple of ${entsz}; not a valid ELF file`,
      );
    const d = this.data,
      base = this.need(tab.offset, this.n(tab.size, 'symbol table size'), 'symbol table');
    const out: ElfSymbol[] = [],
      layout = SYM[this.header.class];
    for (let i = 0; i < n; i++) {
      const at = base + i * entsz;
      const { name: nameOff, info, ...f } = readFields<RawSymbol>(d, at, layout);
      const sym: ElfSymbol = { index: i, name: '', bind: info >> 4, type: info & 15, ...f };
      if (sym.shndx === SHN_XINDEX && xndxSec)
        sym.shndx = d.readUInt32LE(
          this.need(xndxSec.offset + BigInt(4 * i), 4, 'extended section index'),
        );
      sym.name = this.cstr(strtab, nameOff);
      out.push(sym);
    }
    return (this.symtabCache = out);
  }

  /** Relocations of a SHT_RELA or SHT_REL section. */
  relocations(s: Section): Relocation[] {
    if (s.type !== SHT_RELA && s.type !== SHT_REL) return [];
    const rela = s.type === SHT_RELA;
    const entsz = this.is64 ? (rela ? 24 : 16) : rela ? 12 : 8;
    const n = this.n(s.size, `relocation section ${s.name} size`) / entsz;
    if (!Number.isInteger(n))
      this.fail(
        `relocation section ${s.name} size is not a multiple of ${entsz}; not a valid ELF file`,
      );
    const d = this.data,
      base = this.need(
        s.offset,
        this.n(s.size, `relocation section ${s.name} size`),
        `relocation section ${s.name}`,
      );
    const out: Relocation[] = [];
    for (let i = 0; i < n; i++) {
      const p = base + i * entsz;
      if (this.is64) {
        const info = d.readBigUInt64LE(p + 8);
        out.push({
          offset: d.readBigUInt64LE(p),
          type: Number(info & 0xffffffffn),
          sym: Number(info >> 32n),
          addend: rela ? d.readBigInt64LE(p + 16) : 0n,
        });
      } else {
        const info = d.readUInt32LE(p + 4);
        out.push({
          offset: BigInt(d.readUInt32LE(p)),
          type: info & 0xff,
          sym: info >>> 8,
          addend: rela ? BigInt(d.readInt32LE(p + 8)) : 0n,
        });
      }
    }
    return out;
  }

  /**
   * The relocations that apply to section `target` (from every relocation section that does),
   * parsed on the first call: the finish asks again for each µlib's check, and an image of ld's
   * with --emit-relocs holds some hundred thousand. Read-only: the same array every call.
   */
  relocationsFor(target: Section): readonly Relocation[] {
    const known = this.relocsOf.get(target.index);
    if (known) return known;
    if (!this.relocIndex) {
      // Built once: an object with function sections has thousands of sections to look through.
      this.relocIndex = new Map();
      for (const s of this.sections) {
        if (s.type !== SHT_RELA && s.type !== SHT_REL) continue;
        const l = this.relocIndex.get(s.info);
        if (l) l.push(s);
        else this.relocIndex.set(s.info, [s]);
      }
    }
    const all = (this.relocIndex.get(target.index) ?? []).flatMap((s) => this.relocations(s));
    this.relocsOf.set(target.index, all);
    return all;
  }
}
