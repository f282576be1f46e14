// `spacer demo`: the example workspace end to end, without Unikraft. Compiles every µlib once,
// links every app in the default and the Spacer layout, boots every image under qemu, checks
// each prints what its default build prints, and compares the layouts with the page model.
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { writeFileAtomic } from './util/files.js';
import { pool } from './util/pool.js';
import { removeMap } from './layout/map-store.js';
import { mapRelayout } from './mapcmd.js';
import { buildImage, type BuiltImage, type Layout } from './pipeline.js';
import { packImage } from './pack.js';
import { analyzeImages, contentBound, type Report } from './report.js';
import { packageRoot } from './paths.js';
import {
  bootExpecting,
  compileWorkspace,
  linkCommand,
  loadApps,
  objectsFor,
  platformScripts,
  type AppSpec,
  type CheckedBoot,
  type CompiledWorkspace,
  type PlatformScripts,
} from './workspace/index.js';

export const LAYOUTS: Layout[] = ['default', 'spacer', 'spacer-aslr'];

export interface DemoOptions {
  out?: string;
  /** Boot the images (default true). */
  boot?: boolean;
  jobs?: number;
  log?: (line: string) => void;
}

export interface LayoutFigures {
  images: number;
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  distinct_pages: number;
  content_bound_pages: number | null;
  d_over_l: number | null;
  /** L_pg, the page floor (docs/metrics.md) of the Spacer images, applied to every layout. */
  page_floor_pages: number | null;
  /** Mean own pages per image: non-zero pages whose content no other image holds. */
  own_pages_per_image: number;
  elf_bytes: number;
  /** The same images packed (spacer compact --pack; Spacer layouts are packed as built). */
  elf_bytes_packed: number;
  /** Mean pages per image (no sharing) over the default layout's. */
  pages_per_image_ratio: number;
  /**
   * Pairs of apps whose two images keep more distinct pages than the same pair in the default
   * layout.
   */
  pairs_above_default: number;
  outputs_match: boolean | null;
}

export interface DemoResult {
  out: string;
  apps: {
    name: string;
    ulibs: number;
    outputs: Partial<
      Record<
        Layout,
        {
          ok: boolean;
          matches_default: boolean | null;
          boot_ms: number;
          /** Why the boot did not give the expected output (bootFailure), when it did not. */
          failure?: string;
          /**
           * A first boot failed this way and a second one was made (the record is the second's).
           */
          first_boot_failed?: string;
        }
      >
    >;
  }[];
  layouts: Record<string, LayoutFigures>;
  /** Every pair of apps: the distinct non-zero pages of its two images, per layout. */
  pairs: { a: string; b: string; distinct_pages: Partial<Record<Layout, number>> }[];
  reports: Record<string, Report>;
  /** Milliseconds per pass, summed over every image (report: the page model, once). */
  timings: Record<string, number>;
}

/** What the steps of runDemo share: output directory, apps, linker scripts, progress log. */
interface DemoRun {
  out: string;
  apps: AppSpec[];
  scripts: PlatformScripts;
  log: (line: string) => void;
}

/** The images of each layout (in app order) and the milliseconds per pass over every link. */
interface Linked {
  built: Record<string, BuiltImage[]>;
  timings: Record<string, number>;
}

/** The map of one layout, in the demo's output directory. */
const mapOf = (out: string, layout: Layout) => join(out, `${layout}-map.json`);

/** How the demo links an image: the workspace's own link command. */
const linkArgs = (objects: string[], defaultLds: string, extraLds: string[], output: string) =>
  linkCommand({ objects, defaultLds, extraLds, out: output }, output);

/** What an app must print: its expected output file, when it has one. */
const expected = (app: AppSpec) =>
  existsSync(app.expectedOutput) ? readFileSync(app.expectedOutput, 'utf8') : null;

/**
 * Links every app once in `layout`, adding each link's pass times to `timings`. Apps link one
 * after another: the order they reach the map is the order slots are given.
 */
async function linkApps(
  d: DemoRun,
  layout: Layout,
  compiled: CompiledWorkspace,
  timings: Record<string, number>,
): Promise<BuiltImage[]> {
  const { scripts } = d;
  const built: BuiltImage[] = [];
  for (const app of d.apps) {
    const b = await buildImage({
      image: app.name,
      objects: objectsFor(app, compiled),
      lds: scripts.defaultLds,
      extraLds: scripts.extraLds,
      out: join(d.out, layout, app.name),
      layout,
      map: mapOf(d.out, layout),
      seed: `${app.name}-1`,
      linkArgs,
    });
    built.push(b);
    for (const [k, ms] of Object.entries(b.passes)) timings[k] = (timings[k] ?? 0) + ms;
  }
  return built;
}

/**
 * Links every app in every layout. A fresh map per layout for the example workspace keeps the
 * demo reproducible.
 */
