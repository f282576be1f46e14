// ASLR mode with position-independent entries (docs/aslr.md): each µlib's entry stubs at the
// start of its pointer area, its sites' entries (x86/pi.ts) that are the same in every image, the
// copies of leaf callees after its table (x86/clone.ts), and data fields that held an entry's
// address redirected to its stub.
import { ElfFile, STT_FUNC, type Section, num } from '../elf.js';
import { SpacerError } from '../errors.js';
import { cloneLayout } from '../x86/clone.js';
import {
  dataAddressFields,
  isEntrySymbol,
  slotsAfterStubs,
  stubBytes,
  stubMap,
  writeAddress,
  type UlibStubs,
} from '../x86/entries.js';
import { piPlan, type PiPlan } from '../x86/pi.js';
import { patchPi } from '../x86/pi-encode.js';
import { buildPiTable, type PiTable } from '../x86/pi-table.js';
import { TableError } from '../x86/table.js';
import { patchSite } from '../x86/tactics.js';
import { hex } from '../util/units.js';
import { cloneSources, isDirect, retarget, type CloneSource } from './clones.js';
import { checkPtr } from './reserved.js';
import { recordText, tableTooSmall, type UlibJob, type UlibResult } from './external.js';
import { type RecordUlib, type RewriteRecord } from './record.js';
import { type RewritePlan, type UlibAnalysis } from './types.js';

/** What every µlib's ASLR rewrite shares: the sites' forms, entry stubs and copies' sources. */
export interface AslrContext {
  /** Per µlib with a pointer area: each site's position-independent form, decided once. */
  plansOf: Map<string, (PiPlan | undefined)[]>;
  stubsOf: Map<string, UlibStubs>;
  /** Every µlib's entries: an address of code -> its stub's. */
  canon: Map<bigint, bigint>;
  /** The image's functions that may be copied (read on first use). */
  sources: () => (name: string) => CloneSource | undefined;
}

/**
 * Each site's position-independent form, decided once; then every µlib's entry stubs, so every
 * table and data field can use them.
 */
export function aslrContext(
  elf: ElfFile,
  plan: RewritePlan,
  analyses: Map<string, UlibAnalysis | undefined>,
): AslrContext {
  const plansOf = new Map<string, (PiPlan | undefined)[]>();
  for (const u of plan.ulibs) {
    const a = analyses.get(u.name);
    if (a && u.ptr)
      plansOf.set(
        u.name,
        a.sites.map((x) => piPlan(x.orig, x.insn.ip, x.kind, x.outside, x.ownData)),
      );
  }
  const stubsOf = entryStubs(elf, plan, analyses, plansOf);
  let sourcesOf: ((name: string) => CloneSource | undefined) | undefined;
  return {
    plansOf,
    stubsOf,
    canon: stubMap([...stubsOf.values()]),
    sources: () => (sourcesOf ??= cloneSources(elf)),
  };
}

/**
 * ASLR mode: each µlib's entry stubs (see x86/entries.ts), at the start of its pointer area. Its
 * entries are its global code symbols and the functions of its own whose address its code
 * (through the table) or its data take: all determined by the µlib alone, so the same in every
 * image.
 */
function entryStubs(
  elf: ElfFile,
  plan: RewritePlan,
  analyses: Map<string, UlibAnalysis | undefined>,
  plansOf: Map<string, (PiPlan | undefined)[]>,
): Map<string, UlibStubs> {
  const out = new Map<string, UlibStubs>();
  const syms = elf.symbols();
  for (const u of plan.ulibs) {
    const a = analyses.get(u.name);
    if (!a || !u.ptr || !u.ind) continue;
    // A µlib that keeps its place has the same addresses in every image: no stubs.
    if (u.pinned) {
      out.set(u.name, { at: u.ptr.addr, targets: [] });
      continue;
    }
    const lo = a.text.addr,
      hi = lo + a.text.size;
    const inCode = (v: bigint | undefined): v is bigint => v !== undefined && v >= lo && v < hi;
    // Function starts, for addresses its code takes (a switch dispatch reads its table, it does
    // not compute a case's address).
    const starts = new Set(
      syms
        .filter((y) => y.shndx === a.text.index && y.type === STT_FUNC && inCode(y.value))
        .map((y) => y.value),
    );
    const entries = new Set<bigint>();
    for (const y of syms)
      if (isEntrySymbol(y, a.text.index) && inCode(y.value)) entries.add(y.value);
    for (const p of plansOf.get(u.name) ?? []) {
      const v =
        p?.form === 'load' || p?.form === 'immreg'
          ? p.value
          : p?.form === 'mem2'
            ? p.value2
            : undefined;
      if (v !== undefined && starts.has(v)) entries.add(v);
    }
    // Data pointing into it: from its own sections any address of its code (switch tables hold
    // addresses inside functions: through a stub, a switch dispatch costs one more jump and its
    // table's page is the same in every image), and, through a local symbol (only its own object
    // can name one), function starts from global tables such as the init table.
    const own = new Set(u.sections);
    for (const f of dataAddressFields(elf, new Map([[a.text.index, [lo, hi]]])))
      if (own.has(f.sec.name) ? inCode(f.value) : f.local && starts.has(f.value))
        entries.add(f.value);
    out.set(u.name, {
      at: u.ptr.addr,
      targets: [...entries].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)),
    });
  }
  return out;
}

