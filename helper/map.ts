// The workspace map: one JSON file shared by every app built with this checkout of the library.
// It is the address allocator: each µlib gets a slot (address and size per section kind) that
// every image respects, so a µlib identical in two images lands on identical pages.
// Every update runs under an exclusive lock file and lands with an atomic rename.
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { SpacerError } from './errors.js';

export const MAP_SCHEMA = 1;
export const PAGE = 0x1000;
/** Section kinds of the platform script that hold µlib code and data. */
export const KINDS = ['text', 'rodata', 'data', 'bss'] as const;
export type Kind = (typeof KINDS)[number];
/** Everything the map places, in address order: the indirection tables of shared µlibs (`ind`,
 *  right after the platform's boot head), then the section kinds. */
export const AREAS = ['ind', 'text', 'rodata', 'data', 'bss'] as const;
export type Area = (typeof AREAS)[number];
/** What an image's plan places per µlib: the map's areas, and in ASLR mode its pointer area
 *  (`ptr`, at the map's `ind` extent; its table, `ind`, then follows its code). */
export const SLOT_KINDS = [...AREAS, 'ptr'] as const;
export type SlotKind = (typeof SLOT_KINDS)[number];

export interface Extent {
  addr: number;
  size: number;
}

export interface Region {
  /** First address of the region (page-aligned). */
  base: number;
  /** One past the last usable address. */
  end: number;
  /** Next free address (bump allocation; slots never move). */
  next: number;
}

/**
 * One variant of a µlib: the same library built in one configuration (its content hash).
 * It gets a stable slot once two images use it; until then it lives in the image's own area.
 */
export interface VariantEntry {
  /** Bytes per area, measured from the object (ind: the indirection table it needs). */
  sizes: Partial<Record<Area, number>>;
  /** Start alignment per area (largest input section alignment). */
  align: Partial<Record<Area, number>>;
  /** Images whose last link used this variant. */
  images: string[];
  /** Rewrite modes whose table size was measured (`sizes.ind` is the largest). */
  modes?: ('external' | 'aslr')[];
  /** ASLR mode, a µlib with a name slot: pointer-area bytes when its own data's absolute addresses
   *  go through its table too (the name slot is sized for it; see allocateAslr). */
  abs_ptr?: number;
  /** Stable placement, the same in every image; never moves once given. */
  slot?: Partial<Record<Area, Extent>>;
}

export interface UlibEntry {
  variants: Record<string, VariantEntry>;
  /**
   * The name's slot: where every variant of this µlib that a single image uses goes, once two
   * images use the µlib in different variants (ukboot and uklibid are built per app). Its content
   * is per image, but its address is the same in every image, so references to it from shared
   * code (and the tables holding them) are the same too. Each extent is a capacity with headroom.
   */
  slot?: Partial<Record<Area, Extent>>;
}

export interface ImageEntry {
  /** µlib name → variant used by the image's last link. */
  ulibs: Record<string, string>;
  /** Where its last link ran (from the Unikraft glue): the app and build folders, and the command
   *  that relinks it. Two builds with different folders may not share one image name. */
  origin?: ImageOrigin;
}

export interface ImageOrigin {
  app: string;
  build: string;
  relink?: string;
}

export interface SpacerMap {
  schema: number;
  page_size: number;
  /** Address of the platform's first text byte (the default script's `. = ...` before .text). */
  text_base: number;
  /** Bytes reserved at text_base for the platform's boot head (.data.boot, .text.boot, ...). */
  head: number;
  regions: Record<Area, Region>;
  /**
   * Bytes reserved for an image's own area in the read-only data and data regions. The sections
   * the platform places after the µlibs there (libinfo, boot info) start right after the reserve,
   * at the same address in every image whose own bytes fit: shared code that reads them stays
   * identical. Grows when an image needs more.
   */
  own?: Partial<Record<Area, number>>;
  ulibs: Record<string, UlibEntry>;
  images: Record<string, ImageEntry>;
}

// ---- serialisation: addresses are written as hex strings so people can read the file ----

const hex = (n: number) => '0x' + n.toString(16);

