// `spacer verify IMAGE`: proves a rewritten image does what the original did. From the record in
// `.spacer.rewrite` it rebuilds each µlib's original code (the image's bytes with the recorded
// original bytes put back at the sites) and checks:
//   - only the sites changed (SHA-256 of the rebuilt code = the recorded hash of the original);
// - the rewrite missed nothing (the analysis of the rebuilt code finds exactly the recorded sites);
//   - every site reaches the same absolute targets as its original instruction, decoded at its
//     original address: a stub jumps to the original branch target, a GOT slot holds the original
//     lea address, a trampoline holds the same instruction (same absolute operands) followed by a
//     jump to the next original instruction, an indirect call pushes the original return address
//     and jumps through the same memory operand;
//   - table entries do not overlap and the unused part of the table is still 0xCC.
import { createHash } from 'node:crypto';
import { unsaltedContents } from './audit/salt.js';
import { type ElfFile, type Section } from './elf.js';
import { SpacerError, isSpacerError } from './errors.js';
import { analysisKey, analyzeUlib } from './rewrite/analyze.js';
import { cacheUse, readEntry, writeEntry } from './cache/store.js';
import { cloneSources, type CloneSource } from './rewrite/clones.js';
import {
  loadImage,
  planFromRecord,
  readRecord,
  type RecordUlib,
  type RewriteRecord,
} from './rewrite/record.js';
import {
  REWRITE_SECTION,
  type ImageSite,
  type RewritePlan,
  type RewriteUlib,
} from './rewrite/types.js';
import { cloneLayout } from './x86/clone.js';
import { Code, decodeOne } from './x86/decode.js';
import { hex } from './util/units.js';
import {
  STUB,
  dataAddressFields,
  dataSections,
  readAddress,
  slotsAfterStubs,
  stubMap,
  type UlibStubs,
} from './x86/entries.js';
import { ENTRY_WINDOW, firstDiff, reencode, reencodePi } from './verify/encode.js';
import { checkSite, type SiteCheck } from './verify/sites.js';

/**
 * Problems of a rewritten image (empty: verified). Throws a SpacerError for an unreadable file.
 * `loaded`: the file, already parsed; `cache`: a cache folder whose proofs may stand for µlibs
 * proved before (spacer finish; `spacer verify` proves every µlib).
 */
export function verifyImage(
  dbgPath: string,
  loaded?: ElfFile,
  cache?: string,
  analysisKeys?: Map<string, string>,
): string[] {
  const elf = loadImage(dbgPath, loaded);
  let rec: RewriteRecord | undefined;
  try {
    rec = readRecord(elf);
  } catch (e) {
    if (e instanceof SpacerError) return [e.message];
    throw e;
  }
  if (!rec) return [`${dbgPath}: no ${REWRITE_SECTION} section: the image was not rewritten`];
  return verifyRecord(elf, rec, cache, analysisKeys);
}

/** Checks `elf` against a rewrite record (also run by the rewriter before it writes anything). */
export function verifyRecord(
  elf: ElfFile,
  rec: RewriteRecord,
  cache?: string,
  analysisKeys?: Map<string, string>,
): string[] {
  const problems: string[] = [];
  // ASLR mode: the entry stubs every µlib agrees on (an address of code -> its stub's).
  const stubs = rec.ulibs
    .filter((u) => u.stubs)
    .map((u) => ({
      name: u.name,
      s: { at: BigInt(u.stubs!.at), targets: u.stubs!.targets.map((x) => BigInt(x)) },
    }));
  const canon = stubMap(stubs.map((x) => x.s));
  const shared: Shared = {
    elf,
    rec,
    plan: planFromRecord(rec),
    stubsOf: (name) => stubs.find((x) => x.name === name)?.s,
    canonOf: (v) => canon.get(v) ?? v,
  };
  for (const ru of rec.ulibs) {
    // A µlib whose every input was proved before (the cache's proof) is not decoded again; in ASLR
    // mode that includes the entry stubs its check asked about, each still where it was.
    const key = cache ? proofKey(shared, ru, analysisKeys) : undefined;
    const proof = key ? readEntry<Proof>(cache!, 'proof', key) : undefined;
    if (proof && (proof.asked ?? []).every(([v, c]) => (canon.get(v) ?? v) === c)) {
      cacheUse.hits++;
      continue;
    }
    const before = problems.length;
    const asked = new Map<bigint, bigint>();
    const canonOf = (v: bigint) => {
      const c = canon.get(v) ?? v;
      asked.set(v, c);
      return c;
    };
    shared.canonOf = canonOf;
    verifyUlib(shared, ru, (msg) => problems.push(`${ru.name}: ${msg}`));
    if (key && problems.length === before) {
      cacheUse.misses++;
      writeEntry(cache!, 'proof', key, { proved: ru.name, asked: [...asked] } satisfies Proof);
    }
  }
  // Data fields redirected to stubs hold the stub of what they held; none still holds an entry.
  if (canon.size) problems.push(...checkDataFields(elf, rec, canon));
  // Every µlib of the plan that has a table and code must have been rewritten.
  for (const u of shared.plan.ulibs) {
    if (u.ind && elf.section(u.text) && !rec.ulibs.some((r) => r.name === u.name))
      problems.push(`${u.name}: has a table in the plan but no record`);
  }
  return problems;
}

