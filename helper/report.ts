// `spacer report`: the figures of docs/metrics.md for any set of images a user hands it.
// Each image is read once, its non-zero pages hashed once and interned to small content ids; only
// the ids are kept (never the page buffers), so a thousand 1 MiB images take seconds.
//
// Figures: per image pages / non-zero / zero; totals P (over instances), D (distinct non-zero
// contents), zero pages, the content bound L and D/L; pairwise shared non-zero pages; and, for
// images linked by Spacer (one output section `.<kind>.<µlib>` per µlib and kind), each µlib's
// pages and which of them are byte-identical somewhere in every other image.
import { existsSync } from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { ElfFile, ET_REL, SHF_ALLOC, SHF_TLS, SHT_NOBITS, type Section } from './elf.js';
import { SpacerError, isSpacerError } from './errors.js';
import { PLAN_SECTION, readImagePlan, type ImagePlan, type RecordedSlot } from './plan.js';
import { COMPACTED } from './compact.js';
import { SLOT_KINDS, type Kind } from './map.js';
import { PAGE_SIZE, inRanges, pageAddr, pagesOf, scanPages, type PageScan } from './pages.js';

// ---------------------------------------------------------------------------------------------
export { readImagePlan, type ImagePlan };

// Types: the Report is exactly the JSON `spacer report --json` prints (numbers, no BigInt).

export interface ImageInput {
  path: string;
  /** How many instances of this image run (default 1). */
  instances?: number;
  /** Display name (default: file name without extension, made unique). */
  name?: string;
}

export interface UlibShare {
  /** The other image. */
  image: string;
  /** This µlib's non-zero pages whose content occurs anywhere in that image. */
  pages: number;
  /** Their addresses (hex). */
  addrs: string[];
}

export interface UlibReport {
  name: string;
  /** Variant (content hash) from `.spacer.plan`; null for an image without a plan. */
  variant: string | null;
  /** The image's sections of this µlib. */
  sections: string[];
  /** Pages its sections overlap (a page shared with a neighbour counts for both). */
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  /** One entry per other image, in input order (empty when sharing was not computed). */
  shared: UlibShare[];
}

export interface ImageReport {
  name: string;
  path: string;
  format: 'elf64' | 'elf32';
  instances: number;
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  /** Whether the image carries a `.spacer.plan` section. */
  spacer_plan: boolean;
  /** Per µlib, when the image has per-µlib output sections; absent for the default layout. */
  ulibs?: UlibReport[];
}

export interface PairReport {
  a: string;
  b: string;
  /** Non-zero pages of `a` whose content also occurs in `b` (counted with multiplicity). */
  shared_nonzero_pages: number;
  /** Non-zero pages of `b` whose content also occurs in `a`. */
  shared_nonzero_pages_of_b: number;
}

export interface Report {
  images: ImageReport[];
  /** Instances in all (sum of the images' instance counts). */
  instances: number;
  /** P: pages without sharing, summed over instances. */
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  /** D: distinct non-zero page contents across all images. */
  distinct_pages: number;
  /** L: the content bound in pages, or null (see content_bound_note). */
  content_bound_pages: number | null;
  content_bound_bytes: number | null;
  content_bound_note?: string;
  /** D / L (3 decimals), or null without L. */
  d_over_l: number | null;
  /** Every pair of images (i < j, input order); empty when sharing was not computed. */
  pairs: PairReport[];
  pairs_note?: string;
}

/** What the content bound needs from one image. */
export interface ContentInputs {
  name: string;
  path: string;
  plan: ImagePlan | null;
  /** Bytes of allocated, non-NOBITS sections that belong to no µlib; null without a plan. */
  own_bytes: number | null;
}

export interface ContentBound {
  /** L in pages (bytes / 4096 rounded up once), or null when it cannot be computed. */
  pages: number | null;
  bytes: number | null;
  /** Distinct (µlib, variant) pairs counted. */
  ulib_variants: number;
  /** Images the bound was computed from. */
  images: number;
  note?: string;
}

export interface AnalyzeOptions {
  /** Compute pairwise and per-µlib sharing (default: when there are at most 200 images). */
  pairs?: boolean;
  /** Use this content bound instead of computing it from these images (e.g. the bound of the
   *  Spacer images of the same workspace, applied to their default-layout builds). */
  bound?: ContentBound;
}

export const PAIR_LIMIT = 200;
/** Kinds whose bytes count towards L (bss is zeros). */
const CONTENT_KINDS: readonly Kind[] = ['text', 'rodata', 'data'];

