// The areas the linker script reserves for a µlib's rewrite, as the image holds them: its table
// (`.ind.<ulib>`) and, in ASLR mode, its pointer area (`.ptr.<ulib>`). Each must be where the
// plan says, of contents (PROGBITS), loaded and blank (0xCC) before the rewrite fills it.
import { ElfFile, PF_X, PT_LOAD, SHT_PROGBITS, type Section } from '../elf.js';
import { SpacerError } from '../errors.js';
import { hex } from '../util/units.js';
import { type RewriteUlib, type UlibAnalysis } from './types.js';

/** The µlib's table as the linker script reserved it: where the plan says, blank, executable. */
export function checkInd(elf: ElfFile, u: RewriteUlib, a: UlibAnalysis, where: string): Section {
  const want = u.ind!;
  const ind = placed(elf, want, 'the indirection table', where);
  if (ind.type !== SHT_PROGBITS)
    throw new SpacerError(
      `${where}: ${want.section} has no contents in the file; reserve it with FILL(0xCCCCCCCC) and '. = . + SIZE' so it is PROGBITS`,
    );
  if (!Number.isSafeInteger(want.size) || want.size < 0 || ind.size < BigInt(want.size))
    throw new SpacerError(
      `${where}: ${want.section} is ${ind.size} bytes, the plan reserves ${want.size}; relink with the plan's script`,
    );
  if (!inLoad(elf, ind, true))
    throw new SpacerError(
      `${where}: ${want.section} is not in an executable PT_LOAD; place it in the text segment of the linker script`,
    );
  if (ind.addr < a.text.addr + a.text.size && a.text.addr < ind.addr + BigInt(want.size))
    throw new SpacerError(`${where}: ${want.section} overlaps ${u.text}; fix the linker script`);
  checkBlank(elf, ind, want, where);
  return ind;
}

/** The µlib's pointer area as the linker script reserved it: where the plan says, blank, loaded. */
export function checkPtr(elf: ElfFile, u: RewriteUlib, where: string): Section {
  const want = u.ptr!;
  const s = placed(elf, want, 'the pointer area', where);
  if (s.type !== SHT_PROGBITS || s.size < BigInt(want.size))
    throw new SpacerError(
      `${where}: ${want.section} is not ${want.size} bytes of contents; relink with the plan's script`,
    );
  if (!inLoad(elf, s, false))
    throw new SpacerError(
      `${where}: ${want.section} is not loaded; place it in a PT_LOAD of the linker script`,
    );
  checkBlank(elf, s, want, where);
  return s;
}

/** The reserved section, at the plan's address. */
function placed(
  elf: ElfFile,
  want: { section: string; addr: bigint },
  what: string,
  where: string,
): Section {
  const s = elf.section(want.section);
  if (!s)
    throw new SpacerError(
      `${where}: the image has no section ${want.section}; reserve ${what} in the linker script`,
    );
  if (s.addr !== want.addr)
    throw new SpacerError(
      `${where}: ${want.section} is at ${hex(s.addr)}, the plan says ${hex(want.addr)}; relink with the plan's script`,
    );
  return s;
}

/** Inside the file part of a PT_LOAD (an executable one if `exec`). */
function inLoad(elf: ElfFile, s: Section, exec: boolean): boolean {
  return elf.segments.some(
    (p) =>
      p.type === PT_LOAD &&
      (!exec || (p.flags & PF_X) !== 0) &&
      s.addr >= p.vaddr &&
      s.addr + s.size <= p.vaddr + p.filesz,
  );
}

function checkBlank(
  elf: ElfFile,
  s: Section,
  want: { section: string; size: number },
  where: string,
): void {
  if (
    !elf
      .contents(s)
      .subarray(0, want.size)
      .every((b) => b === 0xcc)
  )
    throw new SpacerError(
      `${where}: ${want.section} is not blank (0xCC); fill it with FILL(0xCCCCCCCC) in the linker script`,
    );
}
