// The ELF reader against readelf, on real objects and images made by gcc and ld.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { ElfFile } from '../helper/elf.js';
import { bootUlib, linkWith, platformLds, tempDir, testUlib } from './_fixtures.js';

const dir = tempDir('elf');
let obj: string, image: string;

test.before(async () => {
  obj = await testUlib(dir, 'libalpha', { funcs: 4 });
  const boot = await bootUlib(dir);
  image = await linkWith(platformLds, [boot, obj], join(dir, 'img.dbg'));
});

/** `readelf -SW` rows: name, type, addr, offset, size, entsize, align. */
async function readelfSections(path: string) {
  const { stdout } = await execa('readelf', ['-SW', path]);
  const rows = [];
  for (const line of stdout.split('\n')) {
    const m =
      /^\s*\[\s*(\d+)\]\s+(\S*)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+(\S*?)\s*(\d+)\s+(\d+)\s+(\d+)\s*$/.exec(
        line,
      );
    if (m)
      rows.push({
        index: +m[1],
        name: m[2],
        addr: BigInt('0x' + m[4]),
        offset: BigInt('0x' + m[5]),
        size: BigInt('0x' + m[6]),
        entsize: BigInt('0x' + m[7]),
        align: BigInt(m[11]),
      });
  }
  return rows;
}

for (const which of ['object', 'image'] as const) {
  test(`sections of the ${which} match readelf (addresses, sizes, sh_addralign, sh_entsize)`, async (t) => {
    const path = which === 'object' ? obj : image;
    const elf = ElfFile.load(path);
    const rows = await readelfSections(path);
    t.true(rows.length > 5);
    t.is(elf.sections.length, rows.length);
    for (const r of rows) {
      const s = elf.sections[r.index];
      // readelf truncates long names with [...]: compare the prefix.
      t.true(s.name.startsWith(r.name.replace(/\[\.\.\.\]$/, '')), `${s.name} vs ${r.name}`);
      t.is(s.addr, r.addr, s.name);
      t.is(s.offset, r.offset, s.name);
      t.is(s.size, r.size, s.name);
      t.is(s.entsize, r.entsize, s.name);
      t.is(s.addralign, r.align, s.name);
    }
    // Mergeable strings have sh_entsize 1 (an object keeps them in their own input section).
    if (which === 'object')
      t.true(elf.sections.some((s) => s.name.startsWith('.rodata.str') && s.entsize === 1n));
  });
}

test('symbols match readelf -s', async (t) => {
  const elf = ElfFile.load(obj);
  const { stdout } = await execa('readelf', ['-sW', obj]);
  const rows = stdout
    .split('\n')
    .map((l) => /^\s*(\d+):\s+([0-9a-f]+)\s+(\d+)\s+(\w+)\s+(\w+)\s+\w+\s+(\S+)\s*(\S*)$/.exec(l))
    .filter(Boolean) as RegExpExecArray[];
  const syms = elf.symbols();
  t.is(syms.length, rows.length);
  for (const m of rows) {
    const s = syms[+m[1]];
    t.is(s.value, BigInt('0x' + m[2]));
    t.is(s.size, BigInt(m[3]));
    if (m[7] && m[4] !== 'SECTION') t.is(s.name, m[7]);
  }
  t.truthy(syms.find((s) => s.name === 'libalpha_f3'));
});

test('relocations match readelf -r', async (t) => {
  const elf = ElfFile.load(obj);
  const { stdout } = await execa('readelf', ['-rW', obj]);
  const counts = [
    ...stdout.matchAll(/Relocation section '([^']+)' at offset 0x[0-9a-f]+ contains (\d+) entr/g),
  ];
  t.true(counts.length > 0);
  for (const [, name, n] of counts) {
    const s = elf.section(name)!;
    const relocs = elf.relocations(s);
    t.is(relocs.length, Number(n), name);
  }
  const text = elf.section('.text')!;
  const first =
    /^([0-9a-f]+)\s+([0-9a-f]+)\s+(R_X86_64_\w+)\s+[0-9a-f]+\s+(\S+)\s+([+-])\s+([0-9a-f]+)$/m.exec(
      stdout.slice(stdout.indexOf("'.rela.text'")),
    )!;
  const r = elf.relocationsFor(text)[0];
  t.is(r.offset, BigInt('0x' + first[1]));
  t.is(r.addend, (first[5] === '-' ? -1n : 1n) * BigInt('0x' + first[6]));
});

