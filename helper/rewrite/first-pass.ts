// First pass, at `spacer link` time, on a µlib's libNAME.o: how many bytes its indirection table
// (and, in ASLR mode, its pointer area) needs so that it can never overflow in any image.
import {
  ElfFile,
  EM_X86_64,
  ET_REL,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHF_TLS,
  SHN_UNDEF,
  type ElfSymbol,
  type Relocation,
  type Section,
} from '../elf.js';
import { SpacerError } from '../errors.js';
import {
  entryBound,
  R_X86_64,
  SLOT_LOAD_BOUND,
  slotLoadCode,
  type Mode,
  type Place,
  type Site,
} from '../x86/classify.js';
import { Code } from '../x86/decode.js';
import { codeExtents, decodeCode, undecidedLine } from '../x86/extents.js';
import { NARROW_SLOT, narrowLoad, piBound, piPlan, PTR_SLOT } from '../x86/pi.js';
import { encodePi } from '../x86/pi-encode.js';
import { slotKey } from '../x86/pi-table.js';
import { STUB, isEntrySymbol } from '../x86/entries.js';
import { hex } from '../util/units.js';
import { codeRefs, dataOutside, sitesIn, targetsOf } from './analyze.js';
import { checkMode } from './types.js';

export interface IndNeeds {
  /** Table bytes that can never overflow for this object, in any image. */
  bytes: number;
  /** Instructions that refer outside the µlib. */
  sites: number;
  /**
   * Distinct branch targets (one stub each), moved instructions, distinct lea targets (GOT slots).
   */
  stubs: number;
  trampolines: number;
  got: number;
  /**
   * Relocations in the object's data/rodata that point outside: they cannot be shared, only
   * reported.
   */
  dataPointers: number;
  /** ASLR mode: bytes of the µlib's pointer area (its entry stubs, then 8-byte slots per site). */
  ptrBytes: number;
  /** ASLR mode: functions of other µlibs it calls or jumps to directly (by name, first call first):
   *  candidates for a copy after its table (x86/clone.ts). */
  calls: string[];
  /**
   * Functions left as linked because data inside them could not be told from code (one line each).
   */
  undecided: string[];
  /**
   * ASLR mode: its code holds bytes that depend on where the code lands (data in code with
   * addresses, functions left as linked), or its loaded unwind tables describe its code, so its
   * pages are the same in every image only if it is never shuffled (allocateAslr keeps its place).
   */
  pinned: boolean;
}

export type SlotKind = 'text' | 'rodata' | 'data' | 'bss';

/**
 * The µlib slot an input section of an object lands in (the platform's generic patterns
 * `.text .text.*`, `.rodata .rodata.*`, `.data .data.*`, `.bss .bss.*`), or undefined for
 * sections that go elsewhere: the boot head (`.text.boot`, `.data.boot`, claimed first by the
 * platform's `.text`), TLS, global tables (`.uk_inittab*`, ...).
 */
export function inputSlot(s: Section): SlotKind | undefined {
  if (!(s.flags & SHF_ALLOC) || s.flags & SHF_TLS) return undefined;
  const n = s.name;
  const is = (p: string) => n === p || n.startsWith(`${p}.`);
  if (is('.text')) return is('.text.boot') ? undefined : 'text';
  if (is('.rodata')) return 'rodata';
  if (is('.data')) return is('.data.boot') ? undefined : 'data';
  if (is('.bss')) return 'bss';
  return undefined;
}

/** What the sites of one object add up to while its sections are read. */
interface Tally {
  bytes: number;
  sites: number;
  trampolines: number;
  dataPointers: number;
  ptrBytes: number;
  stubs: Set<string>;
  got: Set<string>;
  slotKeys: Set<string>;
  calls: Set<string>;
  undecided: string[];
  /** Relocations left as linked in the code that change with its position. */
  linked: number;
}

/** The object being sized: where it is, its symbols, and the slot each section lands in. */
interface ObjectContext {
  objPath: string;
  elf: ElfFile;
  syms: ElfSymbol[];
  slot: (SlotKind | undefined)[];
  mode: Mode;
  ownAbs: boolean;
  /** ASLR mode: the µlib keeps its place (allocateAslr), so its own data is at a fixed distance. */
  pinned: boolean;
}

/**
 * First pass, at `spacer link` time: how big `.ind.<ulib>` must be for this object. Decides per
 * relocation in the code that lands in `.text.<ulib>` (by type, by where its symbol is defined,
 * and by mode), decodes the code to know each site's instruction, and bounds each entry.
 */
