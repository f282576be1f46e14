// `npm run fuzz`: thousands of mutated real images through the ELF reader, the page report, the
// verifier and the rewriter. Cases run in a pool of worker processes; a per-case watchdog kills
// and replaces a worker that does not answer in time (a hang is a finding, like a crash or any
// exception that is not one clear SpacerError line).
import { fork, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  caseContext,
  prepareCase,
  STEPS,
  type CaseResult,
  type CaseStart,
  type FindingKind,
  type Step,
  type StepResult,
} from './case.js';
import { buildCorpus, type Corpus, type ImageKind } from './corpus.js';
import type { SelfTest, ToWorker } from './worker.js';

export interface FuzzOptions {
  iterations?: number;
  seed?: string;
  /** Where fuzz.json, the reproducers and the scratch files go (default build/fuzz). */
  out?: string;
  /** Where the example images are built, or reused when complete (default <out>/images). */
  images?: string;
  /** Per-case watchdog (default 20 s). */
  timeoutMs?: number;
  /** Worker processes (default 2). */
  jobs?: number;
  /** First case number (default 0): cases are numbered, each reproducible from seed and number. */
  first?: number;
  /** Progress lines (stderr in the CLI). */
  log?: (line: string) => void;
  /** Tests of the harness itself: cases made to hang or to kill their worker. */
  selfTest?: SelfTest;
}

export interface ClearErrorGroup {
  prefix: string;
  /** Cases that ended in this error (in any step), and how often each step gave it. */
  cases: number;
  steps: Partial<Record<Step, number>>;
  example: string;
}

export interface FindingGroup {
  signature: string;
  /** Steps it occurred in (the same fault often shows in several: each loads the file). */
  steps: Step[];
  kind: FindingKind;
  name: string;
  message: string;
  stack?: string;
  count: number;
  /** Cases with this finding, and their numbers (the first 50). */
  cases: number[];
  first: { index: number; image: string; ops: string[]; reproducer: string; plan?: string };
  replay: string;
}

export interface FuzzSummary {
  seed: string;
  first: number;
  iterations: number;
  timeoutMs: number;
  jobs: number;
  durationMs: number;
  casesPerSecond: number;
  out: string;
  images: { dir: string; count: number; kinds: Partial<Record<ImageKind, number>> };
  cases: {
    total: number;
    clean: number;
    withClearErrors: number;
    withFindings: number;
    byImageKind: Partial<Record<ImageKind | 'file', number>>;
  };
  steps: Record<
    Step,
    { ok: number; error: number; finding: number; meanMs: number; maxMs: number }
  >;
  caseMs: { mean: number; p50: number; p99: number; max: number };
  mutations: Record<string, number>;
  clearErrors: ClearErrorGroup[];
  /**
   * Rewrites that succeeded on a mutated image whose result `verifyImage` then rejects (not
   * crashes).
   */
  rewriteVerifyNotes: { index: number; image: string; note: string }[];
  findings: FindingGroup[];
  findingCount: number;
  workerRestarts: number;
  /** Check runs: every file's steps. */
  files?: {
    file: string;
    plan?: string;
    steps: {
      step: Step;
      outcome: StepResult['outcome'];
      kind?: FindingKind;
      name?: string;
      message?: string;
      note?: string;
    }[];
  }[];
}

const here = fileURLToPath(import.meta.url);
const workerFile = join(here, '..', `worker${extname(here)}`);

function workerExecArgv(): string[] {
  const argv = process.execArgv.filter((a) => !a.startsWith('--inspect'));
  if (extname(here) === '.ts' && !argv.some((a) => a.includes('tsx'))) argv.push('--import=tsx');
  return argv;
}

type FromWorker =
  | { type: 'ready' }
  | { type: 'start'; start: CaseStart }
  | { type: 'step'; step: Step }
  | { type: 'done'; result: CaseResult }
  | { type: 'fatal'; name: string; message: string; stack?: string };

class Worker {
  proc!: ChildProcess;
  stderr = '';
  private listener?: (m: FromWorker) => void;
  private exitListener?: (code: number | null, sig: NodeJS.Signals | null) => void;

