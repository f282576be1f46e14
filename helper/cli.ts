#!/usr/bin/env node
// The `spacer` command line. Every user-caused failure prints one line, `spacer: <file>: <what>;
// <fix>`, and exits 1; anything else is a bug and prints its stack.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { SpacerError, isSpacerError } from './errors.js';
import { defaultMapPath } from './paths.js';
import { formatTimings, timed } from './util/timing.js';

// Each command imports its modules when it runs (the bundle, helper/dist/spacer.mjs, keeps them in
// chunks of their own): `spacer --help`, `map show` or `report` do not load iced-x86's WebAssembly,
// and `link` loads it only when a new variant's table has to be measured.

/** Parsed options, as the handlers read them (yargs' own types are loose here). */
interface Args {
  [k: string]: any;
}

const log = (line: string) => process.stderr.write(line + '\n');

const TIMINGS = {
  type: 'boolean',
  default: false,
  describe: 'print the milliseconds each pass took to stderr',
} as const;

function mapOption(y: any) {
  return y.option('map', {
    type: 'string',
    describe:
      'workspace map (default: $SPACER_MAP, else .spacer/map.json in this lib-spacer checkout)',
  });
}

async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('spacer')
    .parserConfiguration({ 'populate--': true })
    .usage(
      '$0 <command> [options]\n\nLays out Unikraft µlibs at page-aligned addresses shared by every image of a workspace, so KSM can merge their pages.',
    )
    .command(
      'link [objects..]',
      'place every µlib of one image in the workspace map and write the aligned linker script',
      (y) =>
        mapOption(y)
          .positional('objects', {
            type: 'string',
            array: true,
            describe: 'the per-library objects of the link (libNAME.o), in link order',
          })
          .option('image', {
            type: 'string',
            demandOption: true,
            describe: 'image name recorded in the map (e.g. CONFIG_UK_NAME)',
          })
          .option('lds', {
            type: 'string',
            demandOption: true,
            describe: "the platform's preprocessed default linker script",
          })
          .option('out', {
            type: 'string',
            demandOption: true,
            describe: 'where to write the aligned script (the plan goes to <out>.json)',
          })
          .option('aslr', {
            type: 'boolean',
            default: false,
            describe:
              "ASLR mode: shuffle the µlibs' code per build; references leaving a µlib go through its table",
          })
          .option('seed', {
            type: 'string',
            describe:
              'ASLR seed (same seed, same image); without it a fresh one is drawn and written to <out>.seed',
          })
          .option('rewrite', {
            type: 'boolean',
            default: true,
            describe:
              'redirect references that leave a µlib through its indirection table (--no-rewrite: layout only)',
          })
          .option('app', {
            type: 'string',
            describe: 'the app folder (Unikraft: A=), recorded in the map with --build',
          })
          .option('build', {
            type: 'string',
            describe: 'the build folder (Unikraft: O=); another build may not take this image name',
          })
          .option('relink', {
            type: 'string',
            describe: "the command that relinks this image, printed by 'spacer map relayout'",
          })
          .option('timings', TIMINGS)
          .example(
            '$0 link --image hello --lds build/libkvmplat/link64.lds --out build/spacer/hello.lds -- build/lib*.o',
            '',
          ),
      async (a: Args) => {
        const { placeInMap, readObjects, writeScript } = await import('./link.js');
        const { writeFileAtomic } = await import('./util/files.js');
        let aslrSeed: string | undefined;
        if (a.aslr || a.seed !== undefined) {
          const { randomBytes } = await import('node:crypto');
          aslrSeed = a.seed ? String(a.seed) : randomBytes(8).toString('hex');
          // Recorded so the build can be reproduced: SPACER_ASLR_SEED=<this> gives the same image.
          writeFileAtomic(`${a.out}.seed`, aslrSeed + '\n');
          if (!a.seed) log(`spacer: ${a.image}: ASLR seed ${aslrSeed} (written to ${a.out}.seed)`);
        }
        const times: Record<string, number> = {};
        const opts = {
          image: a.image,
          lds: a.lds,
          out: a.out,
          map: a.map ?? defaultMapPath(),
          objects: [...(a.objects ?? []), ...(a['--'] ?? [])].map(String),
          aslrSeed,
          rewrite: a.rewrite,
          log,
          ...(a.app || a.build
            ? {
                origin: {
                  app: String(a.app ?? ''),
                  build: String(a.build ?? ''),
                  ...(a.relink ? { relink: String(a.relink) } : {}),
                },
              }
            : {}),
        };
        const s = await timed(times, 'objects', () => readObjects(opts));
        s.placed = await timed(times, 'map', () => placeInMap(s));
        await timed(times, 'script', () => writeScript(s));
        if (a.timings) log(formatTimings(times));
      },
    )
    .command(
      'finish <image>',
      'post-link step on the .dbg: check every µlib sits at its slot and record the plan in the image',
      (y) =>
        y
          .positional('image', {
            type: 'string',
            demandOption: true,
            describe: 'the linked ELF64 debug image',
          })
          .option('plan', {
            type: 'string',
            demandOption: true,
            describe: "the plan 'spacer link' wrote (<script>.json)",
          })
          .option('timings', TIMINGS),
      async (a: Args) => {
        const { finish } = await import('./pipeline.js');
        const times: Record<string, number> = {};
        const r = await finish(a.image, a.plan, times);
        log(
          `spacer: ${a.image}: ${r.ulibs} µlibs at their slots${r.alreadyDone ? ' (already finished)' : ''}`,
        );
        if (r.hardened?.unplaced)
          log(
            `spacer: ${a.image}: warning: ${r.hardened.unplaced} of ${r.hardened.pages} seed-dependent pages have no room for a salt; 'spacer audit ${a.image}' names them`,
          );
        if (a.timings) log(formatTimings(times));
      },
    )
    .command(
      'compact <image>',
      'after strip: the file keeps the loaded bytes, not the padding (pack), and one section header per run of µlib sections; loaded memory unchanged',
      (y) =>
        y
          .positional('image', {
            type: 'string',
            demandOption: true,
            describe: 'the stripped ELF64 image (strip -s), before any ELF32 conversion',
          })
          .option('pack', {
            type: 'boolean',
            default: true,
            describe:
              "leave zero runs between sections out of the file (segments split, memory sizes kept; file offsets no longer page-congruent). --no-pack keeps the linker's file layout",
          })
          .option('holes', {
            type: 'boolean',
            default: false,
            describe:
              'also drop whole zero pages between µlib groups from memory (splits segments; Unikraft 0.17 then sees one-page free regions)',
          })
          .option('vmm', {
            choices: ['qemu', 'firecracker'],
            describe:
              "firecracker: then check every rule of Firecracker's ELF loader and boot " +
              "path, and that its copy gives the input's memory (else restore the input, fail)",
          })
          .option('timings', TIMINGS),
      async (a: Args) => {
        const { ElfFile } = await import('./elf.js');
        const { packImage } = await import('./pack.js');
        const { compactImage } = await import('./compact.js');
        const { writeFileAtomic } = await import('./util/files.js');
        // Refuse an ELF32 image before touching it (compaction reads ELF64 only).
        const input = ElfFile.load(a.image);
        if (input.header.class !== 64)
          throw new SpacerError(
            `${a.image}: not an ELF64 image; run 'spacer compact' on the stripped image, before any ELF32 conversion`,
          );
        const times: Record<string, number> = {};
        const p = a.pack ? await timed(times, 'pack', () => packImage(a.image)) : undefined;
        if (p && !p.alreadyPacked)
          log(
            `spacer: ${a.image}: packed, ${p.loadsBefore} -> ${p.loadsAfter} loaded segments, ${p.dropped} zero bytes out of the file, ${p.before} -> ${p.after} bytes`,
          );
        const r = await timed(times, 'compact', () => compactImage(a.image, { holes: a.holes }));
        log(
          r.alreadyCompact
            ? `spacer: ${a.image}: already compact`
            : `spacer: ${a.image}: ${r.headersBefore} -> ${r.headersAfter} section headers, ${r.holePages} zero pages out of the file, ${r.before} -> ${r.after} bytes`,
        );
        if (a.vmm === 'firecracker') {
          // The rules of helper/image/firecracker.ts, on the file as it leaves this step.
          const { checkFirecrackerImage } = await import('./image/firecracker.js');
          const problems = checkFirecrackerImage(a.image, input);
          if (problems.length) {
            writeFileAtomic(a.image, input.data);
            const more = problems.length > 3 ? `; ${problems.length - 3} more` : '';
            throw new SpacerError(
              `${a.image}: Firecracker would not load this image ` +
                `(${problems.slice(0, 3).join('; ')}${more}); the file is back as it was before ` +
                `'spacer compact'; report this (CONFIG_SPACER_NOPACK skips packing)`,
            );
          }
          log(
            `spacer: ${a.image}: Firecracker: every rule of its ELF loader and boot path ` +
              "holds, and its copy is the input's memory",
          );
        }
        if (a.timings) log(formatTimings(times));
      },
    )
    .command(
      'plan <image>',
      "print the plan an image records (.spacer.plan): each µlib's variant and addresses, ASLR seed and order",
      (y) =>
        y.positional('image', {
          type: 'string',
          demandOption: true,
          describe: 'an image linked by lib-spacer (.dbg or stripped)',
        }),
      async (a: Args) => {
        const { loadImage, readImagePlan } = await import('./report/index.js');
        const plan = readImagePlan(loadImage(a.image));
        if (!plan)
          throw new SpacerError(
            `${a.image}: no .spacer.plan section; it was not linked by lib-spacer (or not finished)`,
          );
        process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
      },
    )
    .command(
      'verify <image>',
      'prove every rewritten site of an image reaches the same targets as before the rewrite',
      (y) =>
        y.positional('image', {
          type: 'string',
          demandOption: true,
          describe: 'a rewritten ELF64 debug image',
        }),
      async (a: Args) => {
        const { verifyImage } = await import('./verify.js');
        const problems = verifyImage(a.image);
        if (problems.length) {
          for (const p of problems.slice(0, 20)) log(`spacer: ${a.image}: ${p}`);
          if (problems.length > 20) log(`spacer: ${a.image}: ... and ${problems.length - 20} more`);
          process.exitCode = 1;
        } else process.stdout.write(`${a.image}: every rewritten site verified\n`);
      },
    )
    .command(
      'audit <images..>',
      'find every page of an ASLR image that depends on the seed; fail unless it carries 64 bits of seed-derived salt',
      (y) =>
        y
          .positional('images', {
            type: 'string',
            array: true,
            demandOption: true,
            describe: 'ASLR debug images (.dbg, as spacer finish wrote them)',
          })
          .option('harden', {
            type: 'boolean',
            default: false,
            describe:
              'first salt every seed-dependent page that has no salt yet (rewrites the .dbg)',
          })
          .option('json', {
            type: 'boolean',
            default: false,
            describe: 'print the findings as JSON',
          }),
      async (a: Args) => {
        const { auditCommand } = await import('./audit/index.js');
        await auditCommand({ images: a.images, json: a.json, harden: a.harden });
      },
    )
    .command(
      'demo',
      'build the bundled example workspace in the default and Spacer layouts, boot every image under qemu, compare',
      (y) =>
        y
          .option('out', {
            type: 'string',
            describe:
              'output folder (images in <out>/<layout>/<app>.elf, figures in <out>/demo.json)',
          })
          .option('boot', {
            type: 'boolean',
            default: true,
            describe: 'boot the images under qemu (--no-boot to skip)',
          })
          .option('jobs', { type: 'number', default: 2, describe: 'qemu guests booted at once' })
          .option('timings', TIMINGS),
      async (a: Args) => {
        const { runDemo, formatDemo } = await import('./demo.js');
        const r = await runDemo({ out: a.out, boot: a.boot, jobs: a.jobs, log });
        process.stdout.write(formatDemo(r) + '\n');
        if (a.timings) log(formatTimings(r.timings));
        if (Object.values(r.layouts).some((f) => f.outputs_match === false)) {
          log(
            'spacer: demo: some image did not print what its default build prints; see the table above',
          );
          process.exitCode = 1;
        }
      },
    )
    .command(
      'report [images..]',
      'page model of a set of images (ELF64 .dbg or ELF32 multiboot): pages, distinct pages, content bound, sharing per µlib',
      (y) =>
        y
          .positional('images', {
            type: 'string',
            array: true,
            describe: 'images, each optionally IMAGE@N for N instances',
          })
          .option('json', { type: 'boolean', default: false, describe: 'print JSON for scripts' })
          .option('explain', {
            type: 'boolean',
            default: false,
            describe:
              'with Spacer images: the cause of each own page (content no other image holds); with two, also which bytes of each µlib differ and why',
          }),
      async (a: Args) => {
        const { reportCommand, explainCommand } = await import('./report/index.js');
        const images = [...(a.images ?? []), ...(a['--'] ?? [])].map(String);
        if (!images.length) throw new SpacerError('spacer report: name at least one image');
        if (a.explain) {
          if (images.length < 2)
            throw new SpacerError('spacer report --explain: name at least two images');
          process.stdout.write((await explainCommand(images, { json: a.json })) + '\n');
          return;
        }
        process.stdout.write(reportCommand(images, { json: a.json }) + '\n');
      },
    )
    .command('map', 'inspect the workspace map', (y) =>
      y
        .command(
          'show',
          'print the map: regions, slots per µlib, images',
          (yy) => mapOption(yy),
          async (a: Args) => {
            const { showMap } = await import('./mapcmd.js');
            process.stdout.write(showMap(a.map ?? defaultMapPath()) + '\n');
          },
        )
        .command(
          'check',
          'validate the map (exit 1 if it has problems)',
          (yy) => mapOption(yy),
          async (a: Args) => {
            const { checkMapFile } = await import('./mapcmd.js');
            const path = a.map ?? defaultMapPath();
            const problems = checkMapFile(path);
            if (problems.length) {
              for (const p of problems) log(`spacer: ${path}: ${p}`);
              process.exitCode = 1;
            } else process.stdout.write(`${path}: ok\n`);
          },
        )
        .command(
          'relayout',
          're-plan every slot from the images the map records (variants used by the same images packed together, most used first); lists the apps to relink',
          (yy) => mapOption(yy),
          async (a: Args) => {
            const { mapRelayout, relinkAdvice } = await import('./mapcmd.js');
            const path = a.map ?? defaultMapPath();
            const r = await mapRelayout(path);
            process.stdout.write(
              `${path}: ${r.shared} shared variants in ${r.groups} groups\n` +
                relinkAdvice(path, r.relink),
            );
          },
        )
        .command(
          'gc [forget..]',
          'drop variants that no image uses any more (and the images named)',
          (yy) =>
            mapOption(yy).positional('forget', {
              type: 'string',
              array: true,
              describe: 'images to forget first',
            }),
          async (a: Args) => {
            const { mapGc } = await import('./mapcmd.js');
            const path = a.map ?? defaultMapPath();
            const r = await mapGc(path, (a.forget ?? []).map(String));
            process.stdout.write(
              `${path}: dropped ${r.dropped.length} unused variants${r.dropped.length ? ': ' + r.dropped.join(', ') : ''}\n`,
            );
          },
        )
        .demandCommand(1, 'name a map command: show, check, relayout or gc'),
    )
    .demandCommand(1, 'name a command; see --help')
    .strict()
    .help()
    .version(false)
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`${y.help() && ''}spacer: ${msg}; see 'spacer --help'\n`);
      process.exit(2);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((e: unknown) => {
  if (isSpacerError(e)) {
    process.stderr.write(`spacer: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  throw e;
});
