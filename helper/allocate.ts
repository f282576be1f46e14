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
// `relayout` re-plans every slot from the images recorded in the map: variants used by the
// same set of images form a group, groups used by most images come first, name slots after.
import { basename } from 'node:path';
import { SpacerError } from './errors.js';
import {
  AREAS,
  PAGE,
  type Area,
  type Extent,
  type ImageOrigin,
  type SlotKind,
  type SpacerMap,
  type UlibEntry,
  type VariantEntry,
  hex,
} from './map.js';
import { alignUp } from './objects.js';

const MiB = 1 << 20;
/** Smallest capacity a region gets when a map is created; every loaded address must be RAM. */
export const MIN_CAPACITY: Record<Exclude<Area, 'ind'>, number> = {
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
  /** Recorded as the variant's `abs_ptr` (allocateAslr passes ownAbs.ptr here). */
  absPtr?: number;
}

export interface AllocRequest {
  image: string;
  /** In link order. */
  ulibs: UlibRequest[];
  head: number;
  textBase: number;
  /** Where this link runs (the Unikraft glue passes it); recorded in the map. */
  origin?: ImageOrigin;
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
function indEnd(base: number, need: number): number {
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
    schema: 1,
    page_size: PAGE,
    text_base: req.textBase,
    head,
    regions,
    ulibs: {},
    images: {},
  };
}

/**
 * Packs variants one after the other from `from` (rounded up to a page when `page`); returns their
 * extents.
 */
