// The address allocator. Placement is per µlib *variant* (exact content), never per name:
//   - a variant that a single image uses lives in that image's own area, packed after the
//     shared slots the image uses (its pages are that image's anyway);
//   - once a second image uses it, it gets a stable slot: every variant promoted by the same
//     link is packed into one group (no per-µlib page padding), the group starting on a page;
//   - a slot never moves. A µlib that changed is a new variant: it gets its own place and the
//     old slot stays for the images that use it (nothing they use moves).
//   - a µlib that several images use, each in its own variant (ukboot and uklibid are built per
//     app), gets a *name slot*: one address, with headroom, that each of those variants takes.
//     Their bytes differ per image, but their symbols sit at the same addresses, so the shared
//     code that calls or reads them (and its tables) stays identical.
import { SpacerError } from '../errors.js';
import { PAGE, alignUp, hex, pagesOf } from '../util/units.js';
import {
  AREAS,
  MAP_SCHEMA,
  type Area,
  type Extent,
  type ImageOrigin,
  type SlotKind,
  type SpacerMap,
  type VariantEntry,
} from './map-types.js';
import { allocateRecord } from './record.js';
import { fitsNameSlot, growNameSlots, headroom, wantsNameSlot } from './name-slots.js';
import { isApp, sendsOwnAbs } from './platform.js';

const MiB = 1 << 20;
/** Smallest capacity a region gets when a map is created; every loaded address must be RAM. */
const MIN_CAPACITY: Record<Exclude<Area, 'ind'>, number> = {
  text: 2 * MiB,
  rodata: MiB,
  data: MiB,
  bss: 2 * MiB,
};

export interface UlibRequest {
  name: string;
  variant: string;
  sizes: Partial<Record<Area, number>>;
  align: Partial<Record<Area, number>>;
  /** Rewrite mode the table size (`sizes.ind`) was measured for. */
  mode?: 'external' | 'aslr';
  /** ASLR mode: bytes of the µlib's pointer area. */
  ptr?: number;
  /** ASLR mode, a µlib with a name slot: table and pointer-area bytes when the absolute addresses
   *  of its own data go through its table too (see allocateAslr). */
  ownAbs?: { ind: number; ptr: number };
  /** ASLR mode: its code depends on its position (data in code with addresses): never shuffled. */
  pinned?: boolean;
  /** Recorded as the variant's `abs_ptr` (allocateAslr passes ownAbs.ptr here). */
  absPtr?: number;
  /** The object's code signature (objects.ts), recorded as the variant's `code_sig`. */
  codeSig?: string;
}

export interface AllocRequest {
  image: string;
  /** In link order. */
  ulibs: UlibRequest[];
  head: number;
  textBase: number;
  /** Where this link runs (the Unikraft glue passes it); recorded in the map. */
  origin?: ImageOrigin;
  /** ASLR mode: the image's own read-only data and data keep a word per page for its salt. */
  saltRoom?: boolean;
}

export interface Placement {
  ulib: string;
  variant: string;
  /** Stable (slot in the map) or placed in the image's own area for this link. */
  shared: boolean;
  /** In the µlib's name slot: a stable address, content of this image only. */
  named?: boolean;
  /**
   * ASLR mode: its own data's absolute addresses go through its table (UlibRequest.ownAbs sizes).
   */
  ownAbs?: boolean;
  /** ASLR mode: kept in place, rewritten for it (UlibRequest.pinned). */
  pinned?: boolean;
  at: Partial<Record<SlotKind, Extent>>;
}

export interface AllocResult {
  placements: Placement[];
  /** Where the image's own area ends in the read-only data and data regions (its reserve). */
  ownEnd: Partial<Record<Area, number>>;
  /** One line per event worth telling the user (new variants, promotions). */
  notes: string[];
}

/**
 * End of the region for the shared µlibs' tables: what they need plus a quarter. In a fresh map it
 * follows the boot head; relayout moves it after the shared code (see there). Tables of µlibs
 * shared later that no longer fit go right after their group's code (see allocate).
 */
export function indEnd(base: number, need: number): number {
  return alignUp(base + need + Math.max(Math.ceil(need / 4), 256), 64);
}

