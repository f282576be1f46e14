// The split map (issue #14): a link's view of the map allocates exactly as the whole map does, a
// link reads and writes only its own files, and an update interrupted after its journal lands.
import test from 'ava';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { allocate, freshMap, type AllocRequest } from '../helper/layout/allocate.js';
import { allocateAslr } from '../helper/layout/aslr.js';
import { encodeMap } from '../helper/layout/map-file.js';
import { updateMap } from '../helper/layout/map-lock.js';
import { loadWhole, mapDir, parseMapFile, readMap } from '../helper/layout/map-store.js';
import type { SpacerMap } from '../helper/layout/map-types.js';
import { checkMapFile } from '../helper/mapcmd.js';
import { tempDir } from './_fixtures.js';

const dir = tempDir('mapstore');

/** A small deterministic generator (the test's own sequence of links). */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A code signature (16 hex digits). */
const sig = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 16);

const SHARED = ['libplat', 'liba', 'libb', 'libc', 'libd'];

/** Image `i`'s request in version `ver`: shared µlibs (some in another variant), per-app ones. */
/** The classic allocator on the map, for `req`. */
const fn = (req: AllocRequest) => (m: SpacerMap) => allocate(m, 'map.json', req);
/** The link view of `req`: its image and the variant of each of its µlibs. */
const view = (req: AllocRequest) => ({
  image: req.image,
  want: Object.fromEntries(req.ulibs.map((u) => [u.name, u.variant])),
});

function request(i: number, ver: number, pick: () => number): AllocRequest {
  const ulibs: AllocRequest['ulibs'] = SHARED.filter((_, k) => k < 2 || (i >> k) & 1).map(
    (name, k) => {
      const v = pick() < 0.15 ? 2 : 1; // now and then a µlib in another configuration
      return {
        name,
        variant: `${name}-v${v}`.padEnd(16, '0').slice(0, 16),
        sizes: {
          text: 0x800 + k * 0x310 + v * 0x40,
          rodata: 0x100 + k * 0x20,
          data: 0x40,
          ind: 0x60,
        },
        align: { text: 16, rodata: 8, data: 8, ind: 16 },
        codeSig: sig(`${name}${v}`),
      };
    },
  );
  // Per app: its own code (a new variant per version) and a ukboot with its name in it.
  const app = `app${i}v${ver}`;
  ulibs.push(
    {
      name: 'ukboot',
      variant: `boot${i}`.padEnd(16, 'b'),
      sizes: { text: 0x400, rodata: 0x40 + (i % 3) * 0x10, ind: 0x30 },
      align: { text: 16, rodata: 8, ind: 16 },
      codeSig: sig('ukboot'),
    },
    {
      name: 'appmain',
      variant: app.padEnd(16, 'a').slice(0, 16),
      sizes: { text: 0x100 + ((i * 37 + ver * 11) % 0x300), rodata: 0x20 + ver * 8, ind: 0x20 },
      align: { text: 16, rodata: 8, ind: 16 },
      codeSig: sig(app),
    },
  );
  return { image: `img${i}`, head: 0x200, textBase: 0x100000, ulibs };
}

test('a link view of the map allocates as the whole map does, in both layouts', async (t) => {
  for (const aslr of [false, true]) {
    const view = join(dir, `view-${aslr}`, 'map.json'),
      whole = join(dir, `whole-${aslr}`, 'map.json');
    const pick = rng(aslr ? 7 : 3);
    const versions = new Map<number, number>();
    for (let step = 0; step < 60; step++) {
      // New images and relinks of old ones (some with a changed app), in a seeded order.
      const i = Math.floor(pick() * 12);
      const ver = (versions.get(i) ?? -1) + (pick() < 0.5 ? 1 : 0);
      versions.set(i, Math.max(ver, 0));
      const req = request(i, Math.max(ver, 0), pick);
      const fn = (m: SpacerMap) =>
        JSON.stringify(
          aslr
            ? allocateAslr(m, 'map.json', structuredClone(req), `seed${step}`)
            : allocate(m, 'map.json', structuredClone(req)),
        );
      const want = Object.fromEntries(req.ulibs.map((u) => [u.name, u.variant]));
      const a = await updateMap(view, () => freshMap(req), fn, { image: req.image, want });
      const b = await updateMap(whole, () => freshMap(req), fn);
      t.is(a, b, `step ${step}: ${req.image} placed alike`);
    }
    const mv = readMap(view)!,
      mw = readMap(whole)!;
    t.is(encodeMap(mv), encodeMap(mw), 'the same map');
    t.deepEqual(checkMapFile(view), [], 'the counts of the view-written map hold');
    t.truthy(mv.ulibs.ukboot.slot, 'ukboot got a name slot');
    t.true(Object.keys(mv.images).length >= 8);
  }
});

