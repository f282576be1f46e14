// ASLR mode: each build's µlib code in an order shuffled from a seed, with slots from the map for
// everything else.
import { SpacerError } from '../errors.js';
import { PAGE, alignUp, hex } from '../util/units.js';
import {
  allocate,
  isApp,
  type AllocRequest,
  type AllocResult,
  type Placement,
  type UlibRequest,
} from './allocate.js';
import type { Region, SpacerMap } from './map-types.js';
import { headroom } from './name-slots.js';
import { isPlatform } from './platform.js';

/** A deterministic generator from a seed string (splitmix32 over a hash of the seed). */
function seededRandom(seed: string): () => number {
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

export { isPlatform, sendsOwnAbs } from './platform.js';

/** Where each µlib goes, per slot kind; what allocateAslr moves. */
type At = Map<string, Placement['at']>;

/**
 * The request for the map's slots: everything but the code and its table; the pointer area takes
 * the table's map area. No mode either: the map records a mode only with its measured table size,
 * and this request carries the pointer area's size in its place.
 */
function withoutCode(req: AllocRequest): AllocRequest {
  return {
    ...req,
    saltRoom: true,
    ulibs: req.ulibs.map((u) => ({
      ...u,
      mode: undefined,
      sizes: { ...u.sizes, text: undefined, ind: u.ptr || undefined },
      align: { ...u.align, text: undefined, ind: u.ptr ? 8 : undefined },
      ...(u.ownAbs?.ptr ? { absPtr: u.ownAbs.ptr } : {}),
    })),
  };
}

/** The code order: the fixed µlibs first, in link order, then the rest shuffled from the seed. */
function shuffled(req: AllocRequest, fixed: Set<string>, rand: () => number) {
  const pinned = req.ulibs.map((u) => u.name).filter((n) => fixed.has(n));
  const order = req.ulibs.map((u) => u.name).filter((n) => !fixed.has(n));
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  order.unshift(...pinned);
  return { pinned, order };
}

/**
 * Pointer areas: those with a map address keep it (the map's `ind` extent); the image's own code
 * gets none and no table. Returns the µlibs whose pointer areas go before the code (`own`) and the
 * name slots whose own data's addresses go through their table (`ownAbs`).
 */
function pointerAreas(
  m: SpacerMap,
  base: AllocResult,
  at: At,
  byName: Map<string, UlibRequest>,
  isOwn: Set<string>,
  fixed: Set<string>,
): { own: string[]; ownAbs: Set<string> } {
  const own: string[] = [];
  const ownAbs = new Set<string>();
  for (const p of base.placements) {
    const a = at.get(p.ulib)!;
    if (a.ind) a.ptr = a.ind;
    delete a.ind;
    if (isOwn.has(p.ulib)) {
      delete a.ptr;
      byName.get(p.ulib)!.sizes.ind = 0;
      continue;
    }
    // A name slot's variant lays its data out its own way, so its code differs between images
    // wherever it holds an absolute address of that data. With those addresses in its pointer
    // area too (when the slot has room for the larger area), its code and table are the same in
    // every image whose variant differs only in data. Not a µlib that keeps its place (the
    // platform): built per app too on real Unikraft (its setup code holds the image's name), it is
    // rewritten for its place as ever, so its variants' pages differ only where their bytes do.
    const u = byName.get(p.ulib)!,
      cap = m.ulibs[p.ulib]?.slot?.ind?.size ?? 0;
    if (p.named && u.ownAbs && a.ptr && u.ownAbs.ptr <= cap && !fixed.has(p.ulib)) {
      a.ptr = { addr: a.ptr.addr, size: u.ownAbs.ptr };
      u.sizes.ind = u.ownAbs.ind;
      ownAbs.add(p.ulib);
    }
    if (a.ptr && !p.shared && !p.named) own.push(p.ulib);
  }
  return { own, ownAbs };
}

/** The text region being filled with code: the placements and the next free address. */
interface CodeCursor {
  mapPath: string;
  r: Region;
  at: At;
  byName: Map<string, UlibRequest>;
  next: number;
}

/** Places a µlib's code at `addr`, its table (if any) right after it, 16-byte aligned. */
function place(c: CodeCursor, n: string, addr: number): void {
  const u = c.byName.get(n)!;
  const text = u.sizes.text!,
    ind = u.sizes.ind ?? 0;
  const tableAt = alignUp(addr + text, 16);
  c.next = ind ? tableAt + ind : addr + text;
  if (c.next > c.r.end)
    throw new SpacerError(
      `${c.mapPath}: the text region (${hex(c.r.base)}..${hex(c.r.end)}) has no room for ${n} in ASLR mode; start a new map with more room`,
    );
  c.at.get(n)!.text = { addr, size: text };
  if (ind) c.at.get(n)!.ind = { addr: tableAt, size: ind };
}

/**
 * The image's own code (an app, a library only it uses) has pages of its own anyway: it follows
 * the pointer areas on their page, in shuffled order after a gap drawn from the seed, instead of
 * taking pages of its own. The app comes last, and the gap does not depend on its size: it is
 * drawn over what the page leaves for the rest of the own code, then shortened only as far as the
 * app (counted by the kilobyte) needs to fit on the page. So a relink where only the app changed
 * moves none of the rest unless the app grew into the gap, and the shared µlibs whose code refers
 * to the rest of the own code keep their cached rewrites (a gap drawn over what the page leaves
 * after the app moved the rest whenever the app's size crossed a kilobyte: a third of the bench's
 * warm relinks rewrote and proved every µlib again).
 */
function placeOwnCode(c: CodeCursor, ownCode: string[], rand: () => number): void {
  const ordered = [...ownCode.filter((n) => !isApp(n)), ...ownCode.filter(isApp)];
  const bytesOf = (n: string) =>
    alignUp(c.byName.get(n)!.sizes.text!, 16) + (c.byName.get(n)!.sizes.ind ?? 0);
  /** The own code's bytes with the app counted by `step` (0: left out). */
  const total = (step: number) =>
    ordered.reduce(
      (a, n) => (isApp(n) && !step ? a : alignUp(a, 64) + alignUp(bytesOf(n), isApp(n) ? step : 1)),
      0,
    );
  const start = alignUp(c.next, 64);
  const room = alignUp(start, PAGE) - start;
  const r = rand();
  // Drawn over what the rest leaves; then at most what the page leaves with the app counted by
  // the kilobyte, else (an app within a kilobyte of filling the page) with the app as it is, else
  // (the own code runs past the page anyway) a kilobyte at most.
  const drawn = Math.floor(r * (Math.floor(Math.max(0, room - total(0)) / 64) + 1)) * 64;
  const slack = [room - total(APP_STEP), room - total(1)].find((x) => x > 0);
  c.next =
    start +
    (slack !== undefined ? Math.min(drawn, Math.floor(slack / 64) * 64) : Math.floor(r * 16) * 64);
  for (const n of ordered)
    place(c, n, alignUp(c.next, Math.max(64, c.byName.get(n)!.align.text ?? 1)));
}

/** The app's code size as the own code's gap counts it. */
const APP_STEP = 1024;

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
  const base = allocate(m, mapPath, withoutCode(req));
  const rand = seededRandom(seed);
  // The platform keeps its place: its boot code and the page tables inside it hold real addresses
  // of itself, and its unwind tables PC-relative ones, so shuffling it would make those pages
  // differ per image. The rest is shuffled.
  const fixed = new Set(req.ulibs.filter((u) => u.pinned || isPlatform(u.name)).map((u) => u.name));
  // The image's own code: µlibs only it uses, and the per-app variants of the name slots (ukboot,
  // uklibid; on real Unikraft ukboot's code holds the app's name). Its pages are its own wherever
  // it goes, so it is not rewritten: no table, no pointer area, references left as linked
  // (correct for this image), packed after a gap drawn from the seed.
  const isOwn = new Set(
    base.placements.filter((p) => (!p.shared || p.named) && !fixed.has(p.ulib)).map((p) => p.ulib),
  );
  const { pinned, order } = shuffled(req, fixed, rand);
  const at: At = new Map(base.placements.map((p) => [p.ulib, { ...p.at }]));
  const byName = new Map(req.ulibs.map((u) => [u.name, { ...u, sizes: { ...u.sizes } }]));
  const { own, ownAbs } = pointerAreas(m, base, at, byName, isOwn, fixed);
  const r = m.regions.text;
  // The pages of pointer areas differ per image, and so do the image's own code's: the own code
  // follows this image's last pointer area (on its page, not on pages of its own), after the
  // image's own pointer areas. Extents of the map this image does not use may lie under it.
  const used = [...at.values()].flatMap((a) => (a.ptr ? [a.ptr.addr + a.ptr.size] : []));
  const c: CodeCursor = {
    mapPath,
    r,
    at,
    byName,
    next: Math.max(m.text_base + m.head, ...used),
  };
  const hasCode = (n: string) => (byName.get(n)!.sizes.text ?? 0) > 0;
  for (const n of own) {
    const a = at.get(n)!;
    const addr = alignUp(c.next, 8);
    a.ptr = { addr, size: a.ptr!.size };
    c.next = addr + a.ptr.size;
  }
  placeOwnCode(
    c,
    order.filter((n) => isOwn.has(n) && hasCode(n)),
    rand,
  );
  // Then the fixed code (the platform) at the same address in every image of the map: after
  // everything the map placed in the text region and a reserve for the own code that runs past
  // it, grown (as the own-area reserves) when an image needs more.
  const fixedAt = Math.max(r.base, r.next);
  const past = c.next - fixedAt;
  if (past > (m.own?.text ?? 0)) {
    if (m.own?.text)
      base.notes.push(
        `the image's own code (${past} bytes past the map's text) outgrew its reserve (${m.own.text}); the reserve grows, the platform moves: images linked before share less until relinked`,
      );
    (m.own ??= {}).text = headroom(past);
  }
  c.next = fixedAt + (m.own?.text ?? 0);
  for (const n of pinned.filter(hasCode)) {
    place(c, n, alignUp(c.next, PAGE));
    // The rest of its table's page is the platform's (callee copies).
    c.next = alignUp(c.next, PAGE);
  }
  // Then the shuffled code: shared µlibs' code starts on a page each, so it is the same in every
  // image.
  c.next = alignUp(c.next, PAGE);
  for (const n of order)
    if (!isOwn.has(n) && !fixed.has(n) && hasCode(n)) place(c, n, alignUp(c.next, PAGE));
  return {
    placements: base.placements.map((p) => ({
      ...p,
      ...(ownAbs.has(p.ulib) ? { ownAbs: true } : {}),
      ...(byName.get(p.ulib)!.pinned && !ownAbs.has(p.ulib) ? { pinned: true } : {}),
      at: at.get(p.ulib)!,
    })),
    ownEnd: base.ownEnd,
    notes: base.notes,
    order,
  };
}
