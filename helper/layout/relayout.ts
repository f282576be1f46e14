// `spacer map relayout` and `spacer map gc`: re-plan every slot from the images the map records
// (variants used by the same set of images form a group, groups used by most images come first,
// name slots after), and drop what no image uses any more.
import { SpacerError } from '../errors.js';
import { PAGE, alignUp } from '../util/units.js';
import { indEnd, packEnd, packExtents } from './allocate.js';
import {
  AREAS,
  type Area,
  type Extent,
  type SpacerMap,
  type UlibEntry,
  type VariantEntry,
} from './map-types.js';
import { fitsNameSlot, growNameSlots, headroom, wantsNameSlot } from './name-slots.js';

/** A slot's extents in a fixed order, to tell whether relayout moved it. */
function slotKey(slot: Partial<Record<Area, Extent>> | undefined): string {
  return JSON.stringify(AREAS.map((a) => slot?.[a] ?? null));
}

export interface RelayoutResult {
  /** Images whose µlibs moved: they must be relinked to share pages with the others. */
  relink: string[];
  groups: number;
  shared: number;
}

/**
 * Re-plans every slot from the images the map records: variants used by two or more images get
 * slots, grouped by the exact set of images that use them (so a group's pages are complete in
 * each of those images), the groups used by most images first.
 */
export function relayout(m: SpacerMap, mapPath: string): RelayoutResult {
  // Where the table region goes is a choice between two places (see relayoutAt); take the one
  // that leaves the images recorded in the map fewer pages of code.
  const tried = ([false, true] as const).map((pageAligned) => {
    const c = structuredClone(m);
    relayoutAt(c, mapPath, pageAligned);
    return codePages(c);
  });
  return relayoutAt(m, mapPath, tried[1] < tried[0]);
}

/**
 * The pages of the text region that the images recorded in the map touch, summed over them: their
 * shared variants' code and tables, their name slots, and their own area after those (packed as
 * allocate packs it).
 */
function codePages(m: SpacerMap): number {
  let total = 0;
  for (const im of Object.values(m.images)) {
    const pages = new Set<number>();
    const touch = (addr: number, size: number) => {
      for (
        let p = Math.floor(addr / PAGE);
        size > 0 && p <= Math.floor((addr + size - 1) / PAGE);
        p++
      )
        pages.add(p);
    };
    let end = m.regions.text.base,
      own = 0;
    for (const [name, h] of Object.entries(im.ulibs)) {
      const lib = m.ulibs[name],
        v = lib?.variants[h];
      if (!v) continue;
      const at =
        v.slot ?? (wantsNameSlot(lib) && lib.slot && fitsNameSlot(lib, v) ? lib.slot : undefined);
      if (!at) {
        own = alignUp(own, 16) + (v.sizes.text ?? 0) + (v.sizes.ind ?? 0);
        continue;
      }
      for (const a of ['text', 'ind'] as const) {
        const e = at[a],
          size = v.sizes[a] ?? 0;
        if (!e || !size) continue;
        touch(e.addr, size);
        end = Math.max(end, e.addr + e.size);
      }
    }
    touch(end, own);
    total += pages.size;
  }
  return total;
}

/** A variant two or more images use, keyed by the exact set of them. */
interface SharedVariant {
  name: string;
  h: string;
  v: VariantEntry;
  /** Its users, sorted, joined by NUL. */
  key: string;
  /** Index of its first user among the map's images in name order. */
  first: number;
}

/** The variants used by two or more images, by µlib and hash name. */
function sharedVariants(m: SpacerMap): SharedVariant[] {
  const all: SharedVariant[] = [];
  const imageOrder = Object.keys(m.images).sort();
  for (const name of Object.keys(m.ulibs).sort()) {
    for (const [h, v] of Object.entries(m.ulibs[name].variants).sort(([a], [b]) =>
      a < b ? -1 : 1,
    )) {
      const users = [...v.images].sort();
      if (users.length < 2) continue;
      all.push({
        name,
        h,
        v,
        key: users.join('\0'),
        first: Math.min(...users.map((u) => imageOrder.indexOf(u))),
      });
    }
  }
  return all;
}

/** Groups of variants used by the same images; those used by most images first. */
function groupsOf(all: SharedVariant[]): SharedVariant[][] {
  const groups = new Map<string, SharedVariant[]>();
  for (const x of all) (groups.get(x.key) ?? groups.set(x.key, []).get(x.key)!).push(x);
  return [...groups.values()].sort(
    (a, b) =>
      b[0].key.split('\0').length - a[0].key.split('\0').length ||
      a[0].first - b[0].first ||
      (a[0].key < b[0].key ? -1 : 1),
  );
}

/**
 * Code of the shared groups starts right after the boot head. The table region follows it (what
 * the shared tables need, and a quarter more): what tables hold (addresses of per-image data,
 * other µlibs' entries) differs between images with different µlib sets, so they go next to the
 * name slots and own areas, on the tail page that differs per image anyway, and the first page
 * (head and the most shared code) stays the same in every image.
 */
