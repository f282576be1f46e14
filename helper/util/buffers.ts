// Image-sized buffers the link server keeps from one command line to the next.
//
// `spacer finish` reads the linked image (7 MB on a 39-µlib Unikraft app) and builds its
// rewritten copy. In a fresh buffer every page is first touched by a fault: about 20 ms per image
// on a virtual machine, and each dropped buffer of that size weighs on the garbage collector. The
// link server (server/serve.ts) runs command lines one at a time, so it keeps these buffers: the
// k-th buffer a command line takes is the k-th the one before took. Nothing a command line makes
// outlives it (run.ts starts each with `reuseBuffers`), so no two live users share one. A process
// that runs one command (the CLI) or many images at once (the demo) keeps nothing: each take is a
// new buffer, as before.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** Buffers kept at most, and the most bytes one of them may hold. */
const KEPT_MAX = 4;
const KEPT_BYTES_MAX = 256 << 20;

let keeping = false;
const kept: Buffer[] = [];
let taken = 0;

/** Keep buffers from one command line to the next (the link server). */
export function keepBuffers(): void {
  keeping = true;
}

/** A new command line: the buffers the last one took are free again. */
export function reuseBuffers(): void {
  taken = 0;
}

/** `size` bytes, uninitialised: a kept buffer when there is one this command line has not taken. */
export function takeBuffer(size: number): Buffer {
  if (!keeping || taken >= KEPT_MAX || size > KEPT_BYTES_MAX) return Buffer.allocUnsafeSlow(size);
  const k = taken++;
  if (!kept[k] || kept[k].length < size)
    // A little more than asked: the next image of this app is usually a few bytes longer.
    kept[k] = Buffer.allocUnsafeSlow(Math.min(KEPT_BYTES_MAX, size + (size >> 4) + 4096));
  return kept[k].subarray(0, size);
}

/** The whole file at `path`, read into a taken buffer (as readFileSync, errors included). */
export function readWhole(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const b = takeBuffer(size);
    let at = 0;
    while (at < size) {
      const n = readSync(fd, b, at, size - at, at);
      if (n === 0) break;
      at += n;
    }
    return b.subarray(0, at);
  } finally {
    closeSync(fd);
  }
}
