// The fuzz corpus: real images of the example workspace, built once by the demo (no boot), in
// four kinds:
//   rewritten  spacer and spacer-aslr `.dbg` as `spacer finish` leaves them (rewritten, with
//              `.spacer.rewrite` and `.spacer.plan`);
//   plain      the same images as the linker left them (before finish): the rewrite undone from
//              its own record, both records removed; rewriting one must give the finished image;
//   default    default-layout `.dbg` (no plan, no relocations);
//   elf32      every layout's stripped ELF32 multiboot `.elf` (spacer ones keep `.spacer.plan`).
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { execa } from 'execa';
import { runDemo } from '../demo.js';
import { ElfFile, SHT_PROGBITS, num } from '../elf.js';
import { writeAddress } from '../x86/entries.js';
import { readPlan, rewritePlan } from '../finish.js';
import { readRecord, rewriteImage } from '../rewrite.js';

export type ImageKind = 'rewritten' | 'plain' | 'default' | 'elf32';

export interface CorpusImage {
  /** `<layout>/<file>`, e.g. `spacer/faas-lz.plain.dbg`. */
  id: string;
  kind: ImageKind;
  path: string;
  /**
   * The link plan (`.lds.json`) the rewrite step uses: the image's own, else its app's spacer plan.
   */
  plan: string;
  sha256: string;
  size: number;
}

export interface Corpus {
  dir: string;
  images: CorpusImage[];
}

const SPACER_LAYOUTS = ['spacer', 'spacer-aslr'];
const LAYOUTS = ['default', ...SPACER_LAYOUTS];
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The helper that built a corpus: images an older helper made are not what this one makes. */
function helperStamp(): string {
  const h = createHash('sha256');
  const root = new URL('..', import.meta.url);
  for (const d of ['.', 'x86']) {
    const dirPath = new URL(`${d}/`, root);
    for (const f of readdirSync(dirPath)
      .filter((x) => x.endsWith('.js'))
      .sort())
      h.update(f).update(readFileSync(new URL(f, dirPath)));
  }
  return h.digest('hex');
}
const STAMP = '.helper-stamp';

function appsIn(dir: string): string[] {
  if (!existsSync(join(dir, STAMP)) || readFileSync(join(dir, STAMP), 'utf8') !== helperStamp())
    return [];
  const apps = (l: string) =>
    existsSync(join(dir, l))
      ? readdirSync(join(dir, l))
          .filter((f) => f.endsWith('.lds.json'))
          .map((f) => f.slice(0, -'.lds.json'.length))
      : [];
  const a = apps('spacer').sort();
  // Complete only when every layout has every app's images.
  const ok =
    a.length > 0 &&
    LAYOUTS.every((l) =>
      a.every((n) => existsSync(join(dir, l, `${n}.dbg`)) && existsSync(join(dir, l, `${n}.elf`))),
    ) &&
    SPACER_LAYOUTS.every((l) => a.every((n) => existsSync(join(dir, l, `${n}.lds.json`))));
  return ok ? a : [];
}

