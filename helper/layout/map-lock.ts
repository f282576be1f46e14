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
import { dirname, resolve } from 'node:path';
import { SpacerError } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';
import { afterReply, deferring, runAfterReply } from '../util/after-reply.js';
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
  const release = await takeMapLock(path, timeoutMs);
  try {
    return await fn();
  } finally {
    release();
  }
}

/** The key under which a link's map write, left until its answer is out, fails (updateMap). */
export function mapWriteKey(map: string, image: string): string {
  return `map write ${resolve(map)} ${image}`;
}

/** Maps whose lock this process holds until its answer is out (updateMap's `later`). */
const heldLater = new Set<string>();

/** Takes `<map>.lock` as withMapLock does; gives the function that lets it go. */
async function takeMapLock(path: string, timeoutMs: number): Promise<() => void> {
  // This process holds it until after its answer: that work runs now (a second update of the
  // same map in one request waits for nobody else).
  if (heldLater.has(resolve(path))) {
    runAfterReply((line) => process.stderr.write(`spacer: ${line}\n`));
  }
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
  return () => {
    try {
      if (readFileSync(lock, 'utf8') === me) unlinkSync(lock);
    } catch {
      /* lock already gone */
    }
  };
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
 *
 * `later`: through the link server, the write (and the lock with it) waits until the answer is
 * out (util/after-reply.ts): the link's placements are decided under the lock, ld runs while the
 * map lands, and the next request, or any other build, finds it landed. A write that fails then
 * is the failure of `later`'s key (the link step's finish asks).
 */
export async function updateMap<T>(
  path: string,
  fresh: () => SpacerMap,
  fn: (m: SpacerMap) => T,
  view?: LinkView,
  later?: string,
): Promise<T> {
  const timeout = Number(process.env.SPACER_LOCK_TIMEOUT ?? 120) * 1000;
  const release = await takeMapLock(path, timeout);
  let held = true;
  try {
    finishJournal(path);
    const run = (st: MapState | undefined) => {
      if (st) assertConsistent(path, st.map);
      const m = st?.map ?? fresh();
      const result = fn(m);
      // The files' text is made now (nothing that runs after this can change what lands).
      saveMap(path, st, m, (commitIt) => {
        if (!later || !deferring()) return commitIt();
        held = false;
        heldLater.add(resolve(path));
        afterReply(later, () => {
          try {
            commitIt();
          } finally {
            heldLater.delete(resolve(path));
            release();
          }
        });
      });
      return result;
    };
    try {
      return run(view ? loadLinkView(path, view.image, view.want) : loadWhole(path));
    } catch (e) {
      if (!(e instanceof NeedWholeMap)) throw e;
      return run(loadWhole(path));
    }
  } finally {
    if (held) release();
  }
}
