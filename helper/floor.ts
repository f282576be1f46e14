// The page floor L_pg and own pages (docs/metrics.md). L (bytes) says how many distinct bytes a
// set of images holds; no layout that keeps code, read-only data and data on pages of their own
// (separate segments, separate permissions) can reach it. L_pg can be reached: the bytes every
// shared µlib variant holds, per class, packed onto pages once; plus, per image and class, the
// bytes only that image holds (its variants no other image uses, and what belongs to no µlib),
// packed onto pages of its own. Tables, pointer areas and stubs are Spacer's overhead, not content.
import {
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHF_WRITE,
  SHT_NOBITS,
  type ElfFile,
  type Section,
} from './elf.js';
import { PAGE } from './util/units.js';

export type ContentClass = 'code' | 'rodata' | 'data';
export const CONTENT_CLASSES: readonly ContentClass[] = ['code', 'rodata', 'data'];

export type ClassBytes = Record<ContentClass, number>;

/** What the floor needs from one image: its µlib variants' bytes and its own, per class. */
export interface FloorImage {
  name: string;
  ulibs: { name: string; variant: string; bytes: ClassBytes }[];
  /** Bytes of the image's sections that belong to no µlib (boot head, global tables, ...). */
  own: ClassBytes;
}

export interface PageFloor {
  /** L_pg: shared pages + own pages. */
  pages: number;
  /** Pages of the shared variants (used by two images or more), per class packed once. */
  shared_pages: number;
  /** Per image: the pages only it needs (its own variants and own bytes, per class). */
  own_pages: Record<string, number>;
  /** Variants used by two images or more. */
  shared_variants: number;
}

const zero = (): ClassBytes => ({ code: 0, rodata: 0, data: 0 });
const pages = (bytes: number) => Math.ceil(bytes / PAGE);

/** L_pg of a set of images (docs/metrics.md). */
export function pageFloor(images: readonly FloorImage[]): PageFloor {
  // Which images use each variant, and its bytes (the largest measurement, as L takes it).
  const users = new Map<string, Set<string>>();
  const size = new Map<string, ClassBytes>();
  for (const im of images) {
    for (const u of im.ulibs) {
      const key = `${u.name}\0${u.variant}`;
      (users.get(key) ?? users.set(key, new Set()).get(key)!).add(im.name);
      const b = size.get(key) ?? zero();
      for (const c of CONTENT_CLASSES) b[c] = Math.max(b[c], u.bytes[c]);
      size.set(key, b);
    }
  }
  const shared = zero();
  let sharedVariants = 0;
  for (const [key, who] of users) {
    if (who.size < 2) continue;
    sharedVariants++;
    for (const c of CONTENT_CLASSES) shared[c] += size.get(key)![c];
  }
  const sharedPages = CONTENT_CLASSES.reduce((n, c) => n + pages(shared[c]), 0);
  const own: Record<string, number> = {};
  let ownTotal = 0;
  for (const im of images) {
    const b = { ...im.own };
    for (const u of im.ulibs) {
      const key = `${u.name}\0${u.variant}`;
      if (users.get(key)!.size >= 2) continue;
      for (const c of CONTENT_CLASSES) b[c] += size.get(key)![c];
    }
    const n = CONTENT_CLASSES.reduce((s, c) => s + pages(b[c]), 0);
    own[im.name] = (own[im.name] ?? 0) + n;
    ownTotal += n;
  }
  return {
    pages: sharedPages + ownTotal,
    shared_pages: sharedPages,
    own_pages: own,
    shared_variants: sharedVariants,
  };
}

/** The class of an allocated section's bytes, or undefined for zero-filled ones (.bss). */
export function sectionClass(s: Section): ContentClass | undefined {
  if (!(s.flags & SHF_ALLOC) || s.type === SHT_NOBITS) return undefined;
  if (s.flags & SHF_EXECINSTR) return 'code';
  return s.flags & SHF_WRITE ? 'data' : 'rodata';
}

/**
 * The bytes of `elf`'s allocated sections that are not in `mine` (the µlibs' sections) and not
 * Spacer's own padding or compacted runs (`skip`), per class.
 */
export function ownClassBytes(
  elf: ElfFile,
  mine: ReadonlySet<number>,
  skip: (s: Section) => boolean,
): ClassBytes {
  const out = zero();
  for (const s of elf.sections) {
    const c = sectionClass(s);
    if (c && !mine.has(s.index) && !skip(s)) out[c] += Number(s.size);
  }
  return out;
}

/**
 * Own pages of each image: its non-zero pages whose content no other image holds. `holders`
 * lists, per content id, the images holding it (ascending, distinct); `ids[i]` are image i's
 * non-zero page contents.
 */
export function ownPages(
  ids: readonly ArrayLike<number>[],
  holders: readonly number[][],
): number[] {
  return ids.map((list, i) => {
    let n = 0;
    for (let k = 0; k < list.length; k++) {
      const h = holders[list[k]];
      if (h.length === 1 && h[0] === i) n++;
    }
    return n;
  });
}
