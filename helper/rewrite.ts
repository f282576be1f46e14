// The indirection rewriter. A µlib placed at fixed addresses still has code bytes that encode
// addresses outside itself (calls into other µlibs, RIP-relative loads of their data, absolute
// addresses, TLS offsets, linker-script symbols); those differ between images, so its code pages
// would too. After the link, every such instruction of `.text.<ulib>` is redirected through the
// µlib's indirection table `.ind.<ulib>` (reserved by the linker script): the code keeps its
// length and only refers to the table, which is the one part that differs between images.
//
//   indirectionNeeds(obj, mode)   first pass, on libNAME.o: a table size that can never overflow
//   rewriteImage(dbg, plan, mode) the rewrite of a linked image (needs -Wl,--emit-relocs)
//   verifyImage(dbg)              in verify.ts: proves every redirected site reaches what it did
//
// The x86 parts live in x86/: decode.ts (iced-x86 decoding), classify.ts (which relocations point
// outside and how each site is redirected), tactics.ts (patching a site in place), table.ts (the
// table's layout and entries). What was done is recorded in the non-loaded section
// `.spacer.rewrite` (JSON), which makes the rewrite verifiable and a second run a no-op.
import { createHash } from 'node:crypto';
import { chmodSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { execa } from 'execa';
import {
  ElfFile,
  EM_X86_64,
  ET_EXEC,
  ET_REL,
  STT_FUNC,
  PT_LOAD,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHF_TLS,
  SHN_UNDEF,
  SHT_PROGBITS,
  SHT_REL,
  SHT_RELA,
  type ElfSymbol,
  type Section,
  num,
} from './elf.js';
import { SpacerError, isSpacerError } from './errors.js';
import {
  MODES,
  type Operand,
  entryBound,
  findSites,
  isOutside,
  refersToOwnData,
  relocClass,
  symbolKey,
  symbolPlace,
  R_X86_64,
  type CodeRef,
  type Mode,
  type Place,
  type Site,
  type SiteKind,
} from './x86/classify.js';
import { Code, findInsn, hex, type Insn } from './x86/decode.js';
import { codeExtents, decodeCode, undecidedLine } from './x86/extents.js';
import { cloneLayout, cloneRefusal } from './x86/clone.js';
import { buildTable, TableError, type Move } from './x86/table.js';
import {
  buildPiTable,
  encodePi,
  patchPi,
  piBound,
  piPlan,
  PTR_SLOT,
  slotKey,
  type PiForm,
  type PiPlan,
  type PiTable,
} from './x86/pi.js';
import {
  STUB,
  dataAddressFields,
  isEntrySymbol,
  slotsAfterStubs,
  stubBytes,
  stubMap,
  writeAddress,
  type UlibStubs,
} from './x86/entries.js';
import { patchSite } from './x86/tactics.js';

export type { Mode, SiteKind };
export const REWRITE_SECTION = '.spacer.rewrite';
const PAGE = 4096n;

// ---------------------------------------------------------------------------------------------
// First pass: the object

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

function checkMode(mode: string, what: string): asserts mode is Mode {
  if (!MODES.includes(mode as Mode))
    throw new SpacerError(`${what}: unknown rewrite mode '${mode}'; use ${MODES.join(' or ')}`);
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
  const syms = elf.symbols();
  const slot = elf.sections.map(inputSlot);
  const placeFrom =
    (from: SlotKind) =>
    (shndx: number): Place => {
      const k = slot[shndx];
      return k === undefined ? 'foreign' : k === from ? 'same' : 'own';
    };
  let bytes = 0,
    sites = 0,
    trampolines = 0,
    dataPointers = 0,
    ptrBytes = 0;
  const stubs = new Set<string>(),
    got = new Set<string>(),
    slotKeys = new Set<string>(),
    calls = new Set<string>();
  const undecided: string[] = [];
  for (const s of elf.sections) {
    const k = slot[s.index];
    if (!k) continue;
    const relocs = elf.relocationsFor(s);
    if (!relocs.length) continue;
    if (k === 'text') {
      if (!(s.flags & SHF_EXECINSTR)) continue;
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
      for (const u of left) undecided.push(undecidedLine(`${objPath}: ${s.name}`, u));
      const refs: CodeRef[] = relocs.map((r) => ({
        at: r.offset,
        type: r.type,
        place: symbolPlace(syms[r.sym], placeFrom('text')),
        symKey: `${symbolKey(syms[r.sym])}`,
        addend: r.addend,
      }));
      const fail = (at: bigint, msg: string): never => {
        throw new SpacerError(
          `${objPath}: ${s.name}+${hex(at)}: ${msg}; the µlib cannot be rewritten`,
        );
      };
      const found = findSites(insns, refs, mode, (a) => findInsn(insns, a), fail, code, ownAbs);
      dataPointers += code.data.length;
      const relocAt = new Map(relocs.map((r) => [r.offset, r]));
      for (const site of found) {
        sites++;
        if (
          mode === 'aslr' &&
          site.kind === 'stub' &&
          (site.insn.code === Code.Call_rel32_64 || site.insn.code === Code.Jmp_rel32_64)
        ) {
          // A direct call or tail jump to the start of a function another µlib defines.
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
            calls.add(y.name);
        }
        if (mode === 'aslr') {
          // One position-independent entry per site, or its classic entry if no form fits (a table
          // with no pointer area has classic entries only; their shared total is smaller). An
          // entry's
          // length does not depend on addresses, so it is encoded here once to know it exactly; a
          // site ld may relax into another form gets the largest bound.
          const classic = site.relaxable
            ? entryBound('trampoline', site.insn.len)
            : entryBound(site.kind, site.insn.len) + (site.kind === 'got' ? 7 : 0);
          const outsideOps = site.refs.filter((x) => x.outside).map((x) => x.op);
          const orig = Buffer.from(
            code0.subarray(Number(site.insn.ip), Number(site.insn.ip) + site.insn.len),
          );
          // Sized for the form with a pointer slot even where the entry may hold the address of
          // the µlib's own data (abs): whether it may depends on where the µlib is placed.
          const plan = site.relaxable
            ? undefined
            : piPlan(orig, site.insn.ip, site.kind, outsideOps);
          const exact = plan
            ? encodePi(orig, site.insn.ip, plan, 0x4000_0000n, 0x6000_0000n, objPath).length
            : undefined;
          bytes +=
            exact !== undefined
              ? Math.max(exact, classic)
              : Math.max(piBound(site.insn.len, outsideOps.length), classic);
          // Sites that name the same target share its slot (a site ld may relax keeps its own).
          const key = plan && slotKey(plan, outsideOps, targetsOf(site.refs));
          if (key === undefined) ptrBytes += Math.max(1, outsideOps.length) * PTR_SLOT;
          else if (!slotKeys.has(key)) {
            slotKeys.add(key);
            ptrBytes += (plan!.form === 'mem2' ? 2 : 1) * PTR_SLOT;
          }
        }
        if (site.relaxable) {
          // ld may turn it into another form of the same length: budget the largest entry.
          trampolines++;
          if (mode !== 'aslr') bytes += entryBound('trampoline', site.insn.len);
        } else if (site.kind === 'stub') stubs.add(site.key);
        else if (site.kind === 'got') got.add(site.key);
        else {
          trampolines++;
          if (mode !== 'aslr') bytes += entryBound(site.kind, site.insn.len);
        }
      }
    } else {
      for (const r of relocs) {
        const cls = relocClass(r.type) ?? 'abs';
        // Judged from the code's side: a pointer to the µlib's own code moves with it in ASLR mode.
        if (
          cls !== 'ignore' &&
          isOutside(cls, symbolPlace(syms[r.sym], placeFrom('text')), mode, ownAbs)
        )
          dataPointers++;
      }
    }
  }
  // Stubs and GOT slots are shared per target; up to 7 bytes align the GOT slots.
  if (mode !== 'aslr')
    bytes += stubs.size * entryBound('stub', 5) + got.size * entryBound('got', 7) + (sites ? 7 : 0);
  else {
    // Entry stubs: its global code symbols and every address of its code it takes (a bound: each
    // relocation into its code that is not a call), then the slots start on 8 bytes.
    const isCode = (shndx: number) =>
      slot[shndx] === 'text' &&
      !!elf.sections[shndx] &&
      (elf.sections[shndx].flags & SHF_EXECINSTR) !== 0n;
    let entries = syms.filter((y) => isCode(y.shndx) && isEntrySymbol(y, y.shndx)).length;
    for (const sec of elf.sections) {
      // its slots, and its parts of global tables (.uk_inittab, ...)
      if (!(sec.flags & SHF_ALLOC)) continue;
      for (const r of elf.relocationsFor(sec))
        if (r.type !== R_X86_64.PLT32 && isCode(syms[r.sym]?.shndx ?? -1)) entries++;
    }
    ptrBytes += entries * STUB + 7;
  }
  return {
    bytes,
    sites,
    stubs: stubs.size,
    trampolines,
    got: got.size,
    dataPointers,
    ptrBytes,
    calls: [...calls],
    undecided,
  };
}

/** A `call rel32` or `jmp rel32`: the branches that may reach a copy of their target. */
export function isDirect(i: { code: number }): boolean {
  return i.code === Code.Call_rel32_64 || i.code === Code.Jmp_rel32_64;
}

/** Points the rel32 of the direct branch `i` in `code` (loaded at `base`) at `target`. */
export function retarget(
  code: Buffer,
  base: bigint,
  i: { ip: bigint; len: number },
  target: bigint,
  what: string,
): void {
  const rel = target - (i.ip + BigInt(i.len));
  if (rel < -(2n ** 31n) || rel >= 2n ** 31n)
    throw new SpacerError(`${what}: ${hex(target)} is out of reach of the branch at ${hex(i.ip)}`);
  code.writeInt32LE(Number(rel), Number(i.ip - base) + i.len - 4);
}

/** A function another µlib may call a copy of: where it is, its bytes, and why not, if not. */
export interface CloneSource {
  name: string;
  addr: bigint;
  bytes: Buffer;
  refusal?: string;
}

/**
 * The functions of `elf` (an object or a linked image) by name, for copies: global code symbols
 * with a size. `cloneSource` then says whether a copy of one runs the same anywhere.
 */
export function cloneSources(elf: ElfFile): (name: string) => CloneSource | undefined {
  const byName = new Map<string, ElfSymbol>();
  for (const y of elf.symbols()) {
    if (
      y.type !== STT_FUNC ||
      y.shndx === SHN_UNDEF ||
      y.bind === 0 /* local */ ||
      y.size <= 0n ||
      byName.has(y.name)
    )
      continue;
    const sec = elf.sections[y.shndx];
    if (sec && sec.type === SHT_PROGBITS && sec.flags & SHF_EXECINSTR) byName.set(y.name, y);
  }
  const relocs = new Map<number, bigint[]>();
  return (name) => {
    const y = byName.get(name);
    if (!y) return undefined;
    const sec = elf.sections[y.shndx];
    const base = elf.header.type === ET_REL ? 0n : sec.addr;
    const off = y.value - base;
    if (off < 0n || off + y.size > sec.size)
      return {
        name,
        addr: y.value,
        bytes: Buffer.alloc(0),
        refusal: 'its symbol lies outside its section',
      };
    const bytes = Buffer.from(elf.contents(sec).subarray(Number(off), Number(off + y.size)));
    let at = relocs.get(sec.index);
    if (!at) relocs.set(sec.index, (at = elf.relocationsFor(sec).map((r) => r.offset)));
    const refusal = cloneRefusal(bytes, y.value, at);
    return { name, addr: y.value, bytes, ...(refusal ? { refusal } : {}) };
  };
}

// ---------------------------------------------------------------------------------------------
// The image

export interface RewriteUlib {
  name: string;
  /** Its code section, `.text.<ulib>`. */
  text: string;
  /** All its output sections (text, rodata, data, bss, and any other `.<kind>.<ulib>`). */
  sections: string[];
  /**
   * Its indirection table, `.ind.<ulib>`, as the linker script reserved it. Without it the µlib is
   * only analysed.
   *  ASLR mode: with `clones`, the table proper is its first `table` bytes, followed (from the next
   *  16 bytes) by copies of these functions of other µlibs, in this order (x86/clone.ts). */
  ind?: { section: string; addr: bigint; size: number; table?: number; clones?: string[] };
  /**
   * ASLR mode: its pointer area, `.ptr.<ulib>`, at an address the map keeps (tables then
   * position-independent).
   */
  ptr?: { section: string; addr: bigint; size: number };
  /** ASLR mode: in the image's own area, whose pages no other image shares: its table's branch
   * entries jump to their targets directly (`jmp rel32`, not `jmp [P]`); its code is unchanged by
   * it. */
  own?: boolean;
  /**
   * In its name slot (each image's own variant at one address): its data is laid out per variant.
   */
  named?: boolean;
  /** ASLR mode, a name slot's variant: absolute addresses of its own data are sites too (they
   * differ between the variants), so its code is the same in images whose variants differ only in
   * data. */
  ownAbs?: boolean;
}

export interface RewritePlan {
  ulibs: RewriteUlib[];
}

export interface UlibRewriteStats {
  sites: number;
  stubs: number;
  trampolines: number;
  got: number;
  tableBytes: number;
  dataPointers: number;
  dataPointerPages: string[];
  /** False when the plan gives the µlib no table (or its code is not in the image). */
  rewritten: boolean;
  /**
   * ASLR mode: sites with a classic (position-dependent) entry; their table page differs between
   * images.
   */
  classic?: number;
}

export interface RewriteStats {
  sites: number;
  stubs: number;
  /** Moved instructions, including indirect calls (push + jmp). */
  trampolines: number;
  got: number;
  tableBytes: number;
  /**
   * Data/rodata relocations that point outside (switch tables, pointer initialisers): not
   * rewritable.
   */
  dataPointers: number;
  /** The pages those sit on (hex addresses): they differ between images. */
  dataPointerPages: string[];
  perUlib: Record<string, UlibRewriteStats>;
  /** ASLR mode: data fields holding an entry's address, now its stub's. */
  dataRedirected?: number;
  ms: number;
  /** The image already carried this rewrite: nothing was written. */
  alreadyDone: boolean;
}

/** `.spacer.rewrite`: what was done, enough to verify it and to recognise the same plan. */
export interface RewriteRecord {
  spacer_rewrite: 1;
  mode: Mode;
  plan: CanonicalPlan;
  stats: Omit<RewriteStats, 'ms' | 'alreadyDone'>;
  ulibs: RecordUlib[];
  /** ASLR mode: data fields redirected to entry stubs: address, original value, relocation type. */
  data?: { a: string; o: string; r: number }[];
}

export interface RecordUlib {
  name: string;
  text: string;
  textAddr: string;
  textSize: number;
  /** SHA-256 of the original `.text.<ulib>`: everything but the sites must be unchanged. */
  textSha256: string;
  ind: { section: string; addr: string; size: number; used: number };
  /** ASLR mode with position-independent entries: the pointer area. */
  ptr?: { section: string; addr: string; size: number; used: number };
  /**
   * ASLR mode: entry stubs at the start of the pointer area, one `jmp` per entry (hex addresses).
   */
  stubs?: { at: string; targets: string[] };
  /**
   * ASLR mode: copies of other µlibs' functions after the table: name, original address, copy's
   * address, bytes.
   */
  clones?: { sym: string; from: string; at: string; size: number }[];
  sites: RecordSite[];
}

export interface RecordSite {
  /** Address, original bytes (hex), kind, table entry address, the address it referred to. */
  a: string;
  o: string;
  k: SiteKind;
  e: string;
  t: string;
  /** Position-independent entry: its form and pointer slot. */
  f?: PiForm;
  p?: string;
  /** A call or jump that reaches a copy of its target instead of its entry: the copy's address. */
  c?: string;
}

interface CanonicalPlan {
  ulibs: {
    name: string;
    text: string;
    sections: string[];
    ind: { section: string; addr: string; size: number; table?: number; clones?: string[] } | null;
    ptr?: { section: string; addr: string; size: number };
    own?: boolean;
    named?: boolean;
    ownAbs?: boolean;
  }[];
}

function canonicalPlan(plan: RewritePlan): CanonicalPlan {
  return {
    ulibs: plan.ulibs.map((u) => ({
      name: u.name,
      text: u.text,
      sections: [...u.sections],
      ind: u.ind
        ? {
            section: u.ind.section,
            addr: hex(u.ind.addr),
            size: u.ind.size,
            ...(u.ind.clones?.length ? { table: u.ind.table, clones: [...u.ind.clones] } : {}),
          }
        : null,
      ...(u.ptr
        ? { ptr: { section: u.ptr.section, addr: hex(u.ptr.addr), size: u.ptr.size } }
        : {}),
      ...(u.own ? { own: true } : {}),
      ...(u.named ? { named: true } : {}),
      ...(u.ownAbs ? { ownAbs: true } : {}),
    })),
  };
}

export function planFromRecord(rec: RewriteRecord): RewritePlan {
  return {
    ulibs: rec.plan.ulibs.map((u) => ({
      name: u.name,
      text: u.text,
      sections: u.sections,
      ind: u.ind
        ? {
            section: u.ind.section,
            addr: BigInt(u.ind.addr),
            size: u.ind.size,
            ...(u.ind.clones?.length ? { table: u.ind.table, clones: u.ind.clones } : {}),
          }
        : undefined,
      ptr: u.ptr
        ? { section: u.ptr.section, addr: BigInt(u.ptr.addr), size: u.ptr.size }
        : undefined,
      ...(u.own ? { own: true } : {}),
      ...(u.named ? { named: true } : {}),
      ...(u.ownAbs ? { ownAbs: true } : {}),
    })),
  };
}

/** Loads a linked x86-64 ELF64 executable, or throws one SpacerError line. */
export function loadImage(path: string): ElfFile {
  const elf = ElfFile.load(path);
  if (elf.header.type === ET_REL)
    throw new SpacerError(
      `${path}: a relocatable object, not a linked image; pass the image (.dbg) linked with -Wl,--emit-relocs`,
    );
  if (elf.header.class !== 64 || elf.header.machine !== EM_X86_64)
    throw new SpacerError(
      `${path}: not an x86-64 ELF64 image; pass the ELF64 .dbg, not the ELF32 boot copy`,
    );
  if (elf.header.type !== ET_EXEC)
    throw new SpacerError(
      `${path}: not an executable (ELF type ${elf.header.type}); pass the linked, non-PIE image`,
    );
  return elf;
}

/** The record of an earlier rewrite, if any; a record that does not parse is an error. */
export function readRecord(elf: ElfFile): RewriteRecord | undefined {
  const s = elf.section(REWRITE_SECTION);
  if (!s) return undefined;
  const bad = (what: string): never => {
    throw new SpacerError(
      `${elf.path}: ${REWRITE_SECTION} is corrupt (${what}); relink the image and rewrite it again`,
    );
  };
  let rec: RewriteRecord | undefined;
  try {
    rec = JSON.parse(elf.contents(s).toString('utf8'));
  } catch {
    bad('not valid JSON');
  }
  if (rec?.spacer_rewrite !== 1 || !Array.isArray(rec!.ulibs) || !MODES.includes(rec!.mode)) {
    throw new SpacerError(
      `${elf.path}: ${REWRITE_SECTION} is not a lib-spacer rewrite record; relink the image and rewrite it again`,
    );
  }
  // Every field verify reads, checked here: a damaged record is one clear line, never a crash.
  const isHex = (v: unknown) => typeof v === 'string' && /^0x[0-9a-f]{1,16}$/i.test(v);
  const isBytes = (v: unknown) => typeof v === 'string' && /^([0-9a-f]{2}){1,15}$/i.test(v);
  const isName = (v: unknown) => typeof v === 'string' && /^[\x21-\x7e]{1,200}$/.test(v);
  const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const plan = rec!.plan as unknown as { ulibs?: unknown };
  if (typeof plan !== 'object' || plan === null || !Array.isArray(plan.ulibs)) bad('no plan');
  for (const [i, pu] of (plan.ulibs as any[]).entries()) {
    if (
      typeof pu !== 'object' ||
      pu === null ||
      !isName(pu.name) ||
      !isName(pu.text) ||
      !Array.isArray(pu.sections) ||
      !pu.sections.every(isName)
    )
      bad(`plan entry ${i}`);
    if (
      pu.ind !== null &&
      (typeof pu.ind !== 'object' ||
        !isName(pu.ind.section) ||
        !isHex(pu.ind.addr) ||
        !isCount(pu.ind.size))
    )
      bad(`plan entry ${i} table`);
    if (
      pu.ptr !== undefined &&
      (typeof pu.ptr !== 'object' ||
        pu.ptr === null ||
        !isName(pu.ptr.section) ||
        !isHex(pu.ptr.addr) ||
        !isCount(pu.ptr.size))
    )
      bad(`plan entry ${i} pointer area`);
    if (
      pu.ind &&
      (pu.ind.clones !== undefined || pu.ind.table !== undefined) &&
      (!isCount(pu.ind.table) || !Array.isArray(pu.ind.clones) || !pu.ind.clones.every(isName))
    )
      bad(`plan entry ${i} copies`);
    if (
      (pu.own !== undefined && pu.own !== true) ||
      (pu.named !== undefined && pu.named !== true) ||
      (pu.ownAbs !== undefined && pu.ownAbs !== true)
    )
      bad(`plan entry ${i} own`);
  }
  for (const [i, u] of (rec!.ulibs as any[]).entries()) {
    if (
      typeof u !== 'object' ||
      u === null ||
      !isName(u.name) ||
      !isName(u.text) ||
      !isHex(u.textAddr) ||
      !isCount(u.textSize) ||
      typeof u.textSha256 !== 'string'
    )
      bad(`µlib entry ${i}`);
    if (
      typeof u.ind !== 'object' ||
      u.ind === null ||
      !isName(u.ind.section) ||
      !isHex(u.ind.addr) ||
      !isCount(u.ind.size) ||
      !isCount(u.ind.used)
    )
      bad(`µlib entry ${i} table`);
    if (
      u.ptr !== undefined &&
      (typeof u.ptr !== 'object' ||
        u.ptr === null ||
        !isName(u.ptr.section) ||
        !isHex(u.ptr.addr) ||
        !isCount(u.ptr.size) ||
        !isCount(u.ptr.used))
    )
      bad(`µlib entry ${i} pointer area`);
    if (
      u.stubs !== undefined &&
      (typeof u.stubs !== 'object' ||
        u.stubs === null ||
        !isHex(u.stubs.at) ||
        !Array.isArray(u.stubs.targets) ||
        !u.stubs.targets.every(isHex))
    )
      bad(`µlib entry ${i} stubs`);
    if (
      u.clones !== undefined &&
      (!Array.isArray(u.clones) ||
        !u.clones.every(
          (c: any) =>
            typeof c === 'object' &&
            c !== null &&
            isName(c.sym) &&
            isHex(c.from) &&
            isHex(c.at) &&
            isCount(c.size),
        ))
    )
      bad(`µlib entry ${i} copies`);
    if (!Array.isArray(u.sites)) bad(`µlib entry ${i} sites`);
    for (const [j, x] of (u.sites as any[]).entries()) {
      if (
        typeof x !== 'object' ||
        x === null ||
        !isHex(x.a) ||
        !isBytes(x.o) ||
        !isHex(x.e) ||
        !isHex(x.t) ||
        typeof x.k !== 'string' ||
        !/^[a-z]{1,16}$/.test(x.k)
      )
        bad(`µlib entry ${i} site ${j}`);
      if (
        (x.f !== undefined || x.p !== undefined) &&
        (typeof x.f !== 'string' ||
          !/^[a-z0-9]{1,16}$/.test(x.f) ||
          (x.f === 'abs' ? x.p !== undefined : !isHex(x.p)))
      )
        bad(`µlib entry ${i} site ${j} pointer`);
      if (x.c !== undefined && !isHex(x.c)) bad(`µlib entry ${i} site ${j} copy`);
    }
  }
  if (
    rec!.data !== undefined &&
    (!Array.isArray(rec!.data) ||
      !rec!.data.every(
        (d: any) =>
          typeof d === 'object' &&
          d !== null &&
          isHex(d.a) &&
          isHex(d.o) &&
          [1, 10, 11].includes(d.r),
      ))
  )
    bad('redirected data');
  return rec!;
}

/** A site found in a linked image. */
export interface ImageSite {
  insn: Insn;
  kind: SiteKind;
  /** What it referred to: branch target, lea address, else the first outside field's value. */
  target: bigint;
  orig: Buffer;
  /** Which of its operands refer outside. */
  outside: Operand[];
  /** What each of those refers to, from its relocation (equal targets share a pointer slot). */
  targets: Partial<Record<Operand, string>>;
  /**
   * Its one outside reference is RIP-relative to the µlib's own data (same address in every image).
   */
  ownData: boolean;
}

/** The targets of a site's outside operands, by operand. */
function targetsOf(refs: Site['refs']): Partial<Record<Operand, string>> {
  return Object.fromEntries(refs.filter((x) => x.outside).map((x) => [x.op, x.target]));
}

export interface UlibAnalysis {
  text: Section;
  sites: ImageSite[];
  /** Addresses of data relocations that point outside. */
  dataPointers: bigint[];
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
  const placeFrom =
    (from: number) =>
    (shndx: number): Place =>
      shndx === from ? 'same' : own.has(shndx) ? 'own' : 'foreign';
  const bytes = code ?? Buffer.from(elf.contents(text));
  const lo = text.addr,
    hi = text.addr + text.size;
  const relocs = elf.relocationsFor(text);
  const { insns, code: codeAt } = decodeCode(
    bytes,
    lo,
    codeExtents(syms, text.index, lo, hi),
    relocs.map((r) => ({ at: r.offset, type: r.type })),
  );
  for (const r of relocs) {
    if (r.offset < lo || r.offset >= hi)
      throw new SpacerError(
        `${where}: relocation at ${hex(r.offset)} lies outside ${u.text}; pass the executable linked with -Wl,--emit-relocs`,
      );
  }
  const refs: CodeRef[] = relocs.map((r) => ({
    at: r.offset,
    type: r.type,
    place: symbolPlace(syms[r.sym], placeFrom(text.index)),
    symKey: symbolKey(syms[r.sym]),
    addend: r.addend,
  }));
  const fail = (at: bigint, msg: string): never => {
    throw new SpacerError(`${where}: ${hex(at)}: ${msg}; the µlib cannot be rewritten`);
  };
  const found = findSites(
    insns,
    refs,
    mode,
    (a) => findInsn(insns, a),
    fail,
    codeAt,
    mode === 'aslr' && u.ownAbs,
  );
  const sites: ImageSite[] = found.map((s) => {
    const i = s.insn,
      off = Number(i.ip - lo);
    let target: bigint;
    if (s.kind === 'stub') target = i.target;
    else if (s.kind === 'got') target = i.memAddr;
    else {
      const r = s.refs.find((x) => x.outside)!;
      target =
        r.op === 'disp'
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
      // A name slot holds each image's own variant, laid out its own way: its data addresses
      // differ.
      targets: targetsOf(s.refs),
      ownData: mode === 'aslr' && !u.named && refersToOwnData(s.refs),
    };
  });

  // Data relocations of the µlib's other sections (and data within its code); those into its own
  // code are branch targets too.
  const dataPointers: bigint[] = codeAt.data.map((r) => r.at);
  const targets: bigint[] = insns.filter((i) => i.nearBranch).map((i) => i.target);
  for (const name of new Set(u.sections)) {
    const s = elf.section(name);
    if (!s || s.index === text.index || s.flags & SHF_EXECINSTR) continue;
    const data = elf.contents(s);
    for (const r of elf.relocationsFor(s)) {
      const cls = relocClass(r.type) ?? 'abs';
      if (cls === 'ignore') continue;
      if (
        isOutside(
          cls,
          symbolPlace(syms[r.sym], placeFrom(text.index)),
          mode,
          mode === 'aslr' && u.ownAbs,
        )
      )
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
  // A redirected site must be entered at its first byte only: a branch into its middle means the
  // linear decode went out of step (data in code), and the rewrite would break that branch.
  const sorted = [...targets]
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
  return { text, sites, dataPointers };
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
    const lo = a.text.addr,
      hi = lo + a.text.size;
    const inCode = (v: bigint | undefined): v is bigint => v !== undefined && v >= lo && v < hi;
    // Only function starts: a switch table's targets (inside a function) keep their addresses, so
    // a switch dispatch costs no extra jump (its table's page differs per image and is counted).
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
    // Data pointing into it: from its own sections, and, through a local symbol (only its own
    // object can name one), from global tables such as the init table.
    const own = new Set(u.sections);
    for (const f of dataAddressFields(elf, new Map([[a.text.index, [lo, hi]]])))
      if ((own.has(f.sec.name) || f.local) && starts.has(f.value)) entries.add(f.value);
    out.set(u.name, {
      at: u.ptr.addr,
      targets: [...entries].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)),
    });
  }
  return out;
}

