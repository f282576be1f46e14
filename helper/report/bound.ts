// The content bound L and the page floor L_pg of a set of images (docs/metrics.md): both come
// from the `.spacer.plan` the images carry (each µlib variant's bytes) and the bytes of each
// image that belong to no µlib.
import { createHash } from 'node:crypto';
import { basename, extname } from 'node:path';
import { ElfFile, SHT_NOBITS, type Section } from '../elf.js';
import { COMPACTED } from '../compact.js';
import { pageFloor, sectionClass, type FloorImage } from '../floor.js';
import { PAGE_SIZE } from '../pages.js';
import { PLAN_SECTION, readImagePlan, type ImagePlan } from '../plan.js';
import { isAlloc, loadImage, ulibSections } from './image.js';
import type { ContentBound, ContentInputs } from './types.js';

/**
 * Zero pads that keep segments on pages are nothing of the image's own, nor is a compacted run
 * (µlib sections, counted through the plan, their alignment and such pads): the bound is the same
 * for an image and its compacted copy.
 */
const notOwn = (s: Section) => COMPACTED.test(s.name) || s.name.startsWith('.spacer.pad.');

/** Indexes of the sections that belong to a µlib. */
function ulibIndexes(ulibs: Map<string, Section[]>): Set<number> {
  const mine = new Set<number>();
  for (const list of ulibs.values()) for (const s of list) if (s.index >= 0) mine.add(s.index);
  return mine;
}

function ownBytes(elf: ElfFile, mine: ReadonlySet<number>): number {
  let n = 0;
  for (const s of elf.sections)
    if (isAlloc(s) && s.type !== SHT_NOBITS && !mine.has(s.index) && !notOwn(s))
      n += Number(s.size);
  return n;
}

/**
 * What the page floor needs from an image: per µlib variant its code, rodata and data bytes
 * (tables, pointer areas and stubs are the layout's cost, not content), and each section of its
 * own as one more "variant" keyed by its content: a section every image holds alike (the
 * platform's unwind tables, say) is content once, not once per image.
 */
function floorImage(
  elf: ElfFile,
  name: string,
  plan: ImagePlan,
  mine: ReadonlySet<number>,
): FloorImage {
  const parts: FloorImage['ulibs'] = [];
  for (const s of elf.sections) {
    const c = sectionClass(s);
    if (!c || mine.has(s.index) || notOwn(s) || !s.size) continue;
    const hash = createHash('sha256').update(elf.contents(s)).digest('hex').slice(0, 16);
    parts.push({
      name: `(${s.name})`,
      variant: hash,
      bytes: { code: 0, rodata: 0, data: 0, [c]: Number(s.size) },
    });
  }
  return {
    name,
    ulibs: [
      ...plan.ulibs.map((u) => ({
        name: u.name,
        variant: u.variant,
        bytes: {
          code: u.slots.text?.bytes ?? 0,
          rodata: u.slots.rodata?.bytes ?? 0,
          data: u.slots.data?.bytes ?? 0,
        },
      })),
      ...parts,
    ],
    own: { code: 0, rodata: 0, data: 0 },
  };
}

/** What the content bound and the page floor need from one image (its plan and own bytes). */
export function contentInputs(
  elf: ElfFile,
  name?: string,
  plan: ImagePlan | null = readImagePlan(elf),
): ContentInputs {
  const display = name ?? basename(elf.path, extname(elf.path));
  const mine = plan ? ulibIndexes(ulibSections(elf, plan)) : null;
  return {
    name: display,
    path: elf.path,
    plan,
    own_bytes: mine ? ownBytes(elf, mine) : null,
    floor: plan && mine ? floorImage(elf, display, plan, mine) : null,
  };
}

function missingNote(missing: string[]): string {
  const who =
    missing.length > 3
      ? `${missing.slice(0, 3).join(', ')} and ${missing.length - 3} more`
      : missing.join(', ');
  return `${who} ${missing.length === 1 ? 'has' : 'have'} no ${PLAN_SECTION}, so L is unknown; compute it from the Spacer builds of the same apps`;
}

/**
 * L = ceil((Σ over distinct (µlib, variant) of its text + rodata + data bytes from the plans
 *           + Σ over distinct contents of the images' own sections) / 4096), rounded up once;
 * instances do not count.
 * L_pg (floor_pages) is the page floor of the same images (floor.ts).
 * Null (with a note) unless every image carries a `.spacer.plan`.
 */
export function contentBound(images: readonly (string | ElfFile | ContentInputs)[]): ContentBound {
  const ins = images.map((x) =>
    typeof x === 'string'
      ? contentInputs(loadImage(x))
      : x instanceof ElfFile
        ? contentInputs(x)
        : x,
  );
  const none = {
    pages: null,
    bytes: null,
    ulib_variants: 0,
    images: ins.length,
    floor_pages: null,
  };
  if (!ins.length) return { ...none, note: 'no images' };
  const missing = ins.filter((i) => !i.plan || i.own_bytes === null || !i.floor);
  if (missing.length) return { ...none, note: missingNote(missing.map((i) => i.name)) };
  // Distinct content: each µlib variant once, and each section of an image's own once per content.
  const variants = new Map<string, number>();
  for (const i of ins)
    for (const u of i.floor!.ulibs) {
      const key = `${u.name}\0${u.variant}`;
      const b = u.bytes.code + u.bytes.rodata + u.bytes.data;
      variants.set(key, Math.max(variants.get(key) ?? 0, b));
    }
  let bytes = 0;
  for (const b of variants.values()) bytes += b;
  return {
    pages: Math.ceil(bytes / PAGE_SIZE),
    bytes,
    // Own sections are keyed '(name)': they are not µlib variants.
    ulib_variants: [...variants.keys()].filter((k) => !k.startsWith('(')).length,
    images: ins.length,
    // Named by position: two inputs with one display name are still two images.
    floor_pages: pageFloor(ins.map((i, k) => ({ ...i.floor!, name: String(k) }))).pages,
  };
}
