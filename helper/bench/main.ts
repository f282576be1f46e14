// `npm run bench`: the benchmark from the command line (see bench/README.md).
import { formatBench, runBench, type BenchOptions } from './index.js';

const HELP = `usage: npm run bench -- [options]

Generates FaaS unikernels, links them (and the example apps) in the layouts default, dce, spacer
and spacer-aslr (when buildImage supports it), and measures memory with the page model of
shared/metrics.md, under real KSM when run as root, plus link, rewrite and runtime overheads.
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

function fail(msg: string): never {
  process.stderr.write(`bench: ${msg}; see --help\n`);
  process.exit(1);
}

export function parseArgs(argv: string[]): BenchOptions | 'help' {
  const o: BenchOptions = {};
  const int = (flag: string, v: string | undefined, min: number) => {
    if (v === undefined || !/^\d+$/.test(v) || Number(v) < min)
      fail(
        `${flag} needs a whole number of at least ${min}${v === undefined ? '' : ` (got ${JSON.stringify(v)})`}`,
      );
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] =
      a.startsWith('--') && a.includes('=')
        ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]
        : [a, undefined];
    const val = () => inline ?? argv[++i];
    switch (flag) {
      case '--help':
      case '-h':
        return 'help';
      case '--apps':
        o.apps = int('--apps', val(), 1);
        break;
      case '--quick':
        o.quick = true;
        break;
      case '--out':
        o.out = val() ?? fail('--out needs a directory');
        break;
      case '--work':
        o.work = val() ?? fail('--work needs a directory');
        break;
      case '--no-ksm':
        o.ksm = false;
        break;
      case '--guests':
        o.guests = int('--guests', val(), 0);
        break;
      case '--seed':
        o.seed = int('--seed', val(), 0);
        break;
      case '--jobs':
        o.jobs = int('--jobs', val(), 1);
        break;
      default:
        fail(`unknown argument ${JSON.stringify(a)}`);
    }
  }
  return o;
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
