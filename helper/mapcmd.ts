// `spacer map show|check`: the workspace map, for people.
import { existsSync } from 'node:fs';
import { SpacerError } from './errors.js';
import { checkMap } from './layout/map-check.js';
import { loadWhole, readMap } from './layout/map-store.js';
import { updateMap } from './layout/map-lock.js';
import { AREAS, type SpacerMap } from './layout/map-types.js';
import { gc, relayout, type RelayoutResult } from './layout/relayout.js';
import { hex } from './util/units.js';

function kib(n: number): string {
  return n >= 1 << 20
    ? `${(n / (1 << 20)).toFixed(1)} MiB`
    : `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
}

export function loadForShow(path: string): SpacerMap {
  if (!existsSync(path))
    throw new SpacerError(
      `${path}: no map yet; it is created by the first link with CONFIG_SPACER (or 'spacer link')`,
    );
  const m = readMap(path);
  return m!;
}

export function showMap(path: string): string {
  const m = loadForShow(path);
  const lines: string[] = [];
  lines.push(`map ${path} (schema ${m.schema})`);
  lines.push(`text base ${hex(m.text_base)}, boot head ${kib(m.head)}`);
  lines.push('');
  lines.push('region   base        end         slots use');
  for (const k of AREAS) {
    const r = m.regions[k];
    lines.push(
      `${k.padEnd(8)} ${hex(r.base).padEnd(11)} ${hex(r.end).padEnd(11)} ${kib(r.next - r.base)} of ${kib(r.end - r.base)}`,
    );
  }
  lines.push('');
  lines.push(
    'µlib                       variant           images  ' +
      AREAS.map((k) => k.padEnd(20)).join(''),
  );
  for (const name of Object.keys(m.ulibs).sort()) {
    for (const [h, v] of Object.entries(m.ulibs[name].variants)) {
      const cols = AREAS.map((k) =>
        (v.slot?.[k]
          ? `${hex(v.slot[k]!.addr)}+${v.slot[k]!.size}`
          : v.sizes[k]
            ? `own area ${v.sizes[k]}`
            : '-'
        ).padEnd(20),
      ).join('');
      lines.push(`${name.padEnd(26)} ${h}  ${String(v.images.length).padStart(6)}  ${cols}`);
    }
    const ns = m.ulibs[name].slot;
    if (ns) {
      const cols = AREAS.map((k) =>
        (ns[k] ? `${hex(ns[k]!.addr)}+${ns[k]!.size}` : '-').padEnd(20),
      ).join('');
      lines.push(`${name.padEnd(26)} ${'name slot'.padEnd(16)}  ${''.padStart(6)}  ${cols}`);
    }
  }
  lines.push('');
  lines.push(`images (${Object.keys(m.images).length}):`);
  for (const name of Object.keys(m.images).sort()) {
    const o = m.images[name].origin;
    lines.push(
      `  ${name}: ${Object.keys(m.images[name].ulibs).length} µlibs${o ? `, built in ${o.build} (app ${o.app})` : ''}`,
    );
  }
  lines.push('');
  lines.push(
    'A variant used by one image lives in that image\'s own area ("own area"); it gets a stable slot when a second image uses it.',
  );
  lines.push(
    'A µlib that images use in variants of their own (built per app) has a "name slot": each such variant sits there, at the same address in every image.',
  );
  return lines.join('\n');
}

/** Validates the map; returns every problem (an unreadable map throws one clear error). */
export function checkMapFile(path: string): string[] {
  const st = loadWhole(path);
  if (!st) throw new SpacerError(`${path}: no map to check`);
  return [...checkMap(st.map), ...(st.issues ?? [])];
}

/** `spacer map relayout`, under the lock; the map lands atomically. */
export async function mapRelayout(path: string): Promise<RelayoutResult> {
  loadForShow(path);
  return updateMap(
    path,
    () => {
      throw new SpacerError(`${path}: no map`);
    },
    (m) => relayout(m, path),
  );
}

/**
 * What `spacer map relayout` says about the images it moved: for each, the command that relinks it
 * (recorded by the Unikraft glue at its last link), else where it was built.
 */
export function relinkAdvice(path: string, images: readonly string[]): string {
  if (!images.length) return 'no image needs a relink\n';
  const m = loadForShow(path);
  const lines = [
    `relink ${images.length === 1 ? 'this image' : `these ${images.length} images`} to use the new layout:`,
  ];
  for (const name of images) {
    const o = m.images[name]?.origin;
    if (o?.relink) lines.push(`  ${name}: ${o.relink}`);
    else if (o)
      lines.push(`  ${name}: run make again for the app in ${o.app} (build folder ${o.build})`);
    else lines.push(`  ${name}: (no build folder recorded) rebuild it as you built it`);
  }
  return lines.join('\n') + '\n';
}

/** `spacer map gc`, under the lock. */
export async function mapGc(path: string, forget: string[]): Promise<{ dropped: string[] }> {
  loadForShow(path);
  return updateMap(
    path,
    () => {
      throw new SpacerError(`${path}: no map`);
    },
    (m) => {
      for (const f of forget)
        if (!m.images[f])
          throw new SpacerError(
            `${path}: no image named ${f} in the map; 'spacer map show' lists them`,
          );
      return gc(m, forget);
    },
  );
}
