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
