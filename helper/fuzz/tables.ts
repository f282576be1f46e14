// Mutations of what the rewriter reads: relocations, symbols, code bytes at rewrite sites and
// indirection-table entries, and the string tables that name sections and symbols.
import { hex } from '../util/units.js';
import { get, hotSection, interesting, type Op, P63, P64, put } from './fields.js';
import { isCode } from './image.js';

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

export const reloc: Op = (rng, st, s) => {
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

export const symbol: Op = (rng, st, s) => {
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

export const codeBytes: Op = (rng, st, s) => {
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

export const strtab: Op = (rng, st, s) => {
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