  constructor(
    readonly id: number,
    readonly seed: string,
    readonly corpusPath: string | null,
    readonly dir: string,
    readonly selfTest?: SelfTest,
  ) {}

  async start(): Promise<void> {
    rmSync(this.dir, { recursive: true, force: true });
    this.stderr = '';
    this.proc = fork(workerFile, [], {
      execArgv: workerExecArgv(),
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.proc.on('message', (m: FromWorker) => this.listener?.(m));
    this.proc.on('exit', (code, sig) => this.exitListener?.(code, sig));
    await new Promise<void>((res, rej) => {
      const t = setTimeout(
        () => rej(new Error(`fuzz worker ${this.id} did not start within 60 s: ${this.stderr}`)),
        60_000,
      );
      this.listener = (m) => {
        if (m.type === 'ready') {
          clearTimeout(t);
          res();
        }
      };
      this.exitListener = (code, sig) => {
        clearTimeout(t);
        rej(new Error(`fuzz worker ${this.id} exited at start (${code ?? sig}): ${this.stderr}`));
      };
      this.send({
        type: 'init',
        seed: this.seed,
        corpus: this.corpusPath,
        dir: this.dir,
        selfTest: this.selfTest,
      });
    });
  }

  send(m: ToWorker): void {
    this.proc.send(m);
  }

  kill(): void {
    this.listener = this.exitListener = undefined;
    this.proc.removeAllListeners('exit');
    this.proc.kill('SIGKILL');
  }

  /**
   * Runs one case; a hang or a dead worker becomes a finding (the worker must then be restarted).
   */
  run(
    index: number,
    timeoutMs: number,
    file?: { path: string; plan?: string },
  ): Promise<{
    result: CaseResult | null;
    start?: CaseStart;
    failure?: StepResult;
    restart: boolean;
  }> {
    return new Promise((resolveRun) => {
      let start: CaseStart | undefined;
      let current: Step = 'load';
      const t0 = performance.now();
      const done = (r: { result: CaseResult | null; failure?: StepResult; restart: boolean }) => {
        clearTimeout(timer);
        this.listener = this.exitListener = undefined;
        resolveRun({ ...r, start });
      };
      const timer = setTimeout(() => {
        this.kill();
        done({
          result: null,
          restart: true,
          failure: {
            step: current,
            outcome: 'finding',
            kind: 'hang',
            name: 'timeout',
            message: `no result within ${timeoutMs} ms`,
            ms: performance.now() - t0,
          },
        });
      }, timeoutMs);
      this.listener = (m) => {
        if (m.type === 'start') start = m.start;
        else if (m.type === 'step') current = m.step;
        else if (m.type === 'done')
          done({
            result: m.result,
            restart: m.result.steps.some(
              (s) =>
                s.outcome === 'finding' &&
                (s.name === 'RuntimeError' || /wasm|memory access/i.test(s.message ?? '')),
            ),
          });
        else if (m.type === 'fatal') {
          this.kill();
          done({
            result: null,
            restart: true,
            failure: {
              step: current,
              outcome: 'finding',
              kind: 'exception',
              name: m.name,
              message: `uncaught in the worker: ${m.message}`,
              stack: m.stack,
              ms: performance.now() - t0,
            },
          });
        }
      };
      this.exitListener = (code, sig) => {
        done({
          result: null,
          restart: true,
          failure: {
            step: current,
            outcome: 'finding',
            kind: 'crash',
            name: 'exit',
            message: `the worker died (${code !== null ? `exit ${code}` : sig}): ${this.stderr.trim().split('\n').slice(-3).join(' | ')}`,
            ms: performance.now() - t0,
          },
        });
      };
      this.send({ type: 'case', index, file });
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Grouping

/** A clear error without its file, numbers and names: what kind of error it is. */
export function errorPrefix(message: string): string {
  return message
    .replace(/^\S*?: /, '')
    .replace(/\/\S+/g, 'PATH')
    .split(/ \(|;/)[0]
    .replace(/\.(text|ind|rodata|data|bss)\.[\w.+-]+/g, '.$1.<µlib>')
    .replace(/\b(lib|app)[\w+-]*(?=:)/g, '<µlib>')
    .replace(/0x[0-9a-f]+/gi, 'X')
    .replace(/\b\d+\b/g, 'N')
    .slice(0, 100);
}

/** The first two stack frames inside lib-spacer's helper (not the fuzzer): function (file:line). */
export function helperFrames(stack: string | undefined, n = 2): string {
  const lines = (stack ?? '').split('\n').filter((l) => /^\s+at /.test(l));
  const mine = lines.filter(
    (l) =>
      /helper[\\/]/.test(l) &&
      !/helper[\\/](dist[\\/])?fuzz[\\/]/.test(l) &&
      !/node_modules/.test(l),
  );
  return (mine.length ? mine : lines)
    .slice(0, n)
    .map((l) =>
      l
        .trim()
        .replace(/^at /, '')
        .replace(/file:\/\/\S*?helper[\\/](dist[\\/])?/, 'helper/')
        .replace(/\(\S*?helper[\\/](dist[\\/])?/, '(helper/')
        .replace(/:\d+\)$/, ')')
        .replace(/:\d+$/, ''),
    )
    .join(' < ');
}

/** What makes two findings the same fault: kind, error class, where it was thrown, what it says. */
function signature(s: StepResult): string {
  const msg = errorPrefix(
    s.kind === 'exception' || s.kind === 'unhandled-rejection'
      ? `x: ${s.message ?? ''}`
      : (s.message ?? ''),
  ).slice(0, 70);
  if (s.kind === 'exception' || s.kind === 'unhandled-rejection')
    return `${s.kind} ${s.name} | ${helperFrames(s.stack)} | ${msg}`;
  if (s.kind === 'masked' && s.stack?.startsWith('(recovered'))
    return `${s.kind} | ${helperFrames(s.stack)} | ${msg}`;
  if (s.kind === 'hang' || s.kind === 'crash') return `${s.kind} | ${s.step}`;
  return `${s.kind} | ${msg}`;
}

function percentile(xs: number[], p: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const round = (x: number) => Math.round(x * 10) / 10;

// ---------------------------------------------------------------------------------------------

interface Meta {
  seed: string;
  first: number;
  timeoutMs: number;
  jobs: number;
  out: string;
  images: FuzzSummary['images'];
}

/**
 * Runs cases 0..n-1 in a pool of workers under the watchdog; `fallback` describes a case whose
 * worker never said.
 */
async function runPool(
  n: number,
  meta: Meta,
  corpusPath: string | null,
  o: FuzzOptions,
  job: (k: number) => { index: number; file?: { path: string; plan?: string } },
  fallback: (k: number) => CaseStart,
): Promise<{ results: CaseResult[]; restarts: number; durationMs: number }> {
  const log = o.log ?? (() => {});
  const t0 = performance.now();
  const results: CaseResult[] = new Array(n);
  let restarts = 0,
    doneCount = 0,
    findingCases = 0,
    lastLog = performance.now(),
    next = 0;
  const workers = Array.from(
    { length: Math.min(meta.jobs, n) },
    (_, i) => new Worker(i, meta.seed, corpusPath, join(meta.out, 'tmp', `w${i}`), o.selfTest),
  );
  await Promise.all(workers.map((w) => w.start()));
  try {
    await Promise.all(
      workers.map(async (w) => {
        while (next < n) {
          const k = next++;
          const { index, file } = job(k);
          const r = await w.run(index, meta.timeoutMs, file);
          const result = r.result ?? {
            ...(r.start ?? fallback(k)),
            steps: [r.failure!],
            ms: r.failure!.ms,
          };
          results[k] = result;
          doneCount++;
          if (result.steps.some((s) => s.outcome === 'finding')) findingCases++;
          if (r.restart) {
            restarts++;
            await w.start();
          }
          const now = performance.now();
          if (now - lastLog > 5000 || doneCount === n) {
            lastLog = now;
            log(
              `fuzz: ${doneCount}/${n} cases, ${(doneCount / ((now - t0) / 1000)).toFixed(1)} cases/s, ${findingCases} with findings`,
            );
          }
        }
      }),
    );
  } finally {
    for (const w of workers) w.kill();
  }
  return { results, restarts, durationMs: performance.now() - t0 };
}

/** Counts, clear errors by kind, findings by fault (each with a reproducer made by `keep`). */
function summarize(
  results: CaseResult[],
  meta: Meta,
  run: { restarts: number; durationMs: number },
  keep: (r: CaseResult) => FindingGroup['first'],
  replay: (r: CaseResult) => string,
): FuzzSummary {
  const steps = Object.fromEntries(
    STEPS.map((s) => [s, { ok: 0, error: 0, finding: 0, meanMs: 0, maxMs: 0 }]),
  ) as FuzzSummary['steps'];
  const errors = new Map<string, ClearErrorGroup>();
  const groups = new Map<string, FindingGroup>();
  const mutations: Record<string, number> = {};
  const byImageKind: FuzzSummary['cases']['byImageKind'] = {};
  const notes: FuzzSummary['rewriteVerifyNotes'] = [];
  let clean = 0,
    withErrors = 0,
    withFindings = 0,
    findingCount = 0;
  for (const r of results) {
    byImageKind[r.imageKind] = (byImageKind[r.imageKind] ?? 0) + 1;
    for (const k of r.mutations) mutations[k] = (mutations[k] ?? 0) + 1;
    let f = false,
      e = false;
    const seenErr = new Set<string>(),
      seenSig = new Set<string>();
    for (const s of r.steps) {
      const st = steps[s.step];
      st[s.outcome]++;
      st.meanMs += s.ms;
      st.maxMs = Math.max(st.maxMs, s.ms);
      if (s.outcome === 'error') {
        e = true;
        const prefix = errorPrefix(s.message!);
        const g = errors.get(prefix) ?? {
          prefix,
          cases: 0,
          steps: {},
          example: s.message!.replace(/^\S*?: /, '<file>: '),
        };
        if (!seenErr.has(prefix)) g.cases++;
        seenErr.add(prefix);
        g.steps[s.step] = (g.steps[s.step] ?? 0) + 1;
        errors.set(prefix, g);
      } else if (s.outcome === 'finding') {
        f = true;
        findingCount++;
        const sig = signature(s);
        let g = groups.get(sig);
        if (!g) {
          g = {
            signature: sig,
            steps: [],
            kind: s.kind!,
            name: s.name ?? '',
            message: s.message ?? '',
            stack: s.stack,
            count: 0,
            cases: [],
            first: keep(r),
            replay: replay(r),
          };
          groups.set(sig, g);
        }
        if (!g.steps.includes(s.step)) g.steps.push(s.step);
        if (!seenSig.has(sig)) {
          g.count++;
          if (g.cases.length < 50) g.cases.push(r.index);
        }
        seenSig.add(sig);
      } else if (s.step === 'rewrite' && s.note?.startsWith('rewritten, but verify')) {
        notes.push({ index: r.index, image: r.image, note: s.note });
      }
    }
    if (f) withFindings++;
    else if (e) withErrors++;
    else clean++;
  }
  for (const s of STEPS) {
    const st = steps[s],
      n = st.ok + st.error + st.finding;
    st.meanMs = n ? round(st.meanMs / n) : 0;
    st.maxMs = round(st.maxMs);
  }
  const ms = results.map((r) => r.ms);
  return {
    seed: meta.seed,
    first: meta.first,
    iterations: results.length,
    timeoutMs: meta.timeoutMs,
    jobs: meta.jobs,
    durationMs: Math.round(run.durationMs),
    casesPerSecond: round(results.length / (run.durationMs / 1000)),
    out: meta.out,
    images: meta.images,
    cases: { total: results.length, clean, withClearErrors: withErrors, withFindings, byImageKind },
    steps,
    caseMs: {
      mean: round(ms.reduce((a, b) => a + b, 0) / (ms.length || 1)),
      p50: round(percentile(ms, 50)),
      p99: round(percentile(ms, 99)),
      max: round(Math.max(0, ...ms)),
    },
    mutations,
    clearErrors: [...errors.values()].sort(
      (a, b) => b.cases - a.cases || (a.prefix < b.prefix ? -1 : 1),
    ),
    rewriteVerifyNotes: notes.slice(0, 100),
    findings: [...groups.values()].sort(
      (a, b) => b.count - a.count || a.first.index - b.first.index,
    ),
    findingCount,
    workerRestarts: run.restarts,
  };
}

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
  writeFileSync(join(out, 'fuzz.json'), JSON.stringify(summary, null, 2) + '\n');
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
  writeFileSync(join(out, 'fuzz.json'), JSON.stringify(summary, null, 2) + '\n');
  return summary;
}

/** Text with control characters (other than newlines) shown as \\xNN, for the terminal. */
export function printable(text: string): string {
  return text.replace(
    // eslint-disable-next-line no-control-regex -- control characters are what it replaces
    /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

export function formatSummary(s: FuzzSummary, opts: { errors?: number } = {}): string {
  const L: string[] = [];
  L.push(
    `fuzz: ${s.cases.total} cases${s.files ? '' : ` (seed ${JSON.stringify(s.seed)}${s.first ? `, from case ${s.first}` : ''})`} in ${(s.durationMs / 1000).toFixed(1)} s, ${s.casesPerSecond} cases/s, ${s.jobs} workers`,
  );
  if (s.files) L.push(`files: ${s.files.length} checked`);
  else
    L.push(
      `images: ${s.images.count} in ${s.images.dir} (${Object.entries(s.images.kinds)
        .map(([k, n]) => `${n} ${k}`)
        .join(', ')})`,
    );
  L.push(
    `cases: ${s.cases.clean} all steps succeeded, ${s.cases.withClearErrors} ended in clear errors, ${s.cases.withFindings} with findings`,
  );
  L.push(
    `case time: mean ${s.caseMs.mean} ms, p50 ${s.caseMs.p50} ms, p99 ${s.caseMs.p99} ms, max ${s.caseMs.max} ms; worker restarts ${s.workerRestarts}`,
  );
  L.push('');
  L.push('step      success  clear error  finding  mean ms  max ms');
  for (const [k, v] of Object.entries(s.steps)) {
    L.push(
      `${k.padEnd(8)} ${String(v.ok).padStart(8)} ${String(v.error).padStart(12)} ${String(v.finding).padStart(8)} ${String(v.meanMs).padStart(8)} ${String(v.maxMs).padStart(7)}`,
    );
  }
  L.push('');
  const n = opts.errors ?? 25;
  L.push(
    `clear errors by message (cases; ${s.clearErrors.length} kinds${s.clearErrors.length > n ? `, top ${n}` : ''}):`,
  );
  for (const g of s.clearErrors.slice(0, n))
    L.push(
      `  ${String(g.cases).padStart(6)}  ${printable(g.prefix)}  [${Object.entries(g.steps)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}]`,
    );
  if (s.rewriteVerifyNotes.length)
    L.push(
      '',
      `note: ${s.rewriteVerifyNotes.length} rewrite(s) succeeded on a mutated image that verify then rejects (first: case ${s.rewriteVerifyNotes[0].index}: ${s.rewriteVerifyNotes[0].note})`,
    );
  L.push('');
  if (!s.findings.length) L.push('findings: none');
  else {
    L.push(
      `FINDINGS: ${s.findingCount} in ${s.cases.withFindings} cases, ${s.findings.length} distinct:`,
    );
    s.findings.forEach((g, i) => {
      L.push('');
      L.push(
        `#${i + 1} ${g.kind}${g.name ? ` ${g.name}` : ''} in ${g.steps.join(', ')} (${g.count} cases: ${g.cases.slice(0, 10).join(', ')}${g.count > 10 ? ', ...' : ''})`,
      );
      L.push(`   ${printable(g.message).split('\n').join('\n   | ')}`);
      if (g.stack)
        L.push(
          ...g.stack
            .split('\n')
            .filter((l) => /^\s+at |^\(recovered/.test(l))
            .slice(0, 6)
            .map((l) => `     ${l.trim()}`),
        );
      L.push(
        `   first: case ${g.first.index}, ${g.first.image}: ${printable(g.first.ops.join('; '))}`,
      );
      L.push(
        `   reproducer: ${g.first.reproducer}${g.first.plan ? ` (plan ${g.first.plan})` : ''}`,
      );
      L.push(`   replay: ${g.replay}`);
    });
  }
  L.push('', `written: ${join(s.out, 'fuzz.json')}`);
  return L.join('\n');
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
