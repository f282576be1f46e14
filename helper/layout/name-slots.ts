// Name slots: one address, with headroom, for a µlib that several images use each in a variant
// of its own (ukboot and uklibid are built per app), so the shared code that reaches it stays the
// same.
import { SpacerError } from '../errors.js';
import { alignUp, hex } from '../util/units.js';
import { AREAS, type SpacerMap, type UlibEntry, type VariantEntry } from './map-types.js';

/**
 * Capacity of a name slot for variants of up to `size` bytes: a quarter more (at least 64 bytes).
 */
export function headroom(size: number): number {
  return alignUp(size + Math.max(Math.ceil(size / 4), 64), 16);
}

/**
 * Does the µlib earn a name slot? When two or more images each use a variant of their own (the
 * mark of a library built per app, whose symbols keep their offsets from one build to the next).
 * A single odd variant (one image's configuration) stays in that image's own area.
 */
export function wantsNameSlot(lib: UlibEntry): boolean {
  return Object.values(lib.variants).filter((v) => v.images.length === 1).length >= 2;
}

/**
 * Before this image's link: will its variant `variant` of `lib` be in the µlib's name slot? It
 * is, or will be, the image's own (no other image uses it), and the µlib has a name slot or will
 * get one with it (another image has a variant of its own): wantsNameSlot once this link is
 * recorded.
 */
export function nameSlotCandidate(
  lib: UlibEntry | undefined,
  variant: string,
  image: string,
): boolean {
  if (!lib || lib.variants[variant]?.images.some((i) => i !== image)) return false;
  return (
    !!lib.slot ||
    Object.entries(lib.variants).some(
      ([h, v]) => h !== variant && v.images.length === 1 && v.images[0] !== image,
    )
  );
}

/** Does the variant fit the µlib's name slot (every area it has bytes in, at its alignment)? */
export function fitsNameSlot(lib: UlibEntry, v: VariantEntry): boolean {
  return AREAS.every((a) => {
    const size = v.sizes[a] ?? 0;
    const e = lib.slot?.[a];
    return !size || (!!e && size <= e.size && e.addr % (v.align[a] ?? 1) === 0);
  });
}

/**
 * Gives the named µlibs' name slots the areas they lack, packed from each region's next free
 * address (tables in the text region, after the code): capacity for the largest variant known,
 * plus headroom.
 */
export function growNameSlots(m: SpacerMap, mapPath: string, names: string[]): void {
  for (const a of ['text', 'ind', 'rodata', 'data', 'bss'] as const) {
    const region = a === 'ind' ? m.regions.text : m.regions[a];
    let next = region.next;
    for (const name of names) {
      const lib = m.ulibs[name];
      if (lib.slot?.[a]) continue;
      const vs = Object.values(lib.variants);
      // ASLR pointer areas: room for the form with the own data's addresses too (abs_ptr).
      const size = Math.max(
        0,
        ...vs.map((v) => Math.max(v.sizes[a] ?? 0, a === 'ind' ? (v.abs_ptr ?? 0) : 0)),
      );
      if (!size) continue;
      const addr = alignUp(next, Math.max(16, ...vs.map((v) => v.align[a] ?? 1)));
      const cap = headroom(size);
      if (addr + cap > region.end) {
        throw new SpacerError(
          `${mapPath}: the ${a === 'ind' ? 'text' : a} region (${hex(region.base)}..${hex(region.end)}) has no room for ${name}'s slot (${cap} bytes); run 'spacer map relayout' (or start a new map) and relink every app`,
        );
      }
      (lib.slot ??= {})[a] = { addr, size: cap };
      next = addr + cap;
    }
    region.next = next;
  }
}
