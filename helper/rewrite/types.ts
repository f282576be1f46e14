// The rewrite's vocabulary: the plan it follows (one entry per µlib), the figures it reports, and
// the record section's name. Shared by the rewrite (rewrite/*.ts) and by verify.
import { SpacerError } from '../errors.js';
import { type Section } from '../elf.js';
import { MODES, type Mode, type Operand, type SiteKind } from '../x86/classify.js';
import { type Insn } from '../x86/decode.js';

export type { Mode, SiteKind };
export const REWRITE_SECTION = '.spacer.rewrite';

export function checkMode(mode: string, what: string): asserts mode is Mode {
  if (!MODES.includes(mode as Mode))
    throw new SpacerError(`${what}: unknown rewrite mode '${mode}'; use ${MODES.join(' or ')}`);
}

export interface RewriteUlib {
  name: string;
  /** Its code section, `.text.<ulib>`. */
  text: string;
  /** All its output sections (text, rodata, data, bss, and any other `.<kind>.<ulib>`). */
  sections: string[];
  /**
   * Its indirection table, `.ind.<ulib>`, as the linker script reserved it. Without it the µlib is
   * only analysed.
   *  ASLR mode: with `clones`, the table proper is its first `table` bytes, followed (from the next
   *  16 bytes) by copies of these functions of other µlibs, in this order (x86/clone.ts). */
  ind?: { section: string; addr: bigint; size: number; table?: number; clones?: string[] };
  /**
   * ASLR mode: its pointer area, `.ptr.<ulib>`, at an address the map keeps (tables then
   * position-independent).
   */
  ptr?: { section: string; addr: bigint; size: number };
  /** ASLR mode: in the image's own area, whose pages no other image shares: its table's branch
   * entries jump to their targets directly (`jmp rel32`, not `jmp [P]`); its code is unchanged by
   * it. */
  own?: boolean;
  /**
   * In its name slot (each image's own variant at one address): its data is laid out per variant.
   */
  named?: boolean;
  /** ASLR mode, a name slot's variant: absolute addresses of its own data are sites too (they
   * differ between the variants), so its code is the same in images whose variants differ only in
   * data. */
  ownAbs?: boolean;
  /** ASLR mode: it keeps its place in every image, so references to its own data stay as linked. */
  pinned?: boolean;
  /** Offsets in its code of instructions moved to its table though no relocation names them: they
   *  differ between its variants (layout/moved.ts). */
  moved?: number[];
}

export interface RewritePlan {
  ulibs: RewriteUlib[];
}

/** The figures of a rewrite, per µlib and summed over the image (COUNT_KEYS, then the pages). */
export interface RewriteCounts {
  sites: number;
  stubs: number;
  /** Moved instructions, including indirect calls (push + jmp). */
  trampolines: number;
  got: number;
  tableBytes: number;
  /**
   * Data/rodata relocations that point outside (switch tables, pointer initialisers): not
   * rewritable.
   */
  dataPointers: number;
  /** The pages those sit on (hex addresses): they differ between images. */
  dataPointerPages: string[];
}

/** The counted figures, in the order the record writes them. */
export const COUNT_KEYS = [
  'sites',
  'stubs',
  'trampolines',
  'got',
  'tableBytes',
  'dataPointers',
] as const;
export type CountKey = (typeof COUNT_KEYS)[number];

export interface UlibRewriteStats extends RewriteCounts {
  /** False when the plan gives the µlib no table (or its code is not in the image). */
  rewritten: boolean;
  /**
   * ASLR mode: sites with a classic (position-dependent) entry; their table page differs between
   * images.
   */
  classic?: number;
}

export interface RewriteStats extends RewriteCounts {
  perUlib: Record<string, UlibRewriteStats>;
  /** ASLR mode: data fields holding an entry's address, now its stub's. */
  dataRedirected?: number;
  ms: number;
  /** The image already carried this rewrite: nothing was written. */
  alreadyDone: boolean;
}

/** A non-loaded section to add in the same write (e.g. the link plan). */
export interface ExtraSection {
  name: string;
  data: string | Buffer;
}

/** A site found in a linked image. */
export interface ImageSite {
  insn: Insn;
  kind: SiteKind;
  /** What it referred to: branch target, lea address, else the first outside field's value. */
  target: bigint;
  orig: Buffer;
  /** Which of its operands refer outside. */
  outside: Operand[];
  /** What each of those refers to, from its relocation (equal targets share a pointer slot). */
  targets: Partial<Record<Operand, string>>;
  /**
   * Its one outside reference is RIP-relative to the µlib's own data (same address in every image).
   */
  ownData: boolean;
}

export interface UlibAnalysis {
  text: Section;
  sites: ImageSite[];
  /** Addresses of data relocations that point outside. */
  dataPointers: bigint[];
  /** The analysis cache's key of its decode (rewrite/cache.ts), when the cache is on. */
  key?: string;
}