// ---------------------------------------------------------------------------------------------
// Arguments and names

/** `path@N` → {path, instances: N}; a plain path → {path, instances: 1}. */
export function parseImageArg(arg: string): ImageInput {
  const m = /^(.+)@([^/@]*)$/.exec(arg);
  if (m) {
    if (/^\d+$/.test(m[2])) {
      const n = Number(m[2]);
      if (!Number.isSafeInteger(n) || n < 1)
        throw new SpacerError(
          `${arg}: instance count must be a whole number of at least 1; write PATH@N, e.g. ${m[1]}@2`,
        );
      return { path: m[1], instances: n };
    }
    if (!existsSync(arg))
      throw new SpacerError(
        `${arg}: no such file, and '@${m[2]}' is not an instance count; write PATH@N with N a whole number, e.g. ${m[1]}@2`,
      );
  }
  return { path: arg, instances: 1 };
}

/**
 * Display names: the file name without extension; where two collide, `parent/stem`; then
 * `parent/file`; then `app/stem` and `app/parent/file` (the folder above the build folder: the
 * app, in a Unikraft build); then a `#k` suffix. Explicit names are kept and must be unique.
 */
export function imageNames(inputs: readonly ImageInput[]): string[] {
  const seen = new Set<string>();
  for (const x of inputs) {
    if (x.name === undefined) continue;
    if (!x.name) throw new SpacerError(`${x.path}: empty image name; give a non-empty name`);
    if (seen.has(x.name))
      throw new SpacerError(
        `${x.path}: image name ${JSON.stringify(x.name)} is given twice; give each image its own name`,
      );
    seen.add(x.name);
  }
  const cands = inputs.map((x) => {
    const base = basename(x.path),
      stem = basename(x.path, extname(x.path)) || base;
    const parent = basename(dirname(resolve(x.path))),
      app = basename(dirname(dirname(resolve(x.path))));
    // Unikraft builds into <app>/build (or another O=): two apps' images differ by the folder
    // above.
    return [
      stem,
      `${parent}/${stem}`,
      `${parent}/${base}`,
      `${app}/${stem}`,
      `${app}/${parent}/${base}`,
    ];
  });
  const level = inputs.map(() => 0);
  const current = () => inputs.map((x, i) => x.name ?? cands[i][level[i]]);
  for (;;) {
    const names = current();
    // Files a name stands for: the same file given twice keeps its name (and gets `#k`).
    const files = new Map<string, Set<string>>();
    names.forEach((n, i) =>
      (files.get(n) ?? files.set(n, new Set()).get(n)!).add(resolve(inputs[i].path)),
    );
    let moved = false;
    inputs.forEach((x, i) => {
      if (x.name === undefined && files.get(names[i])!.size > 1 && level[i] < cands[i].length - 1) {
        level[i]++;
        moved = true;
      }
    });
    if (!moved) break;
  }
  const names = current();
  const taken = new Set(names);
  const used = new Set<string>();
  return names.map((n, i) => {
    if (inputs[i].name !== undefined || !used.has(n)) {
      used.add(n);
      return n;
    }
    let k = 2;
    while (taken.has(`${n}#${k}`) || used.has(`${n}#${k}`)) k++;
    used.add(`${n}#${k}`);
    return `${n}#${k}`;
  });
}

// ---------------------------------------------------------------------------------------------
// Reading an image

/** Loads a linked image; every problem with the file becomes one SpacerError line naming it. */
export function loadImage(path: string): ElfFile {
  let elf: ElfFile;
  try {
    elf = ElfFile.load(path);
  } catch (e) {
    if (isSpacerError(e)) throw e;
    throw new SpacerError(`${path}: malformed ELF file (${(e as Error).message}); rebuild it`);
  }
  if (elf.header.type === ET_REL)
    throw new SpacerError(
      `${path}: a relocatable object, not a linked image; pass the .dbg or the multiboot image`,
    );
  if (!elf.loads.some((p) => p.memsz > 0n))
    throw new SpacerError(
      `${path}: no loadable segment (PT_LOAD with memsz > 0); pass a linked image`,
    );
  return elf;
}

const isAlloc = (s: Section) => (s.flags & SHF_ALLOC) !== 0n;
/** Allocated sections that occupy memory pages (a NOBITS TLS section only describes a template). */
const occupies = (s: Section) =>
  isAlloc(s) && s.size > 0n && !(s.type === SHT_NOBITS && (s.flags & SHF_TLS) !== 0n);
