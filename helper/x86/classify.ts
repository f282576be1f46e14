// Site classification: which relocated instructions of a µlib's code refer outside the µlib (and
// so would make its code pages differ between images), and how each one is redirected. The same
// rules run on the relocatable object (first pass, sizes the table before any address is known)
// and on the linked image (the rewrite), so the first pass always over-approximates the second.
import {
  SHN_UNDEF,
  STB_LOCAL,
  STB_WEAK,
  STT_GNU_IFUNC,
  STT_NOTYPE,
  STT_SECTION,
  STT_TLS,
  type ElfSymbol,
} from '../elf.js';
import { Code, FlowControl, Register, type Insn } from './decode.js';

export type Mode = 'external' | 'aslr';
export const MODES: readonly Mode[] = ['external', 'aslr'];

// x86-64 relocation types (System V psABI).
export const R_X86_64 = {
  NONE: 0,
  _64: 1,
  PC32: 2,
  GOT32: 3,
  PLT32: 4,
  COPY: 5,
  GLOB_DAT: 6,
  JUMP_SLOT: 7,
  RELATIVE: 8,
  GOTPCREL: 9,
  _32: 10,
  _32S: 11,
  _16: 12,
  PC16: 13,
  _8: 14,
  PC8: 15,
  DTPMOD64: 16,
  DTPOFF64: 17,
  TPOFF64: 18,
  TLSGD: 19,
  TLSLD: 20,
  DTPOFF32: 21,
  GOTTPOFF: 22,
  TPOFF32: 23,
  PC64: 24,
  GOTOFF64: 25,
  GOTPC32: 26,
  GOT64: 27,
  GOTPCREL64: 28,
  GOTPC64: 29,
  GOTPLT64: 30,
  PLTOFF64: 31,
  SIZE32: 32,
  SIZE64: 33,
  GOTPC32_TLSDESC: 34,
  TLSDESC_CALL: 35,
  TLSDESC: 36,
  IRELATIVE: 37,
  RELATIVE64: 38,
  GOTPCRELX: 41,
  REX_GOTPCRELX: 42,
  CODE_4_GOTPCRELX: 43,
  CODE_4_GOTTPOFF: 44,
} as const;

const NAMES = new Map<number, string>(
  Object.entries(R_X86_64).map(([k, v]) => [v, `R_X86_64_${k.replace(/^_/, '')}`]),
);
export function relocName(type: number): string {
  return NAMES.get(type) ?? `relocation type ${type}`;
}

/**
 * What a relocation in code means for sharing:
 * - `pcrel`: a PC-relative reference to a symbol (branch displacement or RIP-relative operand);
 * - `abs`: an absolute address of a symbol (imm32/disp32/imm64);
 * - `tls`: a TLS offset (its value depends on the whole image's TLS layout);
 * - `got`: a reference to a linker-made GOT entry (may be relaxed by ld in a static link);
 * - `size`: a symbol's size; `ignore`: no bytes (NONE).
 * Anything else (TLS descriptor/GD/LD sequences, 8/16-bit and large-model forms) is unsupported.
 */
export type RelocClass = 'pcrel' | 'abs' | 'tls' | 'got' | 'size' | 'ignore';

export function relocClass(type: number): RelocClass | undefined {
  const R = R_X86_64;
  switch (type) {
    case R.NONE:
      return 'ignore';
    case R.PC32:
    case R.PLT32:
    case R.PC64:
      return 'pcrel';
    case R._32:
    case R._32S:
    case R._64:
      return 'abs';
    case R.TPOFF32:
    case R.TPOFF64:
    case R.GOTTPOFF:
    case R.CODE_4_GOTTPOFF:
      return 'tls';
    case R.GOTPCREL:
    case R.GOTPCRELX:
    case R.REX_GOTPCRELX:
    case R.CODE_4_GOTPCRELX:
      return 'got';
    case R.SIZE32:
    case R.SIZE64:
      return 'size';
    default:
      return undefined;
  }
}

/** Relocations whose instruction ld may rewrite in a static link (same length, other form). */
export function isRelaxable(type: number): boolean {
  const R = R_X86_64;
  return (
    type === R.GOTPCREL ||
    type === R.GOTPCRELX ||
    type === R.REX_GOTPCRELX ||
    type === R.CODE_4_GOTPCRELX ||
    type === R.GOTTPOFF ||
    type === R.CODE_4_GOTTPOFF
  );
}

