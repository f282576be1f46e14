// The platform's instructions that differ between its variants without a relocation
// (layout/moved.ts): found against the first variant beside the map, listed once, never lost.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { noteVariant, readMoved, type MovedInsn } from '../helper/layout/moved.js';
import { tempDir } from './_fixtures.js';

/** Instructions of 5 bytes from offset 0: the one holding `off`. */
const fives = () => (off: number) => [off - (off % 5), 5] as MovedInsn;

test('the first variant is the reference; a byte that differs lists its instruction once', (t) => {
  const map = join(tempDir('moved'), 'map.json');
  const ref = Buffer.alloc(100, 0x90);
  t.deepEqual(noteVariant(map, 'libkvmplat', ref, fives), []);
  t.deepEqual(readMoved(map, 'libkvmplat', 100), []);
  t.true(readFileSync(`${map}.variants/libkvmplat.100.ref`).equals(ref));
  // Another variant: bytes 11 and 13 (one instruction) and 42 differ.
  const v = Buffer.from(ref);
  v[11] = 1;
  v[13] = 2;
  v[42] = 3;
  let decoded = 0;
  const counting = () => {
    decoded++;
    return fives();
  };
  t.deepEqual(noteVariant(map, 'libkvmplat', v, counting), [
    [10, 5],
    [40, 5],
  ]);
  t.deepEqual(readMoved(map, 'libkvmplat', 100), [
    [10, 5],
    [40, 5],
  ]);
  // A third variant differing inside the listed instructions only: nothing decoded, nothing added.
  const w = Buffer.from(ref);
  w[12] = 7;
  w[44] = 7;
  t.deepEqual(noteVariant(map, 'libkvmplat', w, counting), []);
  t.is(decoded, 1);
  // The reference itself and code of another size add nothing either.
  t.deepEqual(noteVariant(map, 'libkvmplat', ref, counting), []);
  t.deepEqual(readMoved(map, 'libkvmplat', 64), []);
  // A byte outside any instruction (data in code) is left as it is.
  const x = Buffer.from(ref);
  x[90] = 9;
  t.deepEqual(
    noteVariant(map, 'libkvmplat', x, () => (off) => (off >= 90 ? undefined : fives()(off))),
    [],
  );
});

test('a damaged list stops the link with one line naming the file and the fix', (t) => {
  const map = join(tempDir('moved'), 'map.json');
  noteVariant(map, 'libkvmplat', Buffer.alloc(50), fives);
  const v = Buffer.alloc(50);
  v[3] = 1;
  noteVariant(map, 'libkvmplat', v, fives);
  const file = `${map}.variants/libkvmplat.50.moved.json`;
  for (const bad of ['{"at": [[0, 5]', '{"at": [[48, 5]]}', '{"at": [[-1, 5]]}', '[]']) {
    writeFileSync(file, bad);
    const e = t.throws(() => readMoved(map, 'libkvmplat', 50));
    t.regex(e!.message, /moved\.json: not a list of instructions to move; delete it/);
    t.false(e!.message.includes('\n'));
  }
  // Beside a map whose folder is a file: one line naming the reference.
  const notDir = join(tempDir('moved'), 'file');
  writeFileSync(notDir, '');
  const w = t.throws(() => noteVariant(join(notDir, 'map.json'), 'libkvmplat', v, fives));
  t.regex(w!.message, /libkvmplat\.50\.ref: cannot (read|write) it \(ENOTDIR\)/);
  t.false(w!.message.includes('\n'));
});
