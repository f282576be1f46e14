// The page floor L_pg and own pages on hand-made inputs (docs/metrics.md).
import test from 'ava';
import { ownPages, pageFloor, type FloorImage } from '../helper/floor.js';

const b = (code: number, rodata = 0, data = 0) => ({ code, rodata, data });

test('page floor: shared variants per class once, each image its own per class', (t) => {
  // Two apps share libc and alloc; each has its app and its own boot variant.
  const image = (name: string, app: ReturnType<typeof b>): FloorImage => ({
    name,
    ulibs: [
      { name: 'libc', variant: 'v1', bytes: b(5000, 100, 10) },
      { name: 'alloc', variant: 'v1', bytes: b(3000, 0, 0) },
      { name: 'boot', variant: name, bytes: b(100, 20, 0) },
      { name: 'app', variant: name, bytes: app },
    ],
    own: b(0, 50, 0),
  });
  const images = [image('a', b(200, 30, 8)), image('b', b(5000, 0, 0))];
  const f = pageFloor(images);
  // Shared: code 8000 -> 2 pages, rodata 100 -> 1, data 10 -> 1.
  t.is(f.shared_pages, 4);
  t.is(f.shared_variants, 2);
  // a: code 300 -> 1, rodata 100 -> 1, data 8 -> 1; b: code 5100 -> 2, rodata 70 -> 1.
  t.deepEqual(f.own_pages, { a: 3, b: 3 });
  t.is(f.pages, 10);
  // One image alone: nothing is shared.
  const one = pageFloor(images.slice(0, 1));
  t.is(one.shared_pages, 0);
  // Its own: code 8300 -> 3 pages, rodata 200 -> 1, data 18 -> 1.
  t.is(one.pages, 5);
});

test('own pages: contents only one image holds', (t) => {
  // Content ids 0..3; holders per id.
  const holders = [[0, 1], [0], [1], [0, 1]];
  t.deepEqual(
    ownPages(
      [
        [0, 1, 3],
        [0, 2, 2, 3],
      ],
      holders,
    ),
    [1, 2],
  );
});
