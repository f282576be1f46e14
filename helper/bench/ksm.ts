// Real KSM, as bench/README.md describes: save every setting, set smart_scan=0, a high
// pages_to_scan and use_zero_pages=1, run, wait for convergence, read the counters, unmerge
// (run=2) and restore every setting (run last), also on failure and on SIGINT/SIGTERM.
import {
  accessSync,
  constants,
  existsSync,
  readFileSync,
  readdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

export const KSM_DIR = '/sys/kernel/mm/ksm';

/** The counters the benchmark reads after convergence. */
export interface KsmCounters {
  pages_shared: number;
  pages_sharing: number;
  pages_unshared: number;
  pages_volatile: number;
  /** `ksm_zero_pages` (pages merged into the kernel's zero page, use_zero_pages=1). */
  zero_pages: number;
  general_profit: number | null;
  full_scans: number;
  stable_node_chains: number;
  stable_node_dups: number;
}

/** Why real KSM cannot run here, or null when it can. */
export function ksmUnavailable(dir = KSM_DIR): string | null {
  if (process.platform !== 'linux') return `not Linux (${process.platform})`;
  if (!existsSync(join(dir, 'run'))) return `${dir} does not exist (kernel without CONFIG_KSM)`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    return `not running as root (uid ${process.getuid()})`;
  try {
    accessSync(join(dir, 'run'), constants.W_OK);
  } catch {
    return `${dir}/run is not writable (read-only sysfs, e.g. in a container)`;
  }
  return null;
}

/** A setting's value as it must be written back: `[none] scan-time` → `none`. */
function settingValue(raw: string): string {
  const s = raw.trim();
  const m = /\[([^\]]+)\]/.exec(s);
  return m ? m[1] : s;
}

/** Every writable KSM setting and its value (the read-only counters are not settings). */
export function readKsmSettings(dir = KSM_DIR): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) {
    const p = join(dir, f);
    const st = statSync(p);
    if (!st.isFile() || (st.mode & 0o200) === 0) continue;
    try {
      out[f] = settingValue(readFileSync(p, 'utf8'));
    } catch {
      /* unreadable: not a setting we can restore */
    }
  }
  return out;
}

function readNum(dir: string, f: string): number | null {
  try {
    const v = Number(readFileSync(join(dir, f), 'utf8').trim());
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

export function readKsmCounters(dir = KSM_DIR): KsmCounters {
  const n = (f: string) => readNum(dir, f) ?? 0;
  return {
    pages_shared: n('pages_shared'),
    pages_sharing: n('pages_sharing'),
    pages_unshared: n('pages_unshared'),
    pages_volatile: n('pages_volatile'),
    zero_pages: n('ksm_zero_pages'),
    general_profit: readNum(dir, 'general_profit'),
    full_scans: n('full_scans'),
    stable_node_chains: n('stable_node_chains'),
    stable_node_dups: n('stable_node_dups'),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ConvergeResult {
  counters: KsmCounters;
  converged: boolean;
  full_scans: number;
  ms: number;
}

/**
 * A KSM session: saves every setting when opened, configures KSM for measuring, and restores
 * everything in `close()` (idempotent, synchronous, so it also runs from a signal handler).
 */
export class KsmSession {
  readonly saved: Record<string, string>;
  private closed = false;
  private readonly onSignal: (sig: NodeJS.Signals) => void;
  private cleanups: (() => void)[] = [];

  constructor(
    readonly dir = KSM_DIR,
    readonly pagesToScan = 20000,
  ) {
    this.saved = readKsmSettings(dir);
    this.onSignal = (sig) => {
      this.close();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    };
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
    process.once('exit', this.closeOnExit);
    try {
      // The advisor would change pages_to_scan under us; smart_scan would skip unchanged pages.
      if ('advisor_mode' in this.saved) this.write('advisor_mode', 'none');
      if ('smart_scan' in this.saved) this.write('smart_scan', '0');
      this.write('use_zero_pages', '1');
      this.write('pages_to_scan', String(pagesToScan));
      this.write('sleep_millisecs', '10');
      this.write('run', '1');
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private readonly closeOnExit = () => this.close();

  /** Runs `fn` at close, before the settings are restored (e.g. kill the processes). */
  onClose(fn: () => void): void {
    this.cleanups.push(fn);
  }

  write(f: string, v: string): void {
    writeFileSync(join(this.dir, f), v);
  }

  /** Unmerges every KSM page (run=2), then resumes scanning (run=1). */
  unmergeAll(): void {
    this.write('run', '2');
    this.write('run', '1');
  }

  /**
   * Waits until at least `minScans` full scans have completed since the call and the counters
   * read at the last two full-scan boundaries are equal.
   */
  async converge(
    opts: { timeoutMs?: number; minScans?: number; pollMs?: number } = {},
  ): Promise<ConvergeResult> {
    const t0 = Date.now();
    const timeout = opts.timeoutMs ?? 600_000,
      minScans = opts.minScans ?? 3;
    const key = (c: KsmCounters) =>
      `${c.pages_shared}/${c.pages_sharing}/${c.pages_unshared}/${c.zero_pages}`;
    const start = readKsmCounters(this.dir).full_scans;
    let last = start,
      prevKey = '',
      c = readKsmCounters(this.dir);
    while (Date.now() - t0 < timeout) {
      await sleep(opts.pollMs ?? 100);
      c = readKsmCounters(this.dir);
      if (c.full_scans === last) continue;
      last = c.full_scans;
      const k = key(c);
      if (c.full_scans - start >= minScans && k === prevKey && c.pages_volatile === 0) {
        return {
          counters: c,
          converged: true,
          full_scans: c.full_scans - start,
          ms: Date.now() - t0,
        };
      }
      prevKey = k;
    }
    return { counters: c, converged: false, full_scans: c.full_scans - start, ms: Date.now() - t0 };
  }

  /** Unmerges, restores every saved setting (run last), removes the signal handlers. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch {
        /* keep restoring */
      }
    }
    process.removeListener('SIGINT', this.onSignal);
    process.removeListener('SIGTERM', this.onSignal);
    process.removeListener('exit', this.closeOnExit);
    const errors: string[] = [];
    try {
      this.write('run', '2');
    } catch (e) {
      errors.push(`run=2: ${(e as Error).message}`);
    }
    const current = readKsmSettings(this.dir);
    for (const [f, v] of Object.entries(this.saved)) {
      if (f === 'run' || current[f] === v) continue;
      try {
        this.write(f, v);
      } catch (e) {
        errors.push(`${f}=${v}: ${(e as Error).message}`);
      }
    }
    try {
      this.write('run', this.saved.run ?? '0');
    } catch (e) {
      errors.push(`run=${this.saved.run}: ${(e as Error).message}`);
    }
    if (errors.length)
      process.stderr.write(`bench: could not restore every KSM setting: ${errors.join('; ')}\n`);
  }
}
