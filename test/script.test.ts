// The aligned script: derived from the platform's own script, linked by the real GNU ld.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { ElfFile, PT_LOAD } from '../helper/elf.js';
import { parseScript, renderScript, globMatch } from '../helper/ldscript.js';
import { readMap } from '../helper/layout/map-store.js';
import { analyzePlatform } from '../helper/script.js';
import {
  bootUlib,
  linkWith,
  platformLds,
  root,
  spacer,
  spacerLink,
  tempDir,
  testUlib,
} from './_fixtures.js';

const dir = tempDir('script');
const objs: Record<string, string> = {};

test.before(async () => {
  objs.libboot = await bootUlib(dir);
  for (const n of ['liba', 'libb', 'libc'])
    objs[n] = await testUlib(dir, n, { funcs: 3, calls: n === 'liba' ? [] : ['liba'] });
  objs.app1 = await testUlib(dir, 'app1', { funcs: 1, calls: ['libb'] });
  objs.app2 = await testUlib(dir, 'app2', { funcs: 5, calls: ['libb', 'libc'] });
});

async function linkImage(name: string, objects: string[], map = join(dir, 'map.json')) {
  const { lds, dbg } = await spacerLink(dir, name, objects, map);
  return {
    lds,
    dbg,
    elf: ElfFile.load(dbg),
    plan: JSON.parse(readFileSync(`${lds}.json`, 'utf8')),
  };
}

const sym = (elf: ElfFile, name: string) => elf.symbols().find((s) => s.name === name)!.value;

test('the script parser gives back the platform script byte for byte', (t) => {
  for (const p of [platformLds, join(root, 'example', 'platform', 'link64.lds')]) {
    let src: string;
    try {
      src = readFileSync(p, 'utf8');
    } catch {
      continue;
    }
    t.is(renderScript(parseScript(src)), src, p);
  }
  const plat = analyzePlatform(readFileSync(platformLds, 'utf8'));
  t.is(plat.textBase, 0x100000);
  t.deepEqual(plat.sections.text.patterns, ['.text', '.text.*']);
  t.deepEqual(plat.sections.bss.patterns, ['.bss', '.bss.*', 'COMMON']);
  t.true(globMatch('.uk_inittab[1-6][0-9]', '.uk_inittab20'));
  t.false(globMatch('.uk_inittab[1-6][0-9]', '.uk_inittab70'));
});

test('every µlib sits at its map slot, in its own sections, and `spacer finish` agrees', async (t) => {
  // Its own map: other tests link into the shared one at the same time.
  const own = join(dir, 'one-map.json');
  await linkImage('zero', [objs.libboot, objs.liba, objs.libb, objs.libc, objs.app2], own);
  const { elf, plan, dbg, lds } = await linkImage(
    'one',
    [objs.libboot, objs.liba, objs.libb, objs.app1],
    own,
  );
  const m = readMap(own)!;
  t.true(plan.ulibs.filter((u: any) => u.shared).length >= 3, 'libboot, liba, libb shared');
  for (const u of plan.ulibs) {
    for (const [kind, s] of Object.entries<any>(u.slots)) {
      const sec = elf.section(s.section)!;
      t.truthy(sec, s.section);
      t.is(sec.addr, BigInt(s.addr));
      const v = m.ulibs[u.name].variants[u.variant] as any;
      if (u.shared) t.is(v.slot[kind].addr, Number(BigInt(s.addr)));
      else t.falsy(v.slot);
    }
  }
  const r = await spacer(['finish', dbg, '--plan', `${lds}.json`]);
  t.is(r.exitCode, 0, r.stderr);
  t.truthy(ElfFile.load(dbg).section('.spacer.plan'));
  // Twice is a no-op.
  const before = readFileSync(dbg);
  t.regex((await spacer(['finish', dbg, '--plan', `${lds}.json`])).stderr, /already finished/);
  t.true(readFileSync(dbg).equals(before));
});

