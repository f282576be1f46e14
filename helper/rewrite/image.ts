// The rewrite of a linked image (ELF64, -Wl,--emit-relocs): each µlib of the plan is analysed,
// its sites redirected through its table (external.ts, or aslr.ts for position-independent
// entries), and the patched bytes plus the record written in one atomic step (write.ts).
import { createHash } from 'node:crypto';
import { ElfFile, SHF_ALLOC, SHT_REL, SHT_RELA, num } from '../elf.js';
import { SpacerError } from '../errors.js';
import { takeBuffer } from '../util/buffers.js';
import { hex, PAGE_N } from '../util/units.js';
import { analyzeUlib } from './analyze.js';
import { cacheUse, readEntryShared, writeEntry } from '../cache/store.js';
import { aslrContext, redirectData, rewriteAslr, type AslrContext } from './aslr.js';
import { rewriteExternal, type UlibJob, type UlibResult } from './external.js';
import {
  canonicalPlan,
  loadImage,
  readRecord,
  type RecordUlib,
  type RewriteRecord,
} from './record.js';
import { checkInd, checkPtr } from './reserved.js';
import {
  checkMode,
  COUNT_KEYS,
  REWRITE_SECTION,
  type CountKey,
  type ExtraSection,
  type Mode,
  type RewriteCounts,
  type RewritePlan,
  type RewriteStats,
  type UlibAnalysis,
  type UlibRewriteStats,
} from './types.js';
import { commitStaged, stageWrite, type CheckFile } from './write.js';

/** A rewrite done in memory: the patched bytes and the sections to add, not yet written. */
export interface PreparedRewrite {
  data: Buffer;
  /** The record, then the caller's extra sections. */
  sections: ExtraSection[];
  /** The sections patched in `data` (objcopy must not move them). */
  changed: string[];
  stats: Omit<RewriteStats, 'ms' | 'alreadyDone'>;
  /** When the rewrite started (performance.now()): its `ms` runs until the write. */
  t0: number;
  /** `<µlib> <SHA-256 of its original code>` (as its record holds them) -> its analysis's key. */
  analysisKeys: Map<string, string>;
}

/**
 * Rewrites the µlibs of a linked image (ELF64, -Wl,--emit-relocs) per `plan`; atomic. `check`
 * judges the file as written before it replaces the image (verify.ts's verifyImage: one
 * verification, of what will really be on disk).
 */
export async function rewriteImageWith(
  dbgPath: string,
  plan: RewritePlan,
  mode: Mode,
  extra: ExtraSection[],
  check: CheckFile,
): Promise<RewriteStats> {
  const p = prepareRewrite(dbgPath, plan, mode, extra);
  if (!('data' in p)) return p;
  const staged = await stageWrite(dbgPath, p.data, p.sections, p.changed, check);
  commitStaged(staged, dbgPath);
  return { ...p.stats, ms: performance.now() - p.t0, alreadyDone: false };
}

/** Room left after an image of `n` bytes for the sections the rewrite adds. */
const APPEND_ROOM = (n: number) => (4 << 20) + (n >> 1);

/**
 * The rewrite in memory: each µlib analysed and its sites redirected, the record built. An image
 * that already carries this rewrite gives its recorded figures (alreadyDone); another rewrite is
 * a user's error.
 */