test('program headers of the ELF64 image and its ELF32 form match readelf -l', async (t) => {
  // As the platform does: strip (it drops the --emit-relocs relocations), then rewrap as ELF32.
  const stripped = join(dir, 'img.stripped'),
    img32 = join(dir, 'img32.elf');
  await execa('strip', ['-s', image, '-o', stripped]);
  await execa('objcopy', ['-O', 'elf32-i386', stripped, img32]);
  for (const path of [image, img32]) {
    const elf = ElfFile.load(path);
    const { stdout } = await execa('readelf', ['-lW', path]);
    const loads = [
      ...stdout.matchAll(
        /^\s*LOAD\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)/gm,
      ),
    ];
    t.is(elf.loads.length, loads.length, path);
    elf.loads.forEach((p, i) => {
      t.is(p.offset, BigInt('0x' + loads[i][1]));
      t.is(p.vaddr, BigInt('0x' + loads[i][2]));
      t.is(p.filesz, BigInt('0x' + loads[i][4]));
      t.is(p.memsz, BigInt('0x' + loads[i][5]));
    });
  }
  t.is(ElfFile.load(img32).header.class, 32);
});

test('bad input is one clear error naming the file', (t) => {
  const data = readFileSync(image);
  const cases: [string, Buffer, RegExp][] = [
    ['trunc-header.elf', data.subarray(0, 40), /truncated ELF file/],
    ['trunc-body.elf', data.subarray(0, data.length - 200), /truncated ELF file/],
    ['text.elf', Buffer.from('#!/bin/sh\necho not an image\n'), /not an ELF file/],
    ['empty.elf', Buffer.alloc(0), /not an ELF file/],
  ];
  const foreign = Buffer.from(data);
  foreign.writeUInt16LE(183, 18); // EM_AARCH64
  cases.push(['foreign.elf', foreign, /foreign architecture/]);
  for (const [name, bytes, re] of cases) {
    const p = join(dir, name);
    writeFileSync(p, bytes);
    const e = t.throws(() => ElfFile.load(p));
    t.regex(e!.message, re, name);
    t.true(e!.message.startsWith(p + ': '), name);
    t.false(e!.message.includes('\n'), name);
  }
});

test('sections added in memory (elfappend.ts) read as objcopy adds them, and strip gives the same image', async (t) => {
  const { appendSections } = await import('../helper/elfappend.js');
  const add = [
    { name: '.spacer.rewrite', data: '{"a":1}' },
    { name: '.spacer.plan', data: Buffer.from([0, 1, 2, 3]) },
  ];
  const ours = join(dir, 'ours.dbg'),
    theirs = join(dir, 'theirs.dbg');
  const elf = ElfFile.load(image);
  writeFileSync(ours, appendSections(elf, add)!);
  const args = add.flatMap((s, i) => {
    writeFileSync(join(dir, `s${i}`), s.data);
    return ['--add-section', `${s.name}=${join(dir, `s${i}`)}`];
  });
  await execa('objcopy', [...args, image, theirs]);
  const a = ElfFile.load(ours),
    b = ElfFile.load(theirs);
  for (const s of add) {
    t.true(a.contents(a.section(s.name)!).equals(b.contents(b.section(s.name)!)), s.name);
    t.is(a.section(s.name)!.flags, 0n);
  }
  // Every section of the input where it was, with its bytes (the name table: a longer copy);
  // readelf agrees with our reader.
  for (const s of elf.sections) {
    const x = a.sections[s.index];
    t.is(x.name, s.name);
    if (s.index === elf.header.shstrndx) continue;
    t.is(x.offset, s.offset);
    if (s.type !== 8) t.true(a.contents(x).equals(elf.contents(s)), s.name);
  }
  t.deepEqual(
    (await readelfSections(ours)).map((r) => r.name),
    a.sections.map((s) => s.name),
  );
  for (const f of [ours, theirs]) await execa('strip', ['-s', f, '-o', `${f}.img`]);
  t.true(readFileSync(`${ours}.img`).equals(readFileSync(`${theirs}.img`)), 'strip output');
  t.is(appendSections(elf, [{ name: '.text', data: 'x' }]), undefined, 'a name already there');
});
