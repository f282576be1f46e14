// The binutils the helper runs (util/tools.ts): a failure is one line naming the file and the tool.
import test from 'ava';
import { writeFileSync } from 'node:fs';
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
