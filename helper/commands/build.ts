// The commands make runs around ld: `link` before it (objects → map → script), `finish` after it
// on the .dbg (layout check → rewrite → verify → harden → record), `compact` on the stripped image.
import { readFileSync, writeFileSync } from 'node:fs';
import type { ElfFile } from '../elf.js';
import { SpacerError } from '../errors.js';
import { defaultMapPath } from '../paths.js';
import { formatTimings, timed } from '../util/timing.js';
import { fileList, imageArg, log, mapOption, TIMINGS, type Args, type Command } from './common.js';

export const linkCommand: Command = {
  command: 'link [objects..]',
  describe:
    'place every µlib of one image in the workspace map and write the aligned linker script',
  builder: (y) =>
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
          "ASLR mode: shuffle the µlibs' code per build; references leaving a µlib go through " +
          'its table',
      })
      .option('seed', {
        type: 'string',
        describe:
          'ASLR seed (same seed, same image); without it a fresh one is drawn and written to ' +
          '<out>.seed',
      })
      .option('rewrite', {
        type: 'boolean',
        default: true,
        describe:
          'redirect references that leave a µlib through its indirection table (--no-rewrite: ' +
          'layout only)',
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
        '$0 link --image hello --lds build/libkvmplat/link64.lds ' +
          '--out build/spacer/hello.lds -- build/lib*.o',
        '',
      ),
  handler: async (a) => {
    const { placeInMap, readObjects, writeScript } = await import('../link.js');
    const times: Record<string, number> = {};
    const opts = {
      image: a.image,
      lds: a.lds,
      out: a.out,
      map: a.map ?? defaultMapPath(),
      objects: fileList(a, 'objects'),
      aslrSeed: await aslrSeed(a),
      rewrite: a.rewrite,
      log,
      ...(a.app || a.build ? { origin: origin(a) } : {}),
    };
    const s = await timed(times, 'objects', () => readObjects(opts));
    s.placed = await timed(times, 'map', () => placeInMap(s));
    await timed(times, 'script', () => writeScript(s));
    // What it added to the cache (objects read, table sizes) counts towards its bound.
    const { trimCache } = await import('../cache/store.js');
    await timed(times, 'trim', () => trimCache());
    if (a.timings) log(formatTimings(times));
  },
};

