// What a fuzz run reports: the options and the summary (fuzz.json), and how results are grouped:
// clear errors by the kind of message, findings by fault (kind, error class, where it was thrown,
// what it says).
import { STEPS, type CaseResult, type FindingKind, type Step, type StepResult } from './case.js';
import type { ImageKind } from './corpus.js';
import type { SelfTest } from './worker.js';

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

/** What a run's summary says about the run itself. */
export interface Meta {
  seed: string;
  first: number;
  timeoutMs: number;
  jobs: number;
  out: string;
  images: FuzzSummary['images'];
}

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

/** The counts and groups summarize() accumulates over the results. */
interface Tally {
  steps: FuzzSummary['steps'];
  errors: Map<string, ClearErrorGroup>;
  groups: Map<string, FindingGroup>;
  mutations: Record<string, number>;
  byImageKind: FuzzSummary['cases']['byImageKind'];
  notes: FuzzSummary['rewriteVerifyNotes'];
  clean: number;
  withErrors: number;
  withFindings: number;
  findingCount: number;
}

/** Counts, clear errors by kind, findings by fault (each with a reproducer made by `keep`). */
export function summarize(
  results: CaseResult[],
  meta: Meta,
  run: { restarts: number; durationMs: number },
  keep: (r: CaseResult) => FindingGroup['first'],
  replay: (r: CaseResult) => string,
): FuzzSummary {
  const t: Tally = {
    steps: Object.fromEntries(
      STEPS.map((s) => [s, { ok: 0, error: 0, finding: 0, meanMs: 0, maxMs: 0 }]),
    ) as FuzzSummary['steps'],
    errors: new Map(),
    groups: new Map(),
    mutations: {},
    byImageKind: {},
    notes: [],
    clean: 0,
    withErrors: 0,
    withFindings: 0,
    findingCount: 0,
  };
  for (const r of results) tally(t, r, keep, replay);
  const { steps } = t;
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
    cases: {
      total: results.length,
      clean: t.clean,
      withClearErrors: t.withErrors,
      withFindings: t.withFindings,
      byImageKind: t.byImageKind,
    },
    steps,
    caseMs: {
      mean: round(ms.reduce((a, b) => a + b, 0) / (ms.length || 1)),
      p50: round(percentile(ms, 50)),
      p99: round(percentile(ms, 99)),
      max: round(Math.max(0, ...ms)),
    },
    mutations: t.mutations,
    clearErrors: [...t.errors.values()].sort(
      (a, b) => b.cases - a.cases || (a.prefix < b.prefix ? -1 : 1),
    ),
    rewriteVerifyNotes: t.notes.slice(0, 100),
    findings: [...t.groups.values()].sort(
      (a, b) => b.count - a.count || a.first.index - b.first.index,
    ),
    findingCount: t.findingCount,
    workerRestarts: run.restarts,
  };
}

/** Adds one case to the tally: its steps' outcomes and times, its errors and findings. */
function tally(
  t: Tally,
  r: CaseResult,
  keep: (r: CaseResult) => FindingGroup['first'],
  replay: (r: CaseResult) => string,
): void {
  t.byImageKind[r.imageKind] = (t.byImageKind[r.imageKind] ?? 0) + 1;
  for (const k of r.mutations) t.mutations[k] = (t.mutations[k] ?? 0) + 1;
  let f = false,
    e = false;
  const seenErr = new Set<string>(),
    seenSig = new Set<string>();
  for (const s of r.steps) {
    const st = t.steps[s.step];
    st[s.outcome]++;
    st.meanMs += s.ms;
    st.maxMs = Math.max(st.maxMs, s.ms);
    if (s.outcome === 'error') {
      e = true;
      const prefix = errorPrefix(s.message!);
      const g = t.errors.get(prefix) ?? {
        prefix,
        cases: 0,
        steps: {},
        example: s.message!.replace(/^\S*?: /, '<file>: '),
      };
      if (!seenErr.has(prefix)) g.cases++;
      seenErr.add(prefix);
      g.steps[s.step] = (g.steps[s.step] ?? 0) + 1;
      t.errors.set(prefix, g);
    } else if (s.outcome === 'finding') {
      f = true;
      t.findingCount++;
      const sig = signature(s);
      let g = t.groups.get(sig);
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
        t.groups.set(sig, g);
      }
      if (!g.steps.includes(s.step)) g.steps.push(s.step);
      if (!seenSig.has(sig)) {
        g.count++;
        if (g.cases.length < 50) g.cases.push(r.index);
      }
      seenSig.add(sig);
    } else if (s.step === 'rewrite' && s.note?.startsWith('rewritten, but verify')) {
      t.notes.push({ index: r.index, image: r.image, note: s.note });
    }
  }
  if (f) t.withFindings++;
  else if (e) t.withErrors++;
  else t.clean++;
}