export function prepareRewrite(
  dbgPath: string,
  plan: RewritePlan,
  mode: Mode,
  extra: ExtraSection[],
  loaded?: ElfFile,
): PreparedRewrite | RewriteStats {
  const t0 = performance.now();
  checkMode(mode, dbgPath);
  const elf = loadImage(dbgPath, loaded);
  const canonPlan = canonicalPlan(plan);
  const prev = readRecord(elf);
  if (prev) {
    if (prev.mode === mode && JSON.stringify(prev.plan) === JSON.stringify(canonPlan)) {
      return { ...prev.stats, ms: performance.now() - t0, alreadyDone: true };
    }
    throw new SpacerError(
      `${dbgPath}: already rewritten with another ${prev.mode !== mode ? `mode (${prev.mode})` : 'plan'}; relink the image and rewrite it once`,
    );
  }
  checkRewritable(elf, plan);

  // The patched image, with room after it for the record and plan sections: elfappend.ts adds
  // them in place instead of copying the image once more (untouched room costs no memory).
  const out = takeBuffer(elf.data.length + APPEND_ROOM(elf.data.length)).subarray(
    0,
    elf.data.length,
  );
  out.set(elf.data);
  const perUlib: Record<string, UlibRewriteStats> = {};
  const records: RecordUlib[] = [];
  let allData: bigint[] = [];
  const analyses = new Map(plan.ulibs.map((u) => [u.name, analyzeUlib(elf, u, mode)]));
  const aslr = mode === 'aslr' ? aslrContext(elf, plan, analyses) : undefined;
  for (const u of plan.ulibs) {
    const a = analyses.get(u.name);
    if (!a) {
      perUlib[u.name] = { ...emptyUlibStats(0), rewritten: false };
      continue;
    }
    allData.push(...a.dataPointers);
    const st: UlibRewriteStats = {
      ...emptyUlibStats(a.sites.length),
      dataPointers: a.dataPointers.length,
      dataPointerPages: pagesOf(a.dataPointers),
      rewritten: false,
    };
    perUlib[u.name] = st;
    if (!u.ind) continue;
    const where = `${dbgPath}: ${u.name}`;
    const job: UlibJob = { elf, u, a, ind: checkInd(elf, u, a, where), where, out };
    const r: UlibResult = aslr && u.ptr ? cachedAslr(job, aslr) : cachedRewrite(job, mode);
    Object.assign(st, r.stats);
    records.push(r.record);
  }
  // ASLR mode: addresses of entries held as data now hold their stubs' (the same in every image).
  const { redirected, changedData } = aslr
    ? redirectData(elf, plan, analyses, aslr, out)
    : { redirected: [], changedData: new Set<string>() };
  if (redirected.length) {
    const red = new Set(redirected.map((x) => x.a));
    allData = allData.filter((x) => !red.has(hex(x)));
    keepUnredirected(plan, analyses, perUlib, red);
  }
  const stats = sumStats(perUlib, allData);
  if (redirected.length) Object.assign(stats, { dataRedirected: redirected.length });
  const record: RewriteRecord = {
    spacer_rewrite: 1,
    mode,
    plan: canonPlan,
    stats,
    ulibs: records,
    ...(redirected.length ? { data: redirected } : {}),
  };
  return {
    data: out,
    sections: [{ name: REWRITE_SECTION, data: JSON.stringify(record) }, ...extra],
    changed: [
      ...records.flatMap((r) => [r.text, r.ind.section, ...(r.ptr ? [r.ptr.section] : [])]),
      ...changedData,
    ],
    stats,
    t0,
    analysisKeys: new Map(
      records.flatMap((r) => {
        const k = analyses.get(r.name)?.key;
        return k ? [[`${r.name} ${r.textSha256}`, k] as const] : [];
      }),
    ),
  };
}

/**
 * A µlib's classic table (rewriteExternal) from the cache when the same code, analysed the same
 * way, was rewritten at the same addresses before: its patched code and table are written as
 * they were, its record and figures are those of then.
 */
function cachedRewrite(job: UlibJob, mode: Mode): UlibResult {
  const { u, a, elf, out } = job;
  const dir = cacheUse.dir;
  if (!dir || !a.key) return rewriteExternal(job);
  const key = createHash('sha256')
    .update(`spacer-rewrite 1 ${a.key} ${mode} ${u.name} ${u.text} ${+!!u.named}\n`)
    .update(`${u.ind!.section} ${hex(job.ind.addr)} ${u.ind!.size}\n`)
    .update(elf.contents(a.text))
    .digest('hex');
  type Entry = { code: Uint8Array; table: Uint8Array; r: UlibResult };
  const hit = readEntryShared<Entry>(dir, 'rewrite', key);
  const textOff = num(a.text.offset),
    indOff = num(job.ind.offset);
  if (hit && hit.code.length === num(a.text.size) && hit.table.length <= u.ind!.size) {
    cacheUse.hits++;
    out.set(hit.code, textOff);
    out.set(hit.table, indOff);
    return hit.r;
  }
  cacheUse.misses++;
  const r = rewriteExternal(job);
  const code = out.subarray(textOff, textOff + num(a.text.size));
  const table = out.subarray(indOff, indOff + u.ind!.size);
  writeEntry(dir, 'rewrite', key, { code, table, r } satisfies Entry);
  return r;
}

/**
 * A µlib's position-independent rewrite (rewriteAslr) from the cache when the same code, with the
 * same sites, stubs and places, was rewritten before and every entry stub it asked about is where
 * it was: its code, table (with the copies after it) and pointer area are written as they were.
 * The places hold the seed's addresses, so this finds what a relink with the same seed
 * (CONFIG_SPACER_ASLR_SEED) wrote; a fresh seed moves every µlib, and the image's own code moves
 * whenever the app changes size.
 */
