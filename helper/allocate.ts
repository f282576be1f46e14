// The address allocator: gives each µlib variant a slot in the workspace map. Slots never move.
// A variant that fits an existing slot of its µlib shares it; one that outgrew every slot gets a
// new slot at the end of the region (policy `append`, the default: images linked earlier keep
// their addresses) or stops the link (policy `error`).
import { SpacerError } from './errors.js';
import { KINDS, PAGE, type Extent, type Kind, type OverflowPolicy, type Slot, type SpacerMap, hex } from './map.js';
import { alignUp, type UlibObject } from './objects.js';

const MiB = 1 << 20;
/** Smallest capacity a region gets when a map is created (address space only: gaps cost no memory). */
// Small enough that images stay well inside a 32 MiB guest (every loaded address must be RAM).
export const MIN_CAPACITY: Record<Kind, number> = { text: 2 * MiB, rodata: 1 * MiB, data: 1 * MiB, bss: 2 * MiB };

export interface AllocRequest {
  image: string;
  ulibs: UlibObject[];
  sizes: Record<string, Partial<Record<Kind, number>>>;
  head: number;
  textBase: number;
  policy: OverflowPolicy;
  headroomPct?: number;
}

export interface Allocation {
  ulib: string;
  variant: string;
  slot: Slot;
  sizes: Partial<Record<Kind, number>>;
}

export interface AllocResult {
  allocations: Allocation[];
  warnings: string[];
  created: boolean;
}

export function slotSize(bytes: number, headroomPct: number): number {
  return alignUp(bytes + Math.ceil((bytes * headroomPct) / 100), PAGE);
}

/** A new map sized from the first image: every region gets at least MIN_CAPACITY and 4x its first need. */
export function freshMap(req: AllocRequest): SpacerMap {
  const headroom = req.headroomPct ?? 10;
  const head = alignUp(req.head + Math.max(Math.ceil(req.head / 4), PAGE), PAGE);
  const need = Object.fromEntries(KINDS.map((k) => [k, req.ulibs.reduce((a, u) => a + slotSize(req.sizes[u.name]?.[k] ?? 0, headroom), 0)])) as Record<Kind, number>;
  let at = req.textBase + head;
  const regions = {} as SpacerMap['regions'];
  for (const k of KINDS) {
    const cap = alignUp(Math.max(MIN_CAPACITY[k], 4 * need[k]), MiB);
    regions[k] = { base: at, end: at + cap, next: at };
    at = alignUp(at + cap, MiB);
  }
  return { schema: 1, page_size: PAGE, text_base: req.textBase, head, headroom_pct: headroom, regions, ulibs: {}, images: {} };
}

function fits(slot: Slot, sizes: Partial<Record<Kind, number>>): boolean {
  return KINDS.every((k) => !sizes[k] || !slot[k] || sizes[k]! <= slot[k]!.size);
}

function place(m: SpacerMap, mapPath: string, kind: Kind, bytes: number, ulib: string): Extent {
  const r = m.regions[kind];
  const size = slotSize(bytes, m.headroom_pct);
  if (r.next + size > r.end) {
    throw new SpacerError(`${mapPath}: the ${kind} region (${hex(r.base)}..${hex(r.end)}) has no room for ${ulib} (${bytes} bytes); start a new map (move this one away) and relink every app`);
  }
  const e = { addr: r.next, size };
  r.next += size;
  return e;
}

/** Updates `m` in place for one image; deterministic for the same map and objects. */
export function allocate(m: SpacerMap, mapPath: string, req: AllocRequest): AllocResult {
  const warnings: string[] = [];
  if (m.text_base !== req.textBase) {
    throw new SpacerError(`${mapPath}: the map was made for text at ${hex(m.text_base)} but this platform script puts it at ${hex(req.textBase)}; use another map (CONFIG_SPACER_MAP) for this platform`);
  }
  if (req.head > m.head) {
    throw new SpacerError(`${mapPath}: the platform boot head (${req.head} bytes) outgrew the ${m.head} bytes the map reserves; start a new map (move this one away) and relink every app`);
  }
  const seen = new Set<string>();
  const allocations: Allocation[] = [];
  for (const u of req.ulibs) {
    if (seen.has(u.name)) throw new SpacerError(`${u.path}: two objects named ${u.name}.o in one link; µlib names must be unique`);
    seen.add(u.name);
    const sizes = req.sizes[u.name] ?? {};
    const entry = (m.ulibs[u.name] ??= { slots: [], variants: {} });
    entry.variants[u.variant] = Object.fromEntries(KINDS.filter((k) => sizes[k]).map((k) => [k, sizes[k]!]));
    let slot = entry.slots.find((s) => s.variants.includes(u.variant));
    if (slot && !fits(slot, sizes)) {
      throw new SpacerError(`${mapPath}: ${u.name} variant ${u.variant} no longer fits the slot it had (was the platform script changed?); start a new map and relink every app`);
    }
    if (!slot) {
      slot = entry.slots.find((s) => fits(s, sizes));
      if (slot) {
        slot.variants.push(u.variant);
      } else if (entry.slots.length === 0) {
        slot = { variants: [u.variant] };
        entry.slots.push(slot);
      } else {
        const what = KINDS.filter((k) => sizes[k] && entry.slots[0][k] && sizes[k]! > entry.slots[0][k]!.size)
          .map((k) => `${k} ${sizes[k]} > ${entry.slots[0][k]!.size} bytes`).join(', ');
        if (req.policy === 'error') {
          throw new SpacerError(`${mapPath}: ${u.name} (variant ${u.variant}) outgrew its slot (${what}); relink with SPACER_OVERFLOW=append to give it a new slot, or start a new map`);
        }
        warnings.push(`${u.name} (variant ${u.variant}) outgrew its slot (${what}): gave it a new slot; images using the old slot keep their addresses, but do not share ${u.name}'s pages with this one`);
        slot = { variants: [u.variant] };
        entry.slots.push(slot);
      }
    }
    // Kinds the slot has no room for yet (a variant with a section the others lack) get space now.
    for (const k of KINDS) if (sizes[k] && !slot[k]) slot[k] = place(m, mapPath, k, sizes[k]!, u.name);
    allocations.push({ ulib: u.name, variant: u.variant, slot, sizes });
  }
  m.images[req.image] = { ulibs: Object.fromEntries(req.ulibs.map((u) => [u.name, u.variant])) };
  return { allocations, warnings, created: false };
}