/** The ASLR seed of a link: given, or drawn and written to <out>.seed to redo the build. */
/** The text of `file`, or undefined when it cannot be read. */
function readOr(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

async function aslrSeed(a: Args): Promise<string | undefined> {
  if (!a.aslr && a.seed === undefined) return undefined;
  const { randomBytes } = await import('node:crypto');
  const { writeFileAtomic } = await import('../util/files.js');
  const seed = a.seed ? String(a.seed) : randomBytes(8).toString('hex');
  // SPACER_ASLR_SEED=<this> gives the same image. A relink with a fixed seed finds it there
  // already (a new file costs a fifth of a millisecond); nothing in make reads its time.
  const file = `${a.out}.seed`;
  if (readOr(file) !== seed + '\n') writeFileAtomic(file, seed + '\n', 'product');
  if (!a.seed) log(`spacer: ${a.image}: ASLR seed ${seed} (written to ${a.out}.seed)`);
  return seed;
}

/** Where the image was built, for the map (relayout prints how to relink it). */
const origin = (a: Args) => ({
  app: String(a.app ?? ''),
  build: String(a.build ?? ''),
  ...(a.relink ? { relink: String(a.relink) } : {}),
});

export const finishCommand: Command = {
  command: 'finish <image>',
  describe:
    'post-link step on the .dbg: layout check, rewrite, verify, harden, record (the image is replaced atomically); reuses the cache next to the map',
  builder: (y) =>
    imageArg(y, 'the linked ELF64 debug image')
      .option('plan', {
        type: 'string',
        demandOption: true,
        describe: "the plan 'spacer link' wrote (<script>.json)",
      })
      .option('cache', {
        type: 'boolean',
        default: true,
        describe:
          'keep and reuse analyses, rewrites and proofs next to the map (--no-cache: decode and prove everything; also SPACER_CACHE=off)',
      })
      .option('precompact', {
        type: 'string',
        describe:
          'also strip and compact into <build>/spacer/<IMAGE>.compact, for the image rule to take (Linker.uk)',
      })
      .option('strip-cmd', {
        type: 'string',
        describe: "with --precompact: the image rule's strip command (input and -o OUT appended)",
      })
      .option('pack', { type: 'boolean', default: true, describe: 'with --precompact: as compact' })
      .option('holes', {
        type: 'boolean',
        default: false,
        describe: 'with --precompact: as compact',
      })
      .option('vmm', {
        choices: ['qemu', 'firecracker'],
        describe: 'with --precompact: as compact',
      })
      .option('stamp', {
        type: 'string',
        describe:
          "when it succeeds, write this file (make's stamp of the finished image; no touch)",
      })
      .option('timings', TIMINGS),
  handler: async (a) => {
    const { finish } = await import('../pipeline.js');
    const times: Record<string, number> = {};
    const r = await finish(a.image, a.plan, times, a.cache);
    const again = r.alreadyDone ? ' (already finished)' : '';
    log(`spacer: ${a.image}: ${r.ulibs} µlibs at their slots${again}`);
    for (const [ulib, n] of r.moved ?? [])
      log(
        `spacer: ${a.image}: ${ulib}: ${n} more instruction${n > 1 ? 's differ' : ' differs'} from its first ` +
          `variant without a relocation (the image name's length); its table takes them from the ` +
          `next link: relink the images linked before to share its code pages again`,
      );
    if (r.hardened?.unplaced)
      log(
        `spacer: ${a.image}: warning: ${r.hardened.unplaced} of ${r.hardened.pages} ` +
          `seed-dependent pages have no room for a salt; 'spacer audit ${a.image}' names them`,
      );
    if (a.precompact) {
      const { precompact, DEFAULT_STRIP } = await import('../precompact.js');
      const o = { pack: a.pack, holes: a.holes, vmm: a.vmm };
      await timed(times, 'precompact', () =>
        precompact(a.image, a.precompact!, a.stripCmd ?? DEFAULT_STRIP, o, (path, say) =>
          compactFile(path, o, {}, a.precompact!, say),
        ),
      );
    }
    // Last: the stamp says the whole finish succeeded (make runs no `touch` for it).
    if (a.stamp)
      try {
        writeFileSync(a.stamp, '');
      } catch (e) {
        throw new SpacerError(
          `${a.stamp}: cannot write the stamp (${(e as NodeJS.ErrnoException).code ?? e}); ` +
            'check that its folder exists and is writable (the image itself is finished)',
        );
      }
    if (a.timings) {
      log(formatTimings(times));
      const { cacheUse } = await import('../cache/store.js');
      if (cacheUse.dir)
        log(
          `spacer: cache: ${cacheUse.hits} analyses reused, ${cacheUse.misses} decoded (${cacheUse.dir})`,
        );
    }
  },
};

export const compactCommand: Command = {
  command: 'compact <image>',
  describe:
    'after strip: the file keeps the loaded bytes, not the padding (pack), and one section ' +
    'header per run of µlib sections; loaded memory unchanged',
  builder: (y) =>
    imageArg(y, 'the stripped ELF64 image (strip -s), before any ELF32 conversion')
      .option('pack', {
        type: 'boolean',
        default: true,
        describe:
          'leave zero runs between sections out of the file (segments split, memory sizes ' +
          "kept; file offsets no longer page-congruent). --no-pack keeps the linker's file layout",
      })
      .option('holes', {
        type: 'boolean',
        default: false,
        describe:
          'also drop whole zero pages between µlib groups from memory (splits segments; ' +
          'Unikraft 0.17 then sees one-page free regions)',
      })
      .option('vmm', {
        choices: ['qemu', 'firecracker'],
        describe:
          "firecracker: then check every rule of Firecracker's ELF loader and boot " +
          "path, and that its copy gives the input's memory (else restore the input, fail)",
      })
      .option('timings', TIMINGS),
  handler: async (a) => {
    const times: Record<string, number> = {};
    await compactFile(a.image, { pack: a.pack, holes: a.holes, vmm: a.vmm }, times);
    if (a.timings) log(formatTimings(times));
  },
};

/** What `spacer compact` does to the file (and `spacer finish --precompact` ahead of strip). */
export interface CompactOptions {
  pack: boolean;
  holes: boolean;
  vmm?: string;
}

/**
 * Packs and compacts the stripped image `image` in place; `shown` is the name the lines it logs
 * give (the image the build will have, when this runs on a copy).
 */
export async function compactFile(
  image: string,
  o: CompactOptions,
  times: Record<string, number>,
  shown = image,
  say: (line: string) => void = log,
): Promise<void> {
  const { ElfFile } = await import('../elf.js');
  const { packImage } = await import('../pack.js');
  const { compactImage } = await import('../compact.js');
  const { writeFileAtomic } = await import('../util/files.js');
  // Refuse an ELF32 image before touching it (compaction reads ELF64 only).
  const input = ElfFile.load(image);
  if (input.header.class !== 64)
    throw new SpacerError(
      `${shown}: not an ELF64 image; run 'spacer compact' on the stripped image, ` +
        'before any ELF32 conversion',
    );
  // Read once, packed and compacted in memory, written once (the bytes of the two steps on disk).
  const w = { write: false };
  const p = o.pack
    ? await timed(times, 'pack', () => packImage(image, { ...w, elf: input }))
    : undefined;
  if (p && !p.alreadyPacked)
    say(
      `spacer: ${shown}: packed, ${p.loadsBefore} -> ${p.loadsAfter} loaded segments, ` +
        `${p.dropped} zero bytes out of the file, ${p.before} -> ${p.after} bytes`,
    );
  const packed = p && !p.alreadyPacked ? new ElfFile(image, p.file) : input;
  const r = await timed(times, 'compact', () =>
    compactImage(image, { ...w, holes: o.holes, elf: packed }),
  );
  // A build product: replaced whole, not synced (util/files.ts).
  if (r.file !== input.data) writeFileAtomic(image, r.file, 'product');
  say(
    r.alreadyCompact
      ? `spacer: ${shown}: already compact`
      : `spacer: ${shown}: ${r.headersBefore} -> ${r.headersAfter} section headers, ` +
          `${r.holePages} zero pages out of the file, ${r.before} -> ${r.after} bytes`,
  );
  if (o.vmm === 'firecracker') await checkFirecracker(image, input, shown, say);
}

/**
 * The rules of helper/image/firecracker.ts, on the file as it leaves `compact`: on a problem the
 * input is put back and the command fails.
 */
async function checkFirecracker(
  image: string,
  input: ElfFile,
  shown: string,
  say: (line: string) => void,
): Promise<void> {
  const { checkFirecrackerImage } = await import('../image/firecracker.js');
  const { writeFileAtomic } = await import('../util/files.js');
  const problems = checkFirecrackerImage(image, input);
  if (problems.length) {
    writeFileAtomic(image, input.data, 'product');
    const more = problems.length > 3 ? `; ${problems.length - 3} more` : '';
    throw new SpacerError(
      `${shown}: Firecracker would not load this image ` +
        `(${problems.slice(0, 3).join('; ')}${more}); the file is back as it was before ` +
        `'spacer compact'; report this (CONFIG_SPACER_NOPACK skips packing)`,
    );
  }
  say(
    `spacer: ${shown}: Firecracker: every rule of its ELF loader and boot ` +
      "path holds, and its copy is the input's memory",
  );
}
