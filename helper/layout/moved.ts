// Instructions that differ between a per-app µlib's variants without a relocation: Unikraft's kvm
// platform compiles the length of the image's name into its setup code (`sizeof(CONFIG_UK_NAME)`),
// an immediate no relocation names. Each link of the platform compares its code, relocation
// fields masked, with the first variant's (kept beside the map); the instructions that differ are
// kept beside the map too, and the rewrite moves them to the table in every variant, so the
// platform's code pages are the same in every app (docs/design.md, "The platform's own data").
//
// Beside the map `M`, in `M.variants/`:
//   <µlib>.<code bytes>.ref          the first variant's code, relocation fields zeroed
//   <µlib>.<code bytes>.moved.json   {"at": [[offset, length], ...]}: the instructions to move
// Both only grow; they are written whole (temporary file, then rename). Deleting them is safe:
// the next links find the instructions again, and images linked before share less until relinked.
import { readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { SpacerError } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';

/** An instruction to move: its offset in the µlib's code and its length. */
export type MovedInsn = [number, number];

function paths(mapPath: string, ulib: string, code: number) {
  const dir = join(dirname(mapPath), `${basename(mapPath)}.variants`);
  return {
    ref: join(dir, `${ulib}.${code}.ref`),
    moved: join(dir, `${ulib}.${code}.moved.json`),
  };
}

function readOrNone(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SpacerError(
      `${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? 'error'}); check its permissions, or delete it`,
    );
  }
}

/** Writes one of the files whole; a failure is one line naming it (the map's folder must be
 *  writable for the link anyway). */
function writeWhole(path: string, data: string | Buffer): void {
  try {
    writeFileAtomic(path, data, 'unsynced');
  } catch (e) {
    throw new SpacerError(
      `${path}: cannot write it (${(e as NodeJS.ErrnoException).code ?? 'error'}); make the folder beside the map writable`,
    );
  }
}

/** The instructions to move in `ulib`'s code of `code` bytes (none recorded: empty). */
export function readMoved(mapPath: string, ulib: string, code: number): MovedInsn[] {
  const path = paths(mapPath, ulib, code).moved;
  const text = readOrNone(path);
  if (!text) return [];
  let at: unknown;
  try {
    at = (JSON.parse(text.toString('utf8')) as { at?: unknown }).at;
  } catch {
    at = undefined;
  }
  const ok =
    Array.isArray(at) &&
    at.every(
      (x) =>
        Array.isArray(x) &&
        x.length === 2 &&
        Number.isSafeInteger(x[0]) &&
        Number.isSafeInteger(x[1]) &&
        x[0] >= 0 &&
        x[1] > 0 &&
        x[0] + x[1] <= code,
    );
  if (!ok)
    throw new SpacerError(
      `${path}: not a list of instructions to move; delete it (the next links find them again)`,
    );
  return at as MovedInsn[];
}

/**
 * Compares a variant's masked code with the first variant's (which it records when there is none)
 * and adds the instructions that differ to the list. `insnAt` gives the instruction that holds a
 * byte offset (decoded only when a byte differs outside the instructions already listed). Returns
 * the instructions it added.
 */
export function noteVariant(
  mapPath: string,
  ulib: string,
  masked: Buffer,
  insnAt: () => (off: number) => MovedInsn | undefined,
): MovedInsn[] {
  const p = paths(mapPath, ulib, masked.length);
  const ref = readOrNone(p.ref);
  if (!ref || ref.length !== masked.length) {
    if (!ref) writeWhole(p.ref, masked);
    return [];
  }
  if (ref.equals(masked)) return [];
  const known = readMoved(mapPath, ulib, masked.length);
  const covered = (off: number) => known.some(([o, n]) => off >= o && off < o + n);
  let find: ((off: number) => MovedInsn | undefined) | undefined;
  const added: MovedInsn[] = [];
  for (let off = 0; off < masked.length; off++) {
    if (masked[off] === ref[off] || covered(off)) continue;
    find ??= insnAt();
    const insn = find(off);
    if (!insn) continue; // data, or bytes no sized function covers: left as they are
    if (!added.some(([o]) => o === insn[0])) added.push(insn);
    off = Math.max(off, insn[0] + insn[1] - 1);
  }
  if (!added.length) return [];
  // Another link may have added some meanwhile: merge with what is there now.
  const now = readMoved(mapPath, ulib, masked.length);
  const all = [...now];
  for (const a of [...known, ...added]) if (!all.some(([o]) => o === a[0])) all.push(a);
  all.sort((a, b) => a[0] - b[0]);
  writeWhole(p.moved, `${JSON.stringify({ at: all })}\n`);
  return added;
}
