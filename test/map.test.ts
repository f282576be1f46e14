// The workspace map under concurrency, corruption, stale locks and overflow; determinism.
import test from 'ava';
import { existsSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { allocate, freshMap, type AllocRequest } from '../helper/layout/allocate.js';
import { checkMap } from '../helper/layout/map-check.js';
import { readMap } from '../helper/layout/map-store.js';
import { relayout } from '../helper/layout/relayout.js';
import { bootUlib, linkWith, spacer, spacerLinkArgs, tempDir, testUlib } from './_fixtures.js';

const dir = tempDir('map');
const libs: Record<string, string> = {};
const apps: string[] = [];
let bigA = '';

test.before(async () => {
  libs.libboot = await bootUlib(dir);
  for (const [i, n] of ['liba', 'libb', 'libc', 'libd', 'libe'].entries())
    libs[n] = await testUlib(dir, n, { funcs: 2 + i });
  for (let i = 0; i < 16; i++)
    apps.push(await testUlib(dir, `app${i}`, { funcs: 1 + (i % 4), calls: ['liba'] }));
  const big = join(dir, 'big');
  mkdirSync(big, { recursive: true });
  bigA = await testUlib(big, 'liba', { funcs: 80 });
});

/** Objects of image i: boot, a subset of the shared µlibs that depends on i, its own app. */
function objectsOf(i: number): string[] {
  const shared = ['liba', 'libb', 'libc', 'libd', 'libe'].filter(
    (_, j) => j === 0 || (i >> (j - 1)) & 1,
  );
  return [libs.libboot, ...shared.map((n) => libs[n]), apps[i]];
}

test('16 builds linking at once lose no allocation and leave a consistent map', async (t) => {
  const map = join(dir, 'conc', 'map.json');
  const runs = await Promise.all(
    Array.from({ length: 16 }, (_, i) =>
      spacer(spacerLinkArgs(map, `img${i}`, join(dir, 'conc', `img${i}.lds`), objectsOf(i))),
    ),
  );
  for (const r of runs) t.is(r.exitCode, 0, r.stderr);
  const m = readMap(map)!;
  t.deepEqual(checkMap(m), []);
  t.is(Object.keys(m.images).length, 16);
  t.is(Object.keys(m.ulibs).length, 6 + 16);
  // Every variant used by two images has a stable slot, and every plan that placed it there agrees.
  const plans = Array.from({ length: 16 }, (_, i) =>
    JSON.parse(readFileSync(join(dir, 'conc', `img${i}.lds.json`), 'utf8')),
  );
  for (const name of ['libboot', 'liba', 'libb', 'libc', 'libd', 'libe']) {
    const variants = Object.values(m.ulibs[name].variants);
    t.is(variants.length, 1, name);
    t.true(variants[0].images.length >= 2 && !!variants[0].slot, name);
    const addrs = new Set(
      plans.flatMap((p) =>
        p.ulibs
          .filter((u: any) => u.name === name && u.shared)
          .map((u: any) => JSON.stringify(u.slots)),
      ),
    );
    t.is(addrs.size, 1, name);
  }
  t.false(existsSync(`${map}.lock`));
});

test('a corrupt, truncated or newer-schema map is one error line and is left as it was', async (t) => {
  const map = join(dir, 'corrupt', 'map.json');
  const ok = await spacer(spacerLinkArgs(map, 'img0', join(dir, 'corrupt', 'a.lds'), objectsOf(0)));
  t.is(ok.exitCode, 0, ok.stderr);
  const good = readFileSync(map, 'utf8');
  // A header the journal still holds (no checkpoint yet) is restored from it by the next link.
  const journal = join(dir, 'corrupt', 'map.json.d', 'journal.json');
  t.is(JSON.parse(readFileSync(journal, 'utf8')).write[''], good);
  writeFileSync(map, good.slice(0, 40));
  const again = await spacer(
    spacerLinkArgs(map, 'img0', join(dir, 'corrupt', 'a.lds'), objectsOf(0)),
  );
  t.is(again.exitCode, 0, again.stderr);
  t.is(readFileSync(map, 'utf8'), good);
  // Past a checkpoint (30 s, or 32 files), no journal holds it: a damaged header is an error.
  rmSync(journal);
  const cases: [string, RegExp][] = [
    [good.slice(0, good.length / 2), /corrupt map/],
    ['', /corrupt map \(empty file\)/],
    [good.replace('"schema": 3', '"schema": 7'), /map schema 7 is newer/],
    [good.replace(/"base": "0x[0-9a-f]+"/, '"base": "0x123"'), /inconsistent map|not page-aligned/],
    ['[1,2,3]', /corrupt map/],
  ];
  for (const [text, re] of cases) {
    writeFileSync(map, text);
    const r = await spacer(
      spacerLinkArgs(map, 'img1', join(dir, 'corrupt', 'b.lds'), objectsOf(1)),
    );
    t.is(r.exitCode, 1);
    t.regex(r.stderr, re);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    t.true(r.stderr.startsWith(`spacer: ${map}: `));
    t.is(readFileSync(map, 'utf8'), text, 'map unchanged');
    t.false(existsSync(join(dir, 'corrupt', 'b.lds')), 'no script written');
  }
  writeFileSync(map, good);
  const check = await spacer(['map', 'check', '--map', map]);
  t.is(check.exitCode, 0, check.stderr);
});

test('a lock left by a dead build is taken over; a live one makes the next build wait, then fail clearly', async (t) => {
  const map = join(dir, 'lock', 'map.json');
  mkdirSync(join(dir, 'lock'), { recursive: true });
  const dead = await execa('sh', ['-c', 'echo $$']);
  writeFileSync(
    `${map}.lock`,
    `${dead.stdout.trim()} ${(await execa('hostname')).stdout.trim()}\n`,
  );
  const r1 = await spacer(spacerLinkArgs(map, 'img0', join(dir, 'lock', 'a.lds'), objectsOf(0)));
  t.is(r1.exitCode, 0, r1.stderr);
  t.false(existsSync(`${map}.lock`));
  // A live holder: this test process.
  writeFileSync(`${map}.lock`, `${process.pid} ${(await execa('hostname')).stdout.trim()}\n`);
  const before = readFileSync(map, 'utf8');
  const r2 = await spacer(spacerLinkArgs(map, 'img1', join(dir, 'lock', 'b.lds'), objectsOf(1)), {
    env: { SPACER_LOCK_TIMEOUT: '1' },
  });
  t.is(r2.exitCode, 1);
  t.regex(r2.stderr, new RegExp(`map is locked by process ${process.pid}`));
  t.is(readFileSync(map, 'utf8'), before);
});

test('a changed µlib is a new variant: it gets its own place and nothing earlier images use moves', async (t) => {
  const map = join(dir, 'grow', 'map.json');
  const o = (n: string) => join(dir, 'grow', n);
  // Two images share liba: it gets a stable slot.
  t.is((await spacer(spacerLinkArgs(map, 'one', o('one.lds'), objectsOf(0)))).exitCode, 0);
  t.is((await spacer(spacerLinkArgs(map, 'two', o('two.lds'), objectsOf(2)))).exitCode, 0);
  t.is((await spacer(spacerLinkArgs(map, 'one', o('one.lds'), objectsOf(0)))).exitCode, 0);
  const scriptBefore = readFileSync(o('one.lds'), 'utf8');
  const m0 = readMap(map)!;
  const [h0] = Object.keys(m0.ulibs.liba.variants);
  const slotBefore = JSON.stringify(m0.ulibs.liba.variants[h0].slot);
  t.truthy(m0.ulibs.liba.variants[h0].slot);
  // A third image brings a grown liba.
  const r = await spacer(spacerLinkArgs(map, 'big', o('big.lds'), [libs.libboot, bigA, apps[1]]));
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /liba: new variant [0-9a-f]{16} \(other images use another variant\)/);
  const m = readMap(map)!;
  t.is(Object.keys(m.ulibs.liba.variants).length, 2);
  t.is(JSON.stringify(m.ulibs.liba.variants[h0].slot), slotBefore, 'old slot unchanged');
  // Relinking the first image gives the very same script.
  t.is((await spacer(spacerLinkArgs(map, 'one', o('one.lds'), objectsOf(0)))).exitCode, 0);
  t.is(readFileSync(o('one.lds'), 'utf8'), scriptBefore);
});

