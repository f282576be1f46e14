// The cache next to the workspace map: what `spacer link` and `spacer finish` derived from code
// and objects before, kept by the SHA-256 of everything it depends on, so a relink does the work
// of what changed (docs/design.md, "The cache").
//
//   entry  <cache>/<kind>/<key[0..2]>/<key>: a magic line, the SHA-256 of the body, then the body
//          (V8's serialization); an entry whose hash does not match is a miss (and is removed);
//   writes a temporary file renamed into place: concurrent builds see a whole entry or none;
//   bound  once links have added a sixteenth of the limit since the last gc, the least recently
//          used go until the cache is under its limit (SPACER_CACHE_MB, default 256 MiB);
//          `spacer cache gc` does it by hand.
//
// The cache lives next to the workspace map (`<map folder>/cache`); SPACER_CACHE=off, or
// `spacer finish --no-cache`, turns it off, SPACER_CACHE=<dir> moves it.
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import { isTempPath, writeFileAtomic } from '../util/files.js';
import { deepFreeze } from '../util/freeze.js';
import { afterReply, deferring } from '../util/after-reply.js';

export const DEFAULT_CACHE_MB = 256;

/** This process's use of the cache. */
export const cacheUse = {
  dir: undefined as string | undefined,
  hits: 0,
  misses: 0,
  /** Entries this process wrote, and their bytes, per cache folder. */
  added: 0,
  /** Which command line of this process (resetCacheUse). */
  run: 0,
  addedBytes: new Map<string, number>(),
};

/**
 * A new command line: no cache in use, the counters at zero, the decodes kept in memory dropped
 * (the link server runs many command lines in one process; each starts as a process would).
 */
export function resetCacheUse(): void {
  Object.assign(cacheUse, { dir: undefined, hits: 0, misses: 0, added: 0, run: cacheUse.run + 1 });
  cacheUse.addedBytes.clear();
}

/** Turns the cache on at `dir` (undefined: off) for this process. */
export function useCache(dir: string | undefined): void {
  cacheUse.dir = dir;
}

/** The cache folder of a workspace map, or undefined when SPACER_CACHE=off. */
export function cacheDirFor(mapPath: string): string | undefined {
  const env = process.env.SPACER_CACHE;
  if (env === 'off' || env === '0') return undefined;
  return env && env !== 'on' && env !== '1' ? env : join(dirname(mapPath), 'cache');
}

// Entries are V8's serialization (BigInts as they are; a tenth of JSON's time to read back).
const MAGIC = Buffer.from('spacer-cache 1\n');

/**
 * What the cache keeps: decodes, µlib rewrites, proofs that a rewritten µlib verified, the
 * table sizes an object needs (the link's first pass), and what a link reads of each object.
 */
export type CacheKind = 'analysis' | 'rewrite' | 'proof' | 'needs' | 'object';
const KINDS: readonly CacheKind[] = ['analysis', 'rewrite', 'proof', 'needs', 'object'];

function entryPath(dir: string, kind: CacheKind, key: string): string {
  return join(dir, kind, key.slice(0, 2), key);
}

/**
 * Entries the link server read or wrote, by absolute path (keepEntries; a process of its own
 * keeps none). A warm relink reads some fifty entries; a kept one costs a stat instead of an open,
 * a read, a hash and a touch. The file must still be there as the same file (inode and size): an
 * entry a gc removed is a miss, as for any process. Its time of use is set again once a minute at
 * most (the gc's order is by the minute). The value is deserialized afresh on every read, so no
 * caller shares an object with another.
 */
const kept = new Map<
  string,
  { body: Buffer; ino: number; size: number; touched: number; value?: unknown }
>();
/** A deserialized value kept with its body counts as this many times the body's bytes. */
const VALUE_WEIGHT = 4;
let keptMax = 0,
  keptBytes = 0;
const TOUCH_MS = 60_000;

/** The link server: keep up to `maxBytes` of entries in memory between command lines. */
export function keepEntries(maxBytes = 64 << 20): void {
  keptMax = maxBytes;
}

function keep(p: string, body: Buffer, touched: number): void {
  const st = statSync(p, { throwIfNoEntry: false });
  if (!st || body.length > keptMax) return;
  forget(p);
  kept.set(p, { body, ino: st.ino, size: st.size, touched });
  keptBytes += body.length;
  for (const q of kept.keys()) {
    if (keptBytes <= keptMax) break;
    forget(q);
  }
}

function forget(p: string): void {
  const k = kept.get(p);
  if (!k) return;
  kept.delete(p);
  keptBytes -= k.body.length * (k.value === undefined ? 1 : 1 + VALUE_WEIGHT);
}

/** Least recently used goes first: a hit counts as a use. */
function touch(p: string): void {
  try {
    const now = new Date();
    utimesSync(p, now, now);
  } catch {
    // Removed by a concurrent gc: the entry read is still whole.
  }
}

/** The entry of `key`, if whole and not tampered with. */
export function readEntry<T>(dir: string, kind: CacheKind, key: string): T | undefined {
  const p = entryPath(dir, kind, key);
  const body = keptMax ? keptBody(resolve(p)) : readBody(p);
  if (!body) return undefined;
  try {
    return deserialize(body) as T;
  } catch {
    removeQuietly(p);
    if (keptMax) forget(resolve(p));
    return undefined;
  }
}

/**
 * As readEntry, for a value its callers only read: deep-frozen, and in the link server kept with
 * the entry's body, so that the next command line that asks for it gets the same object and
 * deserializes nothing (a warm relink of a 39-µlib image asks for some fifty decodes).
 */
