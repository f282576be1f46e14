// Compaction of the final image (spacer compact): fewer section headers and no zero pages in the
// file between µlib groups, every loaded byte unchanged, and the report reads it like the .dbg.
import test from 'ava';
import { copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { ElfFile } from '../helper/elf.js';
import { scanPages } from '../helper/pages.js';
import { analyzeImages } from '../helper/report.js';
import { bootUlib, spacer, spacerLink, tempDir, testUlib } from './_fixtures.js';

const dir = tempDir('compact');

async function image(name: string, objects: string[], map: string) {
  const { lds, dbg } = await spacerLink(dir, name, objects, map);
  const f = await spacer(['finish', dbg, '--plan', `${lds}.json`]);
  if (f.exitCode !== 0) throw new Error(f.stderr);
  const stripped = join(dir, `${name}.stripped`);
  await execa('strip', ['-s', '--remove-section=.spacer.rewrite', dbg, '-o', stripped]);
  return { dbg, stripped };
}

let stripped: string;

test.before(async () => {
  const map = join(dir, 'map.json');
  const boot = await bootUlib(dir);
  const [a, b, c] = await Promise.all(
    ['liba', 'libb', 'libc'].map((n) => testUlib(dir, n, { funcs: 40 })),
  );
  const apps = await Promise.all(
    ['app1', 'app2', 'app3'].map((n) => testUlib(dir, n, { funcs: 2, calls: ['liba'] })),
  );
  // liba, libb, libc shared by two images; the third lacks libb: a hole of whole pages.
  // Twice: the second links use the slots the first ones made shared.
  for (let pass = 0; pass < 2; pass++) {
    await image('one', [boot, a, b, c, apps[0]], map);
    await image('two', [boot, a, b, c, apps[1]], map);
  }
  ({ stripped } = await image('three', [boot, a, c, apps[2]], map));
});

/** Every loaded range and byte of an image: adjacent segments merged, zeros beyond file size. */
function memory(e: ElfFile): string[] {
  const out: { lo: bigint; hi: bigint; parts: Buffer[] }[] = [];
  for (const p of [...e.loads]
    .filter((x) => x.memsz > 0n)
    .sort((x, y) => (x.vaddr < y.vaddr ? -1 : 1))) {
    const mem = Buffer.alloc(Number(p.memsz));
    e.data.copy(mem, 0, Number(p.offset), Number(p.offset + p.filesz));
    const last = out[out.length - 1];
    if (last && last.hi === p.vaddr) {
      last.parts.push(mem);
      last.hi += p.memsz;
    } else out.push({ lo: p.vaddr, hi: p.vaddr + p.memsz, parts: [mem] });
  }
  return out.map(
    (r) => `${r.lo.toString(16)}-${r.hi.toString(16)}:${Buffer.concat(r.parts).toString('base64')}`,
  );
}

test('a packed image loads the same memory from a smaller file, also after objcopy (Unikraft boot info, ELF32)', async (t) => {
  const packed = join(dir, 'three.packed');
  copyFileSync(stripped, packed);
  const r = await spacer(['compact', packed]);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /packed, \d+ -> \d+ loaded segments/);
  const before = ElfFile.load(stripped),
    after = ElfFile.load(packed);
  t.deepEqual(
    memory(after),
    memory(before),
    'the same bytes over the same ranges: no page left unloaded',
  );
  t.true(
    statSync(packed).size < statSync(stripped).size - 8192,
    `${statSync(stripped).size} -> ${statSync(packed).size} bytes`,
  );
  t.true(after.loads.length > before.loads.length, 'segments were cut at the zero runs');
  t.true(
    after.loads.some((p) => p.filesz < p.memsz && p.filesz > 0n),
    'a piece keeps its zeros as memory size',
  );
  t.true(
    after.loads.some((p) => p.offset % 4096n !== p.vaddr % 4096n),
    'offsets no longer page-congruent',
  );
  // Unikraft's boot makes each loaded segment a memory region and asserts it starts on a page.
  for (const p of after.loads)
    if (p.memsz > 0n)
      t.is(p.vaddr % 4096n, 0n, `PT_LOAD at 0x${p.vaddr.toString(16)} starts on a page`);
  // The report sees the same pages and µlibs.
  const fa = analyzeImages([stripped]),
    fb = analyzeImages([packed]);
  t.is(fb.distinct_pages, fa.distinct_pages);
  t.deepEqual(
    fb.images[0].ulibs?.map((u) => [u.name, u.nonzero_pages]),
    fa.images[0].ulibs?.map((u) => [u.name, u.nonzero_pages]),
  );
  // What Unikraft runs next: objcopy --update-section (boot info) sizes segments from sections;
  // the zero tails have NOBITS sections, so every segment keeps its memory size.
  // (This platform has no .uk_bootinfo: a platform section of the data segment stands for it.)
  const target = after.sections.find(
    (x) => x.flags & 1n && x.flags & 2n && x.type === 1 && !/^\.spacer\./.test(x.name),
  )!;
  t.truthy(target, 'a writable platform section');
  const info = join(dir, 'bootinfo.bin');
  await execa('objcopy', ['-O', 'binary', `--only-section=${target.name}`, packed, info]);
  const patched = join(dir, 'three.patched');
  await execa('objcopy', [packed, patched, `--update-section=${target.name}=${info}`]);
  t.deepEqual(
    memory(ElfFile.load(patched)),
    memory(before),
    'objcopy --update-section keeps the loaded memory',
  );
  const elf32 = join(dir, 'three.elf32');
  await execa('objcopy', ['-O', 'elf32-i386', packed, elf32]);
  t.deepEqual(memory(ElfFile.load(elf32)), memory(before), 'objcopy -O elf32-i386 keeps it too');
  t.true(statSync(elf32).size < statSync(stripped).size - 8192);
  // compact reads ELF64 only: an ELF32 image is refused before anything is written.
  const elf32Bytes = readFileSync(elf32);
  const refused = await spacer(['compact', elf32]);
  t.is(refused.exitCode, 1);
  t.regex(refused.stderr, /not an ELF64 image/);
  t.true(readFileSync(elf32).equals(elf32Bytes), 'the ELF32 file is untouched');
  // Twice is a no-op; without --pack the linker's layout stays.
  const bytes = readFileSync(packed);
  t.is((await spacer(['compact', packed])).exitCode, 0);
  t.true(readFileSync(packed).equals(bytes));
  const plain = join(dir, 'three.plain');
  copyFileSync(stripped, plain);
  t.is((await spacer(['compact', '--no-pack', plain])).exitCode, 0);
  for (const p of ElfFile.load(plain).loads) t.is(p.vaddr % 4096n, p.offset % 4096n);
});