/**
 * Where a relocation's symbol lives, seen from the section holding the reference:
 * `same` — the same output section (for code: the µlib's `.text.<ulib>`); `own` — another section
 * of the same µlib; `foreign` — anything else: undefined, absolute, common, weak (another µlib may
 * override it), TLS, and global untyped symbols (linker-script symbols such as uk_inittab_start).
 */
export type Place = 'same' | 'own' | 'foreign';

export function symbolPlace(
  sym: ElfSymbol | undefined,
  sectionPlace: (shndx: number) => Place,
): Place {
  if (!sym || sym.index === 0) return 'foreign';
  // UNDEF, ABS, COMMON, reserved
  if (sym.shndx === SHN_UNDEF || sym.shndx >= 0xff00) return 'foreign';
  if (sym.bind === STB_WEAK) return 'foreign';
  if (sym.type === STT_TLS || sym.type === STT_GNU_IFUNC) return 'foreign';
  if (sym.type === STT_NOTYPE && sym.bind !== STB_LOCAL) return 'foreign';
  return sectionPlace(sym.shndx);
}

/**
 * A stable name for "the symbol" of a relocation (sharing stubs and GOT slots in the first pass).
 */
export function symbolKey(sym: ElfSymbol | undefined): string {
  if (!sym || sym.index === 0) return '∅';
  if (sym.type === STT_SECTION) return `§${sym.shndx}`;
  // Two files of one µlib may each have a static `buf`: a local symbol is itself, not its name.
  return sym.bind === STB_LOCAL ? `${sym.name}#${sym.index}` : sym.name || `#${sym.index}`;
}

/**
 * What one relocated field refers to, as a string: equal strings give the same value in any one
 * image (same symbol, same relocation class, same effective addend). Built from the µlib's own
 * relocations only, so two sites that agree in one image agree in every image: ASLR mode shares
 * a pointer slot between them and the table stays the same in every image.
 */
export function refTarget(ref: CodeRef, insnEnd: bigint): string {
  const cls = relocClass(ref.type);
  // A PC-relative field's value is S + A + (end of instruction - field): the address it reaches.
  const pc = cls === 'pcrel' || cls === 'got';
  const off = pc ? ref.addend + (insnEnd - ref.at) : ref.addend;
  return `${pc ? cls : `${cls}${ref.type}`}:${ref.symKey}${off >= 0n ? '+' : ''}${off}`;
}

/**
 * Does a reference of class `cls` to a symbol at `place` point outside, in `mode`?
 * external: outside = not in any section of the µlib, or TLS/GOT. aslr (each kind of each µlib
 * placed independently per build): outside = not in the same output section, and every absolute
 * address (the µlib itself moves).
 */
export function isOutside(
  cls: RelocClass,
  place: Place,
  mode: Mode,
  ownAbs = false,
  pinned = false,
): boolean {
  switch (cls) {
    case 'ignore':
      return false;
    case 'tls':
    case 'got':
      return true;
    case 'size':
      return place === 'foreign';
    case 'pcrel':
      // A µlib that keeps its place (`pinned`) keeps its distance to its own data too.
      return mode === 'external' || pinned ? place === 'foreign' : place !== 'same';
    // ASLR moves a µlib's code per build, but its read-only data, data and bss keep their map
    // slots: an absolute address of those is the same in every build and stays in place.
    // A name slot's variant, or the platform (`ownAbs`), lays its data out per image: those
    // addresses differ too (its own code's stay: its code is at one address in every image).
    case 'abs':
      if (mode === 'external') return ownAbs ? place !== 'same' : place === 'foreign';
      return ownAbs || place !== 'own';
  }
}

/** Which field of an instruction a relocation at byte `off` patches. */
export type Operand = 'branch' | 'disp' | 'imm' | 'imm2';

export function operandAt(i: Insn, off: number): Operand | undefined {
  if (i.invalid) return undefined;
  if (i.nearBranch && i.immSize && off === i.immOff) return 'branch';
  if (i.dispSize && off === i.dispOff) return 'disp';
  if (i.immSize && off === i.immOff) return 'imm';
  if (i.imm2Size && off === i.imm2Off) return 'imm2';
  return undefined;
}