function encode(m: SpacerMap): string {
  // Hand-written so a map of a thousand images stays quick to write (every link rewrites it) and
  // easy to read: the header indented, then one line per variant and per image, keys sorted.
  const j = JSON.stringify;
  const keys = (o: object) => Object.keys(o).sort();
  const perArea = <T>(o: Partial<Record<Area, T>>, f: (v: T) => unknown) => {
    const parts: string[] = [];
    for (const a of AREAS) if (o[a] !== undefined) parts.push(`${j(a)}: ${j(f(o[a]!))}`);
    return `{${parts.join(', ')}}`;
  };
  const extent = (e: Extent) => ({ addr: hex(e.addr), size: hex(e.size) });
  const out: string[] = [];
  out.push(
    '{',
    `  "schema": ${j(m.schema)},`,
    `  "page_size": ${j(m.page_size)},`,
    `  "text_base": ${j(hex(m.text_base))},`,
    `  "head": ${j(hex(m.head))},`,
  );
  out.push('  "regions": {');
  AREAS.forEach((k, i) => {
    const r = m.regions[k];
    out.push(
      `    ${j(k)}: {"base": ${j(hex(r.base))}, "end": ${j(hex(r.end))}, "next": ${j(hex(r.next))}}${i < AREAS.length - 1 ? ',' : ''}`,
    );
  });
  out.push('  },');
  if (m.own && Object.keys(m.own).length) out.push(`  "own": ${perArea(m.own, (x) => x)},`);
  out.push('  "ulibs": {');
  const names = keys(m.ulibs);
  names.forEach((name, i) => {
    const u = m.ulibs[name];
    out.push(`    ${j(name)}: {`);
    if (u.slot) out.push(`      "slot": ${perArea(u.slot, extent)},`);
    out.push('      "variants": {');
    const hs = keys(u.variants);
    hs.forEach((h, k) => {
      const v = u.variants[h];
      const fields = [
        `"sizes": ${perArea(v.sizes, (x) => x)}`,
        `"align": ${perArea(v.align, (x) => x)}`,
        `"images": ${j([...v.images].sort())}`,
      ];
      if (v.modes?.length) fields.push(`"modes": ${j([...v.modes].sort())}`);
      if (v.abs_ptr) fields.push(`"abs_ptr": ${v.abs_ptr}`);
      if (v.slot) fields.push(`"slot": ${perArea(v.slot, extent)}`);
      out.push(`        ${j(h)}: {${fields.join(', ')}}${k < hs.length - 1 ? ',' : ''}`);
    });
    out.push('      }', `    }${i < names.length - 1 ? ',' : ''}`);
  });
  out.push('  },', '  "images": {');
  const ims = keys(m.images);
  ims.forEach((n, i) => {
    const u = m.images[n].ulibs;
    const o = m.images[n].origin;
    const origin = o
      ? `, "origin": {"app": ${j(o.app)}, "build": ${j(o.build)}${o.relink !== undefined ? `, "relink": ${j(o.relink)}` : ''}}`
      : '';
    out.push(
      `    ${j(n)}: {"ulibs": {${keys(u)
        .map((k) => `${j(k)}: ${j(u[k])}`)
        .join(', ')}}${origin}}${i < ims.length - 1 ? ',' : ''}`,
    );
  });
  out.push('  }', '}');
  return out.join('\n') + '\n';
}