test('relayout packs variants by the images that use them and names the apps to relink; gc drops what no image uses', async (t) => {
  const map = join(dir, 'relayout', 'map.json');
  const o = (n: string) => join(dir, 'relayout', n);
  // Linked as the Unikraft glue links them: with their app and build folders and relink command
  // (img7 without, as a map made before they were recorded).
  const origin = (i: number) =>
    i === 7
      ? []
      : [
          '--app',
          `/apps/app${i}`,
          '--build',
          `/apps/app${i}/build`,
          '--relink',
          `make -C /uk A=/apps/app${i}`,
        ];
  for (const i of [1, 3, 5, 7])
    t.is(
      (await spacer(spacerLinkArgs(map, `img${i}`, o(`img${i}.lds`), objectsOf(i), origin(i))))
        .exitCode,
      0,
    );
  // Another app's build may not take an image name: one line naming both builds and the fix.
  const taken = await spacer(
    spacerLinkArgs(map, 'img1', o('x.lds'), objectsOf(1), [
      '--app',
      '/apps/other',
      '--build',
      '/apps/other/build',
    ]),
  );
  t.is(taken.exitCode, 1);
  t.regex(
    taken.stderr.trim(),
    /^spacer: .*map\.json: image name img1 is already taken by the build in \/apps\/app1\/build \(app \/apps\/app1\), and this one is in \/apps\/other\/build .*set SPACER_IMAGE/,
  );
  t.is(taken.stderr.trim().split('\n').length, 1);
  const r = await spacer(['map', 'relayout', '--map', map]);
  t.is(r.exitCode, 0, r.stderr);
  // Per image, what to run.
  t.regex(r.stdout, /relink these \d images to use the new layout:\n/);
  t.regex(r.stdout, /^ {2}img1: make -C \/uk A=\/apps\/app1$/m);
  t.regex(r.stdout, /^ {2}img7: \(no build folder recorded/m);
  t.regex(
    (await spacer(['map', 'show', '--map', map])).stdout,
    /img3: \d+ µlibs, built in \/apps\/app3\/build \(app \/apps\/app3\)/,
  );
  const m = readMap(map)!;
  t.deepEqual(checkMap(m), []);
  // liba and libboot are in every image: first group, from the start of the text region.
  const text = (n: string) => Object.values(m.ulibs[n].variants)[0].slot?.text?.addr;
  t.is(
    Math.min(text('liba')!, ...['libb', 'libc', 'libd'].map((n) => text(n) ?? Infinity)),
    m.regions.text.base,
  );
  // The shared code starts right after the boot head; the shared tables follow all of it (what they
  // hold differs between images with different µlib sets).
  t.is(m.regions.text.base, m.text_base + m.head);
  const shared = Object.values(m.ulibs)
    .flatMap((u) => Object.values(u.variants))
    .filter((v) => v.slot?.text);
  t.true(shared.length >= 2);
  for (const v of shared) t.true(v.slot!.text!.addr + v.slot!.text!.size <= m.regions.ind.base);
  for (const v of shared.filter((x) => x.slot!.ind))
    t.true(
      v.slot!.ind!.addr >= m.regions.ind.base &&
        v.slot!.ind!.addr + v.slot!.ind!.size <= m.regions.ind.end,
    );
  // checkMap tells a code slot that overlaps the table region.
  const bad = structuredClone(m);
  Object.values(bad.ulibs.liba.variants)[0].slot!.text = {
    addr: bad.regions.ind.base + 16,
    size: 32,
  };
  t.true(
    checkMap(bad).some((x) => /overlaps the table region/.test(x)),
    checkMap(bad).join('; '),
  );
  // A second relayout changes nothing.
  const again = await spacer(['map', 'relayout', '--map', map]);
  t.regex(again.stdout, /no image needs a relink/);
  // Forget two images: the app µlibs only they used go.
  const g = await spacer(['map', 'gc', '--map', map, 'img1', 'img3']);
  t.is(g.exitCode, 0, g.stderr);
  t.regex(g.stdout, /app1 .*app3|app3 .*app1/);
  const m2 = readMap(map)!;
  t.falsy(m2.ulibs.app1);
  t.truthy(m2.ulibs.app5);
  t.deepEqual(checkMap(m2), []);
});

test('same objects and same map: byte-identical script and image', async (t) => {
  const map = join(dir, 'det', 'map.json');
  const o = (n: string) => join(dir, 'det', n);
  const objs = objectsOf(5);
  t.is((await spacer(spacerLinkArgs(map, 'img', o('a.lds'), objs))).exitCode, 0);
  t.is((await spacer(spacerLinkArgs(map, 'img', o('b.lds'), objs))).exitCode, 0);
  const a = readFileSync(o('a.lds')),
    b = readFileSync(o('b.lds'));
  t.true(a.equals(b));
  await linkWith(o('a.lds'), objs, o('a.dbg'));
  await linkWith(o('b.lds'), objs, o('b.dbg'));
  t.true(readFileSync(o('a.dbg')).equals(readFileSync(o('b.dbg'))));
});

test('a shared slot smaller than what this link measures (a newer first pass) is one error naming relayout', (t) => {
  const req = (image: string, ind: number): AllocRequest => ({
    image,
    head: 0x100,
    textBase: 0x100000,
    ulibs: [
      {
        name: 'libx',
        variant: 'v1',
        sizes: { text: 0x300, rodata: 0x40, ind },
        align: { text: 16, rodata: 8, ind: 16 },
      },
    ],
  });
  const m = freshMap(req('a', 0x50));
  allocate(m, 'map.json', req('a', 0x50));
  const b = allocate(m, 'map.json', req('b', 0x50));
  t.true(b.placements[0].shared);
  t.is(b.placements[0].at.ind!.size, 0x50);
  const err = t.throws(() => allocate(structuredClone(m), 'map.json', req('c', 0x80)));
  t.regex(
    err!.message,
    /^map\.json: libx's ind slot holds 80 bytes, this link needs 128 .*spacer map relayout/,
  );
  // relayout sizes it again from what the map now records.
  const m2 = structuredClone(m);
  t.throws(() => allocate(m2, 'map.json', req('c', 0x80)));
  relayout(m2, 'map.json');
  t.true(allocate(m2, 'map.json', req('c', 0x80)).placements[0].at.ind!.size >= 0x80);
});

test('name slots: code the same in every image goes first; the per-image block stays on one page', (t) => {
  // Three apps, each with its own app and ukboot variant: ukboot's variants share one code
  // signature (they differ only in read-only data), the apps' do not.
  const req = (image: string, appText: number): AllocRequest => ({
    image,
    head: 0x100,
    textBase: 0x100000,
    ulibs: [
      {
        name: 'libc',
        variant: 'c1',
        sizes: { text: 0x1f00, rodata: 0xf00, ind: 0x40 },
        align: { text: 16, rodata: 8, ind: 16 },
        codeSig: 'cccccccccccccccc',
      },
      {
        name: 'app',
        variant: `app-${image}`,
        sizes: { text: appText, rodata: 0x80, ind: 0x20 },
        align: { text: 16, rodata: 8, ind: 16 },
        codeSig: `${image}`.padEnd(16, '0'),
      },
      {
        name: 'ukboot',
        variant: `boot-${image}`,
        sizes: { text: 0x900, rodata: 0x300, ind: 0x100 },
        align: { text: 16, rodata: 8, ind: 16 },
        codeSig: 'bbbbbbbbbbbbbbbb',
      },
    ],
  });
  const m = freshMap(req('a', 0x200));
  for (const [i, im] of ['a', 'b', 'c'].entries()) allocate(m, 'map.json', req(im, 0x200 + i));
  relayout(m, 'map.json');
  const app = m.ulibs.app.slot!,
    boot = m.ulibs.ukboot.slot!;
  t.true(boot.text!.addr < app.text!.addr, 'ukboot (one code signature) before the app');
  // The per-image block: the app's code, then every name slot's table, on one page.
  const lo = app.text!.addr,
    hi = Math.max(app.ind!.addr + app.ind!.size, boot.ind!.addr + boot.ind!.size);
  t.is(Math.floor(lo / 4096), Math.floor((hi - 1) / 4096), 'code and tables of the name slots');
  const ro = [app.rodata!, boot.rodata!];
  const roLo = Math.min(...ro.map((e) => e.addr)),
    roHi = Math.max(...ro.map((e) => e.addr + e.size));
  t.is(Math.floor(roLo / 4096), Math.floor((roHi - 1) / 4096), 'read-only data on one page');
  // Shared tables leave each page's last 8 bytes free (the salt of a page of pointer areas).
  const ind = m.ulibs.libc.variants.c1.slot!.ind!;
  t.true((ind.addr % 4096) + ind.size <= 4096 - 8);
});
