// The page model (docs/metrics.md) over the first k FaaS apps: every image's pages hashed once,
// the curves of P and D accumulated per checkpoint, the figures at N taken from analyzeImages (the
// code behind `spacer report`) and checked against the curve (bench/README.md, step 3).
import { statSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { packImage } from '../pack.js';
import { PF_W } from '../elf.js';
import { loadedPageRanges, scanPages } from '../pages.js';
import {
  analyzeImages,
  contentBound,
  contentInputs,
  loadImage,
  type ContentInputs,
} from '../report.js';
import { PAGE } from '../util/units.js';
import type { Built, Workload } from './build.js';
import { hardeningFigures } from './harden.js';
import type { LayoutChoice } from './layouts.js';
import { lap, MiB, Progress, r3 } from './progress.js';
import {
  type BenchLayout,
  type BenchResult,
  type BenchRun,
  CHECKPOINTS,
  type CurvePoint,
} from './types.js';

/** One image's pages: counts, and its non-zero contents as small ids (per layout). */
export interface Scanned {
  pages: number;
  zero: number;
  ids: Int32Array;
  elfBytes: number;
  /**
   * Per entry of `ids`: 1 when the page lies (even partly) in a writable PT_LOAD, which a loader
   * that marks only read-only segments mergeable leaves unmerged.
   */
  writable: Uint8Array;
  /** Zero pages outside writable segments (what KSM merges into the zero page with --ro-only). */
  roZero: number;
}

/** The FaaS images' scans per layout (the example apps left out). */
export type Scans = Partial<Record<BenchLayout, Scanned[]>>;

/** Scans every image of a layout once; page contents become small ids (per layout). */
function scanLayout(paths: string[], onEach: () => void): { scans: Scanned[]; contents: number } {
  const intern = new Map<string, number>();
  const scans = paths.map((p) => {
    const elf = loadImage(p);
    const scan = scanPages(elf);
    const ids = new Int32Array(scan.nonzero.size);
    const writable = new Uint8Array(scan.nonzero.size);
    const rw = loadedPageRanges(elf.loads.filter((s) => s.flags & PF_W));
    let k = 0;
    for (const [page, h] of scan.nonzero) {
      writable[k] = rw.some(([s, e]) => page >= s && page < e) ? 1 : 0;
      let id = intern.get(h);
      if (id === undefined) {
        id = intern.size;
        intern.set(h, id);
      }
      ids[k++] = id;
    }
    onEach();
    let rwPages = 0;
    for (const [s, e] of rw)
      for (let pg = s; pg < e; pg++) if (scan.ranges.some(([a, b]) => pg >= a && pg < b)) rwPages++;
    const roZero = scan.pages - rwPages - (ids.length - writable.reduce((a, w) => a + w, 0));
    return {
      pages: scan.pages,
      zero: scan.zeroPages,
      ids,
      elfBytes: statSync(p).size,
      writable,
      roZero,
    };
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
export function ksmExpectation(scans: Scanned[], maxSharing: number) {
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

/**
 * D when the loader marks only read-only segments mergeable (code and read-only data): the
 * distinct contents of read-only non-zero pages, plus every non-zero page of a writable segment,
 * kept once per instance. Zero pages are left out as in D (docs/metrics.md).
 */
export function roOnlyDistinct(scans: Scanned[]): { distinct: number; writable: number } {
  const seen = new Set<number>();
  let writable = 0;
  for (const s of scans)
    s.ids.forEach((id, k) => {
      if (s.writable[k]) writable++;
      else seen.add(id);
    });
  return { distinct: seen.size + writable, writable };
}

/** The read-only pages of each scan, as KSM sees them when only those are mergeable. */
export function roOnlyScans(scans: Scanned[]): Scanned[] {
  return scans.map((s) => ({
    ...s,
    ids: s.ids.filter((_, k) => !s.writable[k]),
    writable: new Uint8Array(0),
    zero: s.roZero,
  }));
}

/** The result with the run's options, machine and workload, and no figures yet. */
function emptyResult(run: BenchRun, w: Workload, choice: LayoutChoice): BenchResult {
  const { N, seed, guests, quick, jobs } = run;
  const { generated } = w;
  return {
    schema: 1,
    options: { apps: N, seed, guests, quick, jobs },
    machine: { cpus: cpus().length, kernel: release(), accel: 'tcg' },
    layouts_supported: choice.layouts,
    layouts_skipped: choice.skipped,
    workload: {
      faas_apps: N,
      example_apps: w.examples.map((a) => a.name),
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
    durations_ms: run.durations,
    targets: [],
    out: run.out,
  };
}

/**
 * The page model of every layout: the result with its curves and the figures at N, and the scans
 * (KSM's expectation is computed from them).
 */
export function pageModel(
  run: BenchRun,
  w: Workload,
  built: Built,
  choice: LayoutChoice,
): { result: BenchResult; scans: Scans } {
  const t = Date.now();
  const { N, log } = run;
  const { layouts } = choice;
  const nEx = w.examples.length;
  const checkpoints = [...new Set([...CHECKPOINTS.filter((k) => k <= N), N])].sort((a, b) => a - b);
  const sp = new Progress('page model', layouts.length * w.all.length, log);
  const scans: Scans = {};
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
  const result = emptyResult(run, w, choice);
  const bound = spacerInputs ? contentBound(spacerInputs) : undefined;
  for (const l of layouts) {
    result.curves[l] = curve(scans[l]!, checkpoints, boundAt);
    const images = built[l]!.slice(nEx);
    result.layouts[l] = {
      ...figuresAtN(l, images, result.curves[l]!.at(-1)!, bound),
      workspace_images: w.all.length,
      workspace_distinct_pages: workspaceDistinct[l]!,
    };
  }
  result.mergeable_ro_only = Object.fromEntries(
    layouts.map((l) => {
      const ro = roOnlyDistinct(scans[l]!);
      return [l, { distinct_pages: ro.distinct, writable_nonzero_pages: ro.writable }];
    }),
  );
  // ASLR hardening's cost: the same images with their salts zeroed.
  const aslr = layouts.filter((l) => l === 'spacer-aslr');
  if (aslr.length)
    result.hardening = Object.fromEntries(
      aslr.map((l) => [l, hardeningFigures(built[l]!.slice(nEx))]),
    );
  lap(run.durations, 'model', t);
  return { result, scans };
}

/**
 * A layout's figures at N through the same code as `spacer report`, a cross-check of the curve's
 * last point.
 */
function figuresAtN(
  l: BenchLayout,
  images: NonNullable<Built[BenchLayout]>,
  last: CurvePoint,
  bound: ReturnType<typeof contentBound> | undefined,
) {
  const rep = analyzeImages(
    images.map((b) => ({ path: b.elf, name: b.image })),
    { pairs: false, bound },
  );
  if (rep.distinct_pages !== last.distinct_pages || rep.pages !== last.pages) {
    throw new Error(
      `bench: ${l}: the incremental page model (D ${last.distinct_pages}, P ${last.pages}) disagrees with analyzeImages (D ${rep.distinct_pages}, P ${rep.pages})`,
    );
  }
  return {
    instances: rep.instances,
    pages: rep.pages,
    nonzero_pages: rep.nonzero_pages,
    zero_pages: rep.zero_pages,
    distinct_pages: rep.distinct_pages,
    memory_mib: r3((rep.distinct_pages * PAGE) / MiB),
    content_bound_pages: rep.content_bound_pages,
    d_over_l: rep.d_over_l,
    page_floor_pages: rep.page_floor_pages,
    own_pages_per_image: rep.own_pages_per_image,
    elf_bytes: last.elf_bytes,
    elf_bytes_packed: images.reduce((n, b) => n + packImage(b.elf, { write: false }).after, 0),
  };
}
