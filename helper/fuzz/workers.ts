// The fuzzer's own pool: one forked worker process per lane, each case under a watchdog. It is not
// util/pool.ts: a lane owns a process that the watchdog kills and that is started again after a
// hang, a crash or a wasm fault, and a failing case is a finding to record, never an error that
// stops the run.
import { fork, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CaseResult, CaseStart, Step, StepResult } from './case.js';
import type { FuzzOptions, Meta } from './summary.js';
import type { SelfTest, ToWorker } from './worker.js';

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
      // The worker hung, threw outside a case or died: a finding in the step it was in, and a
      // fresh worker for the next case.
      const failed = (f: Pick<StepResult, 'kind' | 'name' | 'message' | 'stack'>) =>
        done({
          result: null,
          restart: true,
          failure: { step: current, outcome: 'finding', ...f, ms: performance.now() - t0 },
        });
      const timer = setTimeout(() => {
        this.kill();
        failed({ kind: 'hang', name: 'timeout', message: `no result within ${timeoutMs} ms` });
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
          failed({
            kind: 'exception',
            name: m.name,
            message: `uncaught in the worker: ${m.message}`,
            stack: m.stack,
          });
        }
      };
      this.exitListener = (code, sig) => {
        failed({
          kind: 'crash',
          name: 'exit',
          message: `the worker died (${code !== null ? `exit ${code}` : sig}): ${this.stderr.trim().split('\n').slice(-3).join(' | ')}`,
        });
      };
      this.send({ type: 'case', index, file });
    });
  }
}

/**
 * Runs cases 0..n-1 in a pool of workers under the watchdog; `fallback` describes a case whose
 * worker never said.
 */
export async function runPool(
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