async function linkLayouts(d: DemoRun, compiled: CompiledWorkspace): Promise<Linked> {
  for (const l of LAYOUTS) removeMap(mapOf(d.out, l));
  const built: Record<string, BuiltImage[]> = {};
  const timings: Record<string, number> = {};
  for (const layout of LAYOUTS) {
    built[layout] = await linkApps(d, layout, compiled, timings);
    if (layout !== 'default') {
      // A new workspace: once every app has been linked, the map knows which µlibs the apps
      // share; re-plan it so those sit together, and link every app again.
      const r = await mapRelayout(mapOf(d.out, layout));
      d.log(
        `demo: map relayout: ${r.shared} shared µlib variants in ${r.groups} groups; relinking ${r.relink.length} apps`,
      );
      built[layout] = await linkApps(d, layout, compiled, timings);
    }
    d.log(`demo: linked ${d.apps.length} images in the ${layout} layout`);
  }
  return { built, timings };
}

/**
 * Boots every image, `jobs` at a time: each must print its app's expected output, and each
 * Spacer image (of an app without one) what its default build prints.
 */
async function bootLayouts(
  d: DemoRun,
  built: Linked['built'],
  jobs: number,
): Promise<Record<string, CheckedBoot[]>> {
  const { apps, log } = d;
  const outputs: Record<string, CheckedBoot[]> = {};
  for (const layout of LAYOUTS) {
    outputs[layout] = await pool(built[layout], jobs, async (img, i) => {
      const want =
        expected(apps[i]) ?? (layout === 'default' ? null : outputs.default[i].result.output);
      const b = await bootExpecting(img.elf, want, {
        timeoutMs: apps[i].bench ? 120_000 : 60_000,
      });
      log(
        `demo: booted ${layout}/${img.image}: ${b.failure ? `FAILED (${b.failure})` : 'ok'}${b.firstFailure ? ` at the second boot (the first: ${b.firstFailure})` : ''} in ${(b.result.durationMs / 1000).toFixed(1)} s`,
      );
      return b;
    });
  }
  return outputs;
}

/** Each app's boots in every layout: whether it printed what it must and what its default did. */
function appEntries(apps: AppSpec[], outputs: Record<string, CheckedBoot[]>): DemoResult['apps'] {
  return apps.map((app, i) => {
    const entry: DemoResult['apps'][number] = {
      name: app.name,
      ulibs: app.ulibs.length,
      outputs: {},
    };
    for (const layout of LAYOUTS) {
      const b = outputs[layout]?.[i];
      if (!b) continue;
      const r = b.result,
        def = outputs.default[i].result;
      const exp = expected(app);
      entry.outputs[layout] = {
        ok: r.success && (exp === null || r.output === exp),
        matches_default: r.success && def.success && r.output === def.output,
        boot_ms: Math.round(r.durationMs),
        ...(b.failure ? { failure: b.failure } : {}),
        ...(b.firstFailure ? { first_boot_failed: b.firstFailure } : {}),
      };
    }
    return entry;
  });
}

/**
 * Every pair of apps on its own: a layout must not lose to the default for any two images
 * either.
 */
function pairFigures(apps: AppSpec[], built: Linked['built']): DemoResult['pairs'] {
  const pairs: DemoResult['pairs'] = [];
  for (let i = 0; i < apps.length; i++) {
    for (let j = i + 1; j < apps.length; j++) {
      const d = Object.fromEntries(
        LAYOUTS.map((l) => [
          l,
          analyzeImages(
            [built[l][i], built[l][j]].map((b) => ({ path: b.elf, name: b.image })),
            { pairs: false },
          ).distinct_pages,
        ]),
      );
      pairs.push({ a: apps[i].name, b: apps[j].name, distinct_pages: d });
    }
  }
  return pairs;
}

/**
 * The figures of one layout from its page-model report, with its files' sizes and what `result`
 * already holds: the default layout's report, the pairs and the boots (null when not booted).
 */
function layoutFigures(
  layout: Layout,
  rep: Report,
  images: BuiltImage[],
  result: DemoResult,
  booted: boolean,
): LayoutFigures {
  return {
    images: rep.images.length,
    pages: rep.pages,
    nonzero_pages: rep.nonzero_pages,
    zero_pages: rep.zero_pages,
    distinct_pages: rep.distinct_pages,
    content_bound_pages: rep.content_bound_pages,
    d_over_l: rep.d_over_l,
    page_floor_pages: rep.page_floor_pages,
    own_pages_per_image: rep.own_pages_per_image,
    elf_bytes: images.reduce((a, b) => a + statSync(b.elf).size, 0),
    elf_bytes_packed: images.reduce((a, b) => a + packImage(b.elf, { write: false }).after, 0),
    pages_per_image_ratio: Math.round((rep.pages / result.reports.default.pages) * 1000) / 1000,
    pairs_above_default: result.pairs.filter(
      (x) => x.distinct_pages[layout]! > x.distinct_pages.default!,
    ).length,
    outputs_match: !booted
      ? null
      : result.apps.every((a) => a.outputs[layout]?.ok && a.outputs[layout]?.matches_default),
  };
}