function decode(path: string, text: string): SpacerMap {
  let raw: any;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new SpacerError(
      `${path}: corrupt map (${(e as Error).message}); restore it from a backup, or delete it and relink every app to start a new map`,
    );
  }
  const bad = (what: string): never => {
    throw new SpacerError(
      `${path}: corrupt map (${what}); fix the entry by hand, restore a backup, or delete the map and relink every app`,
    );
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('not a JSON object');
  if (typeof raw.schema !== 'number') bad('no schema version');
  if (raw.schema > MAP_SCHEMA) {
    throw new SpacerError(
      `${path}: map schema ${raw.schema} is newer than this lib-spacer understands (${MAP_SCHEMA}); update lib-spacer, the map was left as it is`,
    );
  }
  if (raw.schema < 1) bad(`schema ${raw.schema}`);
  const addr = (v: unknown, what: string): number => {
    if (typeof v !== 'string' || !/^0x[0-9a-f]+$/i.test(v)) bad(`${what} is not a hex address`);
    const n = parseInt(v as string, 16);
    if (!Number.isSafeInteger(n)) bad(`${what} out of range`);
    return n;
  };
  const count = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
      bad(`${what} is not a byte count`);
    return v as number;
  };
  const regions = {} as Record<Area, Region>;
  for (const k of AREAS) {
    const r = raw.regions?.[k];
    if (!r) bad(`missing region ${k}`);
    regions[k] = {
      base: addr(r.base, `regions.${k}.base`),
      end: addr(r.end, `regions.${k}.end`),
      next: addr(r.next, `regions.${k}.next`),
    };
  }
  const ulibs: Record<string, UlibEntry> = {};
  for (const [name, u] of Object.entries<any>(raw.ulibs ?? {})) {
    if (typeof u?.variants !== 'object' || u.variants === null) bad(`ulibs.${name}`);
    const variants: Record<string, VariantEntry> = {};
    for (const [h, v] of Object.entries<any>(u.variants)) {
      const at = `ulibs.${name}.variants.${h}`;
      if (typeof v?.sizes !== 'object' || !Array.isArray(v.images)) bad(at);
      const e: VariantEntry = { sizes: {}, align: {}, images: v.images.map(String) };
      if (Array.isArray(v.modes))
        e.modes = v.modes.filter((x: unknown) => x === 'external' || x === 'aslr');
      if (v.abs_ptr !== undefined) e.abs_ptr = count(v.abs_ptr, `${at}.abs_ptr`);
      for (const a of AREAS) {
        if (v.sizes[a] !== undefined) e.sizes[a] = count(v.sizes[a], `${at}.sizes.${a}`);
        if (v.align?.[a] !== undefined) e.align[a] = count(v.align[a], `${at}.align.${a}`);
      }
      if (v.slot) {
        e.slot = {};
        for (const a of AREAS)
          if (v.slot[a])
            e.slot[a] = {
              addr: addr(v.slot[a].addr, `${at}.slot.${a}.addr`),
              size: addr(v.slot[a].size, `${at}.slot.${a}.size`),
            };
      }
      variants[h] = e;
    }
    ulibs[name] = { variants };
    if (u.slot) {
      const slot: Partial<Record<Area, Extent>> = {};
      for (const a of AREAS)
        if (u.slot[a])
          slot[a] = {
            addr: addr(u.slot[a].addr, `ulibs.${name}.slot.${a}.addr`),
            size: addr(u.slot[a].size, `ulibs.${name}.slot.${a}.size`),
          };
      ulibs[name].slot = slot;
    }
  }
  const images: Record<string, ImageEntry> = {};
  for (const [name, im] of Object.entries<any>(raw.images ?? {})) {
    if (typeof im?.ulibs !== 'object' || im.ulibs === null) bad(`images.${name}`);
    images[name] = { ulibs: im.ulibs };
    if (im.origin !== undefined) {
      const o = im.origin;
      if (
        typeof o?.app !== 'string' ||
        typeof o.build !== 'string' ||
        (o.relink !== undefined && typeof o.relink !== 'string')
      )
        bad(`images.${name}.origin`);
      images[name].origin = {
        app: o.app,
        build: o.build,
        ...(o.relink !== undefined ? { relink: o.relink } : {}),
      };
    }
  }
  let own: Partial<Record<Area, number>> | undefined;
  if (raw.own !== undefined) {
    if (typeof raw.own !== 'object' || raw.own === null) bad('own');
    own = {};
    for (const a of AREAS) if (raw.own[a] !== undefined) own[a] = count(raw.own[a], `own.${a}`);
  }
  return {
    schema: raw.schema,
    page_size: raw.page_size ?? PAGE,
    text_base: addr(raw.text_base, 'text_base'),
    head: addr(raw.head, 'head'),
    regions,
    ...(own ? { own } : {}),
    ulibs,
    images,
  };
}