/** A cached proof: the µlib it proved, and each address its check asked `canonOf`, answered. */
interface Proof {
  proved: string;
  asked?: [bigint, bigint][];
}

/**
 * The key of a µlib's proof: everything verifyUlib reads but the entry stubs of other µlibs (the
 * proof keeps the ones it asked about): its record (its own stubs included), its code, table and
 * pointer area as they are, where its sections lie, its plan entry and the key of its original
 * code's analysis, and the functions it copies. Undefined for the image's own code, and when
 * one of its areas is missing.
 */
function proofKey(
  sh: Shared,
  ru: RecordUlib,
  analysisKeys?: Map<string, string>,
): string | undefined {
  const u = sh.plan.ulibs.find((x) => x.name === ru.name);
  const text = sh.elf.section(ru.text),
    ind = sh.elf.section(ru.ind.section),
    ptr = ru.ptr && sh.elf.section(ru.ptr.section);
  // The image's own code (ASLR mode) moves whenever the app changes size: its proof would miss.
  if (!u || u.own || !text || !ind || (ru.ptr && !ptr)) return undefined;
  const code = unsaltedContents(sh.elf, text);
  const { orig, outside } = putBack(ru, code, text.addr);
  if (outside.length) return undefined;
  // The rewrite's key of this very code (its hash is the record's), else computed.
  const known = analysisKeys?.get(`${ru.name} ${ru.textSha256}`);
  let analysis: string | undefined;
  if (known && createHash('sha256').update(orig).digest('hex') === ru.textSha256) analysis = known;
  else
    try {
      analysis = analysisKey(sh.elf, u, sh.rec.mode, orig);
    } catch {
      return undefined;
    }
  if (!analysis) return undefined;
  const big = (_k: string, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v);
  const ranges = u.sections.map((n) => {
    const x = sh.elf.section(n);
    return x ? `${n} ${x.addr} ${x.size}` : n;
  });
  const h = createHash('sha256');
  // The functions it copies after its table: where each is, its bytes and whether it may be.
  for (const c of ru.clones ?? []) {
    const src = (sh.sources ??= cloneSources(sh.elf))(c.sym);
    h.update(`clone ${c.sym} ${src ? `${hex(src.addr)} ${src.refusal ?? ''}` : '-'}\n`);
    if (src) h.update(src.bytes);
  }
  return h
    .update(`spacer-proof 2 ${analysis} ${sh.rec.mode}\n`)
    .update(`${JSON.stringify(ru)}\n${JSON.stringify(u, big)}\n${ranges.join(',')}\n`)
    .update(`${text.addr} ${text.size} ${ind.addr} ${ind.size}\n`)
    .update(code)
    .update(sh.elf.contents(ind))
    .update(ptr ? `${ptr.addr} ${ptr.size}\n` : '-\n')
    .update(ptr ? sh.elf.contents(ptr) : '')
    .digest('hex');
}

/** What every µlib's check reads. */
interface Shared {
  elf: ElfFile;
  rec: RewriteRecord;
  plan: RewritePlan;
  stubsOf: (name: string) => UlibStubs | undefined;
  canonOf: (v: bigint) => bigint;
  /** The image's functions that may be copied (read on first use). */
  sources?: (name: string) => CloneSource | undefined;
}

