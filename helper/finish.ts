// `spacer finish`: the post-link passes, run on the linked `.dbg` before it is stripped
// (pipeline.ts lists them; `spacer finish` and the demo run that list):
//   layout check: every µlib section at its slot, no empty PT_LOAD at 0;
//   rewrite: references that leave a µlib go through its indirection table (in memory);
//   verify: the rewritten image, written beside the original, proves every moved instruction
//     still reaches the same targets before it may replace the image;
//   record: the plan goes into the image as a non-loaded `.spacer.plan` section, so `spacer
//     report` can attribute pages to µlibs later (with a rewrite: the verified file, which
//     carries it, replaces the image).
// Each write replaces the image atomically (temp + rename): a half-written .dbg would be newer
// than its inputs and make would never relink it.
import { rmSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { ElfFile, PT_LOAD } from './elf.js';
import { SpacerError } from './errors.js';
import { failedLater } from './util/after-reply.js';
import { mapWriteKey } from './layout/map-lock.js';
import { PLAN_SECTION, planSectionText, readPlan, recordedPlan, type Plan } from './plan.js';
import { sendsOwnAbs } from './layout/aslr.js';
import { noteVariants } from './rewrite/variants.js';
import { prepareRewrite, type PreparedRewrite } from './rewrite/image.js';
import { type RewritePlan, type RewriteStats } from './rewrite/types.js';
import { commitStaged, stageWrite, type Staged } from './rewrite/write.js';
import { readWhole } from './util/buffers.js';
import { replaceAtomically, tempPath, writeFileAtomic } from './util/files.js';
import { objcopy } from './util/tools.js';
import { hex, PAGE_N } from './util/units.js';
import { verifyImage } from './verify.js';
import { cacheUse } from './cache/store.js';
import { hardenBytes, hardenImage } from './harden.js';

export { PLAN_SECTION, planSectionText, readPlan };

/** Problems of a linked image against its plan; empty when the layout is what the map says. */
export function verifyLayout(elf: ElfFile, plan: Plan): string[] {
  const problems: string[] = [];
  for (const u of plan.ulibs) {
    for (const s of Object.values(u.slots)) {
      if (!s) continue;
      const sec = elf.section(s.section);
      // No section: the linker dropped all of it (--gc-sections, as CONFIG_OPTIMIZE_DEADELIM does).
      if (!sec) continue;
      if (sec.addr !== BigInt(s.addr))
        problems.push(`${u.name}: ${s.section} at ${hex(sec.addr)}, map says ${s.addr}`);
      if (sec.size > BigInt(s.size))
        problems.push(`${u.name}: ${s.section} is ${sec.size} bytes, its slot ${BigInt(s.size)}`);
    }
  }
  elf.segments.forEach((p, i) => {
    // Unikraft's boot turns each loaded segment into a memory region and checks it is page-aligned.
    if (p.type === PT_LOAD && p.memsz > 0n && p.vaddr % PAGE_N)
      problems.push(`program header ${i} (a PT_LOAD at ${hex(p.vaddr)}) does not start on a page`);
    if (p.type === PT_LOAD && p.vaddr === 0n && p.memsz === 0n)
      problems.push(
        `program header ${i} is an empty PT_LOAD at address 0: the platform script names a program header no section uses, and qemu's multiboot loader hangs on it`,
      );
  });
  return problems;
}

/** What the rewrite needs from the plan: each µlib's sections and its table. */
export function rewritePlan(plan: Plan): RewritePlan {
  return {
    ulibs: plan.ulibs
      .filter((u) => u.slots.text)
      .map((u) => ({
        name: u.name,
        text: u.slots.text!.section,
        sections: Object.entries(u.slots)
          .filter(([k]) => k !== 'ind' && k !== 'ptr')
          .map(([, s]) => s!.section),
        ind: u.slots.ind
          ? {
              section: u.slots.ind.section,
              addr: BigInt(u.slots.ind.addr),
              size: Number(BigInt(u.slots.ind.size)),
              ...(u.slots.ind.clones?.length
                ? { table: u.slots.ind.bytes, clones: u.slots.ind.clones }
                : {}),
            }
          : undefined,
        ptr: u.slots.ptr
          ? {
              section: u.slots.ptr.section,
              addr: BigInt(u.slots.ptr.addr),
              size: Number(BigInt(u.slots.ptr.size)),
            }
          : undefined,
        ...(plan.rewrite === 'aslr' && (!u.shared || u.named) && !u.pinned ? { own: true } : {}),
        ...(plan.rewrite === 'aslr' && u.named ? { named: true } : {}),
        ...((plan.rewrite === 'aslr' && u.ownAbs) ||
        (plan.rewrite !== 'none' && u.slots.ind && sendsOwnAbs(u.name))
          ? { ownAbs: true }
          : {}),
        ...(plan.rewrite === 'aslr' && u.pinned ? { pinned: true } : {}),
        ...(plan.rewrite !== 'none' && u.moved?.length ? { moved: u.moved } : {}),
      })),
  };
}

/** What the finish passes share: the image, its plan, and what each pass leaves for the next. */
export interface FinishState {
  image: string;
  plan: Plan;
  /** The plan as the image records it (deflated JSON of recordedPlan). */
  planBytes: Buffer;
  /** The image already carries this plan: the other passes have nothing to do. */
  alreadyDone: boolean;
  /** The image as the layout check read it (the rewrite starts from it, not from a new read). */
  elf?: ElfFile;
  /** The rewrite, done in memory (rewrite pass), then written and verified (verify pass). */
  prepared?: PreparedRewrite;
  /** The verified bytes (salted by harden in ASLR mode), waiting to replace the image (record). */
  staged?: Staged;
  rewrite?: RewriteStats;
  /** ASLR hardening: seed-dependent pages, salted by this run, with no room for a salt. */
  hardened?: { pages: number; written: number; unplaced: number };
  /** µlib → instructions this link found differing from its first variant. */
  moved?: Map<string, number>;
}

export interface FinishResult {
  image: string;
  ulibs: number;
  alreadyDone: boolean;
  rewrite?: RewriteStats;
  hardened?: FinishState['hardened'];
  /** µlib → instructions this link found differing from its first variant (layout/moved.ts). */
  moved?: Map<string, number>;
}

/**
 * Layout check: the linked image against its plan, before anything touches the file; a wrong
 * layout stops the build and leaves the image as it is.
 */
export function checkLayout(imagePath: string, planPath: string): FinishState {
  const plan = readPlan(planPath);
  // Through the link server, the link's map write ran after its answer: it must have landed.
  const unsaved = failedLater(mapWriteKey(plan.map, plan.image));
  if (unsaved)
    throw new SpacerError(
      `${plan.map}: this image's placements could not be written to the map (${unsaved}); the map is as it was before the link. Fix that and run make again`,
    );
  const elf = ElfFile.load(imagePath, readWhole);
  if (elf.header.class !== 64)
    throw new SpacerError(
      `${imagePath}: not the ELF64 debug image; run 'spacer finish' on the .dbg before strip`,
    );
  const embedded = elf.section(PLAN_SECTION);
  // The image records where each µlib sits, not where the build ran: no paths, so the same
  // objects give the same image in any build folder.
  const planText = JSON.stringify(recordedPlan(plan));
  // Deflated: the plan is most of what the recorded metadata adds to the image file.
  const planBytes = deflateSync(Buffer.from(planText), { level: 9 });
  const s: FinishState = { image: imagePath, plan, planBytes, alreadyDone: false, elf };
  if (embedded) {
    // Running twice is a no-op when the image already carries this plan.
    if (planSectionText(elf.contents(embedded)) === planText) return { ...s, alreadyDone: true };
    throw new SpacerError(
      `${imagePath}: already finished with another plan; relink it (make removes the .dbg when its script changes)`,
    );
  }
  const problems = verifyLayout(elf, plan);
  if (problems.length) {
    throw new SpacerError(
      `${imagePath}: layout differs from the map (${problems[0]}${problems.length > 1 ? `, and ${problems.length - 1} more` : ''}); relink with the script ${plan.script}`,
    );
  }
  return s;
}

/** Rewrite: the references that leave each µlib, in memory; the plan goes in the same write. */
export function rewriteStep(s: FinishState): void {
  const mode = s.plan.rewrite;
  if (s.alreadyDone || !mode || mode === 'none') return;
  // The platform's code against its first variant's: what differs without a relocation is moved
  // from the next link on (layout/moved.ts).
  if (s.elf)
    for (const [ulib, added] of noteVariants(s.elf, s.plan))
      (s.moved ??= new Map()).set(ulib, added.length);
  const p = prepareRewrite(
    s.image,
    rewritePlan(s.plan),
    mode,
    [{ name: PLAN_SECTION, data: s.planBytes }],
    s.elf,
  );
  s.elf = undefined;
  if ('data' in p) s.prepared = p;
  else s.rewrite = p;
}

/**
 * Verify: the rewritten image, put together with its record and plan sections in memory, must
 * verify (verify.ts, from its record: one verification, of the bytes that will be on disk but for
 * the salt words harden fills next) before it may replace the image.
 */
export async function verifyStep(s: FinishState): Promise<void> {
  const p = s.prepared;
  if (!p) return;
  // The finish's check may take proofs from the cache (a standalone `spacer verify` never does).
  // The rewrite's analysis keys stand for those of the code verify rebuilds when it is the same
  // code (by its hash): the staged file has the original's symbols and relocations.
  const check = (path: string, elf?: ElfFile) =>
    verifyImage(path, elf, cacheUse.dir, p.analysisKeys);
  s.staged = await stageWrite(s.image, p.data, p.sections, p.changed, check);
}

/**
 * Record: the plan in the image (not loaded: pages and boot are unchanged), atomically. After a
 * rewrite the verified bytes, which carry the plan (salted by harden in ASLR mode), are written
 * once and replace the image.
 */
export async function recordStep(s: FinishState): Promise<void> {
  if (s.alreadyDone) return;
  if (s.prepared && !s.staged) throw new Error(`${s.image}: the record pass ran before verify`);
  if (s.staged && s.prepared) {
    commitStaged(s.staged, s.image);
    s.rewrite = { ...s.prepared.stats, ms: performance.now() - s.prepared.t0, alreadyDone: false };
    s.staged = s.prepared = undefined;
    return;
  }
  const tmpPlan = tempPath(s.image, 'plan');
  writeFileAtomic(tmpPlan, s.planBytes, 'product');
  try {
    await replaceAtomically(s.image, (tmpImage) =>
      objcopy(
        [
          '--add-section',
          `${PLAN_SECTION}=${tmpPlan}`,
          '--set-section-flags',
          `${PLAN_SECTION}=readonly,contents`,
          s.image,
          tmpImage,
        ],
        s.image,
      ),
    );
  } finally {
    rmSync(tmpPlan, { force: true });
  }
}

/** What `spacer finish` reports. */
/**
 * Harden (ASLR): every page whose bytes depend on the seed gets 64 bits of seed-derived salt
 * (harden.ts, docs/security.md), so guessing that page's content costs 2^64 tries, not one per
 * layout. Salts the verified bytes before the record pass writes them (one write of the image);
 * an image finished before (no rewrite staged) is salted in place. The same seed gives the same
 * bytes, a hardened image is left as it is.
 */
export function hardenStep(s: FinishState): void {
  if (s.plan.rewrite !== 'aslr') return;
  const staged = s.staged;
  const r = staged ? hardenBytes(s.image, staged.elf) : hardenImage(s.image);
  if (staged && r.data) staged.elf = new ElfFile(s.image, r.data);
  s.hardened = { pages: r.pages, written: r.written, unplaced: r.unplaced.length };
}

export function finishResult(s: FinishState): FinishResult {
  return {
    image: s.image,
    ulibs: s.plan.ulibs.length,
    alreadyDone: s.alreadyDone,
    ...(s.rewrite ? { rewrite: s.rewrite } : {}),
    ...(s.hardened ? { hardened: s.hardened } : {}),
    ...(s.moved ? { moved: s.moved } : {}),
  };
}
