// ASLR hardening: every page of an ASLR image whose bytes depend on the seed gets at least 64 bits
// derived from the seed (audit/salt.ts says where and which bytes), so a neighbour cannot guess
// the page to learn the layout (docs/security.md). Runs after the rewrite on the .dbg, before the
// bootable image is made from it; the file is replaced atomically. The same seed gives the same
// bytes, and a hardened image is left as it is.
import { type AslrImage, fileOffset, readAslrImage } from './audit/analyze.js';
import { SALT_BYTES, SALT_SECTION, saltPlace, wordSalt, type SaltPlace } from './audit/salt.js';
import { ElfFile, SHF_ALLOC, SHT_PROGBITS, SHT_REL, SHT_RELA, SHT_SYMTAB } from './elf.js';
import { readWhole, takeBuffer } from './util/buffers.js';
import { loadImage } from './rewrite/record.js';
import { writeFileAtomic } from './util/files.js';
import { alignUp, hex } from './util/units.js';

export interface HardenResult {
  image: string;
  /** Seed-dependent pages. */
  pages: number;
  /** Pages salted by this run (0: already hardened). */
  written: number;
  /** Pages with no room for a salt (hex): `spacer audit` fails on them. */
  unplaced: string[];
}

/**
 * Salts every seed-dependent page of the ASLR image at `path` (an ELF64 .dbg) and replaces the
 * file when that changed it (renamed whole; a build product: no sync).
 */
export function hardenImage(path: string): HardenResult & { data?: Buffer } {
  const r = hardenBytes(path, ElfFile.load(path, readWhole));
  if (r.data) writeFileAtomic(path, r.data, 'product');
  return r;
}

/**
 * The salted bytes of the ASLR image `elf` (named `path` in errors), or no `data` when every salt
 * is in place already: `spacer finish` salts the rewritten bytes before their one write.
 */
export function hardenBytes(path: string, image: ElfFile): HardenResult & { data?: Buffer } {
  const img: AslrImage = readAslrImage(loadImage(path, image));
  const { elf } = img;
  const data = takeBuffer(elf.data.length);
  elf.data.copy(data);
  let written = 0;
  const unplaced: string[] = [];
  const named = new Set(
    elf.sections.filter((s) => s.name === SALT_SECTION).map((s) => Number(s.addr)),
  );
  const sections: { addr: number; offset: number }[] = [];
  for (const p of img.pages) {
    const place = saltPlace(img, p.page);
    if (!place) {
      unplaced.push(hex(p.page * 4096));
      continue;
    }
    let changed = false;
    place.words.forEach((w, i) => {
      const off = wordOffset(img, place, w);
      const want = wordSalt(img.seed, place, i),
        cur = data.subarray(off, off + want.length);
      if (place.kind === 'gap' && !named.has(w)) sections.push({ addr: w, offset: off });
      if (cur.equals(want)) return;
      // Padding is zeros as ld wrote it; anything else there is not padding. Code padding holds the
      // assembler's nops: pad.ts proved nothing runs it.
      if (place.kind !== 'pad' && !cur.every((b) => b === 0))
        throw new Error(`${path}: salt word ${hex(w)} holds neither zeros nor its salt`);
      want.copy(data, off);
      changed = true;
    });
    if (place.extend !== undefined) extendSegment(elf, data, place.extend, place.words[0]);
    if (changed) written++;
  }
  const out = sections.length ? withSections(elf, data, sections) : written ? data : undefined;
  return { image: path, pages: img.pages.length, written, unplaced, ...(out ? { data: out } : {}) };
}

/** The file offset of salt word `w` (past its segment's file bytes for an extension). */
function wordOffset(img: AslrImage, place: SaltPlace, w: number): number {
  if (place.extend === undefined) return fileOffset(img.elf, w)!;
  const p = img.elf.segments[place.extend];
  return Number(p.offset) + (w - Number(p.vaddr));
}

