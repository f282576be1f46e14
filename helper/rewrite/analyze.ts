// The analysis of one µlib in a linked image: every instruction of `.text.<ulib>` whose relocation
// points outside the µlib (per mode), and the data relocations that do. The rewrite acts on it;
// verify runs it again on the rebuilt original code.
import {
  ElfFile,
  SHF_EXECINSTR,
  SHT_PROGBITS,
  type ElfSymbol,
  type Relocation,
  type Section,
} from '../elf.js';
import { SpacerError } from '../errors.js';
import {
  findSites,
  isOutside,
  siteKind,
  slotLoadCode,
  slotLoadValue,
  refersToOwnData,
  relocClass,
  symbolKey,
  symbolPlace,
  R_X86_64,
  type CodeMap,
  type CodeRef,
  type Mode,
  type Operand,
  type Place,
  type Site,
} from '../x86/classify.js';
import { Code, decodeOne, findInsn, type Insn } from '../x86/decode.js';
import { codeExtents, decodeCode } from '../x86/extents.js';
import { hex } from '../util/units.js';
import { cacheUse } from '../cache/store.js';
import { cachedFound, canonicalSymbols, foundKey, namedBack, type FoundInputs } from './cache.js';
import { type ImageSite, type RewriteUlib, type UlibAnalysis } from './types.js';

/** The targets of a site's outside operands, by operand. */
/** The code's relocations as findSites reads them: where the symbol lies, and which it is. */
export function codeRefs(
  relocs: readonly Relocation[],
  syms: ElfSymbol[],
  place: (shndx: number) => Place,
): CodeRef[] {
  return relocs.map((r) => ({
    at: r.offset,
    type: r.type,
    place: symbolPlace(syms[r.sym], place),
    symKey: symbolKey(syms[r.sym]),
    addend: r.addend,
  }));
}

/** The sites of decoded code (findSites), failing in one line that names where (`at`'s place). */
export function sitesIn(
  insns: Insn[],
  refs: CodeRef[],
  mode: Mode,
  where: (at: bigint) => string,
  code: CodeMap,
  forms: { ownAbs: boolean; pinned: boolean },
  moved: readonly bigint[] = [],
  /** The whole decode of an instruction (decodeCode details only those with relocations). */
  full: (i: Insn) => Insn = (i) => i,
): Site[] {
  const fail = (at: bigint, msg: string): never => {
    throw new SpacerError(`${where(at)}: ${msg}; the µlib cannot be rewritten`);
  };
  const find = (a: bigint) => findInsn(insns, a);
  const sites = findSites(insns, refs, mode, find, fail, code, forms.ownAbs, forms.pinned);
  return moved.length ? withMoved(sites, insns, moved, find, full, mode) : sites;
}

/**
 * Adds the instructions at `at` (moved though no relocation names them: they differ between the
 * µlib's variants, layout/moved.ts) as trampoline sites, in address order. One that is not a whole
 * instruction here, or that cannot be moved, is left as it is (its page then differs).
 */
function withMoved(
  sites: Site[],
  insns: Insn[],
  at: readonly bigint[],
  find: (a: bigint) => number,
  full: (i: Insn) => Insn,
  mode: Mode,
): Site[] {
  const have = new Set(sites.map((s) => s.insn.ip));
  const extra: Site[] = [];
  for (const a of at) {
    const k = find(a);
    const i = k < 0 || insns[k].ip !== a || insns[k].invalid ? undefined : full(insns[k]);
    if (!i || i.invalid || have.has(a) || siteKind(i, []) !== 'trampoline') continue;
    const key = `moved:${hex(a)}`;
    // ASLR mode: a `mov reg, imm32` takes its immediate from a pointer slot of its own (the
    // entry is then the same in every app, the slot is in the image's pointer area), as if a
    // relocation named it; the plain layout's rewrite gives it a GOT slot (external.ts).
    const load = mode === 'aslr' && slotLoadCode(i, ['imm']) !== undefined;
    const type = i.code === Code.Mov_r32_imm32 ? R_X86_64._32 : R_X86_64._32S;
    extra.push({
      insn: i,
      kind: 'trampoline',
      refs: load ? [{ type, op: 'imm', outside: true, target: key, place: 'own' }] : [],
      relaxable: false,
      key,
    });
    have.add(a);
  }
  return [...sites, ...extra].sort((x, y) =>
    x.insn.ip < y.insn.ip ? -1 : x.insn.ip > y.insn.ip ? 1 : 0,
  );
}

