// The layouts a run links, and how each image of each layout is built: the request to buildImage
// (DCE objects and --gc-sections for 'dce', a map for the Spacer layouts) and the probe that tells
// whether buildImage supports 'spacer-aslr'.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildImage, type BuiltImage, type Layout } from '../pipeline.js';
import {
  type AppSpec,
  type CompiledWorkspace,
  linkCommand,
  objectsFor,
  platformScripts,
} from '../workspace/index.js';
import { BENCH_LAYOUTS, type BenchLayout, type BenchRun } from './types.js';

export interface LayoutPlan {
  layout: BenchLayout;
  pipeline: string;
  dce: boolean;
  map?: string;
}

/** The workspace's objects, compiled once with the default flags and once with DCE's. */
export interface Compiled {
  normal: CompiledWorkspace;
  dce: CompiledWorkspace;
}

/** The layouts buildImage supports (in plot order), the others with the reason, and their plans. */
export interface LayoutChoice {
  layouts: BenchLayout[];
  skipped: Partial<Record<BenchLayout, string>>;
  plans: LayoutPlan[];
}

/** Probes buildImage, logs each skipped layout and plans the links of the others. */
export async function chooseLayouts(
  run: BenchRun,
  compiled: Compiled,
  probeApp: AppSpec,
): Promise<LayoutChoice> {
  const skipped: Partial<Record<BenchLayout, string>> = {};
  const aslr = await probeAslr(run.work, compiled.normal, probeApp);
  if (aslr) skipped['spacer-aslr'] = aslr;
  const layouts = BENCH_LAYOUTS.filter((l) => !skipped[l]);
  for (const [l, why] of Object.entries(skipped)) run.log(`bench: layout ${l} skipped: ${why}`);
  const plans: LayoutPlan[] = layouts.map((l) => ({
    layout: l,
    pipeline: l === 'dce' ? 'default' : l,
    dce: l === 'dce',
    map: l.startsWith('spacer') ? join(run.work, 'maps', `${l}.json`) : undefined,
  }));
  return { layouts, skipped, plans };
}

/**
 * Whether buildImage supports a layout: 'default' and 'spacer' always; DCE is the default layout
 * over DCE objects with --gc-sections; 'spacer-aslr' when a probe link with that layout returns
 * a plan that records an ASLR order (until then buildImage would link it as the default layout).
 */
async function probeAslr(
  work: string,
  compiled: CompiledWorkspace,
  app: AppSpec,
): Promise<string | null> {
  const dir = join(work, 'probe');
  rmSync(dir, { recursive: true, force: true });
  try {
    const b = await buildImage({
      image: app.name,
      objects: objectsFor(app, compiled),
      ...scriptsOf(),
      out: join(dir, app.name),
      layout: 'spacer-aslr' as Layout,
      map: join(dir, 'map.json'),
      linkArgs,
    });
    const plan = b.plan as (BuiltImage['plan'] & { aslr?: unknown }) | undefined;
    if (plan && plan.aslr) return null;
    return "buildImage has no 'spacer-aslr' layout yet (a probe link returned no ASLR plan)";
  } catch (e) {
    return `buildImage rejects the 'spacer-aslr' layout: ${(e as Error).message.split('\n')[0]}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function scriptsOf() {
  const s = platformScripts();
  return { lds: s.defaultLds, extraLds: s.extraLds };
}
const linkArgs = (objects: string[], defaultLds: string, extraLds: string[], output: string) =>
  linkCommand({ objects, defaultLds, extraLds, out: output }, output);
const dceLinkArgs = (objects: string[], defaultLds: string, extraLds: string[], output: string) =>
  linkCommand(
    { objects, defaultLds, extraLds, out: output, extraArgs: ['-Wl,--gc-sections'] },
    output,
  );

export function request(p: LayoutPlan, app: AppSpec, compiled: Compiled, dir: string) {
  return {
    image: app.name,
    objects: objectsFor(app, p.dce ? compiled.dce : compiled.normal),
    ...scriptsOf(),
    out: join(dir, app.name),
    layout: p.pipeline as Layout,
    map: p.map,
    linkArgs: p.dce ? dceLinkArgs : linkArgs,
  };
}