test('a relink writes only its image and the variants it moved between', async (t) => {
  const map = join(dir, 'touch', 'map.json');
  const reqs = Array.from({ length: 10 }, (_, i) => request(i, 0, () => 0.5));
  for (const r of reqs) await updateMap(map, () => freshMap(r), fn(r), view(r));
  const files = (d: string): string[] =>
    readdirSync(d, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? files(join(d, e.name)) : [join(d, e.name)],
    );
  const times = () =>
    new Map(files(mapDir(map)).map((f) => [f, statSync(f, { bigint: true }).mtimeNs]));
  const before = times();
  const header = statSync(map, { bigint: true }).mtimeNs;
  await new Promise((r) => setTimeout(r, 20));
  // img3 relinks with a changed app.
  const r = request(3, 1, () => 0.5);
  await updateMap(map, () => freshMap(r), fn(r), view(r));
  const after = times();
  const changed = [...after.keys()]
    .filter((f) => before.get(f) !== after.get(f))
    .map((f) => f.slice(mapDir(map).length + 1));
  const files3 = [
    'images/img3.json',
    // The app µlib's counts of variants (a file of its own: a header listing every µlib grew with
    // the workspace's apps).
    'ulibs/appmain.json',
    `ulibs/appmain/${'app3v0'.padEnd(16, 'a')}.json`,
    `ulibs/appmain/${'app3v1'.padEnd(16, 'a')}.json`,
  ];
  t.deepEqual(changed.sort(), [...files3, 'journal.json'].sort());
  t.is(statSync(map, { bigint: true }).mtimeNs, header, 'the header is not written');
  // The journal (synced) holds them until a checkpoint syncs the files.
  const jn = JSON.parse(readFileSync(join(mapDir(map), 'journal.json'), 'utf8'));
  for (const rel of files3) t.is(jn.write[rel], readFileSync(join(mapDir(map), rel), 'utf8'));
  t.true(Object.keys(jn.write).length + jn.remove.length <= 32);
  const m = readMap(map)!;
  t.deepEqual(m.ulibs.appmain.variants['app3v0'.padEnd(16, 'a')].images, []);
  t.deepEqual(m.ulibs.appmain.variants['app3v1'.padEnd(16, 'a')].images, ['img3']);
  // The counts a link's view relies on are checked by `spacer map check`.
  t.deepEqual(checkMapFile(map), []);
  const v = join(mapDir(map), 'ulibs', 'appmain', `${'app3v1'.padEnd(16, 'a')}.json`);
  // A hand edit of a file the journal holds would be read through (and undone by the next update).
  rmSync(join(mapDir(map), 'journal.json'));
  writeFileSync(v, readFileSync(v, 'utf8').replace('"users": 1', '"users": 2'));
  t.deepEqual(checkMapFile(map), [
    `variant ${'app3v1'.padEnd(16, 'a')} of appmain counts 2 images, 1 use it`,
  ]);
});