/** A data relocation that points outside the µlib, judged from its code's side. */
export function dataOutside(
  r: Relocation,
  syms: ElfSymbol[],
  place: (shndx: number) => Place,
  mode: Mode,
  ownAbs = false,
  pinned = false,
): boolean {
  return isOutside(
    relocClass(r.type) ?? 'abs',
    symbolPlace(syms[r.sym], place),
    mode,
    ownAbs,
    pinned,
  );
}

export function targetsOf(refs: Site['refs']): Partial<Record<Operand, string>> {
  return Object.fromEntries(refs.filter((x) => x.outside).map((x) => [x.op, x.target]));
}

function readField(code: Buffer, off: number, size: number, type: number): bigint {
  if (size === 8) return code.readBigUInt64LE(off);
  if (size === 4)
    return type === R_X86_64._32
      ? BigInt(code.readUInt32LE(off))
      : BigInt.asUintN(64, BigInt(code.readInt32LE(off)));
  if (size === 2) return BigInt(code.readUInt16LE(off));
  return BigInt(code[off] ?? 0);
}

/** What the decode of a µlib's code reads, gathered once (the cache's key is made of it). */
interface Prepared {
  where: string;
  text: Section;
  hi: bigint;
  place: (shndx: number) => Place;
  inputs: FoundInputs;
  /** The image's names of the symbols `inputs` numbers by order of use. */
  names: string[];
}

function prepare(elf: ElfFile, u: RewriteUlib, mode: Mode, code?: Buffer): Prepared | undefined {
  const where = `${elf.path}: ${u.name}`;
  const text = elf.section(u.text);
  if (!text) return undefined; // all of it dropped by --gc-sections
  if (text.type !== SHT_PROGBITS || !(text.flags & SHF_EXECINSTR))
    throw new SpacerError(`${where}: ${u.text} is not a code section; check the plan`);
  const own = new Set<number>();
  for (const name of [u.text, ...u.sections]) {
    const s = elf.section(name);
    if (s) own.add(s.index);
  }
  const syms = elf.symbols();
  const place = (shndx: number): Place =>
    shndx === text.index ? 'same' : own.has(shndx) ? 'own' : 'foreign';
  // A view of the image's bytes: nothing below writes to it.
  const bytes = code ?? elf.contents(text);
  const lo = text.addr,
    hi = text.addr + text.size;
  const relocs = elf.relocationsFor(text);
  for (const r of relocs) {
    if (r.offset < lo || r.offset >= hi)
      throw new SpacerError(
        `${where}: relocation at ${hex(r.offset)} lies outside ${u.text}; pass the executable linked with -Wl,--emit-relocs`,
      );
  }
  const forms = { ownAbs: !!u.ownAbs, pinned: mode === 'aslr' && !!u.pinned };
  const extents = codeExtents(syms, text.index, lo, hi);
  // Symbols named by their order in this code, not by the image's symbol numbers (which change
  // when any other µlib does): the same code at the same address gives the same key everywhere.
  const canon = canonicalSymbols(codeRefs(relocs, syms, place));
  const inputs = { mode, forms, lo, bytes, extents, refs: canon.refs, moved: u.moved ?? [] };
  return { where, text, hi, place, inputs, names: canon.names };
}

/** The cache key of `analyzeUlib(elf, u, mode, code)` (undefined: no code). */
export function analysisKey(
  elf: ElfFile,
  u: RewriteUlib,
  mode: Mode,
  code?: Buffer,
): string | undefined {
  const p = prepare(elf, u, mode, code);
  return p && foundKey(p.inputs);
}

/**
 * Finds the sites of one µlib in a linked image: every instruction of `.text.<ulib>` with a
 * relocation that points outside (per mode), and the data relocations that do. `code` replaces
 * the section's bytes (verification passes the reconstructed original).
 */
export function analyzeUlib(
  elf: ElfFile,
  u: RewriteUlib,
  mode: Mode,
  code?: Buffer,
): UlibAnalysis | undefined {
  const p = prepare(elf, u, mode, code);
  if (!p) return undefined;
  const { where, text, hi, inputs: x } = p;
  const lo = x.lo,
    bytes = Buffer.from(x.bytes.buffer, x.bytes.byteOffset, x.bytes.length);
  const fail = (at: bigint, msg: string): never => {
    throw new SpacerError(`${where}: ${hex(at)}: ${msg}; the µlib cannot be rewritten`);
  };
  const key = cacheUse.dir ? foundKey(x) : undefined;
  // The decode and its sites: what the cache keeps (rewrite/cache.ts), then named back.
  const cached = cachedFound(x, key, () => {
    const d = decodeCode(bytes, lo, x.extents, x.refs);
    const where1 = (at: bigint) => `${where}: ${hex(at)}`;
    const moved = x.moved.map((o) => lo + BigInt(o));
    const full = (i: Insn) =>
      decodeOne(bytes.subarray(Number(i.ip - lo), Number(i.ip - lo) + i.len), i.ip);
    const sites = sitesIn(d.insns, [...x.refs], mode, where1, d.code, x.forms, moved, full);
    const inside = d.insns.filter((i) => i.nearBranch && i.target > lo && i.target < hi);
    return { sites, data: d.code.data, targets: inside.map((i) => i.target) };
  });
  const found = namedBack(cached, p.names);
  const sites = found.sites.map((y) => imageSite(y, bytes, lo, mode === 'aslr' && !u.named));
  // Data relocations of the µlib's other sections (and data within its code); those into its own
  // code are branch targets too.
  const dataPointers: bigint[] = found.data.map((r) => r.at);
  const targets: bigint[] = [...found.targets];
  dataRefs(elf, u, text, mode, p.place, dataPointers, targets);
  enteredAtStart(sites, targets, lo, hi, fail);
  return { text, sites, dataPointers, ...(key ? { key } : {}) };
}

