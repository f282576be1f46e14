// Where a seed-dependent page carries its salt, and which bytes: at least 64 bits derived from the
// image's seed (same seed, same bytes), in bytes nothing reads, so the page is still what it was to
// the program. Placed from the image's sections and segments only, never from its bytes, so audit
// finds the same place in a hardened image as harden chose in the plain one.
//   - gap: the last 8 aligned bytes of the page that no loaded section covers (padding between
//     sections, or after the last one of a segment that ends on the page, when the file has the
//     bytes to extend the segment with); harden names the word with a `.spacer.salt` section so
//     strip, pack and objcopy keep it;
//   - pte: a boot page-table page (a symbol named like one starts the page, its section covers it
//     all): its last two entries, when no relocation fills them and they are zero (not present),
//     with the present bit kept clear. The CPU ignores every other bit of a not-present entry, so
//     each carries 63 bits;
//   - pad: in the image's own code, 8 bytes of the padding between two functions that nothing
//     runs, or 8 bytes from several such paddings (pad.ts).
import { createHash } from 'node:crypto';
import { type ElfFile, PT_LOAD, type Section, SHF_ALLOC, SHT_NOBITS } from '../elf.js';
import { readImagePlan } from '../plan.js';
import { PAGE } from '../util/units.js';
import { type AslrImage, fileOffset, SALT_SECTION } from './analyze.js';
import { padPieces } from './pad.js';

export const SALT_BYTES = 8;
export { SALT_SECTION };
/** Symbols that name a page-table page (Unikraft's x86_bpt_pml4, x86_bpt_pd0_3; _boot_pdpt). */
const PAGE_TABLE = /(^|_)(pml[45]|pdpt|pgd|pud|pmd|pd|pd\d+(_\d+)*|pt\d+(_\d+)*)$/i;

/** The salt of one page: where its words go and how many random bits they carry. */
export interface SaltPlace {
  page: number;
  kind: 'gap' | 'pte' | 'pad';
  /** Addresses of the words: 8 bytes each unless `lens` says otherwise. */
  words: number[];
  /** pad: bytes of each word, when the page's padding holds 8 only in pieces. */
  lens?: number[];
  bits: number;
  /** A gap after its segment's end: the PT_LOAD (index in the segments) to extend over it. */
  extend?: number;
}

/** The seed-derived bytes of word `i` of a page's salt (present bit clear for a pte). */
export function saltBytes(seed: string, place: SaltPlace, i: number): Buffer {
  const b = createHash('sha256')
    .update(`lib-spacer salt\0${seed}\0${place.page}\0${i}`)
    .digest()
    .subarray(0, SALT_BYTES);
  if (place.kind === 'pte') b[0] &= 0xfe;
  return Buffer.from(b);
}

/** Where page `page` of the image carries its salt; null when it has no room. */
export function saltPlace(img: AslrImage, page: number): SaltPlace | null {
  return gapPlace(img.elf, page) ?? ptePlace(img.elf, page, img.seed) ?? padPlace(img, page);
}

function padPlace(img: AslrImage, page: number): SaltPlace | null {
  const p = padPieces(img, page);
  if (!p) return null;
  const words = p.map((x) => x.at),
    bits = 8 * p.reduce((n, x) => n + x.len, 0);
  return p.length === 1 && p[0].len === SALT_BYTES
    ? { page, kind: 'pad', words, bits }
    : { page, kind: 'pad', words, lens: p.map((x) => x.len), bits };
}

/** The bytes word `i` of `place` holds: its salt, cut to the word's length. */
export function wordSalt(seed: string, place: SaltPlace, i: number): Buffer {
  return saltBytes(seed, place, i).subarray(0, place.lens?.[i] ?? SALT_BYTES);
}

function gapPlace(elf: ElfFile, page: number): SaltPlace | null {
  const lo = page * PAGE,
    hi = lo + PAGE;
  const covered = elf.sections
    .filter((s) => s.flags & SHF_ALLOC && s.size > 0n && s.name !== SALT_SECTION)
    .map((s) => [Number(s.addr), Number(s.addr + s.size)] as const)
    .filter(([a, b]) => a < hi && b > lo);
  const uncovered = (a: number) => covered.every(([s, e]) => a + SALT_BYTES <= s || a >= e);
  const inFile = (a: number) =>
    fileOffset(elf, a) !== null &&
    fileOffset(elf, a + SALT_BYTES - 1) === fileOffset(elf, a)! + SALT_BYTES - 1;
  for (let a = hi - SALT_BYTES; a >= lo; a -= SALT_BYTES) {
    if (!uncovered(a)) continue;
    if (inFile(a)) return { page, kind: 'gap', words: [a], bits: 64 };
    const extend = tailOf(elf, lo, a);
    if (extend !== null) return { page, kind: 'gap', words: [a], bits: 64, extend };
  }
  return null;
}