export function indirectionNeeds(
  objPath: string,
  mode: Mode = 'external',
  ownAbs = false,
  pinned = false,
): IndNeeds {
  checkMode(mode, objPath);
  const elf = ElfFile.load(objPath);
  if (elf.header.type !== ET_REL)
    throw new SpacerError(
      `${objPath}: not a relocatable object (ELF type ${elf.header.type}); pass the µlib's libNAME.o`,
    );
  if (elf.header.class !== 64 || elf.header.machine !== EM_X86_64)
    throw new SpacerError(
      `${objPath}: not an x86-64 ELF64 object; the rewriter handles x86-64 µlibs only`,
    );
  const ctx: ObjectContext = {
    objPath,
    elf,
    syms: elf.symbols(),
    slot: elf.sections.map(inputSlot),
    mode,
    ownAbs,
    pinned,
  };
  const t: Tally = {
    bytes: 0,
    sites: 0,
    trampolines: 0,
    dataPointers: 0,
    ptrBytes: 0,
    stubs: new Set(),
    got: new Set(),
    slotKeys: new Set(),
    calls: new Set(),
    undecided: [],
    linked: 0,
  };
  for (const s of elf.sections) {
    const k = ctx.slot[s.index];
    if (!k) continue;
    const relocs = elf.relocationsFor(s);
    if (!relocs.length) continue;
    if (k === 'text') {
      if (s.flags & SHF_EXECINSTR) tallyCode(ctx, s, relocs, t);
    } else tallyData(ctx, relocs, t);
  }
  // Stubs and GOT slots are shared per target; up to 7 bytes align the GOT slots.
  if (mode !== 'aslr')
    t.bytes +=
      t.stubs.size * entryBound('stub', 5) + t.got.size * entryBound('got', 7) + (t.sites ? 7 : 0);
  else t.ptrBytes += (pinned ? 0 : entryCount(ctx)) * STUB + 7;
  return {
    bytes: t.bytes,
    sites: t.sites,
    stubs: t.stubs.size,
    trampolines: t.trampolines,
    got: t.got.size,
    dataPointers: t.dataPointers,
    ptrBytes: t.ptrBytes,
    calls: [...t.calls],
    undecided: t.undecided,
    pinned: mode === 'aslr' && (t.linked > 0 || t.undecided.length > 0 || unwindsOwnCode(ctx)),
  };
}

/**
 * Loaded unwind tables (`.eh_frame`) that describe this object's code: their PC-relative addresses,
 * and the image's `.eh_frame_hdr` sorted by them, would change with a shuffle, so the µlib keeps
 * its place (on real Unikraft: hand-written assembly with CFI, such as the context switch).
 */
function unwindsOwnCode({ elf, syms, slot }: ObjectContext): boolean {
  return elf.sections.some(
    (s) =>
      s.name === '.eh_frame' &&
      (s.flags & SHF_ALLOC) !== 0n &&
      elf.relocationsFor(s).some((r) => {
        const at = syms[r.sym]?.shndx ?? -1;
        return slot[at] === 'text' && (elf.sections[at].flags & SHF_EXECINSTR) !== 0n;
      }),
  );
}

/** Where a relocation's symbol lives, seen from the object's code. */
function placeFromText(ctx: ObjectContext) {
  return (shndx: number): Place => {
    const k = ctx.slot[shndx];
    return k === undefined ? 'foreign' : k === 'text' ? 'same' : 'own';
  };
}

/** The sites of one code section: decoded (code only, x86/extents.ts), found and bounded. */
function tallyCode(ctx: ObjectContext, s: Section, relocs: readonly Relocation[], t: Tally): void {
  const { objPath, elf, syms, mode } = ctx;
  const code0 = elf.contents(s);
  // Only what the object says is code is decoded (x86/extents.ts); the rest is data.
  const {
    insns,
    code,
    undecided: left,
  } = decodeCode(
    code0,
    0n,
    codeExtents(syms, s.index, 0n, s.size),
    relocs.map((r) => ({ at: r.offset, type: r.type })),
  );
  for (const u of left) t.undecided.push(undecidedLine(`${objPath}: ${s.name}`, u));
  const place = placeFromText(ctx);
  const refs = codeRefs(relocs, syms, place);
  const found = sitesIn(insns, refs, mode, (at) => `${objPath}: ${s.name}+${hex(at)}`, code, {
    ownAbs: ctx.ownAbs,
    pinned: ctx.pinned,
  });
  t.dataPointers += code.data.length;
  t.linked += code.data.length;
  const relocAt = new Map(relocs.map((r) => [r.offset, r]));
  for (const site of found) {
    t.sites++;
    if (mode === 'aslr') {
      const callee = directCallee(site, relocAt, syms);
      if (callee) t.calls.add(callee);
      tallyAslrEntry(ctx, site, code0, t);
    }
    if (site.relaxable) {
      // ld may turn it into another form of the same length: budget the largest entry.
      t.trampolines++;
      if (mode !== 'aslr') t.bytes += entryBound('trampoline', site.insn.len);
    } else if (site.kind === 'stub') t.stubs.add(site.key);
    else if (site.kind === 'got') t.got.add(site.key);
    else if (mode !== 'aslr' && ctx.ownAbs && slotLoadOf(site)) {
      // Its trampoline loads the address from a GOT slot (rewrite/external.ts).
      t.trampolines++;
      t.got.add(site.key);
      t.bytes += SLOT_LOAD_BOUND;
    } else {
      t.trampolines++;
      if (mode !== 'aslr') t.bytes += entryBound(site.kind, site.insn.len);
    }
  }
}