/**
 * A new map sized from the first image. The tables of shared µlibs go right after the boot head
 * (until 'spacer map relayout' moves them after the shared code), then code, read-only data, data
 * and bss regions, each at least MIN_CAPACITY and 4x the first need.
 */
export function freshMap(req: AllocRequest): SpacerMap {
  // The platform's boot head gets a quarter more room (at least 256 bytes).
  const head = alignUp(req.head + Math.max(Math.ceil(req.head / 4), 256), 64);
  const need = (k: Area) =>
    req.ulibs.reduce((a, u) => alignUp(a, u.align[k] ?? 1) + (u.sizes[k] ?? 0), 0);
  const regions = {} as SpacerMap['regions'];
  const indBase = req.textBase + head;
  regions.ind = { base: indBase, end: indEnd(indBase, need('ind')), next: indBase };
  let at = regions.ind.end;
  for (const k of AREAS.filter((a) => a !== 'ind')) {
    const cap = alignUp(Math.max(MIN_CAPACITY[k as Exclude<Area, 'ind'>], 4 * need(k)), MiB);
    regions[k] = { base: at, end: alignUp(at + cap, MiB), next: at };
    at = regions[k].end;
  }
  return {
    schema: MAP_SCHEMA,
    page_size: PAGE,
    text_base: req.textBase,
    head,
    regions,
    ulibs: {},
    images: {},
  };
}

/**
 * Bytes at the end of each page that tables and pointer areas leave free: in ASLR mode a page of
 * pointer areas and entry stubs depends on the seed, and its salt goes there (audit/salt.ts).
 */
export const SALT_ROOM = 8;

/** Where a variant's extent of `size` bytes goes at or after `next` (see SALT_ROOM for `ind`). */
function extentAt(area: Area, next: number, size: number, align: number): number {
  const addr = alignUp(next, align);
  if (area !== 'ind' || size > PAGE - SALT_ROOM) return addr;
  const pageEnd = (Math.floor(addr / PAGE) + 1) * PAGE;
  return addr + size > pageEnd - SALT_ROOM ? alignUp(pageEnd, align) : addr;
}

/** Whether the page of `next` already has a free word (ownSaltAt). */
interface SaltPack {
  room: boolean;
}

const pageStart = (n: number) => Math.floor(n / PAGE) * PAGE;

/**
 * ASLR mode, the image's own read-only data and data: their pages hold addresses of its own code,
 * which moves with the seed, so each page needs a word no extent covers for its salt (as nolibc's
 * table of its own functions on real Unikraft). Each page's last word stays free; an extent that
 * must cover it starts where its first page keeps a free word (8 bytes later, else past the page)
 * and covers no page whole. Only an extent of more than two pages cannot.
 */
function ownSaltAt(next: number, size: number, align: number, st: SaltPack): number {
  const end = pageStart(next) + PAGE;
  const ok = (a: number) => {
    const aEnd = pageStart(a) + PAGE;
    if (a + size <= aEnd - SALT_ROOM) return true;
    const room = a < end ? st.room || a - next >= SALT_ROOM : a - pageStart(a) >= SALT_ROOM;
    return room && a + size <= aEnd + PAGE - SALT_ROOM;
  };
  const tries = [next, next + SALT_ROOM, end + SALT_ROOM].map((n) => alignUp(n, align));
  const addr = tries.find(ok) ?? tries[0];
  if (addr + size > pageStart(addr) + PAGE) st.room = false;
  else if (addr >= end) st.room = addr - pageStart(addr) >= SALT_ROOM;
  else st.room ||= addr - next >= SALT_ROOM;
  return addr;
}

/** The end of the variants' extents packed from `from` as packExtents packs them. */
export function packEnd(area: Area, from: number, items: { v: VariantEntry }[]): number {
  let next = from;
  for (const { v } of items) {
    const size = v.sizes[area] ?? 0;
    if (size) next = extentAt(area, next, size, v.align[area] ?? 1) + size;
  }
  return next;
}

/**
 * Packs variants one after the other from `from` (rounded up to a page when `page`); returns their
 * extents. `salt`: the image's own area in ASLR mode (ownSaltAt).
 */
