// The benchmark: N generated FaaS unikernels plus the example apps, linked in four layouts
// (default, dce, spacer, spacer-aslr), measured with the page model of docs/metrics.md at 1..N
// instances, under real KSM (loaders and qemu guests) when root, with link, rewrite and runtime
// overheads; written as bench.json, bench.md and bench.svg.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { execa } from 'execa';
import { mapRelayout } from '../mapcmd.js';
import { packageRoot } from '../paths.js';
import { scanPages } from '../pages.js';
import { buildImage, type BuiltImage, type Layout } from '../pipeline.js';
import { packImage } from '../pack.js';
import {
  analyzeImages,
  contentBound,
  contentInputs,
  loadImage,
  type ContentInputs,
} from '../report.js';
import {
  type AppSpec,
  bootFailure,
  bootImage,
  type BootResult,
  compileWorkspace,
  type CompiledWorkspace,
  linkCommand,
  loadApps,
  objectsFor,
  platformScripts,
  qemuArgs,
} from '../workspace/index.js';
import { generateApps } from './generate.js';
import { type KsmCounters, KsmSession, ksmUnavailable, readKsmSettings } from './ksm.js';
import { plotSvg } from './svg.js';

/**
 * Every layout the benchmark knows, in plot order. Layouts buildImage does not support yet are
 * skipped (and said so).
 */
export const BENCH_LAYOUTS = ['default', 'dce', 'spacer', 'spacer-aslr'] as const;
export type BenchLayout = (typeof BENCH_LAYOUTS)[number];
/** Instance counts of the curves (those ≤ N, and N). */
export const CHECKPOINTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
/** DCE as Unikraft's CONFIG_OPTIMIZE_DEADELIM: per-function/data sections, then --gc-sections. */
export const DCE_CFLAGS = ['-ffunction-sections', '-fdata-sections'];
const COLORS: Record<BenchLayout, string> = {
  default: '#d62728',
  dce: '#ff7f0e',
  spacer: '#1f77b4',
  'spacer-aslr': '#2ca02c',
};
const PAGE = 4096;
const MiB = 1 << 20;
/** cpu-bench's serial lines before and after its SHA-256 loop (example/apps/cpu-bench/main.c). */
const RUNTIME_MARKS = ['cpu-bench: start', 'cpu-bench: digest'];

