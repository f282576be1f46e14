// The binutils the helper runs, with one way of turning their failures into a user's error line.
import { execa } from 'execa';
import { SpacerError } from '../errors.js';

/** Runs binutils' `tool` (objcopy, strip, ...); a failure is one line naming `file`. */
export async function binutil(tool: string, args: string[], file: string): Promise<void> {
  try {
    await execa(tool, args);
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
