// The rewrite of a linked image (ELF64, -Wl,--emit-relocs): each µlib of the plan is analysed,
// its sites redirected through its table (external.ts, or aslr.ts for position-independent
// entries), and the patched bytes plus the record written in one atomic step (write.ts).
import {
  ElfFile,
  PF_X,
  PT_LOAD,
  SHF_ALLOC,
  SHT_PROGBITS,
  SHT_REL,
  SHT_RELA,
  type Section,
} from '../elf.js';
import { SpacerError } from '../errors.js';
import { hex, PAGE_N } from '../util/units.js';
import { analyzeUlib } from './analyze.js';
import { aslrContext, redirectData, rewriteAslr } from './aslr.js';
import { rewriteExternal, type UlibJob, type UlibResult } from './external.js';
import {
  canonicalPlan,
  loadImage,
  readRecord,
  type RecordUlib,
  type RewriteRecord,
} from './record.js';
import {
  checkMode,
  REWRITE_SECTION,
  type ExtraSection,
  type Mode,
  type RewritePlan,
  type RewriteStats,
  type RewriteUlib,
  type UlibAnalysis,
  type UlibRewriteStats,
} from './types.js';
import { writeAtomically, type CheckFile } from './write.js';

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
  const t0 = performance.now();
  checkMode(mode, dbgPath);
  const elf = loadImage(dbgPath);
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

  const out = Buffer.from(elf.data);
  const perUlib: Record<string, UlibRewriteStats> = {};
  const records: RecordUlib[] = [];
  let allData: bigint[] = [];
  const analyses = new Map(plan.ulibs.map((u) => [u.name, analyzeUlib(elf, u, mode)]));
  const aslr = mode === 'aslr' ? aslrContext(elf, plan, analyses) : undefined;
  for (const u of plan.ulibs) {
    const a = analyses.get(u.name);
    if (!a) {
      perUlib[u.name] = {
        sites: 0,
        stubs: 0,
        trampolines: 0,
        got: 0,
        tableBytes: 0,
        dataPointers: 0,
        dataPointerPages: [],
        rewritten: false,
      };
      continue;
    }
    allData.push(...a.dataPointers);
    const st: UlibRewriteStats = {
      sites: a.sites.length,
      stubs: 0,
      trampolines: 0,
      got: 0,
      tableBytes: 0,
      dataPointers: a.dataPointers.length,
      dataPointerPages: pagesOf(a.dataPointers),
      rewritten: false,
    };
    perUlib[u.name] = st;
    if (!u.ind) continue;
    const where = `${dbgPath}: ${u.name}`;
    const job: UlibJob = { elf, u, a, ind: checkInd(elf, u, a, where), where, out };
    const r: UlibResult = aslr && u.ptr ? rewriteAslr(job, aslr) : rewriteExternal(job);
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

  await writeAtomically(
    dbgPath,
    out,
    [{ name: REWRITE_SECTION, data: JSON.stringify(record) }, ...extra],
    [
      ...records.flatMap((r) => [r.text, r.ind.section, ...(r.ptr ? [r.ptr.section] : [])]),
      ...changedData,
    ],
    check,
  );
  return { ...stats, ms: performance.now() - t0, alreadyDone: false };
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

/** The µlib's table as the linker script reserved it: where the plan says, blank, executable. */
function checkInd(elf: ElfFile, u: RewriteUlib, a: UlibAnalysis, where: string): Section {
  const want = u.ind!;
  const ind = elf.section(want.section);
  if (!ind)
    throw new SpacerError(
      `${where}: the image has no section ${want.section}; reserve the indirection table in the linker script`,
    );
  if (ind.addr !== want.addr)
    throw new SpacerError(
      `${where}: ${want.section} is at ${hex(ind.addr)}, the plan says ${hex(want.addr)}; relink with the plan's script`,
    );
  if (ind.type !== SHT_PROGBITS)
    throw new SpacerError(
      `${where}: ${want.section} has no contents in the file; reserve it with FILL(0xCCCCCCCC) and '. = . + SIZE' so it is PROGBITS`,
    );
  if (!Number.isSafeInteger(want.size) || want.size < 0 || ind.size < BigInt(want.size))
    throw new SpacerError(
      `${where}: ${want.section} is ${ind.size} bytes, the plan reserves ${want.size}; relink with the plan's script`,
    );
  if (!inExecutableLoad(elf, ind))
    throw new SpacerError(
      `${where}: ${want.section} is not in an executable PT_LOAD; place it in the text segment of the linker script`,
    );
  if (ind.addr < a.text.addr + a.text.size && a.text.addr < ind.addr + BigInt(want.size))
    throw new SpacerError(`${where}: ${want.section} overlaps ${u.text}; fix the linker script`);
  const blank = elf.contents(ind).subarray(0, want.size);
  if (!blank.every((b) => b === 0xcc))
    throw new SpacerError(
      `${where}: ${want.section} is not blank (0xCC); fill it with FILL(0xCCCCCCCC) in the linker script`,
    );
  return ind;
}

function inExecutableLoad(elf: ElfFile, s: Section): boolean {
  return elf.segments.some(
    (p) =>
      p.type === PT_LOAD &&
      (p.flags & PF_X) !== 0 &&
      s.addr >= p.vaddr &&
      s.addr + s.size <= p.vaddr + p.filesz,
  );
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
  const sum = (k: 'sites' | 'stubs' | 'trampolines' | 'got' | 'tableBytes' | 'dataPointers') =>
    Object.values(perUlib).reduce((n, s) => n + s[k], 0);
  return {
    sites: sum('sites'),
    stubs: sum('stubs'),
    trampolines: sum('trampolines'),
    got: sum('got'),
    tableBytes: sum('tableBytes'),
    dataPointers: sum('dataPointers'),
    dataPointerPages: pagesOf(allData),
    perUlib,
  };
}
