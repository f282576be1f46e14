// The binutils the helper runs, with one way of turning their failures into a user's error line.
// Node's own child_process, not execa: the link step's processes then do not load (and compile) a
// quarter of a megabyte of JavaScript for one or two short commands.
import { execFile } from 'node:child_process';
import { SpacerError } from '../errors.js';

/** Told of every program the helper starts (the link server logs them: design.md). */
export const started: { note?: (cmd: string) => void } = {};

/** Runs `cmd` with `args`; rejects with the child's stderr (and `code` ENOENT when not found). */
export function run(cmd: string, args: string[]): Promise<void> {
  started.note?.(cmd);
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, _stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr: String(stderr) }));
      else resolve();
    });
  });
}

/** Runs binutils' `tool` (objcopy, strip, ...); a failure is one line naming `file`. */
export async function binutil(tool: string, args: string[], file: string): Promise<void> {
  try {
    await run(tool, args);
  } catch (e) {
    const err = e as { stderr?: string; code?: string };
    if (err.code === 'ENOENT') throw new SpacerError(`${tool} not found; install binutils`);
    const first = (err.stderr ?? String(e)).trim().split('\n')[0];
    throw new SpacerError(`${file}: ${tool} failed (${first}); the image was left unchanged`);
  }
}

/** objcopy with `args`, for `file` (named in the error line). */
export function objcopy(args: string[], file: string): Promise<void> {
  return binutil('objcopy', args, file);
}
