// Mutations of the JSON records (`.spacer.plan`, `.spacer.rewrite`, the link plan file): one node
// changed, or the text corrupted byte by byte, then put back into the section.
import { deflateSync } from 'node:zlib';
import type { Section } from '../elf.js';
import { hex } from '../util/units.js';
import { type Op, P53, P63, P64, put, type State } from './fields.js';
import type { ImageStruct } from './image.js';
import type { Rng } from './rng.js';

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

export const jsonSection: Op = (rng, st, s) => {
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
