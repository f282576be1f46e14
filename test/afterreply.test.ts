// Work left until a served command's answer is out (util/after-reply.ts): a link's map write, with
// the lock, lands after the answer and before the next request; one that fails is the failure of
// that image's finish, and the map stays as it was. This file's process defers as the link server
// does (each test file runs in a process of its own).
import test from 'ava';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allocate, freshMap, type AllocRequest } from '../helper/layout/allocate.js';
import { mapWriteKey, updateMap } from '../helper/layout/map-lock.js';
import { mapDir, readMap } from '../helper/layout/map-store.js';
import type { SpacerMap } from '../helper/layout/map-types.js';
import { deferAfterReply, failedLater, runAfterReply } from '../helper/util/after-reply.js';
import { keepEntries, readEntry, useCache, writeEntry } from '../helper/cache/store.js';
import { tempDir } from './_fixtures.js';

const dir = tempDir('afterreply');
deferAfterReply();

function request(image: string, app: string): AllocRequest {
  return {
    image,
    ulibs: [
      {
        name: 'liba',
        variant: 'a'.repeat(16),
        sizes: { text: 0x900, rodata: 0x100, data: 0x40, ind: 0x60 },
        align: { text: 16, rodata: 8, data: 8, ind: 16 },
        codeSig: 'a'.repeat(16).replace(/a/g, 'c'),
      },
      {
        name: `app${app}`,
        variant: app.padEnd(16, '0'),
        sizes: { text: 0x300, rodata: 0x40, ind: 0x30 },
        align: { text: 16, rodata: 8, ind: 16 },
        codeSig: Buffer.from(app).toString('hex').padEnd(16, '1'),
      },
    ],
    head: 0x1000,
    textBase: 0x100000,
  };
}

const link = (map: string, req: AllocRequest) =>
  updateMap(
    map,
    () => freshMap(req),
    (m: SpacerMap) => allocate(m, map, req),
    { image: req.image, want: Object.fromEntries(req.ulibs.map((u) => [u.name, u.variant])) },
    mapWriteKey(map, req.image),
  );

test.serial(
  "a link's map write waits for the answer, holding the lock, and lands before the next request",
  async (t) => {
    const map = join(dir, 'wait', 'map.json');
    await link(map, request('one', 'x'));
    // Answered: nothing written yet, the lock held.
    t.false(existsSync(map));
    t.true(existsSync(`${map}.lock`));
    const lines: string[] = [];
    runAfterReply((l) => lines.push(l));
    t.deepEqual(lines, []);
    t.false(existsSync(`${map}.lock`));
    t.truthy(readMap(map)?.images.one);
    t.is(failedLater(mapWriteKey(map, 'one')), undefined);
    // A second update of the same map in one request does not wait for its own lock: the first
    // lands, then the second runs on it.
    await link(map, request('two', 'y'));
    await link(map, request('three', 'z'));
    runAfterReply((l) => lines.push(l));
    t.deepEqual(Object.keys(readMap(map)?.images ?? {}).sort(), ['one', 'three', 'two']);
    t.false(existsSync(`${map}.lock`));
  },
);

test.serial(
  'a map write that fails after the answer: the lock goes, the map is as it was, and the finish of that image is told',
  async (t) => {
    const map = join(dir, 'fail', 'map.json');
    await link(map, request('one', 'x'));
    runAfterReply(() => {});
    const before = readFileSync(map, 'utf8');
    // A folder where the journal goes: the next update cannot write its journal (even as root), so
    // none of its files lands.
    const journal = join(mapDir(map), 'journal.json');
    rmSync(journal, { force: true });
    mkdirSync(join(journal, 'in-the-way'), { recursive: true });
    await link(map, request('two', 'y'));
    const lines: string[] = [];
    runAfterReply((l) => lines.push(l));
    t.is(lines.length, 1);
    t.regex(lines[0], /map write .*map\.json two: /);
    t.false(existsSync(`${map}.lock`));
    t.is(readFileSync(map, 'utf8'), before);
    t.truthy(failedLater(mapWriteKey(map, 'two')));
    // Asked once: the next link of the image starts clean.
    t.is(failedLater(mapWriteKey(map, 'two')), undefined);
    t.false(existsSync(join(mapDir(map), 'images', 'two.json')));
    rmSync(journal, { recursive: true });
  },
);

test.serial(
  'a cache entry made in a request reads back at once and is on disk after the answer',
  (t) => {
    const cache = join(dir, 'cache');
    keepEntries();
    useCache(cache);
    // The folder's first entry is written at once (a folder that cannot be written is said then).
    writeEntry(cache, 'proof', 'a'.repeat(64), { n: 1 });
    t.true(existsSync(join(cache, 'proof', 'aa', 'a'.repeat(64))));
    writeEntry(cache, 'proof', 'b'.repeat(64), { n: 2 });
    const later = join(cache, 'proof', 'bb', 'b'.repeat(64));
    t.false(existsSync(later));
    t.deepEqual(readEntry(cache, 'proof', 'b'.repeat(64)), { n: 2 });
    runAfterReply(() => {});
    t.true(existsSync(later));
    t.deepEqual(readEntry(cache, 'proof', 'b'.repeat(64)), { n: 2 });
  },
);

test.serial(
  'a cache entry that cannot be written after the answer: the next one is written at once, and its failure is said to that build',
  (t) => {
    const cache = join(dir, 'cache-fail');
    keepEntries();
    writeEntry(cache, 'proof', 'a'.repeat(64), { n: 1 });
    // A file where the folder of keys starting `cc` goes: such an entry cannot be written (even as
    // root).
    writeFileSync(join(cache, 'proof', 'cc'), 'in the way\n');
    const said: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (said.push(String(s)), true)) as typeof write;
    try {
      writeEntry(cache, 'proof', 'c'.repeat(64), { n: 3 });
      runAfterReply(() => {});
      t.deepEqual(said, [], 'after the answer no build is there to be told');
      // The folder's next entry is written at once, and its failure is the link's warning.
      writeEntry(cache, 'proof', 'c'.repeat(64), { n: 3 });
      t.is(said.length, 1);
      t.regex(said[0], /cache-fail: the cache cannot be written \(ENOTDIR\)/);
    } finally {
      process.stderr.write = write;
    }
  },
);