export function packExtents(
  m: SpacerMap,
  mapPath: string,
  area: Area,
  from: number,
  items: { name: string; v: VariantEntry }[],
  limit: number,
  page: boolean,
  salt = false,
): Map<VariantEntry, Extent> {
  const out = new Map<VariantEntry, Extent>();
  let next = page ? alignUp(from, PAGE) : from;
  // salt: a start in a page's last word (the end of a shared slot) goes to the next page
  if (salt && next > pageStart(next) + PAGE - SALT_ROOM) next = pageStart(next) + PAGE;
  const st: SaltPack = { room: false };
  for (const { name, v } of items) {
    const size = v.sizes[area] ?? 0;
    if (!size) continue;
    const align = v.align[area] ?? 1;
    const addr = salt ? ownSaltAt(next, size, align, st) : extentAt(area, next, size, align);
    if (addr + size > limit) {
      const r = m.regions[area];
      throw new SpacerError(
        `${mapPath}: the ${area} region (${hex(r.base)}..${hex(r.end)}) has no room for ${name} (${size} bytes); run 'spacer map relayout' (or start a new map) and relink every app`,
      );
    }
    out.set(v, { addr, size });
    next = addr + size;
  }
  return out;
}

/** Updates `m` for one image; deterministic for the same map and objects. */
export function allocate(m: SpacerMap, mapPath: string, req: AllocRequest): AllocResult {
  const { notes, entries } = allocateRecord(m, mapPath, req);
  promoteShared(m, mapPath, entries, notes);
  // The platform's classic table in its name slot takes the slot's whole capacity: its GOT slots,
  // the part that differs per image, sit at its end (x86/table.ts gotAtEnd), at one address in
  // every image, next to what follows (the per-image code).
  const whole = new Set(
    req.ulibs.filter((u) => u.mode === 'external' && sendsOwnAbs(u.name)).map((u) => u.name),
  );
  const { named, ownAt } = nameSlots(m, mapPath, entries, notes, whole);
  const ownEnd = placeOwn(m, mapPath, entries, named, ownAt, notes, !!req.saltRoom);
  checkSlotSizes(m, mapPath, req, entries, named);
  return {
    placements: entries.map((x) => ({
      ulib: x.name,
      variant: x.variant,
      shared: !!x.v.slot,
      ...(named.has(x.v) ? { named: true } : {}),
      at: x.v.slot ?? ownAt.get(x.v) ?? {},
    })),
    ownEnd,
    notes,
  };
}

type Entry = { name: string; v: VariantEntry; variant: string };
type OwnAt = Map<VariantEntry, Partial<Record<Area, Extent>>>;

/** Variants that a second image now uses get stable slots, packed together as one group. */
function promoteShared(m: SpacerMap, mapPath: string, entries: Entry[], notes: string[]): void {
  const promote = entries.filter((x) => !x.v.slot && x.v.images.length >= 2);
  if (promote.length) {
    const indNeed = promote.reduce(
      (a, x) => alignUp(a, x.v.align.ind ?? 1) + (x.v.sizes.ind ?? 0),
      0,
    );
    const indFits = packEnd('ind', m.regions.ind.next, promote) <= m.regions.ind.end;
    for (const a of AREAS) {
      if (a === 'ind' && !indFits) continue;
      const r = m.regions[a];
      const got = packExtents(m, mapPath, a, r.next, promote, r.end, false);
      for (const [v, ext] of got) (v.slot ??= {})[a] = ext;
      if (got.size) r.next = Math.max(...[...got.values()].map((e) => e.addr + e.size));
      if (a === 'text' && !indFits && indNeed) {
        // The table region is full: these tables follow the group's code (they cost that page its
        // sharing).
        const t = m.regions.text;
        const tables = packExtents(m, mapPath, 'ind', t.next, promote, t.end, false);
        for (const [v, ext] of tables) (v.slot ??= {}).ind = ext;
        if (tables.size) t.next = Math.max(...[...tables.values()].map((e) => e.addr + e.size));
        notes.push(
          "the table region is full: the new shared µlibs' tables follow their code; run 'spacer map relayout' (then relink) to pack them again",
        );
      }
    }
    for (const x of promote) x.v.slot ??= {};
    notes.push(`shared now, given stable slots: ${promote.map((x) => x.name).join(', ')}`);
  }
}

/**
 * Variants of this image only, of µlibs other images use in other variants: their name slots (grown
 * when one lacks an area this variant needs). Returns the variants placed there and where.
 */
