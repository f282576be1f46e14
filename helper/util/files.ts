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
 * Writes the whole file to a temporary name, syncs it, then renames it over `path`; a file that
 * was there keeps its permissions (an executable stays executable). `sync` false skips the sync:
 * for a caller whose journal is synced, and for build products (script, plan, seed, image), which
 * make remakes and which ld and strip never sync either. Either way the file lands whole or not
 * at all; only the workspace's own state (the map, its lock) must also survive a power cut.
 */
export function writeFileAtomic(path: string, data: string | Buffer, sync = true): void {
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
    if (sync) fsyncSync(fd);
  } catch (e) {
    // A full disk: no temporary file left behind, and what was at `path` stays.
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Runs `make(tmp)` to produce a file at a temporary name beside `path`, then renames it over
 * `path`; on any failure the temporary file is removed and `path` is left as it was.
 */
export async function replaceAtomically(
  path: string,
  make: (tmp: string) => Promise<void> | void,
): Promise<void> {
  const tmp = tempPath(path);
  try {
    await make(tmp);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}
