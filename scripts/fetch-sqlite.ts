// Fetches the SQLite amalgamation that the npm package better-sqlite3 ships (deps/sqlite3/sqlite3.c
// and sqlite3.h), for the real-code test (test/realcode.test.ts). Never installs the package (its
// install step builds native code): `npm pack` downloads the tarball into
// node_modules/.cache/lib-spacer-sqlite/, and the two files are extracted next to it. Reruns use
// the cache and need no network. Third-party source: never committed.
//
// node --import=tsx scripts/fetch-sqlite.ts prints the directory holding sqlite3.c and sqlite3.h
//
// SPACER_SQLITE_PACKAGE=better-sqlite3@<version> picks another release (no integrity pin then).
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa } from 'execa';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULT_PACKAGE = 'better-sqlite3@12.4.1';
/**
 * The registry's integrity of better-sqlite3-12.4.1.tgz (SQLite 3.50.4): a cached tarball must
 * match it.
 */
const PINNED: Record<string, string> = {
  'better-sqlite3@12.4.1':
    'sha512-3yVdyZhklTiNrtg+4WqHpJpFDd+WHTg2oM7UcR80GqL05AOV0xEJzc6qNvFYoEtE+hRp1n9MpN6/+4yhlGkDXQ==',
};
/** Where the amalgamation sits in the package tarball. */
const MEMBERS = ['package/deps/sqlite3/sqlite3.c', 'package/deps/sqlite3/sqlite3.h'];

export type Fetched =
  | {
      ok: true;
      dir: string;
      source: string;
      header: string;
      tarball: string;
      spec: string;
      downloaded: boolean;
      version: string;
    }
  | { ok: false; unreachable: string };

/** npm's messages when it cannot reach the registry (DNS, refused, reset, timeouts, no route). */
const NETWORK =
  /\b(ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ESOCKETTIMEDOUT|ENETUNREACH|EHOSTUNREACH|ENETDOWN|ECONNABORTED|EPROTO)\b|network|socket hang up|request to \S+ failed/i;

function integrity(path: string): string {
  return 'sha512-' + createHash('sha512').update(readFileSync(path)).digest('base64');
}

/**
 * Downloads the package tarball with `npm pack` into a private directory of `cache`, checks it
 * against the pin and renames it to `tarball`. Returns why the registry could not be reached (the
 * caller reports the test skipped), or undefined once the tarball is there.
 */
async function packTarball(
  spec: string,
  pin: string | undefined,
  cache: string,
  tarball: string,
): Promise<string | undefined> {
  const tmp = join(cache, `tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    const r = await execa(
      'npm',
      [
        'pack',
        spec,
        '--pack-destination',
        tmp,
        '--json',
        '--loglevel=error',
        '--fetch-retries=1',
        '--fetch-timeout=60000',
      ],
      {
        reject: false,
        timeout: 180_000,
        cwd: tmp,
      },
    );
    const files = existsSync(tmp) ? readdirSync(tmp).filter((f) => f.endsWith('.tgz')) : [];
    if (r.exitCode !== 0 || files.length !== 1) {
      const msg = `${r.stderr ?? ''}\n${r.stdout ?? ''}`.trim();
      if (r.timedOut || NETWORK.test(msg))
        return `npm pack ${spec}: ${r.timedOut ? 'timed out' : (msg.split('\n').find((l) => NETWORK.test(l)) ?? msg.split('\n')[0])}`;
      if ((r as { code?: string }).code === 'ENOENT')
        throw new Error('npm not found; install Node.js with npm');
      throw new Error(
        `npm pack ${spec} failed (exit ${r.exitCode}): ${msg.split('\n').slice(0, 5).join(' / ')}`,
      );
    }
    const got = join(tmp, files[0]);
    if (pin && integrity(got) !== pin)
      throw new Error(
        `npm pack ${spec}: the tarball's integrity is ${integrity(got)}, expected ${pin}`,
      );
    renameSync(got, tarball);
    return undefined;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Extracts sqlite3.c and sqlite3.h from `tarball` into `dir`, atomically: they are extracted
 * into a private directory of `cache` which is then renamed to `dir`, so a half-extracted
 * directory is never used.
 */
async function extractMembers(tarball: string, cache: string, dir: string): Promise<void> {
  const tmp = join(cache, `x-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    const r = await execa('tar', ['-xzf', tarball, '-C', tmp, ...MEMBERS], { reject: false });
    if (r.exitCode !== 0) {
      const list = (await execa('tar', ['-tzf', tarball], { reject: false })).stdout
        .split('\n')
        .filter((l) => /sqlite3\.[ch]$/.test(l));
      throw new Error(
        `${tarball}: no ${MEMBERS.join(', ')} in the package (${r.stderr.trim().split('\n')[0]}); it has: ${list.join(', ') || 'no sqlite3.c/.h'}`,
      );
    }
    const out = join(tmp, 'out');
    mkdirSync(out);
    for (const f of MEMBERS) renameSync(join(tmp, f), join(out, f.split('/').pop()!));
    rmSync(dir, { recursive: true, force: true });
    renameSync(out, dir);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

export async function fetchSqlite(
  opts: { spec?: string; cache?: string; log?: (s: string) => void } = {},
): Promise<Fetched> {
  const spec = opts.spec ?? process.env.SPACER_SQLITE_PACKAGE ?? DEFAULT_PACKAGE;
  const log = opts.log ?? (() => {});
  const m = /^better-sqlite3@(\d+\.\d+\.\d+)$/.exec(spec);
  if (!m) throw new Error(`${spec}: expected better-sqlite3@<exact version>`);
  const cache = opts.cache ?? join(root, 'node_modules', '.cache', 'lib-spacer-sqlite');
  mkdirSync(cache, { recursive: true });
  const tarball = join(cache, `better-sqlite3-${m[1]}.tgz`);
  const pin = PINNED[spec];
  let downloaded = false;
  if (existsSync(tarball) && pin && integrity(tarball) !== pin) {
    log(`${tarball}: integrity mismatch, downloading it again`);
    rmSync(tarball, { force: true });
    rmSync(join(cache, `better-sqlite3-${m[1]}`), { recursive: true, force: true });
  }
  if (!existsSync(tarball)) {
    const unreachable = await packTarball(spec, pin, cache, tarball);
    if (unreachable !== undefined) return { ok: false, unreachable };
    downloaded = true;
  }
  // Extract the two files once, atomically (a half-extracted directory is never used).
  const dir = join(cache, `better-sqlite3-${m[1]}`);
  const source = join(dir, 'sqlite3.c'),
    header = join(dir, 'sqlite3.h');
  if (!existsSync(source) || !existsSync(header) || statSync(source).size < 1_000_000)
    await extractMembers(tarball, cache, dir);
  const version =
    /#define SQLITE_VERSION\s+"([^"]+)"/.exec(readFileSync(header, 'utf8'))?.[1] ?? '?';
  return { ok: true, dir, source, header, tarball, spec, downloaded, version };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const r = await fetchSqlite({ log: (s) => console.error(s) });
  if (!r.ok) {
    console.error(`fetch-sqlite: ${r.unreachable}`);
    process.exit(3);
  }
  console.error(
    `fetch-sqlite: SQLite ${r.version} from ${r.spec}${r.downloaded ? ' (downloaded)' : ' (cached)'}`,
  );
  console.log(r.dir);
}