test('packing a truncated or non-ELF file is one error line and leaves it as it was', async (t) => {
  const cut = join(dir, 'three.cut');
  const whole = readFileSync(stripped);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(cut, whole.subarray(0, whole.length - 300));
  const r = await spacer(['compact', cut]);
  t.is(r.exitCode, 1);
  t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.regex(r.stderr, /three\.cut/);
  t.true(readFileSync(cut).equals(whole.subarray(0, whole.length - 300)), 'untouched');
});

test('a compacted image loads the same bytes, drops the holes, and reports like the original', async (t) => {
  const compacted = join(dir, 'three.compact');
  copyFileSync(stripped, compacted);
  const r = await spacer(['compact', '--no-pack', '--holes', compacted]);
  t.is(r.exitCode, 0, r.stderr);
  const before = ElfFile.load(stripped),
    after = ElfFile.load(compacted);
  t.true(after.sections.length < before.sections.length, 'fewer section headers');
  t.true(
    statSync(compacted).size < statSync(stripped).size - 4096,
    'the zero pages of the hole left the file',
  );
  t.true(after.sections.some((s) => s.name === '.spacer.text'));
  t.truthy(after.section('.uk_libinfo'), 'platform sections keep their headers');
  // Same non-zero pages at the same addresses; the hole is no longer loaded.
  const sa = scanPages(before),
    sb = scanPages(after);
  t.deepEqual([...sb.nonzero], [...sa.nonzero]);
  t.true(sb.pages < sa.pages);
  for (const p of after.loads)
    t.is(p.vaddr % 4096n, p.offset % 4096n, 'offsets congruent to addresses');
  // The report attributes pages to µlibs from the plan, as for the uncompacted image.
  const fa = analyzeImages([stripped]),
    fb = analyzeImages([compacted]);
  const ra = fa.images[0],
    rb = fb.images[0];
  t.deepEqual(
    rb.ulibs?.map((u) => [u.name, u.nonzero_pages]),
    ra.ulibs?.map((u) => [u.name, u.nonzero_pages]),
  );
  t.is(fb.content_bound_bytes, fa.content_bound_bytes, 'the same content bound');
  // Twice is a no-op; the .dbg is refused with one clear line.
  const bytes = readFileSync(compacted);
  t.is((await spacer(['compact', '--no-pack', compacted])).exitCode, 0);
  t.true(readFileSync(compacted).equals(bytes));
  const bad = await spacer(['compact', join(dir, 'three.dbg')]);
  t.is(bad.exitCode, 1);
  t.regex(bad.stderr, /three\.dbg: .*strip/);
  t.is(bad.stderr.trim().split('\n').length, 1);
});

