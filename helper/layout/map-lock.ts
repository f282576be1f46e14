// The map lock: every update of the map runs under `<map>.lock` (created with O_EXCL; a lock
// left by a dead build on this host is taken over) and lands with an atomic rename.
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { cacheDirFor } from '../cache/store.js';
import { SpacerError } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';
import { assertConsistent } from './map-check.js';
import { encodeMap, fileId, snapshotMap, type MapSnapshot } from './map-file.js';
import type { SpacerMap } from './map-types.js';

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

/**
 * Where the helper notes the identity (device, inode, size, times) of the map file it last wrote,
 * in the map's cache folder: a map the allocator wrote is consistent, and the next link skips the
 * whole-map check (0.2 s at 10 000 images). A file changed since (by hand, by an older helper) has
 * another identity and is checked.
 */
function checkedNote(path: string): string | undefined {
  const dir = cacheDirFor(path);
  if (!dir) return undefined;
  const key = createHash('sha256').update(resolve(path)).digest('hex').slice(0, 16);
  return join(dir, `map-written-${key}`);
}

function readNote(note: string | undefined): string | undefined {
  try {
    return note ? readFileSync(note, 'utf8') : undefined;
  } catch {
    return undefined;
  }
}

function writeNote(note: string | undefined, path: string): void {
  if (!note) return;
  try {
    mkdirSync(dirname(note), { recursive: true });
    writeFileAtomic(note, fileId(path));
  } catch {
    /* no note: the next link checks the map */
  }
}

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
      const note = checkedNote(path);
      if (snap && readNote(note) !== snap.id) assertConsistent(path, snap.map);
      const m = snap?.map ?? fresh();
      const result = fn(m);
      const after = encodeMap(m);
      if (after !== snap?.text) {
        writeFileAtomic(path, after);
        writeNote(note, path);
      }
      return result;
    },
    timeout,
  );
}
