// `npm run fuzz`: thousands of mutated real images through the ELF reader, the page report, the
// verifier and the rewriter. Cases run in a pool of worker processes; a per-case watchdog kills
// and replaces a worker that does not answer in time (a hang is a finding, like a crash or any
// exception that is not one clear SpacerError line).
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { writeFileAtomic } from '../util/files.js';
import { caseContext, prepareCase, type CaseResult, type CaseStart } from './case.js';
import { buildCorpus, type Corpus, type ImageKind } from './corpus.js';
import {
  type FindingGroup,
  type FuzzOptions,
  type FuzzSummary,
  type Meta,
  summarize,
} from './summary.js';
import { runPool } from './workers.js';

export { formatSummary, printable } from './format.js';
export {
  type ClearErrorGroup,
  errorPrefix,
  type FindingGroup,
  type FuzzOptions,
  type FuzzSummary,
  helperFrames,
} from './summary.js';

export async function runFuzz(o: FuzzOptions = {}): Promise<FuzzSummary> {
  const log = o.log ?? (() => {});
  const iterations = o.iterations ?? 5000;
  const seed = o.seed ?? '1';
  const first = o.first ?? 0;
  const out = resolve(o.out ?? join('build', 'fuzz'));
  const imagesDir = resolve(o.images ?? join(out, 'images'));
  mkdirSync(out, { recursive: true });
  const corpus: Corpus = await buildCorpus(imagesDir, log);
  const findingsDir = join(out, 'findings');
  rmSync(findingsDir, { recursive: true, force: true });
  rmSync(join(out, 'tmp'), { recursive: true, force: true });
  const kinds: Partial<Record<ImageKind, number>> = {};
  for (const i of corpus.images) kinds[i.kind] = (kinds[i.kind] ?? 0) + 1;
  const meta: Meta = {
    seed,
    first,
    timeoutMs: o.timeoutMs ?? 20_000,
    jobs: Math.max(1, o.jobs ?? 2),
    out,
    images: { dir: imagesDir, count: corpus.images.length, kinds },
  };
  log(
    `fuzz: ${iterations} cases from seed ${JSON.stringify(seed)} over ${corpus.images.length} images (${Object.entries(
      kinds,
    )
      .map(([k, n]) => `${n} ${k}`)
      .join(', ')}), ${meta.jobs} workers, ${meta.timeoutMs} ms per case`,
  );

  // The parent re-creates any case on its own (deterministic) to keep a reproducer of each finding.
  const local = caseContext(seed, corpus, join(out, 'tmp', 'parent'));
  const run = await runPool(
    iterations,
    meta,
    join(imagesDir, 'corpus.json'),
    o,
    (k) => ({ index: first + k }),
    (k) => prepareCase(local, first + k),
  );
  mkdirSync(findingsDir, { recursive: true });
  const keep = (r: CaseResult): FindingGroup['first'] => {
    const c = prepareCase(local, r.index);
    const rep = join(findingsDir, `case-${r.index}-${basename(c.file).replace(/^case-/, '')}`);
    copyFileSync(c.file, rep);
    let plan: string | undefined;
    if (c.plan) {
      plan = join(findingsDir, `case-${r.index}-${basename(c.plan).replace(/^case-/, '')}`);
      copyFileSync(c.plan, plan);
    }
    return {
      index: r.index,
      image: r.image,
      ops: r.ops,
      reproducer: rep,
      ...(plan ? { plan } : {}),
    };
  };
  const replay = (r: CaseResult) =>
    `npm run fuzz -- --seed ${/^[\w.-]+$/.test(seed) ? seed : JSON.stringify(seed)} --case ${r.index}${o.out ? ` --out ${o.out}` : ''}${o.images ? ` --images ${o.images}` : ''}`;
  const summary = summarize(run.results, meta, run, keep, replay);
  rmSync(join(out, 'tmp'), { recursive: true, force: true });
  if (!summary.findings.length) rmSync(findingsDir, { recursive: true, force: true });
  writeFileAtomic(join(out, 'fuzz.json'), JSON.stringify(summary, null, 2) + '\n');
  return summary;
}

/**
 * Runs given files (each with an optional link plan) through the same steps and rules, under the
 * same watchdog: e.g. the reproducers in test/fixtures/fuzz/. No corpus is built.
 */
export async function checkFiles(
  files: readonly { path: string; plan?: string }[],
  o: FuzzOptions = {},
): Promise<FuzzSummary> {
  const out = resolve(o.out ?? join('build', 'fuzz-check'));
  mkdirSync(out, { recursive: true });
  rmSync(join(out, 'tmp'), { recursive: true, force: true });
  const meta: Meta = {
    seed: '-',
    first: 0,
    timeoutMs: o.timeoutMs ?? 20_000,
    jobs: Math.max(1, o.jobs ?? 2),
    out,
    images: { dir: '-', count: files.length, kinds: {} },
  };
  const list = files.map((f) => ({
    path: resolve(f.path),
    ...(f.plan ? { plan: resolve(f.plan) } : {}),
  }));
  const fallback = (k: number): CaseStart => ({
    index: k,
    image: list[k].path,
    imageKind: 'file',
    mutations: [],
    ops: [],
    file: list[k].path,
    plan: list[k].plan,
  });
  const run = await runPool(
    list.length,
    meta,
    null,
    o,
    (k) => ({ index: k, file: list[k] }),
    fallback,
  );
  const summary = summarize(
    run.results,
    meta,
    run,
    (r) => ({
      index: r.index,
      image: r.image,
      ops: [],
      reproducer: r.image,
      ...(list[r.index].plan ? { plan: list[r.index].plan } : {}),
    }),
    (r) =>
      `npm run fuzz -- --check ${r.image}${list[r.index].plan ? ` --plan ${list[r.index].plan}` : ''}`,
  );
  summary.files = run.results.map((r, k) => ({
    file: list[k].path,
    ...(list[k].plan ? { plan: list[k].plan } : {}),
    steps: r.steps.map((x) => ({
      step: x.step,
      outcome: x.outcome,
      ...(x.kind ? { kind: x.kind } : {}),
      ...(x.name ? { name: x.name } : {}),
      ...(x.message ? { message: x.message } : {}),
      ...(x.note ? { note: x.note } : {}),
    })),
  }));
  rmSync(join(out, 'tmp'), { recursive: true, force: true });
  writeFileAtomic(join(out, 'fuzz.json'), JSON.stringify(summary, null, 2) + '\n');
  return summary;
}

/** Replays one case in this process (no watchdog) and returns it, with full stacks. */
export async function replayCase(o: FuzzOptions & { index: number }): Promise<CaseResult> {
  const { runCase } = await import('./case.js');
  const out = resolve(o.out ?? join('build', 'fuzz'));
  const corpus = await buildCorpus(resolve(o.images ?? join(out, 'images')), o.log);
  const ctx = caseContext(o.seed ?? '1', corpus, join(out, 'replay'));
  const onRej = (e: unknown) => {
    ctx.rejections.push(e);
  };
  process.on('unhandledRejection', onRej);
  try {
    return await runCase(ctx, o.index);
  } finally {
    process.off('unhandledRejection', onRej);
  }
}
