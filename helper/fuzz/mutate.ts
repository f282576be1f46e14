// Structure-aware mutations of a real ELF image. Each mutation is drawn from a case's own PRNG
// and described in one line (field, old value, new value), so a finding can be reproduced from
// the description alone as well as from the seed and the case number.
import { deflateSync, inflateSync } from 'node:zlib';
import { ElfFile, SHT_NOBITS, SHT_REL, SHT_RELA, SHT_SYMTAB, type Section } from '../elf.js';
import type { Rng } from './rng.js';

// ---------------------------------------------------------------------------------------------
// What a mutation needs to know about an (unmutated) image

export interface RelocSec {
  sec: Section;
  target: Section;
  entsize: number;
  count: number;
  rela: boolean;
}

export interface SiteRef {
  /** File offsets of the site's instruction, its length, and its table entry (if in the file). */
  off: number;
  len: number;
  entry: number | null;
  what: string;
}

export interface ImageStruct {
  id: string;
  data: Buffer;
  is64: boolean;
  sections: Section[];
  shoff: number;
  shnum: number;
  shentsize: number;
  phoff: number;
  phnum: number;
  phentsize: number;
  ehsize: number;
  relocs: RelocSec[];
  symtab?: { sec: Section; count: number; entsize: number; strtab?: Section };
  /**
   * `.spacer.rewrite` and `.spacer.plan` JSON text (inflated when the section is deflated), when
   * present.
   */
  json: { sec: Section; text: string; deflated: boolean }[];
  sites: SiteRef[];
  code: Section[];
  tables: Section[];
}

const isCode = (s: Section) => /^\.text\.(lib|app)/.test(s.name);
const fileOf = (s: Section, addr: bigint) => Number(s.offset + (addr - s.addr));

/** Reads what the mutations aim at from an image that loads cleanly. */
export function imageStruct(id: string, elf: ElfFile): ImageStruct {
  const h = elf.header,
    is64 = elf.is64;
  const secs = elf.sections;
  const relocs: RelocSec[] = [];
  for (const s of secs) {
    if (s.type !== SHT_RELA && s.type !== SHT_REL) continue;
    const target = secs[s.info];
    if (!target) continue;
    const rela = s.type === SHT_RELA;
    const entsize = is64 ? (rela ? 24 : 16) : rela ? 12 : 8;
    relocs.push({ sec: s, target, entsize, count: Number(s.size) / entsize, rela });
  }
  const st = secs.find((s) => s.type === SHT_SYMTAB);
  const symEnt = is64 ? 24 : 16;
  const json: ImageStruct['json'] = [];
  for (const name of ['.spacer.rewrite', '.spacer.plan']) {
    const s = elf.section(name);
    if (!s || s.type === SHT_NOBITS) continue;
    const raw = elf.contents(s);
    let text = raw.toString('utf8'),
      deflated = false;
    if (raw[0] === 0x78) {
      try {
        text = inflateSync(raw).toString('utf8');
        deflated = true;
      } catch {
        /* plain text after all */
      }
    }
    json.push({ sec: s, text, deflated });
  }
  const sites: SiteRef[] = [];
  const rw = json.find((j) => j.sec.name === '.spacer.rewrite');
  if (rw) {
    const rec = JSON.parse(rw.text) as {
      ulibs: {
        text: string;
        ind: { section: string };
        sites: { a: string; o: string; e: string; k: string }[];
      }[];
    };
    for (const u of rec.ulibs) {
      const text = elf.section(u.text),
        ind = elf.section(u.ind.section);
      if (!text) continue;
      for (const s of u.sites) {
        const e = BigInt(s.e);
        sites.push({
          off: fileOf(text, BigInt(s.a)),
          len: s.o.length / 2,
          what: `${u.text} site ${s.a} (${s.k})`,
          entry: ind && e >= ind.addr && e < ind.addr + ind.size ? fileOf(ind, e) : null,
        });
      }
    }
  } else {
    // Not rewritten: the places the rewriter reads are the relocated fields in µlib code.
    for (const r of relocs) {
      if (!isCode(r.target)) continue;
      for (const x of elf.relocations(r.sec)) {
        if (x.offset < r.target.addr || x.offset >= r.target.addr + r.target.size) continue;
        sites.push({
          off: fileOf(r.target, x.offset),
          len: 4,
          entry: null,
          what: `${r.target.name} relocation at 0x${x.offset.toString(16)} (type ${x.type})`,
        });
      }
    }
  }
  return {
    id,
    data: elf.data,
    is64,
    sections: secs,
    shoff: Number(h.shoff),
    shnum: secs.length,
    shentsize: is64 ? 64 : 40,
    phoff: Number(h.phoff),
    phnum: h.phnum,
    phentsize: is64 ? 56 : 32,
    ehsize: is64 ? 64 : 52,
    relocs,
    symtab: st
      ? { sec: st, count: Number(st.size) / symEnt, entsize: symEnt, strtab: secs[st.link] }
      : undefined,
    json,
    sites,
    code: secs.filter((s) => isCode(s) && s.type !== SHT_NOBITS && s.size > 0n),
    tables: secs.filter((s) => /^\.ind\./.test(s.name) && s.type !== SHT_NOBITS && s.size > 0n),
  };
}

