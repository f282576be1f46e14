// Building the workload: the example apps and N generated FaaS apps, compiled once per flag set,
// then every image linked in every layout (bench/README.md, steps 1 and 2).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { removeMap } from '../layout/map-store.js';
import { mapRelayout } from '../mapcmd.js';
import { buildImage, type BuiltImage } from '../pipeline.js';
import { pool } from '../util/pool.js';
import { type AppSpec, compileWorkspace, loadApps } from '../workspace/index.js';
import { generateApps, type GeneratedApp } from './generate.js';
import { type Compiled, type LayoutPlan, request } from './layouts.js';
import { fmtDur, lap, Progress } from './progress.js';
import { type BenchLayout, type BenchRun, DCE_CFLAGS } from './types.js';

export interface Workload {
  examples: AppSpec[];
  faas: AppSpec[];
  /** The example apps, then the FaaS apps: the order of every layout's images. */
  all: AppSpec[];
  generated: GeneratedApp[];
  compiled: Compiled;
}

/** Every image of a layout, in the order of Workload.all. */
export type Built = Partial<Record<BenchLayout, BuiltImage[]>>;

/** Generates the FaaS apps and compiles the whole workspace with the default and the DCE flags. */
export async function compileWorkload(run: BenchRun): Promise<Workload> {
  const { N, seed, work, jobs, log } = run;
  const t = Date.now();
  const examples = loadApps();
  const { apps: faas, generated } = generateApps(N, seed, join(work, 'apps'));
  const all = [...examples, ...faas];
  log(
    `bench: ${N} generated FaaS apps (seed ${seed}) + ${examples.length} example apps; work in ${work}`,
  );
  const units = all.length * 3;
  let p = new Progress('compile (default flags)', units, log);
  const normal = await compileWorkspace(join(work, 'objects'), {
    apps: all,
    jobs,
    log: () => p.tick(),
  });
  p = new Progress('compile (DCE flags)', units, log);
  const dce = await compileWorkspace(join(work, 'objects-dce'), {
    apps: all,
    jobs,
    extraCflags: DCE_CFLAGS,
    log: () => p.tick(),
  });
  lap(run.durations, 'compile', t);
  log(
    `bench: compiled ${Object.keys(normal.objects).length} µlib objects per flag set in ${fmtDur(run.durations.compile)}`,
  );
  return { examples, faas, all, generated, compiled: { normal, dce } };
}

/**
 * Links every app in every planned layout: the Spacer layouts in a fixed order (link all,
 * relayout, link all again), one lane per map so the map is deterministic; default and DCE on the
 * remaining workers.
 */
export async function linkAll(run: BenchRun, w: Workload, plans: LayoutPlan[]): Promise<Built> {
  const { work, jobs, log } = run;
  const { all, compiled } = w;
  const t = Date.now();
  const built: Built = {};
  const seqPlans = plans.filter((q) => q.map),
    parPlans = plans.filter((q) => !q.map);
  const totalLinks = all.length * (parPlans.length + 2 * seqPlans.length);
  const lp = new Progress('link', totalLinks, log);
  const imgDir = (l: BenchLayout) => join(work, 'images', l);
  const seqLane = async (q: LayoutPlan) => {
    removeMap(q.map!);
    mkdirSync(join(work, 'maps'), { recursive: true });
    for (let pass = 1; pass <= 2; pass++) {
      const list: BuiltImage[] = [];
      for (const app of all) {
        list.push(await buildImage(request(q, app, compiled, imgDir(q.layout))));
        lp.tick();
      }
      built[q.layout] = list;
      if (pass === 1) {
        const r = await mapRelayout(q.map!);
        log(
          `bench: ${q.layout} map relayout: ${r.shared} shared µlib variants in ${r.groups} groups; linking every app again`,
        );
      }
    }
  };
  const parTasks = parPlans.flatMap((q) => all.map((app, i) => ({ q, app, i })));
  const parLane = async () => {
    for (const q of parPlans) built[q.layout] = new Array(all.length);
    await pool(parTasks, Math.max(1, jobs - seqPlans.length), async ({ q, app, i }) => {
      built[q.layout]![i] = await buildImage(request(q, app, compiled, imgDir(q.layout)));
      lp.tick();
    });
  };
  await Promise.all([parLane(), ...seqPlans.map(seqLane)]);
  log(`bench: linked ${totalLinks} images in ${fmtDur(lap(run.durations, 'link', t))}`);
  return built;
}