function nameSlots(
  m: SpacerMap,
  mapPath: string,
  entries: Entry[],
  notes: string[],
  wholeTable: Set<string>,
): { named: Set<VariantEntry>; ownAt: OwnAt } {
  const single = entries.filter((x) => !x.v.slot && wantsNameSlot(m.ulibs[x.name]));
  const grow = single.filter(
    (x) =>
      !fitsNameSlot(m.ulibs[x.name], x.v) &&
      AREAS.some((a) => (x.v.sizes[a] ?? 0) && !m.ulibs[x.name].slot?.[a]),
  );
  if (grow.length) {
    growNameSlots(
      m,
      mapPath,
      grow.map((x) => x.name),
    );
    notes.push(
      `name slots (one address for each image's own variant): ${grow.map((x) => x.name).join(', ')}`,
    );
  }
  const named = new Set<VariantEntry>();
  const ownAt = new Map<VariantEntry, Partial<Record<Area, Extent>>>();
  for (const x of single) {
    const lib = m.ulibs[x.name];
    if (!fitsNameSlot(lib, x.v)) {
      notes.push(
        `${x.name}: variant ${x.variant} outgrew its name slot; it goes to this image's own area (shares less). 'spacer map relayout' sizes the slot again`,
      );
      continue;
    }
    named.add(x.v);
    ownAt.set(
      x.v,
      Object.fromEntries(
        AREAS.filter((a) => x.v.sizes[a]).map((a) => [
          a,
          {
            addr: lib.slot![a]!.addr,
            size: a === 'ind' && wholeTable.has(x.name) ? lib.slot!.ind!.size : x.v.sizes[a]!,
          },
        ]),
      ),
    );
  }
  return { named, ownAt };
}

export { isApp } from './platform.js';

/**
 * The image's own variants of one area, packed from `start` (the end of the last shared slot it
 * uses), or from the next page when that takes fewer pages: the page `start` is on holds the
 * shared tail too, and a per-image page there costs each image a page, where on a page of its own
 * the tail is shared (a FaaS app's read-only data after the platform's: two pages instead of one).
 * Not when that page holds the image's name-slot variants (`tailMine`): it is the image's anyway.
 */
function ownPack(
  m: SpacerMap,
  mapPath: string,
  a: Area,
  start: number,
  own: Entry[],
  salt: boolean,
  tailMine: boolean,
): Map<VariantEntry, Extent> {
  const r = m.regions[a];
  const got = packExtents(m, mapPath, a, start, own, r.end, false, salt);
  const fresh = alignUp(start, PAGE);
  if (a === 'bss' || tailMine || fresh === start || !got.size) return got;
  const span = (g: Map<VariantEntry, Extent>, from: number) =>
    pagesOf(from, Math.max(...[...g.values()].map((e) => e.addr + e.size)));
  let alt: Map<VariantEntry, Extent>;
  try {
    alt = packExtents(m, mapPath, a, fresh, own, r.end, false, salt);
  } catch {
    return got; // no room past the page: the area as packed from start
  }
  return span(alt, fresh) < span(got, start) ? alt : got;
}

