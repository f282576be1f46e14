// The plan: where `spacer link` placed each µlib of an image. One type and one validator for its
// three readers: `spacer finish` reads the link plan (`<script>.json`, every field), the image
// records the part that holds no paths (`.spacer.plan`, read by report, explain and `spacer plan`),
// and the rewrite works from its own view of it (finish.ts's rewritePlan).
/* eslint-disable @typescript-eslint/no-explicit-any -- JSON, validated field by field here */
import { readFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';
import { SHT_NOBITS, type ElfFile } from './elf.js';
import { SpacerError } from './errors.js';
import { SLOT_KINDS, type SlotKind } from './map.js';

/** The image's section that records its plan (not loaded). */
export const PLAN_SECTION = '.spacer.plan';

/** One slot of a µlib: the output section, its address and size, the bytes measured. */
export interface PlanSlot {
  section: string;
  addr: string;
  size: string;
  /** Bytes measured from the µlib's object. */
  bytes: number;
  /** The table (`ind`) of ASLR mode: functions of other µlibs copied after it. */
  clones?: string[];
}

export interface PlanUlib {
  name: string;
  path: string;
  variant: string;
  /** Stable slot (the same in every image) or placed in this image's own area. */
  shared: boolean;
  /** In its name slot (a per-app library at a stable address). */
  named?: boolean;
  /**
   * ASLR mode: the absolute addresses of its own data go through its table too (a name slot's
   * variant).
   */
  ownAbs?: boolean;
  /** ASLR mode: it keeps its place (the platform, code with data holding addresses). */
  pinned?: boolean;
  /** The plain layout, the platform: offsets in its code of instructions that differ between its
   *  variants without a relocation; they are moved to its table (layout/moved.ts). */
  moved?: number[];
  /** Per area: the output section, its address and size, and the bytes measured from the object. */
  slots: Partial<Record<SlotKind, PlanSlot>>;
}

export interface Plan {
  spacer: 1;
  image: string;
  map: string;
  script: string;
  ulibs: PlanUlib[];
  notes: string[];
  /** ASLR mode: the seed and the µlib order it gave. */
  aslr?: { seed: string; order: string[] };
  /** What the post-link rewrite redirects: references outside each µlib (external), or also
   *  its own absolute addresses and other sections (aslr); none: no rewrite. */
  rewrite: 'external' | 'aslr' | 'none';
}

/** A slot as an image records it (an image's plan need not give the address and size). */
export type RecordedSlot = Pick<PlanSlot, 'section' | 'bytes'> &
  Partial<Pick<PlanSlot, 'addr' | 'size'>>;

/** What `.spacer.plan` holds of a µlib: no paths. */
export type RecordedUlib = Pick<PlanUlib, 'name' | 'variant'> & {
  slots: Partial<Record<SlotKind, RecordedSlot>>;
};

/** The plan an image records, as report and explain read it. */
export type ImagePlan = Pick<Plan, 'spacer' | 'image' | 'aslr'> & { ulibs: RecordedUlib[] };

/** The part of a link plan an image records (`spacer finish`): no paths, so the same objects
 *  give the same image in any build folder. */
export function recordedPlan(plan: Plan): Pick<Plan, 'spacer' | 'image' | 'rewrite' | 'aslr'> & {
  ulibs: RecordedUlib[];
} {
  return {
    spacer: plan.spacer,
    image: plan.image,
    rewrite: plan.rewrite,
    ...(plan.aslr ? { aslr: plan.aslr } : {}),
    ulibs: plan.ulibs.map((u) => ({ name: u.name, variant: u.variant, slots: u.slots })),
  };
}

/** The JSON text of a `.spacer.plan` section: stored deflated (zlib), plain JSON also read. */
export function planSectionText(bytes: Buffer): string {
  if (bytes[0] === 0x78) {
    // Bounded: a plan is kilobytes; a damaged or hostile section must not inflate to gigabytes.
    try {
      return inflateSync(bytes, { maxOutputLength: 16 << 20 }).toString('utf8');
    } catch {
      /* not zlib after all: read as text */
    }
  }
  return bytes.toString('utf8').replace(/\0+$/, '');
}

/**
 * Which plan is checked: `link`, the link plan `spacer finish` reads (every µlib named, each slot
 * with its section, address and size); `image`, the plan an image records (each µlib once, with
 * its variant; each slot of a known kind, with its section, its byte count and any address and
 * size in hex). Each reader keeps its own wording of what is wrong.
 */
export type PlanForm = 'link' | 'image';

const isHex = (v: unknown) => typeof v === 'string' && /^0x[0-9a-f]{1,16}$/i.test(v);
const isName = (v: unknown) => typeof v === 'string' && /^[\x21-\x7e]{1,200}$/.test(v);

/** The one plan validator: throws `bad(what)` at the first field `form` needs that is wrong. */
export function checkPlan(plan: any, form: PlanForm, bad: (what: string) => never): void {
  const image = form === 'image';
  if (image) {
    if (plan?.spacer !== 1)
      bad(`is not a lib-spacer plan of version 1 (spacer: ${JSON.stringify(plan?.spacer)})`);
    if (!Array.isArray(plan.ulibs)) bad('has no ulibs list');
  } else if (plan?.spacer !== 1 || !Array.isArray(plan!.ulibs)) bad('not a lib-spacer plan');
  const names = new Set<string>();
  (plan.ulibs as any[]).forEach((u, i) => {
    if (image) {
      if (typeof u?.name !== 'string' || !u.name) bad(`ulibs[${i}] has no name`);
      if (names.has(u.name)) bad(`lists ${u.name} twice`);
      names.add(u.name);
      if (typeof u.variant !== 'string') bad(`${u.name} has no variant`);
      if (typeof u.slots !== 'object' || u.slots === null) bad(`${u.name} has no slots`);
    } else if (
      typeof u !== 'object' ||
      u === null ||
      !isName(u.name) ||
      typeof u.slots !== 'object' ||
      u.slots === null
    )
      bad(`µlib entry ${i}`);
    if (
      u.moved !== undefined &&
      !(Array.isArray(u.moved) && u.moved.every((x: unknown) => Number.isSafeInteger(x)))
    )
      bad(`${u.name} has a bad list of moved instructions`);
    for (const [k, s] of Object.entries<any>(u.slots))
      if (image) checkRecordedSlot(u.name, k, s, bad);
      else if (
        typeof s !== 'object' ||
        s === null ||
        !isName(s.section) ||
        !isHex(s.addr) ||
        !isHex(s.size)
      )
        bad(`${u.name} ${k} slot`);
  });
}

function checkRecordedSlot(ulib: string, k: string, s: any, bad: (what: string) => never): void {
  if (!(SLOT_KINDS as readonly string[]).includes(k))
    bad(`${ulib} has an unknown slot kind ${JSON.stringify(k)}`);
  if (typeof s?.section !== 'string') bad(`${ulib}.${k} has no section name`);
  if (!Number.isSafeInteger(s.bytes) || s.bytes < 0) bad(`${ulib}.${k} has no byte count`);
  for (const f of ['addr', 'size'] as const) {
    if (s[f] !== undefined && (typeof s[f] !== 'string' || !/^0x[0-9a-f]{1,16}$/i.test(s[f])))
      bad(`${ulib}.${k}.${f} is not a hex address`);
  }
}

/** The link plan `spacer link` wrote beside the script; every field `spacer finish` reads. */
export function readPlan(path: string): Plan {
  let plan: Plan | undefined;
  const bad = (what: string): never => {
    throw new SpacerError(`${path}: not a usable link plan (${what}); run 'spacer link' again`);
  };
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SpacerError(
      `${path}: cannot read the link plan (${(e as NodeJS.ErrnoException).code ?? 'error'}); run 'spacer link' again`,
    );
  }
  try {
    plan = JSON.parse(text);
  } catch {
    bad('not valid JSON');
  }
  checkPlan(plan, 'link', bad);
  return plan!;
}

/** The image's `.spacer.plan`, validated; null when it has none (default layout). */
export function readImagePlan(elf: ElfFile): ImagePlan | null {
  // Read once per parsed image: the checks of a finish ask for it once per µlib.
  let plan = imagePlans.get(elf);
  if (plan === undefined) imagePlans.set(elf, (plan = parseImagePlan(elf)));
  return plan;
}
const imagePlans = new WeakMap<ElfFile, ImagePlan | null>();

function parseImagePlan(elf: ElfFile): ImagePlan | null {
  const sec = elf.section(PLAN_SECTION);
  if (!sec) return null;
  const bad = (what: string): never => {
    throw new SpacerError(
      `${elf.path}: ${PLAN_SECTION} ${what}; run 'spacer finish' on a freshly linked image`,
    );
  };
  if (sec.type === SHT_NOBITS) bad('has no contents');
  let plan: any;
  try {
    plan = JSON.parse(planSectionText(elf.contents(sec)));
  } catch {
    bad('is not valid JSON (damaged)');
  }
  checkPlan(plan, 'image', bad);
  return {
    spacer: 1,
    image: String(plan.image ?? ''),
    ulibs: plan.ulibs,
    ...(plan.aslr ? { aslr: plan.aslr } : {}),
  };
}