test('mergeable strings stay in each µlib; tables stay global and contiguous; boundary symbols hold', async (t) => {
  const { elf, plan } = await linkImage('two', [
    objs.libboot,
    objs.liba,
    objs.libb,
    objs.libc,
    objs.app2,
  ]);
  const greeting = Buffer.from('a greeting every µlib has');
  for (const n of ['liba', 'libb', 'libc', 'app2']) {
    t.true(
      elf.contents(elf.section(`.rodata.${n}`)!).includes(greeting),
      `${n} keeps its own copy`,
    );
  }
  // The default layout merges them into one copy: that is what would break sharing.
  const plain = ElfFile.load(
    await linkWith(
      platformLds,
      [objs.libboot, objs.liba, objs.libb, objs.libc, objs.app2],
      join(dir, 'plain.dbg'),
    ),
  );
  const ro = plain.contents(plain.section('.rodata')!);
  t.is(ro.indexOf(greeting), ro.lastIndexOf(greeting));
  // One init entry per µlib with an init function, in one table, after every read-only slot.
  const inittab = elf.section('.uk_inittab')!;
  t.is(Number(inittab.size), 8 * 4); // liba, libb, libc, app2 (libboot has none)
  const libinfo = elf.section('.uk_libinfo')!;
  const lastRodata = Math.max(
    ...plan.ulibs
      .filter((u: any) => u.slots.rodata)
      .map((u: any) => Number(BigInt(u.slots.rodata.addr))),
  );
  t.true(Number(libinfo.addr) > lastRodata, 'INSERT AFTER .rodata lands after the µlib slots');
  t.true(elf.contents(libinfo).includes(Buffer.from('libc\0')));
  // Boundary symbols cover the slots.
  const m = readMap(join(dir, 'map.json'))!;
  t.is(sym(elf, '_rodata'), BigInt(m.regions.rodata.base));
  t.is(sym(elf, '_data'), BigInt(m.regions.data.base));
  const texts = elf.sections.filter((s) => s.name.startsWith('.text.'));
  t.true(
    sym(elf, '_etext') >= texts.reduce((a, s) => (s.addr + s.size > a ? s.addr + s.size : a), 0n),
  );
  const bss = elf.sections.filter((s) => s.name.startsWith('.bss.'));
  t.true(sym(elf, '__bss_start') <= bss[0].addr);
  t.true(sym(elf, '_end') >= bss[bss.length - 1].addr + bss[bss.length - 1].size);
});

test('program headers: no empty PT_LOAD at 0, at most two more PT_LOADs than the default layout', async (t) => {
  const objects = [objs.libboot, objs.liba, objs.libb, objs.libc, objs.app2];
  const { elf } = await linkImage('three', objects);
  const plain = ElfFile.load(await linkWith(platformLds, objects, join(dir, 'plain3.dbg')));
  t.false(elf.segments.some((p) => p.type === PT_LOAD && p.vaddr === 0n && p.memsz === 0n));
  // One PT_LOAD more for the µlibs' .bss, one for the indirection tables.
  t.true(
    elf.loads.length <= plain.loads.length + 2,
    `${elf.loads.length} vs ${plain.loads.length}`,
  );
  const { stdout } = await execa('readelf', ['-lW', join(dir, 'three.dbg')]);
  t.regex(stdout, /LOAD .* RW /);
});

test('a µlib identical in two images occupies identical bytes at identical addresses', async (t) => {
  const a = await linkImage('faas1', [objs.libboot, objs.liba, objs.libb, objs.app1]);
  const b = await linkImage('faas2', [objs.libboot, objs.liba, objs.libb, objs.libc, objs.app2]);
  for (const n of ['liba', 'libb']) {
    for (const k of ['text', 'rodata', 'data']) {
      const sa = a.elf.section(`.${k}.${n}`),
        sb = b.elf.section(`.${k}.${n}`);
      if (!sa) continue;
      t.is(sa.addr, sb!.addr);
      t.true(a.elf.contents(sa).equals(b.elf.contents(sb!)), `.${k}.${n}`);
    }
  }
  // The app µlibs differ, and so do their bytes.
  t.false(
    a.elf
      .contents(a.elf.section('.text.app1')!)
      .equals(b.elf.contents(b.elf.section('.text.app2')!)),
  );
});