/** Places the image's own variants; returns where its own area ends (its reserve). */
function placeOwn(
  m: SpacerMap,
  mapPath: string,
  entries: Entry[],
  named: Set<VariantEntry>,
  ownAt: OwnAt,
  notes: string[],
  saltRoom: boolean,
): Partial<Record<Area, number>> {
  // The image's own variants go right after the last shared slot it uses, on the same page: that
  // page then differs per image, but a fresh page would cost each image one more page, and the
  // shared tail it holds is smaller than a page.
  // Their tables follow their code: per-image pages anyway, no fixed place needed.
  // The app (Unikraft names its library app<name>) goes last: a relink after only the app
  // changed moves nothing else of the image, so the rest of its rewrite comes from the cache.
  const own = entries.filter((x) => !x.v.slot && !named.has(x.v));
  own.sort((x, y) => Number(isApp(x.name)) - Number(isApp(y.name)));
  const ownEnd: Partial<Record<Area, number>> = {};
  for (const a of AREAS) {
    if (a === 'ind') continue;
    const r = m.regions[a];
    const ends = entries
      .filter((x) => x.v.slot?.[a])
      .map((x) => x.v.slot![a]!.addr + x.v.slot![a]!.size);
    // Tables in the text region (the table region after the shared code, or spilled after a group).
    if (a === 'text')
      for (const x of entries)
        if (x.v.slot?.ind && x.v.slot.ind.addr >= r.base)
          ends.push(x.v.slot.ind.addr + x.v.slot.ind.size);
    for (const x of entries) {
      if (!named.has(x.v)) continue;
      const slot = m.ulibs[x.name].slot!;
      if (slot[a]) ends.push(slot[a].addr + slot[a].size);
      if (a === 'text' && slot.ind) ends.push(slot.ind.addr + slot.ind.size);
    }
    const start = Math.max(r.base, ...ends);
    const salt = saltRoom && (a === 'rodata' || a === 'data');
    // the page `start` is on holds this image's name-slot variants: per-image anyway
    const tailMine = entries.some((x) => {
      if (!named.has(x.v)) return false;
      const e = m.ulibs[x.name].slot?.[a];
      return !!e && Math.floor((e.addr + e.size - 1) / PAGE) === Math.floor(start / PAGE);
    });
    let got: Map<VariantEntry, Extent>;
    if (a === 'text') {
      // Code, then its tables, first of the rest and then of the app: the app's growing moves
      // neither the others' code nor their tables.
      got = new Map();
      let next = start;
      for (const [i, group] of [
        own.filter((x) => !isApp(x.name)),
        own.filter((x) => isApp(x.name)),
      ].entries()) {
        const code = ownPack(m, mapPath, a, next, group, false, tailMine || i > 0);
        for (const [v, ext] of code) got.set(v, ext);
        next = Math.max(next, ...[...code.values()].map((e) => e.addr + e.size));
        const tables = packExtents(m, mapPath, 'ind', next, group, r.end, false);
        for (const [v, ext] of tables) (ownAt.get(v) ?? ownAt.set(v, {}).get(v)!).ind = ext;
        next = Math.max(next, ...[...tables.values()].map((e) => e.addr + e.size));
      }
    } else got = ownPack(m, mapPath, a, start, own, salt, tailMine);
    for (const [v, ext] of got) (ownAt.get(v) ?? ownAt.set(v, {}).get(v)!)[a] = ext;
    if (a === 'rodata' || a === 'data') {
      // The reserve: what follows the own area starts at the same address in every such image
      // (in ASLR mode after the last page's free word).
      const used = Math.max(start, ...[...got.values()].map((e) => e.addr + e.size)) - start;
      const bytes = used && salt ? used + SALT_ROOM : used;
      if (bytes > (m.own?.[a] ?? 0)) {
        if (m.own?.[a])
          notes.push(
            `the image's own ${a} (${bytes} bytes) outgrew its reserve (${m.own[a]}); the reserve grows, images linked before share a little less until relinked`,
          );
        (m.own ??= {})[a] = headroom(bytes);
      }
      const reserve = m.own?.[a] ?? 0; // none yet: no image had bytes of its own here
      if (start + reserve > r.end)
        throw new SpacerError(
          `${mapPath}: the ${a} region (${hex(r.base)}..${hex(r.end)}) has no room for the image's own area; run 'spacer map relayout' (or start a new map) and relink every app`,
        );
      ownEnd[a] = start + reserve;
    }
  }
  return ownEnd;
}

/** Refuses a slot smaller than what this link measured for it. */
function checkSlotSizes(
  m: SpacerMap,
  mapPath: string,
  req: AllocRequest,
  entries: Entry[],
  named: Set<VariantEntry>,
): void {
  // A slot never moves, and a variant's content never changes, but what a newer helper measures
  // may (a table or pointer area sized by another first pass): such a slot is too small to use.
  for (const u of req.ulibs) {
    const x = entries.find((e) => e.name === u.name)!;
    const slot = x.v.slot ?? (named.has(x.v) ? m.ulibs[x.name].slot : undefined);
    for (const a of AREAS) {
      const need = u.sizes[a] ?? 0,
        have = slot?.[a]?.size;
      if (need && have !== undefined && need > have) {
        throw new SpacerError(
          `${mapPath}: ${u.name}'s ${a} slot holds ${have} bytes, this link needs ${need} (a newer lib-spacer measures more); run 'spacer map relayout' and relink every app`,
        );
      }
    }
  }
}
