// The map lock: every update of the map runs under `<map>.lock` (created with O_EXCL; a lock
// left by a dead build on this host is taken over) and lands whole (map-store.ts).
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { SpacerError } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';
import { assertConsistent } from './map-check.js';
import { finishJournal, loadLinkView, loadWhole, saveMap, type MapState } from './map-store.js';
import { NeedWholeMap, type SpacerMap } from './map-types.js';

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

/** What a link touches of the map: its image, and the variant of each µlib it uses. */
export interface LinkView {
  image: string;
  want: Record<string, string>;
}

/**
 * Runs `fn` on the map under its lock and writes back what it changed (every update lands whole:
 * map-store.ts). With `view`, `fn` gets a link's view of the map (the image and the variants it
 * touches), and the whole map only when it needs it (NeedWholeMap) or the map is of the
 * single-file form; else the whole map. The map read is checked first.
 */
export async function updateMap<T>(
  path: string,
  fresh: () => SpacerMap,
  fn: (m: SpacerMap) => T,
  view?: LinkView,
): Promise<T> {
  const timeout = Number(process.env.SPACER_LOCK_TIMEOUT ?? 120) * 1000;
  return withMapLock(
    path,
    () => {
      finishJournal(path);
      const run = (st: MapState | undefined) => {
        if (st) assertConsistent(path, st.map);
        const m = st?.map ?? fresh();
        const result = fn(m);
        saveMap(path, st, m);
        return result;
      };
      try {
        return run(view ? loadLinkView(path, view.image, view.want) : loadWhole(path));
      } catch (e) {
        if (!(e instanceof NeedWholeMap)) throw e;
        return run(loadWhole(path));
      }
    },
    timeout,
  );
}