/** One µlib of the record: its areas, copies, original code, sites and a fresh encoding. */
function verifyUlib(sh: Shared, ru: RecordUlib, p: (msg: string) => void): void {
  let count = 0;
  const pc = (msg: string) => (count++, p(msg));
  const areas = ulibAreas(sh.elf, ru, pc);
  if (!areas) return;
  const { text, ind, code, table, ptr } = areas;
  const tlo = ind.addr,
    tend = ind.addr + BigInt(ru.ind.used);
  if (!table.subarray(ru.ind.used).every((b) => b === 0xcc))
    pc(`${ru.ind.section}: bytes after the ${ru.ind.used} used ones are not 0xCC`);
  const copies = ru.clones?.length ? checkCopies(sh, ru, ind, pc) : new Map<bigint, bigint>();
  const orig = rebuildOriginal(ru, code, text.addr, pc);
  if (!orig) return;
  const u = sh.plan.ulibs.find((x) => x.name === ru.name);
  const analysed = checkAnalysis(sh, ru, u, orig, pc);
  // Every site, against its original instruction.
  const extents = new Map<bigint, number>();
  const c: SiteCheck = {
    code,
    textAddr: text.addr,
    indSection: ru.ind.section,
    tlo,
    tend,
    table,
    // An entry's bytes, up to the end of the used table but never more than ENTRY_WINDOW: every
    // decode of an entry copies what it is given into iced's memory.
    at: (e) =>
      table.subarray(Number(e - tlo), Math.min(Number(tend - tlo), Number(e - tlo) + ENTRY_WINDOW)),
    ptr,
    copies,
    ownData: ownDataOf(sh.elf, ru, u),
    canonOf: sh.canonOf,
    own: u?.own,
    entry: (e, len, what) => {
      if (e < tlo || e + BigInt(len) > tend) {
        pc(`${what}: table entry ${hex(e)} lies outside the used table`);
        return false;
      }
      const prev = extents.get(e);
      if (prev !== undefined && prev !== len)
        pc(`${what}: table entry ${hex(e)} is used with two sizes`);
      extents.set(e, Math.max(prev ?? 0, len));
      return true;
    },
    p: pc,
  };
  for (const s of ru.sites) checkSite(c, s);
  // Byte for byte: a fresh encoding of the recorded sites gives this table and this code (the
  // checks above are semantic; this also catches changes that happen to decode equivalently).
  if (count === 0) checkFresh(sh, ru, u, areas, orig, analysed, pc);
  // Entries must not overlap (shared stubs and slots are one entry).
  const sorted = [...extents.entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i - 1][0] + BigInt(sorted[i - 1][1]) > sorted[i][0])
      pc(`table entries ${hex(sorted[i - 1][0])} and ${hex(sorted[i][0])} overlap`);
  }
}

interface Areas {
  text: Section;
  ind: Section;
  code: Buffer;
  table: Buffer;
  ptr?: { addr: bigint; bytes: Buffer; used: number };
}

/** The µlib's code, table and pointer area where the record says (undefined: a problem). */
function ulibAreas(elf: ElfFile, ru: RecordUlib, p: (msg: string) => void): Areas | undefined {
  const text = elf.section(ru.text);
  if (!text || hex(text.addr) !== ru.textAddr || Number(text.size) !== ru.textSize) {
    p(`${ru.text} is missing or moved (recorded at ${ru.textAddr}, ${ru.textSize} bytes)`);
    return undefined;
  }
  const ind = elf.section(ru.ind.section);
  if (!ind || hex(ind.addr) !== ru.ind.addr || ind.size < BigInt(ru.ind.size)) {
    p(`${ru.ind.section} is missing or moved (recorded at ${ru.ind.addr})`);
    return undefined;
  }
  // Page-table salts (harden.ts) are the only ones inside a section: compare the code without them.
  const code = unsaltedContents(elf, text);
  const table = elf.contents(ind).subarray(0, ru.ind.size);
  if (!ru.ptr) return { text, ind, code, table };
  const ps = elf.section(ru.ptr.section);
  if (
    !ps ||
    hex(ps.addr) !== ru.ptr.addr ||
    ps.size < BigInt(ru.ptr.size) ||
    ru.ptr.used > ru.ptr.size
  ) {
    p(`${ru.ptr.section} is missing or moved (recorded at ${ru.ptr.addr})`);
    return undefined;
  }
  const ptr = {
    addr: ps.addr,
    bytes: elf.contents(ps).subarray(0, ru.ptr.size),
    used: ru.ptr.used,
  };
  if (!ptr.bytes.subarray(ru.ptr.used).every((b) => b === 0xcc))
    p(`${ru.ptr.section}: bytes after the ${ru.ptr.used} used ones are not 0xCC`);
  return { text, ind, code, table, ptr };
}

/**
 * Copies after the table: each the same bytes as a function that runs the same anywhere, one
 * after the other from the next 16 bytes; the rest of the section is 0xCC. Returns the copy's
 * address -> the function's.
 */
