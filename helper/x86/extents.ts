// Which bytes of a code section are instructions. A linear sweep through a whole section reads
// data kept in code (Unikraft's boot page tables, hand-written jump tables, constants) as
// instructions and goes out of step, so the rewriter decodes only what the object says is code:
// the extents of its sized function symbols, less the extents of data symbols inside them. Every
// other byte is data: left exactly as linked (always correct for this image), and counted when it
// holds an address that differs between images.
//
// A function that still holds data (a label without a type in the middle of hand-written code)
// shows it: a relocation that does not land on an operand of the decoded instruction. Such a
// function is *undecided*. It is left as linked too, and the first pass names it in one line with
// the fix. The decision depends only on the bytes before each relocated field, which are the same
// in the object and in the linked image, so both passes decide alike.
import { STT_FUNC, STT_OBJECT, type ElfSymbol } from '../elf.js';
import { decodeRange, findInsn, type Insn } from './decode.js';
import { hex } from '../util/units.js';
import { operandAt, relocClass, type CodeMap } from './classify.js';

/** Bytes [start, end) of one function that hold instructions. */
export interface Extent {
  start: bigint;
  end: bigint;
  /** The function's name (for messages). */
  name: string;
}

/** A function left as linked because a relocation in it does not fit its decoded instructions. */
export interface Undecided {
  name: string;
  start: bigint;
  /** The relocated field that does not fit. */
  at: bigint;
}

const byStart = (a: { start: bigint }, b: { start: bigint }) =>
  a.start < b.start ? -1 : a.start > b.start ? 1 : 0;

/**
 * The code extents of section `shndx`, whose bytes are [lo, hi): every function symbol with a size,
 * clipped to the section, less every data symbol (STT_OBJECT, at least one byte) inside it.
 * A function symbol without a size (hand-written code with `.type` but no `.size`) and bytes no
 * function covers are data. Overlapping function symbols (aliases) are merged.
 */
export function codeExtents(
  syms: readonly ElfSymbol[],
  shndx: number,
  lo: bigint,
  hi: bigint,
): Extent[] {
  const funcs: Extent[] = [];
  const data: Extent[] = [];
  for (const y of syms) {
    if (y.shndx !== shndx) continue;
    const start = y.value < lo ? lo : y.value;
    const end0 = y.value + (y.size > 0n ? y.size : y.type === STT_OBJECT ? 1n : 0n);
    const end = end0 > hi ? hi : end0;
    if (end <= start) continue;
    if (y.type === STT_FUNC && y.size > 0n)
      funcs.push({ start, end, name: y.name || hex(y.value) });
    else if (y.type === STT_OBJECT) data.push({ start, end, name: y.name || hex(y.value) });
  }
  funcs.sort(byStart);
  const merged: Extent[] = [];
  for (const f of funcs) {
    const last = merged[merged.length - 1];
    if (last && f.start < last.end) {
      if (f.end > last.end) last.end = f.end;
    } else merged.push({ ...f });
  }
  if (!data.length) return merged;
  data.sort(byStart);
  const out: Extent[] = [];
  for (const f of merged) {
    let at = f.start;
    for (const d of data) {
      if (d.end <= at || d.start >= f.end) continue;
      if (d.start > at) out.push({ start: at, end: d.start, name: f.name });
      if (d.end > at) at = d.end;
    }
    if (at < f.end) out.push({ start: at, end: f.end, name: f.name });
  }
  return out;
}

/** A CodeMap over sorted, disjoint extents: an address no extent covers is data. */
export function codeMapOf(extents: readonly Extent[]): CodeMap {
  return {
    data: [],
    isCode(addr: bigint): boolean {
      let lo = 0,
        hi = extents.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (addr < extents[mid].start) hi = mid - 1;
        else if (addr >= extents[mid].end) lo = mid + 1;
        else return true;
      }
      return false;
    },
  };
}

