// One fuzz case: a mutated real image run through the ELF reader, the page report, the verifier
// and the rewriter. Every step must end in success or in one clear SpacerError line
// ("<the file>: what; fix"); anything else is a finding.
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ElfFile, SHT_REL, SHT_RELA } from '../elf.js';
import { isSpacerError } from '../errors.js';
import { readPlan, rewritePlan } from '../finish.js';
import type { Plan } from '../link.js';
import { packImage, sameLoadedMemory } from '../pack.js';
import { analyzeImages } from '../report.js';
import {
  analyzeUlib,
  loadImage as loadRewriteImage,
  readRecord,
  rewriteImage,
  type Mode,
  type RewritePlan,
} from '../rewrite.js';
import { verifyImage } from '../verify.js';
import type { Corpus, CorpusImage, ImageKind } from './corpus.js';
import { imageStruct, mutate, type ImageStruct } from './mutate.js';
import { caseRng } from './rng.js';

export const STEPS = ['load', 'analyze', 'verify', 'pack', 'rewrite'] as const;
export type Step = (typeof STEPS)[number];

export type FindingKind =
  | 'exception' // a non-SpacerError escaped (TypeError, RangeError, SyntaxError, RuntimeError from WebAssembly, ...)
  | 'multi-line' // a SpacerError (or a verify problem) of more than one line
  | 'control-chars' // one line, but with control characters (NUL, ESC, ...) from the file in it
  | 'no-path' // a SpacerError that does not start with the file it is about
  | 'masked' // a SpacerError (or a verify problem) that only wraps an internal JS error
  | 'not-atomic' // the rewrite failed but changed the file
  | 'leftover' // the rewrite left temporary files behind
  | 'unhandled-rejection'
  | 'hang' // no result within the per-case timeout
  | 'crash'; // the worker process died

export interface StepResult {
  step: Step;
  outcome: 'ok' | 'error' | 'finding';
  ms: number;
  /** The SpacerError line (error), or the finding's message. */
  message?: string;
  kind?: FindingKind;
  /** Error class of an exception finding. */
  name?: string;
  stack?: string;
  /** For ok: what happened (e.g. "3 problems", "alreadyDone"). */
  note?: string;
}

export interface CaseStart {
  index: number;
  /** Corpus image id, or the path of a checked file. */
  image: string;
  imageKind: ImageKind | 'file';
  /** Mutation classes applied, and what each change did. */
  mutations: string[];
  ops: string[];
  /** The mutated image, and the mutated plan file if any. */
  file: string;
  plan?: string;
}

export interface CaseResult extends CaseStart {
  steps: StepResult[];
  ms: number;
}

/** Kinds of images a case draws, by weight. */
const KIND_WEIGHTS: readonly (readonly [ImageKind, number])[] = [
  ['rewritten', 30],
  ['plain', 35],
  ['default', 10],
  ['elf32', 25],
];

/**
 * Control characters other than newlines (which are 'multi-line'): they do not belong in a message
 * line.
 */
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;
/** Error text that belongs to JavaScript or Node, not to a message written for a user. */
const JS_INTERNAL =
  /Cannot read propert|Cannot set propert|is not a function|is not iterable|is not an object|Cannot convert|Invalid array length|Maximum call stack|is not defined|Cannot mix BigInt|Division by zero|memory access out of bounds|unreachable|RuntimeError|\bERR_[A-Z_]{4,}|Attempt to access memory|Invalid typed array|Invalid string length|\bundefined\b|\bNaN\b|out of range\. It must be|Cannot access|before initialization/;

/**
 * Whether a message wraps an internal JavaScript error or prints a value that is not there
 * ("undefined is missing or moved (recorded at undefined)"). Naming an absent JSON field's value,
 * as in "(spacer: undefined)", is clear enough and allowed.
 */
function internal(m: string): boolean {
  return JS_INTERNAL.test(m.replace(/\(\w[\w.]*: (undefined|null)\)/g, ''));
}

