// `spacer audit IMAGE.dbg...`: every page of an ASLR image whose bytes would differ under another
// seed (analyze.ts), and for each the proof that it carries at least 64 bits of randomness derived
// from the image's seed (salt.ts, written by harden.ts); a page without it fails, named with its
// cause. Pages not listed hold the same bytes under every seed (moved or not): no layout
// information. docs/security.md, 'ASLR hardening'.
import { loadImage } from '../rewrite/record.js';
import { hex } from '../util/units.js';
import { type AslrImage, fileOffset, readAslrImage } from './analyze.js';
import { saltPlace, wordSalt, type SaltPlace } from './salt.js';

export interface AuditPage {
  /** Page address (hex). */
  page: string;
  causes: string[];
  /** Where its salt is and how many random bits it carries. */
  salt?: { kind: SaltPlace['kind']; at: string[]; bits: number };
  ok: boolean;
  problem?: string;
}

export interface AuditResult {
  image: string;
  seed: string;
  pages: AuditPage[];
  ok: boolean;
}

/** Whether the salt words of `place` hold the seed's bytes. */
export function saltPresent(img: AslrImage, place: SaltPlace): boolean {
  return place.words.every((w, i) => {
    const off = fileOffset(img.elf, w)!;
    const want = wordSalt(img.seed, place, i);
    return img.elf.data.subarray(off, off + want.length).equals(want);
  });
}

/** Audits one image (.dbg): every seed-dependent page, salted or failed. */
export function auditImage(path: string): AuditResult {
  const img = readAslrImage(loadImage(path));
  const pages = img.pages.map((p): AuditPage => {
    const page = hex(p.page * 4096);
    const place = saltPlace(img, p.page);
    if (!place)
      return {
        page,
        causes: p.causes,
        ok: false,
        problem: 'no room for a salt (no padding the program does not read on this page)',
      };
    const salt = { kind: place.kind, at: place.words.map((w) => hex(w)), bits: place.bits };
    if (place.bits < 64 || !saltPresent(img, place))
      return {
        page,
        causes: p.causes,
        salt,
        ok: false,
        problem: `carries no seed-derived salt at ${salt.at.join(', ')}; run 'spacer audit --harden' on the .dbg and rebuild the image from it`,
      };
    return { page, causes: p.causes, salt, ok: true };
  });
  return { image: path, seed: img.seed, pages, ok: pages.every((p) => p.ok) };
}

/** One line per seed-dependent page; failures name the page and its cause. */
export function formatAudit(r: AuditResult): string {
  const lines = r.pages.map((p) =>
    p.ok
      ? `${r.image}: ${p.page}: ${p.salt!.bits} bits of seed-derived salt (${p.salt!.kind} at ${p.salt!.at.join(', ')}); depends on the seed: ${p.causes[0]}`
      : `${r.image}: ${p.page}: FAIL: ${p.problem}; depends on the seed: ${p.causes.join('; ')}`,
  );
  const bad = r.pages.filter((p) => !p.ok).length;
  lines.push(
    `${r.image}: ${r.pages.length} pages depend on the seed, ${r.pages.length - bad} salted` +
      (bad ? `, ${bad} FAIL` : '; every other page holds the same bytes under any seed'),
  );
  return lines.join('\n');
}

/** The command: audits every image (salting it first with `harden`), exit code 1 on a failure. */
export async function auditCommand(a: { images: string[]; json?: boolean; harden?: boolean }) {
  const { images, json } = a;
  if (a.harden) {
    const { hardenImage } = await import('../harden.js');
    for (const p of images) hardenImage(p);
  }
  const results = images.map(auditImage);
  process.stdout.write(
    (json ? JSON.stringify(results, null, 2) : results.map(formatAudit).join('\n')) + '\n',
  );
  if (results.some((r) => !r.ok)) process.exitCode = 1;
}
