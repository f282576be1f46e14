// The pieces every structure's mutations share: reading and writing a field of any width, values
// likely to break a reader, the ELF header tables' field layouts (data), and the regions worth
// hitting.
import { SHT_NOBITS, type Section } from '../elf.js';
import { EHDR, PHDR, SHDR, type FieldDef, type RecordLayout } from '../elflayout.js';
import type { ImageStruct } from './image.js';
import type { Rng } from './rng.js';

export function get(b: Buffer, off: number, width: number): bigint | undefined {
  if (off < 0 || off + width > b.length) return undefined;
  switch (width) {
    case 1:
      return BigInt(b[off]);
    case 2:
      return BigInt(b.readUInt16LE(off));
    case 4:
      return BigInt(b.readUInt32LE(off));
    default:
      return b.readBigUInt64LE(off);
  }
}

export function put(b: Buffer, off: number, width: number, v: bigint): boolean {
  if (off < 0 || off + width > b.length) return false;
  v = BigInt.asUintN(width * 8, v);
  switch (width) {
    case 1:
      b[off] = Number(v);
      break;
    case 2:
      b.writeUInt16LE(Number(v), off);
      break;
    case 4:
      b.writeUInt32LE(Number(v), off);
      break;
    default:
      b.writeBigUInt64LE(v, off);
  }
  return true;
}

export const P53 = 2n ** 53n,
  P63 = 2n ** 63n,
  P64 = 2n ** 64n;

/**
 * A value for a `width`-byte field that is likely to break a reader: boundaries, overflows, near
 * misses.
 */
export function interesting(
  rng: Rng,
  width: number,
  cur: bigint,
  ctx: { fileSize: number; unit?: number; count?: number; size?: bigint },
): bigint {
  const fs = BigInt(ctx.fileSize),
    unit = BigInt(ctx.unit ?? 1),
    max = 2n ** BigInt(width * 8) - 1n;
  const rel: bigint[] = [
    cur + 1n,
    cur - 1n,
    cur + unit,
    cur - unit,
    cur * 2n,
    cur / 2n,
    cur ^ (1n << BigInt(rng.int(width * 8))),
    fs,
    fs - 1n,
    fs + 1n,
    fs - cur,
    fs - cur + 1n,
    fs + unit,
    fs - BigInt(rng.int(64)),
    max - cur,
    max - cur + 1n,
  ];
  if (ctx.count !== undefined)
    rel.push(
      BigInt(ctx.count),
      BigInt(ctx.count) + 1n,
      BigInt(ctx.count) - 1n,
      BigInt(ctx.count) * 2n,
    );
  if (ctx.size !== undefined)
    rel.push(ctx.size, ctx.size + 1n, P64 - ctx.size, P64 - ctx.size + 1n, cur + ctx.size);
  const abs: bigint[] = [
    0n,
    1n,
    2n,
    3n,
    4n,
    7n,
    8n,
    16n,
    0x7fn,
    0x80n,
    0xffn,
    0x100n,
    0x7fffn,
    0x8000n,
    0xff00n,
    0xfff1n,
    0xfff2n,
    0xffffn,
    0x10000n,
    0x7fffffffn,
    0x80000000n,
    0xffffffffn,
    0x100000000n,
    P53 - 1n,
    P53,
    P53 + 1n,
    P63 - 1n,
    P63,
    P64 - 1n,
    P64 - 2n,
  ];
  const r = rng.float();
  const v = r < 0.45 ? rng.pick(rel) : r < 0.9 ? rng.pick(abs) : rng.big(width * 8);
  return BigInt.asUintN(width * 8, v > max && rng.chance(0.5) ? max : v);
}

// ---------------------------------------------------------------------------------------------
// Field layouts

/**
 * A header's fields the mutations pick, each with its weight: `name:weight` words, in the
 * layout's order (the others, such as e_flags, are left alone).
 */
function pick(layout: RecordLayout, weights: string): Record<32 | 64, [FieldDef, number][]> {
  const w = new Map(weights.split(/\s+/).map((word) => word.split(':') as [string, string]));
  const of = (defs: FieldDef[]): [FieldDef, number][] =>
    defs.filter((d) => w.has(d.name)).map((d) => [d, Number(w.get(d.name))]);
  return { 64: of(layout[64]), 32: of(layout[32]) };
}

export const EHDR_FIELDS = pick(
  EHDR,
  'EI_CLASS:1 EI_DATA:1 e_type:2 e_machine:1 e_entry:1 e_phoff:6 e_shoff:8 e_ehsize:1 ' +
    'e_phentsize:3 e_phnum:5 e_shentsize:4 e_shnum:6 e_shstrndx:6',
);
export const SHDR_FIELDS = pick(
  SHDR,
  'sh_name:6 sh_type:8 sh_flags:5 sh_addr:8 sh_offset:14 sh_size:16 sh_link:8 sh_info:8 ' +
    'sh_addralign:2 sh_entsize:3',
);
export const PHDR_FIELDS = pick(
  PHDR,
  'p_type:3 p_flags:2 p_offset:6 p_vaddr:6 p_paddr:1 p_filesz:7 p_memsz:7 p_align:1',
);

/** The buffer being mutated (may grow or shrink) and what was done to it. */
export interface State {
  buf: Buffer;
  ops: string[];
}

export type Op = (rng: Rng, st: ImageStruct, s: State) => boolean;

/**
 * Sections a mutation prefers: the ones the reader, the report and the rewriter look at closely.
 */
export function hotSection(rng: Rng, st: ImageStruct): Section {
  const hot = st.sections.filter((s) =>
    /^\.(spacer\.|symtab$|strtab$|shstrtab$|rela?\.text\.|text\.(lib|app)|ind\.|bss\.(lib|app)|data\.(lib|app)|rodata\.(lib|app)|tdata|tbss)/.test(
      s.name,
    ),
  );
  return hot.length && rng.chance(0.6) ? rng.pick(hot) : rng.pick(st.sections);
}

/** A byte range worth hitting: a header table, a section's data, else anywhere. */
export function hotRegion(rng: Rng, st: ImageStruct, len: number): [number, number, string] {
  const r = rng.int(6);
  if (r === 0) return [0, st.ehsize, 'ELF header'];
  if (r === 1 && st.phnum) return [st.phoff, st.phoff + st.phnum * st.phentsize, 'program headers'];
  if (r === 2 && st.shnum) return [st.shoff, st.shoff + st.shnum * st.shentsize, 'section headers'];
  if (r === 3 || r === 4) {
    const s = hotSection(rng, st);
    if (s.type !== SHT_NOBITS && s.size > 0n && s.offset < BigInt(len))
      return [
        Number(s.offset),
        Math.min(len, Number(s.offset + s.size)),
        s.name || `section ${s.index}`,
      ];
  }
  return [0, len, 'file'];
}