test('an update interrupted after its journal is read through, then finished by the next one', async (t) => {
  const map = join(dir, 'journal', 'map.json');
  const a = request(0, 0, () => 0.5),
    b = request(1, 0, () => 0.5);
  await updateMap(map, () => freshMap(a), fn(a));
  const core = readFileSync(map, 'utf8');
  // What an update of img1 would write, left as a journal only (its process died before landing).
  const staged = join(dir, 'journal-staged', 'map.json');
  mkdirSync(join(dir, 'journal-staged'), { recursive: true });
  await updateMap(staged, () => freshMap(a), fn(a));
  await updateMap(staged, () => freshMap(b), fn(b));
  const write: Record<string, string> = { '': readFileSync(staged, 'utf8') };
  for (const rel of ['images/img1.json'])
    write[rel] = readFileSync(join(mapDir(staged), rel), 'utf8');
  for (const u of b.ulibs)
    for (const rel of [`ulibs/${u.name}.json`, `ulibs/${u.name}/${u.variant}.json`])
      write[rel] = readFileSync(join(mapDir(staged), rel), 'utf8');
  writeFileSync(join(mapDir(map), 'journal.json'), JSON.stringify({ write, remove: [] }));
  t.is(readFileSync(map, 'utf8'), core, 'the header as before the interrupted update');
  // A reader without the lock sees the update whole.
  t.deepEqual(Object.keys(loadWhole(map)!.map.images).sort(), ['img0', 'img1']);
  t.is(encodeMap(parseMapFile(map)!), encodeMap(parseMapFile(staged)!));
  // The next update lands it first (and keeps it, with its own files, until a checkpoint).
  await updateMap(map, () => freshMap(a), fn(a));
  for (const [rel, text] of Object.entries(write))
    t.is(readFileSync(rel ? join(mapDir(map), rel) : map, 'utf8'), text);
  t.is(encodeMap(readMap(map)!), encodeMap(readMap(staged)!));
  // A damaged journal is one error line naming it and the fix.
  writeFileSync(join(mapDir(map), 'journal.json'), '{"write": ');
  const err = await t.throwsAsync(updateMap(map, () => freshMap(a), fn(a)));
  t.regex(err!.message, /journal\.json: damaged map journal; delete it/);
});

test('files a power cut lost after their update are read through the journal and landed again; checkpoints bound it', async (t) => {
  const map = join(dir, 'powercut', 'map.json');
  const journal = join(mapDir(map), 'journal.json');
  const held = () => {
    const j = JSON.parse(readFileSync(journal, 'utf8'));
    return { j, n: Object.keys(j.write).length + j.remove.length };
  };
  for (let ver = 0; ver < 12; ver++) {
    const r = request(ver % 4, ver, () => 0.5);
    await updateMap(map, () => freshMap(r), fn(r), view(r));
    // Bounded: what is held past 32 files is synced and dropped by the next update.
    t.true(held().n <= 32, `update ${ver} leaves ${held().n} files in the journal`);
  }
  const whole = encodeMap(readMap(map)!);
  // A power cut: the unsynced files the journal holds came back empty, or not at all.
  const rels = Object.keys(held().j.write).filter((rel) => rel.startsWith('images/'));
  t.true(rels.length >= 1);
  writeFileSync(join(mapDir(map), rels[0]), '');
  rmSync(join(mapDir(map), rels.at(-1)!), { force: true });
  t.is(encodeMap(readMap(map)!), whole, 'a reader reads through the journal');
  const r = request(3, 11, () => 0.5); // the last update again: the map is unchanged
  await updateMap(map, () => freshMap(r), fn(r), view(r));
  t.is(encodeMap(readMap(map)!), whole);
  for (const rel of rels)
    t.is(readFileSync(join(mapDir(map), rel), 'utf8'), held().j.write[rel], `${rel} landed again`);
  // A journal older than the checkpoint's age is synced and replaced by the next update's alone.
  const { j } = held();
  writeFileSync(journal, JSON.stringify({ ...j, since: 0 }));
  const r2 = request(2, 12, () => 0.5);
  await updateMap(map, () => freshMap(r2), fn(r2), view(r2));
  const after = held().j;
  t.true(after.since > 0);
  t.deepEqual(Object.keys(after.write).sort(), [
    'images/img2.json',
    'ulibs/appmain.json',
    `ulibs/appmain/${'app2v10'.padEnd(16, 'a')}.json`,
    `ulibs/appmain/${'app2v12'.padEnd(16, 'a')}.json`,
  ]);
  t.deepEqual(checkMapFile(map), []);
});

test('a map of the single-file form is read whole and written split by the next link', async (t) => {
  const split = join(dir, 'form-split', 'map.json'),
    old = join(dir, 'form-old', 'map.json');
  const reqs = Array.from({ length: 4 }, (_, i) => request(i, 0, () => 0.5));
  for (const r of reqs.slice(0, 3)) await updateMap(split, () => freshMap(r), fn(r), view(r));
  // The same map as an older helper wrote it: one file.
  mkdirSync(join(dir, 'form-old'), { recursive: true });
  writeFileSync(old, encodeMap(readMap(split)!));
  t.regex(readFileSync(old, 'utf8'), /"schema": 1/);
  for (const p of [split, old])
    await updateMap(p, () => freshMap(reqs[3]), fn(reqs[3]), view(reqs[3]));
  t.regex(readFileSync(old, 'utf8'), /"schema": 3/);
  t.true(existsSync(join(mapDir(old), 'images', 'img3.json')));
  t.is(encodeMap(readMap(old)!), encodeMap(readMap(split)!));
  t.deepEqual(checkMapFile(old), []);
});

