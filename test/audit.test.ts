// ASLR hardening and `spacer audit` on the example workspace (#16): every demo app linked in ASLR
// mode with two seeds; every page whose bytes one seed's image holds and the other's does not is
// one audit lists, and each carries its salt (also in the bootable image); the same seed gives
// the same bytes; an image with one salt taken out fails, naming the page.
import test from 'ava';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readAslrImage } from '../helper/audit/analyze.js';
import { auditImage } from '../helper/audit/index.js';
import { unsaltedContents } from '../helper/audit/salt.js';
import { runDemo } from '../helper/demo.js';
import { ElfFile } from '../helper/elf.js';
import { pageContent, scanPages } from '../helper/pages.js';
import { buildImage } from '../helper/pipeline.js';
import {
  compileWorkspace,
  linkCommand,
  loadApps,
  objectsFor,
  platformScripts,
} from '../helper/workspace/index.js';
import { tempDir } from './_fixtures.js';

const out = tempDir('audit');
const apps = loadApps().map((a) => a.name);
const image = (dir: string, app: string) => join(out, dir, app);

/** Links every app in ASLR mode, seed `<app>-<n>`, into `dir` on the demo map (hardened). */
async function linkSeed(n: number, dir: string, only?: string) {
  const scripts = platformScripts();
  const compiled = await compileWorkspace(join(out, 'objects'));
  for (const app of loadApps().filter((a) => !only || a.name === only)) {
    await buildImage({
      image: app.name,
      objects: objectsFor(app, compiled),
      lds: scripts.defaultLds,
      extraLds: scripts.extraLds,
      out: image(dir, app.name),
      layout: 'spacer-aslr',
      map: join(out, 'spacer-aslr-map.json'),
      seed: `${app.name}-${n}`,
      linkArgs: (objects, d, e, o) =>
        linkCommand({ objects, defaultLds: d, extraLds: e, out: o }, o),
    });
  }
}

test.before(async () => {
  await runDemo({ out, boot: false });
  await linkSeed(2, 'seed2');
  await linkSeed(1, 'again', 'faas-sha');
});

test('audit passes on every demo ASLR image, both seeds', (t) => {
  for (const app of apps)
    for (const dir of ['spacer-aslr', 'seed2']) {
      const r = auditImage(`${image(dir, app)}.dbg`);
      const bad = r.pages.filter((p) => !p.ok).map((p) => `${p.page}: ${p.problem}`);
      t.deepEqual(bad, [], `${dir}/${app}`);
      t.true(r.pages.length > 0, `${dir}/${app}: the pointer areas depend on the seed`);
      for (const p of r.pages) t.true(p.salt!.bits >= 64, `${app} ${p.page}`);
    }
});

test('every page that differs between two seeds is one audit accounts for, salted in the bootable image too', (t) => {
  for (const app of apps) {
    const [a, b] = ['spacer-aslr', 'seed2'].map((d) => `${image(d, app)}.dbg`);
    const scans = [a, b].map((p) => scanPages(ElfFile.load(p)));
    const listed = [a, b].map(
      (p) => new Set(readAslrImage(ElfFile.load(p)).pages.map((x) => x.page)),
    );
    for (const [i, j] of [
      [0, 1],
      [1, 0],
    ]) {
      const other = new Set(scans[j].nonzero.values());
      const differing = [...scans[i].nonzero].filter(([, h]) => !other.has(h)).map(([p]) => p);
      t.true(differing.length > 0, `${app}: some page differs`);
      const missed = differing.filter((p) => !listed[i].has(p)).map((p) => (p * 4096).toString(16));
      t.deepEqual(missed, [], `${app} (seed ${i + 1}): pages that differ and audit does not list`);
    }
    // The salt survives strip, pack and the ELF32 step.
    const elf = ElfFile.load(`${image('spacer-aslr', app)}.elf`),
      dbg = ElfFile.load(a);
    for (const p of auditImage(a).pages)
      for (const w of p.salt!.at) {
        const addr = Number(BigInt(w)),
          pg = Math.floor(addr / 4096),
          o = addr % 4096;
        t.deepEqual(
          pageContent(elf, pg).subarray(o, o + 8),
          pageContent(dbg, pg).subarray(o, o + 8),
          `${app} ${w}`,
        );
        t.false(
          pageContent(elf, pg)
            .subarray(o, o + 8)
            .every((x) => x === 0),
          `${app} ${w}`,
        );
      }
  }
});

test('the same seed gives the same hardened bytes; the pinned platform carries no salt', (t) => {
  for (const ext of ['dbg', 'elf'])
    t.true(
      readFileSync(`${image('spacer-aslr', 'faas-sha')}.${ext}`).equals(
        readFileSync(`${image('again', 'faas-sha')}.${ext}`),
      ),
      ext,
    );
  // The platform keeps its place under every seed: its boot page tables (inside its code) hold the
  // same addresses in every image, get no salt, and verify reads its code as written.
  const e = ElfFile.load(`${image('spacer-aslr', 'faas-sha')}.dbg`);
  const text = e.section('.text.libkvmplat')!;
  const pte = auditImage(e.path).pages.filter((p) => p.salt!.kind === 'pte');
  t.deepEqual(pte, [], 'no page-table salt: the pinned platform does not depend on the seed');
  t.true(unsaltedContents(e, text).equals(e.contents(text)));
  const other = ElfFile.load(`${image('seed2', 'faas-sha')}.dbg`);
  t.true(other.contents(other.section('.text.libkvmplat')!).equals(e.contents(text)));
});

test('audit fails on an image with a salt taken out, naming the page and its cause', (t) => {
  const src = `${image('spacer-aslr', 'kvstore')}.dbg`,
    dst = join(out, 'mutated.dbg');
  copyFileSync(src, dst);
  const victim = auditImage(src).pages.find((p) => p.salt!.kind === 'gap')!;
  const e = ElfFile.load(dst);
  const addr = BigInt(victim.salt!.at[0]);
  const seg = e.loads.find((p) => addr >= p.vaddr && addr < p.vaddr + p.filesz)!;
  const data = readFileSync(dst);
  data.fill(0, Number(seg.offset + addr - seg.vaddr), Number(seg.offset + addr - seg.vaddr) + 8);
  writeFileSync(dst, data);
  const r = auditImage(dst);
  t.false(r.ok);
  const failed = r.pages.filter((p) => !p.ok);
  t.deepEqual(
    failed.map((p) => p.page),
    [victim.page],
  );
  t.regex(failed[0].problem!, /carries no seed-derived salt/);
  t.true(failed[0].causes.length > 0);
});
