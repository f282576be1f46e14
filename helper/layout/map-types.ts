// The workspace map's shape: what it places (areas, slot kinds) and the JSON entries it holds.
// The file format is in map-file.ts, its consistency rules in map-check.ts, its lock in
// map-lock.ts; the allocator that fills it in allocate.ts, relayout.ts and aslr.ts.

/** Schema 1: one JSON file. Schema 2: that file holds the header, regions and µlibs (with counts of
 *  their variants); each variant and each image is a file of its own beside it. Schema 3: each µlib
 *  too, so the header no longer grows with the apps of the workspace (map-store.ts). */
export const MAP_SCHEMA = 3;
/** Section kinds of the platform script that hold µlib code and data. */
export const KINDS = ['text', 'rodata', 'data', 'bss'] as const;
export type Kind = (typeof KINDS)[number];
/** Everything the map places, in address order: the indirection tables of shared µlibs (`ind`,
 *  right after the platform's boot head), then the section kinds. */
export const AREAS = ['ind', 'text', 'rodata', 'data', 'bss'] as const;
export type Area = (typeof AREAS)[number];
/** What an image's plan places per µlib: the map's areas, and in ASLR mode its pointer area
 *  (`ptr`, at the map's `ind` extent; its table, `ind`, then follows its code). */
export const SLOT_KINDS = [...AREAS, 'ptr'] as const;
export type SlotKind = (typeof SLOT_KINDS)[number];

export interface Extent {
  addr: number;
  size: number;
}

export interface Region {
  /** First address of the region (page-aligned). */
  base: number;
  /** One past the last usable address. */
  end: number;
  /** Next free address (bump allocation; slots never move). */
  next: number;
}

/**
 * One variant of a µlib: the same library built in one configuration (its content hash).
 * It gets a stable slot once two images use it; until then it lives in the image's own area.
 */
export interface VariantEntry {
  /** Bytes per area, measured from the object (ind: the indirection table it needs). */
  sizes: Partial<Record<Area, number>>;
  /** Start alignment per area (largest input section alignment). */
  align: Partial<Record<Area, number>>;
  /** Images whose last link used this variant. */
  images: string[];
  /**
   * A link's view: its users beyond those `images` lists. The view lists the linking image and at
   * most two OTHER_IMAGE (what the allocator asks: none, one or two and more users); a shared
   * variant of a map of 10 000 images would otherwise be an array of 10 000 on every link.
   */
  others?: number;
  /** Rewrite modes whose table size was measured (`sizes.ind` is the largest). */
  modes?: ('external' | 'aslr')[];
  /** ASLR mode, a µlib with a name slot: pointer-area bytes when its own data's absolute addresses
   *  go through its table too (the name slot is sized for it; see allocateAslr). */
  abs_ptr?: number;
  /** The object's code signature: variants with the same one link to the same code at one
   *  address (a name slot places those first, on pages every image shares). */
  code_sig?: string;
  /** Stable placement, the same in every image; never moves once given. */
  slot?: Partial<Record<Area, Extent>>;
}

export interface UlibEntry {
  variants: Record<string, VariantEntry>;
  /**
   * The name's slot: where every variant of this µlib that a single image uses goes, once two
   * images use the µlib in different variants (ukboot and uklibid are built per app). Its content
   * is per image, but its address is the same in every image, so references to it from shared
   * code (and the tables holding them) are the same too. Each extent is a capacity with headroom.
   */
  slot?: Partial<Record<Area, Extent>>;
  /**
   * A link's view of the map (map-store.ts loadLinkView) holds only the variants the image uses
   * and used: these count the others (all variants, those some image uses, those one image uses).
   */
  hidden?: { variants: number; used: number; single: number };
}

export interface ImageEntry {
  /** µlib name → variant used by the image's last link. */
  ulibs: Record<string, string>;
  /** Where its last link ran (from the Unikraft glue): the app and build folders, and the command
   *  that relinks it. Two builds with different folders may not share one image name. */
  origin?: ImageOrigin;
}

export interface ImageOrigin {
  app: string;
  build: string;
  relink?: string;
}

export interface SpacerMap {
  schema: number;
  page_size: number;
  /** Address of the platform's first text byte (the default script's `. = ...` before .text). */
  text_base: number;
  /** Bytes reserved at text_base for the platform's boot head (.data.boot, .text.boot, ...). */
  head: number;
  regions: Record<Area, Region>;
  /**
   * Bytes reserved for an image's own area in the read-only data and data regions. The sections
   * the platform places after the µlibs there (libinfo, boot info) start right after the reserve,
   * at the same address in every image whose own bytes fit: shared code that reads them stays
   * identical. Grows when an image needs more.
   */
  own?: Partial<Record<Area, number>>;
  ulibs: Record<string, UlibEntry>;
  images: Record<string, ImageEntry>;
  /**
   * A link's view (map-store.ts): only the linking image and the variants it touches are loaded;
   * `VariantEntry.images` then names only that image, the other users being OTHER_IMAGE (and
   * `VariantEntry.others`).
   */
  partial?: boolean;
}

/** Stands for an image a link's view of the map does not load (never a valid image name). */
export const OTHER_IMAGE = '\0other';

/** Thrown by an allocation step that needs the whole map (name slots grow): load it, retry. */
export class NeedWholeMap extends Error {
  constructor(why: string) {
    super(`needs the whole map: ${why}`);
  }
}
