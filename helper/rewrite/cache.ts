// The analysis cache: the decode of a µlib's code and the sites found in it, kept by the hash of
// everything that decode reads. A µlib variant at the same addresses links to the same bytes in
// every image (that is what the map is for), so a relink where only the app changed, or a new
// image of µlibs the workspace already linked at these addresses, finds its analyses here instead
// of decoding again; the verify pass, which analyses the code rebuilt from the record, finds the
// rewrite's own entry. The rest of the rewrite and of its proof runs as without the cache.
//
//   key    SHA-256 of: this helper's code (every file of its build), the mode and entry forms,
//          the code's address and bytes, its functions' extents and its relocations (type,
//          addend, and what the symbol is: same section, the µlib's own, or another's);
//   entry  <cache>/analysis/<key[0..2]>/<key>: a line with the SHA-256 of the rest, then the
//          JSON; an entry whose hash does not match is a miss (and is removed);
//   writes a temporary file renamed into place: concurrent builds see a whole entry or none;
//   bound  after a link that added entries, the least recently used go until the cache is under
//          its limit (SPACER_CACHE_MB, default 256); `spacer cache gc` does it by hand.
//
// The cache lives next to the workspace map (`<map folder>/cache`); SPACER_CACHE=off, or
// `spacer finish --no-cache`, turns it off.
import { createHash } from 'node:crypto';
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { dirname, extname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deserialize, serialize } from 'node:v8';
import { tempPath, isTempPath } from '../util/files.js';
import { R_X86_64, type CodeRef, type Site } from '../x86/classify.js';
import type { Extent } from '../x86/extents.js';

/** What the decode of a µlib's code gives the rest of its analysis. */
export interface Found {
  sites: Site[];
  /** Relocations in data within the code that point outside. */
  data: CodeRef[];
  /** Targets of the near branches that land inside the code. */
  targets: bigint[];
}

/** Everything the decode reads. */
export interface FoundInputs {
  mode: string;
  forms: { ownAbs: boolean; pinned: boolean };
  lo: bigint;
  bytes: Uint8Array;
  extents: readonly Extent[];
  refs: readonly CodeRef[];
}

export const DEFAULT_CACHE_MB = 256;

/** This process's use of the cache. */
export const cacheUse = { dir: undefined as string | undefined, hits: 0, misses: 0, added: 0 };

/** Turns the cache on at `dir` (undefined: off) for this process. */
export function useCache(dir: string | undefined): void {
  if (dir !== cacheUse.dir) memo.clear();
  cacheUse.dir = dir;
}

/** The cache folder of a workspace map, or undefined when SPACER_CACHE=off. */
export function cacheDirFor(mapPath: string): string | undefined {
  const env = process.env.SPACER_CACHE;
  if (env === 'off' || env === '0') return undefined;
  return env && env !== 'on' && env !== '1' ? env : join(dirname(mapPath), 'cache');
}

let codeId: string | undefined;

/**
 * A hash of this helper's code: every file of its build (the bundle and its chunks, tsc's output,
 * or the TypeScript sources when run through tsx) and iced-x86's version. Another build of the
 * helper never reads this one's entries.
 */
export function helperCodeId(): string {
  if (codeId) return codeId;
  const here = fileURLToPath(import.meta.url);
  const i = here.lastIndexOf(`${sep}helper${sep}`);
  const helper = here.slice(0, i + sep.length + 'helper'.length);
  const dist = here.includes(`${sep}dist${sep}`);
  // The bundle's id is written by scripts/bundle.ts when it builds it (one read, not a walk).
  if (extname(here) === '.mjs')
    try {
      return (codeId = readFileSync(join(helper, 'dist', CODE_ID_FILE), 'utf8').trim());
    } catch {
      // Not written: computed below.
    }
  return (codeId = codeIdOf(dist ? join(helper, 'dist') : helper, extname(here)));
}

/** Where scripts/bundle.ts leaves the bundle's code id (in helper/dist). */
export const CODE_ID_FILE = 'code-id';

