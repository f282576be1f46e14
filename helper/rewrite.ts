// The indirection rewriter. A µlib placed at fixed addresses still has code bytes that encode
// addresses outside itself (calls into other µlibs, RIP-relative loads of their data, absolute
// addresses, TLS offsets, linker-script symbols); those differ between images, so its code pages
// would too. After the link, every such instruction of `.text.<ulib>` is redirected through the
// µlib's indirection table `.ind.<ulib>` (reserved by the linker script): the code keeps its
// length and only refers to the table, which is the one part that differs between images.
//
//   indirectionNeeds(obj, mode)   rewrite/first-pass.ts, on libNAME.o: a table size that can never
//                                 overflow
//   rewriteImage(dbg, plan, mode) the rewrite of a linked image (needs -Wl,--emit-relocs), checked
//                                 by verifyImage before it replaces the image
//   verifyImage(dbg)              verify.ts: proves every redirected site reaches what it did
//
// One module per concern under rewrite/: types.ts (the plan entries and figures), record.ts (the
// `.spacer.rewrite` record and its validation), analyze.ts (the sites of a µlib in an image),
// external.ts and aslr.ts (the two kinds of table), clones.ts (copies of leaf callees), image.ts
// (the pass over an image) and write.ts (the atomic write with objcopy). The x86 parts live in
// x86/. This file is the entry point the rest of the helper imports; it joins the rewrite and its
// verification, which import only rewrite/ and never this file.
import { verifyImage } from './verify.js';
import { rewriteImageWith } from './rewrite/image.js';
import {
  type ExtraSection,
  type Mode,
  type RewritePlan,
  type RewriteStats,
} from './rewrite/types.js';

export * from './rewrite/types.js';
export { indirectionNeeds, inputSlot, type IndNeeds, type SlotKind } from './rewrite/first-pass.js';
export { cloneSources, isDirect, retarget, type CloneSource } from './rewrite/clones.js';
export {
  loadImage,
  planFromRecord,
  readRecord,
  type RecordSite,
  type RecordUlib,
  type RewriteRecord,
} from './rewrite/record.js';
export { analyzeUlib } from './rewrite/analyze.js';

/** Rewrites the µlibs of a linked image (ELF64, -Wl,--emit-relocs) per `plan`; atomic. */
export function rewriteImage(
  dbgPath: string,
  plan: RewritePlan,
  mode: Mode = 'external',
  extra: ExtraSection[] = [],
): Promise<RewriteStats> {
  return rewriteImageWith(dbgPath, plan, mode, extra, verifyImage);
}
