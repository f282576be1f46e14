// `spacer map ...`: inspect and maintain the workspace map (the allocator every image obeys).
import { defaultMapPath } from '../paths.js';
import { log, mapOption, type Args, type Command } from './common.js';

const mapPath = (a: Args): string => a.map ?? defaultMapPath();

const showCommand: Command = {
  command: 'show',
  describe: 'print the map: regions, slots per µlib, images',
  builder: mapOption,
  handler: async (a) => {
    const { showMap } = await import('../mapcmd.js');
    process.stdout.write(showMap(mapPath(a)) + '\n');
  },
};

const checkCommand: Command = {
  command: 'check',
  describe: 'validate the map (exit 1 if it has problems)',
  builder: mapOption,
  handler: async (a) => {
    const { checkMapFile } = await import('../mapcmd.js');
    const path = mapPath(a);
    const problems = checkMapFile(path);
    for (const p of problems) log(`spacer: ${path}: ${p}`);
    if (problems.length) process.exitCode = 1;
    else process.stdout.write(`${path}: ok\n`);
  },
};

const relayoutCommand: Command = {
  command: 'relayout',
  describe:
    're-plan every slot from the images the map records (variants used by the same images ' +
    'packed together, most used first); lists the apps to relink',
  builder: mapOption,
  handler: async (a) => {
    const { mapRelayout, relinkAdvice } = await import('../mapcmd.js');
    const path = mapPath(a);
    const r = await mapRelayout(path);
    const head = `${path}: ${r.shared} shared variants in ${r.groups} groups\n`;
    process.stdout.write(head + relinkAdvice(path, r.relink));
  },
};

const gcCommand: Command = {
  command: 'gc [forget..]',
  describe: 'drop variants that no image uses any more (and the images named)',
  builder: (y) =>
    mapOption(y).positional('forget', {
      type: 'string',
      array: true,
      describe: 'images to forget first',
    }),
  handler: async (a) => {
    const { mapGc } = await import('../mapcmd.js');
    const path = mapPath(a);
    const r = await mapGc(path, (a.forget ?? []).map(String));
    const names = r.dropped.length ? ': ' + r.dropped.join(', ') : '';
    process.stdout.write(`${path}: dropped ${r.dropped.length} unused variants${names}\n`);
  },
};

export const mapCommand: Command = {
  command: 'map',
  describe: 'inspect the workspace map',
  builder: (y) =>
    y
      .command(showCommand)
      .command(checkCommand)
      .command(relayoutCommand)
      .command(gcCommand)
      .demandCommand(1, 'name a map command: show, check, relayout or gc'),
  handler: () => {},
};