const ULIB_SECTION = /^\.(?:text|rodata|data|bss)\.((?:lib|app).+)$/;

/**
 * The image's µlibs and their sections: from the plan when there is one (its slot sections and
 * `.<kind>.<µlib>`); otherwise every `.<kind>.<name>` section whose name is a Unikraft library
 * (`lib…` or `app…`). Empty for the default layout.
 */
export function ulibSections(elf: ElfFile, plan: ImagePlan | null): Map<string, Section[]> {
  const out = new Map<string, Section[]>();
  if (plan) {
    for (const u of plan.ulibs) {
      const names = new Set<string>(SLOT_KINDS.map((k) => `.${k}.${u.name}`));
      for (const s of Object.values(u.slots)) if (s) names.add(s.section);
      const found = elf.sections.filter((s) => isAlloc(s) && names.has(s.name));
      for (const [k, slot] of Object.entries(u.slots)) {
        if (!slot || found.some((s) => s.name === slot.section)) continue;
        const s = planSection(elf, k, slot);
        if (s) found.push(s);
      }
      out.set(u.name, found);
    }
  } else {
    for (const s of elf.sections) {
      const m = isAlloc(s) ? ULIB_SECTION.exec(s.name) : null;
      if (!m) continue;
      const list = out.get(m[1]) ?? [];
      list.push(s);
      out.set(m[1], list);
    }
  }
  return out;
}

/**
 * The section a plan slot names. A compacted image (spacer compact) has one header per run of
 * µlib sections: then the plan's address and size say where the slot's bytes are (index -1).
 */
export function planSection(elf: ElfFile, kind: string, slot: RecordedSlot): Section | undefined {
  const s = elf.section(slot.section);
  if (s || !slot.addr || !slot.size) return s;
  const addr = BigInt(slot.addr),
    size = BigInt(slot.size);
  const seg = elf.loads.find((p) => addr >= p.vaddr && addr + size <= p.vaddr + p.memsz);
  if (!seg) return undefined;
  const nobits = kind === 'bss' || addr + size > seg.vaddr + seg.filesz;
  return {
    index: -1,
    name: slot.section,
    type: nobits ? SHT_NOBITS : 1,
    flags: SHF_ALLOC,
    addr,
    offset: nobits ? 0n : seg.offset + (addr - seg.vaddr),
    size,
    link: 0,
    info: 0,
    addralign: 1n,
    entsize: 0n,
  };
}

function ownBytes(elf: ElfFile, ulibs: Map<string, Section[]>): number {
  const mine = new Set<number>();
  for (const list of ulibs.values()) for (const s of list) if (s.index >= 0) mine.add(s.index);
  let n = 0;
  for (const s of elf.sections) {
    if (!isAlloc(s) || s.type === SHT_NOBITS || mine.has(s.index)) continue;
    // Zero pads that keep segments on pages are nothing of the image's own, nor is a compacted
    // run (µlib sections, counted through the plan, their alignment and such pads): the bound is
    // the same for an image and its compacted copy.
    if (!COMPACTED.test(s.name) && !s.name.startsWith('.spacer.pad.')) n += Number(s.size);
  }
  return n;
}

/** What the content bound needs from one image (its plan and its own bytes). */
export function contentInputs(
  elf: ElfFile,
  name?: string,
  plan: ImagePlan | null = readImagePlan(elf),
): ContentInputs {
  return {
    name: name ?? basename(elf.path, extname(elf.path)),
    path: elf.path,
    plan,
    own_bytes: plan ? ownBytes(elf, ulibSections(elf, plan)) : null,
  };
}

/**
 * L = ceil((Σ over distinct (µlib, variant) of its text + rodata + data bytes from the plans
 *           + Σ over images of their own bytes) / 4096), rounded up once; instances do not count.
 * Null (with a note) unless every image carries a `.spacer.plan`.
 */
