// Image arguments (`PATH@N`) and the display names the report gives images.
import { existsSync } from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { SpacerError } from '../errors.js';
import type { ImageInput } from './types.js';

/** `path@N` → {path, instances: N}; a plain path → {path, instances: 1}. */
export function parseImageArg(arg: string): ImageInput {
  const m = /^(.+)@([^/@]*)$/.exec(arg);
  if (m) {
    if (/^\d+$/.test(m[2])) {
      const n = Number(m[2]);
      if (!Number.isSafeInteger(n) || n < 1)
        throw new SpacerError(
          `${arg}: instance count must be a whole number of at least 1; write PATH@N, e.g. ${m[1]}@2`,
        );
      return { path: m[1], instances: n };
    }
    if (!existsSync(arg))
      throw new SpacerError(
        `${arg}: no such file, and '@${m[2]}' is not an instance count; write PATH@N with N a whole number, e.g. ${m[1]}@2`,
      );
  }
  return { path: arg, instances: 1 };
}

/**
 * Display names: the file name without extension; where two collide, `parent/stem`; then
 * `parent/file`; then `app/stem` and `app/parent/file` (the folder above the build folder: the
 * app, in a Unikraft build); then a `#k` suffix. Explicit names are kept and must be unique.
 */
export function imageNames(inputs: readonly ImageInput[]): string[] {
  const seen = new Set<string>();
  for (const x of inputs) {
    if (x.name === undefined) continue;
    if (!x.name) throw new SpacerError(`${x.path}: empty image name; give a non-empty name`);
    if (seen.has(x.name))
      throw new SpacerError(
        `${x.path}: image name ${JSON.stringify(x.name)} is given twice; give each image its own name`,
      );
    seen.add(x.name);
  }
  const cands = inputs.map((x) => {
    const base = basename(x.path),
      stem = basename(x.path, extname(x.path)) || base;
    const parent = basename(dirname(resolve(x.path))),
      app = basename(dirname(dirname(resolve(x.path))));
    // Unikraft builds into <app>/build (or another O=): two apps' images differ by the folder
    // above.
    return [
      stem,
      `${parent}/${stem}`,
      `${parent}/${base}`,
      `${app}/${stem}`,
      `${app}/${parent}/${base}`,
    ];
  });
  const level = inputs.map(() => 0);
  const current = () => inputs.map((x, i) => x.name ?? cands[i][level[i]]);
  for (;;) {
    const names = current();
    // Files a name stands for: the same file given twice keeps its name (and gets `#k`).
    const files = new Map<string, Set<string>>();
    names.forEach((n, i) =>
      (files.get(n) ?? files.set(n, new Set()).get(n)!).add(resolve(inputs[i].path)),
    );
    let moved = false;
    inputs.forEach((x, i) => {
      if (x.name === undefined && files.get(names[i])!.size > 1 && level[i] < cands[i].length - 1) {
        level[i]++;
        moved = true;
      }
    });
    if (!moved) break;
  }
  const names = current();
  const taken = new Set(names);
  const used = new Set<string>();
  return names.map((n, i) => {
    if (inputs[i].name !== undefined || !used.has(n)) {
      used.add(n);
      return n;
    }
    let k = 2;
    while (taken.has(`${n}#${k}`) || used.has(`${n}#${k}`)) k++;
    used.add(`${n}#${k}`);
    return `${n}#${k}`;
  });
}
