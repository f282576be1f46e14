// `spacer cache ...`: the analysis cache next to the workspace map (rewrite/cache.ts): what it
// holds, and bringing it under a size.
import type { Argv } from 'yargs';
import { defaultMapPath } from '../paths.js';
import { SpacerError } from '../errors.js';
import { mapOption, type Args, type Command } from './common.js';

/** The cache folder of the map the command names (--map, else the workspace default). */
async function cacheDir(a: Args): Promise<string> {
  const { cacheDirFor } = await import('../cache/store.js');
  const map = a.map ?? defaultMapPath();
  const dir = cacheDirFor(map);
  if (!dir) throw new SpacerError(`SPACER_CACHE=${process.env.SPACER_CACHE}: the cache is off`);
  return dir;
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

const show: Command = {
  command: 'show',
  describe: 'print what the cache holds: entries and bytes per kind',
  builder: mapOption,
  handler: async (a) => {
    const { cacheSummary, cacheLimit } = await import('../cache/store.js');
    const dir = await cacheDir(a);
    const s = cacheSummary(dir);
    const lines = [`${dir}: ${s.entries} entries, ${mib(s.bytes)} (limit ${mib(cacheLimit())})`];
    for (const [kind, k] of Object.entries(s.kinds))
      lines.push(`  ${kind.padEnd(9)} ${String(k.entries).padStart(7)} entries  ${mib(k.bytes)}`);
    process.stdout.write(lines.join('\n') + '\n');
  },
};

const gc: Command = {
  command: 'gc',
  describe:
    'remove the least recently used entries until the cache is under its limit (and leftovers of killed builds)',
  builder: (y: Argv) =>
    mapOption(y).option('max-mb', {
      type: 'number',
      describe: 'the limit in MiB (default: $SPACER_CACHE_MB, else 256); 0 empties the cache',
    }),
  handler: async (a) => {
    const { gcCache, cacheLimit } = await import('../cache/store.js');
    const dir = await cacheDir(a);
    const max = a.maxMb;
    if (max !== undefined && !(Number(max) >= 0))
      throw new SpacerError(`--max-mb ${String(max)}: give a number of MiB, 0 or more`);
    const r = gcCache(dir, max === undefined ? cacheLimit() : Number(max) * 1048576);
    process.stdout.write(
      `${dir}: removed ${r.removed} entries (${mib(r.removedBytes)}), kept ${r.entries} (${mib(r.bytes)})\n`,
    );
  },
};

export const cacheCommand: Command = {
  command: 'cache',
  describe: 'the analysis cache next to the map (reused by spacer finish)',
  builder: (y) => y.command(show).command(gc).demandCommand(1, 'name a cache command: show or gc'),
  handler: () => {},
};