/** The hash helperCodeId gives: the files with extension `ext` under `root`, and iced's version. */
export function codeIdOf(root: string, ext: string): string {
  const h = createHash('sha256');
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    )) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'node_modules' && e.name !== 'dist') walk(p);
      } else if (extname(e.name) === ext) h.update(p.slice(root.length)).update(readFileSync(p));
    }
  };
  walk(root);
  try {
    const pkg = join(root, root.endsWith(`${sep}dist`) ? '../..' : '..', 'node_modules');
    const iced = join(pkg, 'iced-x86', 'package.json');
    h.update((JSON.parse(readFileSync(iced, 'utf8')) as { version: string }).version);
  } catch {
    h.update('iced-x86 ?');
  }
  return h.digest('hex');
}

/** Bytes of the field a relocation of `type` patches; 0 when unsure (the field stays keyed). */
function fieldSize(type: number): number {
  const T = R_X86_64;
  if (type === T._8 || type === T.PC8) return 1;
  if (type === T._16 || type === T.PC16) return 2;
  const eight: number[] = [T._64, T.PC64, T.GOTOFF64, T.GOT64, T.GOTPCREL64, T.GOTPC64, T.SIZE64];
  const four: number[] = [T.PC32, T.PLT32, T.GOTPCREL, T._32, T._32S, T.GOTPCRELX];
  four.push(T.REX_GOTPCRELX, T.GOTTPOFF, T.TPOFF32, T.DTPOFF32, T.GOTPC32, T.SIZE32, T.GOT32);
  return eight.includes(type) ? 8 : four.includes(type) ? 4 : 0;
}

/**
 * The code with every relocated field zeroed, fed to `h` piece by piece (no copy): what a field
 * holds (an address elsewhere, which moves when another µlib does) changes no instruction's
 * length, kind or operands, so the decode is keyed without it and its values are read again from
 * the code on a hit (`refreshed`).
 */
function hashMasked(
  h: ReturnType<typeof createHash>,
  bytes: Uint8Array,
  lo: bigint,
  refs: readonly CodeRef[],
): void {
  const fields = refs
    .map((r) => [Number(r.at - lo), fieldSize(r.type)] as const)
    .filter(([off, n]) => n && off >= 0 && off + n <= bytes.length)
    .sort((a, b) => a[0] - b[0]);
  const zeros = new Uint8Array(8);
  let at = 0;
  for (const [off, n] of fields) {
    if (off > at) h.update(bytes.subarray(at, off));
    const from = Math.max(at, off);
    if (off + n > from) h.update(zeros.subarray(0, off + n - from));
    at = Math.max(at, off + n);
  }
  h.update(bytes.subarray(at));
}

/** The key of a decode: SHA-256 of its inputs and the helper's code. */
export function foundKey(x: FoundInputs): string {
  const h = createHash('sha256');
  h.update(
    `spacer-analysis 2 ${helperCodeId()} ${process.version} ${x.mode} ${+x.forms.ownAbs}${+x.forms.pinned}\n`,
  );
  h.update(`${x.lo.toString(16)} ${x.bytes.length}\n`);
  hashMasked(h, x.bytes, x.lo, x.refs);
  for (const e of x.extents)
    h.update(`e ${e.start.toString(16)} ${e.end.toString(16)} ${e.name}\n`);
  for (const r of x.refs)
    h.update(`r ${r.at.toString(16)} ${r.type} ${r.place} ${r.addend.toString(16)} ${r.symKey}\n`);
  return h.digest('hex');
}

// Entries are V8's serialization (BigInts as they are; a tenth of JSON's time to read back).
const MAGIC = Buffer.from('spacer-analysis\n');

/**
 * What the cache keeps: decodes, µlib rewrites, proofs that a rewritten µlib verified, the
 * table sizes an object needs (the link's first pass), and what a link reads of each object.
 */
export type CacheKind = 'analysis' | 'rewrite' | 'proof' | 'needs' | 'object';
const KINDS: readonly CacheKind[] = ['analysis', 'rewrite', 'proof', 'needs', 'object'];

function entryPath(dir: string, kind: CacheKind, key: string): string {
  return join(dir, kind, key.slice(0, 2), key);
}

