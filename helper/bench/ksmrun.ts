// Real KSM (bench/README.md, 'The KSM procedure'): per layout, one loader process per image (the
// page model, exactly), then qemu guests; the counters after convergence next to the model's
// prediction. ksm.ts holds the session (settings saved, set and restored).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { packageRoot } from '../paths.js';
import type { BuiltImage } from '../pipeline.js';
import { pool } from '../util/pool.js';
import { PAGE } from '../util/units.js';
import { qemuArgs } from '../workspace/index.js';
import type { Built } from './build.js';
import { type KsmCounters, KsmSession, ksmUnavailable, readKsmSettings } from './ksm.js';
import { ksmExpectation, roOnlyScans, type Scanned, type Scans } from './model.js';
import { fmtDur, lap, MiB, Progress, r3 } from './progress.js';
import type { BenchLayout, BenchResult, BenchRun, GuestFigures } from './types.js';

function spawnReady(
  cmd: string,
  args: string[],
  ready: RegExp,
  timeoutMs: number,
): Promise<ChildProcess> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '',
      err = '';
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      rej(
        new Error(
          `${cmd} ${args.join(' ').slice(0, 120)}: not ready after ${timeoutMs} ms; output: ${out.slice(-200)}`,
        ),
      );
    }, timeoutMs);
    p.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        res(p);
      }
    });
    p.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    p.on('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    p.on('exit', (code, sig) => {
      clearTimeout(timer);
      rej(
        new Error(
          `${cmd} exited (${code ?? sig}) before it was ready: ${(err || out).trim().slice(-300)}`,
        ),
      );
    });
  });
}

async function killAll(procs: ChildProcess[]): Promise<void> {
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((res) => {
          if (p.exitCode !== null || p.signalCode !== null) return res();
          p.once('exit', () => res());
          p.kill('SIGKILL');
        }),
    ),
  );
  procs.length = 0;
}

async function buildTools(work: string): Promise<{ loader: string; nothp: string }> {
  const bin = join(work, 'bin');
  mkdirSync(bin, { recursive: true });
  const src = join(packageRoot(), 'bench');
  const out = { loader: join(bin, 'loader'), nothp: join(bin, 'nothp') };
  for (const [name, exe] of Object.entries(out)) {
    await execa('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', exe, join(src, `${name}.c`)]);
  }
  return out;
}

function pick(c: KsmCounters) {
  return {
    pages_shared: c.pages_shared,
    pages_sharing: c.pages_sharing,
    pages_unshared: c.pages_unshared,
    zero_pages: c.zero_pages,
    general_profit: c.general_profit,
  };
}

/**
 * Real KSM when it can run here: loaders for every layout, then `run.guests` qemu guests per
 * layout; otherwise the reason goes into the result and the log.
 */
export async function realKsm(
  run: BenchRun,
  result: BenchResult,
  built: Built,
  nEx: number,
  scans: Scans,
): Promise<void> {
  const { log } = run;
  const why = !run.ksm ? 'disabled with --no-ksm' : ksmUnavailable();
  if (why) {
    result.ksm = { ran: false, reason: why };
    log(`bench: real KSM not run: ${why}; the page model alone is reported`);
    return;
  }
  const t = Date.now();
  const tools = await buildTools(run.work);
  const before = readKsmSettings();
  const maxSharing = Number(before.max_page_sharing ?? 256) || 256;
  result.ksm = { ran: true, settings_before: before, max_page_sharing: maxSharing };
  const procs: ChildProcess[] = [];
  const session = new KsmSession();
  session.onClose(() => {
    for (const c of procs) c.kill('SIGKILL');
  });
  const ctx: KsmContext = { log, session, procs, maxSharing };
  try {
    for (const l of result.layouts_supported)
      result.layouts[l]!.ksm = await ksmLoaders(ctx, l, built[l]!.slice(nEx), scans[l]!, tools);
    // Only read-only segments mergeable: KSM sees those pages alone.
    for (const l of result.layouts_supported) {
      const ro = result.mergeable_ro_only?.[l];
      if (ro)
        ro.ksm = await ksmLoaders(
          ctx,
          l,
          built[l]!.slice(nEx),
          roOnlyScans(scans[l]!),
          tools,
          true,
        );
    }
    if (run.guests > 0) {
      for (const l of result.layouts_supported) {
        const images = built[l]!.slice(nEx, nEx + run.guests);
        const model = ksmExpectation(scans[l]!.slice(0, run.guests), maxSharing).distinct;
        result.layouts[l]!.guests = await ksmGuests(ctx, l, images, model, tools);
      }
    }
  } finally {
    await killAll(procs);
    session.close();
  }
  const after = readKsmSettings();
  result.ksm.settings_after = after;
  result.ksm.settings_restored = JSON.stringify(after) === JSON.stringify(before);
  lap(run.durations, 'ksm', t);
}

