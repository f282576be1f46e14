// The cost of ASLR hardening, in one run (bench.json `hardening.<layout>`, docs/security.md):
// D of the ASLR images as built (every seed-dependent page salted by `spacer finish`) beside D of
// the same images with every salt word set to zero, as the page would be without its salt (a gap
// or a free page-table entry holds zeros; in own code the assembler's padding, which differs per
// image there anyway). Salt words are found as `spacer audit` finds them, from each .dbg.
import { readAslrImage } from '../audit/analyze.js';
import { saltPlace } from '../audit/salt.js';
import { ElfFile } from '../elf.js';
import { scanPages } from '../pages.js';
import type { BuiltImage } from '../pipeline.js';
import { loadImage } from '../report.js';
import type { HardeningFigures } from './types.js';

/** The salt words (address and bytes) of an ASLR image, from its .dbg. */
function saltWords(dbg: string): { words: { at: number; len: number }[]; pages: number } {
  const img = readAslrImage(loadImage(dbg));
  const words: { at: number; len: number }[] = [];
  for (const p of img.pages) {
    const place = saltPlace(img, p.page);
    place?.words.forEach((at, i) => words.push({ at, len: place.lens?.[i] ?? 8 }));
  }
  return { words, pages: img.pages.length };
}

/** The image file with the given words zeroed where a segment loads them from the file. */
function withoutSalt(path: string, words: { at: number; len: number }[]): ElfFile {
  const elf = loadImage(path);
  const data = Buffer.from(elf.data);
  for (const w of words)
    for (const p of elf.loads) {
      const at = BigInt(w.at) - p.vaddr;
      if (at >= 0n && at + BigInt(w.len) <= p.filesz)
        data.fill(0, Number(p.offset + at), Number(p.offset + at) + w.len);
    }
  return new ElfFile(path, data);
}

/** D of the images with and without their salts, and how many pages carry one. */
export function hardeningFigures(images: BuiltImage[]): HardeningFigures {
  const salted = new Set<string>(),
    unsalted = new Set<string>();
  let pages = 0;
  for (const b of images) {
    const { words, pages: n } = saltWords(b.dbg);
    pages += n;
    for (const h of scanPages(loadImage(b.elf)).nonzero.values()) salted.add(h);
    for (const h of scanPages(withoutSalt(b.elf, words)).nonzero.values()) unsalted.add(h);
  }
  return {
    distinct_pages: salted.size,
    distinct_pages_unsalted: unsalted.size,
    seed_dependent_pages: pages,
  };
}