// ---------------------------------------------------------------------------------------------
// Byte helpers

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

function get(b: Buffer, off: number, width: number): bigint | undefined {
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

function put(b: Buffer, off: number, width: number, v: bigint): boolean {
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

const P53 = 2n ** 53n,
  P63 = 2n ** 63n,
  P64 = 2n ** 64n;

/**
 * A value for a `width`-byte field that is likely to break a reader: boundaries, overflows, near
 * misses.
 */
function interesting(
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

interface FieldDef {
  name: string;
  off: number;
  width: number;
}

const EHDR64: FieldDef[] = [
  { name: 'EI_CLASS', off: 4, width: 1 },
  { name: 'EI_DATA', off: 5, width: 1 },
  { name: 'e_type', off: 16, width: 2 },
  { name: 'e_machine', off: 18, width: 2 },
  { name: 'e_entry', off: 24, width: 8 },
  { name: 'e_phoff', off: 32, width: 8 },
  { name: 'e_shoff', off: 40, width: 8 },
  { name: 'e_ehsize', off: 52, width: 2 },
  { name: 'e_phentsize', off: 54, width: 2 },
  { name: 'e_phnum', off: 56, width: 2 },
  { name: 'e_shentsize', off: 58, width: 2 },
  { name: 'e_shnum', off: 60, width: 2 },
  { name: 'e_shstrndx', off: 62, width: 2 },
];
const EHDR32: FieldDef[] = [
  { name: 'EI_CLASS', off: 4, width: 1 },
  { name: 'EI_DATA', off: 5, width: 1 },
  { name: 'e_type', off: 16, width: 2 },
  { name: 'e_machine', off: 18, width: 2 },
  { name: 'e_entry', off: 24, width: 4 },
  { name: 'e_phoff', off: 28, width: 4 },
  { name: 'e_shoff', off: 32, width: 4 },
  { name: 'e_ehsize', off: 40, width: 2 },
  { name: 'e_phentsize', off: 42, width: 2 },
  { name: 'e_phnum', off: 44, width: 2 },
  { name: 'e_shentsize', off: 46, width: 2 },
  { name: 'e_shnum', off: 48, width: 2 },
  { name: 'e_shstrndx', off: 50, width: 2 },
];
const EHDR_WEIGHT: Record<string, number> = {
  EI_CLASS: 1,
  EI_DATA: 1,
  e_type: 2,
  e_machine: 1,
  e_entry: 1,
  e_phoff: 6,
  e_shoff: 8,
  e_ehsize: 1,
  e_phentsize: 3,
  e_phnum: 5,
  e_shentsize: 4,
  e_shnum: 6,
  e_shstrndx: 6,
};

const SHDR64: FieldDef[] = [
  { name: 'sh_name', off: 0, width: 4 },
  { name: 'sh_type', off: 4, width: 4 },
  { name: 'sh_flags', off: 8, width: 8 },
  { name: 'sh_addr', off: 16, width: 8 },
  { name: 'sh_offset', off: 24, width: 8 },
  { name: 'sh_size', off: 32, width: 8 },
  { name: 'sh_link', off: 40, width: 4 },
  { name: 'sh_info', off: 44, width: 4 },
  { name: 'sh_addralign', off: 48, width: 8 },
  { name: 'sh_entsize', off: 56, width: 8 },
];
const SHDR32: FieldDef[] = [
  { name: 'sh_name', off: 0, width: 4 },
  { name: 'sh_type', off: 4, width: 4 },
  { name: 'sh_flags', off: 8, width: 4 },
  { name: 'sh_addr', off: 12, width: 4 },
  { name: 'sh_offset', off: 16, width: 4 },
  { name: 'sh_size', off: 20, width: 4 },
  { name: 'sh_link', off: 24, width: 4 },
  { name: 'sh_info', off: 28, width: 4 },
  { name: 'sh_addralign', off: 32, width: 4 },
  { name: 'sh_entsize', off: 36, width: 4 },
];
const SHDR_WEIGHT: Record<string, number> = {
  sh_name: 6,
  sh_type: 8,
  sh_flags: 5,
  sh_addr: 8,
  sh_offset: 14,
  sh_size: 16,
  sh_link: 8,
  sh_info: 8,
  sh_addralign: 2,
  sh_entsize: 3,
};

const PHDR64: FieldDef[] = [
  { name: 'p_type', off: 0, width: 4 },
  { name: 'p_flags', off: 4, width: 4 },
  { name: 'p_offset', off: 8, width: 8 },
  { name: 'p_vaddr', off: 16, width: 8 },
  { name: 'p_paddr', off: 24, width: 8 },
  { name: 'p_filesz', off: 32, width: 8 },
  { name: 'p_memsz', off: 40, width: 8 },
  { name: 'p_align', off: 48, width: 8 },
];
const PHDR32: FieldDef[] = [
  { name: 'p_type', off: 0, width: 4 },
  { name: 'p_offset', off: 4, width: 4 },
  { name: 'p_vaddr', off: 8, width: 4 },
  { name: 'p_paddr', off: 12, width: 4 },
  { name: 'p_filesz', off: 16, width: 4 },
  { name: 'p_memsz', off: 20, width: 4 },
  { name: 'p_flags', off: 24, width: 4 },
  { name: 'p_align', off: 28, width: 4 },
];
const PHDR_WEIGHT: Record<string, number> = {
  p_type: 3,
  p_flags: 2,
  p_offset: 6,
  p_vaddr: 6,
  p_paddr: 1,
  p_filesz: 7,
  p_memsz: 7,
  p_align: 1,
};

const weighted = (defs: FieldDef[], w: Record<string, number>) =>
  defs.map((d) => [d, w[d.name] ?? 1] as const);

// ---------------------------------------------------------------------------------------------
// The mutations

/** The buffer being mutated (may grow or shrink) and what was done to it. */
interface State {
  buf: Buffer;
  ops: string[];
}

type Op = (rng: Rng, st: ImageStruct, s: State) => boolean;

/**
 * Sections a mutation prefers: the ones the reader, the report and the rewriter look at closely.
 */
function hotSection(rng: Rng, st: ImageStruct): Section {
  const hot = st.sections.filter((s) =>
    /^\.(spacer\.|symtab$|strtab$|shstrtab$|rela?\.text\.|text\.(lib|app)|ind\.|bss\.(lib|app)|data\.(lib|app)|rodata\.(lib|app)|tdata|tbss)/.test(
      s.name,
    ),
  );
  return hot.length && rng.chance(0.6) ? rng.pick(hot) : rng.pick(st.sections);
}

/** A byte range worth hitting: a header table, a section's data, else anywhere. */
function hotRegion(rng: Rng, st: ImageStruct, len: number): [number, number, string] {
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

const bitflip: Op = (rng, st, s) => {
  const [lo, hi, what] = hotRegion(rng, st, s.buf.length);
  if (hi <= lo) return false;
  const n = rng.chance(0.6) ? 1 : rng.range(2, 16);
  const at: string[] = [];
  for (let i = 0; i < n; i++) {
    const o = rng.range(lo, hi - 1),
      bit = rng.int(8);
    s.buf[o] ^= 1 << bit;
    at.push(`${hex(o)}.${bit}`);
  }
  s.ops.push(`flip ${n} bit(s) in ${what}: ${at.join(' ')}`);
  return true;
};

const byteRun: Op = (rng, st, s) => {
  const [lo, hi, what] = hotRegion(rng, st, s.buf.length);
  if (hi <= lo) return false;
  const len = Math.min(hi - lo, rng.chance(0.8) ? rng.range(1, 16) : rng.range(17, 4096));
  const o = rng.range(lo, hi - len);
  const kind = rng.pick(['0x00', '0xff', '0xcc', 'random'] as const);
  if (kind === 'random') rng.bytes(len).copy(s.buf, o);
  else s.buf.fill(Number(kind), o, o + len);
  s.ops.push(`set ${len} byte(s) at ${hex(o)} (${what}) to ${kind}`);
  return true;
};

const truncate: Op = (rng, st, s) => {
  const n = s.buf.length;
  const pts: [number, string][] = [
    [rng.int(n), 'a random offset'],
    [rng.int(st.ehsize), 'inside the ELF header'],
    [n - 1, 'the last byte'],
  ];
  if (st.phnum) {
    pts.push(
      [st.phoff + rng.int(st.phnum * st.phentsize), 'inside the program header table'],
      [st.phoff, 'the start of the program header table'],
    );
  }
  if (st.shnum) {
    pts.push(
      [st.shoff + rng.int(st.shnum * st.shentsize), 'inside the section header table'],
      [st.shoff + rng.int(st.shnum) * st.shentsize, 'a section header boundary'],
      [st.shoff, 'the start of the section header table'],
    );
  }
  const sec = hotSection(rng, st);
  if (sec.type !== SHT_NOBITS && sec.size > 0n) {
    pts.push(
      [
        Number(sec.offset) + rng.int(Number(sec.size)),
        `inside ${sec.name || `section ${sec.index}`}'s data`,
      ],
      [Number(sec.offset + sec.size) - 1, `the last byte of ${sec.name || `section ${sec.index}`}`],
    );
  }
  const [at, what] = rng.pick(pts);
  if (at < 0 || at >= n) return false;
  s.buf = Buffer.from(s.buf.subarray(0, at));
  s.ops.push(`truncate to ${at} bytes (${what})`);
  return true;
};

const ehdrField: Op = (rng, st, s) => {
  const f = rng.weighted(weighted(st.is64 ? EHDR64 : EHDR32, EHDR_WEIGHT));
  const cur = get(s.buf, f.off, f.width);
  if (cur === undefined) return false;
  const ctx =
    f.name === 'e_shnum' || f.name === 'e_shstrndx'
      ? { fileSize: s.buf.length, count: st.shnum }
      : f.name === 'e_phnum'
        ? { fileSize: s.buf.length, count: st.phnum }
        : f.name === 'e_shoff'
          ? { fileSize: s.buf.length, unit: st.shentsize }
          : f.name === 'e_phoff'
            ? { fileSize: s.buf.length, unit: st.phentsize }
            : { fileSize: s.buf.length };
  const v = interesting(rng, f.width, cur, ctx);
  put(s.buf, f.off, f.width, v);
  s.ops.push(`${f.name} ${hex(cur)} -> ${hex(v)}`);
  return true;
};

const SH_TYPES = [0n, 1n, 2n, 3n, 4n, 8n, 9n, 11n, 17n, 18n, 0x6ffffff6n, 0xffffffffn];

const shdrField: Op = (rng, st, s) => {
  if (!st.shnum) return false;
  const sec = hotSection(rng, st);
  const f = rng.weighted(weighted(st.is64 ? SHDR64 : SHDR32, SHDR_WEIGHT));
  const off = st.shoff + sec.index * st.shentsize + f.off;
  const cur = get(s.buf, off, f.width);
  if (cur === undefined) return false;
  let v: bigint;
  const other = rng.pick(st.sections);
  switch (f.name) {
    case 'sh_type':
      v = rng.chance(0.8) ? rng.pick(SH_TYPES) : rng.big(32);
      break;
    case 'sh_flags':
      v = rng.chance(0.7)
        ? cur ^ rng.pick([0x1n, 0x2n, 0x4n, 0x10n, 0x20n, 0x400n])
        : rng.pick([0n, 2n ** BigInt(f.width * 8) - 1n]);
      break;
    case 'sh_link':
    case 'sh_info':
      v = rng.chance(0.5)
        ? rng.pick([
            0n,
            BigInt(st.shnum),
            BigInt(st.shnum) + 1n,
            0xffffffffn,
            0xfff1n,
            0xffffn,
            cur + 1n,
            cur - 1n,
          ])
        : BigInt(rng.int(st.shnum));
      break;
    case 'sh_addr':
      v = rng.chance(0.3)
        ? other.addr
        : interesting(rng, f.width, cur, { fileSize: s.buf.length, unit: 0x1000, size: sec.size });
      break;
    case 'sh_offset':
      v = rng.chance(0.2)
        ? other.offset
        : interesting(rng, f.width, cur, { fileSize: s.buf.length, size: sec.size });
      break;
    case 'sh_size': {
      const ent =
        st.relocs.find((r) => r.sec.index === sec.index)?.entsize ??
        (sec.type === SHT_SYMTAB ? st.symtab?.entsize : undefined);
      v = rng.chance(0.2)
        ? BigInt(s.buf.length) - sec.offset + BigInt(rng.range(1, 64))
        : interesting(rng, f.width, cur, { fileSize: s.buf.length, unit: ent ?? 1 });
      break;
    }
    case 'sh_name':
      v = rng.chance(0.4)
        ? (get(s.buf, st.shoff + other.index * st.shentsize, 4) ?? 0n)
        : interesting(rng, 4, cur, { fileSize: s.buf.length });
      break;
    default:
      v = interesting(rng, f.width, cur, { fileSize: s.buf.length });
  }
  put(s.buf, off, f.width, v);
  s.ops.push(
    `section ${sec.index} (${sec.name || 'unnamed'}) ${f.name} ${hex(cur)} -> ${hex(BigInt.asUintN(f.width * 8, v))}`,
  );
  return true;
};

const phdrField: Op = (rng, st, s) => {
  if (!st.phnum) return false;
  const i = rng.int(st.phnum);
  const base = st.phoff + i * st.phentsize;
  const defs = st.is64 ? PHDR64 : PHDR32;
  const fd = (n: string) => defs.find((d) => d.name === n)!;
  const f = rng.weighted(weighted(defs, PHDR_WEIGHT));
  const cur = get(s.buf, base + f.off, f.width);
  if (cur === undefined) return false;
  const filesz = get(s.buf, base + fd('p_filesz').off, f.width) ?? 0n,
    memsz = get(s.buf, base + fd('p_memsz').off, f.width) ?? 0n;
  let v: bigint;
  switch (f.name) {
    case 'p_type':
      v = rng.pick([0n, 1n, 2n, 4n, 6n, 7n, 0x6474e551n, rng.big(32)]);
      break;
    case 'p_filesz':
      v = rng.chance(0.4)
        ? memsz + BigInt(rng.range(1, 4096))
        : interesting(rng, f.width, cur, { fileSize: s.buf.length, unit: 0x1000 });
      break;
    case 'p_memsz':
      v = rng.chance(0.3)
        ? filesz > 0n
          ? filesz - 1n
          : 0n
        : interesting(rng, f.width, cur, { fileSize: s.buf.length, unit: 0x1000 });
      break;
    case 'p_vaddr':
      v = rng.chance(0.3)
        ? P64 - memsz + BigInt(rng.int(4096))
        : interesting(rng, f.width, cur, { fileSize: s.buf.length, unit: 0x1000, size: memsz });
      break;
    default:
      v = interesting(rng, f.width, cur, { fileSize: s.buf.length, unit: 0x1000 });
  }
  put(s.buf, base + f.off, f.width, v);
  s.ops.push(`program header ${i} ${f.name} ${hex(cur)} -> ${hex(BigInt.asUintN(f.width * 8, v))}`);
  return true;
};

const R_TYPES = [
  0n,
  1n,
  2n,
  4n,
  9n,
  10n,
  11n,
  12n,
  13n,
  14n,
  15n,
  19n,
  22n,
  23n,
  24n,
  32n,
  33n,
  41n,
  42n,
  43n,
  44n,
  0xffn,
  0xffffffffn,
];

const reloc: Op = (rng, st, s) => {
  const pool = st.relocs.filter((r) => r.count > 0);
  if (!pool.length) return false;
  const code = pool.filter((r) => isCode(r.target));
  const r = code.length && rng.chance(0.8) ? rng.pick(code) : rng.pick(pool);
  const i = rng.int(r.count),
    base = Number(r.sec.offset) + i * r.entsize;
  const nsyms = BigInt(st.symtab?.count ?? 0);
  const what = `${r.sec.name} entry ${i}`;
  const field = rng.weighted([
    ['sym', 4],
    ['type', 3],
    ['offset', 4],
    ['addend', r.rela ? 2 : 0],
  ] as const);
  if (st.is64) {
    const info = get(s.buf, base + 8, 8);
    const offset = get(s.buf, base, 8);
    if (info === undefined || offset === undefined) return false;
    const sym = info >> 32n,
      type = info & 0xffffffffn;
    if (field === 'sym') {
      const v = rng.pick([
        nsyms,
        nsyms + 1n,
        0xffffffffn,
        0x80000000n,
        0n,
        BigInt(rng.int(Number(nsyms) || 1)),
        sym + 1n,
      ]);
      put(s.buf, base + 8, 8, (v << 32n) | type);
      s.ops.push(`${what} symbol ${sym} -> ${v} (${nsyms} symbols)`);
    } else if (field === 'type') {
      const v = rng.pick(R_TYPES);
      put(s.buf, base + 8, 8, (sym << 32n) | v);
      s.ops.push(`${what} type ${type} -> ${v}`);
    } else if (field === 'offset') {
      const t = r.target;
      const v = rng.pick([
        t.addr - 1n,
        t.addr + t.size,
        t.addr + t.size - 1n,
        t.addr + t.size - 2n,
        t.addr + t.size - 3n,
        0n,
        P63,
        P64 - 1n,
        offset + 1n,
        offset - 1n,
        offset + 2n,
        offset - 2n,
        t.addr + BigInt(rng.int(Number(t.size) || 1)),
      ]);
      put(s.buf, base, 8, v);
      s.ops.push(
        `${what} offset ${hex(offset)} -> ${hex(BigInt.asUintN(64, v))} (${t.name} is ${hex(t.addr)}+${hex(t.size)})`,
      );
    } else {
      const a = get(s.buf, base + 16, 8)!;
      const v = rng.pick([
        0n,
        P63,
        P63 - 1n,
        a + 1n,
        a - 1n,
        a + 2n ** 32n,
        a - 2n ** 31n,
        rng.big(64),
      ]);
      put(s.buf, base + 16, 8, v);
      s.ops.push(`${what} addend ${hex(a)} -> ${hex(BigInt.asUintN(64, v))}`);
    }
  } else {
    const offset = get(s.buf, base, 4),
      info = get(s.buf, base + 4, 4);
    if (info === undefined || offset === undefined) return false;
    const v =
      field === 'offset'
        ? interesting(rng, 4, offset, { fileSize: s.buf.length })
        : interesting(rng, 4, info, { fileSize: s.buf.length, count: Number(nsyms) });
    put(s.buf, base + (field === 'offset' ? 0 : 4), 4, v);
    s.ops.push(`${what} r_${field === 'offset' ? 'offset' : 'info'} -> ${hex(v)}`);
  }
  return true;
};

const symbol: Op = (rng, st, s) => {
  const t = st.symtab;
  if (!t || t.count < 1) return false;
  // Prefer function symbols in µlib code: they anchor the rewriter's decoding.
  const codeIdx = new Set(st.code.map((c) => c.index));
  const ent = t.entsize,
    base0 = Number(t.sec.offset);
  const pickIdx = () => {
    for (let k = 0; k < 20; k++) {
      const i = rng.int(t.count);
      const shndx = st.is64
        ? s.buf.readUInt16LE(base0 + i * ent + 6)
        : s.buf.readUInt16LE(base0 + i * ent + 14);
      if (codeIdx.has(shndx)) return i;
    }
    return rng.int(t.count);
  };
  const i = pickIdx(),
    base = base0 + i * ent;
  if (base + ent > s.buf.length) return false;
  const F = st.is64
    ? { name: [0, 4], info: [4, 1], shndx: [6, 2], value: [8, 8], size: [16, 8] }
    : { name: [0, 4], value: [4, 4], size: [8, 4], info: [12, 1], shndx: [14, 2] };
  const field = rng.weighted([
    ['name', 2],
    ['info', 2],
    ['shndx', 3],
    ['value', 4],
    ['size', 1],
  ] as const);
  const [off, width] = F[field];
  const cur = get(s.buf, base + off, width)!;
  let v: bigint;
  if (field === 'shndx')
    v = rng.pick([
      0n,
      0xfff1n,
      0xfff2n,
      0xffffn,
      BigInt(st.shnum),
      BigInt(st.shnum + 1),
      BigInt(rng.int(st.shnum)),
    ]);
  else if (field === 'info')
    v = rng.chance(0.5) ? (cur & 0xf0n) | rng.pick([0n, 1n, 2n, 3n, 4n, 6n, 0xfn]) : rng.big(8);
  else if (field === 'name')
    v = rng.pick([
      t.strtab ? t.strtab.size : 0n,
      t.strtab ? t.strtab.size + 1n : 1n,
      0xffffffffn,
      cur + 1n,
      0n,
    ]);
  else v = interesting(rng, width, cur, { fileSize: s.buf.length });
  put(s.buf, base + off, width, v);
  s.ops.push(`symbol ${i} st_${field} ${hex(cur)} -> ${hex(BigInt.asUintN(width * 8, v))}`);
  return true;
};

const OPCODES = [
  0x00, 0x0f, 0x48, 0x4c, 0x66, 0x67, 0x8b, 0x8d, 0x90, 0xc3, 0xcc, 0xe8, 0xe9, 0xeb, 0xf2, 0xf3,
  0xff, 0x15, 0x25, 0x05,
];

const codeBytes: Op = (rng, st, s) => {
  const r = rng.int(10);
  let off: number, len: number, what: string;
  if (r < 7 && st.sites.length) {
    const site = rng.pick(st.sites);
    if (site.entry !== null && rng.chance(0.35)) {
      off = site.entry + rng.int(8);
      len = rng.range(1, 4);
      what = `the table entry of ${site.what}`;
    } else {
      // The opcode, the last (displacement/immediate) bytes, or the bytes just before a field.
      const k = rng.int(3);
      off =
        k === 0
          ? site.off
          : k === 1
            ? site.off + Math.max(0, site.len - 4) + rng.int(4)
            : site.off - rng.range(1, 3);
      len = rng.range(1, 3);
      what = site.what;
    }
  } else if (r < 9 && st.code.length) {
    const c = rng.pick(st.code);
    off = Number(c.offset) + rng.int(Number(c.size));
    len = rng.range(1, 8);
    what = c.name;
  } else if (st.tables.length) {
    const t = rng.pick(st.tables);
    off = Number(t.offset) + rng.int(Number(t.size));
    len = rng.range(1, 8);
    what = t.name;
  } else return false;
  if (off < 0 || off >= s.buf.length) return false;
  len = Math.min(len, s.buf.length - off);
  const bytes = Buffer.from(
    Array.from({ length: len }, () => (rng.chance(0.6) ? rng.pick(OPCODES) : rng.int(256))),
  );
  bytes.copy(s.buf, off);
  s.ops.push(`code bytes at ${hex(off)} (${what}) -> ${bytes.toString('hex')}`);
  return true;
};

const strtab: Op = (rng, st, s) => {
  const tabs = st.sections.filter(
    (x) => (x.name === '.shstrtab' || x.name === '.strtab') && x.size > 0n,
  );
  if (!tabs.length) return false;
  const t = rng.pick(tabs);
  const lo = Number(t.offset),
    hi = Number(t.offset + t.size);
  if (rng.chance(0.5) && t.name === '.shstrtab') {
    // Rename a section: one character of its name.
    const sec = hotSection(rng, st);
    const nameOff = get(s.buf, st.shoff + sec.index * st.shentsize, 4);
    if (nameOff === undefined || !sec.name) return false;
    const o = lo + Number(nameOff) + rng.int(sec.name.length);
    if (o >= hi || o >= s.buf.length) return false;
    const c = rng.pick([0x00, 0x2e, 0x41, 0x78, 0xff]);
    s.buf[o] = c;
    s.ops.push(
      `rename section ${sec.index} (${sec.name}): byte ${o - lo - Number(nameOff)} of its name -> ${hex(c)}`,
    );
  } else {
    // Remove the terminator of the last name(s).
    const n = rng.range(1, 3);
    for (let o = hi - 1, k = 0; o > lo && k < n && o < s.buf.length; o--)
      if (s.buf[o] === 0) {
        s.buf[o] = 0x41;
        k++;
      }
    s.ops.push(`${t.name}: last ${n} NUL terminator(s) -> 'A'`);
  }
  return true;
};

// ---------------------------------------------------------------------------------------------
// JSON records (`.spacer.plan`, `.spacer.rewrite`, the link plan file)

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface Node {
  path: (string | number)[];
  value: Json;
  parent: Json[] | { [k: string]: Json } | null;
  key: string | number | null;
}

function nodes(root: Json): Node[] {
  const out: Node[] = [];
  const walk = (v: Json, path: (string | number)[], parent: Node['parent'], key: Node['key']) => {
    out.push({ path, value: v, parent, key });
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i], v, i));
    else if (v && typeof v === 'object')
      for (const k of Object.keys(v)) walk(v[k], [...path, k], v, k);
  };
  walk(root, [], null, null);
  return out;
}

const REPLACEMENTS: Json[] = [
  null,
  true,
  0,
  -1,
  1.5,
  2 ** 53 + 2,
  1e300,
  '',
  'x',
  '0x',
  '0x-1',
  '-0x10',
  '0xffffffffffffffffffffffff',
  '1e400',
  'zz',
  '\n',
  '0x1\n',
  [],
  {},
  [[]],
  { a: 1 },
  'lib\u0000x',
  '../../etc',
];

/** Changes one node of a parsed JSON value (in place where possible); returns the new root. */
export function mutateJson(rng: Rng, root: Json, ops: string[], label: string): Json {
  const all = nodes(root);
  const notSites = all.filter((n) => !n.path.includes('sites'));
  const n = rng.chance(0.5) && notSites.length ? rng.pick(notSites) : rng.pick(all);
  const where = `${label}${n.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('')}`;
  const v = n.value;
  let nv: Json;
  let act: string;
  const r = rng.int(10);
  if (r === 0 && n.parent) {
    if (Array.isArray(n.parent)) n.parent.splice(n.key as number, 1);
    else delete n.parent[n.key as string];
    ops.push(`${where}: deleted`);
    return root;
  }
  if (typeof v === 'string' && /^0x[0-9a-f]+$/i.test(v) && r < 6) {
    const x = BigInt(v);
    const y = rng.pick([
      x + 1n,
      x - 1n,
      x + 0x1000n,
      x ^ (1n << BigInt(rng.int(64))),
      P53 + 1n,
      P63,
      P64 - 1n,
      P64,
      0n,
      rng.big(64),
    ]);
    nv = y < 0n ? `-0x${(-y).toString(16)}` : `0x${y.toString(16)}`;
    act = `${v} -> ${nv}`;
  } else if (typeof v === 'string' && /^[0-9a-f]+$/i.test(v) && v.length % 2 === 0 && r < 6) {
    const k = rng.int(4);
    nv =
      k === 0
        ? v.slice(0, -1)
        : k === 1
          ? v.slice(0, -2)
          : k === 2
            ? `${v}zz`
            : rng.bytes(v.length / 2).toString('hex');
    act = `${v.slice(0, 24)} -> ${nv.slice(0, 24)}`;
  } else if (typeof v === 'number' && r < 6) {
    nv = rng.pick([v + 1, v - 1, -v, v * 4096, 2 ** 32, 2 ** 53 + 2, 0, 0.5, -1e300]);
    act = `${v} -> ${nv}`;
  } else if (Array.isArray(v) && v.length && r < 6) {
    const k = rng.int(3);
    nv = k === 0 ? [...v, v[0]] : k === 1 ? [...v].reverse() : [];
    act = k === 0 ? 'first element duplicated' : k === 1 ? 'reversed' : 'emptied';
  } else if (typeof v === 'string' && n.parent && r < 7) {
    // Another node's value of the same kind (a real section name, a real kind...).
    const same = all.filter((m) => typeof m.value === 'string' && m.value !== v);
    nv = same.length ? rng.pick(same).value : 'x';
    act = `${JSON.stringify(v).slice(0, 40)} -> ${JSON.stringify(nv).slice(0, 40)}`;
  } else {
    nv = rng.pick(REPLACEMENTS);
    act = `-> ${JSON.stringify(nv)}`;
  }
  ops.push(`${where}: ${act}`);
  if (!n.parent) return nv;
  if (Array.isArray(n.parent)) n.parent[n.key as number] = nv;
  else n.parent[n.key as string] = nv;
  return root;
}

const JSON_BYTES = [
  0x0a, 0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x30, 0x5c, 0x00, 0xff, 0xc3, 0x20, 0x2d, 0x65,
];

/** Corrupts JSON text byte by byte. */
export function corruptText(rng: Rng, text: Buffer, ops: string[], label: string): Buffer {
  const b = Buffer.from(text);
  if (!b.length) return b;
  const n = rng.range(1, 4);
  const at: string[] = [];
  for (let i = 0; i < n; i++) {
    const o = rng.int(b.length),
      c = rng.chance(0.7) ? rng.pick(JSON_BYTES) : rng.int(256);
    b[o] = c;
    at.push(`${o}=${hex(c)}`);
  }
  ops.push(`${label}: bytes ${at.join(' ')}`);
  return b;
}

/**
 * Puts new contents for a section: in place when they fit (padded with spaces, or the size
 * shrunk), else at the end of the file with the header pointing there.
 */
function placeSection(
  rng: Rng,
  st: ImageStruct,
  s: State,
  sec: Section,
  data: Buffer,
  what: string,
): void {
  const hdr = st.shoff + sec.index * st.shentsize;
  const F = st.is64 ? { off: [24, 8], size: [32, 8] } : { off: [16, 4], size: [20, 4] };
  const lo = Number(sec.offset),
    size = Number(sec.size);
  if (data.length <= size && rng.chance(0.7)) {
    data.copy(s.buf, lo);
    if (rng.chance(0.5)) s.buf.fill(0x20, lo + data.length, lo + size);
    else put(s.buf, hdr + F.size[0], F.size[1], BigInt(data.length));
    s.ops.push(`${sec.name}: ${what}, written in place (${data.length} bytes)`);
  } else {
    const at = (s.buf.length + 7) & ~7;
    s.buf = Buffer.concat([s.buf, Buffer.alloc(at - s.buf.length), data]);
    put(s.buf, hdr + F.off[0], F.off[1], BigInt(at));
    put(s.buf, hdr + F.size[0], F.size[1], BigInt(data.length));
    s.ops.push(
      `${sec.name}: ${what}, moved to the end of the file (${data.length} bytes at ${hex(at)})`,
    );
  }
}

const jsonSection: Op = (rng, st, s) => {
  if (!st.json.length) return false;
  const j = rng.pick(st.json);
  const sec = j.sec;
  const hdr = st.shoff + sec.index * st.shentsize;
  const F = st.is64 ? { size: [32, 8] } : { size: [20, 4] };
  const lo = Number(sec.offset),
    size = Number(sec.size);
  if (lo + size > s.buf.length) return false;
  // A deflated section (.spacer.plan) is mostly changed in its JSON and deflated again (so the
  // change reaches the JSON reader), sometimes stored plain, sometimes hit in its zlib bytes.
  const encode = (text: Buffer) =>
    j.deflated && rng.chance(0.85)
      ? ([deflateSync(text), 'deflated'] as const)
      : ([text, 'plain'] as const);
  const r = rng.int(10);
  if (r < 4) {
    if (j.deflated && rng.chance(0.6)) {
      const [data, how] = encode(
        corruptText(rng, Buffer.from(j.text), s.ops, `${sec.name} (inflated)`),
      );
      placeSection(rng, st, s, sec, data, how);
    } else {
      corruptText(rng, s.buf.subarray(lo, lo + size), s.ops, sec.name).copy(s.buf, lo);
    }
    return true;
  }
  if (r === 4) {
    const v = rng.chance(0.6) ? BigInt(rng.int(size)) : BigInt(size + rng.range(1, 256));
    put(s.buf, hdr + F.size[0], F.size[1], v);
    s.ops.push(`${sec.name} sh_size ${size} -> ${v}`);
    return true;
  }
  let root: Json;
  try {
    root = JSON.parse(j.text.replace(/\0+$/, ''));
  } catch {
    return false;
  }
  root = mutateJson(rng, root, s.ops, sec.name);
  const [data, how] = encode(Buffer.from(JSON.stringify(root) ?? '', 'utf8'));
  placeSection(rng, st, s, sec, data, how);
  return true;
};

// ---------------------------------------------------------------------------------------------

export const OPS: readonly (readonly [string, Op, number])[] = [
  ['bitflip', bitflip, 8],
  ['byte-run', byteRun, 8],
  ['truncate', truncate, 9],
  ['ehdr', ehdrField, 10],
  ['shdr', shdrField, 14],
  ['phdr', phdrField, 7],
  ['json', jsonSection, 12],
  ['reloc', reloc, 12],
  ['symbol', symbol, 6],
  ['code', codeBytes, 12],
  ['strtab', strtab, 3],
];

export interface Mutation {
  data: Buffer;
  /** The mutation classes applied (names of OPS, 'plan-file'), and one line per change. */
  kinds: string[];
  ops: string[];
  /** Mutated link plan file, when the plan is mutated too. */
  plan?: Buffer;
}

/**
 * One to three mutations of the image (truncation, if drawn, last), sometimes also of the link plan
 * file.
 */
export function mutate(rng: Rng, st: ImageStruct, planText: string | null): Mutation {
  const s: State = { buf: Buffer.from(st.data), ops: [] };
  const k = rng.weighted([
    [1, 70],
    [2, 20],
    [3, 10],
  ] as const);
  const chosen: (readonly [string, Op, number])[] = [];
  for (let i = 0; i < k; i++) chosen.push(rng.weighted(OPS.map((o) => [o, o[2]] as const)));
  chosen.sort((a, b) => (a[0] === 'truncate' ? 1 : 0) - (b[0] === 'truncate' ? 1 : 0));
  const kinds: string[] = [];
  for (const [name, op] of chosen) {
    if (op(rng, st, s)) kinds.push(name);
    else {
      bitflip(rng, st, s); // not applicable to this image
      kinds.push('bitflip');
    }
  }
  let plan: Buffer | undefined;
  if (planText !== null && rng.chance(0.05)) {
    const ops: string[] = [];
    if (rng.chance(0.3)) plan = corruptText(rng, Buffer.from(planText), ops, 'plan file');
    else
      plan = Buffer.from(
        JSON.stringify(mutateJson(rng, JSON.parse(planText), ops, 'plan file'), null, 2),
      );
    s.ops.push(...ops);
    kinds.push('plan-file');
  }
  return { data: s.buf, kinds, ops: s.ops, plan };
}
