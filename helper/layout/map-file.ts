// The workspace map's JSON: the single-file form (schema 1: one line per variant and per image,
// keys sorted), which older helpers wrote and `encodeMap` still gives whole, and the field readers
// and decoders that the split form (schemas 2 and 3, map-store.ts) shares. Each problem is one
// error line naming the file.
// Reading JSON: each field is validated where it is read, so the parsed value is `any` until then.
/* eslint-disable @typescript-eslint/no-explicit-any */
import { SpacerError } from '../errors.js';
import { PAGE, hex } from '../util/units.js';
import {
  AREAS,
  MAP_SCHEMA,
  type Area,
  type Extent,
  type ImageEntry,
  type Region,
  type SpacerMap,
  type UlibEntry,
  type VariantEntry,
} from './map-types.js';

// ---- serialisation: addresses are written as hex strings so people can read the file ----

const j = JSON.stringify;
const sortedKeys = (o: object) => Object.keys(o).sort();

/** Per-area values as one JSON object, in area order. */
export function perArea<T>(o: Partial<Record<Area, T>>, f: (v: T) => unknown): string {
  const parts: string[] = [];
  for (const a of AREAS) if (o[a] !== undefined) parts.push(`${j(a)}: ${j(f(o[a]!))}`);
  return `{${parts.join(', ')}}`;
}

/** An extent as the map writes it: address and size in hex. */
export const extentJson = (e: Extent) => ({ addr: hex(e.addr), size: hex(e.size) });

/** The header's first lines, both forms: schema, page size, text base, boot head, regions, own. */
export function headLines(m: SpacerMap, schema: number): string[] {
  const out = [
    '{',
    `  "schema": ${schema},`,
    `  "page_size": ${j(m.page_size)},`,
    `  "text_base": ${j(hex(m.text_base))},`,
    `  "head": ${j(hex(m.head))},`,
    '  "regions": {',
  ];
  AREAS.forEach((k, i) => {
    const r = m.regions[k];
    out.push(
      `    ${j(k)}: {"base": ${j(hex(r.base))}, "end": ${j(hex(r.end))}, "next": ${j(hex(r.next))}}${i < AREAS.length - 1 ? ',' : ''}`,
    );
  });
  out.push('  },');
  if (m.own && Object.keys(m.own).length) out.push(`  "own": ${perArea(m.own, (x) => x)},`);
  return out;
}

/** A variant as one JSON object; `users`: its images (single-file form) or their count. */
export function variantJson(v: VariantEntry, users: 'images' | 'count'): string {
  const fields = [
    `"sizes": ${perArea(v.sizes, (x) => x)}`,
    `"align": ${perArea(v.align, (x) => x)}`,
    users === 'images'
      ? `"images": ${j([...v.images].sort())}`
      : `"users": ${v.images.length + (v.others ?? 0)}`,
  ];
  if (v.modes?.length) fields.push(`"modes": ${j([...v.modes].sort())}`);
  if (v.abs_ptr) fields.push(`"abs_ptr": ${v.abs_ptr}`);
  if (v.code_sig) fields.push(`"code_sig": ${j(v.code_sig)}`);
  if (v.slot) fields.push(`"slot": ${perArea(v.slot, extentJson)}`);
  return `{${fields.join(', ')}}`;
}

/** An image as one JSON object: its variants, where it was built. */
export function imageJson(im: ImageEntry): string {
  const u = im.ulibs,
    o = im.origin;
  const origin = o
    ? `, "origin": {"app": ${j(o.app)}, "build": ${j(o.build)}${o.relink !== undefined ? `, "relink": ${j(o.relink)}` : ''}}`
    : '';
  return `{"ulibs": {${sortedKeys(u)
    .map((k) => `${j(k)}: ${j(u[k])}`)
    .join(', ')}}${origin}}`;
}