export function contentBound(images: readonly (string | ElfFile | ContentInputs)[]): ContentBound {
  const ins = images.map((x) =>
    typeof x === 'string'
      ? contentInputs(loadImage(x))
      : x instanceof ElfFile
        ? contentInputs(x)
        : x,
  );
  if (!ins.length)
    return { pages: null, bytes: null, ulib_variants: 0, images: 0, note: 'no images' };
  const missing = ins.filter((i) => !i.plan || i.own_bytes === null).map((i) => i.name);
  if (missing.length) {
    const who =
      missing.length > 3
        ? `${missing.slice(0, 3).join(', ')} and ${missing.length - 3} more`
        : missing.join(', ');
    return {
      pages: null,
      bytes: null,
      ulib_variants: 0,
      images: ins.length,
      note: `${who} ${missing.length === 1 ? 'has' : 'have'} no ${PLAN_SECTION}, so L is unknown; compute it from the Spacer builds of the same apps`,
    };
  }
  const variants = new Map<string, number>();
  let own = 0;
  for (const i of ins) {
    own += i.own_bytes!;
    for (const u of i.plan!.ulibs) {
      let b = 0;
      for (const k of CONTENT_KINDS) b += u.slots[k]?.bytes ?? 0;
      const key = `${u.name}\0${u.variant}`;
      variants.set(key, Math.max(variants.get(key) ?? 0, b));
    }
  }
  let bytes = own;
  for (const b of variants.values()) bytes += b;
  return {
    pages: Math.ceil(bytes / PAGE_SIZE),
    bytes,
    ulib_variants: variants.size,
    images: ins.length,
  };
}

// ---------------------------------------------------------------------------------------------
// The analysis

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

/** Pages of each µlib of a scanned image, with their content ids. */
function attribute(
  elf: ElfFile,
  plan: ImagePlan | null,
  scan: PageScan,
  idOf: (hash: string) => number,
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
      return h === undefined ? -1 : idOf(h);
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

/** Reads every image once and computes the report. */
export function analyzeImages(
  inputs: readonly (ImageInput | string)[],
  opts: AnalyzeOptions = {},
): Report {
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
  const names = imageNames(list);
  const n = list.length;

  // Content interning: hash → id; holders[id] = images holding that content (ascending, distinct).
  const intern = new Map<string, number>();
  const holders: number[][] = [];
  let current = 0;
  const idOf = (h: string): number => {
    let id = intern.get(h);
    if (id === undefined) {
      id = holders.length;
      intern.set(h, id);
      holders.push([]);
    }
    const hs = holders[id];
    if (hs[hs.length - 1] !== current) hs.push(current);
    return id;
  };

  const scanned: Scanned[] = [];
  const contents: ContentInputs[] = [];
  list.forEach((x, i) => {
    current = i;
    const elf = loadImage(x.path);
    const scan = scanPages(elf);
    const ids = new Int32Array(scan.nonzero.size);
    let k = 0;
    for (const h of scan.nonzero.values()) ids[k++] = idOf(h);
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
      ulibs: attribute(elf, plan, scan, idOf),
    });
    if (!opts.bound) contents.push(contentInputs(elf, names[i], plan));
  });

  const sharing = opts.pairs ?? n <= PAIR_LIMIT;
  // shared[a * n + b] = non-zero pages of a whose content occurs in b.
  const shared = sharing ? new Int32Array(n * n) : null;
  if (shared) {
    scanned.forEach((s, a) => {
      for (const id of s.ids) for (const b of holders[id]) if (b !== a) shared[a * n + b]++;
    });
  }

  const images: ImageReport[] = scanned.map((s, a) => {
    const img: ImageReport = {
      name: s.name,
      path: s.path,
      format: s.format,
      instances: s.instances,
      pages: s.pages,
      nonzero_pages: s.pages - s.zero,
      zero_pages: s.zero,
      spacer_plan: s.plan,
    };
    if (s.ulibs) {
      img.ulibs = s.ulibs.map((u) => {
        const zero = u.ids.filter((id) => id < 0).length;
        const share: UlibShare[] = [];
        if (sharing) {
          const per = scanned.map(() => [] as string[]);
          u.ids.forEach((id, j) => {
            if (id >= 0)
              for (const b of holders[id]) if (b !== a) per[b].push(pageAddr(u.pages[j]));
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
      });
    }
    return img;
  });

  const pairs: PairReport[] = [];
  if (shared) {
    for (let a = 0; a < n; a++) {
      for (let b = a + 1; b < n; b++) {
        pairs.push({
          a: names[a],
          b: names[b],
          shared_nonzero_pages: shared[a * n + b],
          shared_nonzero_pages_of_b: shared[b * n + a],
        });
      }
    }
  }

  const bound = opts.bound ?? contentBound(contents);
  const D = intern.size;
  const report: Report = {
    images,
    instances: scanned.reduce((t, s) => t + s.instances, 0),
    pages: scanned.reduce((t, s) => t + s.instances * s.pages, 0),
    nonzero_pages: scanned.reduce((t, s) => t + s.instances * (s.pages - s.zero), 0),
    zero_pages: scanned.reduce((t, s) => t + s.instances * s.zero, 0),
    distinct_pages: D,
    content_bound_pages: bound.pages,
    content_bound_bytes: bound.bytes,
    d_over_l: bound.pages ? Math.round((D / bound.pages) * 1000) / 1000 : null,
    pairs,
  };
  if (bound.note) report.content_bound_note = bound.note;
  if (!sharing)
    report.pairs_note = `pairwise and per-µlib sharing not computed for ${n} images (more than ${PAIR_LIMIT}); ask for it explicitly`;
  return report;
}

// ---------------------------------------------------------------------------------------------
// Text for people

export interface FormatOptions {
  /** Print the pairwise table (default true). */
  pairs?: boolean;
  /** Print the per-µlib sharing lines (default true). */
  ulibs?: boolean;
}

function table(rows: string[][], right: boolean[]): string[] {
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (right[c] ? cell.padStart(w[c]) : cell.padEnd(w[c])))
      .join('  ')
      .trimEnd(),
  );
}