function pack(
  m: SpacerMap,
  mapPath: string,
  area: Area,
  from: number,
  items: { name: string; v: VariantEntry }[],
  limit: number,
  page: boolean,
): Map<VariantEntry, Extent> {
  const out = new Map<VariantEntry, Extent>();
  let next = page ? alignUp(from, PAGE) : from;
  for (const { name, v } of items) {
    const size = v.sizes[area] ?? 0;
    if (!size) continue;
    const addr = alignUp(next, v.align[area] ?? 1);
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

/**
 * One image name, one build: a link from other app or build folders than the image's last link
 * would silently take over its map entry (two helloworld apps are both `helloworld_qemu-x86_64`
 * unless SPACER_IMAGE is set).
 */
function checkOrigin(m: SpacerMap, mapPath: string, req: AllocRequest): void {
  const was = m.images[req.image]?.origin,
    now = req.origin;
  if (!was || !now || (was.app === now.app && was.build === now.build)) return;
  const suggest = basename(now.app) || 'app';
  throw new SpacerError(
    `${mapPath}: image name ${req.image} is already taken by the build in ${was.build} (app ${was.app}), ` +
      `and this one is in ${now.build} (app ${now.app}); set SPACER_IMAGE to a name of its own (e.g. SPACER_IMAGE=${suggest}_${req.image}), ` +
      `or, if the other build is gone, run 'spacer map gc --map ${mapPath} ${req.image}' first`,
  );
}

/** Records the image's variants in the map (checks, new-variant notes, image membership). */
function allocateRecord(
  m: SpacerMap,
  mapPath: string,
  req: AllocRequest,
): { notes: string[]; entries: { name: string; v: VariantEntry; variant: string }[] } {
  const notes: string[] = [];
  if (m.text_base !== req.textBase) {
    throw new SpacerError(
      `${mapPath}: the map was made for text at ${hex(m.text_base)} but this platform script puts it at ${hex(req.textBase)}; use another map (CONFIG_SPACER_MAP) for this platform`,
    );
  }
  if (req.head > m.head) {
    throw new SpacerError(
      `${mapPath}: the platform boot head (${req.head} bytes) outgrew the ${m.head} bytes the map reserves; start a new map (move this one away) and relink every app`,
    );
  }
  const seen = new Set<string>();
  for (const u of req.ulibs) {
    if (seen.has(u.name))
      throw new SpacerError(
        `${mapPath}: two objects named ${u.name}.o in one link; µlib names must be unique`,
      );
    seen.add(u.name);
  }
  checkOrigin(m, mapPath, req);
  // The image now uses these variants, and no longer the ones its previous link used.
  const before = m.images[req.image]?.ulibs ?? {};
  for (const [name, v] of Object.entries(before)) {
    const e = m.ulibs[name]?.variants[v];
    if (e && req.ulibs.every((u) => u.name !== name || u.variant !== v))
      e.images = e.images.filter((i) => i !== req.image);
  }
  const entries = req.ulibs.map((u) => {
    const lib = (m.ulibs[u.name] ??= { variants: {} });
    let e = lib.variants[u.variant];
    if (!e) {
      const others = Object.keys(lib.variants).filter((h) => lib.variants[h].images.length);
      if (others.length)
        notes.push(
          `${u.name}: new variant ${u.variant} (other images use ${others.join(', ')}); it shares no pages with those`,
        );
      e = lib.variants[u.variant] = { sizes: u.sizes, align: u.align, images: [] };
    }
    if (!e.images.includes(req.image)) e.images.push(req.image);
    // Table sizes depend on the rewrite mode: keep the largest seen, and the modes measured.
    if ((u.sizes.ind ?? 0) > (e.sizes.ind ?? 0)) {
      e.sizes.ind = u.sizes.ind;
      e.align.ind = u.align.ind;
    }
    if (u.mode && !(e.modes ??= []).includes(u.mode)) e.modes.push(u.mode);
    if (u.absPtr && u.absPtr > (e.abs_ptr ?? 0)) e.abs_ptr = u.absPtr;
    return { name: u.name, v: e, variant: u.variant };
  });
  const origin = req.origin ?? m.images[req.image]?.origin;
  m.images[req.image] = {
    ulibs: Object.fromEntries(req.ulibs.map((u) => [u.name, u.variant])),
    ...(origin ? { origin } : {}),
  };
  return { notes, entries };
}

/**
 * Capacity of a name slot for variants of up to `size` bytes: a quarter more (at least 64 bytes).
 */
function headroom(size: number): number {
  return alignUp(size + Math.max(Math.ceil(size / 4), 64), 16);
}

/**
 * Does the µlib earn a name slot? When two or more images each use a variant of their own (the
 * mark of a library built per app, whose symbols keep their offsets from one build to the next).
 * A single odd variant (one image's configuration) stays in that image's own area.
 */
function wantsNameSlot(lib: UlibEntry): boolean {
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
function fitsNameSlot(lib: UlibEntry, v: VariantEntry): boolean {
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
function growNameSlots(m: SpacerMap, mapPath: string, names: string[]): void {
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

/** Updates `m` for one image; deterministic for the same map and objects. */
export function allocate(m: SpacerMap, mapPath: string, req: AllocRequest): AllocResult {
  const { notes, entries } = allocateRecord(m, mapPath, req);
  // Variants that a second image now uses get stable slots, packed together as one group.
  const promote = entries.filter((x) => !x.v.slot && x.v.images.length >= 2);
  if (promote.length) {
    const indNeed = promote.reduce(
      (a, x) => alignUp(a, x.v.align.ind ?? 1) + (x.v.sizes.ind ?? 0),
      0,
    );
    const indFits = alignUp(m.regions.ind.next, 16) + indNeed <= m.regions.ind.end;
    for (const a of AREAS) {
      if (a === 'ind' && !indFits) continue;
      const r = m.regions[a];
      const got = pack(m, mapPath, a, r.next, promote, r.end, false);
      for (const [v, ext] of got) (v.slot ??= {})[a] = ext;
      if (got.size) r.next = Math.max(...[...got.values()].map((e) => e.addr + e.size));
      if (a === 'text' && !indFits && indNeed) {
        // The table region is full: these tables follow the group's code (they cost that page its
        // sharing).
        const t = m.regions.text;
        const tables = pack(m, mapPath, 'ind', t.next, promote, t.end, false);
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
  // Variants of this image only, of µlibs other images use in other variants: their name slots.
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
          { addr: lib.slot![a]!.addr, size: x.v.sizes[a]! },
        ]),
      ),
    );
  }
  // The image's own variants go right after the last shared slot it uses, on the same page: that
  // page then differs per image, but a fresh page would cost each image one more page, and the
  // shared tail it holds is smaller than a page.
  // Their tables follow their code: per-image pages anyway, no fixed place needed.
  const own = entries.filter((x) => !x.v.slot && !named.has(x.v));
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
    const got = pack(m, mapPath, a, start, own, r.end, false);
    for (const [v, ext] of got) (ownAt.get(v) ?? ownAt.set(v, {}).get(v)!)[a] = ext;
    if (a === 'rodata' || a === 'data') {
      // The reserve: what follows the own area starts at the same address in every such image.
      const bytes = Math.max(start, ...[...got.values()].map((e) => e.addr + e.size)) - start;
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
    if (a === 'text') {
      const after = Math.max(start, ...[...got.values()].map((e) => e.addr + e.size));
      const tables = pack(m, mapPath, 'ind', after, own, r.end, false);
      for (const [v, ext] of tables) (ownAt.get(v) ?? ownAt.set(v, {}).get(v)!).ind = ext;
    }
  }
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

/**
 * relayout with the table region right after the shared code (64-byte aligned) or, when it would
 * cross a page boundary there, on the next page (`pageAligned`): an image without the last groups
 * then keeps no page for the tables' first bytes alone, but every image keeps the gap.
 */
function relayoutAt(m: SpacerMap, mapPath: string, pageAligned: boolean): RelayoutResult {
  const all: { name: string; h: string; v: VariantEntry; key: string; first: number }[] = [];
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
  const groups = new Map<string, typeof all>();
  for (const x of all) (groups.get(x.key) ?? groups.set(x.key, []).get(x.key)!).push(x);
  const ordered = [...groups.values()].sort(
    (a, b) =>
      b[0].key.split('\0').length - a[0].key.split('\0').length ||
      a[0].first - b[0].first ||
      (a[0].key < b[0].key ? -1 : 1),
  );
  const old = new Map<VariantEntry, string>();
  for (const u of Object.values(m.ulibs))
    for (const v of Object.values(u.variants)) old.set(v, slotKey(v.slot));
  for (const u of Object.values(m.ulibs)) for (const v of Object.values(u.variants)) delete v.slot;
  // Code of the shared groups starts right after the boot head. The table region follows it (what
  // the shared tables need, and a quarter more): what tables hold (addresses of per-image data,
  // other µlibs' entries) differs between images with different µlib sets, so they go next to the
  // name slots and own areas, on the tail page that differs per image anyway, and the first page
  // (head and the most shared code) stays the same in every image.
  const indNeed = all.reduce((a, x) => alignUp(a, x.v.align.ind ?? 1) + (x.v.sizes.ind ?? 0), 0);
  const ind = m.regions.ind,
    text = m.regions.text;
  text.base = Math.min(ind.base, text.base);
  for (const a of ['text', 'ind', 'rodata', 'data', 'bss'] as const) {
    const r = m.regions[a];
    if (a === 'ind') {
      ind.base = alignUp(text.next, 64);
      ind.end = indEnd(ind.base, indNeed);
      if (pageAligned && Math.floor(ind.base / PAGE) !== Math.floor((ind.end - 1) / PAGE)) {
        ind.base = alignUp(ind.base, PAGE);
        ind.end = indEnd(ind.base, indNeed);
      }
      if (ind.end >= text.end)
        throw new SpacerError(
          `${mapPath}: the tables of the shared µlibs need more room than the map has; start a new map and relink every app`,
        );
    }
    let next = r.base;
    for (const g of ordered) {
      const got = pack(m, mapPath, a, next, g, r.end, false);
      for (const [v, ext] of got) (v.slot ??= {})[a] = ext;
      if (got.size) next = Math.max(...[...got.values()].map((e) => e.addr + e.size));
    }
    r.next = next;
    // What the text region places later (name slots, new groups) comes after the tables.
    if (a === 'ind') text.next = ind.end;
  }
  for (const x of all) x.v.slot ??= {};
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
  // Own-area reserves for the largest own area an image has now.
  const oldOwn = JSON.stringify(m.own ?? null);
  delete m.own;
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

/** A deterministic generator from a seed string (splitmix32 over a hash of the seed). */
export function seededRandom(seed: string): () => number {
  let h = 0x811c9dc5;
  for (const c of Buffer.from(seed)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return () => {
    h = (h + 0x9e3779b9) >>> 0;
    let z = h;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 2 ** 32;
  };
}

/**
 * ASLR mode: the code of one build's µlibs in an order shuffled from the seed. Each µlib's code
 * starts on a page, its indirection table right after it: the table's entries are position-
 * independent, so code and table pages are the same wherever the µlib lands. What the entries
 * read, the µlib's pointer area, is what differs per image; it gets the map's `ind` extent of the
 * variant (a stable address for shared µlibs), or, for the image's own µlibs, a place before the
 * code, followed by their own code on the same page. Read-only data, data and bss keep the map's
 * slots (allocated as in the plain layout): code
 * reaches them only through its table, so they need not move with it, and their pages stay shared.
 */
export function allocateAslr(
  m: SpacerMap,
  mapPath: string,
  req: AllocRequest,
  seed: string,
): AllocResult & { order: string[] } {
  // Slots for everything but the code and its table; the pointer area takes the table's map area.
  // No mode either: the map records a mode only with its measured table size, and this request
  // carries the pointer area's size in its place.
  const still: AllocRequest = {
    ...req,
    ulibs: req.ulibs.map((u) => ({
      ...u,
      mode: undefined,
      sizes: { ...u.sizes, text: undefined, ind: u.ptr || undefined },
      align: { ...u.align, text: undefined, ind: u.ptr ? 8 : undefined },
      ...(u.ownAbs?.ptr ? { absPtr: u.ownAbs.ptr } : {}),
    })),
  };
  const base = allocate(m, mapPath, still);
  const rand = seededRandom(seed);
  const order = req.ulibs.map((u) => u.name);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const at = new Map<string, Placement['at']>(base.placements.map((p) => [p.ulib, { ...p.at }]));
  // Pointer areas: those with a map address keep it; the image's own go before the code.
  const own: string[] = [];
  const byName = new Map(req.ulibs.map((u) => [u.name, { ...u, sizes: { ...u.sizes } }]));
  const ownAbs = new Set<string>();
  for (const p of base.placements) {
    const a = at.get(p.ulib)!;
    if (a.ind) a.ptr = a.ind;
    delete a.ind;
    // A name slot's variant lays its data out its own way, so its code differs between images
    // wherever it holds an absolute address of that data. With those addresses in its pointer
    // area too (when the slot has room for the larger area), its code and table are the same in
    // every image whose variant differs only in data.
    const u = byName.get(p.ulib)!,
      cap = m.ulibs[p.ulib]?.slot?.ind?.size ?? 0;
    if (p.named && u.ownAbs && a.ptr && u.ownAbs.ptr <= cap) {
      a.ptr = { addr: a.ptr.addr, size: u.ownAbs.ptr };
      u.sizes.ind = u.ownAbs.ind;
      ownAbs.add(p.ulib);
    }
    if (a.ptr && !p.shared && !p.named) own.push(p.ulib);
  }
  const r = m.regions.text;
  // Code starts after everything the map placed in the text region (name slots, spilled areas)
  // and the image's own pointer areas (that page differs per image anyway).
  let next = Math.max(r.base, r.next);
  for (const n of own) {
    const a = at.get(n)!;
    const addr = alignUp(next, 8);
    a.ptr = { addr, size: a.ptr!.size };
    next = addr + a.ptr.size;
  }
  // The image's own code (an app, a library only it uses) has pages of its own anyway: it follows
  // the pointer areas on their page, in shuffled order after a gap drawn from the seed, instead of
  // taking pages of its own. Shared µlibs' code starts on a page each, so it is the same in every
  // image.
  const isOwn = new Set(base.placements.filter((p) => !p.shared && !p.named).map((p) => p.ulib));
  const ownCode = order.filter((n) => isOwn.has(n) && (byName.get(n)!.sizes.text ?? 0) > 0);
  const ownBytes = ownCode.reduce(
    (a, n) =>
      alignUp(a, 64) + alignUp(byName.get(n)!.sizes.text!, 16) + (byName.get(n)!.sizes.ind ?? 0),
    0,
  );
  const start = alignUp(next, 64);
  const slack = alignUp(start, PAGE) - start - ownBytes;
  next =
    start +
    (slack > 0
      ? Math.floor(rand() * (Math.floor(slack / 64) + 1)) * 64
      : Math.floor(rand() * 16) * 64);
  const place = (n: string, addr: number) => {
    const u = byName.get(n)!;
    const text = u.sizes.text!,
      ind = u.sizes.ind ?? 0;
    const tableAt = alignUp(addr + text, 16);
    next = ind ? tableAt + ind : addr + text;
    if (next > r.end)
      throw new SpacerError(
        `${mapPath}: the text region (${hex(r.base)}..${hex(r.end)}) has no room for ${n} in ASLR mode; start a new map with more room`,
      );
    at.get(n)!.text = { addr, size: text };
    if (ind) at.get(n)!.ind = { addr: tableAt, size: ind };
  };
  for (const n of ownCode) place(n, alignUp(next, Math.max(64, byName.get(n)!.align.text ?? 1)));
  next = alignUp(next, PAGE);
  for (const n of order) {
    if (isOwn.has(n)) continue;
    const u = byName.get(n)!;
    const text = u.sizes.text ?? 0,
      ind = u.sizes.ind ?? 0;
    if (!text) continue;
    const addr = alignUp(next, PAGE);
    const tableAt = alignUp(addr + text, 16);
    next = ind ? tableAt + ind : addr + text;
    if (next > r.end)
      throw new SpacerError(
        `${mapPath}: the text region (${hex(r.base)}..${hex(r.end)}) has no room for ${n} in ASLR mode; start a new map with more room`,
      );
    at.get(n)!.text = { addr, size: text };
    if (ind) at.get(n)!.ind = { addr: tableAt, size: ind };
  }
  return {
    placements: base.placements.map((p) => ({
      ...p,
      ...(ownAbs.has(p.ulib) ? { ownAbs: true } : {}),
      at: at.get(p.ulib)!,
    })),
    ownEnd: base.ownEnd,
    notes: base.notes,
    order,
  };
}