export function classify(step: Step, e: unknown, paths: readonly string[], ms: number): StepResult {
  if (isSpacerError(e)) {
    const m = e.message;
    if (m.includes('\n') || m.includes('\r'))
      return {
        step,
        outcome: 'finding',
        kind: 'multi-line',
        name: 'SpacerError',
        message: m,
        stack: e.stack,
        ms,
      };
    if (CONTROL.test(m))
      return {
        step,
        outcome: 'finding',
        kind: 'control-chars',
        name: 'SpacerError',
        message: m,
        stack: e.stack,
        ms,
      };
    if (!paths.some((p) => m.startsWith(`${p}: `)))
      return {
        step,
        outcome: 'finding',
        kind: 'no-path',
        name: 'SpacerError',
        message: m,
        stack: e.stack,
        ms,
      };
    // The rewriter and the report turn any exception into a SpacerError ("cannot rewrite (...)",
    // "malformed ELF file (...)"): clear only when what they wrap is a message written for people.
    if (internal(m))
      return {
        step,
        outcome: 'finding',
        kind: 'masked',
        name: 'SpacerError',
        message: m,
        stack: e.stack,
        ms,
      };
    return { step, outcome: 'error', message: m, ms };
  }
  const err = e instanceof Error ? e : new Error(`non-Error thrown: ${String(e)}`);
  return {
    step,
    outcome: 'finding',
    kind: 'exception',
    name: err.constructor?.name ?? err.name,
    message: err.message,
    stack: err.stack,
    ms,
  };
}

/** Per-process state: the corpus, each image's structure, and the scratch folder. */
export interface CaseContext {
  seed: string;
  corpus: Corpus;
  dir: string;
  structs: Map<string, ImageStruct>;
  plans: Map<string, string>;
  /** Set by the worker's unhandledRejection handler while a case runs. */
  rejections: unknown[];
  /** Told before each step starts (the watchdog names the step that hung). */
  onStep?: (step: Step) => void;
}

export function caseContext(seed: string, corpus: Corpus, dir: string): CaseContext {
  mkdirSync(dir, { recursive: true });
  return { seed, corpus, dir, structs: new Map(), plans: new Map(), rejections: [] };
}

function struct(ctx: CaseContext, img: CorpusImage): ImageStruct {
  let s = ctx.structs.get(img.id);
  if (!s) {
    s = imageStruct(img.id, ElfFile.load(img.path));
    ctx.structs.set(img.id, s);
  }
  return s;
}

function planText(ctx: CaseContext, img: CorpusImage): string {
  let t = ctx.plans.get(img.plan);
  if (t === undefined) {
    t = readFileSync(img.plan, 'utf8');
    ctx.plans.set(img.plan, t);
  }
  return t;
}

/**
 * The image and the mutation of case `index` (deterministic in seed and index), written to the
 * scratch folder.
 */
export function prepareCase(ctx: CaseContext, index: number): CaseStart {
  const rng = caseRng(ctx.seed, index);
  const kinds = KIND_WEIGHTS.filter(([k]) => ctx.corpus.images.some((i) => i.kind === k));
  const kind = rng.weighted(kinds);
  const img = rng.pick(ctx.corpus.images.filter((i) => i.kind === kind));
  const m = mutate(rng, struct(ctx, img), planText(ctx, img));
  for (const f of readdirSync(ctx.dir)) rmSync(join(ctx.dir, f), { recursive: true, force: true });
  const file = join(ctx.dir, `case-${basename(img.path)}`);
  writeFileSync(file, m.data);
  let plan: string | undefined;
  if (m.plan) {
    plan = join(ctx.dir, `case-${basename(img.plan)}`);
    writeFileSync(plan, m.plan);
  }
  return { index, image: img.id, imageKind: img.kind, mutations: m.kinds, ops: m.ops, file, plan };
}