/** The whole map in the single-file form (schema 1). */
export function encodeMap(m: SpacerMap): string {
  if (m.partial) throw new Error('encodeMap: a link view of the map is not the whole map');
  // Hand-written so a map of a thousand images stays quick to write and easy to read: the header
  // indented, then one line per variant and per image, keys sorted.
  const out = headLines(m, 1);
  out.push('  "ulibs": {');
  const names = sortedKeys(m.ulibs);
  names.forEach((name, i) => {
    const u = m.ulibs[name];
    out.push(`    ${j(name)}: {`);
    if (u.slot) out.push(`      "slot": ${perArea(u.slot, extentJson)},`);
    out.push('      "variants": {');
    const hs = sortedKeys(u.variants);
    hs.forEach((h, k) =>
      out.push(
        `        ${j(h)}: ${variantJson(u.variants[h], 'images')}${k < hs.length - 1 ? ',' : ''}`,
      ),
    );
    out.push('      }', `    }${i < names.length - 1 ? ',' : ''}`);
  });
  out.push('  },', '  "images": {');
  const ims = sortedKeys(m.images);
  ims.forEach((n, i) =>
    out.push(`    ${j(n)}: ${imageJson(m.images[n])}${i < ims.length - 1 ? ',' : ''}`),
  );
  out.push('  }', '}');
  return out.join('\n') + '\n';
}

/** Field readers that fail with one error line naming the map file and the field. */
export interface Fields {
  bad: (what: string) => never;
  /** The field is named `at + field` (joined only for the error: a map has many fields). */
  addr: (v: unknown, at: string, field?: string) => number;
  count: (v: unknown, at: string, field?: string) => number;
}

/** Field-name suffixes per area, built once. */
const suffixes = (f: (a: Area) => string) =>
  Object.fromEntries(AREAS.map((a) => [a, f(a)])) as Record<Area, string>;
const SIZE_FIELD = suffixes((a) => `.sizes.${a}`);
const ALIGN_FIELD = suffixes((a) => `.align.${a}`);
const ADDR_FIELD = suffixes((a) => `.${a}.addr`);
const LEN_FIELD = suffixes((a) => `.${a}.size`);

/** The readers for the map at `path`: hex addresses, byte counts, and the error for the rest. */
export function fields(path: string): Fields {
  const bad = (what: string): never => {
    throw new SpacerError(
      `${path}: corrupt map (${what}); fix the entry by hand, restore a backup, or delete the map and relink every app`,
    );
  };
  const addr = (v: unknown, at: string, field = ''): number => {
    if (typeof v !== 'string' || !/^0x[0-9a-f]+$/i.test(v))
      bad(`${at}${field} is not a hex address`);
    const n = parseInt(v as string, 16);
    if (!Number.isSafeInteger(n)) bad(`${at}${field} out of range`);
    return n;
  };
  const count = (v: unknown, at: string, field = ''): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
      bad(`${at}${field} is not a byte count`);
    return v as number;
  };
  return { bad, addr, count };
}

/** The parsed JSON with a schema this lib-spacer reads (a newer one is left for a newer one). */
export function parseHeader(path: string, text: string, f: Fields): any {
  let raw: any;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new SpacerError(
      `${path}: corrupt map (${(e as Error).message}); restore it from a backup, or delete it and relink every app to start a new map`,
    );
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) f.bad('not a JSON object');
  if (typeof raw.schema !== 'number') f.bad('no schema version');
  if (raw.schema > MAP_SCHEMA) {
    throw new SpacerError(
      `${path}: map schema ${raw.schema} is newer than this lib-spacer understands (${MAP_SCHEMA}); update lib-spacer, the map was left as it is`,
    );
  }
  if (raw.schema < 1) f.bad(`schema ${raw.schema}`);
  return raw;
}

/** Every region must be there, each with hex base, end and next. */
export function decodeRegions(raw: any, f: Fields): Record<Area, Region> {
  const regions = {} as Record<Area, Region>;
  for (const k of AREAS) {
    const r = raw.regions?.[k];
    if (!r) f.bad(`missing region ${k}`);
    regions[k] = {
      base: f.addr(r.base, `regions.${k}.base`),
      end: f.addr(r.end, `regions.${k}.end`),
      next: f.addr(r.next, `regions.${k}.next`),
    };
  }
  return regions;
}

/** A slot's extents (of a µlib's name slot or a variant's), named `<at>.<area>.addr|size`. */
export function decodeSlot(slot: any, at: string, f: Fields): Partial<Record<Area, Extent>> {
  const out: Partial<Record<Area, Extent>> = {};
  for (const a of AREAS)
    if (slot[a])
      out[a] = {
        addr: f.addr(slot[a].addr, at, ADDR_FIELD[a]),
        size: f.addr(slot[a].size, at, LEN_FIELD[a]),
      };
  return out;
}

/**
 * One variant: sizes and images required (the split form's variant files give a count of `users`
 * instead: `images` is then left empty for the caller); unknown modes are dropped.
 */