/**
 * Rewrites one µlib with position-independent entries: the table is the same in every image, the
 * pointer area is not.
 */
export function rewriteAslr(
  job: UlibJob,
  ctx: AslrContext,
  asked?: Map<bigint, bigint>,
): UlibResult {
  const { elf, u, a, ind, where, out } = job;
  const uPtr = u.ptr!,
    uInd = u.ind!;
  const ptr = checkPtr(elf, u, where);
  const stubs = ctx.stubsOf.get(u.name)!;
  const slots = slotsAfterStubs(stubs),
    stubPart = Number(slots - ptr.addr);
  if (stubPart > uPtr.size) {
    throw new SpacerError(
      `${where}: its ${stubs.targets.length} entry stubs need ${stubPart} bytes, the plan reserves ${uPtr.size} for ${uPtr.section}; relink (spacer link sizes it from the object)`,
    );
  }
  const code = Buffer.from(elf.contents(a.text));
  // Copies of leaf callees after the table (planned by spacer link): calls reach them directly.
  const cap = uInd.clones?.length ? (uInd.table ?? uInd.size) : uInd.size;
  const { clones, copyOf } = placeClones(job, cap, ctx);
  const { table, copied } = tableAndPatches(job, ctx, code, {
    cap,
    slots,
    stubPart,
    copyOf,
    asked,
  });
  code.copy(out, num(a.text.offset));
  table.bytes.copy(out, num(ind.offset));
  const sources = clones.length ? ctx.sources() : undefined;
  for (const c of clones)
    sources!(c.sym)!.bytes.copy(out, num(ind.offset) + Number(BigInt(c.at) - ind.addr));
  stubBytes(stubs, where).copy(out, num(ptr.offset));
  table.ptr.copy(out, num(ptr.offset) + stubPart);
  return {
    stats: {
      stubs: new Set(a.sites.filter((x) => x.kind === 'stub').map((x) => x.target)).size,
      trampolines: a.sites.filter((x) => x.kind === 'trampoline' || x.kind === 'callind').length,
      got: a.sites.filter((x) => x.kind === 'got').length,
      tableBytes: table.used,
      rewritten: true,
      classic: table.plans.filter((x) => !x).length,
    },
    record: aslrRecord(job, { table, ptr, stubs, stubPart, cap, clones, copied }),
  };
}

/** Where rewriteAslr puts the table and how big it and the pointer area are. */
interface AslrLayout {
  /** The table's bytes (before any copies), the pointer slots' start, the stubs' bytes. */
  cap: number;
  slots: bigint;
  stubPart: number;
  /** A copied function's address -> its copy's. */
  copyOf: Map<bigint, bigint>;
  /** Each address asked of `ctx.canon`, with the answer (what a cached rewrite depends on). */
  asked?: Map<bigint, bigint>;
}

/**
 * The µlib's position-independent table, and its sites patched in `code` to reach their entries
 * (or the copies of their targets); a table or pointer area too small is the user's error line.
 */
function tableAndPatches(
  job: UlibJob,
  ctx: AslrContext,
  code: Buffer,
  { cap, slots, stubPart, copyOf, asked }: AslrLayout,
): { table: PiTable; copied: (bigint | undefined)[] } {
  const { u, a, ind, where } = job;
  const uPtr = u.ptr!,
    uInd = u.ind!;
  const copied: (bigint | undefined)[] = [];
  let table: PiTable;
  try {
    table = buildPiTable({
      addr: ind.addr,
      size: cap,
      ptrAddr: slots,
      ptrSize: uPtr.size - stubPart,
      sites: a.sites.map((x) => ({
        kind: x.kind,
        ip: x.insn.ip,
        orig: x.orig,
        outside: x.outside,
        targets: x.targets,
        ownData: x.ownData,
      })),
      what: where,
      canon: (v) => {
        const c = ctx.canon.get(v) ?? v;
        asked?.set(v, c);
        return c;
      },
      plans: ctx.plansOf.get(u.name),
      direct: u.own,
    });
    a.sites.forEach((x, k) => {
      const plan = table.plans[k];
      if (plan)
        patchPi(
          code,
          a.text.addr,
          x.insn.ip,
          x.insn.len,
          x.insn.immOff,
          plan.form,
          table.entryAt[k],
          where,
        );
      else patchSite(code, a.text.addr, x.insn, x.kind, table.entryAt[k], where);
      // A direct call or jump to a copied function reaches the copy (its entry stays, unused).
      const copy = plan?.form === 'jmpptr' && isDirect(x.insn) ? copyOf.get(x.target) : undefined;
      if (copy !== undefined) retarget(code, a.text.addr, x.insn, copy, where);
      copied.push(copy);
    });
  } catch (e) {
    if (e instanceof TableError) {
      const fix = e.need
        ? `reserve at least ${e.need} bytes for ${uInd.section}`
        : e.ptrNeed
          ? `reserve at least ${e.ptrNeed + stubPart} bytes for ${uPtr.section}`
          : '';
      throw tableTooSmall(e, fix);
    }
    throw e;
  }
  return { table, copied };
}