test('a header of schema 2 (every µlib listed in it) gives each µlib its file at the next link', async (t) => {
  const split = join(dir, 'form3', 'map.json'),
    old = join(dir, 'form2', 'map.json');
  // The first three use a µlib the fourth does not.
  const reqs = [4, 5, 6, 3].map((i) => request(i, 0, () => 0.5));
  for (const r of reqs.slice(0, 3)) await updateMap(split, () => freshMap(r), fn(r), view(r));
  // The same map as the previous helper wrote it: its µlibs' lines in the header, no µlib files.
  mkdirSync(join(dir, 'form2'), { recursive: true });
  cpSync(mapDir(split), mapDir(old), { recursive: true });
  rmSync(join(mapDir(old), 'journal.json'), { force: true });
  const libs = readdirSync(join(mapDir(old), 'ulibs')).filter((f) => f.endsWith('.json'));
  t.true(libs.length >= 3);
  const lines = libs.map(
    (f) =>
      `    ${JSON.stringify(f.slice(0, -5))}: ${readFileSync(join(mapDir(old), 'ulibs', f), 'utf8').trim()}`,
  );
  for (const f of libs) rmSync(join(mapDir(old), 'ulibs', f));
  const head = readFileSync(split, 'utf8')
    .replace('"schema": 3', '"schema": 2')
    .replace(/\n}\n$/, `,\n  "ulibs": {\n${lines.join(',\n')}\n  }\n}\n`);
  writeFileSync(old, head);
  t.is(encodeMap(readMap(old)!), encodeMap(readMap(split)!), 'read as it was written');
  t.deepEqual(checkMapFile(old), []);
  // A link's view: the µlibs it does not use get their files too, and the header loses its list.
  for (const p of [split, old])
    await updateMap(p, () => freshMap(reqs[3]), fn(reqs[3]), view(reqs[3]));
  t.regex(readFileSync(old, 'utf8'), /"schema": 3/);
  t.notRegex(readFileSync(old, 'utf8'), /"ulibs"/);
  for (const f of libs) t.true(existsSync(join(mapDir(old), 'ulibs', f)), f);
  t.is(encodeMap(readMap(old)!), encodeMap(readMap(split)!));
  t.deepEqual(checkMapFile(old), []);
});

test('ASLR: the own code other than the app keeps its place when the app grows, unless the app would then leave the page', (t) => {
  // One image (so its µlibs are its own code): ukboot, then the app, after a gap from the seed.
  const req = (app: number): AllocRequest => ({
    image: 'one',
    head: 0x200,
    textBase: 0x100000,
    ulibs: [
      ['ukboot', 0x100],
      ['appone', app],
    ].map(([name, text], k) => ({
      name: name as string,
      variant: `${k}`.repeat(16),
      sizes: { text: text as number, rodata: 0x40, ind: 0x40 },
      align: { text: 16, rodata: 8, ind: 16 },
      codeSig: sig(name as string),
      mode: 'aslr' as const,
      ptr: 0x40,
    })),
  });
  const text = (app: number, seed: string) =>
    Object.fromEntries(
      allocateAslr(freshMap(req(app)), 'map.json', req(app), seed).placements.map((p) => [
        p.ulib,
        p.at.text!.addr,
      ]),
    );
  let stayed = 0;
  for (let s = 0; s < 12; s++) {
    // The app from 128 bytes to 1152 (a kilobyte more, as the gap counts it).
    const small = text(0x80, `seed${s}`),
      big = text(0x480, `seed${s}`);
    const page = (small.ukboot & ~0xfff) + 0x1000;
    t.true(big.appone + 0x480 <= page, `seed${s}: the app still fits on the page`);
    // Would the app, by the kilobyte, still fit after ukboot where ukboot was?
    if (small.ukboot + 0x100 + 0x800 <= page) {
      t.is(big.ukboot, small.ukboot, `seed${s}: ukboot did not move`);
      stayed++;
    }
  }
  t.true(stayed >= 2, 'some seeds leave the app room where the rest was');
});
