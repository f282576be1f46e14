// Compaction of the final image (spacer compact): fewer section headers and no zero pages in the
// file between µlib groups, every loaded byte unchanged, and the report reads it like the .dbg.
import test from 'ava';
import { copyFileSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { ElfFile } from '../helper/elf.js';
import { scanPages } from '../helper/pages.js';
import { analyzeImages } from '../helper/report.js';
import { bootSource, buildUlib, linkWith, platformLds, spacer, tempDir, ulibSource } from './_fixtures.js';

const dir = tempDir('compact');

async function image(name: string, objects: string[], map: string) {
  const lds = join(dir, `${name}.lds`);
  const r = await spacer(['link', '--map', map, '--image', name, '--lds', platformLds, '--out', lds, '--', ...objects]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  const dbg = await linkWith(lds, objects, join(dir, `${name}.dbg`));
  const f = await spacer(['finish', dbg, '--plan', `${lds}.json`]);
  if (f.exitCode !== 0) throw new Error(f.stderr);
  const stripped = join(dir, `${name}.stripped`);
  await execa('strip', ['-s', '--remove-section=.spacer.rewrite', dbg, '-o', stripped]);
  return { dbg, stripped };
}

test('a compacted image loads the same bytes, drops the holes, and reports like the original', async (t) => {
  const map = join(dir, 'map.json');
  const boot = await buildUlib(dir, 'libboot', bootSource());
  const [a, b, c] = await Promise.all(['liba', 'libb', 'libc'].map((n) => buildUlib(dir, n, ulibSource(n, { funcs: 40 }))));
  const apps = await Promise.all(['app1', 'app2', 'app3'].map((n) => buildUlib(dir, n, ulibSource(n, { funcs: 2, calls: ['liba'] }))));
  // liba, libb, libc shared by two images; the third lacks libb: a hole of whole pages.
  // Twice: the second links use the slots the first ones made shared.
  for (let pass = 0; pass < 2; pass++) {
    await image('one', [boot, a, b, c, apps[0]], map);
    await image('two', [boot, a, b, c, apps[1]], map);
  }
  const { stripped } = await image('three', [boot, a, c, apps[2]], map);
  const compacted = join(dir, 'three.compact');
  copyFileSync(stripped, compacted);
  const r = await spacer(['compact', '--holes', compacted]);
  t.is(r.exitCode, 0, r.stderr);
  const before = ElfFile.load(stripped), after = ElfFile.load(compacted);
  t.true(after.sections.length < before.sections.length, 'fewer section headers');
  t.true(statSync(compacted).size < statSync(stripped).size - 4096, 'the zero pages of the hole left the file');
  t.true(after.sections.some((s) => s.name === '.spacer.text'));
  t.truthy(after.section('.uk_libinfo'), 'platform sections keep their headers');
  // Same non-zero pages at the same addresses; the hole is no longer loaded.
  const sa = scanPages(before), sb = scanPages(after);
  t.deepEqual([...sb.nonzero], [...sa.nonzero]);
  t.true(sb.pages < sa.pages);
  for (const p of after.loads) t.is(p.vaddr % 4096n, p.offset % 4096n, 'offsets congruent to addresses');
  // The report attributes pages to µlibs from the plan, as for the uncompacted image.
  const fa = analyzeImages([stripped]), fb = analyzeImages([compacted]);
  const ra = fa.images[0], rb = fb.images[0];
  t.deepEqual(rb.ulibs?.map((u) => [u.name, u.nonzero_pages]), ra.ulibs?.map((u) => [u.name, u.nonzero_pages]));
  t.is(fb.content_bound_bytes, fa.content_bound_bytes, 'the same content bound');
  // Twice is a no-op; the .dbg is refused with one clear line.
  const bytes = readFileSync(compacted);
  t.is((await spacer(['compact', compacted])).exitCode, 0);
  t.true(readFileSync(compacted).equals(bytes));
  const bad = await spacer(['compact', join(dir, 'three.dbg')]);
  t.is(bad.exitCode, 1);
  t.regex(bad.stderr, /three\.dbg: .*strip/);
  t.is(bad.stderr.trim().split('\n').length, 1);
});
