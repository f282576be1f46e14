// `spacer link`: objects → map → script. Reads the µlib objects the link really uses, takes the
// map lock, gives every µlib its slot, and writes the aligned linker script plus a plan (JSON)
// that the post-link step checks the image against.
import { allocate, freshMap, type AllocRequest } from './allocate.js';
import { SpacerError } from './errors.js';
import { KINDS, type Kind, type OverflowPolicy, hex, updateMap, writeFileAtomic } from './map.js';
import { readObject } from './objects.js';
import { generateScript, loadPlatform, measure, outputName, type SlotPlacement } from './script.js';

export interface LinkOptions {
  image: string;
  /** The platform's preprocessed default linker script. */
  lds: string;
  /** Where the aligned script goes; the plan is written beside it as `<out>.json`. */
  out: string;
  map: string;
  objects: string[];
  policy?: OverflowPolicy;
  log?: (line: string) => void;
}

export interface PlanUlib {
  name: string;
  path: string;
  variant: string;
  /** Per kind: the output section, its slot and the bytes measured from the object. */
  slots: Partial<Record<Kind, { section: string; addr: string; size: string; bytes: number }>>;
}

export interface Plan {
  spacer: 1;
  image: string;
  map: string;
  script: string;
  ulibs: PlanUlib[];
  warnings: string[];
}

export async function link(o: LinkOptions): Promise<Plan> {
  const log = o.log ?? (() => {});
  if (!o.objects.length) throw new SpacerError('spacer link: no objects given; pass the libNAME.o files of the link after --');
  if (!/^[\w.+-]+$/.test(o.image)) throw new SpacerError(`spacer link: image name ${JSON.stringify(o.image)} must be letters, digits, '.', '_', '+' or '-'`);
  // Read the objects first: a bad object stops the link before the map is touched.
  const ulibs = o.objects.map(readObject);
  const platform = loadPlatform(o.lds);
  // Measure what each slot will hold, assigning input sections as ld will.
  const measured = measure(platform, ulibs);
  const req: AllocRequest = {
    image: o.image, ulibs, sizes: measured.sizes, head: measured.head, textBase: platform.textBase, policy: o.policy ?? 'append',
  };
  // Allocate under the map lock; the map lands with an atomic rename.
  const { allocations, warnings, map } = await updateMap(o.map, () => freshMap(req), (m) => ({ ...allocate(m, o.map, req), map: structuredClone(m) }));
  for (const w of warnings) log(`spacer: warning: ${w}`);
  const placements: SlotPlacement[] = [];
  for (const a of allocations) {
    const u = ulibs.find((x) => x.name === a.ulib)!;
    for (const k of KINDS) if (a.sizes[k]) placements.push({ ulib: a.ulib, path: u.path, kind: k, addr: a.slot[k]!.addr, size: a.slot[k]!.size });
  }
  // Write the aligned script (same objects + same map = same bytes).
  const script = generateScript({
    platform, placements, objects: ulibs.map((u) => u.path), head: measured.head,
    rodataBase: map.regions.rodata.base, dataBase: map.regions.data.base,
  });
  const plan: Plan = {
    spacer: 1, image: o.image, map: o.map, script: o.out,
    ulibs: allocations.map((a) => ({
      name: a.ulib, path: ulibs.find((u) => u.name === a.ulib)!.path, variant: a.variant,
      slots: Object.fromEntries(KINDS.filter((k) => a.sizes[k]).map((k) => [k, {
        section: outputName(k, a.ulib), addr: hex(a.slot[k]!.addr), size: hex(a.slot[k]!.size), bytes: a.sizes[k]!,
      }])),
    })),
    warnings,
  };
  writeFileAtomic(o.out, script);
  writeFileAtomic(`${o.out}.json`, JSON.stringify(plan, null, 2) + '\n');
  log(`spacer: ${o.image}: ${ulibs.length} µlibs placed (${placements.length} slots) -> ${o.out}`);
  return plan;
}