test('the loaded-memory check compares span by span as the whole memory would', async (t) => {
  const { loadedMemory, sameLoadedMemory } = await import('../helper/pack.js');
  const whole = (a: ElfFile, b: ElfFile) => {
    const x = loadedMemory(a),
      y = loadedMemory(b);
    return x.length === y.length && x.every((r, i) => r.lo === y[i].lo && r.mem.equals(y[i].mem));
  };
  const base = ElfFile.load(stripped);
  const data = base.data;
  const withByte = (off: number, v: number) => {
    const d = Buffer.from(data);
    d[off] = v;
    return new ElfFile('x', d);
  };
  const seg = base.loads.find((p) => p.filesz > 0n && p.memsz > p.filesz) ?? base.loads[0];
  const inside = Number(seg.offset) + Number(seg.filesz) - 1;
  const cases = [
    base,
    withByte(inside, data[inside] ^ 0xff), // a loaded byte
    withByte(Number(seg.offset), data[Number(seg.offset)] ^ 1),
    withByte(data.length - 1, data[data.length - 1] ^ 0xff), // the section headers: not loaded
  ];
  for (const [i, c] of cases.entries())
    t.is(sameLoadedMemory(base, c), whole(base, c), `case ${i}`);
  t.true(sameLoadedMemory(base, cases[3]));
  t.false(sameLoadedMemory(base, cases[1]));
});

test('with seed salt (ASLR mode) only whole pages of zeros are cut out: the segments do not follow the order of the µlibs', async (t) => {
  const { packImage } = await import('../helper/pack.js');
  // A cut between two pieces of one segment: the zeros from one piece's file end to the next.
  const orig = ElfFile.load(stripped).loads;
  const within = (a: bigint, b: bigint) => orig.some((p) => a >= p.vaddr && b <= p.vaddr + p.memsz);
  const cuts = (file: Buffer) => {
    const e = new ElfFile('packed', file);
    const l = [...e.loads].sort((x, y) => (x.vaddr < y.vaddr ? -1 : 1));
    return l
      .slice(1)
      .map((p, i) => [l[i], p] as const)
      .filter(([a, b]) => within(a.vaddr, b.vaddr + b.memsz))
      .map(([a, b]) => b.vaddr - (a.vaddr + a.filesz));
  };
  const plain = packImage(stripped, { write: false });
  const salted = join(dir, 'three.salted');
  const word = join(dir, 'salt.bin');
  writeFileSync(word, Buffer.alloc(8, 0x5a));
  await execa('objcopy', ['--add-section', `.spacer.salt=${word}`, stripped, salted]);
  const aslr = packImage(salted, { write: false });
  t.true(
    cuts(plain.file).some((g) => g > 0n && g < 4096n),
    'without salt: a cut of less than a page',
  );
  t.deepEqual(
    cuts(aslr.file).filter((g) => g > 0n && g < 4096n),
    [],
    'with salt: no cut of less than a page',
  );
  t.true(aslr.loadsAfter < plain.loadsAfter, `${aslr.loadsAfter} < ${plain.loadsAfter} segments`);
});
