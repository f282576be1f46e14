// `spacer link`: objects → map → script. Reads the µlib objects the link really uses, takes the
// map lock, places every µlib variant, and writes the aligned linker script plus a plan (JSON)
// that the post-link step checks (and rewrites) the image against.
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { SpacerError } from './errors.js';
import type { Plan, PlanUlib } from './plan.js';
import { allocate, freshMap, type AllocRequest, type UlibRequest } from './layout/allocate.js';
import { allocateAslr, isPlatform, sendsOwnAbs } from './layout/aslr.js';
import { readMoved, type MovedInsn } from './layout/moved.js';
import { GOT_SLOT, JMP_REL32 } from './x86/classify.js';
import { loadLinkView, peekVariants } from './layout/map-store.js';
import { mapWriteKey, updateMap, type LinkView } from './layout/map-lock.js';
import { SLOT_KINDS, type ImageOrigin, type SlotKind, type SpacerMap } from './layout/map-types.js';
import { nameSlotCandidate } from './layout/name-slots.js';
import { readObjectCached, type UlibObject } from './objects.js';
import { helperCodeId } from './cache/code-id.js';
import { cacheDirFor, readEntry, writeEntry } from './cache/store.js';
import { generateScript, loadPlatform, measure, type SlotPlacement } from './script.js';
import { writeFileAtomic } from './util/files.js';
import { outputName } from './util/sections.js';
import { PAGE, alignUp, hex } from './util/units.js';

export interface LinkOptions {
  image: string;
  /** The platform's preprocessed default linker script. */
  lds: string;
  /** Where the aligned script goes; the plan is written beside it as `<out>.json`. */
  out: string;
  map: string;
  objects: string[];
  /** Bytes of indirection table each object needs (the rewrite's first pass); none when absent. */
  tableBytes?: (objectPath: string) => number;
  /** ASLR mode: µlib order shuffled from this seed (same seed, same image). */
  aslrSeed?: string;
  /**
   * Redirect the references µlib code makes outside its µlib through indirection tables (default
   * true).
   */
  rewrite?: boolean;
  /** Where the link runs (app and build folders, the command that relinks it): kept in the map. */
  origin?: ImageOrigin;
  log?: (line: string) => void;
}

export type { Plan, PlanUlib };
/** What the objects pass found, and after the map pass, where everything goes. */
export interface LinkState {
  o: LinkOptions;
  log: (line: string) => void;
  ulibs: UlibObject[];
  platform: ReturnType<typeof loadPlatform>;
  mode: Plan['rewrite'];
  ulibReqs: UlibRequest[];
  calls: Map<string, string[]>;
  /** The platform's instructions to move that differ between its variants (layout/moved.ts). */
  moved: Map<string, MovedInsn[]>;
  req: AllocRequest;
  /** What the link touches of the map: its image and the variant of each µlib. */
  view: LinkView;
  placed?: Awaited<ReturnType<typeof placeInMap>>;
}

/** `spacer link` in one go: the objects, map and script passes. */
export async function link(o: LinkOptions): Promise<Plan> {
  const s = await readObjects(o);
  s.placed = await placeInMap(s);
  return writeScript(s);
}

/**
 * The objects pass: reads every µlib object (its sections, its variant hash) and measures what
 * each slot will hold, including the indirection table its relocations need.
 */