export function formatReport(r: Report, opts: FormatOptions = {}): string {
  const out: string[] = [];
  const rows = [['image', 'instances', 'pages', 'non-zero', 'zero', 'format', 'layout']];
  for (const i of r.images) {
    const layout = i.ulibs
      ? `${i.spacer_plan ? 'spacer' : 'per-µlib sections, no plan'}, ${i.ulibs.length} µlibs`
      : i.spacer_plan
        ? 'spacer, no µlib sections'
        : 'default';
    rows.push([
      i.name,
      String(i.instances),
      String(i.pages),
      String(i.nonzero_pages),
      String(i.zero_pages),
      i.format,
      layout,
    ]);
  }
  out.push(...table(rows, [false, true, true, true, true, false, false]));
  out.push('');
  const L =
    r.content_bound_pages === null
      ? `n/a: ${r.content_bound_note ?? 'not computed'}`
      : `${r.content_bound_pages} pages (${r.content_bound_bytes ?? '?'} bytes)${r.content_bound_note ? ` (${r.content_bound_note})` : ''}`;
  out.push(
    ...table(
      [
        [
          'pages without sharing (P)',
          `${r.pages} (${r.instances} instance${r.instances === 1 ? '' : 's'})`,
        ],
        ['distinct non-zero pages (D)', String(r.distinct_pages)],
        ['zero pages', String(r.zero_pages)],
        ['content bound (L)', L],
        ['D/L', r.d_over_l === null ? 'n/a' : r.d_over_l.toFixed(2)],
      ],
      [false, false],
    ),
  );
  if (r.pairs_note) out.push('', r.pairs_note);
  const byName = new Map(r.images.map((i) => [i.name, i]));
  if ((opts.pairs ?? true) && r.pairs.length) {
    out.push('', 'pairwise: non-zero pages of one image whose content occurs in the other');
    out.push(
      ...table(
        r.pairs.map((p) => [
          `  ${p.a} ~ ${p.b}`,
          `${p.shared_nonzero_pages}/${byName.get(p.a)!.nonzero_pages} of ${p.a}`,
          `${p.shared_nonzero_pages_of_b}/${byName.get(p.b)!.nonzero_pages} of ${p.b}`,
        ]),
        [false, true, true],
      ),
    );
  }
  if ((opts.ulibs ?? true) && r.images.some((i) => i.ulibs?.length)) {
    out.push(
      '',
      'per µlib: its pages, and its non-zero pages found byte-identical in each other image',
    );
    for (const i of r.images) {
      if (!i.ulibs?.length) continue;
      out.push(`${i.name}:`);
      out.push(
        ...table(
          i.ulibs.map((u) => [
            `  ${u.name}`,
            `${u.pages} page${u.pages === 1 ? '' : 's'}${u.zero_pages ? ` (${u.zero_pages} zero)` : ''}`,
            u.shared.length
              ? `shared: ${u.shared.map((s) => `${s.image} ${s.pages}/${u.nonzero_pages}`).join(', ')}`
              : '',
          ]),
          [false, false, false],
        ),
      );
    }
  }
  return out.join('\n');
}

/** `spacer report IMAGE[@N]...`: the text (or JSON) the command prints. */
export function reportCommand(
  args: readonly string[],
  opts: { json?: boolean; pairs?: boolean } = {},
): string {
  const r = analyzeImages(args.map(parseImageArg), { pairs: opts.pairs });
  return opts.json ? JSON.stringify(r, null, 2) : formatReport(r);
}
