// Name slots: one address, with headroom, for a µlib that several images use each in a variant
// of its own (ukboot and uklibid are built per app), so the shared code that reaches it stays the
// same.
import { SpacerError } from '../errors.js';
import { PAGE, alignUp, hex, pagesOf } from '../util/units.js';
import {
  AREAS,
  NeedWholeMap,
  type Area,
  type SpacerMap,
  type UlibEntry,
  type VariantEntry,
} from './map-types.js';
import { isApp, sendsOwnAbs } from './platform.js';

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
  const single = Object.values(lib.variants).filter((v) => v.images.length === 1).length;
  return single + (lib.hidden?.single ?? 0) >= 2;
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
  // A variant a link's view does not load is not this image's: the view loads all of those.
  return (
    !!lib.slot ||
    (lib.hidden?.single ?? 0) > 0 ||
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
 * Do the variants in the µlib's name slot all link to the same code (one code signature)? Then its
 * code is the same bytes in every image: it goes first, on pages the images share.
 */
export function sameCodeInSlot(lib: UlibEntry): boolean {
  const sigs = Object.values(lib.variants)
    .filter((v) => v.images.length === 1)
    .map((v) => v.code_sig);
  return sigs.length > 0 && sigs.every((x) => x !== undefined && x === sigs[0]);
}

type Item = { name: string; area: Area };

/**
 * For each image with a variant of its own of one of `names` (those follow the name slots): the
 * bytes of its own area in the region (its variants in no slot; code and tables in text).
 */
function ownAreas(m: SpacerMap, region: Exclude<Area, 'ind'>, names: string[]): number[] {
  const block = new Set(names);
  const areas: Area[] = region === 'text' ? ['text', 'ind'] : [region];
  const out: number[] = [];
  for (const im of Object.values(m.images)) {
    const used = Object.entries(im.ulibs).map(([n, h]) => ({ n, v: m.ulibs[n]?.variants[h] }));
    if (!used.some(({ n, v }) => block.has(n) && v && !v.slot)) continue;
    let bytes = 0;
    for (const { n, v } of used) {
      if (!v || v.slot || block.has(n)) continue;
      const lib = m.ulibs[n];
      if (lib.slot && fitsNameSlot(lib, v)) continue;
      for (const a of areas) bytes = alignUp(bytes, v.align[a] ?? 1) + (v.sizes[a] ?? 0);
    }
    out.push(bytes);
  }
  return out;
}

/**
 * Gives the named µlibs' name slots the areas they lack, packed from each region's next free
 * address: capacity for the largest variant known, plus headroom. In the text region the code that
 * is the same in every image comes first; then the per-image part (code that differs, and every
 * name slot's table) as one block. A per-image block that fits a page but would cross one starts
 * on the next page: it then costs each image one page, not two, and the page before stays shared.
 */
export function growNameSlots(m: SpacerMap, mapPath: string, names: string[]): void {
  // Sized for every variant known, and packed against every image's own area.
  if (m.partial) throw new NeedWholeMap(`name slots of ${names.join(', ')} grow`);
  // The platform's code is the same in every image too: what differs between its variants goes
  // to its table (sendsOwnAbs, layout/moved.ts).
  const same = names.filter((n) => sameCodeInSlot(m.ulibs[n]) || sendsOwnAbs(n));
  const code = (ns: string[]) => ns.map((name): Item => ({ name, area: 'text' }));
  const table = (ns: string[]) => ns.map((name): Item => ({ name, area: 'ind' }));
  placeItems(m, mapPath, 'text', code(same), false);
  // The per-image block, what differs in one run: the platform's table, whose per-image part (its
  // GOT slots) is at its end; the code that differs, the app's last; the other tables, the app's
  // first. The app's code and table, and the image's own area after the block, then sit next to
  // the GOT slots and to each other, on as few pages as they can.
  const apps = names.filter(isApp),
    rest = names.filter((n) => !isApp(n));
  const perImage = [
    ...table(names.filter(sendsOwnAbs)),
    ...code([...rest, ...apps].filter((n) => !same.includes(n))),
    ...table([...apps, ...rest].filter((n) => !sendsOwnAbs(n))),
  ];
  placeItems(m, mapPath, 'text', perImage, true);
  for (const a of ['rodata', 'data', 'bss'] as const)
    placeItems(
      m,
      mapPath,
      a,
      names.map((name) => ({ name, area: a })),
      a !== 'bss',
    );
}

/** Packs the items' slot extents from the region's next address (see growNameSlots). */
function placeItems(
  m: SpacerMap,
  mapPath: string,
  regionName: Exclude<Area, 'ind'>,
  items: Item[],
  keepOnPage: boolean,
): void {
  const region = m.regions[regionName];
  const want = items
    .map(({ name, area }) => {
      const lib = m.ulibs[name];
      const vs = Object.values(lib.variants);
      // ASLR pointer areas: room for the form with the own data's addresses too (abs_ptr).
      const size = Math.max(
        0,
        ...vs.map((v) => Math.max(v.sizes[area] ?? 0, area === 'ind' ? (v.abs_ptr ?? 0) : 0)),
      );
      const align = Math.max(16, ...vs.map((v) => v.align[area] ?? 1));
      return { name, area, lib, cap: headroom(size), align, size };
    })
    .filter((x) => x.size && !x.lib.slot?.[x.area]);
  const pack = (from: number) => {
    let next = from;
    const at = want.map((x) => {
      const addr = alignUp(next, x.align);
      next = addr + x.cap;
      return addr;
    });
    return { at, end: next };
  };
  let got = pack(region.next);
  const first = got.at[0];
  const fresh = alignUp(region.next, PAGE);
  if (
    keepOnPage &&
    want.length &&
    got.end - first <= PAGE &&
    Math.floor(first / PAGE) !== Math.floor((got.end - 1) / PAGE)
  )
    got = pack(fresh);
  else if (keepOnPage && want.length && fresh > region.next) {
    // The per-image block and the own areas after it on a page of their own, when that leaves the
    // images fewer pages: the shared tail before it is then one page for all of them.
    const alt = pack(fresh);
    const mine = ownAreas(
      m,
      regionName,
      want.map((x) => x.name),
    );
    const cost = (from: number, end: number) =>
      mine.reduce((sum, own) => sum + pagesOf(from, end + own), 0);
    if (cost(fresh, alt.end) + 1 < cost(Math.floor(first / PAGE) * PAGE, got.end)) got = alt;
  }
  want.forEach((x, i) => {
    if (got.at[i] + x.cap > region.end) {
      const r = x.area === 'ind' ? 'text' : x.area;
      throw new SpacerError(
        `${mapPath}: the ${r} region (${hex(region.base)}..${hex(region.end)}) has no room for ${x.name}'s slot (${x.cap} bytes); run 'spacer map relayout' (or start a new map) and relink every app`,
      );
    }
    (x.lib.slot ??= {})[x.area] = { addr: got.at[i], size: x.cap };
  });
  if (want.length) region.next = got.end;
}