/** The µlib's pointer area as the linker script reserved it: where the plan says, blank, loaded. */
function checkPtr(elf: ElfFile, u: RewriteUlib, where: string): Section {
  const want = u.ptr!;
  const s = elf.section(want.section);
  if (!s)
    throw new SpacerError(
      `${where}: the image has no section ${want.section}; reserve the pointer area in the linker script`,
    );
  if (s.addr !== want.addr)
    throw new SpacerError(
      `${where}: ${want.section} is at ${hex(s.addr)}, the plan says ${hex(want.addr)}; relink with the plan's script`,
    );
  if (s.type !== SHT_PROGBITS || s.size < BigInt(want.size))
    throw new SpacerError(
      `${where}: ${want.section} is not ${want.size} bytes of contents; relink with the plan's script`,
    );
  if (
    !elf.segments.some(
      (p) => p.type === PT_LOAD && s.addr >= p.vaddr && s.addr + s.size <= p.vaddr + p.filesz,
    )
  )
    throw new SpacerError(
      `${where}: ${want.section} is not loaded; place it in a PT_LOAD of the linker script`,
    );
  if (
    !elf
      .contents(s)
      .subarray(0, want.size)
      .every((b) => b === 0xcc)
  )
    throw new SpacerError(
      `${where}: ${want.section} is not blank (0xCC); fill it with FILL(0xCCCCCCCC) in the linker script`,
    );
  return s;
}

