// The benchmark: N generated FaaS unikernels plus the example apps, linked in four layouts
// (default, dce, spacer, spacer-aslr), measured with the page model of docs/metrics.md at 1..N
// instances, under real KSM (loaders and qemu guests) when root, with link, rewrite and runtime
// overheads; written as bench.json, bench.md and bench.svg. Each step lives in its own module:
// build.ts, layouts.ts, model.ts, ksmrun.ts, timing.ts, runtime.ts, targets.ts, report.ts.
import { mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { packageRoot } from '../paths.js';
import { compileWorkload, linkAll } from './build.js';
import { realKsm } from './ksmrun.js';
import { chooseLayouts } from './layouts.js';
import { pageModel } from './model.js';
import { writeReport } from './report.js';
import { runtimeOverhead } from './runtime.js';
import { targets } from './targets.js';
import { linkStep } from './linkstep.js';
import { mapScaling } from './mapscale.js';
import { linkTiming } from './timing.js';
import type { BenchOptions, BenchResult, BenchRun } from './types.js';

export async function runBench(o: BenchOptions = {}): Promise<BenchResult> {
  const T0 = Date.now();
  // The options with their defaults; the output and work folders exist from here on.
  const run = settings(o);
  // The example apps and N FaaS apps, compiled once per flag set (default, DCE).
  const w = await compileWorkload(run);
  // Only the layouts buildImage supports are linked; the others are reported with the reason.
  const choice = await chooseLayouts(run, w.compiled, w.faas[0]);
  // Every image of every layout, Spacer maps built in a fixed order so they are deterministic.
  const built = await linkAll(run, w, choice.plans);
  // P, D and L per instance count: the figures everything else is compared with.
  const { result, scans } = pageModel(run, w, built, choice);
  // Real KSM checks the model on this kernel (when root; otherwise the reason is recorded).
  await realKsm(run, result, built, w.examples.length, scans);
  // What the helper costs at link time, measured after everything else so --jobs does not matter.
  await linkTiming(run, w, choice.plans, built, result, o.timingSamples);
  // The link step as make runs it (CLI processes): cold, warm, and against maps of 100..10 000.
  await linkStep(run, w, choice.plans, result);
  const spacer = choice.plans.find((q) => q.layout === 'spacer');
  if (spacer) await mapScaling(run, w, spacer, result);
  // What the layouts cost at run time: cpu-bench's loop under each.
  await runtimeOverhead(run, w, built, result, o.runtimeRounds);
  // The targets, computed from the figures above.
  result.targets = targets(result);
  run.durations.total = Date.now() - T0;
  // bench.json, bench.svg, bench.md, and where they are.
  writeReport(result, run.log);
  return result;
}

/** The options with their defaults (a bad --apps is one line); creates the two folders. */
function settings(o: BenchOptions): BenchRun {
  const quick = o.quick === true;
  const N = o.apps ?? (quick ? 100 : 1000);
  if (!Number.isSafeInteger(N) || N < 1)
    throw new Error(`bench: --apps must be a whole number of at least 1 (got ${o.apps})`);
  const root = packageRoot();
  const run: BenchRun = {
    quick,
    N,
    seed: o.seed ?? 1,
    guests: Math.min(o.guests ?? 20, N),
    jobs: o.jobs ?? Math.max(1, cpus().length),
    ksm: o.ksm !== false,
    out: resolve(o.out ?? join(root, 'bench', 'results')),
    work: resolve(o.work ?? join(root, 'bench', 'work')),
    log: o.log ?? ((l: string) => process.stderr.write(l + '\n')),
    durations: {},
  };
  mkdirSync(run.out, { recursive: true });
  mkdirSync(run.work, { recursive: true });
  return run;
}

export * from './types.js';
export { targets } from './targets.js';
export { formatBench, formatBenchMarkdown, plot } from './report.js';
export { generateApps, generateApp } from './generate.js';
export { KsmSession, readKsmSettings, ksmUnavailable } from './ksm.js';