/** Case `index` of a check run: a given file (and plan), copied to the scratch folder unchanged. */
export function prepareFile(
  ctx: CaseContext,
  index: number,
  path: string,
  plan?: string,
): CaseStart {
  for (const f of readdirSync(ctx.dir)) rmSync(join(ctx.dir, f), { recursive: true, force: true });
  const file = join(ctx.dir, `case-${basename(path)}`);
  copyFileSync(path, file);
  let p: string | undefined;
  if (plan) {
    p = join(ctx.dir, `case-${basename(plan)}`);
    copyFileSync(plan, p);
  }
  return { index, image: path, imageKind: 'file', mutations: [], ops: [], file, plan: p };
}

async function step(
  ctx: CaseContext,
  name: Step,
  paths: readonly string[],
  fn: () => unknown,
): Promise<StepResult> {
  ctx.onStep?.(name);
  const t0 = performance.now();
  try {
    const note = await fn();
    return {
      step: name,
      outcome: 'ok',
      ms: performance.now() - t0,
      ...(typeof note === 'string' ? { note } : {}),
    };
  } catch (e) {
    return classify(name, e, paths, performance.now() - t0);
  }
}

/** Step result `r`, turned into a finding. */
function asFinding(r: StepResult, kind: FindingKind, name: string, message: string): StepResult {
  return { ...r, outcome: 'finding', kind, name, message };
}

/**
 * Verify problems are printed one per line after "spacer: <image>: ": each must be one clear line.
 */
function checkProblems(problems: string[], r: StepResult): StepResult {
  const bad = problems.find((p) => p.includes('\n') || p.includes('\r'));
  if (bad) return asFinding(r, 'multi-line', 'verify problem', bad);
  const ctl = problems.find((p) => CONTROL.test(p));
  if (ctl) return asFinding(r, 'control-chars', 'verify problem', ctl);
  const masked = problems.find(internal);
  if (masked) return asFinding(r, 'masked', 'verify problem', masked);
  return r;
}

/** A step that fails must leave its file as it was (`original`): else that is a finding. */
function checkAtomic(r: StepResult, file: string, original: Buffer, what: string): StepResult {
  if (r.outcome !== 'error' || readFileSync(file).equals(original)) return r;
  return asFinding(
    r,
    'not-atomic',
    'SpacerError',
    `${what} failed but changed the file: ${r.message}`,
  );
}

/**
 * For a rewrite that failed with a catch-all message: re-runs the rewriter's analysis directly
 * on the (unchanged) file to recover the stack of the exception the catch-all hid.
 */
export function probeRewrite(path: string, plan: RewritePlan, mode: Mode): string | undefined {
  try {
    const elf = loadRewriteImage(path);
    readRecord(elf);
    for (const u of plan.ulibs) analyzeUlib(elf, u, mode);
  } catch (e) {
    if (!isSpacerError(e)) return (e as Error).stack ?? String(e);
  }
  return undefined;
}

/** Packs a copy of `file`: one clear error and the copy unchanged, or the same loaded memory. */
async function packStep(ctx: CaseContext, file: string): Promise<StepResult> {
  const packed = join(ctx.dir, `pack-${basename(file)}`);
  copyFileSync(file, packed);
  const original = readFileSync(packed);
  let pk = await step(ctx, 'pack', [packed], () => {
    const r = packImage(packed);
    if (r.alreadyPacked) return 'nothing to pack';
    if (!sameLoadedMemory(new ElfFile(packed, original), ElfFile.load(packed)))
      throw new Error(`packing changed the loaded memory (${r.before} -> ${r.after} bytes)`);
    return `packed, ${r.before} -> ${r.after} bytes`;
  });
  pk = checkAtomic(pk, packed, original, 'packing');
  rmSync(packed, { force: true });
  return pk;
}

