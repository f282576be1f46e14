// The binutils the helper runs (util/tools.ts): a failure is one line naming the file and the tool.
import test from 'ava';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { binutil, objcopy } from '../helper/util/tools.js';
import { tempDir } from './_fixtures.js';

const dir = tempDir('tools');

test('a failing or missing binutil is one error line naming the file', async (t) => {
  const file = join(dir, 'not-elf.dbg');
  writeFileSync(file, 'not an ELF file\n');
  const bad = await t.throwsAsync(objcopy([file, join(dir, 'out')], file));
  t.regex(bad!.message, /not-elf\.dbg: objcopy failed \(.+\); the image was left unchanged$/);
  t.is(bad!.message.split('\n').length, 1);
  const missing = await t.throwsAsync(binutil('no-such-binutil-here', [], file));
  t.is(missing!.message, 'no-such-binutil-here not found; install binutils');
  await t.notThrowsAsync(binutil('true', [], file));
});

test("precompact runs the image rule's strip without a shell only when it is plain words", async (t) => {
  const { plainWords } = await import('../helper/precompact.js');
  t.deepEqual(plainWords('""strip -s --remove-section=.spacer.rewrite'), [
    'strip',
    '-s',
    '--remove-section=.spacer.rewrite',
  ]);
  t.deepEqual(plainWords(' /usr/bin/x86_64-linux-gnu-strip  -s '), [
    '/usr/bin/x86_64-linux-gnu-strip',
    '-s',
  ]);
  for (const cmd of ['strip $FLAGS', "strip 'a b'", 'strip -s; rm x', 'strip `x`', '""', ''])
    t.is(plainWords(cmd), undefined, cmd);
});

test('kept buffers (the link server): a command line never gets one buffer twice; the next reuses them', async (t) => {
  const { keepBuffers, reuseBuffers, takeBuffer, readWhole } =
    await import('../helper/util/buffers.js');
  // Not kept (the CLI): every take is a buffer of its own.
  t.not(takeBuffer(1 << 20).buffer, takeBuffer(1 << 20).buffer);
  keepBuffers();
  reuseBuffers();
  const a = takeBuffer(1 << 20),
    b = takeBuffer(1 << 20);
  t.not(a.buffer, b.buffer);
  reuseBuffers();
  const a2 = takeBuffer((1 << 20) - 5);
  t.is(a2.buffer, a.buffer, 'the next command line reuses the first buffer');
  t.is(a2.length, (1 << 20) - 5);
  // A file read into a kept buffer larger than it: exactly its bytes.
  const file = join(dir, 'whole.bin');
  const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) & 0xff));
  writeFileSync(file, bytes);
  reuseBuffers();
  t.true(readWhole(file).equals(bytes));
  reuseBuffers();
  t.true(readWhole(file).equals(bytes), 'again, in the same (now dirty) buffer');
  t.throws(() => readWhole(join(dir, 'no-such-file')), { code: 'ENOENT' });
});

test('kept cache entries (the link server): read once, then served from memory while the file is the same', async (t) => {
  const { keepEntries, readEntry, writeEntry } = await import('../helper/cache/store.js');
  const dir = join(tempDir('kept-entries'), 'cache');
  const key = 'ab'.repeat(32);
  const path = join(dir, 'proof', 'ab', key);
  keepEntries();
  try {
    writeEntry(dir, 'proof', key, { proved: 'libfoo', n: 1n });
    t.deepEqual(readEntry(dir, 'proof', key), { proved: 'libfoo', n: 1n });
    // Each read is a fresh object: a caller that changes one changes no other.
    const a = readEntry<{ proved: string }>(dir, 'proof', key)!;
    a.proved = 'changed';
    t.is(readEntry<{ proved: string }>(dir, 'proof', key)!.proved, 'libfoo');
    // Kept: a file that still is the same file is not read again (its bytes are not looked at).
    const bytes = readFileSync(path);
    const tampered = Buffer.from(bytes);
    tampered[tampered.length - 1] ^= 0xff;
    writeFileSync(path, tampered); // the same inode and size
    t.is(readEntry<{ proved: string }>(dir, 'proof', key)!.proved, 'libfoo');
    // Removed (a gc): a miss, as for a process of its own.
    rmSync(path);
    t.is(readEntry(dir, 'proof', key), undefined);
    // Replaced by another file: read again, and checked by its hash (a bad one is a miss).
    writeFileSync(path, tampered);
    t.is(readEntry(dir, 'proof', key), undefined);
    t.false(existsSync(path), 'an entry whose hash does not match is removed');
  } finally {
    keepEntries(0);
  }
});
