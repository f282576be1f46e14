// Link-step and rewrite overheads (bench/README.md, 'Overheads'): a sample of FaaS apps linked
// again in every layout, one image after the other, after everything else is built (so --jobs does
// not change the figures); the rewrite figures over every FaaS image of the main build.
import { join } from 'node:path';
import { buildImage, type BuiltImage } from '../pipeline.js';
import type { Built, Workload } from './build.js';
import { type LayoutPlan, request } from './layouts.js';
import { lap, median, Progress, r1, r3 } from './progress.js';
import type { BenchLayout, BenchResult, BenchRun, RewriteFigures, TimingFigures } from './types.js';

type Rewrite = NonNullable<BuiltImage['rewrite']>;

/** Fills result.overheads.link, the link ratios and result.overheads.rewrite. */
export async function linkTiming(
  run: BenchRun,
  w: Workload,
  plans: LayoutPlan[],
  built: Built,
  result: BenchResult,
  timingSamples?: number,
): Promise<void> {
  const t = Date.now();
  const samples = w.faas.slice(0, Math.min(run.N, timingSamples ?? (run.quick ? 8 : 20)));
  const times: Partial<Record<BenchLayout, BuiltImage['times'][]>> = {};
  const rewrites: Partial<Record<BenchLayout, Rewrite[]>> = {};
  const tp = new Progress('link timing', samples.length * plans.length, run.log);
  for (const app of samples) {
    for (const q of plans) {
      const b = await buildImage(request(q, app, w.compiled, join(run.work, 'timing', q.layout)));
      (times[q.layout] ??= []).push(b.times);
      rewrites[q.layout] ??= [];
      if (b.rewrite && !b.rewrite.alreadyDone) rewrites[q.layout]!.push(b.rewrite);
      tp.tick();
    }
  }
  for (const q of plans)
    result.overheads.link[q.layout] = linkFigures(times[q.layout]!, rewrites[q.layout]!);
  const L = result.overheads.link;
  if (L.default && L.spacer)
    result.overheads.link_ratio_spacer = r3(L.spacer.link_step_ms / L.default.link_step_ms);
  if (L.default && L['spacer-aslr'])
    result.overheads.link_ratio_spacer_aslr = r3(
      L['spacer-aslr'].link_step_ms / L.default.link_step_ms,
    );
  result.overheads.rewrite = rewriteFigures(result.layouts_supported, built, w.examples.length);
  lap(run.durations, 'link_timing', t);
}

/** One layout's medians: plan, ld, finish, the link step and the helper's share of it. */
function linkFigures(ts: BuiltImage['times'][], rws: Rewrite[]): TimingFigures {
  const get = (k: keyof BuiltImage['times']) => median(ts.map((x) => x[k]));
  // The rewrite runs inside finish (buildImage reports it as rewrite.ms): it is part of the
  // helper.
  const rewrite = rws.length ? median(rws.map((x) => x.ms)) : null;
  const step = median(ts.map((x) => x.plan + x.link + x.finish));
  const helper = median(ts.map((x) => x.plan + x.finish));
  return {
    samples: ts.length,
    plan_ms: r1(get('plan')),
    link_ms: r1(get('link')),
    finish_ms: r1(get('finish')),
    rewrite_ms: rewrite === null ? null : r1(rewrite),
    image_ms: r1(get('image')),
    link_step_ms: r1(step),
    helper_ms: r1(helper),
    helper_share: r3(helper / step),
  };
}

/**
 * Rewrite figures over every FaaS image of the main build (instructions moved, table bytes,
 * time).
 */
function rewriteFigures(
  layouts: BenchLayout[],
  built: Built,
  nEx: number,
): BenchResult['overheads']['rewrite'] {
  const rwLayouts: Partial<Record<BenchLayout, RewriteFigures>> = {};
  for (const l of layouts) {
    const st = built[l]!.slice(nEx)
      .map((b) => b.rewrite)
      .filter((x): x is Rewrite => !!x);
    if (!st.length) continue;
    rwLayouts[l] = {
      images: st.length,
      ms_median: r1(median(st.map((x) => x.ms))),
      sites_median: median(st.map((x) => x.sites)),
      trampolines_median: median(st.map((x) => x.trampolines)),
      table_bytes_median: median(st.map((x) => x.tableBytes)),
      table_bytes_total: st.reduce((a, x) => a + x.tableBytes, 0),
      data_pointers_median: median(st.map((x) => x.dataPointers)),
    };
  }
  return Object.keys(rwLayouts).length
    ? {
        available: true,
        layouts: rwLayouts,
        note: 'per FaaS image of the main build: rewrite time (inside finish), sites, moved instructions (trampolines), indirection-table bytes',
      }
    : {
        available: false,
        layouts: {},
        note: 'buildImage reports no rewrite (BuiltImage.rewrite) yet',
      };
}
