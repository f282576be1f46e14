// Non-loaded sections added to an ELF64 image in memory (what `objcopy --add-section NAME=FILE
// --set-section-flags NAME=readonly,contents` does for the rewrite record and the plan), without
// starting objcopy or writing the image twice. Every byte of the input stays where it was: the
// new names, the sections and a new section header table go after its end, and the ELF header
// points at the new table. Loaded memory, program headers and every existing section are
// unchanged; the old table becomes unused bytes, which strip drops with the other non-loaded ones.
import { ElfFile, SHT_PROGBITS, SHT_STRTAB } from './elf.js';
import { EHDR, SHDR, writeFields } from './elflayout.js';

/** A section to add: its name and bytes. */
export interface AddedSection {
  name: string;
  data: string | Buffer;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * `elf` with `sections` added (SHT_PROGBITS, no flags: not loaded; with `inPlace`, in the room
 * after `elf.data` when its memory has it), or undefined when this file
 * needs objcopy's general path (not ELF64, no section name table, a name already present, too
 * many sections for the header's 16-bit count).
 */
export function appendSections(
  elf: ElfFile,
  added: AddedSection[],
  inPlace = false,
): Buffer | undefined {
  // objcopy puts each --add-section before the ones given earlier: the same order here.
  const sections = [...added].reverse();
  const h = elf.header;
  const strtab = elf.sections[h.shstrndx];
  if (h.class !== 64 || !strtab || strtab.type !== SHT_STRTAB || h.shoff === 0n) return undefined;
  const n = elf.sections.length;
  if (n + sections.length >= 0xff00 || h.shnum !== n) return undefined;
  if (sections.some((s) => elf.section(s.name))) return undefined;
  // The name table, old names then the new ones.
  const oldNames = elf.contents(strtab);
  const nameAt: number[] = [];
  const newNames: Buffer[] = [];
  let len = oldNames.length;
  for (const s of sections) {
    nameAt.push(len);
    const b = Buffer.from(`${s.name}\0`);
    newNames.push(b);
    len += b.length;
  }
  const names = Buffer.concat([oldNames, ...newNames]);
  const bodies = sections.map((s) => (typeof s.data === 'string' ? Buffer.from(s.data) : s.data));
  // Layout after the input's end: names, each section (1-aligned, as objcopy gives them), table.
  const namesOff = elf.data.length;
  let at = namesOff + names.length;
  const bodyOff = bodies.map((b) => {
    const o = at;
    at += b.length;
    return o;
  });
  const shoff = align(at, 8);
  // Every byte is written below but the padding before the table (zeroed here). With `inPlace`
  // and room after the input in its memory, the sections go there: the input is not copied (its
  // ELF header is then rewritten too).
  const size = shoff + (n + sections.length) * 64;
  const d = elf.data;
  const room = inPlace && d.byteOffset + size <= d.buffer.byteLength;
  const out = room ? Buffer.from(d.buffer, d.byteOffset, size) : Buffer.allocUnsafe(size);
  out.fill(0, at, shoff);
  if (!room) d.copy(out, 0);
  names.copy(out, namesOff);
  bodies.forEach((b, i) => b.copy(out, bodyOff[i]));
  // The old headers, the name table's pointing at its new copy, then one per added section.
  elf.data.copy(out, shoff, Number(h.shoff), Number(h.shoff) + n * 64);
  writeFields(out, shoff + h.shstrndx * 64, SHDR[64], {
    offset: BigInt(namesOff),
    size: BigInt(names.length),
  });
  sections.forEach((_, i) =>
    writeFields(out, shoff + (n + i) * 64, SHDR[64], {
      name: nameAt[i],
      type: SHT_PROGBITS,
      flags: 0n,
      addr: 0n,
      offset: BigInt(bodyOff[i]),
      size: BigInt(bodies[i].length),
      link: 0,
      info: 0,
      addralign: 1n,
      entsize: 0n,
    }),
  );
  writeFields(out, 0, EHDR[64], { shoff: BigInt(shoff), shnum: n + sections.length });
  return out;
}
