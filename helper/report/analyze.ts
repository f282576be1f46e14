// The analysis behind `spacer report`. Each image is read once, its non-zero pages hashed once
// and interned to small content ids; only the ids are kept (never the page buffers), so a
// thousand 1 MiB images take seconds.
import { type ElfFile } from '../elf.js';
import { SpacerError } from '../errors.js';
import { ownPages } from '../floor.js';
import { inRanges, pageAddr, pagesOf, scanPages, type PageScan } from '../pages.js';
import { readImagePlan, type ImagePlan } from '../plan.js';
import { contentBound, contentInputs } from './bound.js';
import { loadImage, occupies, ulibSections } from './image.js';
import { imageNames, parseImageArg } from './names.js';
import {
  PAIR_LIMIT,
  type AnalyzeOptions,
  type ContentInputs,
  type ImageInput,
  type ImageReport,
  type PairReport,
  type Report,
  type UlibReport,
  type UlibShare,
} from './types.js';

interface UlibPages {
  name: string;
  variant: string | null;
  sections: string[];
  first: number;
  /** Page numbers in memory, ascending, and their content ids (-1: zero page). */
  pages: number[];
  ids: number[];
}

interface Scanned {
  name: string;
  path: string;
  format: 'elf64' | 'elf32';
  instances: number;
  pages: number;
  zero: number;
  /** Content ids of the non-zero pages (a content repeated inside the image repeats here). */
  ids: Int32Array;
  plan: boolean;
  ulibs: UlibPages[] | null;
}

/** Content interning: hash → id; holders[id] = images holding that content (ascending). */
class Contents {
  readonly holders: number[][] = [];
  private readonly ids = new Map<string, number>();
  /** The image being read. */
  current = 0;
  get size() {
    return this.ids.size;
  }
  idOf(h: string): number {
    let id = this.ids.get(h);
    if (id === undefined) {
      id = this.holders.length;
      this.ids.set(h, id);
      this.holders.push([]);
    }
    const hs = this.holders[id];
    if (hs[hs.length - 1] !== this.current) hs.push(this.current);
    return id;
  }
}

/** Pages of each µlib of a scanned image, with their content ids. */
function attribute(
  elf: ElfFile,
  plan: ImagePlan | null,
  scan: PageScan,
  contents: Contents,
): UlibPages[] | null {
  const secs = ulibSections(elf, plan);
  if (![...secs.values()].some((l) => l.length)) return null;
  const variant = new Map(plan?.ulibs.map((u) => [u.name, u.variant]) ?? []);
  const out: UlibPages[] = [];
  for (const [name, list] of secs) {
    const set = new Set<number>();
    for (const s of list) {
      if (!occupies(s)) continue;
      const r = pagesOf(s.addr, s.size)!;
      for (let p = r[0]; p < r[1]; p++) if (inRanges(scan.ranges, p)) set.add(p);
    }
    const pages = [...set].sort((a, b) => a - b);
    const ids = pages.map((p) => {
      const h = scan.nonzero.get(p);
      return h === undefined ? -1 : contents.idOf(h);
    });
    out.push({
      name,
      variant: variant.get(name) ?? null,
      sections: list.map((s) => s.name),
      first: pages[0] ?? Infinity,
      pages,
      ids,
    });
  }
  return out.sort((a, b) => a.first - b.first || (a.name < b.name ? -1 : 1));
}

function checkedInputs(inputs: readonly (ImageInput | string)[]): ImageInput[] {
  if (!inputs.length)
    throw new SpacerError(
      'spacer report: no images given; pass image files as PATH or PATH@INSTANCES',
    );
  const list = inputs.map((x) => (typeof x === 'string' ? parseImageArg(x) : x));
  for (const x of list) {
    const n = x.instances ?? 1;
    if (!Number.isSafeInteger(n) || n < 1)
      throw new SpacerError(
        `${x.path}: instance count ${n} must be a whole number of at least 1; write PATH@N`,
      );
  }
  return list;
}