function checkCopies(
  sh: Shared,
  ru: RecordUlib,
  ind: Section,
  p: (msg: string) => void,
): Map<bigint, bigint> {
  const copies = new Map<bigint, bigint>();
  const sourcesOf = (sh.sources ??= cloneSources(sh.elf));
  const all = sh.elf.contents(ind),
    blank = Buffer.from(all);
  const clones = ru.clones!;
  const lay = cloneLayout(
    ind.addr + BigInt(ru.ind.size),
    clones.map((c) => c.size),
  );
  for (const [k, c] of clones.entries()) {
    const at = BigInt(c.at),
      src = sourcesOf(c.sym),
      want = lay.at[k];
    if (at !== want) {
      p(`the copy of ${c.sym} is at ${c.at}, not at ${hex(want)}`);
      break;
    }
    if (!src || hex(src.addr) !== c.from || src.bytes.length !== c.size) {
      p(`the copy of ${c.sym} is of no function of ${c.size} bytes at ${c.from}`);
      break;
    }
    if (src.refusal) {
      p(`the copy of ${c.sym} would not run the same: ${src.refusal}`);
      break;
    }
    const off = Number(at - ind.addr);
    if (off + c.size > all.length || !all.subarray(off, off + c.size).equals(src.bytes)) {
      p(`the copy of ${c.sym} at ${c.at} differs from ${c.sym} at ${c.from}`);
      break;
    }
    blank.fill(0xcc, off, off + c.size);
    copies.set(at, src.addr);
  }
  if (!blank.subarray(ru.ind.size).every((b) => b === 0xcc))
    p(`${ru.ind.section}: bytes after the table other than the copies are not 0xCC`);
  return copies;
}

/** The original code: the image's with the recorded bytes put back at the sites, checked against
 *  the recorded hash (undefined: a site lies outside the code). */
function rebuildOriginal(
  ru: RecordUlib,
  code: Buffer,
  textAddr: bigint,
  p: (msg: string) => void,
): Buffer | undefined {
  const { orig, outside } = putBack(ru, code, textAddr);
  for (const a of outside) p(`site ${a} lies outside ${ru.text}`);
  if (outside.length) return undefined;
  if (createHash('sha256').update(orig).digest('hex') !== ru.textSha256)
    p(`${ru.text} differs from the original outside the recorded sites`);
  return orig;
}

/** The code with the recorded original bytes put back at the sites; the sites that do not fit. */
function putBack(
  ru: RecordUlib,
  code: Buffer,
  textAddr: bigint,
): { orig: Buffer; outside: string[] } {
  const orig = Buffer.from(code);
  const outside: string[] = [];
  for (const s of ru.sites) {
    const off = Number(BigInt(s.a) - textAddr),
      o = Buffer.from(s.o, 'hex');
    if (off < 0 || off + o.length > orig.length || !o.length) outside.push(s.a);
    else o.copy(orig, off);
  }
  return { orig, outside };
}

/** Nothing missed: the original code has exactly the recorded sites. Returns the analysis. */
function checkAnalysis(
  sh: Shared,
  ru: RecordUlib,
  u: RewriteUlib | undefined,
  orig: Buffer,
  p: (msg: string) => void,
): ImageSite[] | undefined {
  if (!u) {
    p('not in the recorded plan');
    return undefined;
  }
  try {
    const a = analyzeUlib(sh.elf, u, sh.rec.mode, orig);
    const want = (a?.sites ?? []).map((s) => `${hex(s.insn.ip)}:${s.kind}`).join(' ');
    const got = ru.sites.map((s) => `${s.a}:${s.k}`).join(' ');
    if (want !== got)
      p(
        `the recorded sites are not the ones the original code needs (recorded ${ru.sites.length}, needed ${a?.sites.length ?? 0})`,
      );
    return a?.sites;
  } catch (e) {
    // A user's image or record that cannot be analysed is a problem; a bug is not.
    if (!isSpacerError(e)) throw e;
    p(`the original code cannot be analysed (${e.message})`);
    return undefined;
  }
}

/** The µlib's own data (its sections other than its code): what an `abs` entry may address. */
function ownDataOf(elf: ElfFile, ru: RecordUlib, u: RewriteUlib | undefined) {
  const ranges = (u?.sections ?? [])
    .filter((n) => n !== ru.text)
    .map((n) => elf.section(n))
    .filter((x) => x !== undefined)
    .map((x) => [x!.addr, x!.addr + x!.size] as const);
  return (v: bigint) => ranges.some(([lo, hi]) => v >= lo && v < hi);
}