/**
 * How a site is redirected:
 * - `stub`: call/jmp/jcc rel32 keeps its place, its rel32 goes to a shared `jmp target` in the
 * table;
 * - `got`: `lea reg, [rip+X]` becomes `mov reg, [rip+G]` (same length), G an 8-byte slot holding X;
 * - `callind`: `call [mem]` becomes `jmp` to `push <return address>; jmp [mem]` in the table;
 * - `trampoline`: the instruction becomes `jmp` to its copy in the table, followed by `jmp` back.
 */
export type SiteKind = 'stub' | 'got' | 'callind' | 'trampoline';

export const JMP_REL32 = 5,
  PUSH_IMM32 = 5,
  GOT_SLOT = 8;

/** Kind of a site, or a reason it cannot be redirected. */
export function siteKind(i: Insn, ops: Operand[]): SiteKind | { error: string } {
  if (ops.includes('branch')) {
    if (i.immSize !== 4)
      return { error: `a ${i.immSize * 8}-bit relative branch cannot reach a table entry` };
    return 'stub';
  }
  if ((i.code === Code.Lea_r64_m || i.code === Code.Lea_r32_m) && i.ipRel) return 'got';
  if (i.flow === FlowControl.IndirectCall) {
    if (i.code !== Code.Call_rm64 || !i.hasMem)
      return { error: 'an indirect call of this form is not supported' };
    if (i.memBase === Register.RSP || i.memIndex === Register.RSP)
      return {
        error:
          'an indirect call through a stack operand cannot be moved (the pushed return address would shift it)',
      };
  } else if (i.flow !== FlowControl.Next && i.flow !== FlowControl.IndirectBranch) {
    return { error: 'this kind of control transfer cannot be moved' };
  }
  if (i.len < JMP_REL32)
    return {
      error: `the instruction is ${i.len} bytes, too short for the 5-byte jump to its trampoline`,
    };
  return i.flow === FlowControl.IndirectCall ? 'callind' : 'trampoline';
}

/**
 * A `mov reg, imm32` whose immediate is its one outside reference (an address): its trampoline may
 * load the address from a GOT slot instead of holding it (`mov reg, [rip+G]`), so the entry is the
 * same in every image and only the slot differs. The load's instruction code, or undefined.
 */
export function slotLoadCode(i: Insn, outside: Operand[]): Code | undefined {
  if (outside.length !== 1 || outside[0] !== 'imm' || i.immSize !== 4) return undefined;
  if (i.code === Code.Mov_r32_imm32) return Code.Mov_r32_rm32;
  if (i.code === Code.Mov_rm64_imm32 && !i.hasMem) return Code.Mov_r64_rm64;
  return undefined;
}

/** The value a slot-load site's original `mov` puts in its register (decoded from `orig`). */
export function slotLoadValue(i: Insn, orig: Buffer): bigint {
  return i.code === Code.Mov_r32_imm32
    ? BigInt(orig.readUInt32LE(i.immOff))
    : BigInt.asUintN(64, BigInt(orig.readInt32LE(i.immOff)));
}

/** The longest slot-load trampoline: REX, 8B, ModRM, disp32, then `jmp` back. */
export const SLOT_LOAD_BOUND = 7 + JMP_REL32;

/** Upper bound of the table bytes one site's own entry takes (stubs and GOT slots are shared). */
export function entryBound(kind: SiteKind, len: number): number {
  switch (kind) {
    case 'stub':
      return JMP_REL32;
    case 'got':
      return GOT_SLOT;
    // The moved instruction is never longer than the original (see table.ts), + jmp back / push.
    case 'trampoline':
      return len + JMP_REL32;
    case 'callind':
      return PUSH_IMM32 + len;
  }
}

/** Which bytes of a code section are code (see extents.ts). */
export interface CodeMap {
  isCode(addr: bigint): boolean;
  /** Relocations found in data within the code section that point outside (filled by findSites). */
  data: CodeRef[];
}

/** One relocation in code, as both passes see it. */
export interface CodeRef {
  /** Address of the relocated field (section offset in an object, address in an image). */
  at: bigint;
  type: number;
  place: Place;
  /** Identity of the referenced symbol (first pass: shares stubs and GOT slots). */
  symKey: string;
  addend: bigint;
}