/** The entry of `key`, if whole and not tampered with. */
export function readEntry<T>(dir: string, kind: CacheKind, key: string): T | undefined {
  const p = entryPath(dir, kind, key);
  let file: Buffer;
  try {
    file = readFileSync(p);
  } catch {
    return undefined;
  }
  const head = MAGIC.length,
    body = file.subarray(head + 32);
  const sum = createHash('sha256').update(body).digest();
  if (!file.subarray(0, head).equals(MAGIC) || !sum.equals(file.subarray(head, head + 32))) {
    rmSync(p, { force: true });
    return undefined;
  }
  try {
    // Least recently used goes first: a hit counts as a use.
    const now = new Date();
    utimesSync(p, now, now);
  } catch {
    // Removed by a concurrent gc: the entry read is still whole.
  }
  try {
    return deserialize(body) as T;
  } catch {
    rmSync(p, { force: true });
    return undefined;
  }
}

export function writeEntry(dir: string, kind: CacheKind, key: string, value: unknown): void {
  const p = entryPath(dir, kind, key);
  const body = serialize(value);
  const sum = createHash('sha256').update(body).digest();
  mkdirSync(dirname(p), { recursive: true });
  const tmp = tempPath(p);
  try {
    writeFileSync(tmp, Buffer.concat([MAGIC, sum, body]));
    renameSync(tmp, p);
  } catch {
    // A cache that cannot be written is only slower.
    rmSync(tmp, { force: true });
  }
}

const memo = new Map<string, Found>();

/** A field of `size` bytes at `off`, sign-extended. */
function signed(v: Buffer, off: number, size: number): bigint {
  if (size === 1) return BigInt(v.readInt8(off));
  if (size === 2) return BigInt(v.readInt16LE(off));
  if (size === 4) return BigInt(v.readInt32LE(off));
  if (size === 8) return v.readBigInt64LE(off);
  return 0n;
}

/**
 * The sites of a cached decode with the values their fields hold in `bytes`: a near branch's
 * target, a memory operand's address (the rest of an instruction does not depend on them).
 */
function refreshed(f: Found, code: Uint8Array, lo: bigint): Found | undefined {
  // A branch whose displacement iced did not place cannot be read again: decode afresh.
  if (f.sites.some((s) => s.insn.nearBranch && !s.insn.immSize)) return undefined;
  const bytes = Buffer.from(code.buffer, code.byteOffset, code.length);
  return {
    ...f,
    sites: f.sites.map((s) => {
      const i = s.insn,
        off = Number(i.ip - lo),
        end = i.ip + BigInt(i.len);
      const insn = { ...i };
      if (i.nearBranch)
        insn.target = BigInt.asUintN(64, end + signed(bytes, off + i.immOff, i.immSize));
      if (i.hasMem) {
        const d = i.dispSize ? signed(bytes, off + i.dispOff, i.dispSize) : 0n;
        insn.memAddr = BigInt.asUintN(64, i.ipRel ? end + d : d);
      }
      return { ...s, insn };
    }),
  };
}

// A symbol of the code, named by the order of its first relocation (NUL-led: no symbol name
// holds a NUL).
const token = (n: number) => `\u0000${n}\u0000`;
const TOKEN = new RegExp(`${token(0).slice(0, 1)}(\\d+)${token(0).slice(0, 1)}`, 'g');

/**
 * The relocations with each symbol named by its order of first use instead of the image's
 * numbering (`name#index` for a local, `§shndx` for a section): the same code at the same address
 * reads the same in every image. `names` maps the order back.
 */
export function canonicalSymbols(refs: readonly CodeRef[]): { refs: CodeRef[]; names: string[] } {
  const order = new Map<string, number>();
  const names: string[] = [];
  const out = refs.map((r) => {
    let n = order.get(r.symKey);
    if (n === undefined) order.set(r.symKey, (n = names.push(r.symKey) - 1));
    return { ...r, symKey: token(n) };
  });
  return { refs: out, names };
}