function cachedAslr(job: UlibJob, ctx: AslrContext): UlibResult {
  const { u, a, elf, out, where } = job;
  const dir = cacheUse.dir;
  // The image's own code moves with the seed's gap and with the app's size: it would miss.
  if (!dir || !a.key || u.own) return rewriteAslr(job, ctx);
  const ptr = checkPtr(elf, u, where);
  const stubs = ctx.stubsOf.get(u.name)!;
  const big = (_k: string, v: unknown) => (typeof v === 'bigint' ? hex(v) : v);
  // One line per site (JSON.stringify with a replacer for the bigints took a millisecond a finish).
  const sites = a.sites.map(
    (x) =>
      `${x.kind} ${hex(x.insn.ip)} ${hex(x.target)} ${x.outside.join()} ${JSON.stringify(x.targets)} ${+!!x.ownData}`,
  );
  // A target names a local symbol by its number in the image's table (`.LC2#401`), which changes
  // when any µlib before it does; what the rewrite reads of it is only which sites name the same
  // one (they share a pointer slot), so the key numbers them by first use.
  const ids = new Map<string, number>();
  const renumber = (t: string) => {
    if (!ids.has(t)) ids.set(t, ids.size);
    return `${t[0]}${ids.get(t)}`;
  };
  const sitesKey = sites.join('\n').replace(/[#§]\d+/g, renumber);
  const h = createHash('sha256');
  // The functions it copies after its table: where each is, its bytes and whether it may be.
  for (const name of u.ind!.clones ?? []) {
    const src = ctx.sources()(name);
    h.update(`clone ${name} ${src ? `${hex(src.addr)} ${src.refusal ?? ''}` : '-'}\n`);
    if (src) h.update(src.bytes);
  }
  const key = h
    .update(`spacer-rewrite-aslr 3 ${a.key} ${u.name} ${u.text}\n`)
    .update(`${+!!u.named}${+!!u.own}${+!!u.ownAbs}${+!!u.pinned}\n`)
    .update(`${u.ind!.section} ${hex(job.ind.addr)} ${u.ind!.size} ${u.ind!.table ?? ''}\n`)
    .update(`${u.ptr!.section} ${hex(ptr.addr)} ${u.ptr!.size}\n`)
    .update(`${JSON.stringify(stubs, big)}\n${sitesKey}\n`)
    .update(elf.contents(a.text))
    .digest('hex');
  type Entry = {
    code: Uint8Array;
    table: Uint8Array;
    ptr: Uint8Array;
    asked: [bigint, bigint][];
    r: UlibResult;
  };
  const hit = readEntryShared<Entry>(dir, 'rewrite', key);
  const textOff = num(a.text.offset),
    indOff = num(job.ind.offset),
    ptrOff = num(ptr.offset);
  if (
    hit &&
    hit.code.length === num(a.text.size) &&
    hit.table.length === u.ind!.size &&
    hit.ptr.length === u.ptr!.size &&
    hit.asked.every(([v, c]) => (ctx.canon.get(v) ?? v) === c)
  ) {
    cacheUse.hits++;
    out.set(hit.code, textOff);
    out.set(hit.table, indOff);
    out.set(hit.ptr, ptrOff);
    return hit.r;
  }
  cacheUse.misses++;
  const asked = new Map<bigint, bigint>();
  const r = rewriteAslr(job, ctx, asked);
  writeEntry(dir, 'rewrite', key, {
    code: out.subarray(textOff, textOff + num(a.text.size)),
    table: out.subarray(indOff, indOff + u.ind!.size),
    ptr: out.subarray(ptrOff, ptrOff + u.ptr!.size),
    asked: [...asked],
    r,
  } satisfies Entry);
  return r;
}

/** The image can be rewritten: it kept its relocations and names each µlib once. */
function checkRewritable(elf: ElfFile, plan: RewritePlan): void {
  if (
    !elf.sections.some(
      (s) =>
        (s.type === SHT_RELA || s.type === SHT_REL) &&
        elf.sections[s.info] &&
        elf.sections[s.info].flags & SHF_ALLOC,
    )
  ) {
    throw new SpacerError(
      `${elf.path}: the image has no relocations; link with -Wl,--emit-relocs so the rewriter can find every address in the code`,
    );
  }
  const seen = new Set<string>();
  for (const u of plan.ulibs) {
    if (seen.has(u.name))
      throw new SpacerError(
        `${elf.path}: µlib ${u.name} appears twice in the rewrite plan; fix the plan`,
      );
    seen.add(u.name);
  }
}

/** The pages (hex) holding these addresses, ascending. */
function pagesOf(addrs: bigint[]): string[] {
  return [...new Set(addrs.map((a) => a - (a % PAGE_N)))]
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map(hex);
}

/** Data pointers redirected to entry stubs no longer differ between images: not counted. */
function keepUnredirected(
  plan: RewritePlan,
  analyses: Map<string, UlibAnalysis | undefined>,
  perUlib: Record<string, UlibRewriteStats>,
  red: Set<string>,
): void {
  for (const u of plan.ulibs) {
    const a = analyses.get(u.name),
      st = perUlib[u.name];
    if (!a || !st) continue;
    const kept = a.dataPointers.filter((x) => !red.has(hex(x)));
    st.dataPointers = kept.length;
    st.dataPointerPages = pagesOf(kept);
  }
}

/** The image's figures: the µlibs' summed. */
function sumStats(
  perUlib: Record<string, UlibRewriteStats>,
  allData: bigint[],
): Omit<RewriteStats, 'ms' | 'alreadyDone'> {
  const all = Object.values(perUlib);
  const sums = Object.fromEntries(COUNT_KEYS.map((k) => [k, all.reduce((n, s) => n + s[k], 0)]));
  return { ...(sums as Record<CountKey, number>), dataPointerPages: pagesOf(allData), perUlib };
}

/** A µlib's figures before its rewrite: `sites` sites, nothing else counted yet. */
function emptyUlibStats(sites: number): RewriteCounts {
  const zeros = Object.fromEntries(COUNT_KEYS.map((k) => [k, 0])) as Record<CountKey, number>;
  return { ...zeros, sites, dataPointerPages: [] };
}
