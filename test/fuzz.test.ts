// The fuzz harness (npm run fuzz), short and deterministic: 300 mutated real images through the
// ELF reader, the page report, the verifier and the rewriter must end in success or one clear
// SpacerError line each (this CAN fail: every finding is a bug in the helper, reported with its
// case number and reproducer). The minimal reproducers of known findings (test/fixtures/fuzz,
// tiny hand-made ELF files and link plans) must each end the same way (this fails until the
// helper is fixed). Also: the harness's own rules, determinism, and its watchdog.
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SpacerError } from '../helper/errors.js';
import { caseContext, classify, prepareCase, type FindingKind } from '../helper/fuzz/case.js';
import { buildCorpus, type Corpus } from '../helper/fuzz/corpus.js';
import { reproducerFiles, type Reproducer } from '../helper/fuzz/reproducers.js';
import { checkFiles, runFuzz, type FuzzSummary } from '../helper/fuzz/run.js';
import { fixtures, tempDir } from './_fixtures.js';

const REPRO = join(fixtures, 'fuzz');

const out = tempDir('fuzz');
const images = join(out, 'images');
let corpus: Corpus;

test.before(async () => {
  corpus = await buildCorpus(images);
});

test('the corpus has every kind of real image: finished, plain (rewrites to the finished one), default, ELF32', (t) => {
  const kinds = new Set(corpus.images.map((i) => i.kind));
  t.deepEqual([...kinds].sort(), ['default', 'elf32', 'plain', 'rewritten']);
  t.true(corpus.images.length >= 4 * 7);
});

test('outcomes: one SpacerError line naming the file is clear; anything else is a finding', (t) => {
  const f = '/x/case.dbg';
  t.is(
    classify('load', new SpacerError(`${f}: truncated ELF file; rebuild it`), [f], 1).outcome,
    'error',
  );
  t.is(
    classify(
      'load',
      new SpacerError(
        `${f}: cannot rewrite (section size 9007199254740993 is out of range); the image was left unchanged`,
      ),
      [f],
      1,
    ).outcome,
    'error',
  );
  const cases: [unknown, FindingKind][] = [
    [new TypeError("Cannot read properties of undefined (reading 'flags')"), 'exception'],
    [new RangeError('value 18446744073709551615 is out of range'), 'exception'],
    [new SpacerError(`${f}: bad JSON (Unexpected token\n  {); fix it`), 'multi-line'],
    [new SpacerError('truncated ELF file; rebuild it'), 'no-path'],
    [
      new SpacerError(
        `${f}: .spacer.plan is not valid JSON (Unexpected token 'x', "x\u0006\u0000"); run spacer finish`,
      ),
      'control-chars',
    ],
    [
      new SpacerError(
        `${f}: cannot rewrite (Cannot read properties of undefined (reading 'text')); the image was left unchanged`,
      ),
      'masked',
    ],
    ['a string', 'exception'],
  ];
  for (const [e, kind] of cases) {
    const r = classify('rewrite', e, [f], 1);
    t.is(r.outcome, 'finding', String(e));
    t.is(r.kind, kind, String(e));
  }
});

test('a case is the same mutation of the same image for the same seed and number', (t) => {
  const a = caseContext('s1', corpus, join(out, 'det-a')),
    b = caseContext('s1', corpus, join(out, 'det-b')),
    c = caseContext('s2', corpus, join(out, 'det-c'));
  let differs = 0;
  for (let i = 0; i < 40; i++) {
    const x = prepareCase(a, i),
      y = prepareCase(b, i),
      z = prepareCase(c, i);
    t.is(x.image, y.image);
    t.deepEqual(x.ops, y.ops);
    t.true(readFileSync(x.file).equals(readFileSync(y.file)), `case ${i}`);
    if (x.ops.join() !== z.ops.join()) differs++;
  }
  t.true(differs > 30, 'another seed, other mutations');
});

test.serial(
  'the watchdog turns a hung case and a dead worker into findings and carries on',
  async (t) => {
    const s = await runFuzz({
      iterations: 6,
      seed: 'watchdog',
      out: join(out, 'watchdog'),
      images,
      jobs: 2,
      timeoutMs: 3000,
      selfTest: { hang: [1], crash: [3] },
    });
    t.is(s.cases.total, 6);
    const kinds = s.findings.map((f) => `${f.kind}:${f.cases.join(',')}`).sort();
    t.true(kinds.includes('hang:1'), kinds.join(' '));
    t.true(kinds.includes('crash:3'), kinds.join(' '));
    t.true(s.workerRestarts >= 2);
    const json = JSON.parse(
      readFileSync(join(out, 'watchdog', 'fuzz.json'), 'utf8'),
    ) as FuzzSummary;
    t.is(json.cases.total, 6);
  },
);

test.serial(
  '300 mutated real images: every step ends in success or one clear error line (no finding)',
  async (t) => {
    const s = await runFuzz({
      iterations: 300,
      seed: 'ci-1',
      out: join(out, 'run'),
      images,
      jobs: 2,
      timeoutMs: 30_000,
    });
    t.is(s.cases.total, 300);
    t.true(s.cases.clean > 0, 'some cases succeed in every step');
    t.true(s.cases.withClearErrors > 0, 'some cases end in clear errors');
    for (const [step, v] of Object.entries(s.steps))
      t.true(v.ok > 0 && v.error > 0, `${step}: ${v.ok} successes, ${v.error} clear errors`);
    t.deepEqual(
      s.findings.map(
        (f) =>
          `${f.kind}${f.name ? ` ${f.name}` : ''} in ${f.steps.join('+')} (${f.count} cases, first ${f.first.index}: ${f.first.ops.join('; ')}): ${f.message}`,
      ),
      [],
    );
  },
);

test('test/fixtures/fuzz holds exactly what helper/fuzz/reproducers.ts writes', (t) => {
  const want = reproducerFiles();
  t.deepEqual(readdirSync(REPRO).sort(), [...want.keys()].sort());
  for (const [name, data] of want)
    t.true(
      readFileSync(join(REPRO, name)).equals(data),
      `${name} (npm run fuzz -- --write-reproducers test/fixtures/fuzz)`,
    );
});

test('every minimal reproducer of a known finding ends in success or one clear error line', async (t) => {
  const list = JSON.parse(readFileSync(join(REPRO, 'reproducers.json'), 'utf8')) as Reproducer[];
  const s = await checkFiles(
    list.map((r) => ({
      path: join(REPRO, r.file),
      ...(r.plan ? { plan: join(REPRO, r.plan) } : {}),
    })),
    { out: join(out, 'check'), jobs: 2, timeoutMs: 5000 },
  );
  t.is(s.cases.total, list.length);
  const name = (p: string) => p.replace(`${REPRO}/`, '');
  const findings = s.files!.flatMap((f) =>
    f.steps
      .filter((x) => x.outcome === 'finding')
      .map(
        (x) =>
          `${name(f.file)}${f.plan ? ` --plan ${name(f.plan)}` : ''}: ${x.step}: ${x.kind}${x.name ? ` ${x.name}` : ''}: ${(x.message ?? '').split('\n')[0].replace(/^\S*\/(?:rw-)?case-\S*?: /, '<file>: ')}`,
      ),
  );
  t.deepEqual(findings, []);
});