/**
 * The PT_LOAD that ends on the page before word `a` (no bss of its own) when the file bytes that
 * would extend it over the word belong to nothing else; null otherwise.
 */
function tailOf(elf: ElfFile, lo: number, a: number): number | null {
  const i = elf.segments.findIndex(
    (p) =>
      p.type === PT_LOAD &&
      p.filesz === p.memsz &&
      p.memsz > 0n &&
      Number(p.vaddr + p.memsz) > lo &&
      Number(p.vaddr + p.memsz) <= a,
  );
  if (i < 0) return null;
  const p = elf.segments[i];
  const from = Number(p.offset + p.filesz),
    to = Number(p.offset) + (a + SALT_BYTES - Number(p.vaddr));
  const h = elf.header;
  const used: [number, number][] = [
    [0, Number(h.phoff) + h.phnum * h.phentsize],
    [Number(h.shoff), Number(h.shoff) + h.shnum * h.shentsize],
    ...elf.segments
      .filter((q) => q.filesz > 0n)
      .map((q) => [Number(q.offset), Number(q.offset + q.filesz)] as [number, number]),
    ...elf.sections
      .filter((s) => s.type !== SHT_NOBITS && s.size > 0n)
      .map((s) => [Number(s.offset), Number(s.offset + s.size)] as [number, number]),
  ];
  if (to > elf.data.length || used.some(([s, e]) => s < to && e > from)) return null;
  return i;
}

// Per parsed image: the pages a page-table symbol starts (address -> section indices), found once
// (verify and harden ask for every page of every µlib's code).
const pageTablesOf = new WeakMap<ElfFile, Map<number, Set<number>>>();

function pageTables(elf: ElfFile): Map<number, Set<number>> {
  let named = pageTablesOf.get(elf);
  if (!named) {
    named = new Map();
    for (const s of elf.symbols())
      if (PAGE_TABLE.test(s.name)) {
        const at = Number(s.value);
        if (!named.has(at)) named.set(at, new Set());
        named.get(at)!.add(s.shndx);
      }
    pageTablesOf.set(elf, named);
  }
  return named;
}

function ptePlace(elf: ElfFile, page: number, seed: string): SaltPlace | null {
  const lo = page * PAGE;
  // Most pages start no page table: asked first, it spares the search for the page's section.
  const tables = pageTables(elf).get(lo);
  if (!tables) return null;
  const sec = elf.sections.find(
    (s) => s.flags & SHF_ALLOC && s.addr <= BigInt(lo) && s.addr + s.size >= BigInt(lo + PAGE),
  );
  if (!sec || !tables.has(sec.index)) return null;
  const words = [lo + PAGE - 16, lo + PAGE - 8];
  const relocated = elf
    .relocationsFor(sec)
    .some((r) => words.some((w) => Number(r.offset) >= w && Number(r.offset) < w + 8));
  if (relocated || words.some((w) => fileOffset(elf, w) === null)) return null;
  const place: SaltPlace = { page, kind: 'pte', words, bits: 63 * words.length };
  // Free entries only: zero (not present) as the assembler left them, or already salted.
  const free = words.every((w, i) => {
    const off = fileOffset(elf, w)!,
      cur = elf.data.subarray(off, off + SALT_BYTES);
    return cur.every((b) => b === 0) || cur.equals(saltBytes(seed, place, i));
  });
  return free ? place : null;
}

/**
 * A section's bytes as the rewrite left them: page-table salts inside it (the only salts that lie
 * in a section) put back to the zeros they replaced. For `spacer verify`, which compares code with
 * its recorded hash.
 */
export function unsaltedContents(elf: ElfFile, sec: Section): Buffer {
  const out = Buffer.from(elf.contents(sec));
  const seed = readImagePlan(elf)?.aslr?.seed;
  if (seed === undefined || !(sec.flags & SHF_ALLOC)) return out;
  const lo = Math.ceil(Number(sec.addr) / PAGE),
    hi = Math.floor(Number(sec.addr + sec.size) / PAGE);
  for (let page = lo; page < hi; page++) {
    const place = ptePlace(elf, page, seed);
    place?.words.forEach((w, i) => {
      const off = w - Number(sec.addr);
      if (out.subarray(off, off + SALT_BYTES).equals(saltBytes(seed, place, i)))
        out.fill(0, off, off + SALT_BYTES);
    });
  }
  return out;
}