function pagesOf(addrs: bigint[]): string[] {
  return [...new Set(addrs.map((a) => a - (a % PAGE)))]
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map(hex);
}

function inExecutableLoad(elf: ElfFile, s: Section): boolean {
  return elf.segments.some(
    (p) =>
      p.type === PT_LOAD &&
      (p.flags & 1) !== 0 &&
      s.addr >= p.vaddr &&
      s.addr + s.size <= p.vaddr + p.filesz,
  );
}

/** Rewrites the µlibs of a linked image (ELF64, -Wl,--emit-relocs) per `plan`; atomic. */
export async function rewriteImage(
  dbgPath: string,
  plan: RewritePlan,
  mode: Mode = 'external',
  extra: ExtraSection[] = [],
): Promise<RewriteStats> {
  const t0 = performance.now();
  checkMode(mode, dbgPath);
  try {
    return await rewrite(dbgPath, plan, mode, t0, extra);
  } catch (e) {
    if (isSpacerError(e)) throw e;
    throw new SpacerError(
      `${dbgPath}: cannot rewrite (${(e as Error).message}); the image was left unchanged`,
    );
  }
}

/** A non-loaded section to add in the same write (e.g. the link plan). */
export interface ExtraSection {
  name: string;
  data: string | Buffer;
}