interface KsmContext {
  log: (line: string) => void;
  session: KsmSession;
  /** The running loaders or guests (killed when the session closes, also on a signal). */
  procs: ChildProcess[];
  maxSharing: number;
}

type Tools = Awaited<ReturnType<typeof buildTools>>;

/** One loader per image, KSM to convergence, the counters against the model's prediction. */
async function ksmLoaders(
  { log, session, procs, maxSharing }: KsmContext,
  l: BenchLayout,
  images: BuiltImage[],
  scans: Scanned[],
  tools: Tools,
  roOnly = false,
) {
  const what = roOnly ? `${l} (read-only segments only)` : l;
  const kp = new Progress(`KSM ${what}: loaders`, images.length, log);
  await pool(images, 16, async (b) => {
    const args = roOnly ? ['--ro-only', b.elf] : [b.elf];
    procs.push(await spawnReady(tools.loader, args, /^ready \d+/m, 60_000));
    kp.tick();
  });
  const exp = ksmExpectation(scans, maxSharing);
  log(`bench: KSM ${what}: ${images.length} loaders ready, waiting for convergence`);
  const c = await session.converge({ timeoutMs: 900_000 });
  await killAll(procs);
  session.unmergeAll();
  const kept = c.counters.pages_shared + c.counters.pages_unshared;
  const dev = exp.kept ? ((kept - exp.kept) / exp.kept) * 100 : 0;
  log(
    `bench: KSM ${what}: shared ${c.counters.pages_shared} + unshared ${c.counters.pages_unshared} = ${kept}, model ${exp.kept} (D ${exp.distinct}); sharing ${c.counters.pages_sharing}, zero ${c.counters.zero_pages} (model ${exp.zero}); ${c.converged ? 'converged' : 'NOT converged'} in ${fmtDur(c.ms)}`,
  );
  return {
    ...pick(c.counters),
    converged: c.converged,
    full_scans: c.full_scans,
    ms: c.ms,
    model_distinct_pages: exp.distinct,
    model_expected_kept: exp.kept,
    model_zero_pages: exp.zero,
    deviation_pct: r3(dev),
    model_agrees: c.converged && Math.abs(dev) <= 1,
  };
}

/** The images booted as qemu guests (THP off), KSM to convergence; a failure is recorded. */
async function ksmGuests(
  { log, session, procs }: KsmContext,
  l: BenchLayout,
  images: BuiltImage[],
  modelDistinct: number,
  tools: Tools,
): Promise<GuestFigures> {
  const g: GuestFigures = {
    guests: images.length,
    alive: 0,
    pages_shared: 0,
    pages_sharing: 0,
    pages_unshared: 0,
    zero_pages: 0,
    general_profit: null,
    converged: false,
    ms: 0,
    model_distinct_pages: modelDistinct,
    memory_mib: 0,
  };
  try {
    const gp = new Progress(`KSM ${l}: qemu guests`, images.length, log);
    await pool(images, 4, async (b) => {
      procs.push(
        await spawnReady(
          tools.nothp,
          [
            'qemu-system-x86_64',
            ...qemuArgs(b.elf, { extraArgs: ['-append', 'stay'], mergeable: true }),
          ],
          /stay: halted/,
          120_000,
        ),
      );
      g.alive++;
      gp.tick();
    });
    const c = await session.converge({ timeoutMs: 900_000 });
    Object.assign(g, pick(c.counters), {
      converged: c.converged,
      ms: c.ms,
      memory_mib: r3(((c.counters.pages_shared + c.counters.pages_unshared) * PAGE) / MiB),
    });
    log(
      `bench: KSM ${l}: ${g.alive} guests: shared ${g.pages_shared} + unshared ${g.pages_unshared}, sharing ${g.pages_sharing}, zero ${g.zero_pages}; ${c.converged ? 'converged' : 'NOT converged'} in ${fmtDur(c.ms)}`,
    );
  } catch (e) {
    g.error = (e as Error).message.split('\n')[0];
    log(`bench: KSM ${l}: guests failed: ${g.error}`);
  } finally {
    await killAll(procs);
    session.unmergeAll();
  }
  return g;
}