export async function readObjects(o: LinkOptions): Promise<LinkState> {
  const log = o.log ?? (() => {});
  if (!o.objects.length)
    throw new SpacerError(
      'spacer link: no objects given; pass the libNAME.o files of the link after --',
    );
  if (!/^[\w.+-]+$/.test(o.image))
    throw new SpacerError(
      `spacer link: image name ${JSON.stringify(o.image)} must be letters, digits, '.', '_', '+' or '-'`,
    );
  // Read the objects first: a bad object stops the link before the map is touched.
  const cache = cacheDirFor(o.map);
  const ulibs = o.objects.map((p) => readObjectCached(p, cache));
  const platform = loadPlatform(o.lds);
  // Measure what each slot will hold, assigning input sections as ld will.
  const measured = measure(platform, ulibs);
  const mode: Plan['rewrite'] =
    o.rewrite === false ? 'none' : o.aslrSeed !== undefined ? 'aslr' : 'external';
  // First pass of the rewrite: how much indirection table each µlib needs, from its relocations.
  // A variant the map already knows has it recorded (it depends only on the variant's content);
  // only new variants are decoded.
  const view: LinkView = {
    image: o.image,
    want: Object.fromEntries(ulibs.map((u) => [u.name, u.variant])),
  };
  // ASLR mode also asks the µlibs' name slots (the header); the classic layout only the variants.
  const known = mode === 'aslr' ? peekMap(o.map, view) : undefined;
  const peeked = mode === 'external' ? peekVariantsOf(o.map, view) : {};
  const content = (u: UlibObject) => ({ key: u.contentKey, cache });
  const ulibReqs: UlibRequest[] = [];
  const calls = new Map<string, string[]>();
  const moved = new Map<string, MovedInsn[]>();
  for (const u of ulibs) {
    const sizes: UlibRequest['sizes'] = { ...measured.sizes[u.name] };
    const align: UlibRequest['align'] = { ...measured.align[u.name] };
    const recorded = known?.ulibs[u.name]?.variants[u.variant] ?? peeked[u.name];
    // ASLR tables are not map slots (they follow their code), so ASLR sizes are measured each time.
    let ptr = 0,
      pinned = false;
    let ind =
      mode === 'none'
        ? 0
        : o.tableBytes
          ? o.tableBytes(u.path)
          : mode === 'external' && recorded?.modes?.includes(mode) && !sendsOwnAbs(u.name)
            ? (recorded.sizes.ind ?? 0)
            : -1;
    if (ind < 0) {
      // The platform's own data's absolute addresses go through its table in both layouts.
      const abs = sendsOwnAbs(u.name);
      let need = await tableBytesFor(u.path, mode as 'external' | 'aslr', abs, false, content(u));
      // ASLR: a µlib that keeps its place is sized (and rewritten) for it.
      pinned = mode === 'aslr' && (need.pinned || isPlatform(u.name));
      if (pinned) need = await tableBytesFor(u.path, 'aslr', abs, true, content(u));
      ({ bytes: ind, ptrBytes: ptr } = need);
      // The platform's instructions that differ between its variants without a relocation go to
      // its table too (layout/moved.ts): an entry of the longest instruction and a jump back,
      // and a slot for its immediate: a GOT slot in the table, or in ASLR mode, where the platform
      // keeps its place, a pointer slot.
      if (sendsOwnAbs(u.name)) {
        const m = readMoved(o.map, u.name, sizes.text ?? 0);
        if (m.length) moved.set(u.name, m);
        ind += m.length * (15 + JMP_REL32 + (mode === 'external' ? GOT_SLOT : 0));
        if (mode === 'aslr') ptr += m.length * GOT_SLOT;
      }
      if (need.calls.length) calls.set(u.name, need.calls);
      for (const line of need.undecided) log(`spacer: warning: ${line}`);
    }
    // ASLR mode, a µlib with a name slot (or about to get one: another image has a variant of its
    // own): also the sizes for the form that sends its own data's absolute addresses through the
    // table (allocateAslr takes it when the slot has room; the map sizes name slots for it). A
    // µlib that keeps its place never takes it.
    let ownAbs: UlibRequest['ownAbs'];
    if (
      mode === 'aslr' &&
      !o.tableBytes &&
      !pinned &&
      nameSlotCandidate(known?.ulibs[u.name], u.variant, o.image)
    ) {
      const need = await tableBytesFor(u.path, 'aslr', true, false, content(u));
      ownAbs = { ind: need.bytes, ptr: need.ptrBytes };
    }
    if (ind) {
      sizes.ind = ind;
      align.ind = 16;
    }
    ulibReqs.push({
      name: u.name,
      variant: u.variant,
      sizes,
      align,
      mode: mode === 'none' ? undefined : mode,
      codeSig: u.codeSig,
      ...(ptr ? { ptr } : {}),
      ...(pinned ? { pinned } : {}),
      ...(ownAbs ? { ownAbs } : {}),
    });
  }
  const req: AllocRequest = {
    image: o.image,
    ulibs: ulibReqs,
    head: measured.head,
    textBase: platform.textBase,
    ...(o.origin ? { origin: o.origin } : {}),
  };
  return { o, log, ulibs, platform, mode, ulibReqs, calls, moved, req, view };
}

/** The map pass: places every variant under the map lock (ASLR: copies of leaf callees too). */
export async function placeInMap(s: LinkState) {
  const { o, log, ulibs, mode, calls, req, view } = s;
  // Place every variant under the map lock; the map's update lands whole (map-store.ts).
  const {
    placements: placed,
    notes,
    map,
    order,
    ownEnd,
  } = await updateMap(
    o.map,
    () => freshMap(req),
    (m) => {
      const r =
        o.aslrSeed !== undefined
          ? allocateAslr(m, o.map, req, o.aslrSeed)
          : { ...allocate(m, o.map, req), order: undefined };
      return { ...r, map: { regions: structuredClone(m.regions) } };
    },
    view,
    // Through the link server the map lands while ld runs (finish asks whether it did).
    mapWriteKey(o.map, o.image),
  );
  for (const n of notes) log(`spacer: ${o.image}: ${n}`);
  // ASLR mode: copies of leaf callees after each page-aligned µlib's table, in its last page.
  const clones =
    mode === 'aslr' ? await planClones(placed, ulibs, calls) : new Map<string, string[]>();
  return { placed, notes, map, order, ownEnd, clones };
}

