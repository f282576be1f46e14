// The whole Spacer link of one image, as one list of passes. The Unikraft glue runs the same
// passes split around make's own link command (`spacer link` before it, `spacer finish` after);
// the example workspace, the demo and the benchmark run them here in one go.
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { execa } from 'execa';
import { SpacerError } from './errors.js';
import { compactImage } from './compact.js';
import { packImage } from './pack.js';
import { writeBootInfo } from './workspace/bootinfo.js';
import {
  checkLayout,
  finishResult,
  hardenStep,
  recordStep,
  rewriteStep,
  verifyStep,
  type FinishResult,
  type FinishState,
} from './finish.js';
import { placeInMap, readObjects, writeScript, type LinkState, type Plan } from './link.js';
import { cacheDirFor, trimCache, useCache } from './cache/store.js';
import { landProduct, tempPath } from './util/files.js';
import type { RewriteStats } from './rewrite.js';

export type Layout = 'default' | 'spacer' | 'spacer-aslr';

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
  /** Keep and reuse analyses in the map's cache (rewrite/cache.ts); default on. */
  cache?: boolean;
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
  /** Milliseconds per pass, by name. */
  passes: Record<string, number>;
  /** The same, summed as the benchmark reports them. */
  times: { plan: number; link: number; finish: number; image: number };
  /** What the post-link rewrite did (spacer layouts). */
  rewrite?: RewriteStats;
}

/** What the post-link passes share: `spacer finish` runs them with only this. */
export interface FinishContext {
  /** The linked ELF64 image and the plan `spacer link` wrote for it. */
  dbg: string;
  planPath: string;
  spacer: boolean;
  /** finish.ts's state, from the layout check on. */
  fin?: FinishState;
  /** Keep analyses in the workspace's cache (rewrite/cache.ts); default on. */
  cache?: boolean;
  /** Milliseconds per pass, by name. */
  times: Record<string, number>;
}

/** What the passes share: the request, then what each pass leaves for the next. */
export interface PassContext extends FinishContext {
  r: ImageRequest;
  out: string;
  elf: string;
  link?: LinkState;
  plan?: Plan;
  script: string;
}

export interface Pass<C extends FinishContext = PassContext> {
  name: string;
  run: (c: C) => Promise<void> | void;
}

const spacerOnly =
  <C extends FinishContext>(f: (c: C) => Promise<void> | void) =>
  (c: C): Promise<void> | void =>
    c.spacer ? f(c) : undefined;

/** The post-link passes, as `spacer finish` runs them on the .dbg (finish.ts). */
export const FINISH_PASSES: readonly Pass<FinishContext>[] = [
  // layout check: every µlib at its slot, before anything touches the image.
  { name: 'layout check', run: spacerOnly((c) => void (c.fin = checkLayout(c.dbg, c.planPath))) },
  // cache: analyses of code already linked at these addresses come from the map's cache.
  {
    name: 'cache',
    run: spacerOnly((c) => useCache(c.cache === false ? undefined : cacheDirFor(c.fin!.plan.map))),
  },
  // rewrite: references leaving a µlib go through its table, so its code pages match everywhere.
  { name: 'rewrite', run: spacerOnly((c) => rewriteStep(c.fin!)) },
  // verify: the rewritten bytes must prove every site reaches what it did before they replace all.
  { name: 'verify', run: spacerOnly((c) => verifyStep(c.fin!)) },
  // harden: in ASLR mode, each page that depends on the seed carries 64 bits of salt from it.
  { name: 'harden', run: spacerOnly((c) => hardenStep(c.fin!)) },
  // record: the plan in the image, so report and explain can attribute its pages to µlibs; the
  // one write of the finished image.
  { name: 'record', run: spacerOnly((c) => recordStep(c.fin!)) },
  // trim: what this link added to the cache counts towards its bound (a gc now and then).
  { name: 'trim', run: spacerOnly(() => trimCache()) },
];

/** The passes of one image, in order. `spacer link` runs the first three, `spacer finish` the
 *  post-link ones, `spacer compact` pack and compact (make runs link, strip and the ELF32 step). */
