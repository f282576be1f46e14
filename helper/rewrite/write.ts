// The rewrite's one write: the patched bytes plus the record (and any extra) sections, added in
// memory (elfappend.ts; objcopy for a file that needs it), checked (staged), then written once to
// a file beside the image and renamed over it; on any failure the image is left as it was.
// `spacer finish` runs the two halves as its verify and record passes (harden salts the staged
// bytes between them in ASLR mode); rewriteImageWith runs them back to back.
import { chmodSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { ElfFile } from '../elf.js';
import { appendSections } from '../elfappend.js';
import { SpacerError } from '../errors.js';
import { landProduct, tempPath } from '../util/files.js';
import { objcopy } from '../util/tools.js';
import { type ExtraSection } from './types.js';

/** Problems of the file as written (empty: it may replace the image); `elf`: it, parsed. */
export type CheckFile = (path: string, elf?: ElfFile) => string[];

/**
 * Puts `data` plus `sections` together (in memory; objcopy into a temporary file beside `path`
 * when the sections cannot be added in place), checks that objcopy moved none of the `changed`
 * sections and that `check` accepts the bytes, and returns them, parsed, with the temporary name
 * they will be written to: commitStaged writes them there once (ASLR mode salts them first,
 * harden.ts) and renames the file over `path`. On any failure nothing is left behind.
 */
export async function stageWrite(
  path: string,
  data: Buffer,
  sections: ExtraSection[],
  changed: string[],
  check: CheckFile,
): Promise<Staged> {
  const tmpElf = tempPath(path, 'elf');
  const tmpSecs = sections.map((_, i) => tempPath(path, `${i}.sec`));
  const tmpOut = tempPath(path);
  const mode = statSync(path).mode & 0o7777;
  try {
    const a = new ElfFile(path, data);
    // The sections added in memory (elfappend.ts; in the room prepareRewrite left after `data`,
    // whose ELF header then changes: `a` was parsed before), else by objcopy.
    const appended = appendSections(a, sections, true);
    if (!appended) {
      writeFileSync(tmpElf, data);
      sections.forEach((sec, i) => writeFileSync(tmpSecs[i], sec.data));
      const args = sections.flatMap((sec, i) => [
        '--add-section',
        `${sec.name}=${tmpSecs[i]}`,
        '--set-section-flags',
        `${sec.name}=readonly,contents`,
      ]);
      await objcopy([...args, tmpElf, tmpOut], path);
    }
    // Nothing that was patched may have moved.
    // Named as the image it becomes: the passes after the record read it (harden), and any
    // problem they find names the image, not this temporary file.
    const b = new ElfFile(path, appended ?? readFileSync(tmpOut));
    for (const name of changed) {
      const x = a.section(name),
        y = b.section(name);
      if (!x || !y || x.addr !== y.addr || !a.contents(x).equals(b.contents(y)))
        throw new SpacerError(`${path}: objcopy changed ${name}; the image was left unchanged`);
    }
    // The bytes must verify before they replace the image (harden, after this, only fills salt
    // words, which verify reads past: audit/salt.ts unsaltedContents).
    const problems = check(tmpOut, b);
    if (problems.length)
      throw new SpacerError(
        // eslint-disable-next-line no-control-regex -- control characters are what it replaces
        `${path}: the rewritten file did not verify (${problems[0].replace(/[\x00-\x1f\x7f]/g, '?')}); the image was left unchanged`,
      );
    return { path: tmpOut, elf: b, mode };
  } catch (e) {
    rmSync(tmpOut, { force: true });
    throw e;
  } finally {
    for (const f of [tmpElf, ...tmpSecs]) rmSync(f, { force: true });
  }
}

/** The bytes stageWrite checked, parsed, and the temporary file they go to. */
export interface Staged {
  path: string;
  /** The bytes, parsed (what the passes after verify read; harden may replace them). */
  elf: ElfFile;
  /** The image's mode, which the file gets. */
  mode: number;
}

/**
 * Writes the staged bytes to their temporary file, once, and lands it at `path` as a build
 * product; on a failure the temporary file is removed and `path` is left as it was.
 */
export function commitStaged(staged: Staged, path: string): void {
  try {
    writeFileSync(staged.path, staged.elf.data);
    chmodSync(staged.path, staged.mode);
    landProduct(staged.path, path);
  } catch (e) {
    rmSync(staged.path, { force: true });
    throw e;
  }
}
