// Mutations of the file as bytes and of its ELF, section and program headers.
import { SHT_NOBITS, SHT_SYMTAB } from '../elf.js';
import { hex } from '../util/units.js';
import {
  EHDR_FIELDS,
  get,
  hotRegion,
  hotSection,
  interesting,
  type Op,
  P64,
  PHDR_FIELDS,
  put,
  SHDR_FIELDS,
} from './fields.js';

export const bitflip: Op = (rng, st, s) => {
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

export const byteRun: Op = (rng, st, s) => {
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

export const truncate: Op = (rng, st, s) => {
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

export const ehdrField: Op = (rng, st, s) => {
  const f = rng.weighted(EHDR_FIELDS[st.is64 ? 64 : 32]);
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

export const shdrField: Op = (rng, st, s) => {
  if (!st.shnum) return false;
  const sec = hotSection(rng, st);
  const f = rng.weighted(SHDR_FIELDS[st.is64 ? 64 : 32]);
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

export const phdrField: Op = (rng, st, s) => {
  if (!st.phnum) return false;
  const i = rng.int(st.phnum);
  const base = st.phoff + i * st.phentsize;
  const defs = PHDR_FIELDS[st.is64 ? 64 : 32];
  const fd = (n: string) => defs.find(([d]) => d.name === n)![0];
  const f = rng.weighted(defs);
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