/** Problems a map can have even when it parses: overlaps, misalignment, slots outside regions. */
export function checkMap(m: SpacerMap): string[] {
  const issues: string[] = [];
  for (const k of AREAS) {
    const r = m.regions[k];
    // The table and code regions start mid-page (after the boot head, or the table region after the
    // shared code); the others on pages.
    if (k !== 'ind' && k !== 'text' && (r.base % PAGE || r.end % PAGE))
      issues.push(`region ${k} is not page-aligned`);
    if (r.next < r.base || r.next > r.end)
      issues.push(`region ${k}: next ${hex(r.next)} outside ${hex(r.base)}..${hex(r.end)}`);
    const used: { name: string; e: Extent }[] = [];
    for (const [name, u] of Object.entries(m.ulibs)) {
      for (const [h, v] of Object.entries(u.variants))
        if (v.slot?.[k]) used.push({ name: `${name} (${h})`, e: v.slot[k]! });
      if (u.slot?.[k]) used.push({ name: `${name} (per-image variants)`, e: u.slot[k]! });
    }
    used.sort((a, b) => a.e.addr - b.e.addr);
    let prev: { name: string; e: Extent } | undefined;
    for (const cur of used) {
      const inText =
        k === 'ind' &&
        cur.e.addr >= m.regions.text.base &&
        cur.e.addr + cur.e.size <= m.regions.text.next;
      if (!inText && (cur.e.addr < r.base || cur.e.addr + cur.e.size > r.next))
        issues.push(
          `${cur.name}: ${k} slot ${hex(cur.e.addr)}+${hex(cur.e.size)} outside the allocated part of region ${k}`,
        );
      if (prev && prev.e.addr + prev.e.size > cur.e.addr)
        issues.push(`${cur.name}: ${k} slot overlaps ${prev.name}`);
      prev = cur;
    }
  }
  // The table region comes before the code (a fresh map) or, once relaid out, inside the code
  // region's allocated part, after the shared code, where no code slot may overlap it.
  const ind = m.regions.ind,
    text = m.regions.text;
  if (ind.end > text.base) {
    if (ind.base < text.base || ind.end > text.next) issues.push('region ind overlaps region text');
    for (const [name, u] of Object.entries(m.ulibs)) {
      for (const e of [...Object.values(u.variants).map((v) => v.slot?.text), u.slot?.text]) {
        if (e && e.addr < ind.end && e.addr + e.size > ind.base)
          issues.push(`${name}: text slot ${hex(e.addr)}+${hex(e.size)} overlaps the table region`);
      }
    }
  }
  for (let i = 2; i < AREAS.length; i++) {
    if (m.regions[AREAS[i - 1]].end > m.regions[AREAS[i]].base)
      issues.push(`region ${AREAS[i]} overlaps the region before it`);
  }
  if (m.text_base + m.head > m.regions.ind.base)
    issues.push('the boot head overlaps the table region');
  const listed = new Map<VariantEntry, Set<string>>();
  for (const [iname, im] of Object.entries(m.images)) {
    for (const [u, v] of Object.entries(im.ulibs)) {
      const e = m.ulibs[u]?.variants[v];
      if (!e) issues.push(`image ${iname} uses unknown variant ${v} of ${u}`);
      else {
        let names = listed.get(e);
        if (!names) listed.set(e, (names = new Set(e.images)));
        if (!names.has(iname)) issues.push(`variant ${v} of ${u} does not list image ${iname}`);
      }
    }
  }
  return issues;
}

/**
 * A map as read from its file: the text (to tell whether an update changed it) and the file's
 * identity.
 */
export interface MapSnapshot {
  path: string;
  map: SpacerMap;
  text: string;
  id: string;
}

const fileId = (path: string) => {
  const st = statSync(path, { bigint: true });
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
};

/**
 * Reads and parses the map file without the consistency check (undefined when there is no map yet).
 */
export function snapshotMap(path: string): MapSnapshot | undefined {
  if (!existsSync(path)) return undefined;
  let text: string, id: string;
  try {
    id = fileId(path);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SpacerError(
      `${path}: cannot read the map (${(e as NodeJS.ErrnoException).code}); check its permissions`,
    );
  }
  if (text.trim() === '')
    throw new SpacerError(
      `${path}: corrupt map (empty file); delete it and relink every app to start a new map`,
    );
  return { path, map: decode(path, text), text, id };
}

/** Parses the map file without the consistency check (undefined when there is no map yet). */
export function parseMapFile(path: string): SpacerMap | undefined {
  return snapshotMap(path)?.map;
}

export function readMap(path: string): SpacerMap | undefined {
  const m = parseMapFile(path);
  if (m) assertConsistent(path, m);
  return m;
}