function placeGroups(
  m: SpacerMap,
  mapPath: string,
  all: SharedVariant[],
  ordered: SharedVariant[][],
  pageAligned: boolean,
): void {
  // What the tables need from `base`, packed as packExtents packs them (salt room kept).
  const indNeed = (base: number) => packEnd('ind', base, ordered.flat()) - base;
  const ind = m.regions.ind,
    text = m.regions.text;
  text.base = Math.min(ind.base, text.base);
  // An ASLR map places no code (each image shuffles its own): its table region holds the pointer
  // areas, every page of which is the image's own, and the name slots' pointer areas and the own
  // code follow it. No headroom there: a quarter more was a gap inside the pages each image keeps
  // (1.5 KB on real Unikraft). A µlib shared later puts its pointer area after them instead.
  const aslr = !Object.values(m.ulibs).some((u) =>
    Object.values(u.variants).some((v) => v.sizes.text),
  );
  const end = (base: number) =>
    aslr ? alignUp(base + indNeed(base), 64) : indEnd(base, indNeed(base));
  for (const a of ['text', 'ind', 'rodata', 'data', 'bss'] as const) {
    const r = m.regions[a];
    if (a === 'ind') {
      ind.base = alignUp(text.next, 64);
      ind.end = end(ind.base);
      if (pageAligned && Math.floor(ind.base / PAGE) !== Math.floor((ind.end - 1) / PAGE)) {
        ind.base = alignUp(ind.base, PAGE);
        ind.end = end(ind.base);
      }
      if (ind.end >= text.end)
        throw new SpacerError(
          `${mapPath}: the tables of the shared µlibs need more room than the map has; start a new map and relink every app`,
        );
    }
    let next = r.base;
    for (const g of ordered) {
      const got = packExtents(m, mapPath, a, next, g, r.end, false);
      for (const [v, ext] of got) (v.slot ??= {})[a] = ext;
      if (got.size) next = Math.max(...[...got.values()].map((e) => e.addr + e.size));
    }
    r.next = next;
    // What the text region places later (name slots, new groups) comes after the tables.
    if (a === 'ind') text.next = ind.end;
  }
  for (const x of all) x.v.slot ??= {};
}

/** Own-area reserves for the largest own area an image has now. */
function reserveOwn(m: SpacerMap): void {
  // ASLR mode's own-code reserve stays: the map does not record code sizes in that mode.
  const text = m.own?.text;
  delete m.own;
  if (text) m.own = { text };
  for (const im of Object.values(m.images)) {
    for (const a of ['rodata', 'data'] as const) {
      const bytes = Object.entries(im.ulibs).reduce((sum, [n, h]) => {
        const v = m.ulibs[n]?.variants[h];
        const inNameSlot = v && !v.slot && m.ulibs[n].slot && fitsNameSlot(m.ulibs[n], v);
        return v && !v.slot && !inNameSlot
          ? alignUp(sum, v.align[a] ?? 1) + (v.sizes[a] ?? 0)
          : sum;
      }, 0);
      if (bytes && headroom(bytes) > (m.own?.[a] ?? 0)) (m.own ??= {})[a] = headroom(bytes);
    }
  }
}

/**
 * relayout with the table region right after the shared code (64-byte aligned) or, when it would
 * cross a page boundary there, on the next page (`pageAligned`): an image without the last groups
 * then keeps no page for the tables' first bytes alone, but every image keeps the gap.
 */
function relayoutAt(m: SpacerMap, mapPath: string, pageAligned: boolean): RelayoutResult {
  const all = sharedVariants(m);
  const ordered = groupsOf(all);
  const old = new Map<VariantEntry, string>();
  for (const u of Object.values(m.ulibs))
    for (const v of Object.values(u.variants)) old.set(v, slotKey(v.slot));
  for (const u of Object.values(m.ulibs)) for (const v of Object.values(u.variants)) delete v.slot;
  placeGroups(m, mapPath, all, ordered, pageAligned);
  // Name slots after the groups, sized for the variants known now.
  const oldName = new Map<UlibEntry, string>();
  for (const u of Object.values(m.ulibs)) {
    oldName.set(u, slotKey(u.slot));
    delete u.slot;
  }
  const named = Object.keys(m.ulibs)
    .sort()
    .filter((n) => wantsNameSlot(m.ulibs[n]));
  growNameSlots(m, mapPath, named);
  const oldOwn = JSON.stringify(m.own ?? null);
  reserveOwn(m);
  const ownMoved = oldOwn !== JSON.stringify(m.own ?? null);
  const relink = new Set<string>();
  for (const u of Object.values(m.ulibs)) {
    const nameMoved = oldName.get(u) !== slotKey(u.slot);
    for (const v of Object.values(u.variants)) {
      if (old.get(v) !== slotKey(v.slot) || (nameMoved && !v.slot) || ownMoved)
        v.images.forEach((i) => relink.add(i));
    }
  }
  return { relink: [...relink].sort(), groups: ordered.length, shared: all.length };
}

/** Drops variants no image uses any more (and images named in `forget`). */
export function gc(m: SpacerMap, forget: string[] = []): { dropped: string[] } {
  for (const i of forget) delete m.images[i];
  const dropped: string[] = [];
  for (const [name, u] of Object.entries(m.ulibs)) {
    for (const [h, v] of Object.entries(u.variants)) {
      v.images = v.images.filter((i) => m.images[i]?.ulibs[name] === h);
      if (!v.images.length) {
        delete u.variants[h];
        dropped.push(`${name} ${h}`);
      }
    }
    if (!Object.keys(u.variants).length) delete m.ulibs[name];
  }
  return { dropped };
}