/** The script pass: writes the aligned script and the plan the post-link passes check. */
export function writeScript(s: LinkState): Plan {
  const { o, log, ulibs, platform, mode, ulibReqs } = s;
  const { placed, notes, map, order, ownEnd, clones } = s.placed!;
  const placements: SlotPlacement[] = [];
  for (const a of placed) {
    const u = ulibs.find((x) => x.name === a.ulib)!;
    for (const k of SLOT_KINDS)
      if (a.at[k])
        placements.push({
          ulib: a.ulib,
          path: u.path,
          shared: a.shared,
          kind: k,
          addr: a.at[k]!.addr,
          size: a.at[k]!.size,
        });
  }
  // Write the aligned script (same objects + same map = same bytes).
  const script = generateScript({
    platform,
    placements,
    objects: ulibs.map((u) => u.path),
    rodataBase: map.regions.rodata.base,
    dataBase: map.regions.data.base,
    bssBase: map.regions.bss.base,
    ownEnd,
  });
  const plan: Plan = {
    spacer: 1,
    image: o.image,
    map: o.map,
    script: o.out,
    ulibs: placed.map((a) => ({
      name: a.ulib,
      path: ulibs.find((u) => u.name === a.ulib)!.path,
      variant: a.variant,
      shared: a.shared,
      ...(a.named ? { named: true } : {}),
      ...(a.ownAbs ? { ownAbs: true } : {}),
      ...(a.pinned ? { pinned: true } : {}),
      ...(s.moved.has(a.ulib) ? { moved: s.moved.get(a.ulib)!.map(([at]) => at) } : {}),
      slots: Object.fromEntries(
        SLOT_KINDS.filter((k) => a.at[k]).map((k) => {
          const r = ulibReqs.find((x) => x.name === a.ulib)!;
          return [
            k,
            {
              section: outputName(k, a.ulib),
              addr: hex(a.at[k]!.addr),
              size: hex(a.at[k]!.size),
              bytes:
                a.ownAbs && (k === 'ptr' || k === 'ind')
                  ? r.ownAbs![k]
                  : k === 'ptr'
                    ? r.ptr!
                    : r.sizes[k]!,
              ...(k === 'ind' && clones.has(a.ulib) ? { clones: clones.get(a.ulib)! } : {}),
            },
          ];
        }),
      ),
    })),
    notes,
    rewrite: mode,
    ...(o.aslrSeed !== undefined ? { aslr: { seed: o.aslrSeed, order: order! } } : {}),
  };
  // Build products: replaced whole, not synced (files.ts).
  writeFileAtomic(o.out, script, 'product');
  writeFileAtomic(`${o.out}.json`, JSON.stringify(plan, null, 2) + '\n', 'product');
  const shared = placed.filter((p) => p.shared).length;
  const named = placed.filter((p) => p.named).length;
  log(
    o.aslrSeed !== undefined
      ? `spacer: ${o.image}: ${ulibs.length} µlibs, code shuffled (seed ${o.aslrSeed}); read-only data and data: ${shared} in shared slots -> ${o.out}`
      : `spacer: ${o.image}: ${ulibs.length} µlibs placed (${shared} in shared slots, ${named} in name slots, ${ulibs.length - shared - named} in the image's own area) -> ${o.out}`,
  );
  return plan;
}

/**
 * ASLR mode: which functions each µlib whose code starts on a page calls a copy of (see
 * x86/clone.ts), in the order it first calls them, as many as fit between its table and the end
 * of the table's last page (padding otherwise, so the copies cost no page). The choice depends
 * only on the caller's and the callees' objects, so it is the same in every image that links the
 * same variants. Extends each chosen µlib's `ind` extent over its copies.
 */
