// Where lib-spacer lives: the checkout that holds package.json, linker-templates/ and, by
// default, the shared workspace map.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'linker-templates'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('lib-spacer: cannot find the package root');
    dir = up;
  }
  return (root = dir);
}

/** The map every app built with this checkout shares, unless SPACER_MAP or --map say otherwise. */
export function defaultMapPath(): string {
  return process.env.SPACER_MAP || join(packageRoot(), '.spacer', 'map.json');
}
