// `npm run fuzz`: the fuzz run from the command line.
import { parseFlags } from '../bench/args.js';
import { writeReproducers } from './reproducers.js';
import {
  checkFiles,
  formatSummary,
  printable,
  replayCase,
  runFuzz,
  type FuzzOptions,
} from './run.js';

const HELP = `usage: npm run fuzz -- [options]

Builds the example images once (the demo without boot: default, spacer and spacer-aslr layouts;
ELF64 .dbg with and without the rewrite, ELF32 .elf), then runs N mutated copies of them through
ElfFile (sections, segments, symbols, relocations), analyzeImages, verifyImage, packImage (on a
copy: the loaded memory must not change) and rewriteImage (on a copy, with the link plan). Mutations: bit flips, byte runs, truncation at structural
boundaries, ELF/section/program header fields, relocations, symbols, string tables, code bytes at
rewrite sites and table entries, .spacer.plan/.spacer.rewrite JSON, the link plan file.

Each case must end in success or in one clear SpacerError line that starts with the file; any
other exception, a multi-line or path-less message, a SpacerError that only wraps an internal
JavaScript error, an unhandled rejection, a crash or a hang is a finding. Prints a summary, writes
<out>/fuzz.json and a reproducer of each distinct finding in <out>/findings/, and exits 1 when
there is any finding. Progress goes to stderr.

options:
  --iterations N   cases to run (default 5000)
  --seed S         seed of the run (default 1); case K of seed S is always the same mutation
  --out DIR        where fuzz.json and findings/ go (default build/fuzz)
  --images DIR     where the example images are built, or reused when complete (default <out>/images)
  --timeout-ms MS  per-case watchdog; a case that takes longer is a hang (default 20000)
  --jobs N         worker processes (default 2)
  --first K        number of the first case (default 0)
  --case K         replay case K of the seed in this process and print every step with full stacks
  --check FILE...  instead of mutating: run these files through the same steps, rules and watchdog
  --plan P         with --check: the link plan the rewrite step uses (default: an empty plan)
  --write-reproducers DIR  write the minimal reproducers of known findings (test/fixtures/fuzz)
  --json           print the summary as JSON instead of text
  --help           this text
`;

type Cli = FuzzOptions & {
  replay?: number;
  json?: boolean;
  check?: string[];
  plan?: string;
  writeReproducers?: string;
};

export function parseArgs(argv: string[]): Cli | 'help' {
  const o: Cli = {};
  const help = parseFlags(
    argv,
    { tool: 'fuzz', exitCode: 2, safeIntegers: true },
    {
      '--iterations': (r) => (o.iterations = r.int(1)),
      '--seed': (r) => (o.seed = r.str('a value')),
      '--out': (r) => (o.out = r.str('a directory')),
      '--images': (r) => (o.images = r.str('a directory')),
      '--timeout-ms': (r) => (o.timeoutMs = r.int(100)),
      '--jobs': (r) => (o.jobs = r.int(1)),
      '--first': (r) => (o.first = r.int(0)),
      '--case': (r) => (o.replay = r.int(0)),
      '--json': () => (o.json = true),
      '--plan': (r) => (o.plan = r.str('a file')),
      '--write-reproducers': (r) => (o.writeReproducers = r.str('a directory')),
      '--check': (r) => {
        o.check = r.rest();
        if (!o.check.length) r.fail('--check needs files');
      },
    },
  );
  return help ?? o;
}

const opts = parseArgs(process.argv.slice(2));
const log = (l: string) => process.stderr.write(`${l}\n`);
if (opts === 'help') {
  process.stdout.write(HELP);
} else if (opts.writeReproducers) {
  for (const f of writeReproducers(opts.writeReproducers))
    process.stdout.write(`${opts.writeReproducers}/${f}\n`);
} else if (opts.check) {
  const s = await checkFiles(
    opts.check.map((path) => ({ path, plan: opts.plan })),
    { ...opts, log },
  );
  process.stdout.write((opts.json ? JSON.stringify(s, null, 2) : formatSummary(s)) + '\n');
  if (s.findings.length) process.exitCode = 1;
} else if (opts.replay !== undefined) {
  const r = await replayCase({ ...opts, index: opts.replay, log });
  if (opts.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else {
    const L = [
      `case ${r.index} of seed ${JSON.stringify(opts.seed ?? '1')}: ${r.image} (${r.imageKind}), ${r.mutations.join(' + ')}`,
    ];
    for (const op of r.ops) L.push(`  mutation: ${printable(op)}`);
    L.push(`  file: ${r.file}${r.plan ? `, plan: ${r.plan}` : ''}`);
    for (const s of r.steps) {
      L.push(
        `  ${s.step}: ${s.outcome === 'finding' ? `FINDING (${s.kind}${s.name ? ` ${s.name}` : ''})` : s.outcome === 'error' ? 'clear error' : 'ok'} in ${s.ms.toFixed(0)} ms${s.note ? `: ${s.note}` : ''}`,
      );
      if (s.message) L.push(`    ${printable(s.message).split('\n').join('\n    | ')}`);
      if (s.outcome === 'finding' && s.stack)
        L.push(
          ...s.stack
            .split('\n')
            .slice(1)
            .map((l) => `    ${l.trim()}`),
        );
    }
    process.stdout.write(L.join('\n') + '\n');
  }
  if (r.steps.some((s) => s.outcome === 'finding')) process.exitCode = 1;
} else {
  try {
    const s = await runFuzz({ ...opts, log });
    process.stdout.write((opts.json ? JSON.stringify(s, null, 2) : formatSummary(s)) + '\n');
    if (s.findings.length) process.exitCode = 1;
  } catch (e) {
    process.stderr.write(`fuzz: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 2;
  }
}
