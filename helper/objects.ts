// Reads the per-library relocatable objects a Unikraft link uses (libNAME.o, appNAME.o):
// their allocated input sections, and a content hash that identifies a µlib variant (the
// same library built in another configuration gets another hash).
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import {
  ElfFile,
  ET_REL,
  EM_X86_64,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHT_NOBITS,
  SHT_PROGBITS,
  SHN_COMMON,
  num,
} from './elf.js';
import { SpacerError } from './errors.js';
import { helperCodeId } from './cache/code-id.js';
import { readEntry, writeEntry } from './cache/store.js';

export interface InputSection {
  name: string;
  size: number;
  align: number;
  nobits: boolean;
  flags: bigint;
}

export interface UlibObject {
  /** µlib name: the object's basename without `.o` (libukalloc, apphelloworld). */
  name: string;
  path: string;
  /** Allocated input sections in file order, plus one `COMMON` entry per common symbol. */
  sections: InputSection[];
  /** 16 hex digits of SHA-256 over loaded contents and relocations. */
  variant: string;
  /**
   * 16 hex digits over what decides the linked code's bytes at a given address: every allocated
   * section's name, type, flags, alignment and size, and the code sections' contents and
   * relocations. Two variants with the same code signature (ukboot built for two apps whose names
   * have the same length) link to the same code in a name slot.
   */
  codeSig: string;
  /**
   * SHA-256 of everything a link reads from the object (headers, allocated sections, symbols,
   * relocations): the key of what the cache keeps about it.
   */
  contentKey: string;
  /** The object as read (its symbols serve later passes without reading it again). */
  elf: ElfFile;
}

export function ulibName(path: string): string {
  return basename(path).replace(/\.o$/, '');
}

export function readObject(path: string): UlibObject {
  // Only what the link reads: a Unikraft object is mostly debug information.
  const elf = ElfFile.loadAllocated(path);
  if (elf.header.type !== ET_REL) {
    throw new SpacerError(
      `${path}: not a relocatable object (ELF type ${elf.header.type}); pass the per-library libNAME.o files`,
    );
  }
  if (elf.header.machine !== EM_X86_64 || elf.header.class !== 64) {
    throw new SpacerError(
      `${path}: not an x86-64 ELF64 object; lib-spacer supports kvm x86_64 builds`,
    );
  }
  const h = createHash('sha256'),
    code = createHash('sha256');
  const sections: InputSection[] = [];
  const syms = elf.symbols();
  for (const s of elf.sections) {
    if (!(s.flags & SHF_ALLOC)) continue;
    const nobits = s.type === SHT_NOBITS;
    sections.push({
      name: s.name,
      size: num(s.size),
      align: Math.max(1, num(s.addralign)),
      nobits,
      flags: s.flags,
    });
    const head = `${s.name}\0${s.type}\0${s.flags}\0${s.addralign}\0${s.size}\0`;
    const isCode = !!(s.flags & SHF_EXECINSTR);
    h.update(head);
    code.update(head);
    if (s.type === SHT_PROGBITS || !nobits) {
      h.update(elf.contents(s));
      if (isCode) code.update(elf.contents(s));
    }
    for (const r of elf.relocationsFor(s)) {
      const sym = syms[r.sym];
      const target = sym
        ? sym.type === 3
          ? `§${elf.sections[sym.shndx]?.name ?? sym.shndx}`
          : sym.name
        : '';
      const line = `${r.offset}\0${r.type}\0${r.addend}\0${target}\0`;
      h.update(line);
      if (isCode) code.update(line);
    }
  }
  for (const sym of syms) {
    if (sym.shndx === SHN_COMMON) {
      sections.push({
        name: 'COMMON',
        size: num(sym.size),
        align: Math.max(1, num(sym.value)),
        nobits: true,
        flags: SHF_ALLOC,
      });
      h.update(`COMMON\0${sym.name}\0${sym.size}\0${sym.value}\0`);
      code.update(`COMMON\0${sym.name}\0${sym.size}\0${sym.value}\0`);
    }
  }
  return {
    name: ulibName(path),
    path,
    sections,
    variant: h.digest('hex').slice(0, 16),
    codeSig: code.digest('hex').slice(0, 16),
    contentKey: createHash('sha256').update(elf.data).digest('hex'),
    elf,
  };
}

/**
 * readObject through the cache next to the map: an object whose file is the one read before (the
 * same path, device, inode, size, and modification and change times to the nanosecond, as make
 * judges it, and the same helper) gives its summary without being read; its ELF is read only if
 * a later pass asks for it (copies of leaf callees in ASLR mode). Without a cache, readObject.
 */
export function readObjectCached(path: string, cache: string | undefined): UlibObject {
  if (!cache) return readObject(path);
  let key: string;
  try {
    const st = statSync(path, { bigint: true });
    key = createHash('sha256')
      .update(`spacer-object 1 ${helperCodeId()} ${path}\0`)
      .update(`${st.dev} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`)
      .digest('hex');
  } catch {
    return readObject(path);
  }
  type Summary = Omit<UlibObject, 'elf'>;
  const hit = readEntry<Summary>(cache, 'object', key);
  if (hit && hit.path === path) {
    let elf: ElfFile | undefined;
    return Object.defineProperty({ ...hit } as UlibObject, 'elf', {
      get: () => (elf ??= ElfFile.loadAllocated(path)),
      enumerable: false,
    });
  }
  const u = readObject(path);
  const { elf: _elf, ...summary } = u;
  writeEntry(cache, 'object', key, summary satisfies Summary);
  return u;
}