/** Runs the steps of a prepared case. */
export async function runSteps(ctx: CaseContext, c: CaseStart): Promise<StepResult[]> {
  const file = c.file;
  const steps: StepResult[] = [];

  steps.push(
    await step(ctx, 'load', [file], () => {
      const elf = ElfFile.load(file);
      void [elf.header, elf.loads, elf.is64];
      for (const s of elf.sections) {
        elf.contents(s);
        if (s.type === SHT_REL || s.type === SHT_RELA) elf.relocations(s);
      }
      elf.symbols();
      for (const s of elf.sections) elf.relocationsFor(s);
      return `${elf.sections.length} sections, ${elf.segments.length} segments`;
    }),
  );

  steps.push(
    await step(ctx, 'analyze', [file], () => {
      const r = analyzeImages([{ path: file }]);
      JSON.stringify(r);
      return `${r.pages} pages`;
    }),
  );

  let problems: string[] | undefined;
  let verify = await step(ctx, 'verify', [file], () => {
    problems = verifyImage(file);
    return problems.length ? `${problems.length} problem(s)` : 'verified';
  });
  if (verify.outcome === 'ok' && problems) verify = checkProblems(problems, verify);
  steps.push(verify);

  // Packing (spacer compact --pack), on a copy of a stripped image (a .dbg is never packed): one
  // error line and the file unchanged, or a file that loads the same memory.
  if (c.imageKind !== 'rewritten' && c.imageKind !== 'plain') steps.push(await packStep(ctx, file));

  // The rewrite, on a copy, with the link plan (the image's own, or its mutated copy).
  const copy = join(ctx.dir, `rw-${basename(file)}`);
  copyFileSync(file, copy);
  // A checked file without a plan: an empty plan (loads the image, reads its record, checks
  // relocations).
  const planPath = c.plan ?? ctx.corpus.images.find((i) => i.id === c.image)?.plan;
  const paths = planPath ? [copy, planPath] : [copy];
  const before = readFileSync(copy);
  let rp: RewritePlan | undefined, mode: Mode | undefined;
  let rw = await step(ctx, 'rewrite', paths, async () => {
    if (planPath) {
      const plan: Plan = readPlan(planPath);
      if (!plan.rewrite || plan.rewrite === 'none') return 'no rewrite in the plan';
      rp = rewritePlan(plan);
      mode = plan.rewrite as Mode;
    } else {
      rp = { ulibs: [] };
      mode = 'external';
    }
    const st = await rewriteImage(copy, rp, mode);
    if (st.alreadyDone) return 'already done';
    const p = verifyImage(copy);
    return p.length
      ? `rewritten, but verify finds ${p.length} problem(s): ${p[0]}`
      : `rewritten (${st.sites} sites)`;
  });
  rw = checkAtomic(rw, copy, before, 'the rewrite');
  if (rw.outcome === 'finding' && rw.kind === 'masked' && rp && mode) {
    const stack = probeRewrite(copy, rp, mode);
    if (stack) rw.stack = `(recovered by re-running the rewriter's analysis)\n${stack}`;
  }
  const left = readdirSync(ctx.dir).filter(
    (f) =>
      f.includes('.spacer-rewrite-') || f.includes('.spacer.tmp') || f.includes('.spacer-plan'),
  );
  if (left.length && rw.outcome !== 'finding')
    rw = asFinding(rw, 'leftover', 'files', `temporary files left behind: ${left.join(', ')}`);
  steps.push(rw);
  return steps;
}

/**
 * Prepares and runs case `index` (or checks `file.path`); `onStart` is told what is about to run
 * (for the watchdog).
 */
export async function runCase(
  ctx: CaseContext,
  index: number,
  onStart: (c: CaseStart) => void = () => {},
  file?: { path: string; plan?: string },
): Promise<CaseResult> {
  const t0 = performance.now();
  const c = file ? prepareFile(ctx, index, file.path, file.plan) : prepareCase(ctx, index);
  onStart(c);
  ctx.rejections.length = 0;
  const steps = await runSteps(ctx, c);
  // Let late rejections of this case surface before it is reported.
  await new Promise((r) => setTimeout(r, 0));
  if (ctx.rejections.length) {
    const e = ctx.rejections[0] as Error;
    steps.push({
      step: 'rewrite',
      outcome: 'finding',
      kind: 'unhandled-rejection',
      name: e?.constructor?.name ?? 'rejection',
      message: String(e?.message ?? e),
      stack: e?.stack,
      ms: 0,
    });
  }
  return { ...c, steps, ms: performance.now() - t0 };
}
