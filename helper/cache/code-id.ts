// The id of this helper's code: the key every cache entry starts with, so another build of the
// helper never reads this one's entries. The bundle's is written by scripts/bundle.ts when it
// builds it; tsc's output and the TypeScript sources (tests, through tsx) hash their files.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { extname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

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