test('per-app variants share one name slot, and what follows the own area starts at the same address', async (t) => {
  const map = join(dir, 'name-map.json');
  // libper is built per app (like ukboot with CONFIG_UK_NAME): same code, another name string.
  // libuse is shared and calls into it; each app µlib has data of another size.
  const per = await Promise.all(
    ['pera', 'perb', 'perc'].map(async (tag) => {
      const d = join(dir, tag);
      return testUlib(d, 'libper', {
        funcs: 2,
        extra: `const char libper_name[] = "${tag}-image";\n`,
      });
    }),
  );
  const libuse = await testUlib(dir, 'libuse', { funcs: 2, calls: ['libper'] });
  const apps = await Promise.all(
    [1, 2, 3].map((i) =>
      testUlib(dir, `nsapp${i}`, {
        funcs: i,
        calls: ['libuse'],
        extra: `unsigned char nsapp${i}_own[${i * 40}] = {1};\n`,
      }),
    ),
  );
  const objects = (i: number) => [objs.libboot, libuse, per[i], apps[i]];
  for (const i of [0, 1, 2, 0]) await linkImage(`ns${i}`, objects(i), map);
  const imgs = await Promise.all([0, 1, 2].map((i) => linkImage(`ns${i}`, objects(i), map)));
  const m = readMap(map)!;
  t.truthy(m.ulibs.libper.slot, 'libper has a name slot');
  const at = (x: (typeof imgs)[number], s: string) => x.elf.section(s)?.addr;
  for (const x of imgs.slice(1)) {
    t.is(at(x, '.text.libper'), at(imgs[0], '.text.libper'), 'per-app variant at the same address');
    t.is(at(x, '.rodata.libper'), at(imgs[0], '.rodata.libper'));
    t.is(
      at(x, '.uk_libinfo'),
      at(imgs[0], '.uk_libinfo'),
      'libinfo after the own area: same address',
    );
  }
  // The rewrite sends libuse's calls into libper through its table: the same bytes in every image.
  const tables: Buffer[] = [];
  for (const x of imgs) {
    const r = await spacer(['finish', x.dbg, '--plan', `${x.lds}.json`]);
    t.is(r.exitCode, 0, r.stderr);
    const e = ElfFile.load(x.dbg);
    tables.push(
      Buffer.concat(['.text.libuse', '.ind.libuse'].map((n) => e.contents(e.section(n)!))),
    );
  }
  t.true(
    tables[1].equals(tables[0]) && tables[2].equals(tables[0]),
    'libuse code and table identical',
  );
});

test('an image without the first µlib of a region still has every segment on a page (zeros pad the start)', async (t) => {
  const map = join(dir, 'pad-map.json');
  // libr and libs become shared (libr first in every region); the third image has no libr.
  const [libr, libs, libq] = await Promise.all(
    ['libr', 'libs', 'libq'].map((n) => testUlib(dir, n, { funcs: 2 })),
  );
  await linkImage('padA', [objs.libboot, libr, libs], map);
  await linkImage('padB', [objs.libboot, libr, libs], map);
  const { elf, dbg, lds } = await linkImage('padC', [objs.libboot, libs, libq], map);
  t.truthy(elf.section('.spacer.pad.rodata'), 'a pad where libr would be');
  t.truthy(elf.section('.spacer.pad.bss'));
  for (const p of elf.loads)
    if (p.memsz > 0n) t.is(p.vaddr % 4096n, 0n, `PT_LOAD at 0x${p.vaddr.toString(16)}`);
  const r = await spacer(['finish', dbg, '--plan', `${lds}.json`]);
  t.is(r.exitCode, 0, r.stderr);
});

test('comments in the platform script do not hide its text base or region starts', (t) => {
  const src = readFileSync(platformLds, 'utf8').replace(
    /\. = 0x100000;/,
    '/* the kernel starts here */\n . = 0x100000; /* 1 MiB */',
  );
  t.not(src, readFileSync(platformLds, 'utf8'));
  const plat = analyzePlatform(src);
  t.is(plat.textBase, 0x100000);
  t.is(renderScript(parseScript(src)), src);
});