async function rewrite(
  dbgPath: string,
  plan: RewritePlan,
  mode: Mode,
  t0: number,
  extra: ExtraSection[],
): Promise<RewriteStats> {
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
  if (
    !elf.sections.some(
      (s) =>
        (s.type === SHT_RELA || s.type === SHT_REL) &&
        elf.sections[s.info] &&
        elf.sections[s.info].flags & SHF_ALLOC,
    )
  ) {
    throw new SpacerError(
      `${dbgPath}: the image has no relocations; link with -Wl,--emit-relocs so the rewriter can find every address in the code`,
    );
  }
  const seen = new Set<string>();
  for (const u of plan.ulibs) {
    if (seen.has(u.name))
      throw new SpacerError(
        `${dbgPath}: µlib ${u.name} appears twice in the rewrite plan; fix the plan`,
      );
    seen.add(u.name);
  }

  const out = Buffer.from(elf.data);
  const perUlib: Record<string, UlibRewriteStats> = {};
  const records: RecordUlib[] = [];
  let allData: bigint[] = [];
  const analyses = new Map(plan.ulibs.map((u) => [u.name, analyzeUlib(elf, u, mode)]));
  // ASLR mode: each site's position-independent form, decided once; then every µlib's entry
  // stubs, so every table and data field can use them.
  const plansOf = new Map<string, (PiPlan | undefined)[]>();
  if (mode === 'aslr') {
    for (const u of plan.ulibs) {
      const a = analyses.get(u.name);
      if (a && u.ptr)
        plansOf.set(
          u.name,
          a.sites.map((x) => piPlan(x.orig, x.insn.ip, x.kind, x.outside, x.ownData)),
        );
    }
  }
  const stubsOf =
    mode === 'aslr' ? entryStubs(elf, plan, analyses, plansOf) : new Map<string, UlibStubs>();
  let sourcesOf: ((name: string) => CloneSource | undefined) | undefined;
  const canon = stubMap([...stubsOf.values()]);
  for (const u of plan.ulibs) {
    const where = `${dbgPath}: ${u.name}`;
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
    const ind = elf.section(u.ind.section);
    if (!ind)
      throw new SpacerError(
        `${where}: the image has no section ${u.ind.section}; reserve the indirection table in the linker script`,
      );
    if (ind.addr !== u.ind.addr)
      throw new SpacerError(
        `${where}: ${u.ind.section} is at ${hex(ind.addr)}, the plan says ${hex(u.ind.addr)}; relink with the plan's script`,
      );
    if (ind.type !== SHT_PROGBITS)
      throw new SpacerError(
        `${where}: ${u.ind.section} has no contents in the file; reserve it with FILL(0xCCCCCCCC) and '. = . + SIZE' so it is PROGBITS`,
      );
    if (!Number.isSafeInteger(u.ind.size) || u.ind.size < 0 || ind.size < BigInt(u.ind.size))
      throw new SpacerError(
        `${where}: ${u.ind.section} is ${ind.size} bytes, the plan reserves ${u.ind.size}; relink with the plan's script`,
      );
    if (!inExecutableLoad(elf, ind))
      throw new SpacerError(
        `${where}: ${u.ind.section} is not in an executable PT_LOAD; place it in the text segment of the linker script`,
      );
    if (ind.addr < a.text.addr + a.text.size && a.text.addr < ind.addr + BigInt(u.ind.size))
      throw new SpacerError(`${where}: ${u.ind.section} overlaps ${u.text}; fix the linker script`);
    const blank = elf.contents(ind).subarray(0, u.ind.size);
    if (!blank.every((b) => b === 0xcc))
      throw new SpacerError(
        `${where}: ${u.ind.section} is not blank (0xCC); fill it with FILL(0xCCCCCCCC) in the linker script`,
      );

    if (mode === 'aslr' && u.ptr) {
      // Position-independent entries: the table is the same in every image, the pointer area is
      // not.
      const ptr = checkPtr(elf, u, where);
      const stubs = stubsOf.get(u.name)!;
      const slots = slotsAfterStubs(stubs),
        stubPart = Number(slots - ptr.addr);
      if (stubPart > u.ptr.size) {
        throw new SpacerError(
          `${where}: its ${stubs.targets.length} entry stubs need ${stubPart} bytes, the plan reserves ${u.ptr.size} for ${u.ptr.section}; relink (spacer link sizes it from the object)`,
        );
      }
      const code = Buffer.from(elf.contents(a.text));
      // Copies of leaf callees after the table (planned by spacer link): calls reach them directly.
      const cap = u.ind.clones?.length ? (u.ind.table ?? u.ind.size) : u.ind.size;
      const clones: NonNullable<RecordUlib['clones']> = [],
        copyOf = new Map<bigint, bigint>();
      if (u.ind.clones?.length) {
        if (!Number.isSafeInteger(cap) || cap < 0 || cap > u.ind.size)
          throw new SpacerError(
            `${where}: the plan's table size ${cap} does not fit ${u.ind.section}; relink with the plan's script`,
          );
        sourcesOf ??= cloneSources(elf);
        const srcs = u.ind.clones.map((name) => {
          const src = sourcesOf!(name);
          if (!src || src.refusal)
            throw new SpacerError(
              `${where}: the plan copies ${name} after its table, but ${src ? `a copy would not run the same: ${src.refusal}` : 'the image defines no such function'}; relink (spacer link plans the copies from the objects)`,
            );
          return src;
        });
        const lay = cloneLayout(
            ind.addr + BigInt(cap),
            srcs.map((x) => x.bytes.length),
          ),
          reserved = u.ind;
        srcs.forEach((src, k) => {
          const at = lay.at[k];
          if (at + BigInt(src.bytes.length) > ind.addr + BigInt(reserved.size))
            throw new SpacerError(
              `${where}: the copy of ${src.name} does not fit in ${reserved.section}; relink with the plan's script`,
            );
          copyOf.set(src.addr, at);
          clones.push({ sym: src.name, from: hex(src.addr), at: hex(at), size: src.bytes.length });
        });
      }
      const copied: (bigint | undefined)[] = [];
      let table: PiTable;
      try {
        table = buildPiTable({
          addr: ind.addr,
          size: cap,
          ptrAddr: slots,
          ptrSize: u.ptr.size - stubPart,
          sites: a.sites.map((x) => ({
            kind: x.kind,
            ip: x.insn.ip,
            orig: x.orig,
            outside: x.outside,
            targets: x.targets,
            ownData: x.ownData,
          })),
          what: where,
          canon: (v) => canon.get(v) ?? v,
          plans: plansOf.get(u.name),
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
          const copy =
            plan?.form === 'jmpptr' && isDirect(x.insn) ? copyOf.get(x.target) : undefined;
          if (copy !== undefined) retarget(code, a.text.addr, x.insn, copy, where);
          copied.push(copy);
        });
      } catch (e) {
        if (e instanceof TableError) {
          const fix = e.need
            ? `reserve at least ${e.need} bytes for ${u.ind.section}`
            : e.ptrNeed
              ? `reserve at least ${e.ptrNeed + stubPart} bytes for ${u.ptr.section}`
              : '';
          throw new SpacerError(
            `${e.message}; ${fix ? `${fix} (indirectionNeeds gives a safe size)` : 'the image was left unchanged'}`,
          );
        }
        throw e;
      }
      code.copy(out, num(a.text.offset));
      table.bytes.copy(out, num(ind.offset));
      for (const c of clones)
        sourcesOf!(c.sym)!.bytes.copy(out, num(ind.offset) + Number(BigInt(c.at) - ind.addr));
      stubBytes(stubs, where).copy(out, num(ptr.offset));
      table.ptr.copy(out, num(ptr.offset) + stubPart);
      const classic = table.plans.filter((x) => !x).length;
      Object.assign(st, {
        stubs: new Set(a.sites.filter((x) => x.kind === 'stub').map((x) => x.target)).size,
        trampolines: a.sites.filter((x) => x.kind === 'trampoline' || x.kind === 'callind').length,
        got: a.sites.filter((x) => x.kind === 'got').length,
        tableBytes: table.used,
        rewritten: true,
        classic,
      });
      records.push({
        name: u.name,
        text: u.text,
        textAddr: hex(a.text.addr),
        textSize: num(a.text.size),
        textSha256: createHash('sha256').update(elf.contents(a.text)).digest('hex'),
        ind: { section: u.ind.section, addr: hex(ind.addr), size: cap, used: table.used },
        ptr: {
          section: u.ptr.section,
          addr: hex(ptr.addr),
          size: u.ptr.size,
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
      });
      continue;
    }
    // Layout: distinct GOT values and stub targets in site order, then one move per site.
    const got = new Set<bigint>(),
      stubs = new Set<bigint>(),
      moves: Move[] = [];
    for (const s of a.sites) {
      if (s.kind === 'got') got.add(s.target);
      else if (s.kind === 'stub') stubs.add(s.target);
      else moves.push({ kind: s.kind, ip: s.insn.ip, orig: s.orig });
    }
    let table;
    const code = Buffer.from(elf.contents(a.text));
    const rsites: RecordSite[] = [];
    try {
      table = buildTable({
        addr: ind.addr,
        size: u.ind.size,
        got: [...got],
        stubs: [...stubs],
        moves,
        what: where,
      });
      let m = 0;
      for (const s of a.sites) {
        const entry =
          s.kind === 'stub'
            ? table.stubAt.get(s.target)!
            : s.kind === 'got'
              ? table.gotAt.get(s.target)!
              : table.moveAt[m++];
        patchSite(code, a.text.addr, s.insn, s.kind, entry, where);
        rsites.push({
          a: hex(s.insn.ip),
          o: s.orig.toString('hex'),
          k: s.kind,
          e: hex(entry),
          t: hex(s.target),
        });
      }
    } catch (e) {
      if (e instanceof TableError)
        throw new SpacerError(
          `${e.message}; ${e.need ? `reserve at least ${e.need} bytes for ${u.ind.section} (indirectionNeeds gives a safe size)` : 'the image was left unchanged'}`,
        );
      throw e;
    }
    code.copy(out, num(a.text.offset));
    table.bytes.copy(out, num(ind.offset));
    Object.assign(st, {
      stubs: stubs.size,
      trampolines: moves.length,
      got: got.size,
      tableBytes: table.used,
      rewritten: true,
    });
    records.push({
      name: u.name,
      text: u.text,
      textAddr: hex(a.text.addr),
      textSize: num(a.text.size),
      textSha256: createHash('sha256').update(elf.contents(a.text)).digest('hex'),
      ind: { section: u.ind.section, addr: hex(ind.addr), size: u.ind.size, used: table.used },
      sites: rsites,
    });
  }
  // ASLR mode: addresses of entries held as data now hold their stubs' (the same in every image).
  const redirected: { a: string; o: string; r: number }[] = [];
  const changedData = new Set<string>();
  if (canon.size) {
    const ranges = new Map<number, [bigint, bigint]>();
    for (const u of plan.ulibs) {
      const a = analyses.get(u.name);
      if (a && stubsOf.has(u.name))
        ranges.set(a.text.index, [a.text.addr, a.text.addr + a.text.size]);
    }
    for (const f of dataAddressFields(elf, ranges)) {
      const stub = canon.get(f.value);
      if (stub === undefined) continue;
      writeAddress(out, num(f.sec.offset) + Number(f.at - f.sec.addr), f.type, stub);
      redirected.push({ a: hex(f.at), o: hex(f.value), r: f.type });
      changedData.add(f.sec.name);
    }
    const red = new Set(redirected.map((x) => x.a));
    allData = allData.filter((x) => !red.has(hex(x)));
    for (const u of plan.ulibs) {
      const a = analyses.get(u.name),
        st = perUlib[u.name];
      if (!a || !st) continue;
      const kept = a.dataPointers.filter((x) => !red.has(hex(x)));
      st.dataPointers = kept.length;
      st.dataPointerPages = pagesOf(kept);
    }
  }
  const sum = (k: 'sites' | 'stubs' | 'trampolines' | 'got' | 'tableBytes' | 'dataPointers') =>
    Object.values(perUlib).reduce((n, s) => n + s[k], 0);
  const stats = {
    sites: sum('sites'),
    stubs: sum('stubs'),
    trampolines: sum('trampolines'),
    got: sum('got'),
    tableBytes: sum('tableBytes'),
    dataPointers: sum('dataPointers'),
    dataPointerPages: pagesOf(allData),
    perUlib,
  };
  if (redirected.length) Object.assign(stats, { dataRedirected: redirected.length });
  const record: RewriteRecord = {
    spacer_rewrite: 1,
    mode,
    plan: canonPlan,
    stats,
    ulibs: records,
    ...(redirected.length ? { data: redirected } : {}),
  };

  // writeAtomically verifies the file as written (every site must reach what it reached before)
  // before it replaces the image: one verification, of what will really be on disk.
  await writeAtomically(
    dbgPath,
    out,
    [{ name: REWRITE_SECTION, data: JSON.stringify(record) }, ...extra],
    [
      ...records.flatMap((r) => [r.text, r.ind.section, ...(r.ptr ? [r.ptr.section] : [])]),
      ...changedData,
    ],
  );
  return { ...stats, ms: performance.now() - t0, alreadyDone: false };
}

/**
 * Writes the patched bytes plus the record (and any extra) sections, then renames over the image.
 */
async function writeAtomically(
  path: string,
  data: Buffer,
  sections: ExtraSection[],
  changed: string[],
): Promise<void> {
  const base = `${path}.spacer-rewrite-${process.pid}`;
  const tmpElf = `${base}.elf`,
    tmpOut = `${base}.out`;
  const tmpSecs = sections.map((_, i) => `${base}.${i}.sec`);
  const mode = statSync(path).mode & 0o7777;
  try {
    writeFileSync(tmpElf, data);
    sections.forEach((sec, i) => writeFileSync(tmpSecs[i], sec.data));
    const args = sections.flatMap((sec, i) => [
      '--add-section',
      `${sec.name}=${tmpSecs[i]}`,
      '--set-section-flags',
      `${sec.name}=readonly,contents`,
    ]);
    try {
      await execa('objcopy', [...args, tmpElf, tmpOut]);
    } catch (e) {
      const err = e as { stderr?: string; code?: string };
      if (err.code === 'ENOENT') throw new SpacerError('objcopy not found; install binutils');
      throw new SpacerError(
        `${path}: objcopy failed (${(err.stderr ?? String(e)).trim().split('\n')[0]}); the image was left unchanged`,
      );
    }
    // objcopy must not have moved what was patched.
    const a = new ElfFile(path, data),
      b = ElfFile.load(tmpOut);
    for (const name of changed) {
      const x = a.section(name),
        y = b.section(name);
      if (!x || !y || x.addr !== y.addr || !a.contents(x).equals(b.contents(y)))
        throw new SpacerError(`${path}: objcopy changed ${name}; the image was left unchanged`);
    }
    // The file as written must verify too, before it replaces the image.
    const { verifyImage } = await import('./verify.js');
    const problems = verifyImage(tmpOut);
    if (problems.length)
      throw new SpacerError(
        // eslint-disable-next-line no-control-regex -- control characters are what it replaces
        `${path}: the rewritten file did not verify (${problems[0].replace(/[\x00-\x1f\x7f]/g, '?')}); the image was left unchanged`,
      );
    chmodSync(tmpOut, mode);
    renameSync(tmpOut, path);
  } finally {
    for (const f of [tmpElf, tmpOut, ...tmpSecs]) rmSync(f, { force: true });
  }
}