async function planClones(
  placed: {
    ulib: string;
    shared: boolean;
    named?: boolean;
    at: Partial<Record<SlotKind, { addr: number; size: number }>>;
  }[],
  ulibs: UlibObject[],
  calls: Map<string, string[]>,
): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (!calls.size) return out;
  const { cloneSources } = await import('./rewrite.js');
  const { cloneLayout } = await import('./x86/clone.js');
  // Each name to the object that defines it (the first in link order, as ld resolves it). An
  // object is read only when this process has not asked it for that name before.
  const finders = new Map<UlibObject, ReturnType<typeof cloneSources>>();
  const sources = ulibs.map((u) => ({
    name: u.name,
    find: (name: string) =>
      offered(u, name, () => {
        let f = finders.get(u);
        if (!f) finders.set(u, (f = cloneSources(u.elf)));
        return f(name);
      }),
  }));
  for (const a of placed) {
    const want = calls.get(a.ulib),
      ind = a.at.ind;
    // Copies fill the rest of the table's page: only behind code that starts on a page of its own
    // (own code is packed, the next µlib's code follows its table).
    if (!want || !ind || !(a.shared || a.named) || (a.at.text?.addr ?? 1) % PAGE !== 0) continue;
    const tableEnd = BigInt(ind.addr + ind.size),
      room = BigInt(alignUp(ind.addr + ind.size, PAGE));
    const chosen: string[] = [],
      sizes: number[] = [];
    for (const name of want) {
      let src;
      for (const x of sources) if (x.name !== a.ulib && (src = x.find(name))) break;
      if (!src || src.refusal) continue;
      const { at } = cloneLayout(tableEnd, [...sizes, src.size]);
      if (at[at.length - 1] + BigInt(src.size) > room) continue;
      chosen.push(name);
      sizes.push(src.size);
    }
    if (!chosen.length) continue;
    out.set(a.ulib, chosen);
    const { end } = cloneLayout(tableEnd, sizes);
    ind.size = Number(end < room ? end : room) - ind.addr;
  }
  return out;
}

/** A function an object offers for a copy: its size, or why it may not be copied. */
type Offer = { size: number; refusal?: string } | null;
const offers = new Map<string, Map<string, Offer>>();

/**
 * What `u` offers under `name` (null: it defines no such function), by the object's content: a
 * link server's next link asks the same objects for the same callees, and reading each object
 * again (with its symbols, and a decode of the function) was most of an ASLR link's map pass.
 */
function offered(
  u: UlibObject,
  name: string,
  find: () => { bytes: Buffer; refusal?: string } | undefined,
): Offer {
  let byName = offers.get(u.contentKey);
  if (!byName) {
    // Bounded: the link server keeps it across builds.
    if (offers.size > 10000) offers.clear();
    offers.set(u.contentKey, (byName = new Map()));
  }
  let o = byName.get(name);
  if (o === undefined) {
    const src = find();
    o = src ? { size: src.bytes.length, ...(src.refusal ? { refusal: src.refusal } : {}) } : null;
    byName.set(name, o);
  }
  return o;
}

type Needs = {
  bytes: number;
  ptrBytes: number;
  calls: string[];
  undecided: string[];
  pinned: boolean;
};
const needsCache = new Map<string, Needs>();

/** Table bytes (and in ASLR mode pointer-area bytes) a µlib object needs in a rewrite mode, cached
 * per object and mode in this process. The rewriter (and iced-x86 with it) is loaded only when
 * needed. */
export async function tableBytesFor(
  path: string,
  mode: 'external' | 'aslr',
  ownAbs = false,
  pinned = false,
  content?: { key: string; cache?: string },
): Promise<Needs> {
  const st = statSync(path, { bigint: true });
  // By the file as it is now (the link server lives across builds that rewrite objects).
  const key = `${mode}\0${ownAbs}\0${pinned}\0${path}\0${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`;
  let n = needsCache.get(key);
  if (n !== undefined) return n;
  // Bounded: the link server keeps it across builds.
  if (needsCache.size > 10000) needsCache.clear();
  // On disk, by the object's content: an ASLR link measures every µlib's tables each time.
  const disk =
    content?.cache &&
    createHash('sha256')
      .update(`spacer-needs 1 ${helperCodeId()} ${mode} ${+ownAbs}${+pinned} ${content.key}`)
      .digest('hex');
  n = disk ? readEntry<Needs>(content.cache!, 'needs', disk) : undefined;
  if (!n) {
    const { indirectionNeeds } = await import('./rewrite.js');
    const need = indirectionNeeds(path, mode, ownAbs, pinned);
    n = {
      bytes: need.bytes,
      ptrBytes: need.ptrBytes,
      calls: need.calls,
      undecided: need.undecided,
      pinned: need.pinned,
    };
    if (disk) writeEntry(content.cache!, 'needs', disk, n);
  }
  needsCache.set(key, n);
  return n;
}

/**
 * The map as this link sees it now (its view), read without the lock, for values that only
 * depend on a variant's content.
 */
function peekMap(path: string, view: LinkView): SpacerMap | undefined {
  try {
    return loadLinkView(path, view.image, view.want)?.map;
  } catch {
    return undefined; // a bad map is reported, with its fix, when the link takes the lock
  }
}

function peekVariantsOf(path: string, view: LinkView): ReturnType<typeof peekVariants> {
  try {
    return peekVariants(path, view.want);
  } catch {
    return {}; // as peekMap
  }
}