/** Reads every image once: its page counts and content ids, and what the bound needs. */
function scanAll(list: ImageInput[], names: string[], bound: boolean, contents: Contents) {
  const scanned: Scanned[] = [];
  const inputs: ContentInputs[] = [];
  list.forEach((x, i) => {
    contents.current = i;
    const elf = loadImage(x.path);
    const scan = scanPages(elf);
    const ids = new Int32Array(scan.nonzero.size);
    let k = 0;
    for (const h of scan.nonzero.values()) ids[k++] = contents.idOf(h);
    const plan = readImagePlan(elf);
    scanned.push({
      name: names[i],
      path: x.path,
      format: elf.is64 ? 'elf64' : 'elf32',
      instances: x.instances ?? 1,
      pages: scan.pages,
      zero: scan.zeroPages,
      ids,
      plan: plan !== null,
      ulibs: attribute(elf, plan, scan, contents),
    });
    if (bound) inputs.push(contentInputs(elf, names[i], plan));
  });
  return { scanned, inputs };
}

function ulibReport(
  u: UlibPages,
  a: number,
  scanned: Scanned[],
  holders: number[][],
  sharing: boolean,
): UlibReport {
  const zero = u.ids.filter((id) => id < 0).length;
  const share: UlibShare[] = [];
  if (sharing) {
    const per = scanned.map(() => [] as string[]);
    u.ids.forEach((id, j) => {
      if (id >= 0) for (const b of holders[id]) if (b !== a) per[b].push(pageAddr(u.pages[j]));
    });
    per.forEach((addrs, b) => {
      if (b !== a) share.push({ image: scanned[b].name, pages: addrs.length, addrs });
    });
  }
  return {
    name: u.name,
    variant: u.variant,
    sections: u.sections,
    pages: u.pages.length,
    nonzero_pages: u.pages.length - zero,
    zero_pages: zero,
    shared: share,
  };
}

function pairReports(scanned: Scanned[], holders: number[][]): PairReport[] {
  const n = scanned.length;
  // shared[a * n + b] = non-zero pages of a whose content occurs in b.
  const shared = new Int32Array(n * n);
  scanned.forEach((s, a) => {
    for (const id of s.ids) for (const b of holders[id]) if (b !== a) shared[a * n + b]++;
  });
  const pairs: PairReport[] = [];
  for (let a = 0; a < n; a++) {
    for (let b = a + 1; b < n; b++) {
      pairs.push({
        a: scanned[a].name,
        b: scanned[b].name,
        shared_nonzero_pages: shared[a * n + b],
        shared_nonzero_pages_of_b: shared[b * n + a],
      });
    }
  }
  return pairs;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** Reads every image once and computes the report. */
export function analyzeImages(
  inputs: readonly (ImageInput | string)[],
  opts: AnalyzeOptions = {},
): Report {
  const list = checkedInputs(inputs);
  const names = imageNames(list);
  const n = list.length;
  const contents = new Contents();
  const { scanned, inputs: bounds } = scanAll(list, names, !opts.bound, contents);
  const { holders } = contents;
  const sharing = opts.pairs ?? n <= PAIR_LIMIT;
  const own = ownPages(
    scanned.map((s) => s.ids),
    holders,
  );
  const images: ImageReport[] = scanned.map((s, a) => {
    const img: ImageReport = {
      name: s.name,
      path: s.path,
      format: s.format,
      instances: s.instances,
      pages: s.pages,
      nonzero_pages: s.pages - s.zero,
      zero_pages: s.zero,
      own_pages: own[a],
      spacer_plan: s.plan,
    };
    if (s.ulibs) img.ulibs = s.ulibs.map((u) => ulibReport(u, a, scanned, holders, sharing));
    return img;
  });
  const bound = opts.bound ?? contentBound(bounds);
  const D = contents.size;
  const ownTotal = own.reduce((t, x) => t + x, 0);
  const report: Report = {
    images,
    instances: scanned.reduce((t, s) => t + s.instances, 0),
    pages: scanned.reduce((t, s) => t + s.instances * s.pages, 0),
    nonzero_pages: scanned.reduce((t, s) => t + s.instances * (s.pages - s.zero), 0),
    zero_pages: scanned.reduce((t, s) => t + s.instances * s.zero, 0),
    distinct_pages: D,
    content_bound_pages: bound.pages,
    content_bound_bytes: bound.bytes,
    d_over_l: bound.pages ? r3(D / bound.pages) : null,
    page_floor_pages: bound.floor_pages,
    own_pages: ownTotal,
    own_pages_per_image: r3(ownTotal / n),
    pairs: sharing ? pairReports(scanned, holders) : [],
  };
  if (bound.note) report.content_bound_note = bound.note;
  if (!sharing)
    report.pairs_note = `pairwise and per-µlib sharing not computed for ${n} images (more than ${PAIR_LIMIT}); ask for it explicitly`;
  return report;
}
