// `npm run bench`: the benchmark from the command line (see bench/README.md).
import { parseFlags } from './args.js';
import { formatBench, runBench, type BenchOptions } from './index.js';

const HELP = `usage: npm run bench -- [options]

Generates FaaS unikernels, links them (and the example apps) in the layouts default, dce, spacer
and spacer-aslr (when buildImage supports it), and measures memory with the page model of
docs/metrics.md, under real KSM when run as root, plus link, rewrite and runtime overheads.
Writes bench.json, bench.md and bench.svg; prints bench.md; progress goes to stderr.

options:
  --apps N       generated FaaS apps (default 1000; 100 with --quick)
  --quick        about 100 apps, 9 runtime rounds, 8 link-timing samples (CI)
  --out DIR      where the figures go (default bench/results)
  --work DIR     objects, images, maps, loaders (default bench/work)
  --no-ksm       the page model only, no real KSM
  --guests N     qemu guests per layout under KSM (default 20; 0: none)
  --seed S       workload seed (default 1)
  --jobs N       parallel compile/link jobs (default: CPUs)
  --help         this text
`;

export function parseArgs(argv: string[]): BenchOptions | 'help' {
  const o: BenchOptions = {};
  const help = parseFlags(
    argv,
    { tool: 'bench', exitCode: 1 },
    {
      '--apps': (r) => (o.apps = r.int(1)),
      '--quick': () => (o.quick = true),
      '--out': (r) => (o.out = r.str('a directory')),
      '--work': (r) => (o.work = r.str('a directory')),
      '--no-ksm': () => (o.ksm = false),
      '--guests': (r) => (o.guests = r.int(0)),
      '--seed': (r) => (o.seed = r.int(0)),
      '--jobs': (r) => (o.jobs = r.int(1)),
    },
  );
  return help ?? o;
}

const opts = parseArgs(process.argv.slice(2));
if (opts === 'help') {
  process.stdout.write(HELP);
} else {
  try {
    const r = await runBench(opts);
    process.stdout.write(formatBench(r));
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  }
}
