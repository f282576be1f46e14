/** Boots an example image under qemu (TCG) and captures its serial output. */
import { execa } from 'execa';

export interface BootOptions {
  /** Kill qemu after this long (default 30 s). */
  timeoutMs?: number;
  /** Guest memory, default "64M". */
  memory?: string;
  /** qemu binary, default qemu-system-x86_64. */
  qemu?: string;
  /** Strings of the serial output to time: BootResult.markMs says when each first appeared. */
  marks?: string[];
  /** Extra qemu arguments. */
  extraArgs?: string[];
  /**
   * Offer the guest's memory to KSM (qemu's default; the bench's guests). Off by default: a boot
   * that runs while the bench measures KSM would add its pages to the host's counters.
   */
  mergeable?: boolean;
}

export interface BootResult {
  /** Serial (COM1) output, with \r\n turned into \n. */
  output: string;
  /**
   * The guest's exit code: what it wrote to isa-debug-exit (qemu exits with
   * (code << 1) | 1). 0 = success. -1 if the guest did not exit that way
   * (triple fault / reset with -no-reboot, qemu error, timeout).
   */
  exitCode: number;
  /** qemu's own exit status (1 = guest wrote 0 to isa-debug-exit). */
  qemuStatus: number | undefined;
  timedOut: boolean;
  /** exitCode === 0 && !timedOut */
  success: boolean;
  durationMs: number;
  /**
   * With BootOptions.marks: ms from the start of qemu to each marker's arrival (undefined: never
   * seen).
   */
  markMs?: (number | undefined)[];
  /** qemu's stderr, for diagnostics. */
  stderr: string;
}

/** The qemu command line used by bootImage (without the binary). */
export function qemuArgs(elfPath: string, opts: BootOptions = {}): string[] {
  return [
    '-machine',
    opts.mergeable ? 'pc' : 'pc,mem-merge=off',
    '-accel',
    'tcg',
    '-cpu',
    'qemu64',
    '-m',
    opts.memory ?? '64M',
    '-nodefaults',
    '-no-reboot',
    '-display',
    'none',
    '-serial',
    'stdio',
    '-monitor',
    'none',
    '-device',
    'isa-debug-exit,iobase=0xf4,iosize=0x04',
    '-kernel',
    elfPath,
    ...(opts.extraArgs ?? []),
  ];
}

/**
 * Boots a multiboot ELF32 image (see linkImage) with qemu TCG, no firmware
 * output on the serial port (-nodefaults, no -nographic), and returns the
 * serial output and the normalised guest exit code.
 */
export async function bootImage(elfPath: string, opts: BootOptions = {}): Promise<BootResult> {
  const start = process.hrtime.bigint();
  const sub = execa(opts.qemu ?? 'qemu-system-x86_64', qemuArgs(elfPath, opts), {
    reject: false,
    stdin: 'ignore',
    timeout: opts.timeoutMs ?? 30_000,
    killSignal: 'SIGKILL',
    stripFinalNewline: false,
    encoding: 'utf8',
  });
  // When each marker first reached the serial port (the guest's own phases, without qemu's start).
  const marks = opts.marks ?? [];
  const markMs: (number | undefined)[] = marks.map(() => undefined);
  if (marks.length) {
    let seen = '';
    sub.stdout?.on('data', (chunk: Buffer | string) => {
      const now = Number(process.hrtime.bigint() - start) / 1e6;
      seen += String(chunk);
      marks.forEach((m, k) => {
        if (markMs[k] === undefined && seen.includes(m)) markMs[k] = now;
      });
    });
  }
  const r = await sub;
  const durationMs = Number(process.hrtime.bigint() - start) / 1e6;
  const qemuStatus = r.exitCode;
  const timedOut = r.timedOut === true;
  const exitCode =
    !timedOut && qemuStatus !== undefined && qemuStatus % 2 === 1 ? (qemuStatus - 1) / 2 : -1;
  return {
    output: String(r.stdout ?? '').replace(/\r\n/g, '\n'),
    exitCode,
    qemuStatus,
    timedOut,
    success: exitCode === 0,
    durationMs,
    ...(marks.length ? { markMs } : {}),
    stderr: String(r.stderr ?? ''),
  };
}

/**
 * Why a boot did not give `expected` (null: it did), in one line: qemu's exit, a timeout, or
 * where the serial output first differs.
 */
export function bootFailure(r: BootResult, expected: string | null): string | null {
  // qemu's own complaint, if any (a qemu that cannot start also exits with status 1, like a
  // guest that wrote 0 to isa-debug-exit).
  const err = r.stderr.trim().split('\n')[0];
  const qemu = err ? ` (qemu: ${err})` : '';
  if (r.timedOut)
    return `timed out after ${(r.durationMs / 1000).toFixed(1)} s with ${r.output.length} bytes of output${qemu}`;
  if (!r.success) {
    const why =
      r.exitCode >= 0
        ? `the guest exited with ${r.exitCode}`
        : `qemu ended with status ${r.qemuStatus ?? 'none (killed by a signal)'}`;
    return `${why}, ${r.output.length} bytes of output${qemu}`;
  }
  if (expected !== null && r.output !== expected) {
    let k = 0;
    while (k < r.output.length && r.output[k] === expected[k]) k++;
    const line = r.output.slice(0, k).split('\n').length;
    return `output differs from the expected at line ${line}: ${JSON.stringify(r.output.slice(k, k + 40))} where ${JSON.stringify(expected.slice(k, k + 40))} was expected${qemu}`;
  }
  return null;
}

export interface CheckedBoot {
  result: BootResult;
  /** bootFailure of the boot returned (null: it gave the expected output). */
  failure: string | null;
  /** Set when a first boot failed this way and the result is a second boot's. */
  firstFailure?: string;
}

/**
 * Boots an image that should print `expected` (null: only exit 0), and boots it once more if the
 * first boot fails. The example guests run without interrupts or clocks, so what they do is fixed
 * by their bytes: a failure that does not come back is the host's (a qemu that could not start, a
 * machine too loaded to run it in time). Callers report `firstFailure`; a failure that comes back
 * is the image's.
 */
export async function bootExpecting(
  elfPath: string,
  expected: string | null,
  opts: BootOptions = {},
): Promise<CheckedBoot> {
  const first = await bootImage(elfPath, opts);
  const why = bootFailure(first, expected);
  if (!why) return { result: first, failure: null };
  const again = await bootImage(elfPath, opts);
  return { result: again, failure: bootFailure(again, expected), firstFailure: why };
}
