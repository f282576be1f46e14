// Precompact: `spacer finish --precompact IMAGE` strips and compacts the finished .dbg the way
// the image rule will, so the image rule's strip (scripts/spacer-strip.sh) finds the result and
// does not start Node a third time for `spacer compact`. What it leaves, beside the plan in the
// build's spacer/ folder:
//   <image>.compact      the compacted image
//   <image>.compact.log  the lines `spacer compact` would print
//   <image>.compact.key  two lines: the SHA-256 of the stripped file it started from, and the
//                        compact options (`pack=1 holes=0 vmm=qemu`)
// spacer-strip.sh runs strip as always, and takes the compacted file only when its own stripped
// output has that hash and its options are those; otherwise it runs `spacer compact` as before.
// So a strip command or flags that differ cost time, never correctness. The key is written last.
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { tempPath, writeFileAtomic } from './util/files.js';
import { run } from './util/tools.js';

/** The options of `spacer compact` that change its output. */
export interface PrecompactOptions {
  pack: boolean;
  holes: boolean;
  vmm?: string;
}

/** The strip the kvm image rule runs with lib-spacer (Unikraft 0.17 and 0.18). */
export const DEFAULT_STRIP = 'strip -s --remove-section=.spacer.rewrite';

/** Where the precompacted image of `image` goes (spacer-strip.sh looks there). */
export function precompactPath(image: string): string {
  return join(dirname(image), 'spacer', `${basename(image)}.compact`);
}

/** The options line of the key, as spacer-strip.sh writes it from its flags. */
export function optionsLine(o: PrecompactOptions): string {
  return `pack=${o.pack ? 1 : 0} holes=${o.holes ? 1 : 0} vmm=${o.vmm ?? 'qemu'}`;
}

/**
 * The words of a command that needs no shell to run (Unikraft's is `""strip -s
 * --remove-section=.spacer.rewrite`: empty quotes, then plain words), else undefined.
 */
export function plainWords(cmd: string): string[] | undefined {
  const words = cmd
    .trim()
    .split(/\s+/)
    .map((w) => w.replaceAll('""', ''));
  return words[0] && words.every((w) => /^[\w./=,+:@%-]+$/.test(w)) ? words : undefined;
}

/**
 * Strips `dbg` with `strip` (a shell command; the input and `-o OUT` are appended), compacts the
 * copy with `compact` (which logs through `say`) and leaves the three files. Any failure removes
 * them: the image rule then runs `spacer compact`, which reports it.
 */
export async function precompact(
  dbg: string,
  image: string,
  strip: string,
  o: PrecompactOptions,
  compact: (path: string, say: (line: string) => void) => Promise<void>,
): Promise<boolean> {
  const out = precompactPath(image);
  // The key first: an older key must never outlive the file it described.
  const files = [`${out}.key`, `${out}.log`, out];
  for (const f of files) rmSync(f, { force: true });
  const tmp = tempPath(out);
  try {
    const words = plainWords(strip);
    if (words) await run(words[0], [...words.slice(1), dbg, '-o', tmp]);
    else await run('sh', ['-c', `${strip} "$1" -o "$2"`, 'sh', dbg, tmp]);
    const sum = createHash('sha256').update(readFileSync(tmp)).digest('hex');
    const lines: string[] = [];
    await compact(tmp, (line) => lines.push(line));
    renameSync(tmp, out);
    writeFileSync(`${out}.log`, lines.map((l) => `${l}\n`).join(''));
    writeFileAtomic(`${out}.key`, `${sum}\n${optionsLine(o)}\n`, 'product');
    return true;
  } catch {
    for (const f of files) rmSync(f, { force: true });
    return false;
  } finally {
    rmSync(tmp, { force: true });
  }
}
