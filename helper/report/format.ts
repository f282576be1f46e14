// The report as text for people.
import type { ImageReport, Report } from './types.js';

export interface FormatOptions {
  /** Print the pairwise table (default true). */
  pairs?: boolean;
  /** Print the per-µlib sharing lines (default true). */
  ulibs?: boolean;
}

export function table(rows: string[][], right: boolean[]): string[] {
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (right[c] ? cell.padStart(w[c]) : cell.padEnd(w[c])))
      .join('  ')
      .trimEnd(),
  );
}

function imageTable(images: ImageReport[]): string[] {
  const rows = [['image', 'instances', 'pages', 'non-zero', 'zero', 'own', 'format', 'layout']];
  for (const i of images) {
    const layout = i.ulibs
      ? `${i.spacer_plan ? 'spacer' : 'per-µlib sections, no plan'}, ${i.ulibs.length} µlibs`
      : i.spacer_plan
        ? 'spacer, no µlib sections'
        : 'default';
    rows.push([
      i.name,
      String(i.instances),
      String(i.pages),
      String(i.nonzero_pages),
      String(i.zero_pages),
      String(i.own_pages),
      i.format,
      layout,
    ]);
  }
  return table(rows, [false, true, true, true, true, true, false, false]);
}

function totals(r: Report): string[] {
  const L =
    r.content_bound_pages === null
      ? `n/a: ${r.content_bound_note ?? 'not computed'}`
      : `${r.content_bound_pages} pages (${r.content_bound_bytes ?? '?'} bytes)${r.content_bound_note ? ` (${r.content_bound_note})` : ''}`;
  return table(
    [
      [
        'pages without sharing (P)',
        `${r.pages} (${r.instances} instance${r.instances === 1 ? '' : 's'})`,
      ],
      ['distinct non-zero pages (D)', String(r.distinct_pages)],
      ['zero pages', String(r.zero_pages)],
      ['content bound (L)', L],
      ['page floor (L_pg)', r.page_floor_pages === null ? 'n/a' : `${r.page_floor_pages} pages`],
      ['D/L', r.d_over_l === null ? 'n/a' : r.d_over_l.toFixed(2)],
      [
        'own pages',
        `${r.own_pages} (${r.own_pages_per_image.toFixed(2)} per image; content no other image holds)`,
      ],
    ],
    [false, false],
  );
}

function pairLines(r: Report): string[] {
  const byName = new Map(r.images.map((i) => [i.name, i]));
  return [
    '',
    'pairwise: non-zero pages of one image whose content occurs in the other',
    ...table(
      r.pairs.map((p) => [
        `  ${p.a} ~ ${p.b}`,
        `${p.shared_nonzero_pages}/${byName.get(p.a)!.nonzero_pages} of ${p.a}`,
        `${p.shared_nonzero_pages_of_b}/${byName.get(p.b)!.nonzero_pages} of ${p.b}`,
      ]),
      [false, true, true],
    ),
  ];
}

function ulibLines(r: Report): string[] {
  const out = [
    '',
    'per µlib: its pages, and its non-zero pages found byte-identical in each other image',
  ];
  for (const i of r.images) {
    if (!i.ulibs?.length) continue;
    out.push(`${i.name}:`);
    out.push(
      ...table(
        i.ulibs.map((u) => [
          `  ${u.name}`,
          `${u.pages} page${u.pages === 1 ? '' : 's'}${u.zero_pages ? ` (${u.zero_pages} zero)` : ''}`,
          u.shared.length
            ? `shared: ${u.shared.map((s) => `${s.image} ${s.pages}/${u.nonzero_pages}`).join(', ')}`
            : '',
        ]),
        [false, false, false],
      ),
    );
  }
  return out;
}

export function formatReport(r: Report, opts: FormatOptions = {}): string {
  const out: string[] = [...imageTable(r.images), '', ...totals(r)];
  if (r.pairs_note) out.push('', r.pairs_note);
  if ((opts.pairs ?? true) && r.pairs.length) out.push(...pairLines(r));
  if ((opts.ulibs ?? true) && r.images.some((i) => i.ulibs?.length)) out.push(...ulibLines(r));
  return out.join('\n');
}