/** The load a slot-load trampoline would hold for this site (x86/classify.ts), or undefined. */
function slotLoadOf(site: Site) {
  return slotLoadCode(
    site.insn,
    site.refs.filter((x) => x.outside).map((x) => x.op),
  );
}

/** A direct call or tail jump to the start of a function another µlib defines: its name. */
function directCallee(
  site: Site,
  relocAt: Map<bigint, Relocation>,
  syms: ElfSymbol[],
): string | undefined {
  if (
    site.kind !== 'stub' ||
    (site.insn.code !== Code.Call_rel32_64 && site.insn.code !== Code.Jmp_rel32_64)
  )
    return undefined;
  const r = relocAt.get(site.insn.ip + BigInt(site.insn.len) - 4n),
    y = r && syms[r.sym];
  if (
    r &&
    y &&
    y.shndx === SHN_UNDEF &&
    y.name &&
    (r.type === R_X86_64.PLT32 || r.type === R_X86_64.PC32) &&
    r.addend === -4n
  )
    return y.name;
  return undefined;
}

/**
 * ASLR mode: one position-independent entry per site, or its classic entry if no form fits (a
 * table with no pointer area has classic entries only; their shared total is smaller). An entry's
 * length does not depend on addresses, so it is encoded here once to know it exactly; a site ld
 * may relax into another form gets the largest bound.
 */
function tallyAslrEntry(ctx: ObjectContext, site: Site, code0: Buffer, t: Tally): void {
  const classic = site.relaxable
    ? entryBound('trampoline', site.insn.len)
    : entryBound(site.kind, site.insn.len) + (site.kind === 'got' ? 7 : 0);
  const outsideOps = site.refs.filter((x) => x.outside).map((x) => x.op);
  const orig = Buffer.from(
    code0.subarray(Number(site.insn.ip), Number(site.insn.ip) + site.insn.len),
  );
  // Sized for the form with a pointer slot even where the entry may hold the address of the
  // µlib's own data (abs): whether it may depends on where the µlib is placed.
  const plan = site.relaxable ? undefined : piPlan(orig, site.insn.ip, site.kind, outsideOps);
  const exact = plan
    ? encodePi(orig, site.insn.ip, plan, 0x4000_0000n, 0x6000_0000n, ctx.objPath).length
    : undefined;
  t.bytes +=
    exact !== undefined
      ? Math.max(exact, classic)
      : Math.max(piBound(site.insn.len, outsideOps.length), classic);
  // Sites that name the same target share its slot (a site ld may relax keeps its own).
  // A load into a 32-bit register reads a 4-byte slot of its own key (x86/pi-table.ts).
  const narrow = plan?.form === 'load' && narrowLoad(site.insn.code);
  const key = plan && slotKey(plan, outsideOps, targetsOf(site.refs), narrow);
  if (key === undefined) t.ptrBytes += Math.max(1, outsideOps.length) * PTR_SLOT;
  else if (!t.slotKeys.has(key)) {
    t.slotKeys.add(key);
    t.ptrBytes += narrow ? NARROW_SLOT : (plan!.form === 'mem2' ? 2 : 1) * PTR_SLOT;
  }
}

/** Relocations in the object's data that point outside: counted, not rewritable. */
function tallyData(ctx: ObjectContext, relocs: readonly Relocation[], t: Tally): void {
  const place = placeFromText(ctx);
  for (const r of relocs) {
    // Judged from the code's side: a pointer to the µlib's own code moves with it in ASLR mode.
    if (dataOutside(r, ctx.syms, place, ctx.mode, ctx.ownAbs, ctx.pinned)) t.dataPointers++;
  }
}

/**
 * ASLR mode, a bound on the µlib's entry stubs: its global code symbols and every address of its
 * code it takes (each relocation into its code that is not a call), one per distinct address, as
 * the rewrite makes them (a switch table's cases repeat: nolibc's 384 fields name 182 places, and
 * a bound per field cost every image a kilobyte of pointer area). The slots then start on 8 bytes.
 */
function entryCount({ elf, syms, slot }: ObjectContext): number {
  const isCode = (shndx: number) =>
    slot[shndx] === 'text' &&
    !!elf.sections[shndx] &&
    (elf.sections[shndx].flags & SHF_EXECINSTR) !== 0n;
  const at = new Set<string>();
  for (const y of syms)
    if (isCode(y.shndx) && isEntrySymbol(y, y.shndx)) at.add(`${y.shndx}:${y.value}`);
  for (const sec of elf.sections) {
    // its slots, and its parts of global tables (.uk_inittab, ...)
    if (!(sec.flags & SHF_ALLOC)) continue;
    for (const r of elf.relocationsFor(sec)) {
      const y = syms[r.sym];
      if (r.type === R_X86_64.PLT32 || !y || !isCode(y.shndx)) continue;
      // An absolute field holds S + A; where a PC-relative one points depends on its instruction:
      // each of those counts on its own.
      const abs = r.type === R_X86_64._64 || r.type === R_X86_64._32 || r.type === R_X86_64._32S;
      at.add(
        abs ? `${y.shndx}:${BigInt(y.value) + BigInt(r.addend)}` : `pc:${sec.index}:${r.offset}`,
      );
    }
  }
  return at.size;
}