export interface Site {
  insn: Insn;
  kind: SiteKind;
  /** The relocations at this instruction: type, field, whether it refers outside, and to what. */
  refs: { type: number; op: Operand; outside: boolean; target: string; place: Place }[];
  /** One of them may be relaxed by ld (the image may hold another form of the instruction). */
  relaxable: boolean;
  /** First pass: identity of the branch target / lea address (symbol + effective addend). */
  key: string;
}

/**
 * Groups the relocations of one code section by instruction and returns the instructions that
 * refer outside (sorted by address). `fail` reports an unusable relocation or instruction.
 */
export function findSites(
  insns: Insn[],
  refs: CodeRef[],
  mode: Mode,
  findIndex: (addr: bigint) => number,
  fail: (at: bigint, msg: string) => never,
  code?: CodeMap,
  ownAbs = false,
  pinned = false,
): Site[] {
  const byInsn = new Map<number, { ref: CodeRef; op: Operand }[]>();
  for (const r of refs) {
    const cls = relocClass(r.type);
    if (cls === 'ignore') continue;
    // Data in a code section (Unikraft's kvm platform keeps its boot page tables in .text): bytes
    // no function covers. Left as linked, which is always correct; counted when it points outside.
    if (code && !code.isCode(r.at)) {
      if (cls === undefined || isOutside(cls, r.place, mode, ownAbs, pinned)) code.data.push(r);
      continue;
    }
    if (cls === undefined)
      fail(
        r.at,
        `${relocName(r.type)} in code is not supported (compile without -fPIC/-mcmodel=large, or with -ftls-model=local-exec)`,
      );
    const k = findIndex(r.at);
    const i = k < 0 ? undefined : insns[k];
    if (!i || i.invalid)
      fail(r.at, `${relocName(r.type)} does not fall inside a decoded instruction (data in code?)`);
    const op = operandAt(i, Number(r.at - i.ip));
    if (!op)
      fail(
        r.at,
        `${relocName(r.type)} does not patch an operand of the instruction at 0x${i.ip.toString(16)} (decoding out of sync?)`,
      );
    let l = byInsn.get(k);
    if (!l) byInsn.set(k, (l = []));
    l.push({ ref: r, op });
  }
  const sites: Site[] = [];
  for (const k of [...byInsn.keys()].sort((a, b) => a - b)) {
    const l = byInsn.get(k)!;
    // ASLR mode: code that takes the address of its own code (`lea f(%rip)`) must get the same
    // address that data holding `f` gets, the entry stub (see rewrite.ts): it goes through the
    // table too.
    const takesOwnAddress = (ref: CodeRef, op: Operand) =>
      mode === 'aslr' &&
      ref.place === 'same' &&
      op === 'disp' &&
      relocClass(ref.type) === 'pcrel' &&
      (insns[k].code === Code.Lea_r64_m || insns[k].code === Code.Lea_r32_m);
    const outs = l.map(
      ({ ref, op }) =>
        isOutside(relocClass(ref.type)!, ref.place, mode, ownAbs, pinned) ||
        takesOwnAddress(ref, op),
    );
    if (!outs.includes(true)) continue;
    const i = insns[k];
    const kind = siteKind(
      i,
      l.map((x) => x.op),
    );
    if (typeof kind !== 'string') fail(i.ip, `${kind.error}`);
    const first = l[outs.indexOf(true)].ref;
    const end = i.ip + BigInt(i.len);
    sites.push({
      insn: i,
      kind,
      refs: l.map((x, j) => ({
        type: x.ref.type,
        op: x.op,
        outside: outs[j],
        target: refTarget(x.ref, end),
        place: x.ref.place,
      })),
      relaxable: l.some((x) => isRelaxable(x.ref.type)),
      key: refTarget(first, end),
    });
  }
  return sites;
}

/**
 * ASLR mode: the site's one outside reference is a RIP-relative operand to another section of its
 * own µlib (its read-only data, data or bss). Those keep their slots while the code moves, so the
 * address is the same in every image that links this variant: the entry may hold it (`abs`).
 */
export function refersToOwnData(refs: Site['refs']): boolean {
  const out = refs.filter((x) => x.outside);
  return (
    out.length === 1 &&
    out[0].op === 'disp' &&
    out[0].place === 'own' &&
    relocClass(out[0].type) === 'pcrel'
  );
}
