// Runtime overhead (bench/README.md, 'Overheads'): cpu-bench booted alternately in each layout; its
// SHA-256 loop timed from the serial port (the guest prints a line before and after it), ratio of
// the fastest runs.
import { bootFailure, bootImage, type BootResult } from '../workspace/index.js';
import type { Built, Workload } from './build.js';
import { lap, median, Progress, r1, r3 } from './progress.js';
import type { BenchLayout, BenchResult, BenchRun } from './types.js';

/** cpu-bench's serial lines before and after its SHA-256 loop (example/apps/cpu-bench/main.c). */
const RUNTIME_MARKS = ['cpu-bench: start', 'cpu-bench: digest'];

type PerLayout = Partial<Record<BenchLayout, number>>;

/** Fills result.overheads.runtime when there is a bench app and two layouts to compare. */
export async function runtimeOverhead(
  run: BenchRun,
  w: Workload,
  built: Built,
  result: BenchResult,
  runtimeRounds?: number,
): Promise<void> {
  const t = Date.now();
  const benchIdx = w.examples.findIndex((a) => a.bench);
  const rtLayouts = result.layouts_supported.filter(
    (l) => l === 'default' || l.startsWith('spacer'),
  );
  if (benchIdx >= 0 && rtLayouts.length > 1) {
    const rounds = runtimeRounds ?? (run.quick ? 9 : 15);
    const boots = await bootRounds(run, rtLayouts, rounds, (l) => built[l]![benchIdx].elf);
    const { ms } = boots;
    const stat = (f: (v: number[]) => number) =>
      Object.fromEntries(rtLayouts.map((l) => [l, r1(f(ms[l]!))])) as PerLayout;
    const min = stat((v) => Math.min(...v)),
      med = stat(median);
    const ratio = (x: PerLayout) =>
      Object.fromEntries(
        rtLayouts.filter((l) => l !== 'default').map((l) => [l, r3(x[l]! / x.default!)]),
      );
    result.overheads.runtime = {
      app: w.examples[benchIdx].name,
      rounds,
      accel: 'tcg',
      ms_min: min,
      ms_median: med,
      ms_all: Object.fromEntries(rtLayouts.map((l) => [l, ms[l]!.map(r1)])),
      ratio: ratio(min),
      ratio_median: ratio(med),
      all_ok: boots.ok,
      ...(boots.retried.length ? { retried: boots.retried } : {}),
      note:
        'the SHA-256 loop of cpu-bench (600 000 rounds), timed between its two serial lines under TCG, layouts alternated in a rotating order; ' +
        "ratio: fastest run over the default's fastest (other load on the host only ever slows a run down; the medians are given too). " +
        'TCG translates code per block, so this measures the translated code, not native execution',
    };
  }
  lap(run.durations, 'runtime', t);
}

/**
 * `rounds` boots of each layout's image in a rotating order: the loop's time per boot, whether
 * every boot was timed with one and the same output, and the boots made again after a failure.
 */
async function bootRounds(
  run: BenchRun,
  rtLayouts: BenchLayout[],
  rounds: number,
  elfOf: (l: BenchLayout) => string,
): Promise<{ ms: Partial<Record<BenchLayout, number[]>>; ok: boolean; retried: string[] }> {
  const ms: Partial<Record<BenchLayout, number[]>> = {};
  let ok = true;
  const outputs = new Set<string>();
  const retried: string[] = [];
  // A boot that exited well and printed both timing lines.
  const timed = (x: BootResult) =>
    x.success &&
    x.markMs?.length === RUNTIME_MARKS.length &&
    x.markMs.every((v) => v !== undefined);
  const rp = new Progress('runtime (cpu-bench boots)', rounds * rtLayouts.length, run.log);
  for (let r = 0; r < rounds; r++) {
    // The order rotates every round: no layout always boots first (a cold start) or last.
    for (const l of rtLayouts.map((_, k) => rtLayouts[(k + r) % rtLayouts.length])) {
      const boot = () => bootImage(elfOf(l), { timeoutMs: 300_000, marks: RUNTIME_MARKS });
      let b = await boot();
      if (!timed(b)) {
        // The guest is deterministic: a boot that fails once and not again is the host's; say so.
        retried.push(`${l}, round ${r + 1}: ${bootFailure(b, null) ?? 'a timing line is missing'}`);
        b = await boot();
      }
      const [from, to] = b.markMs ?? [];
      ok &&= timed(b);
      outputs.add(b.output);
      (ms[l] ??= []).push(timed(b) ? to! - from! : b.durationMs);
      rp.tick();
    }
  }
  return { ms, ok: ok && outputs.size === 1, retried };
}