/** Undoes the rewrite of a finished image from its own record; checks the code hashes. */
export async function unrewrite(src: string, dst: string): Promise<void> {
  const elf = ElfFile.load(src);
  const rec = readRecord(elf);
  if (!rec) throw new Error(`${src}: not rewritten`);
  const out = Buffer.from(elf.data);
  for (const u of rec.ulibs) {
    const text = elf.section(u.text)!,
      ind = elf.section(u.ind.section)!;
    for (const s of u.sites)
      Buffer.from(s.o, 'hex').copy(out, num(text.offset) + Number(BigInt(s.a) - text.addr));
    out.fill(0xcc, num(ind.offset), num(ind.offset) + num(ind.size));
    if (u.ptr) {
      const ptr = elf.section(u.ptr.section)!;
      out.fill(0xcc, num(ptr.offset), num(ptr.offset) + num(ptr.size));
    }
  }
  for (const d of rec.data ?? []) {
    // Data fields that the rewrite pointed at entry stubs hold their linked values again.
    const at = BigInt(d.a);
    const sec = elf.sections.find(
      (x) => x.size && at >= x.addr && at < x.addr + x.size && x.type === SHT_PROGBITS,
    )!;
    writeAddress(out, num(sec.offset) + Number(at - sec.addr), d.r, BigInt(d.o));
  }
  for (const u of rec.ulibs) {
    const text = elf.section(u.text)!;
    const code = out.subarray(num(text.offset), num(text.offset) + num(text.size));
    if (sha256(code) !== u.textSha256)
      throw new Error(`${src}: ${u.text}: the original code does not match its recorded hash`);
  }
  const tmp = `${dst}.tmp`;
  writeFileSync(tmp, out);
  try {
    await execa('objcopy', [
      '--remove-section=.spacer.rewrite',
      '--remove-section=.spacer.plan',
      tmp,
      dst,
    ]);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Rewrites a copy of a plain image with its plan: must succeed and give the finished image's code
 * and tables.
 */
async function checkPlain(
  plain: string,
  finished: string,
  plan: string,
  scratch: string,
): Promise<void> {
  const copy = join(scratch, basename(plain));
  copyFileSync(plain, copy);
  const p = readPlan(plan);
  const st = await rewriteImage(copy, rewritePlan(p), p.rewrite as 'external' | 'aslr');
  if (st.alreadyDone || !st.sites)
    throw new Error(`${plain}: the rewrite of the plain image did nothing`);
  const a = ElfFile.load(copy),
    b = ElfFile.load(finished);
  for (const s of b.sections) {
    if (!/^\.(text|ind|ptr)\./.test(s.name)) continue;
    const x = a.section(s.name);
    if (!x || !a.contents(x).equals(b.contents(s)))
      throw new Error(`${plain}: ${s.name} after the rewrite differs from ${finished}`);
  }
  rmSync(copy, { force: true });
}

/** Builds the images once (or reuses a complete set in `dir`) and lists the corpus. */
export async function buildCorpus(
  dir: string,
  log: (line: string) => void = () => {},
): Promise<Corpus> {
  dir = resolve(dir);
  let apps = appsIn(dir);
  if (!apps.length) {
    log(
      `fuzz: building the example images (demo, no boot) in ${dir} (none yet, or made by another version of the helper)`,
    );
    await runDemo({ out: dir, boot: false, log });
    writeFileSync(join(dir, STAMP), helperStamp());
    apps = appsIn(dir);
    if (!apps.length) throw new Error(`${dir}: the demo left no complete set of images`);
  } else {
    log(`fuzz: reusing the images in ${dir}`);
  }
  const images: CorpusImage[] = [];
  const add = (layout: string, file: string, kind: ImageKind, plan: string) => {
    const path = join(dir, layout, file);
    const data = readFileSync(path);
    images.push({
      id: `${layout}/${file}`,
      kind,
      path,
      plan,
      sha256: sha256(data),
      size: data.length,
    });
  };
  const scratch = join(dir, 'fuzz-check');
  mkdirSync(scratch, { recursive: true });
  try {
    for (const layout of LAYOUTS) {
      for (const app of apps) {
        const ownPlan = join(dir, layout, `${app}.lds.json`);
        const plan = existsSync(ownPlan) ? ownPlan : join(dir, 'spacer', `${app}.lds.json`);
        if (layout === 'default') add(layout, `${app}.dbg`, 'default', plan);
        else {
          add(layout, `${app}.dbg`, 'rewritten', plan);
          const plain = join(dir, layout, `${app}.plain.dbg`);
          // Made fresh each run from the finished image (cheap), so it never lags behind a rebuild.
          await unrewrite(join(dir, layout, `${app}.dbg`), plain);
          await checkPlain(plain, join(dir, layout, `${app}.dbg`), plan, scratch);
          add(layout, `${app}.plain.dbg`, 'plain', plan);
        }
        add(layout, `${app}.elf`, 'elf32', plan);
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const corpus = { dir, images };
  writeFileSync(join(dir, 'corpus.json'), JSON.stringify(corpus, null, 2) + '\n');
  return corpus;
}
