// A fuzz worker process: runs the cases the parent sends, one at a time, and reports when each
// starts (so the parent's watchdog knows what hung) and how it ended.
import { readFileSync } from 'node:fs';
import { caseContext, runCase, type CaseContext } from './case.js';
import type { Corpus } from './corpus.js';

/**
 * The harness's own test: cases that hang (busy loop) or kill the worker, to prove the watchdog.
 */
export interface SelfTest {
  hang?: number[];
  crash?: number[];
}

export type ToWorker =
  | { type: 'init'; seed: string; corpus: string | null; dir: string; selfTest?: SelfTest }
  | { type: 'case'; index: number; file?: { path: string; plan?: string } };

let ctx: CaseContext | undefined;
let selfTest: SelfTest = {};
const send = (m: unknown) => process.send!(m);

process.on('unhandledRejection', (e) => {
  if (ctx) ctx.rejections.push(e);
});
process.on('uncaughtException', (e) => {
  send({
    type: 'fatal',
    name: e?.constructor?.name ?? 'Error',
    message: String(e?.message ?? e),
    stack: e?.stack,
  });
  setTimeout(() => process.exit(70), 50);
});

process.on('message', async (m: ToWorker) => {
  if (m.type === 'init') {
    const corpus: Corpus = m.corpus
      ? JSON.parse(readFileSync(m.corpus, 'utf8'))
      : { dir: '', images: [] };
    ctx = caseContext(m.seed, corpus, m.dir);
    ctx.onStep = (step) => send({ type: 'step', step });
    selfTest = m.selfTest ?? {};
    send({ type: 'ready' });
  } else if (m.type === 'case') {
    const r = await runCase(
      ctx!,
      m.index,
      (c) => {
        send({ type: 'start', start: c });
        if (selfTest.hang?.includes(m.index)) for (;;);
        if (selfTest.crash?.includes(m.index)) process.exit(99);
      },
      m.file,
    );
    send({ type: 'done', result: r });
  }
});
process.on('disconnect', () => process.exit(0));
