// Reading an image for the report: loading it (one error line per problem), its µlibs' sections
// from its plan (or from section names), and the sections a compacted image no longer names.
import { ElfFile, ET_REL, SHF_ALLOC, SHF_TLS, SHT_NOBITS, type Section } from '../elf.js';
import { SpacerError, isSpacerError } from '../errors.js';
import { type ImagePlan, type RecordedSlot } from '../plan.js';
import { SLOT_KINDS } from '../map.js';

/** Loads a linked image; every problem with the file becomes one SpacerError line naming it. */
export function loadImage(path: string): ElfFile {
  let elf: ElfFile;
  try {
    elf = ElfFile.load(path);
  } catch (e) {
    if (isSpacerError(e)) throw e;
    throw new SpacerError(`${path}: malformed ELF file (${(e as Error).message}); rebuild it`);
  }
  if (elf.header.type === ET_REL)
    throw new SpacerError(
      `${path}: a relocatable object, not a linked image; pass the .dbg or the multiboot image`,
    );
  if (!elf.loads.some((p) => p.memsz > 0n))
    throw new SpacerError(
      `${path}: no loadable segment (PT_LOAD with memsz > 0); pass a linked image`,
    );
  return elf;
}

export const isAlloc = (s: Section) => (s.flags & SHF_ALLOC) !== 0n;
/** Allocated sections that occupy memory pages (a NOBITS TLS section only describes a template). */
export const occupies = (s: Section) =>
  isAlloc(s) && s.size > 0n && !(s.type === SHT_NOBITS && (s.flags & SHF_TLS) !== 0n);
const ULIB_SECTION = /^\.(?:text|rodata|data|bss)\.((?:lib|app).+)$/;

/**
 * The image's µlibs and their sections: from the plan when there is one (its slot sections and
 * `.<kind>.<µlib>`); otherwise every `.<kind>.<name>` section whose name is a Unikraft library
 * (`lib…` or `app…`). Empty for the default layout.
 */
export function ulibSections(elf: ElfFile, plan: ImagePlan | null): Map<string, Section[]> {
  const out = new Map<string, Section[]>();
  if (plan) {
    for (const u of plan.ulibs) {
      const names = new Set<string>(SLOT_KINDS.map((k) => `.${k}.${u.name}`));
      for (const s of Object.values(u.slots)) if (s) names.add(s.section);
      const found = elf.sections.filter((s) => isAlloc(s) && names.has(s.name));
      for (const [k, slot] of Object.entries(u.slots)) {
        if (!slot || found.some((s) => s.name === slot.section)) continue;
        const s = planSection(elf, k, slot);
        if (s) found.push(s);
      }
      out.set(u.name, found);
    }
  } else {
    for (const s of elf.sections) {
      const m = isAlloc(s) ? ULIB_SECTION.exec(s.name) : null;
      if (!m) continue;
      const list = out.get(m[1]) ?? [];
      list.push(s);
      out.set(m[1], list);
    }
  }
  return out;
}

/**
 * The section a plan slot names. A compacted image (spacer compact) has one header per run of
 * µlib sections: then the plan's address and size say where the slot's bytes are (index -1).
 */
export function planSection(elf: ElfFile, kind: string, slot: RecordedSlot): Section | undefined {
  const s = elf.section(slot.section);
  if (s || !slot.addr || !slot.size) return s;
  const addr = BigInt(slot.addr),
    size = BigInt(slot.size);
  const seg = elf.loads.find((p) => addr >= p.vaddr && addr + size <= p.vaddr + p.memsz);
  if (!seg) return undefined;
  const nobits = kind === 'bss' || addr + size > seg.vaddr + seg.filesz;
  return {
    index: -1,
    name: slot.section,
    type: nobits ? SHT_NOBITS : 1,
    flags: SHF_ALLOC,
    addr,
    offset: nobits ? 0n : seg.offset + (addr - seg.vaddr),
    size,
    link: 0,
    info: 0,
    addralign: 1n,
    entsize: 0n,
  };
}