/** One error line naming the map when checkMap finds anything. */
function assertConsistent(path: string, m: SpacerMap): void {
  const issues = checkMap(m);
  if (issues.length)
    throw new SpacerError(
      `${path}: inconsistent map (${issues[0]}${issues.length > 1 ? `, and ${issues.length - 1} more` : ''}); run 'spacer map check' for all, then fix or delete the map`,
    );
}

/** Writes the whole file to a temporary name, syncs it, then renames it over `path`. */
export function writeFileAtomic(path: string, data: string | Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
    throw e;
  }
  try {
    const dfd = openSync(dirname(path), 'r');
    fsyncSync(dfd);
    closeSync(dfd);
  } catch {
    /* directory fsync is best effort */
  }
}

export function writeMap(path: string, m: SpacerMap): void {
  writeFileAtomic(path, encode(m));
}

export function encodeMap(m: SpacerMap): string {
  return encode(m);
}

// ---- locking ----

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `fn` while holding `<map>.lock` (created with O_EXCL). A lock left by a process that
 * died on this host is taken over; otherwise waits up to `timeoutMs`.
 */
export async function withMapLock<T>(
  path: string,
  fn: () => T | Promise<T>,
  timeoutMs = 120_000,
): Promise<T> {
  const lock = `${path}.lock`;
  mkdirSync(dirname(path), { recursive: true });
  const me = `${process.pid} ${hostname()}\n`;
  const start = Date.now();
  let delay = 5;
  for (;;) {
    try {
      const fd = openSync(lock, 'wx');
      writeSync(fd, me);
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new SpacerError(
          `${lock}: cannot create the map lock (${(e as NodeJS.ErrnoException).code}); check that the map's folder is writable`,
        );
      }
    }
    let owner = '';
    try {
      owner = readFileSync(lock, 'utf8');
    } catch {
      continue;
    }
    const [pidText, host] = owner.trim().split(' ');
    const pid = Number(pidText);
    if (
      owner.endsWith('\n') &&
      host === hostname() &&
      Number.isInteger(pid) &&
      pid > 0 &&
      !alive(pid)
    ) {
      // The holder died: take the lock over by renaming our own claim onto it.
      const claim = `${lock}.${process.pid}`;
      try {
        writeFileAtomic(claim, me);
        if (readFileSync(lock, 'utf8') === owner) {
          renameSync(claim, lock);
          if (readFileSync(lock, 'utf8') === me) break;
        } else unlinkSync(claim);
      } catch {
        /* raced with another waiter; retry */
      }
      continue;
    }
    if (Date.now() - start > timeoutMs) {
      throw new SpacerError(
        `${lock}: map is locked by process ${pidText || '?'}${host ? ' on ' + host : ''} for over ${Math.round(timeoutMs / 1000)} s; if no build is running, delete the lock file`,
      );
    }
    await sleep(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 100);
  }
  try {
    return await fn();
  } finally {
    try {
      if (readFileSync(lock, 'utf8') === me) unlinkSync(lock);
    } catch {
      /* lock already gone */
    }
  }
}

/** Reads, changes and writes the map under the lock: the read-modify-write is atomic. */
/**
 * Runs `fn` on the map under its lock and writes the map back (atomically) if `fn` changed it.
 * `seen`, a snapshot read earlier without the lock, is used as it is when the file has not changed
 * since (a map of a thousand images is parsed once per link, not twice); `fn` may change it.
 */
export async function updateMap<T>(
  path: string,
  fresh: () => SpacerMap,
  fn: (m: SpacerMap) => T,
  seen?: MapSnapshot,
): Promise<T> {
  const timeout = Number(process.env.SPACER_LOCK_TIMEOUT ?? 120) * 1000;
  return withMapLock(
    path,
    () => {
      let snap: MapSnapshot | undefined;
      if (seen && seen.path === path && existsSync(path) && fileId(path) === seen.id) snap = seen;
      else snap = snapshotMap(path);
      if (snap) assertConsistent(path, snap.map);
      const m = snap?.map ?? fresh();
      const result = fn(m);
      const after = encode(m);
      if (after !== snap?.text) writeFileAtomic(path, after);
      return result;
    },
    timeout,
  );
}

export { hex };
