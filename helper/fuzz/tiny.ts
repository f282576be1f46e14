// A tiny ELF64 writer for minimal reproducers: an ELF header, program headers, section data and
// a section header table (with `.shstrtab` added last), where any header field can be given a
// value no linker would write.
import { EM_X86_64, ET_EXEC } from '../elf.js';

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

export function tinyElf64(o: TinyElf): Buffer {
  const secs = [...o.sections];
  // Names: offset 0 is the empty name of section 0.
  const names: number[] = [];
  let strtab = '\0';
  for (const s of [...secs.map((x) => x.name), '.shstrtab']) {
    names.push(strtab.length);
    strtab += `${s}\0`;
  }
  const segs = o.segments ?? [];
  let off = 64 + 56 * segs.length;
  const datas = secs.map((s) =>
    typeof s.data === 'string' ? Buffer.from(s.data, 'latin1') : (s.data ?? Buffer.alloc(0)),
  );
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
  const shnum = secs.length + 2;
  const sht = Buffer.alloc(64 * shnum);
  const hdr = (
    i: number,
    name: number,
    type: number,
    flags: bigint,
    addr: bigint,
    offset: bigint,
    size: bigint,
    link: number,
    info: number,
    al: bigint,
    ent: bigint,
  ) => {
    const p = i * 64;
    sht.writeUInt32LE(name, p);
    sht.writeUInt32LE(type, p + 4);
    sht.writeBigUInt64LE(flags, p + 8);
    sht.writeBigUInt64LE(addr, p + 16);
    sht.writeBigUInt64LE(offset, p + 24);
    sht.writeBigUInt64LE(size, p + 32);
    sht.writeUInt32LE(link, p + 40);
    sht.writeUInt32LE(info, p + 44);
    sht.writeBigUInt64LE(al, p + 48);
    sht.writeBigUInt64LE(ent, p + 56);
  };
  secs.forEach((s, k) =>
    hdr(
      k + 1,
      s.nameOff ?? names[k],
      s.type,
      s.flags ?? 0n,
      s.addr ?? 0n,
      s.offset ?? BigInt(offsets[k]),
      s.size ?? BigInt(datas[k].length),
      s.link ?? 0,
      s.info ?? 0,
      s.align ?? 1n,
      s.entsize ?? 0n,
    ),
  );
  hdr(
    shnum - 1,
    names[secs.length],
    o.shstrtab?.type ?? 3,
    0n,
    0n,
    o.shstrtab?.offset ?? BigInt(strAt),
    o.shstrtab?.size ?? BigInt(strtab.length),
    0,
    0,
    1n,
    0n,
  );
  chunks.push(sht);

  const eh = Buffer.alloc(64);
  eh.writeUInt32BE(0x7f454c46, 0);
  eh[4] = 2;
  eh[5] = 1;
  eh[6] = 1;
  eh.writeUInt16LE(o.type ?? ET_EXEC, 16);
  eh.writeUInt16LE(o.machine ?? EM_X86_64, 18);
  eh.writeUInt32LE(1, 20);
  eh.writeBigUInt64LE(o.entry ?? 0n, 24);
  eh.writeBigUInt64LE(segs.length ? 64n : 0n, 32);
  eh.writeBigUInt64LE(BigInt(shoff), 40);
  eh.writeUInt16LE(64, 52);
  eh.writeUInt16LE(56, 54);
  eh.writeUInt16LE(segs.length, 56);
  eh.writeUInt16LE(64, 58);
  eh.writeUInt16LE(shnum, 60);
  eh.writeUInt16LE(o.shstrndx ?? shnum - 1, 62);
  const ph = Buffer.alloc(56 * segs.length);
  segs.forEach((p, i) => {
    const b = i * 56;
    const fo =
      typeof p.offset === 'string'
        ? BigInt(offsets[secs.findIndex((s) => s.name === p.offset)])
        : p.offset;
    ph.writeUInt32LE(p.type, b);
    ph.writeUInt32LE(p.flags, b + 4);
    ph.writeBigUInt64LE(fo, b + 8);
    ph.writeBigUInt64LE(p.vaddr, b + 16);
    ph.writeBigUInt64LE(p.vaddr, b + 24);
    ph.writeBigUInt64LE(p.filesz, b + 32);
    ph.writeBigUInt64LE(p.memsz, b + 40);
    ph.writeBigUInt64LE(p.align ?? 0x1000n, b + 48);
  });
  return Buffer.concat([eh, ph, ...chunks]);
}