export async function runDemo(o: DemoOptions = {}): Promise<DemoResult> {
  const log = o.log ?? (() => {});
  const out = resolve(o.out ?? join(packageRoot(), 'build', 'demo'));
  const apps = loadApps();
  const d: DemoRun = { out, apps, scripts: platformScripts(), log };
  log(`demo: ${apps.length} apps, layouts ${LAYOUTS.join(', ')}, output in ${out}`);
  // Compile every µlib (and variant) once.
  const compiled = await compileWorkspace(join(out, 'objects'));
  log(
    `demo: compiled ${Object.keys(compiled.objects).length} µlib objects (${compiled.built.length} rebuilt)`,
  );
  const { built, timings } = await linkLayouts(d, compiled);
  // Boot every image; each Spacer image must print what its default build prints.
  const outputs = o.boot !== false ? await bootLayouts(d, built, o.jobs ?? 2) : {};
  const result: DemoResult = {
    out,
    apps: appEntries(apps, outputs),
    layouts: {},
    pairs: [],
    reports: {},
    timings,
  };
  const reportStart = performance.now();
  // The page model: the content bound is a property of the workspace, computed from the Spacer
  // images (which record their µlib variants) and applied to both layouts.
  const bound = contentBound(built.spacer.map((b) => b.dbg));
  result.pairs = pairFigures(apps, built);
  for (const layout of LAYOUTS) {
    const rep = analyzeImages(
      built[layout].map((b) => ({ path: b.elf, name: b.image })),
      { bound },
    );
    result.reports[layout] = rep;
    result.layouts[layout] = layoutFigures(layout, rep, built[layout], result, o.boot !== false);
  }
  timings.report = performance.now() - reportStart;
  mkdirSync(out, { recursive: true });
  writeFileAtomic(
    join(out, 'demo.json'),
    JSON.stringify(
      { out, apps: result.apps, layouts: result.layouts, pairs: result.pairs },
      null,
      2,
    ) + '\n',
  );
  return result;
}

export function formatDemo(r: DemoResult): string {
  const lines: string[] = [];
  lines.push('app            µlibs  ' + LAYOUTS.map((l) => `${l} boot`.padEnd(19)).join(''));
  for (const a of r.apps) {
    lines.push(
      `${a.name.padEnd(14)} ${String(a.ulibs).padStart(5)}  ` +
        LAYOUTS.map((l) => {
          const x = a.outputs[l];
          return (
            x
              ? `${x.ok && x.matches_default ? 'same output' : 'DIFFERS'} ${(x.boot_ms / 1000).toFixed(1)}s`
              : '-'
          ).padEnd(19);
        }).join(''),
    );
  }
  lines.push('');
  lines.push(
    'layout     images  pages P  non-zero  distinct D  bound L  D/L    floor L_pg  own/image  P ratio  ELF bytes  (packed)  outputs',
  );
  for (const [l, f] of Object.entries(r.layouts)) {
    lines.push(
      `${l.padEnd(10)} ${String(f.images).padStart(6)}  ${String(f.pages).padStart(7)}  ${String(f.nonzero_pages).padStart(8)}  ` +
        `${String(f.distinct_pages).padStart(10)}  ${String(f.content_bound_pages ?? '-').padStart(7)}  ${(f.d_over_l ?? NaN).toFixed(2).padStart(5)}  ` +
        `${String(f.page_floor_pages ?? '-').padStart(10)}  ${f.own_pages_per_image.toFixed(2).padStart(9)}  ` +
        `${f.pages_per_image_ratio.toFixed(2).padStart(7)}  ` +
        `${String(f.elf_bytes).padStart(9)}  ${String(f.elf_bytes_packed).padStart(8)}  ${f.outputs_match === null ? 'not booted' : f.outputs_match ? 'all match' : 'MISMATCH'}`,
    );
  }
  lines.push(
    '(packed: the same images with the padding left out of the file, as Spacer writes its own; the default layout is the file ld writes.)',
  );
  if (r.pairs.length) {
    lines.push(
      `pairs of apps (${r.pairs.length}): ` +
        Object.entries(r.layouts)
          .filter(([l]) => l !== 'default')
          .map(
            ([l, f]) =>
              `${l} keeps more distinct pages than the default for ${f.pairs_above_default}`,
          )
          .join(', '),
    );
  }
  lines.push('');
  lines.push(`Images in ${r.out}/<layout>/<app>.elf, figures in ${r.out}/demo.json`);
  return lines.join('\n');
}