/** Grows PT_LOAD `i` (ELF64) so its file and memory bytes reach the end of word `w`. */
function extendSegment(elf: ElfFile, data: Buffer, i: number, w: number): void {
  const p = elf.segments[i];
  const size = BigInt(w + SALT_BYTES) - p.vaddr;
  const at = Number(elf.header.phoff) + i * elf.header.phentsize;
  if (size > p.filesz) {
    data.writeBigUInt64LE(size, at + 32);
    data.writeBigUInt64LE(size, at + 40);
  }
}

/**
 * The file with one `.spacer.salt` section (loaded, 8 bytes) per new salt word, so that strip,
 * pack and objcopy keep the word. The headers go in address order among the loaded sections (the
 * tools lay a segment out in header order), so section indices move: links, relocation targets,
 * symbols' sections and the name table's index follow. Names and headers are written anew at the
 * end of the file (ELF64).
 */
function withSections(elf: ElfFile, data: Buffer, add: { addr: number; offset: number }[]) {
  const h = elf.header,
    W = h.shentsize;
  let names = elf.contents(elf.sections[h.shstrndx]);
  let name = names.indexOf(Buffer.from(`\0${SALT_SECTION}\0`));
  if (name >= 0) name += 1;
  else {
    name = names.length;
    names = Buffer.concat([names, Buffer.from(`${SALT_SECTION}\0`)]);
  }
  const row = (i: number) => data.subarray(Number(h.shoff) + i * W, Number(h.shoff) + (i + 1) * W);
  const saltRow = (a: { addr: number; offset: number }) => {
    const e = Buffer.alloc(W);
    e.writeUInt32LE(name, 0);
    e.writeUInt32LE(SHT_PROGBITS, 4);
    e.writeBigUInt64LE(SHF_ALLOC, 8);
    e.writeBigUInt64LE(BigInt(a.addr), 16);
    e.writeBigUInt64LE(BigInt(a.offset), 24);
    e.writeBigUInt64LE(BigInt(SALT_BYTES), 32);
    e.writeBigUInt64LE(1n, 48);
    return e;
  };
  // Each salt goes before the first loaded section above it, else after the last loaded one.
  const pending = [...add].sort((a, b) => a.addr - b.addr);
  const loaded = elf.sections.filter((s) => s.index > 0 && s.flags & SHF_ALLOC);
  const lastLoaded = loaded.at(-1)?.index ?? 0;
  const rows: Buffer[] = [];
  const newIndex: number[] = [];
  for (const s of elf.sections) {
    if (s.index > 0 && s.flags & SHF_ALLOC)
      while (pending.length && pending[0].addr < Number(s.addr))
        rows.push(saltRow(pending.shift()!));
    newIndex[s.index] = rows.length;
    rows.push(Buffer.from(row(s.index)));
    if (s.index === lastLoaded) while (pending.length) rows.push(saltRow(pending.shift()!));
  }
  rows.push(...pending.map(saltRow));
  const map = (i: number) => (i > 0 && i < newIndex.length ? newIndex[i] : i);
  for (const r of rows) {
    const type = r.readUInt32LE(4);
    r.writeUInt32LE(map(r.readUInt32LE(40)), 40);
    if (type === SHT_REL || type === SHT_RELA) r.writeUInt32LE(map(r.readUInt32LE(44)), 44);
  }
  // Symbols name their section by index (below SHN_LORESERVE).
  for (const s of elf.sections.filter((x) => x.type === SHT_SYMTAB))
    for (let o = Number(s.offset); o + 24 <= Number(s.offset + s.size); o += 24) {
      const x = data.readUInt16LE(o + 6);
      if (x > 0 && x < 0xff00) data.writeUInt16LE(map(x), o + 6);
    }
  const strIndex = map(h.shstrndx);
  const namesAt = data.length,
    tableAt = alignUp(namesAt + names.length, 8);
  rows[strIndex].writeBigUInt64LE(BigInt(namesAt), 24);
  rows[strIndex].writeBigUInt64LE(BigInt(names.length), 32);
  const out = Buffer.concat([data, names, Buffer.alloc(tableAt - namesAt - names.length), ...rows]);
  out.writeBigUInt64LE(BigInt(tableAt), 0x28);
  out.writeUInt16LE(rows.length, 0x3c);
  out.writeUInt16LE(strIndex, 0x3e);
  return out;
}
