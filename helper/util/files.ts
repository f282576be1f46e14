// Files the helper replaces: every write goes to a temporary name beside the target (one naming
// scheme, so a crashed build leaves recognisable leftovers) and lands with a rename, so a reader
// or make never sees half a file.
import {
  closeSync,
  fchmodSync,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';

/** A temporary name beside `path`, unique to this process and call:
 * `<path>.spacer-tmp-<pid>-<n>`. */
export function tempPath(path: string, tag = ''): string {
  return `${path}.spacer-tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}${tag ? `.${tag}` : ''}`;
}

/** Is `file` one of tempPath's names? */
export function isTempPath(file: string): boolean {
  return /\.spacer-tmp-\d+-[a-z0-9]+(\.|$)/.test(file);
}

/**
 * How writeFileAtomic lands a file; in every case it lands whole or not at all.
 * - `synced`: the workspace's own state (the map's journal and header, the lock): synced, then
 *   renamed over the old file, so that it also survives a power cut.
 * - `unsynced`: files a synced journal holds (the map's files): renamed over the old file, so
 *   that a reader without the lock never finds the name missing.
 * - `product`: build products (script, plan, seed, image) and cache entries, which make remakes
 *   and ld and strip never sync either: the old file is removed first, then the new one renamed
 *   to its name, as ld replaces its output. ext4 starts writing a file back when it is renamed
 *   over another (auto_da_alloc): a third of a millisecond per file here, three times the cost.
 */
export type Landing = 'synced' | 'unsynced' | 'product';

/**
 * Writes the whole file to a temporary name, then lands it at `path` (Landing); a file that was
 * there keeps its permissions (an executable stays executable).
 */
export function writeFileAtomic(
  path: string,
  data: string | Buffer,
  how: Landing = 'synced',
): void {
  let mode: number | undefined;
  try {
    mode = statSync(path).mode & 0o7777;
  } catch {
    mode = undefined;
  }
  const tmp = tempPath(path);
  let fd: number;
  try {
    fd = openSync(tmp, 'w');
  } catch (e) {
    // The folder is made when it is not there (not tried first: most writes replace a file).
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(dirname(path), { recursive: true });
    fd = openSync(tmp, 'w');
  }
  try {
    if (mode !== undefined) fchmodSync(fd, mode);
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    if (how === 'synced') fsyncSync(fd);
  } catch (e) {
    // A full disk: no temporary file left behind, and what was at `path` stays.
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  try {
    if (how === 'product') landProduct(tmp, path, mode !== undefined);
    else renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Puts the finished file `tmp` at `path` as a build product (Landing): the old file goes first
 * (`existed` false: there was none to remove), then `tmp` is renamed to the name.
 */
export function landProduct(tmp: string, path: string, existed = true): void {
  if (existed) rmSync(path, { force: true });
  renameSync(tmp, path);
}

/**
 * Runs `make(tmp)` to produce a build product at a temporary name beside `path`, then lands it
 * there (landProduct); on any failure the temporary file is removed and `path` is left as it was.
 */
export async function replaceAtomically(
  path: string,
  make: (tmp: string) => Promise<void> | void,
): Promise<void> {
  const tmp = tempPath(path);
  try {
    await make(tmp);
    landProduct(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}