export interface BenchOptions {
  /** Generated FaaS apps (default 1000; 100 with quick). */
  apps?: number;
  quick?: boolean;
  /** Where bench.json, bench.md and bench.svg go (default bench/results). */
  out?: string;
  /** Objects, images, maps, loaders (default bench/work). */
  work?: string;
  /** Run real KSM when possible (default true). */
  ksm?: boolean;
  /** qemu guests per layout under KSM (default 20). */
  guests?: number;
  seed?: number;
  /** Parallel compile/link jobs (default: CPUs). */
  jobs?: number;
  /** cpu-bench boots per layout (default 5, quick 3). */
  runtimeRounds?: number;
  /** Apps linked side by side for the link-time figures (default 20, quick 8). */
  timingSamples?: number;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

export interface CurvePoint {
  instances: number;
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  distinct_pages: number;
  memory_mib: number;
  content_bound_pages: number | null;
  elf_bytes: number;
  /** The same images packed (spacer compact --pack); Spacer layouts are packed as built. */
  elf_bytes_packed?: number;
}

export interface KsmFigures {
  pages_shared: number;
  pages_sharing: number;
  pages_unshared: number;
  zero_pages: number;
  general_profit: number | null;
  converged: boolean;
  full_scans: number;
  ms: number;
  /** The model: D, and what KSM keeps given max_page_sharing (Σ over contents of ⌈m/max⌉). */
  model_distinct_pages: number;
  model_expected_kept: number;
  model_zero_pages: number;
  /** (pages_shared + pages_unshared − expected) / expected, in %. */
  deviation_pct: number;
  model_agrees: boolean;
}

export interface GuestFigures {
  guests: number;
  alive: number;
  pages_shared: number;
  pages_sharing: number;
  pages_unshared: number;
  zero_pages: number;
  general_profit: number | null;
  converged: boolean;
  ms: number;
  /**
   * D of the page model for the same images, for comparison (guests also hold their RAM, BIOS, page
   * tables).
   */
  model_distinct_pages: number;
  memory_mib: number;
  error?: string;
}

/** The figures at N instances: those of the curve, and more. */
export interface LayoutFigures extends CurvePoint {
  d_over_l: number | null;
  /** Distinct pages of the whole workspace (the N FaaS apps and the example apps). */
  workspace_images: number;
  workspace_distinct_pages: number;
  ksm?: KsmFigures;
  guests?: GuestFigures;
}

export interface TimingFigures {
  samples: number;
  /** Medians in ms. */
  plan_ms: number;
  link_ms: number;
  finish_ms: number;
  rewrite_ms: number | null;
  image_ms: number;
  /** plan + link + finish (finish includes the rewrite): the link step as the build runs it. */
  link_step_ms: number;
  /** plan + finish: the helper's share of it. */
  helper_ms: number;
  helper_share: number;
}

export interface RewriteFigures {
  images: number;
  ms_median: number;
  sites_median: number;
  /** Instructions moved to the indirection tables. */
  trampolines_median: number;
  table_bytes_median: number;
  table_bytes_total: number;
  /**
   * Data relocations pointing outside the µlib (not rewritable; their pages differ between images).
   */
  data_pointers_median: number;
}

export interface Target {
  id: string;
  what: string;
  value: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  note?: string;
}

export interface BenchResult {
  schema: 1;
  options: { apps: number; seed: number; guests: number; quick: boolean; jobs: number };
  machine: { cpus: number; kernel: string; accel: 'tcg' };
  layouts_supported: BenchLayout[];
  layouts_skipped: Partial<Record<BenchLayout, string>>;
  workload: {
    faas_apps: number;
    example_apps: string[];
    ulib_mix: Record<string, number>;
    nolibc_full: number;
  };
  layouts: Partial<Record<BenchLayout, LayoutFigures>>;
  curves: Partial<Record<BenchLayout, CurvePoint[]>>;
  ksm: {
    ran: boolean;
    reason?: string;
    settings_before?: Record<string, string>;
    settings_after?: Record<string, string>;
    settings_restored?: boolean;
    max_page_sharing?: number;
  };
  overheads: {
    link: Partial<Record<BenchLayout, TimingFigures>>;
    /**
     * Link step with the helper (spacer) over the link without it (default), medians of one run.
     */
    link_ratio_spacer: number | null;
    link_ratio_spacer_aslr: number | null;
    rewrite: {
      available: boolean;
      note: string;
      layouts: Partial<Record<BenchLayout, RewriteFigures>>;
    };
    runtime: {
      app: string;
      rounds: number;
      accel: 'tcg';
      ms_min: Partial<Record<BenchLayout, number>>;
      ms_median: Partial<Record<BenchLayout, number>>;
      ms_all: Partial<Record<BenchLayout, number[]>>;
      ratio: Partial<Record<BenchLayout, number>>;
      ratio_median: Partial<Record<BenchLayout, number>>;
      all_ok: boolean;
      note: string;
      /** Boots that failed once and were made again (why each failed), if any. */
      retried?: string[];
    } | null;
  };
  durations_ms: Record<string, number>;
  targets: Target[];
  out: string;
}

// ---------------------------------------------------------------------------------------------

const median = (xs: number[]) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const r3 = (x: number) => Math.round(x * 1000) / 1000;
const r1 = (x: number) => Math.round(x * 10) / 10;
const fmtDur = (ms: number) =>
  ms >= 60_000
    ? `${Math.floor(ms / 60_000)}m${String(Math.round((ms % 60_000) / 1000)).padStart(2, '0')}s`
    : `${(ms / 1000).toFixed(1)}s`;

class Progress {
  private done = 0;
  private last = 0;
  private readonly t0 = Date.now();
  constructor(
    private readonly what: string,
    private readonly total: number,
    private readonly log: (l: string) => void,
  ) {}
  tick(n = 1): void {
    this.done += n;
    const now = Date.now();
    if (now - this.last < 3000 && this.done < this.total) return;
    this.last = now;
    const el = now - this.t0,
      rate = this.done / Math.max(el, 1);
    const eta = this.done ? (this.total - this.done) / rate : NaN;
    this.log(
      `bench: ${this.what} ${this.done}/${this.total} (${Math.round((100 * this.done) / this.total)} %), ${fmtDur(el)} elapsed` +
        (this.done < this.total && Number.isFinite(eta) ? `, ETA ${fmtDur(eta)}` : ''),
    );
  }
}

async function pool<T>(
  items: T[],
  jobs: number,
  fn: (x: T, i: number) => Promise<void>,
): Promise<void> {
  let next = 0,
    failed: unknown;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(jobs, items.length)) }, async () => {
      while (failed === undefined && next < items.length) {
        const i = next++;
        try {
          await fn(items[i], i);
        } catch (e) {
          failed ??= e;
        }
      }
    }),
  );
  if (failed !== undefined) throw failed;
}

// ---------------------------------------------------------------------------------------------
// Layouts

interface LayoutPlan {
  layout: BenchLayout;
  pipeline: string;
  dce: boolean;
  map?: string;
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

function request(
  p: LayoutPlan,
  app: AppSpec,
  compiled: { normal: CompiledWorkspace; dce: CompiledWorkspace },
  dir: string,
) {
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

// ---------------------------------------------------------------------------------------------
// Page model

interface Scanned {
  pages: number;
  zero: number;
  ids: Int32Array;
  elfBytes: number;
}

/** Scans every image of a layout once; page contents become small ids (per layout). */
function scanLayout(paths: string[], onEach: () => void): { scans: Scanned[]; contents: number } {
  const intern = new Map<string, number>();
  const scans = paths.map((p) => {
    const scan = scanPages(loadImage(p));
    const ids = new Int32Array(scan.nonzero.size);
    let k = 0;
    for (const h of scan.nonzero.values()) {
      let id = intern.get(h);
      if (id === undefined) {
        id = intern.size;
        intern.set(h, id);
      }
      ids[k++] = id;
    }
    onEach();
    return { pages: scan.pages, zero: scan.zeroPages, ids, elfBytes: statSync(p).size };
  });
  return { scans, contents: intern.size };
}

function curve(
  scans: Scanned[],
  checkpoints: number[],
  boundAt: (k: number) => number | null,
): CurvePoint[] {
  const seen = new Set<number>();
  const out: CurvePoint[] = [];
  let pages = 0,
    zero = 0,
    elf = 0,
    next = 0;
  scans.forEach((s, i) => {
    pages += s.pages;
    zero += s.zero;
    elf += s.elfBytes;
    for (const id of s.ids) seen.add(id);
    if (checkpoints[next] === i + 1) {
      next++;
      out.push({
        instances: i + 1,
        pages,
        nonzero_pages: pages - zero,
        zero_pages: zero,
        distinct_pages: seen.size,
        memory_mib: r3((seen.size * PAGE) / MiB),
        content_bound_pages: boundAt(i + 1),
        elf_bytes: elf,
      });
    }
  });
  return out;
}

/** What KSM keeps for these images (one instance each): Σ over contents of ⌈m / maxSharing⌉. */
function ksmExpectation(scans: Scanned[], maxSharing: number) {
  const m = new Map<number, number>();
  let zero = 0;
  for (const s of scans) {
    zero += s.zero;
    for (const id of s.ids) m.set(id, (m.get(id) ?? 0) + 1);
  }
  let kept = 0;
  for (const c of m.values()) kept += Math.ceil(c / maxSharing);
  return { distinct: m.size, kept, zero };
}

// ---------------------------------------------------------------------------------------------
// Processes under KSM

function spawnReady(
  cmd: string,
  args: string[],
  ready: RegExp,
  timeoutMs: number,
): Promise<ChildProcess> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '',
      err = '';
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      rej(
        new Error(
          `${cmd} ${args.join(' ').slice(0, 120)}: not ready after ${timeoutMs} ms; output: ${out.slice(-200)}`,
        ),
      );
    }, timeoutMs);
    p.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        res(p);
      }
    });
    p.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    p.on('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    p.on('exit', (code, sig) => {
      clearTimeout(timer);
      rej(
        new Error(
          `${cmd} exited (${code ?? sig}) before it was ready: ${(err || out).trim().slice(-300)}`,
        ),
      );
    });
  });
}