/** `f` (from canonical relocations) with the symbols' names of this image; `f` is not changed. */
export function namedBack(f: Found, names: readonly string[]): Found {
  const back = (s: string) => s.replace(TOKEN, (_m, n: string) => names[Number(n)]);
  return {
    sites: f.sites.map((x) => ({
      ...x,
      key: back(x.key),
      refs: x.refs.map((r) => ({ ...r, target: back(r.target) })),
    })),
    data: f.data.map((r) => ({ ...r, symKey: back(r.symKey) })),
    targets: f.targets,
  };
}

/** The decode of `x`: from the cache when it holds it, else `compute()`'s (then kept). */
export function cachedFound(x: FoundInputs, key: string | undefined, compute: () => Found): Found {
  const dir = cacheUse.dir;
  if (!dir || !key) return compute();
  // The verify pass asks again for what the rewrite pass just read or computed.
  const seen = memo.get(key) ?? readEntry<Found>(dir, 'analysis', key);
  const hit = seen && refreshed(seen, x.bytes, x.lo);
  if (seen) memo.set(key, seen);
  if (hit) {
    cacheUse.hits++;
    return hit;
  }
  cacheUse.misses++;
  const f = compute();
  writeEntry(dir, 'analysis', key, f);
  memo.set(key, f);
  cacheUse.added++;
  return f;
}

/** What a gc did. */
export interface GcResult {
  entries: number;
  bytes: number;
  removed: number;
  removedBytes: number;
}

/**
 * Removes the least recently used entries until the cache holds at most `maxBytes`, and
 * temporary files older than an hour (a build that was killed mid-write).
 */
export function gcCache(dir: string, maxBytes: number): GcResult {
  const files: { p: string; size: number; mtime: number }[] = [];
  const now = Date.now();
  let removed = 0,
    removedBytes = 0;
  for (const kind of KINDS) {
    let subs: string[];
    try {
      subs = readdirSync(join(dir, kind));
    } catch {
      continue;
    }
    for (const sub of subs) {
      let names: string[];
      try {
        names = readdirSync(join(dir, kind, sub));
      } catch {
        continue;
      }
      for (const n of names) {
        const p = join(dir, kind, sub, n);
        try {
          const st = statSync(p);
          if (isTempPath(n)) {
            if (now - st.mtimeMs > 3600e3) rmSync(p, { force: true });
            continue;
          }
          files.push({ p, size: st.size, mtime: st.mtimeMs });
        } catch {
          // Gone meanwhile.
        }
      }
    }
  }
  files.sort((a, b) => b.mtime - a.mtime || (a.p < b.p ? -1 : 1));
  let bytes = 0,
    entries = 0;
  for (const f of files) {
    if (bytes + f.size <= maxBytes) {
      bytes += f.size;
      entries++;
      continue;
    }
    rmSync(f.p, { force: true });
    removed++;
    removedBytes += f.size;
  }
  return { entries, bytes, removed, removedBytes };
}

/** What the cache holds, per kind. */
export function cacheSummary(dir: string): {
  entries: number;
  bytes: number;
  kinds: Record<string, { entries: number; bytes: number }>;
} {
  const kinds: Record<string, { entries: number; bytes: number }> = {};
  let entries = 0,
    bytes = 0;
  for (const kind of KINDS) {
    const k = (kinds[kind] = { entries: 0, bytes: 0 });
    let subs: string[] = [];
    try {
      subs = readdirSync(join(dir, kind));
    } catch {
      continue;
    }
    for (const sub of subs)
      for (const n of readdirSync(join(dir, kind, sub))) {
        if (isTempPath(n)) continue;
        k.entries++;
        k.bytes += statSync(join(dir, kind, sub, n)).size;
      }
    entries += k.entries;
    bytes += k.bytes;
  }
  return { entries, bytes, kinds };
}

/** The cache's size limit in bytes: SPACER_CACHE_MB, else the default. */
export function cacheLimit(): number {
  const v = process.env.SPACER_CACHE_MB;
  const mb = v ? Number(v) : NaN;
  return (Number.isFinite(mb) && mb >= 0 ? mb : DEFAULT_CACHE_MB) * 1024 * 1024;
}

/** After a link that added entries: the cache back under its limit. */
export function trimCache(): void {
  if (cacheUse.dir && cacheUse.added) gcCache(cacheUse.dir, cacheLimit());
}