export function decodeVariant(v: any, at: string, f: Fields, split = false): VariantEntry {
  if (typeof v?.sizes !== 'object' || v.sizes === null) f.bad(at);
  if (split) f.count(v.users, at, '.users');
  else if (!Array.isArray(v.images)) f.bad(at);
  const e: VariantEntry = { sizes: {}, align: {}, images: split ? [] : v.images.map(String) };
  if (Array.isArray(v.modes))
    e.modes = v.modes.filter((x: unknown) => x === 'external' || x === 'aslr');
  if (v.abs_ptr !== undefined) e.abs_ptr = f.count(v.abs_ptr, at, '.abs_ptr');
  if (v.code_sig !== undefined) {
    if (typeof v.code_sig !== 'string' || !/^[0-9a-f]{16}$/.test(v.code_sig))
      f.bad(`${at}.code_sig`);
    e.code_sig = v.code_sig;
  }
  for (const a of AREAS) {
    if (v.sizes[a] !== undefined) e.sizes[a] = f.count(v.sizes[a], at, SIZE_FIELD[a]);
    if (v.align?.[a] !== undefined) e.align[a] = f.count(v.align[a], at, ALIGN_FIELD[a]);
  }
  if (v.slot) e.slot = decodeSlot(v.slot, at + '.slot', f);
  return e;
}

/** The µlibs: their variants, and their name slots. */
function decodeUlibs(raw: any, f: Fields): Record<string, UlibEntry> {
  const ulibs: Record<string, UlibEntry> = {};
  for (const [name, u] of Object.entries<any>(raw.ulibs ?? {})) {
    if (typeof u?.variants !== 'object' || u.variants === null) f.bad(`ulibs.${name}`);
    const variants: Record<string, VariantEntry> = {};
    for (const [h, v] of Object.entries<any>(u.variants))
      variants[h] = decodeVariant(v, `ulibs.${name}.variants.${h}`, f);
    ulibs[name] = { variants };
    if (u.slot) ulibs[name].slot = decodeSlot(u.slot, `ulibs.${name}.slot`, f);
  }
  return ulibs;
}

/** One image: the variant each µlib of its uses, and where it was linked. */
export function decodeImage(im: any, at: string, f: Fields): ImageEntry {
  if (typeof im?.ulibs !== 'object' || im.ulibs === null || Array.isArray(im.ulibs)) f.bad(at);
  for (const [u, h] of Object.entries(im.ulibs))
    if (typeof h !== 'string') f.bad(`${at}.ulibs.${u}`);
  const e: ImageEntry = { ulibs: im.ulibs };
  if (im.origin !== undefined) {
    const o = im.origin;
    if (
      typeof o?.app !== 'string' ||
      typeof o.build !== 'string' ||
      (o.relink !== undefined && typeof o.relink !== 'string')
    )
      f.bad(`${at}.origin`);
    e.origin = {
      app: o.app,
      build: o.build,
      ...(o.relink !== undefined ? { relink: o.relink } : {}),
    };
  }
  return e;
}

/** The images: the variant each µlib of theirs uses, and where they were linked. */
function decodeImages(raw: any, f: Fields): Record<string, ImageEntry> {
  const images: Record<string, ImageEntry> = {};
  for (const [name, im] of Object.entries<any>(raw.images ?? {}))
    images[name] = decodeImage(im, `images.${name}`, f);
  return images;
}

/** The map's own reserves (`own`), when it has them. */
export function decodeOwn(raw: any, f: Fields): Partial<Record<Area, number>> | undefined {
  if (raw.own === undefined) return undefined;
  if (typeof raw.own !== 'object' || raw.own === null) f.bad('own');
  const own: Partial<Record<Area, number>> = {};
  for (const a of AREAS) if (raw.own[a] !== undefined) own[a] = f.count(raw.own[a], `own.${a}`);
  return own;
}

/** The single-file form (schema 1), parsed as `raw`. */
export function decodeWhole(raw: any, f: Fields): SpacerMap {
  const regions = decodeRegions(raw, f);
  const ulibs = decodeUlibs(raw, f);
  const images = decodeImages(raw, f);
  const own = decodeOwn(raw, f);
  return {
    schema: raw.schema,
    page_size: raw.page_size ?? PAGE,
    text_base: f.addr(raw.text_base, 'text_base'),
    head: f.addr(raw.head, 'head'),
    regions,
    ...(own ? { own } : {}),
    ulibs,
    images,
  };
}