async function killAll(procs: ChildProcess[]): Promise<void> {
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((res) => {
          if (p.exitCode !== null || p.signalCode !== null) return res();
          p.once('exit', () => res());
          p.kill('SIGKILL');
        }),
    ),
  );
  procs.length = 0;
}

async function buildTools(work: string): Promise<{ loader: string; nothp: string }> {
  const bin = join(work, 'bin');
  mkdirSync(bin, { recursive: true });
  const src = join(packageRoot(), 'bench');
  const out = { loader: join(bin, 'loader'), nothp: join(bin, 'nothp') };
  for (const [name, exe] of Object.entries(out)) {
    await execa('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', exe, join(src, `${name}.c`)]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export async function runBench(o: BenchOptions = {}): Promise<BenchResult> {
  const T0 = Date.now();
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const quick = o.quick === true;
  const N = o.apps ?? (quick ? 100 : 1000);
  if (!Number.isSafeInteger(N) || N < 1)
    throw new Error(`bench: --apps must be a whole number of at least 1 (got ${o.apps})`);
  const seed = o.seed ?? 1;
  const guests = Math.min(o.guests ?? 20, N);
  const jobs = o.jobs ?? Math.max(1, cpus().length);
  const root = packageRoot();
  const out = resolve(o.out ?? join(root, 'bench', 'results'));
  const work = resolve(o.work ?? join(root, 'bench', 'work'));
  const durations: Record<string, number> = {};
  const lap = (k: string, t: number) => {
    durations[k] = Math.round(Date.now() - t);
  };
  mkdirSync(out, { recursive: true });
  mkdirSync(work, { recursive: true });

  // --- Workload: the example apps and N generated FaaS apps, compiled once per flag set.
  let t = Date.now();
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
  const compiled = { normal, dce };
  lap('compile', t);
  log(
    `bench: compiled ${Object.keys(normal.objects).length} µlib objects per flag set in ${fmtDur(durations.compile)}`,
  );

  // --- Which layouts buildImage supports.
  const skipped: Partial<Record<BenchLayout, string>> = {};
  const aslr = await probeAslr(work, normal, faas[0]);
  if (aslr) skipped['spacer-aslr'] = aslr;
  const layouts = BENCH_LAYOUTS.filter((l) => !skipped[l]);
  for (const [l, why] of Object.entries(skipped)) log(`bench: layout ${l} skipped: ${why}`);
  const plans: LayoutPlan[] = layouts.map((l) => ({
    layout: l,
    pipeline: l === 'dce' ? 'default' : l,
    dce: l === 'dce',
    map: l.startsWith('spacer') ? join(work, 'maps', `${l}.json`) : undefined,
  }));

  // --- Link: spacer layouts in a fixed order (link all, relayout, link all again), one lane per
  // map; default and DCE on the remaining workers.
  t = Date.now();
  const built: Partial<Record<BenchLayout, BuiltImage[]>> = {};
  const seqPlans = plans.filter((q) => q.map),
    parPlans = plans.filter((q) => !q.map);
  const totalLinks = all.length * (parPlans.length + 2 * seqPlans.length);
  const lp = new Progress('link', totalLinks, log);
  const imgDir = (l: BenchLayout) => join(work, 'images', l);
  const seqLane = async (q: LayoutPlan) => {
    rmSync(q.map!, { force: true });
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
  lap('link', t);
  log(`bench: linked ${totalLinks} images in ${fmtDur(durations.link)}`);

  // --- Page model: every image scanned once; curves over the first k FaaS apps.
  t = Date.now();
  const nEx = examples.length;
  const checkpoints = [...new Set([...CHECKPOINTS.filter((k) => k <= N), N])].sort((a, b) => a - b);
  const sp = new Progress('page model', layouts.length * all.length, log);
  const scans: Partial<Record<BenchLayout, Scanned[]>> = {};
  const workspaceDistinct: Partial<Record<BenchLayout, number>> = {};
  for (const l of layouts) {
    const r = scanLayout(
      built[l]!.map((b) => b.elf),
      () => sp.tick(),
    );
    scans[l] = r.scans.slice(nEx);
    workspaceDistinct[l] = r.contents;
  }
  // The content bound is a property of the workspace: from the Spacer images (their plans), for
  // every layout.
  const spacerInputs: ContentInputs[] | null = built.spacer
    ? built.spacer.slice(nEx).map((b) => contentInputs(loadImage(b.dbg), b.image))
    : null;
  const boundCache = new Map<number, number | null>();
  const boundAt = (k: number) => {
    if (!spacerInputs) return null;
    if (!boundCache.has(k)) boundCache.set(k, contentBound(spacerInputs.slice(0, k)).pages);
    return boundCache.get(k)!;
  };
  const result: BenchResult = {
    schema: 1,
    options: { apps: N, seed, guests, quick, jobs },
    machine: { cpus: cpus().length, kernel: release(), accel: 'tcg' },
    layouts_supported: layouts,
    layouts_skipped: skipped,
    workload: {
      faas_apps: N,
      example_apps: examples.map((a) => a.name),
      ulib_mix: Object.fromEntries(
        [...new Set(generated.flatMap((g) => g.libs))]
          .sort()
          .map((l) => [l, generated.filter((g) => g.libs.includes(l)).length]),
      ),
      nolibc_full: generated.filter((g) => g.variants.nolibc === 'full').length,
    },
    layouts: {},
    curves: {},
    ksm: { ran: false },
    overheads: {
      link: {},
      link_ratio_spacer: null,
      link_ratio_spacer_aslr: null,
      rewrite: { available: false, note: '', layouts: {} },
      runtime: null,
    },
    durations_ms: durations,
    targets: [],
    out,
  };
  const bound = spacerInputs ? contentBound(spacerInputs) : undefined;
  for (const l of layouts) {
    result.curves[l] = curve(scans[l]!, checkpoints, boundAt);
    // The headline figures through the same code as `spacer report` (a cross-check of the curves).
    const rep = analyzeImages(
      built[l]!.slice(nEx).map((b) => ({ path: b.elf, name: b.image })),
      { pairs: false, bound },
    );
    const last = result.curves[l]!.at(-1)!;
    if (rep.distinct_pages !== last.distinct_pages || rep.pages !== last.pages) {
      throw new Error(
        `bench: ${l}: the incremental page model (D ${last.distinct_pages}, P ${last.pages}) disagrees with analyzeImages (D ${rep.distinct_pages}, P ${rep.pages})`,
      );
    }
    result.layouts[l] = {
      instances: rep.instances,
      pages: rep.pages,
      nonzero_pages: rep.nonzero_pages,
      zero_pages: rep.zero_pages,
      distinct_pages: rep.distinct_pages,
      memory_mib: r3((rep.distinct_pages * PAGE) / MiB),
      content_bound_pages: rep.content_bound_pages,
      d_over_l: rep.d_over_l,
      elf_bytes: last.elf_bytes,
      elf_bytes_packed: built[l]!.slice(nEx).reduce(
        (n, b) => n + packImage(b.elf, { write: false }).after,
        0,
      ),
      workspace_images: all.length,
      workspace_distinct_pages: workspaceDistinct[l]!,
    };
  }
  lap('model', t);

  // --- Real KSM: loaders (the model, exactly) and qemu guests.
  const why = o.ksm === false ? 'disabled with --no-ksm' : ksmUnavailable();
  if (why) {
    result.ksm = { ran: false, reason: why };
    log(`bench: real KSM not run: ${why}; the page model alone is reported`);
  } else {
    t = Date.now();
    const tools = await buildTools(work);
    const before = readKsmSettings();
    const maxSharing = Number(before.max_page_sharing ?? 256) || 256;
    result.ksm = { ran: true, settings_before: before, max_page_sharing: maxSharing };
    const procs: ChildProcess[] = [];
    const session = new KsmSession();
    session.onClose(() => {
      for (const c of procs) c.kill('SIGKILL');
    });
    try {
      for (const l of layouts) {
        const images = built[l]!.slice(nEx);
        const kp = new Progress(`KSM ${l}: loaders`, images.length, log);
        await pool(images, 16, async (b) => {
          procs.push(await spawnReady(tools.loader, [b.elf], /^ready \d+/m, 60_000));
          kp.tick();
        });
        const exp = ksmExpectation(scans[l]!, maxSharing);
        log(`bench: KSM ${l}: ${images.length} loaders ready, waiting for convergence`);
        const c = await session.converge({ timeoutMs: 900_000 });
        await killAll(procs);
        session.unmergeAll();
        const kept = c.counters.pages_shared + c.counters.pages_unshared;
        const dev = exp.kept ? ((kept - exp.kept) / exp.kept) * 100 : 0;
        result.layouts[l]!.ksm = {
          ...pick(c.counters),
          converged: c.converged,
          full_scans: c.full_scans,
          ms: c.ms,
          model_distinct_pages: exp.distinct,
          model_expected_kept: exp.kept,
          model_zero_pages: exp.zero,
          deviation_pct: r3(dev),
          model_agrees: c.converged && Math.abs(dev) <= 1,
        };
        log(
          `bench: KSM ${l}: shared ${c.counters.pages_shared} + unshared ${c.counters.pages_unshared} = ${kept}, model ${exp.kept} (D ${exp.distinct}); sharing ${c.counters.pages_sharing}, zero ${c.counters.zero_pages} (model ${exp.zero}); ${c.converged ? 'converged' : 'NOT converged'} in ${fmtDur(c.ms)}`,
        );
      }
      if (guests > 0) {
        for (const l of layouts) {
          const images = built[l]!.slice(nEx, nEx + guests);
          const g: GuestFigures = {
            guests: images.length,
            alive: 0,
            pages_shared: 0,
            pages_sharing: 0,
            pages_unshared: 0,
            zero_pages: 0,
            general_profit: null,
            converged: false,
            ms: 0,
            model_distinct_pages: ksmExpectation(scans[l]!.slice(0, guests), maxSharing).distinct,
            memory_mib: 0,
          };
          try {
            const gp = new Progress(`KSM ${l}: qemu guests`, images.length, log);
            await pool(images, 4, async (b) => {
              procs.push(
                await spawnReady(
                  tools.nothp,
                  ['qemu-system-x86_64', ...qemuArgs(b.elf, { extraArgs: ['-append', 'stay'] })],
                  /stay: halted/,
                  120_000,
                ),
              );
              g.alive++;
              gp.tick();
            });
            const c = await session.converge({ timeoutMs: 900_000 });
            Object.assign(g, pick(c.counters), {
              converged: c.converged,
              ms: c.ms,
              memory_mib: r3(((c.counters.pages_shared + c.counters.pages_unshared) * PAGE) / MiB),
            });
            log(
              `bench: KSM ${l}: ${g.alive} guests: shared ${g.pages_shared} + unshared ${g.pages_unshared}, sharing ${g.pages_sharing}, zero ${g.zero_pages}; ${c.converged ? 'converged' : 'NOT converged'} in ${fmtDur(c.ms)}`,
            );
          } catch (e) {
            g.error = (e as Error).message.split('\n')[0];
            log(`bench: KSM ${l}: guests failed: ${g.error}`);
          } finally {
            await killAll(procs);
            session.unmergeAll();
          }
          result.layouts[l]!.guests = g;
        }
      }
    } finally {
      await killAll(procs);
      session.close();
    }
    const after = readKsmSettings();
    result.ksm.settings_after = after;
    result.ksm.settings_restored = JSON.stringify(after) === JSON.stringify(before);
    lap('ksm', t);
  }

  // --- Overheads: link step with and without the helper, side by side in one run.
  t = Date.now();
  const samples = faas.slice(0, Math.min(N, o.timingSamples ?? (quick ? 8 : 20)));
  const times: Partial<Record<BenchLayout, BuiltImage['times'][]>> = {};
  const rewrites: Partial<Record<BenchLayout, NonNullable<BuiltImage['rewrite']>[]>> = {};
  const tp = new Progress('link timing', samples.length * plans.length, log);
  for (const app of samples) {
    for (const q of plans) {
      const b = await buildImage(request(q, app, compiled, join(work, 'timing', q.layout)));
      (times[q.layout] ??= []).push(b.times);
      rewrites[q.layout] ??= [];
      if (b.rewrite && !b.rewrite.alreadyDone) rewrites[q.layout]!.push(b.rewrite);
      tp.tick();
    }
  }
  for (const q of plans) {
    const ts = times[q.layout]!;
    const get = (k: keyof BuiltImage['times']) => median(ts.map((x) => x[k]));
    // The rewrite runs inside finish (buildImage reports it as rewrite.ms): it is part of the
    // helper.
    const rws = rewrites[q.layout]!;
    const rewrite = rws.length ? median(rws.map((x) => x.ms)) : null;
    const step = median(ts.map((x) => x.plan + x.link + x.finish));
    const helper = median(ts.map((x) => x.plan + x.finish));
    result.overheads.link[q.layout] = {
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
  const L = result.overheads.link;
  if (L.default && L.spacer)
    result.overheads.link_ratio_spacer = r3(L.spacer.link_step_ms / L.default.link_step_ms);
  if (L.default && L['spacer-aslr'])
    result.overheads.link_ratio_spacer_aslr = r3(
      L['spacer-aslr'].link_step_ms / L.default.link_step_ms,
    );
  // Rewrite figures over every FaaS image of the main build (instructions moved, table bytes,
  // time).
  const rwLayouts: Partial<Record<BenchLayout, RewriteFigures>> = {};
  for (const l of layouts) {
    const st = built[l]!.slice(nEx)
      .map((b) => b.rewrite)
      .filter((x): x is NonNullable<BuiltImage['rewrite']> => !!x);
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
  result.overheads.rewrite = Object.keys(rwLayouts).length
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
  lap('link_timing', t);

  // --- Runtime: cpu-bench booted alternately in each layout; its SHA-256 loop timed from the
  // serial
  // port (the guest prints a line before and after it), ratio of the fastest runs.
  t = Date.now();
  const benchIdx = examples.findIndex((a) => a.bench);
  const rtLayouts = layouts.filter((l) => l === 'default' || l.startsWith('spacer'));
  if (benchIdx >= 0 && rtLayouts.length > 1) {
    const rounds = o.runtimeRounds ?? (quick ? 9 : 15);
    const ms: Partial<Record<BenchLayout, number[]>> = {};
    let ok = true;
    const outputs = new Set<string>();
    const retried: string[] = [];
    // A boot that exited well and printed both timing lines.
    const timed = (x: BootResult) =>
      x.success &&
      x.markMs?.length === RUNTIME_MARKS.length &&
      x.markMs.every((v) => v !== undefined);
    const rp = new Progress('runtime (cpu-bench boots)', rounds * rtLayouts.length, log);
    for (let r = 0; r < rounds; r++) {
      // The order rotates every round: no layout always boots first (a cold start) or last.
      for (const l of rtLayouts.map((_, k) => rtLayouts[(k + r) % rtLayouts.length])) {
        const boot = () =>
          bootImage(built[l]![benchIdx].elf, { timeoutMs: 300_000, marks: RUNTIME_MARKS });
        let b = await boot();
        if (!timed(b)) {
          // The guest is deterministic: a boot that fails once and not again is the host's; say so.
          retried.push(
            `${l}, round ${r + 1}: ${bootFailure(b, null) ?? 'a timing line is missing'}`,
          );
          b = await boot();
        }
        const [from, to] = b.markMs ?? [];
        ok &&= timed(b);
        outputs.add(b.output);
        (ms[l] ??= []).push(timed(b) ? to! - from! : b.durationMs);
        rp.tick();
      }
    }
    const stat = (f: (v: number[]) => number) =>
      Object.fromEntries(rtLayouts.map((l) => [l, r1(f(ms[l]!))])) as Partial<
        Record<BenchLayout, number>
      >;
    const min = stat((v) => Math.min(...v)),
      med = stat(median);
    const ratio = (x: Partial<Record<BenchLayout, number>>) =>
      Object.fromEntries(
        rtLayouts.filter((l) => l !== 'default').map((l) => [l, r3(x[l]! / x.default!)]),
      );
    result.overheads.runtime = {
      app: examples[benchIdx].name,
      rounds,
      accel: 'tcg',
      ms_min: min,
      ms_median: med,
      ms_all: Object.fromEntries(rtLayouts.map((l) => [l, ms[l]!.map(r1)])),
      ratio: ratio(min),
      ratio_median: ratio(med),
      all_ok: ok && outputs.size === 1,
      ...(retried.length ? { retried } : {}),
      note:
        'the SHA-256 loop of cpu-bench (600 000 rounds), timed between its two serial lines under TCG, layouts alternated in a rotating order; ' +
        "ratio: fastest run over the default's fastest (other load on the host only ever slows a run down; the medians are given too). " +
        'TCG translates code per block, so this measures the translated code, not native execution',
    };
  }
  lap('runtime', t);

  result.targets = targets(result);
  durations.total = Date.now() - T0;

  // --- Output.
  writeFileSync(join(out, 'bench.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(out, 'bench.svg'), plot(result));
  writeFileSync(join(out, 'bench.md'), formatBenchMarkdown(result));
  log(
    `bench: done in ${fmtDur(durations.total)}; figures in ${relative(process.cwd(), out) || '.'}/bench.{json,md,svg}`,
  );
  return result;
}

function pick(c: KsmCounters) {
  return {
    pages_shared: c.pages_shared,
    pages_sharing: c.pages_sharing,
    pages_unshared: c.pages_unshared,
    zero_pages: c.zero_pages,
    general_profit: c.general_profit,
  };
}

// ---------------------------------------------------------------------------------------------
// Targets (from the issue), computed, never assumed.

export function targets(r: BenchResult): Target[] {
  const out: Target[] = [];
  const lay = r.layouts;
  const N = r.options.apps;
  const at = N === 1000 ? 'at N=1000' : `at N=${N} (the issue sets N=1000)`;
  if (lay.spacer && lay.dce) {
    const ratio = lay.spacer.distinct_pages / lay.dce.distinct_pages;
    out.push({
      id: 'spacer_vs_dce',
      what: `Spacer distinct pages ≤ 1/3 of DCE's ${at}`,
      value: `${lay.spacer.distinct_pages} / ${lay.dce.distinct_pages} = ${ratio.toFixed(3)}`,
      status: ratio <= 1 / 3 ? 'PASS' : 'FAIL',
    });
  }
  if (lay['spacer-aslr'] && lay.spacer) {
    const d = lay['spacer-aslr'].distinct_pages / lay.spacer.distinct_pages - 1;
    out.push({
      id: 'aslr_vs_spacer',
      what: `Spacer-ASLR distinct pages within 15 % of Spacer ${at}`,
      value: `${(d * 100).toFixed(1)} %`,
      status: Math.abs(d) <= 0.15 ? 'PASS' : 'FAIL',
    });
  } else
    out.push({
      id: 'aslr_vs_spacer',
      what: 'Spacer-ASLR distinct pages within 15 % of Spacer',
      value: '-',
      status: 'SKIP',
      note: r.layouts_skipped['spacer-aslr'],
    });
  if (r.curves.spacer && r.curves.default) {
    const bad = r.curves.spacer.filter(
      (p, i) => p.instances >= 2 && p.distinct_pages > r.curves.default![i].distinct_pages,
    );
    out.push({
      id: 'spacer_never_above_default',
      what: 'Spacer never above default (distinct pages) at any instance count ≥ 2',
      value: bad.length
        ? `above at ${bad.map((p) => p.instances).join(', ')}`
        : `below or equal at all ${r.curves.spacer.filter((p) => p.instances >= 2).length} counts`,
      status: bad.length ? 'FAIL' : 'PASS',
    });
  }
  if (lay.spacer && lay.default) {
    const d = lay.spacer.elf_bytes / lay.default.elf_bytes - 1;
    // Spacer writes its images packed (the padding is in memory, not in the file); the default is
    // the file ld writes. The same packing of the default images is shown next to it.
    const packed = lay.default.elf_bytes_packed;
    const dp = packed ? lay.spacer.elf_bytes / packed - 1 : undefined;
    out.push({
      id: 'elf_size',
      what: 'ELF file size Spacer ≤ 2 % above default',
      value: `${(d * 100).toFixed(1)} % (${lay.spacer.elf_bytes} vs ${lay.default.elf_bytes} bytes)${dp !== undefined ? `; the default packed the same way: ${packed} bytes, Spacer ${dp >= 0 ? '+' : ''}${(dp * 100).toFixed(1)} %` : ''}`,
      status: d <= 0.02 ? 'PASS' : 'FAIL',
    });
  }
  const rt = r.overheads.runtime;
  if (rt?.ratio['spacer-aslr'] !== undefined) {
    const d = rt.ratio['spacer-aslr']! - 1;
    const dm = (rt.ratio_median['spacer-aslr'] ?? NaN) - 1;
    out.push({
      id: 'runtime_aslr',
      what: 'runtime overhead of Spacer-ASLR < 2 % (cpu-bench loop, TCG, fastest runs)',
      value: `${(d * 100).toFixed(1)} % (medians: ${(dm * 100).toFixed(1)} %)`,
      status: d < 0.02 && rt.all_ok ? 'PASS' : 'FAIL',
    });
  } else {
    out.push({
      id: 'runtime_aslr',
      what: 'runtime overhead of Spacer-ASLR < 2 %',
      value:
        rt?.ratio.spacer !== undefined
          ? `(Spacer: ${((rt.ratio.spacer! - 1) * 100).toFixed(1)} %)`
          : '-',
      status: 'SKIP',
      note: r.layouts_skipped['spacer-aslr'] ?? 'no runtime figures',
    });
  }
  const lk = r.overheads.link['spacer-aslr'] ?? r.overheads.link.spacer;
  if (lk) {
    const which = r.overheads.link['spacer-aslr'] ? 'spacer-aslr' : 'spacer';
    out.push({
      id: 'helper_time',
      what: `helper time < 10 % of the link step (${which})`,
      value: `${(lk.helper_share * 100).toFixed(1)} % (${lk.helper_ms} of ${lk.link_step_ms} ms)`,
      status: lk.helper_share < 0.1 ? 'PASS' : 'FAIL',
    });
  }
  if (r.ksm.ran) {
    const ks = Object.entries(lay)
      .filter(([, f]) => f?.ksm)
      .map(([l, f]) => `${l} ${f!.ksm!.deviation_pct} %`);
    const all = Object.values(lay).every((f) => !f || f.ksm?.model_agrees);
    out.push({
      id: 'ksm_model',
      what: 'KSM and the model agree within 1 % (loaders)',
      value: ks.join(', '),
      status: all ? 'PASS' : 'FAIL',
    });
  } else
    out.push({
      id: 'ksm_model',
      what: 'KSM and the model agree within 1 %',
      value: '-',
      status: 'SKIP',
      note: r.ksm.reason,
    });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Plot, Markdown, text

export function plot(r: BenchResult): string {
  const series = r.layouts_supported.map((l) => ({
    name:
      l === 'dce'
        ? 'DCE'
        : l === 'default'
          ? 'default'
          : l === 'spacer'
            ? 'Spacer'
            : 'Spacer (ASLR)',
    color: COLORS[l],
    dash: l === 'dce' ? '6 4' : l === 'spacer-aslr' ? '2 3' : undefined,
    points: (r.curves[l] ?? []).map((p) => ({ x: p.instances, y: p.memory_mib })),
  }));
  const skipped = Object.keys(r.layouts_skipped);
  return plotSvg(series, {
    title: `Memory after deduplication: ${r.options.apps} FaaS unikernels`,
    xLabel: 'instances (different FaaS apps, log scale)',
    yLabel: 'distinct non-zero pages × 4 KiB (MiB)',
    note:
      `page model of shared/metrics.md (what KSM with use_zero_pages=1 keeps), seed ${r.options.seed}` +
      (skipped.length ? `; not yet supported: ${skipped.join(', ')}` : ''),
  });
}

const num = (n: number | null | undefined) =>
  n === null || n === undefined ? '-' : n.toLocaleString('en-US').replace(/,/g, ' ');

export function formatBenchMarkdown(r: BenchResult): string {
  const L = r.layouts_supported;
  const out: string[] = [];
  out.push(
    `### Benchmark: ${r.options.apps} generated FaaS unikernels (seed ${r.options.seed}), ${L.length} layouts`,
    '',
  );
  out.push(
    '| layout | instances | pages P | distinct D | memory (MiB) | bound L | D/L | ELF bytes | KSM shared + unshared | KSM sharing | KSM zero | model agrees |',
  );
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const l of L) {
    const f = r.layouts[l]!;
    const k = f.ksm;
    out.push(
      `| ${l} | ${f.instances} | ${num(f.pages)} | ${num(f.distinct_pages)} | ${f.memory_mib.toFixed(2)} | ${num(f.content_bound_pages)} | ${f.d_over_l?.toFixed(2) ?? '-'} | ${num(f.elf_bytes)} | ` +
        (k
          ? `${num(k.pages_shared + k.pages_unshared)} (model ${num(k.model_expected_kept)}) | ${num(k.pages_sharing)} | ${num(k.zero_pages)} | ${k.model_agrees ? 'yes' : 'NO'} (${k.deviation_pct} %) |`
          : '- | - | - | - |'),
    );
  }
  for (const [l, why] of Object.entries(r.layouts_skipped))
    out.push(`| ${l} | skipped: ${why} | | | | | | | | | | |`);
  out.push('');
  out.push('Distinct pages D against instances (the first k FaaS apps, one instance each):', '');
  out.push(`| instances | ${L.map((l) => `${l} D (MiB)`).join(' | ')} | bound L |`);
  out.push(`|---|${L.map(() => '---').join('|')}|---|`);
  const ks = r.curves[L[0]]!.map((p) => p.instances);
  ks.forEach((k, i) => {
    out.push(
      `| ${k} | ${L.map((l) => {
        const p = r.curves[l]![i];
        return `${num(p.distinct_pages)} (${p.memory_mib.toFixed(2)})`;
      }).join(' | ')} | ${num(r.curves[L[0]]![i].content_bound_pages)} |`,
    );
  });
  if (r.ksm.ran && L.some((l) => r.layouts[l]!.guests)) {
    out.push(
      '',
      `qemu guests under KSM (first ${r.options.guests} FaaS apps per layout, \`-append stay\`, THP off for qemu):`,
      '',
    );
    out.push(
      '| layout | guests alive | pages_shared | pages_sharing | pages_unshared | ksm_zero_pages | kept (MiB) | model D of the images |',
    );
    out.push('|---|---|---|---|---|---|---|---|');
    for (const l of L) {
      const g = r.layouts[l]!.guests;
      if (!g) continue;
      out.push(
        `| ${l} | ${g.alive}/${g.guests} | ${num(g.pages_shared)} | ${num(g.pages_sharing)} | ${num(g.pages_unshared)} | ${num(g.zero_pages)} | ${g.memory_mib.toFixed(2)} | ${num(g.model_distinct_pages)}${g.error ? ` (error: ${g.error})` : ''} |`,
      );
    }
  } else if (!r.ksm.ran) out.push('', `Real KSM not run: ${r.ksm.reason}.`);
  out.push('', 'Overheads (medians of one run; link figures per image, side by side):', '');
  out.push(
    '| layout | helper plan (ms) | ld (ms) | finish incl. rewrite (ms) | rewrite (ms) | link step (ms) | helper share |',
  );
  out.push('|---|---|---|---|---|---|---|');
  for (const l of L) {
    const t = r.overheads.link[l];
    if (t)
      out.push(
        `| ${l} | ${t.plan_ms} | ${t.link_ms} | ${t.finish_ms} | ${t.rewrite_ms ?? '-'} | ${t.link_step_ms} | ${(t.helper_share * 100).toFixed(1)} % |`,
      );
  }
  out.push('');
  if (r.overheads.link_ratio_spacer !== null)
    out.push(
      `- Link step with the helper over without (spacer / default): **${r.overheads.link_ratio_spacer}×**` +
        (r.overheads.link_ratio_spacer_aslr !== null
          ? `; spacer-aslr / default: ${r.overheads.link_ratio_spacer_aslr}×`
          : ''),
    );
  if (r.overheads.rewrite.available) {
    for (const [l, x] of Object.entries(r.overheads.rewrite.layouts)) {
      out.push(
        `- Rewrite, ${l} (medians over ${x.images} images): ${x.ms_median} ms, ${x.sites_median} sites, ${x.trampolines_median} instructions moved, ${num(x.table_bytes_median)} indirection-table bytes (${num(x.table_bytes_total)} in all), ${x.data_pointers_median} data pointers left`,
      );
    }
  } else out.push(`- Rewrite: ${r.overheads.rewrite.note}`);
  const rt = r.overheads.runtime;
  if (rt)
    out.push(
      `- Runtime, ${rt.app}'s SHA-256 loop (${rt.rounds} boots per layout, alternated, ${rt.accel.toUpperCase()}), fastest run: ` +
        Object.entries(rt.ms_min)
          .map(([l, v]) => `${l} ${v} ms`)
          .join(', ') +
        '; ratio ' +
        Object.entries(rt.ratio)
          .map(([l, v]) => `${l}/default **${v}**`)
          .join(', ') +
        '. Medians: ' +
        Object.entries(rt.ms_median)
          .map(([l, v]) => `${l} ${v} ms`)
          .join(', ') +
        ' (ratio ' +
        Object.entries(rt.ratio_median)
          .map(([l, v]) => `${l} ${v}`)
          .join(', ') +
        ')' +
        (rt.all_ok ? '' : ' (**an output differed or a boot failed**)') +
        (rt.retried?.length ? `; booted again after a failure: ${rt.retried.join('; ')}` : ''),
    );
  out.push('', 'Targets of the issue:', '');
  out.push('| target | value | result |', '|---|---|---|');
  for (const x of r.targets)
    out.push(`| ${x.what} | ${x.value} | **${x.status}**${x.note ? ` (${x.note})` : ''} |`);
  out.push('', `![memory against instances](bench.svg)`, '');
  out.push(
    `Run on ${r.machine.cpus} CPUs, Linux ${r.machine.kernel}; durations: ${Object.entries(
      r.durations_ms,
    )
      .map(([k, v]) => `${k} ${fmtDur(v)}`)
      .join(', ')}.`,
    '',
  );
  return out.join('\n');
}

/** What `npm run bench` prints on stdout: the Markdown figures (targets included). */
export function formatBench(r: BenchResult): string {
  return (
    formatBenchMarkdown(r) +
    `\nFigures: ${join(r.out, 'bench.json')}, ${join(r.out, 'bench.md')}, plot ${join(r.out, 'bench.svg')}\n`
  );
}

export { generateApps, generateApp } from './generate.js';
export { KsmSession, readKsmSettings, ksmUnavailable } from './ksm.js';
