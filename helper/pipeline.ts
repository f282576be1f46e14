// The whole Spacer link of one image, as one list of passes. The Unikraft glue runs the same
// passes split around make's own link command (`spacer link` before it, `spacer finish` after);
// the example workspace, the demo and the benchmark run them here in one go.
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { execa } from 'execa';
import { SpacerError } from './errors.js';
import { compactImage } from './compact.js';
import { packImage } from './pack.js';
import { finish } from './finish.js';
import { link, type Plan } from './link.js';
import type { RewriteStats } from './rewrite.js';

export type Layout = 'default' | 'spacer' | 'spacer-aslr';
export const SPACER_LAYOUTS: readonly Layout[] = ['spacer', 'spacer-aslr'];

export interface ImageRequest {
  image: string;
  /** Per-library objects in link order. */
  objects: string[];
  /** The platform's default script and its extension scripts. */
  lds: string;
  extraLds: string[];
  /** Output prefix: writes <out>.dbg (ELF64) and <out>.elf (ELF32 multiboot). */
  out: string;
  layout: Layout;
  /** Workspace map (spacer layouts). */
  map?: string;
  /** Seed of the ASLR layout (same seed, same image). */
  seed?: string;
  /** Link command: gcc arguments for objects, scripts and output (see workspace/link.ts). */
  linkArgs: (objects: string[], defaultLds: string, extraLds: string[], output: string) => string[];
  log?: (line: string) => void;
}

export interface BuiltImage {
  image: string;
  dbg: string;
  elf: string;
  plan?: Plan;
  /** Milliseconds per pass. */
  times: { plan: number; link: number; finish: number; image: number };
  /** What the post-link rewrite did (spacer layouts). */
  rewrite?: RewriteStats;
}

const now = () => performance.now();

export async function buildImage(r: ImageRequest): Promise<BuiltImage> {
  const out = resolve(r.out);
  mkdirSync(dirname(out), { recursive: true });
  const dbg = `${out}.dbg`,
    elf = `${out}.elf`;
  const times = { plan: 0, link: 0, finish: 0, image: 0 };
  let t = now();
  let script = r.lds;
  let plan: Plan | undefined;
  if (r.layout !== 'default') {
    if (!r.map) throw new SpacerError(`${r.image}: the ${r.layout} layout needs a workspace map`);
    // objects → map → script: every µlib gets its place; the aligned script is derived from the
    // platform's.
    const aslrSeed = r.layout === 'spacer-aslr' ? (r.seed ?? r.image) : undefined;
    plan = await link({
      image: r.image,
      lds: r.lds,
      out: `${out}.lds`,
      map: r.map,
      objects: r.objects,
      aslrSeed,
      log: r.log,
    });
    script = plan.script;
  }
  times.plan = now() - t;
  t = now();
  // link: the real GNU linker, with the platform's extension scripts as they are.
  const tmp = `${dbg}.tmp-${process.pid}`;
  try {
    // --emit-relocs keeps the relocations in the image: the rewrite and --explain read them.
    const args = r.linkArgs(r.objects, script, r.extraLds, tmp);
    if (r.layout !== 'default') args.splice(args.indexOf('-o'), 0, '-Wl,--emit-relocs');
    await execa('gcc', args);
    renameSync(tmp, dbg);
  } catch (e) {
    rmSync(tmp, { force: true });
    const err = e as { stderr?: string };
    const lines = (err.stderr ?? String(e)).split('\n');
    // ld's own message (an ASSERT of the script names the fix), not collect2's summary.
    const first =
      lines.find((l) => /spacer:/.test(l)) ??
      lines.find((l) => /\bld: /.test(l) && !/warning/.test(l)) ??
      lines.find((l) => /error/.test(l)) ??
      String(e);
    throw new SpacerError(`${r.image}: link failed: ${first.trim()}`);
  }
  times.link = now() - t;
  t = now();
  // verify layout → rewrite → verify rewrite → record the plan in the image (spacer finish).
  let rewrite: RewriteStats | undefined;
  if (plan) rewrite = (await finish(dbg, `${out}.lds.json`)).rewrite;
  times.finish = now() - t;
  t = now();
  // image: strip, pack (Spacer layouts: the file keeps the loaded bytes, not the padding) and
  // rewrap as ELF32 multiboot (qemu's -kernel refuses ELF64), as Unikraft does.
  await bootableImage(dbg, elf, { pack: r.layout !== 'default' });
  times.image = now() - t;
  return { image: r.image, dbg, elf, plan, times, rewrite };
}

/** strip (+ pack) + ELF32 multiboot image, written atomically. The default layout is not packed:
 *  it stands for the image Unikraft builds without lib-spacer. */
export async function bootableImage(
  dbg: string,
  elf: string,
  opts: { pack?: boolean } = {},
): Promise<void> {
  const stripped = `${elf}.stripped-${process.pid}`,
    tmp = `${elf}.tmp-${process.pid}`;
  try {
    // The rewrite record is for `spacer verify` on the .dbg; the image keeps only the plan.
    await execa('strip', ['-s', '--remove-section=.spacer.rewrite', dbg, '-o', stripped]);
    // The file keeps the loaded bytes, not the padding; then one section header per run of µlib
    // sections: the loader reads program headers only.
    if (opts.pack) packImage(stripped);
    compactImage(stripped);
    await execa('objcopy', ['-O', 'elf32-i386', stripped, tmp]);
    renameSync(tmp, elf);
  } finally {
    rmSync(stripped, { force: true });
    rmSync(tmp, { force: true });
  }
}
