// The commands that read images: what one records (`plan`), whether its rewrite holds (`verify`),
// whether its seed-dependent pages are salted (`audit`), what a set of them shares (`report`),
// and the demo that builds, boots and compares the example workspace.
import { SpacerError } from '../errors.js';
import { formatTimings } from '../util/timing.js';
import { fileList, imageArg, log, TIMINGS, type Command } from './common.js';

export const planCommand: Command = {
  command: 'plan <image>',
  describe:
    "print the plan an image records (.spacer.plan): each µlib's variant and addresses, " +
    'ASLR seed and order',
  builder: (y) => imageArg(y, 'an image linked by lib-spacer (.dbg or stripped)'),
  handler: async (a) => {
    const { loadImage, readImagePlan } = await import('../report/index.js');
    const plan = readImagePlan(loadImage(a.image));
    if (!plan)
      throw new SpacerError(
        `${a.image}: no .spacer.plan section; it was not linked by lib-spacer (or not finished)`,
      );
    process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
  },
};

export const verifyCommand: Command = {
  command: 'verify <image>',
  describe: 'prove every rewritten site of an image reaches the same targets as before the rewrite',
  builder: (y) => imageArg(y, 'a rewritten ELF64 debug image'),
  handler: async (a) => {
    const { verifyImage } = await import('../verify.js');
    const problems = verifyImage(a.image);
    if (!problems.length) {
      process.stdout.write(`${a.image}: every rewritten site verified\n`);
      return;
    }
    for (const p of problems.slice(0, 20)) log(`spacer: ${a.image}: ${p}`);
    if (problems.length > 20) log(`spacer: ${a.image}: ... and ${problems.length - 20} more`);
    process.exitCode = 1;
  },
};

export const auditCommand: Command = {
  command: 'audit <images..>',
  describe:
    'find every page of an ASLR image that depends on the seed; fail unless it carries 64 bits ' +
    'of seed-derived salt',
  builder: (y) =>
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
        describe: 'first salt every seed-dependent page that has no salt yet (rewrites the .dbg)',
      })
      .option('json', { type: 'boolean', default: false, describe: 'print the findings as JSON' }),
  handler: async (a) => {
    const audit = await import('../audit/index.js');
    await audit.auditCommand({ images: a.images, json: a.json, harden: a.harden });
  },
};

export const demoCommand: Command = {
  command: 'demo',
  describe:
    'build the bundled example workspace in the default and Spacer layouts, boot every image ' +
    'under qemu, compare',
  builder: (y) =>
    y
      .option('out', {
        type: 'string',
        describe: 'output folder (images in <out>/<layout>/<app>.elf, figures in <out>/demo.json)',
      })
      .option('boot', {
        type: 'boolean',
        default: true,
        describe: 'boot the images under qemu (--no-boot to skip)',
      })
      .option('jobs', { type: 'number', default: 2, describe: 'qemu guests booted at once' })
      .option('timings', TIMINGS),
  handler: async (a) => {
    const { runDemo, formatDemo } = await import('../demo.js');
    const r = await runDemo({ out: a.out, boot: a.boot, jobs: a.jobs, log });
    process.stdout.write(formatDemo(r) + '\n');
    if (a.timings) log(formatTimings(r.timings));
    if (Object.values(r.layouts).some((f) => f.outputs_match === false)) {
      log(
        'spacer: demo: some image did not print what its default build prints; ' +
          'see the table above',
      );
      process.exitCode = 1;
    }
  },
};

export const reportCommand: Command = {
  command: 'report [images..]',
  describe:
    'page model of a set of images (ELF64 .dbg or ELF32 multiboot): pages, distinct pages, ' +
    'content bound, sharing per µlib',
  builder: (y) =>
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
          'with Spacer images: the cause of each own page (content no other image holds); ' +
          'with two, also which bytes of each µlib differ and why',
      }),
  handler: async (a) => {
    const report = await import('../report/index.js');
    const images = fileList(a, 'images');
    if (!images.length) throw new SpacerError('spacer report: name at least one image');
    if (!a.explain) {
      process.stdout.write(report.reportCommand(images, { json: a.json }) + '\n');
      return;
    }
    if (images.length < 2)
      throw new SpacerError('spacer report --explain: name at least two images');
    process.stdout.write((await report.explainCommand(images, { json: a.json })) + '\n');
  },
};