/**
 * The decoded code of one section: its instructions, the extents they cover, and what was left
 * undecided.
 */
export interface DecodedCode {
  insns: Insn[];
  code: CodeMap;
  undecided: Undecided[];
}

/**
 * Decodes the extents of a section's bytes (`bytes` loaded at `base`) and checks that every
 * relocation inside them patches an operand of its instruction; a function where one does not is
 * dropped from the code (undecided). `relocs` are the addresses of the section's relocated fields
 * and their types; `detail` as for decodeRange.
 */
export function decodeCode(
  bytes: Uint8Array,
  base: bigint,
  extents: readonly Extent[],
  relocs: readonly { at: bigint; type: number }[],
): DecodedCode {
  const fields = relocs
    .filter((r) => relocClass(r.type) !== 'ignore')
    .sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  const insns: Insn[] = [];
  const kept: Extent[] = [];
  const undecided: Undecided[] = [];
  let r = 0;
  for (const e of extents) {
    const from = Number(e.start - base),
      to = Number(e.end - base);
    while (r < fields.length && fields[r].at < e.start) r++;
    const mine: bigint[] = [];
    for (let k = r; k < fields.length && fields[k].at < e.end; k++) mine.push(fields[k].at);
    const part = decodeRange(bytes.subarray(from, to), e.start, [], mine);
    const bad = mine.find((at) => {
      const k = findInsn(part, at);
      return k < 0 || operandAt(part[k], Number(at - part[k].ip)) === undefined;
    });
    if (bad !== undefined) {
      undecided.push({ name: e.name, start: e.start, at: bad });
      continue;
    }
    kept.push(e);
    for (const i of part) insns.push(i);
  }
  const branches = lonelyBranches(bytes, base, extents, fields);
  if (!branches.length) return { insns, code: codeMapOf(kept), undecided };
  for (const b of branches) {
    insns.push(b);
    kept.push({ start: b.ip, end: b.ip + BigInt(b.len), name: `call/jmp at ${hex(b.ip)}` });
  }
  insns.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
  kept.sort(byStart);
  return { insns, code: codeMapOf(kept), undecided };
}

const R_X86_64_PLT32 = 4;

/**
 * Calls and jumps to a symbol in bytes no function covers. Hand-written code without `.size`
 * (Unikraft's interrupt stubs, `ENTRY` without `END`) is data to the rewriter, but `call sym` and
 * `jmp sym` in it are unmistakable: the assembler writes R_X86_64_PLT32 for them, one byte after
 * an E8 or E9 opcode. Each is decoded on its own (five bytes, a near branch whose displacement is
 * the relocated field) so it is rewritten like any call; the bytes around it stay as linked.
 */
function lonelyBranches(
  bytes: Uint8Array,
  base: bigint,
  extents: readonly Extent[],
  fields: readonly { at: bigint; type: number }[],
): Insn[] {
  const covered = codeMapOf(extents);
  const out: Insn[] = [];
  for (const f of fields) {
    if (f.type !== R_X86_64_PLT32 || covered.isCode(f.at) || covered.isCode(f.at - 1n)) continue;
    const off = Number(f.at - base);
    if (off < 1 || off + 4 > bytes.length || (bytes[off - 1] !== 0xe8 && bytes[off - 1] !== 0xe9))
      continue;
    const part = decodeRange(bytes.subarray(off - 1, off + 4), f.at - 1n, [], [f.at]);
    const i = part[0];
    if (part.length === 1 && i.len === 5 && i.nearBranch && operandAt(i, 1) !== undefined)
      out.push(i);
  }
  return out;
}

/** One line for an undecided function: where, and what to do. */
export function undecidedLine(where: string, u: Undecided): string {
  return (
    `${where}+${hex(u.at)}: the relocation does not fit the instructions of ${u.name} (data inside a function?); ` +
    `${u.name} is left as linked and its page is not shared; give the data a symbol with .type @object and .size, ` +
    'or move it out of the function'
  );
}