export const PASSES: readonly Pass[] = [
  // objects: what each µlib holds and needs, read before the map is touched.
  {
    name: 'objects',
    run: spacerOnly(async (c) => void (c.link = await readObjects(linkOptions(c)))),
  },
  // map: every variant gets its place under the map lock, the same in every image.
  { name: 'map', run: spacerOnly(async (c) => void (c.link!.placed = await placeInMap(c.link!))) },
  // script: the aligned linker script, derived from the platform's, and the plan.
  {
    name: 'script',
    run: spacerOnly((c) => void ((c.plan = writeScript(c.link!)), (c.script = c.plan.script))),
  },
  // link: the real GNU linker, with the platform's extension scripts as they are.
  { name: 'link', run: runLinker },
  // layout check, rewrite, verify, harden, record: the post-link passes above.
  ...FINISH_PASSES,
  // strip, pack, compact, ELF32: the bootable file (pack: Spacer layouts only).
  { name: 'image', run: (c) => bootableImage(c.dbg, c.elf, { pack: c.spacer }) },
];

/** `spacer finish`: the post-link passes on a linked image, timed into `times`. */
export async function finish(
  image: string,
  planPath: string,
  times: Record<string, number> = {},
  cache = true,
): Promise<FinishResult> {
  const c: FinishContext = { dbg: image, planPath, spacer: true, times, cache };
  await runPasses(FINISH_PASSES, c);
  return finishResult(c.fin!);
}

function linkOptions(c: PassContext) {
  const r = c.r;
  if (!r.map) throw new SpacerError(`${r.image}: the ${r.layout} layout needs a workspace map`);
  const aslrSeed = r.layout === 'spacer-aslr' ? (r.seed ?? r.image) : undefined;
  return {
    image: r.image,
    lds: r.lds,
    out: `${c.out}.lds`,
    map: r.map,
    objects: r.objects,
    aslrSeed,
    log: r.log,
  };
}

/** Runs `passes` over `c`, timing each. */
export async function runPasses<C extends FinishContext>(
  passes: readonly Pass<C>[],
  c: C,
): Promise<void> {
  for (const p of passes) {
    const t = performance.now();
    await p.run(c);
    c.times[p.name] = (c.times[p.name] ?? 0) + performance.now() - t;
  }
}

// One pass by hand (the CLI's split around make's steps) and `--timings`: util/timing.ts.
export { formatTimings, timed } from './util/timing.js';

export async function buildImage(r: ImageRequest): Promise<BuiltImage> {
  const out = resolve(r.out);
  mkdirSync(dirname(out), { recursive: true });
  const c: PassContext = {
    r,
    out,
    dbg: `${out}.dbg`,
    planPath: `${out}.lds.json`,
    elf: `${out}.elf`,
    spacer: r.layout !== 'default',
    script: r.lds,
    times: {},
    cache: r.cache,
  };
  await runPasses(PASSES, c);
  const t = c.times;
  return {
    image: r.image,
    dbg: c.dbg,
    elf: c.elf,
    plan: c.plan,
    passes: t,
    times: {
      plan: t.objects + t.map + t.script,
      link: t.link,
      finish: FINISH_PASSES.reduce((ms, p) => ms + t[p.name], 0),
      image: t.image,
    },
    rewrite: c.fin?.rewrite,
  };
}

async function runLinker(c: PassContext): Promise<void> {
  const r = c.r;
  const tmp = tempPath(c.dbg);
  try {
    // --emit-relocs keeps the relocations in the image: the rewrite and --explain read them.
    const args = r.linkArgs(r.objects, c.script, r.extraLds, tmp);
    if (c.spacer) args.splice(args.indexOf('-o'), 0, '-Wl,--emit-relocs');
    await execa('gcc', args);
    landProduct(tmp, c.dbg);
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
}

/** strip (+ pack) + ELF32 multiboot image, written atomically. The default layout is not packed:
 *  it stands for the image Unikraft builds without lib-spacer. */
export async function bootableImage(
  dbg: string,
  elf: string,
  opts: { pack?: boolean } = {},
): Promise<void> {
  const stripped = tempPath(elf, 'stripped'),
    tmp = tempPath(elf);
  try {
    // The rewrite record is for `spacer verify` on the .dbg; the image keeps only the plan.
    await execa('strip', ['-s', '--remove-section=.spacer.rewrite', dbg, '-o', stripped]);
    // The file keeps the loaded bytes, not the padding; then one section header per run of µlib
    // sections: the loader reads program headers only.
    if (opts.pack) packImage(stripped);
    compactImage(stripped);
    // As Unikraft's build does: the loaded segments into the platform's boot record.
    writeBootInfo(stripped);
    await execa('objcopy', ['-O', 'elf32-i386', stripped, tmp]);
    landProduct(tmp, elf);
  } finally {
    rmSync(stripped, { force: true });
    rmSync(tmp, { force: true });
  }
}
