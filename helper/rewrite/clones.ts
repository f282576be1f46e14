// Copies of other µlibs' functions after a µlib's table (ASLR mode, x86/clone.ts): which
// functions an ELF file offers for a copy, and how a direct branch is pointed at one.
import {
  ElfFile,
  ET_REL,
  SHF_EXECINSTR,
  SHN_UNDEF,
  SHT_PROGBITS,
  STB_LOCAL,
  STT_FUNC,
  type ElfSymbol,
} from '../elf.js';
import { SpacerError } from '../errors.js';
import { cloneRefusal } from '../x86/clone.js';
import { Code } from '../x86/decode.js';
import { hex } from '../util/units.js';

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
      y.bind === STB_LOCAL ||
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
