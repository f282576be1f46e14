// `spacer map ...`: inspect and maintain the workspace map (the allocator every image obeys).
import type { Argv } from 'yargs';
import { defaultMapPath } from '../paths.js';
import { log, mapOption, type Args, type Command } from './common.js';

/** A map command: its handler gets the map's path (--map, else the workspace default). */
const mapCommandOf = (
  command: string,
  describe: string,
  run: (path: string, a: Args) => Promise<void>,
  builder: (y: Argv) => Argv = mapOption,
): Command => ({
  command,
  describe,
  builder,
  handler: (a) => run(a.map ?? defaultMapPath(), a),
});

const show = mapCommandOf(
  'show',
  'print the map: regions, slots per µlib, images',
  async (path) => {
    const { showMap } = await import('../mapcmd.js');
    process.stdout.write(showMap(path) + '\n');
  },
);

const check = mapCommandOf(
  'check',
  'validate the map (exit 1 if it has problems)',
  async (path) => {
    const { checkMapFile } = await import('../mapcmd.js');
    const problems = checkMapFile(path);
    for (const p of problems) log(`spacer: ${path}: ${p}`);
    if (problems.length) process.exitCode = 1;
    else process.stdout.write(`${path}: ok\n`);
  },
);

const relayout = mapCommandOf(
  'relayout',
  're-plan every slot from the images the map records (variants used by the same images ' +
    'packed together, most used first); lists the apps to relink',
  async (path) => {
    const { mapRelayout, relinkAdvice } = await import('../mapcmd.js');
    const r = await mapRelayout(path);
    const head = `${path}: ${r.shared} shared variants in ${r.groups} groups\n`;
    process.stdout.write(head + relinkAdvice(path, r.relink));
  },
);

const gc = mapCommandOf(
  'gc [forget..]',
  'drop variants that no image uses any more (and the images named)',
  async (path, a) => {
    const { mapGc } = await import('../mapcmd.js');
    const r = await mapGc(path, (a.forget ?? []).map(String));
    const names = r.dropped.length ? ': ' + r.dropped.join(', ') : '';
    process.stdout.write(`${path}: dropped ${r.dropped.length} unused variants${names}\n`);
  },
  (y) =>
    mapOption(y).positional('forget', {
      type: 'string',
      array: true,
      describe: 'images to forget first',
    }),
);

export const mapCommand: Command = {
  command: 'map',
  describe: 'inspect the workspace map',
  builder: (y) =>
    y
      .command(show)
      .command(check)
      .command(relayout)
      .command(gc)
      .demandCommand(1, 'name a map command: show, check, relayout or gc'),
  handler: () => {},
};
