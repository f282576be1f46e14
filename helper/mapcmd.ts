// `spacer map show|check`: the workspace map, for people.
import { existsSync } from 'node:fs';
import { SpacerError } from './errors.js';
import { KINDS, checkMap, hex, parseMapFile, readMap, type SpacerMap } from './map.js';

function kib(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
}

export function loadForShow(path: string): SpacerMap {
  if (!existsSync(path)) throw new SpacerError(`${path}: no map yet; it is created by the first link with CONFIG_SPACER (or 'spacer link')`);
  const m = readMap(path);
  return m!;
}

export function showMap(path: string): string {
  const m = loadForShow(path);
  const lines: string[] = [];
  lines.push(`map ${path} (schema ${m.schema})`);
  lines.push(`text base ${hex(m.text_base)}, boot head ${kib(m.head)}, slot headroom ${m.headroom_pct}%`);
  lines.push('');
  lines.push('region   base        end         used');
  for (const k of KINDS) {
    const r = m.regions[k];
    lines.push(`${k.padEnd(8)} ${hex(r.base).padEnd(11)} ${hex(r.end).padEnd(11)} ${kib(r.next - r.base)} of ${kib(r.end - r.base)}`);
  }
  lines.push('');
  lines.push('µlib                       slot  variants  ' + KINDS.map((k) => k.padEnd(22)).join(''));
  for (const name of Object.keys(m.ulibs).sort()) {
    m.ulibs[name].slots.forEach((s, i) => {
      const cols = KINDS.map((k) => (s[k] ? `${hex(s[k]!.addr)}+${kib(s[k]!.size)}` : '-').padEnd(22)).join('');
      lines.push(`${(i ? '' : name).padEnd(26)} ${String(i).padStart(4)}  ${String(s.variants.length).padStart(8)}  ${cols}`);
    });
  }
  lines.push('');
  lines.push(`images (${Object.keys(m.images).length}):`);
  for (const name of Object.keys(m.images).sort()) lines.push(`  ${name}: ${Object.keys(m.images[name].ulibs).length} µlibs`);
  return lines.join('\n');
}

/** Validates the map; returns every problem (an unreadable map throws one clear error). */
export function checkMapFile(path: string): string[] {
  const m = parseMapFile(path);
  if (!m) throw new SpacerError(`${path}: no map to check`);
  return checkMap(m);
}