/** The record of one µlib's ASLR rewrite. */
function aslrRecord(
  job: UlibJob,
  r: {
    table: PiTable;
    ptr: Section;
    stubs: UlibStubs;
    stubPart: number;
    cap: number;
    clones: NonNullable<RecordUlib['clones']>;
    copied: (bigint | undefined)[];
  },
): RecordUlib {
  const { u, a, ind } = job;
  const { table, ptr, stubs, stubPart, cap, clones, copied } = r;
  const uPtr = u.ptr!,
    uInd = u.ind!;
  return {
    ...recordText(job),
    ind: { section: uInd.section, addr: hex(ind.addr), size: cap, used: table.used },
    ptr: {
      section: uPtr.section,
      addr: hex(ptr.addr),
      size: uPtr.size,
      used: stubPart + table.ptrUsed,
    },
    stubs: { at: hex(stubs.at), targets: stubs.targets.map(hex) },
    ...(clones.length ? { clones } : {}),
    sites: a.sites.map((x, k) => ({
      a: hex(x.insn.ip),
      o: x.orig.toString('hex'),
      k: x.kind,
      e: hex(table.entryAt[k]),
      t: hex(x.target),
      ...(table.plans[k]
        ? {
            f: table.plans[k]!.form,
            ...(table.ptrAt[k] !== undefined ? { p: hex(table.ptrAt[k]!) } : {}),
          }
        : {}),
      ...(copied[k] !== undefined ? { c: hex(copied[k]!) } : {}),
    })),
  };
}

/** The copies the plan puts after the µlib's table of `cap` bytes: where each goes. */
function placeClones(
  job: UlibJob,
  cap: number,
  ctx: AslrContext,
): { clones: NonNullable<RecordUlib['clones']>; copyOf: Map<bigint, bigint> } {
  const { u, ind, where } = job;
  const reserved = u.ind!;
  const clones: NonNullable<RecordUlib['clones']> = [],
    copyOf = new Map<bigint, bigint>();
  if (!reserved.clones?.length) return { clones, copyOf };
  if (!Number.isSafeInteger(cap) || cap < 0 || cap > reserved.size)
    throw new SpacerError(
      `${where}: the plan's table size ${cap} does not fit ${reserved.section}; relink with the plan's script`,
    );
  const sourcesOf = ctx.sources();
  const srcs = reserved.clones.map((name) => {
    const src = sourcesOf(name);
    if (!src || src.refusal)
      throw new SpacerError(
        `${where}: the plan copies ${name} after its table, but ${src ? `a copy would not run the same: ${src.refusal}` : 'the image defines no such function'}; relink (spacer link plans the copies from the objects)`,
      );
    return src;
  });
  const lay = cloneLayout(
    ind.addr + BigInt(cap),
    srcs.map((x) => x.bytes.length),
  );
  srcs.forEach((src, k) => {
    const at = lay.at[k];
    if (at + BigInt(src.bytes.length) > ind.addr + BigInt(reserved.size))
      throw new SpacerError(
        `${where}: the copy of ${src.name} does not fit in ${reserved.section}; relink with the plan's script`,
      );
    copyOf.set(src.addr, at);
    clones.push({ sym: src.name, from: hex(src.addr), at: hex(at), size: src.bytes.length });
  });
  return { clones, copyOf };
}

/** Data fields holding an entry's address now hold its stub's (the same in every image). */
export function redirectData(
  elf: ElfFile,
  plan: RewritePlan,
  analyses: Map<string, UlibAnalysis | undefined>,
  ctx: AslrContext,
  out: Buffer,
): { redirected: NonNullable<RewriteRecord['data']>; changedData: Set<string> } {
  const redirected: NonNullable<RewriteRecord['data']> = [];
  const changedData = new Set<string>();
  if (!ctx.canon.size) return { redirected, changedData };
  const ranges = new Map<number, [bigint, bigint]>();
  for (const u of plan.ulibs) {
    const a = analyses.get(u.name);
    if (a && ctx.stubsOf.has(u.name))
      ranges.set(a.text.index, [a.text.addr, a.text.addr + a.text.size]);
  }
  for (const f of dataAddressFields(elf, ranges)) {
    const stub = ctx.canon.get(f.value);
    if (stub === undefined) continue;
    writeAddress(out, num(f.sec.offset) + Number(f.at - f.sec.addr), f.type, stub);
    redirected.push({ a: hex(f.at), o: hex(f.value), r: f.type });
    changedData.add(f.sec.name);
  }
  return { redirected, changedData };
}