/** A site as the rewrite needs it: what it referred to, its original bytes and outside operands. */
function imageSite(s: Site, bytes: Buffer, lo: bigint, ownDataCounts: boolean): ImageSite {
  const i = s.insn,
    off = Number(i.ip - lo);
  let target: bigint;
  if (s.kind === 'stub') target = i.target;
  else if (s.kind === 'got') target = i.memAddr;
  else {
    const r = s.refs.find((x) => x.outside);
    // Moved though no relocation names it (withMoved): its immediate, if it loads one.
    target = !r
      ? slotLoadCode(i, ['imm']) !== undefined
        ? slotLoadValue(i, bytes.subarray(off, off + i.len))
        : i.ip
      : r.op === 'disp'
        ? i.memAddr
        : r.op === 'imm'
          ? readField(bytes, off + i.immOff, i.immSize, r.type)
          : r.op === 'imm2'
            ? readField(bytes, off + i.imm2Off, i.imm2Size, r.type)
            : i.target;
  }
  return {
    insn: i,
    kind: s.kind,
    target,
    orig: Buffer.from(bytes.subarray(off, off + i.len)),
    outside: s.refs.filter((x) => x.outside).map((x) => x.op),
    targets: targetsOf(s.refs),
    // A name slot holds each image's own variant, laid out its own way: its data addresses
    // differ.
    ownData: ownDataCounts && refersToOwnData(s.refs),
  };
}

/**
 * The relocations of the µlib's sections other than its code: those that point outside go to
 * `dataPointers`, the addresses they hold to `targets`.
 */
function dataRefs(
  elf: ElfFile,
  u: RewriteUlib,
  text: Section,
  mode: Mode,
  place: (shndx: number) => Place,
  dataPointers: bigint[],
  targets: bigint[],
): void {
  const syms = elf.symbols();
  for (const name of new Set(u.sections)) {
    const s = elf.section(name);
    if (!s || s.index === text.index || s.flags & SHF_EXECINSTR) continue;
    const data = elf.contents(s);
    for (const r of elf.relocationsFor(s)) {
      if (relocClass(r.type) === 'ignore') continue;
      if (dataOutside(r, syms, place, mode, !!u.ownAbs, mode === 'aslr' && u.pinned))
        dataPointers.push(r.offset);
      const off = r.offset - s.addr;
      if (off >= 0n && off + 8n <= BigInt(data.length) && r.type === R_X86_64._64)
        targets.push(data.readBigUInt64LE(Number(off)));
      else if (
        off >= 0n &&
        off + 4n <= BigInt(data.length) &&
        (r.type === R_X86_64._32 || r.type === R_X86_64._32S)
      )
        targets.push(BigInt(data.readUInt32LE(Number(off))));
    }
  }
}

/**
 * A redirected site must be entered at its first byte only: a branch into its middle means the
 * linear decode went out of step (data in code), and the rewrite would break that branch.
 */
function enteredAtStart(
  sites: ImageSite[],
  targets: bigint[],
  lo: bigint,
  hi: bigint,
  fail: (at: bigint, msg: string) => never,
): void {
  const sorted = targets
    .filter((t) => t > lo && t < hi)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const s of sites) {
    const a = s.insn.ip,
      b = a + BigInt(s.insn.len);
    let l = 0,
      h = sorted.length;
    while (l < h) {
      const m = (l + h) >> 1;
      if (sorted[m] <= a) l = m + 1;
      else h = m;
    }
    if (l < sorted.length && sorted[l] < b)
      fail(
        sorted[l],
        `a branch or code pointer targets the middle of the instruction at ${hex(a)} (data in code?)`,
      );
  }
}
