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
  /** With BootOptions.marks: ms from the start of qemu to each marker's arrival (undefined: never seen). */
  markMs?: (number | undefined)[];
  /** qemu's stderr, for diagnostics. */
  stderr: string;
}

/** The qemu command line used by bootImage (without the binary). */
export function qemuArgs(elfPath: string, opts: BootOptions = {}): string[] {
  return [
    '-machine', 'pc',
    '-accel', 'tcg',
    '-cpu', 'qemu64',
    '-m', opts.memory ?? '64M',
    '-nodefaults',
    '-no-reboot',
    '-display', 'none',
    '-serial', 'stdio',
    '-monitor', 'none',
    '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04',
    '-kernel', elfPath,
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
      marks.forEach((m, k) => { if (markMs[k] === undefined && seen.includes(m)) markMs[k] = now; });
    });
  }
  const r = await sub;
  const durationMs = Number(process.hrtime.bigint() - start) / 1e6;
  const qemuStatus = r.exitCode;
  const timedOut = r.timedOut === true;
  const exitCode = !timedOut && qemuStatus !== undefined && qemuStatus % 2 === 1 ? (qemuStatus - 1) / 2 : -1;
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
