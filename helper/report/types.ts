// The report's vocabulary: a Report is exactly the JSON `spacer report --json` prints (numbers,
// no BigInt); the figures are those of docs/metrics.md.
import type { FloorImage } from '../floor.js';
import type { ImagePlan } from '../plan.js';

export interface ImageInput {
  path: string;
  /** How many instances of this image run (default 1). */
  instances?: number;
  /** Display name (default: file name without extension, made unique). */
  name?: string;
}

export interface UlibShare {
  /** The other image. */
  image: string;
  /** This µlib's non-zero pages whose content occurs anywhere in that image. */
  pages: number;
  /** Their addresses (hex). */
  addrs: string[];
}

export interface UlibReport {
  name: string;
  /** Variant (content hash) from `.spacer.plan`; null for an image without a plan. */
  variant: string | null;
  /** The image's sections of this µlib. */
  sections: string[];
  /** Pages its sections overlap (a page shared with a neighbour counts for both). */
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  /** One entry per other image, in input order (empty when sharing was not computed). */
  shared: UlibShare[];
}

export interface ImageReport {
  name: string;
  path: string;
  format: 'elf64' | 'elf32';
  instances: number;
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  /** Own pages: non-zero pages whose content no other image of the set holds. */
  own_pages: number;
  /** Whether the image carries a `.spacer.plan` section. */
  spacer_plan: boolean;
  /** Per µlib, when the image has per-µlib output sections; absent for the default layout. */
  ulibs?: UlibReport[];
}

export interface PairReport {
  a: string;
  b: string;
  /** Non-zero pages of `a` whose content also occurs in `b` (counted with multiplicity). */
  shared_nonzero_pages: number;
  /** Non-zero pages of `b` whose content also occurs in `a`. */
  shared_nonzero_pages_of_b: number;
}

export interface Report {
  images: ImageReport[];
  /** Instances in all (sum of the images' instance counts). */
  instances: number;
  /** P: pages without sharing, summed over instances. */
  pages: number;
  nonzero_pages: number;
  zero_pages: number;
  /** D: distinct non-zero page contents across all images. */
  distinct_pages: number;
  /** L: the content bound in pages, or null (see content_bound_note). */
  content_bound_pages: number | null;
  content_bound_bytes: number | null;
  content_bound_note?: string;
  /** D / L (3 decimals), or null without L. */
  d_over_l: number | null;
  /** L_pg: the page floor (docs/metrics.md), or null when L is unknown. */
  page_floor_pages: number | null;
  /** Σ over images of their own pages, and its mean per image (3 decimals). */
  own_pages: number;
  own_pages_per_image: number;
  /** Every pair of images (i < j, input order); empty when sharing was not computed. */
  pairs: PairReport[];
  pairs_note?: string;
}

/** What the content bound and the page floor need from one image. */
export interface ContentInputs {
  name: string;
  path: string;
  plan: ImagePlan | null;
  /** Bytes of allocated, non-NOBITS sections that belong to no µlib; null without a plan. */
  own_bytes: number | null;
  /** Its µlib variants' and its own bytes per class (page floor); null without a plan. */
  floor: FloorImage | null;
}

export interface ContentBound {
  /** L in pages (bytes / 4096 rounded up once), or null when it cannot be computed. */
  pages: number | null;
  bytes: number | null;
  /** Distinct (µlib, variant) pairs counted. */
  ulib_variants: number;
  /** Images the bound was computed from. */
  images: number;
  /** L_pg, the page floor of the same images, or null when L is unknown. */
  floor_pages: number | null;
  note?: string;
}

export interface AnalyzeOptions {
  /** Compute pairwise and per-µlib sharing (default: when there are at most 200 images). */
  pairs?: boolean;
  /** Use this content bound instead of computing it from these images (e.g. the bound of the
   *  Spacer images of the same workspace, applied to their default-layout builds). */
  bound?: ContentBound;
}

export const PAIR_LIMIT = 200;
