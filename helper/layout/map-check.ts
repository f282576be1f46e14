// The map's consistency rules: what a map may not hold even when it parses (overlaps,
// misalignment, slots outside their regions, images naming unknown variants).
import { SpacerError } from '../errors.js';
import { PAGE, hex } from '../util/units.js';
import { AREAS, type Extent, type SpacerMap, type VariantEntry } from './map-types.js';

/** Problems a map can have even when it parses: overlaps, misalignment, slots outside regions. */
export function checkMap(m: SpacerMap): string[] {
  const issues: string[] = [];
  for (const k of AREAS) {
    const r = m.regions[k];
    // The table and code regions start mid-page (after the boot head, or the table region after the
    // shared code); the others on pages.
    if (k !== 'ind' && k !== 'text' && (r.base % PAGE || r.end % PAGE))
      issues.push(`region ${k} is not page-aligned`);
    if (r.next < r.base || r.next > r.end)
      issues.push(`region ${k}: next ${hex(r.next)} outside ${hex(r.base)}..${hex(r.end)}`);
    const used: { name: string; e: Extent }[] = [];
    for (const [name, u] of Object.entries(m.ulibs)) {
      for (const [h, v] of Object.entries(u.variants))
        if (v.slot?.[k]) used.push({ name: `${name} (${h})`, e: v.slot[k]! });
      if (u.slot?.[k]) used.push({ name: `${name} (per-image variants)`, e: u.slot[k]! });
    }
    used.sort((a, b) => a.e.addr - b.e.addr);
    let prev: { name: string; e: Extent } | undefined;
    for (const cur of used) {
      const inText =
        k === 'ind' &&
        cur.e.addr >= m.regions.text.base &&
        cur.e.addr + cur.e.size <= m.regions.text.next;
      if (!inText && (cur.e.addr < r.base || cur.e.addr + cur.e.size > r.next))
        issues.push(
          `${cur.name}: ${k} slot ${hex(cur.e.addr)}+${hex(cur.e.size)} outside the allocated part of region ${k}`,
        );
      if (prev && prev.e.addr + prev.e.size > cur.e.addr)
        issues.push(`${cur.name}: ${k} slot overlaps ${prev.name}`);
      prev = cur;
    }
  }
  // The table region comes before the code (a fresh map) or, once relaid out, inside the code
  // region's allocated part, after the shared code, where no code slot may overlap it.
  const ind = m.regions.ind,
    text = m.regions.text;
  if (ind.end > text.base) {
    if (ind.base < text.base || ind.end > text.next) issues.push('region ind overlaps region text');
    for (const [name, u] of Object.entries(m.ulibs)) {
      for (const e of [...Object.values(u.variants).map((v) => v.slot?.text), u.slot?.text]) {
        if (e && e.addr < ind.end && e.addr + e.size > ind.base)
          issues.push(`${name}: text slot ${hex(e.addr)}+${hex(e.size)} overlaps the table region`);
      }
    }
  }
  for (let i = 2; i < AREAS.length; i++) {
    if (m.regions[AREAS[i - 1]].end > m.regions[AREAS[i]].base)
      issues.push(`region ${AREAS[i]} overlaps the region before it`);
  }
  if (m.text_base + m.head > m.regions.ind.base)
    issues.push('the boot head overlaps the table region');
  const listed = new Map<VariantEntry, Set<string>>();
  for (const [iname, im] of Object.entries(m.images)) {
    for (const [u, v] of Object.entries(im.ulibs)) {
      const e = m.ulibs[u]?.variants[v];
      if (!e) issues.push(`image ${iname} uses unknown variant ${v} of ${u}`);
      else {
        let names = listed.get(e);
        if (!names) listed.set(e, (names = new Set(e.images)));
        if (!names.has(iname)) issues.push(`variant ${v} of ${u} does not list image ${iname}`);
      }
    }
  }
  return issues;
}

/** One error line naming the map when checkMap finds anything. */
export function assertConsistent(path: string, m: SpacerMap): void {
  const issues = checkMap(m);
  if (issues.length)
    throw new SpacerError(
      `${path}: inconsistent map (${issues[0]}${issues.length > 1 ? `, and ${issues.length - 1} more` : ''}); run 'spacer map check' for all, then fix or delete the map`,
    );
}
