// Entry stubs, for ASLR mode: addresses of code held as data. A function pointer in read-only data
// or data (an ops table, the init table, a switch table) holds the address of code, which ASLR
// moves per build, so that page would differ in every image. Each µlib's *entries* (its global
// code symbols, and every place in its code that its own code or data takes the address of) get a
// stub `jmp <entry>` at the start of the µlib's pointer area, whose address the map keeps; every
// such pointer, in any data of the image, and every address of an entry that µlib code computes
// (lea, mov imm, through the pointer slots), becomes the stub's address. The pages holding the
// pointers are then the same in every image; only the pointer area (stubs and slots) differs.
// Everything in the µlibs agrees on one address per entry, so comparing function pointers still
// works; the platform's boot code, which the rewrite does not touch, keeps real addresses.
import {
  type ElfFile,
  type ElfSymbol,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHT_PROGBITS,
  STB_GLOBAL,
  STB_LOCAL,
  STB_WEAK,
  STT_FUNC,
  type Section,
} from '../elf.js';
import { R_X86_64 } from './classify.js';
import { jmpRel32 } from './table.js';

export const STUB = 5;

/**
 * A global function: another µlib may take its address by name. Only STT_FUNC: untyped globals in
 * code are often data there (the kvm platform's boot page tables and memory-region descriptors),
 * whose address must stay the real one.
 */
export function isEntrySymbol(y: ElfSymbol, codeIndex: number): boolean {
  return (
    y.shndx === codeIndex && (y.bind === STB_GLOBAL || y.bind === STB_WEAK) && y.type === STT_FUNC
  );
}

/** A data field holding an address: its relocation types. */
export const DATA_ADDRESS_TYPES = new Set<number>([R_X86_64._64, R_X86_64._32, R_X86_64._32S]);

export function readAddress(data: Buffer, off: number, type: number): bigint | undefined {
  if (type === R_X86_64._64) return off + 8 <= data.length ? data.readBigUInt64LE(off) : undefined;
  if (off + 4 > data.length) return undefined;
  return type === R_X86_64._32
    ? BigInt(data.readUInt32LE(off))
    : BigInt.asUintN(64, BigInt(data.readInt32LE(off)));
}

export function writeAddress(data: Buffer, off: number, type: number, v: bigint): void {
  if (type === R_X86_64._64) data.writeBigUInt64LE(v, off);
  else if (type === R_X86_64._32) data.writeUInt32LE(Number(v), off);
  else data.writeInt32LE(Number(BigInt.asIntN(64, v)), off);
}

/** Sections whose relocated address fields may be redirected to stubs: loaded data, not code. */
export function dataSections(elf: ElfFile): Section[] {
  return elf.sections.filter(
    (s) =>
      s.type === SHT_PROGBITS &&
      (s.flags & SHF_ALLOC) !== 0n &&
      !(s.flags & SHF_EXECINSTR) &&
      !s.name.startsWith('.spacer.'),
  );
}

/** The stubs of one µlib: at `at`, one per entry (sorted), each `jmp entry`. */
export interface UlibStubs {
  at: bigint;
  targets: bigint[];
}

export function stubBytes(s: UlibStubs, what: string): Buffer {
  return Buffer.concat(
    s.targets.map((t, k) => jmpRel32(s.at + BigInt(k * STUB), t, `${what}: entry stub`)),
  );
}

/** Stub address per entry address, over every µlib's stubs. */
export function stubMap(all: UlibStubs[]): Map<bigint, bigint> {
  const m = new Map<bigint, bigint>();
  for (const s of all) s.targets.forEach((t, k) => m.set(t, s.at + BigInt(k * STUB)));
  return m;
}

/** Where a µlib's pointer slots start, after its stubs. */
export const slotsAfterStubs = (s: UlibStubs) =>
  s.at + ((BigInt(s.targets.length * STUB) + 7n) & ~7n);

/**
 * Relocated address fields of data sections whose symbol is in one of `codeIndexes` and whose value
 * lies in it.
 */
export function dataAddressFields(
  elf: ElfFile,
  codeRanges: Map<number, [bigint, bigint]>,
): { sec: Section; at: bigint; type: number; value: bigint; local: boolean }[] {
  const syms = elf.symbols();
  const out: { sec: Section; at: bigint; type: number; value: bigint; local: boolean }[] = [];
  for (const sec of dataSections(elf)) {
    const rel = elf.relocationsFor(sec);
    if (!rel.length) continue;
    const data = elf.contents(sec);
    for (const r of rel) {
      if (!DATA_ADDRESS_TYPES.has(r.type)) continue;
      const range = codeRanges.get(syms[r.sym]?.shndx ?? -1);
      if (!range) continue;
      const off = Number(r.offset - sec.addr);
      if (off < 0) continue;
      const v = readAddress(data, off, r.type);
      if (v !== undefined && v >= range[0] && v < range[1])
        out.push({
          sec,
          at: r.offset,
          type: r.type,
          value: v,
          local: syms[r.sym].bind === STB_LOCAL,
        });
    }
  }
  return out;
}