export function readEntryShared<T>(dir: string, kind: CacheKind, key: string): T | undefined {
  if (!keptMax) {
    const v = readEntry<T>(dir, kind, key);
    return v === undefined ? v : deepFreeze(v);
  }
  const p = resolve(entryPath(dir, kind, key));
  const body = keptBody(p);
  if (!body) return undefined;
  const k = kept.get(p);
  if (k?.value !== undefined) return k.value as T;
  let v: T;
  try {
    v = deepFreeze(deserialize(body) as T);
  } catch {
    removeQuietly(p);
    forget(p);
    return undefined;
  }
  if (k && k.body === body) {
    k.value = v;
    keptBytes += body.length * VALUE_WEIGHT;
  }
  return v;
}

/** The body of the entry at `p` (absolute): kept, else read and kept. */
function keptBody(p: string): Buffer | undefined {
  const u = unwritten.get(p);
  if (u) return u;
  const k = kept.get(p);
  if (k) {
    const st = statSync(p, { throwIfNoEntry: false });
    if (st && st.ino === k.ino && st.size === k.size) {
      const now = Date.now();
      if (now - k.touched > TOUCH_MS) {
        touch(p);
        k.touched = now;
      }
      // Most recently used last (evicted last).
      kept.delete(p);
      kept.set(p, k);
      return k.body;
    }
    forget(p);
  }
  const body = readBody(p);
  if (body) keep(p, body, Date.now());
  return body;
}

/** The body of the entry file at `p`, checked against its hash (undefined: none, or removed). */
function readBody(p: string): Buffer | undefined {
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
    removeQuietly(p);
    return undefined;
  }
  touch(p);
  return body;
}

const unwritable = new Set<string>();

/** Removes a file if it can; a cache folder that cannot be changed is only slower. */
function removeQuietly(path: string): void {
  try {
    rmSync(path, { force: true });
  } catch {
    // Not ours to fix here.
  }
}

/** Cache folders this process has written an entry to (later ones may wait: writeEntry). */
const writable = new Set<string>();
/** Entries the link server has made but not yet written (absolute path -> body). */
const unwritten = new Map<string, Buffer>();

/**
 * Keeps `value` as the entry of `key`. In the link server, once a first entry of `dir` was
 * written (so a folder that cannot be written is said while the build waits), the file is written
 * after the request's answer (util/after-reply.ts) and the entry is read from memory until then.
 */
export function writeEntry(dir: string, kind: CacheKind, key: string, value: unknown): void {
  const p = entryPath(dir, kind, key);
  const body = serialize(value);
  if (keptMax && deferring() && writable.has(dir)) {
    const abs = resolve(p);
    unwritten.set(abs, body);
    afterReply(`cache ${dir}`, () => {
      unwritten.delete(abs);
      storeEntry(dir, p, body, true);
    });
    return;
  }
  storeEntry(dir, p, body);
}

/**
 * Writes one entry. `later`: after the answer, when no build sees a warning: a failure then only
 * makes the folder's next entry a write at once, whose failure the next link is told.
 */
function storeEntry(dir: string, p: string, body: Buffer, later = false): void {
  const sum = createHash('sha256').update(body).digest();
  try {
    const entry = Buffer.concat([MAGIC, sum, body]);
    // Whole or not at all, its folder made the first time only; not synced: an entry lost to a
    // power cut is only a miss, and one torn is a miss too (its hash).
    writeFileAtomic(p, entry, 'product');
    writable.add(dir);
    if (keptMax) keep(resolve(p), body, Date.now());
    cacheUse.added++;
    cacheUse.addedBytes.set(dir, (cacheUse.addedBytes.get(dir) ?? 0) + entry.length);
  } catch (e) {
    // A cache that cannot be written is only slower: said once per folder, the link goes on.
    writable.delete(dir);
    if (!later && !unwritable.has(dir)) {
      unwritable.add(dir);
      const why = (e as NodeJS.ErrnoException).code ?? String(e);
      process.stderr.write(
        `spacer: warning: ${dir}: the cache cannot be written (${why}); linking without it. Fix the folder's permissions, or set SPACER_CACHE to another folder or to off\n`,
      );
    }
  }
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
            if (now - st.mtimeMs > 3600e3) removeQuietly(p);
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
    removeQuietly(f.p);
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

/** The width of the count in `<cache>/pending` (spaces after the digits). */
const PENDING_WIDTH = 20;

/**
 * After a link that added entries: the cache back under its limit. A gc reads every entry's size,
 * so it runs only once the links since the last one (each adds what it wrote to
 * `<cache>/pending`) have added a sixteenth of the limit: the cache exceeds its limit by about
 * that much at most, and a workspace of thousands of images does not scan it on every link.
 */
export function trimCache(): void {
  // Through the link server, after the answer (and after the entries it waits to write).
  afterReply('cache trim', trimNow);
}

function trimNow(): void {
  for (const [dir, bytes] of cacheUse.addedBytes) {
    const limit = cacheLimit(),
      file = join(dir, 'pending');
    let pending = 0;
    try {
      pending = Number(readFileSync(file, 'utf8')) || 0;
    } catch {
      // None yet.
    }
    pending += bytes;
    if (pending >= limit / 16) {
      gcCache(dir, limit);
      pending = 0;
    }
    // Two links at once may each miss the other's count, and a torn write reads as 0: the bound
    // is loose, never wrong. Written in place at a fixed width, not truncated: on ext4 a rename
    // over a file, or a truncate then a write, starts its writeback (auto_da_alloc).
    try {
      const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT, 0o644);
      try {
        writeSync(fd, String(pending).padEnd(PENDING_WIDTH), 0);
      } finally {
        closeSync(fd);
      }
    } catch {
      // A cache folder gone or read-only: the next link counts again.
    }
  }
  cacheUse.addedBytes.clear();
}