/** A fresh encoding of the recorded sites gives this table, pointer area, stubs and code. */
function checkFresh(
  sh: Shared,
  ru: RecordUlib,
  u: RewriteUlib | undefined,
  { text, ind, code, table, ptr }: Areas,
  orig: Buffer,
  analysed: ImageSite[] | undefined,
  p: (msg: string) => void,
): void {
  const st = sh.stubsOf(ru.name);
  const slots = st ? slotsAfterStubs(st) : BigInt(ru.ptr?.addr ?? 0),
    stubPart = ru.ptr ? Number(slots - BigInt(ru.ptr.addr)) : 0;
  const fresh: { table: Buffer; code: Buffer; ptr?: Buffer } | string = ru.ptr
    ? reencodePi(
        ru.sites,
        analysed,
        ind.addr,
        ru.ind.size,
        slots,
        ru.ptr.size - stubPart,
        text.addr,
        orig,
        ru.name,
        sh.canonOf,
        u?.own,
      )
    : reencode(ru.sites, ind.addr, ru.ind.size, text.addr, orig, ru.name);
  if (typeof fresh === 'string') {
    p(fresh);
    return;
  }
  const dt = firstDiff(fresh.table.subarray(0, ru.ind.used), table.subarray(0, ru.ind.used));
  if (dt >= 0 || fresh.table.length !== table.length)
    p(
      `${ru.ind.section}: byte at ${hex(ind.addr + BigInt(Math.max(dt, 0)))} differs from a fresh encoding of the recorded sites`,
    );
  if (ptr && fresh.ptr && !fresh.ptr.equals(ptr.bytes.subarray(stubPart)))
    p(`${ru.ptr!.section}: differs from a fresh encoding of the recorded sites`);
  if (ptr && st) checkStubs(ru, text, ptr, st, p);
  const dc = firstDiff(fresh.code, code);
  if (dc >= 0)
    p(
      `${ru.text}: byte at ${hex(text.addr + BigInt(dc))} differs from a fresh rewrite of the recorded sites`,
    );
}

/** The stubs: one `jmp entry` each, to the µlib's own code, in address order. */
function checkStubs(
  ru: RecordUlib,
  text: Section,
  ptr: { addr: bigint; bytes: Buffer },
  st: UlibStubs,
  p: (msg: string) => void,
): void {
  const b = ptr.bytes;
  st.targets.forEach((t, k) => {
    const J = decodeOne(b.subarray(k * STUB, k * STUB + STUB), st.at + BigInt(k * STUB));
    if (J.code !== Code.Jmp_rel32_64 || J.target !== t)
      p(`${ru.ptr!.section}: entry stub ${k} does not jump to ${hex(t)}`);
    if (t < text.addr || t >= text.addr + text.size || (k && t <= st.targets[k - 1]))
      p(`${ru.ptr!.section}: entry ${hex(t)} is not in ${ru.text} or not in order`);
  });
  if (st.at !== ptr.addr)
    p(`${ru.ptr!.section}: the stubs are recorded at ${hex(st.at)}, not at the area's start`);
}

/** ASLR mode: data fields hold the stub of the entry they held, and none still an entry. */
function checkDataFields(elf: ElfFile, rec: RewriteRecord, canon: Map<bigint, bigint>): string[] {
  const problems: string[] = [];
  const ranges = new Map<number, [bigint, bigint]>();
  for (const x of rec.ulibs) {
    const t = x.stubs && elf.section(x.text);
    if (t) ranges.set(t.index, [t.addr, t.addr + t.size]);
  }
  for (const f of dataAddressFields(elf, ranges)) {
    if (canon.has(f.value))
      problems.push(
        `${f.sec.name}: the address field at ${hex(f.at)} still holds entry ${hex(f.value)}, not its stub`,
      );
  }
  const secs = dataSections(elf);
  for (const d of rec.data ?? []) {
    const at = BigInt(d.a),
      o = BigInt(d.o);
    const sec = secs.find((x) => at >= x.addr && at < x.addr + x.size);
    const v = sec ? readAddress(elf.contents(sec), Number(at - sec.addr), d.r) : undefined;
    if (!canon.has(o)) problems.push(`data field ${d.a}: its original value ${d.o} is no entry`);
    else if (v !== canon.get(o))
      problems.push(
        `data field ${d.a}: holds ${v === undefined ? 'nothing readable' : hex(v)}, not the stub ${hex(canon.get(o)!)} of ${d.o}`,
      );
  }
  return problems;
}
