// What the size of the workspace map costs one relink (issue #14: with 10 000 images the helper's
// time per link should stay within 10 % of that with 100). The bench's own spacer map is grown to
// N images by copies of one of its FaaS images, each with an app variant of its own (as N
// different apps would have), then one app is relinked against it (`spacer link` + `spacer
// finish`, as processes), its code changed each time (two versions in turn), on the map the
// previous link wrote. The map is of the split form (map-store.ts): a relink reads and writes the
// header, its image and its variants.
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { assertConsistent } from '../layout/map-check.js';
import { gc } from '../layout/relayout.js';
import { isApp } from '../layout/platform.js';
import { encodeMap } from '../layout/map-file.js';
import { parseMapFile, removeMap, saveMap } from '../layout/map-store.js';
import type { SpacerMap } from '../layout/map-types.js';
import { objectsFor } from '../workspace/index.js';
import type { Workload } from './build.js';
import type { LayoutPlan } from './layouts.js';
import { appChanged, linkStepOnce, startServer } from './linkstep.js';
import { lap, median, r1 } from './progress.js';
import type { BenchResult, BenchRun } from './types.js';

/** Map sizes of the scaling figures (images). */
export const MAP_SIZES = [100, 1000, 10000];

/**
 * `base` with `n` images: a larger workspace's map keeps `template` and the first others by
 * name (the rest forgotten, as `spacer map gc` would); a smaller one gains copies of `template`
 * named synth-<i>, using its shared variants and, for each µlib it uses in a variant of its own,
 * a new variant of the same sizes used by the copy alone: of its app µlib under a name of the
 * copy's own (app<name>_<i>, as each app of a workspace has its own), of a per-app µlib (the
 * platform, ukboot) under the same name.
 */
export function synthesizeMap(base: SpacerMap, n: number, template: string): SpacerMap {
  const m = structuredClone(base);
  const t = m.images[template];
  if (!t) throw new Error(`bench: no image ${template} in the map to copy`);
  const others = Object.keys(m.images)
    .filter((i) => i !== template)
    .sort();
  if (others.length + 1 > n) gc(m, others.slice(Math.max(0, n - 1)));
  const have = Object.keys(m.images).length;
  for (let i = 0; have + i < n; i++) {
    const name = `synth-${i}`;
    const ulibs: Record<string, string> = {};
    for (const [u, h] of Object.entries(t.ulibs)) {
      const v = m.ulibs[u].variants[h];
      if (v.images.length > 1 || v.slot) {
        v.images.push(name);
        ulibs[u] = h;
        continue;
      }
      const nh = createHash('sha256').update(`${name}\0${u}`).digest('hex').slice(0, 16);
      // Each app of a real workspace has an app µlib of its own name (app<name>), the others a
      // variant of the same µlib (the platform, ukboot built per app).
      const lib = isApp(u) ? `${u}_${i}` : u;
      m.ulibs[lib] ??= { variants: {} };
      m.ulibs[lib].variants[nh] = {
        sizes: { ...v.sizes },
        align: { ...v.align },
        images: [name],
        ...(v.modes ? { modes: [...v.modes] } : {}),
        ...(v.abs_ptr ? { abs_ptr: v.abs_ptr } : {}),
      };
      ulibs[lib] = nh;
    }
    m.images[name] = { ulibs, ...(t.origin ? { origin: { ...t.origin } } : {}) };
  }
  return m;
}

/** Fills result.map_scaling: one relink of a FaaS app against maps of MAP_SIZES images. */
export async function mapScaling(
  run: BenchRun,
  w: Workload,
  q: LayoutPlan,
  result: BenchResult,
): Promise<void> {
  const t = Date.now();
  const base = parseMapFile(q.map!);
  if (!base || w.faas.length < 1) return;
  const app = w.faas[0],
    other = w.faas[1 % w.faas.length];
  const objects = objectsFor(app, w.compiled.normal);
  const dir = join(run.work, 'map-scaling');
  const changed = appChanged(app, objects, objectsFor(other, w.compiled.normal), other, dir);
  // Medians of 15: the machine's noise between two relinks is ±15 %, the target 10 %.
  const reps = run.quick ? 3 : 15;
  // Through the link server when make would use one (its own socket folder; started here).
  const runDir = join(dir, 'run');
  await startServer(runDir);
  const out: NonNullable<BenchResult['map_scaling']> = {};
  // Every map first, then the relinks in rounds over the sizes (side by side: a server warming
  // up, or the machine's noise, weighs on every size alike).
  const maps = new Map<number, { map: string; d: string; images: number; bytes: number }>();
  for (const n of MAP_SIZES) {
    const m = synthesizeMap(base, n, app.name);
    assertConsistent(`bench map of ${n} images`, m);
    const d = join(dir, String(n));
    mkdirSync(d, { recursive: true });
    const map = join(d, 'map.json');
    removeMap(map);
    saveMap(map, undefined, m);
    // As one file of the single-file form: what a link read and wrote whole before the split.
    maps.set(n, {
      map,
      d,
      images: Object.keys(m.images).length,
      bytes: Buffer.byteLength(encodeMap(m)),
    });
  }
  // As in a workspace: each relink finds the map the previous link wrote (a first, unmeasured
  // link takes over the synthesized file), and the app alternates between its two versions.
  const relink = (n: number, objs: string[]) => {
    const { map, d } = maps.get(n)!;
    return linkStepOnce({ image: app.name, objects: objs, dir: d, map, compact: false, runDir });
  };
  for (const n of MAP_SIZES) await relink(n, changed);
  const times = new Map<number, number[]>(MAP_SIZES.map((n) => [n, []]));
  for (let i = 0; i < reps; i++)
    for (const n of MAP_SIZES) {
      const s = await relink(n, i % 2 ? changed : objects);
      times.get(n)!.push(s.link + s.finish);
    }
  for (const n of MAP_SIZES) {
    const m = maps.get(n)!;
    out[String(n)] = {
      images: m.images,
      map_bytes: m.bytes,
      samples: reps,
      helper_ms: r1(median(times.get(n)!)),
    };
    run.log(`bench: map of ${n} images: relink ${r1(median(times.get(n)!))} ms (link + finish)`);
  }
  result.map_scaling = out;
  lap(run.durations, 'map_scaling', t);
}
