// Firecracker: every image of the example workspace, packed the way a Unikraft Firecracker build
// packs it (strip, then `spacer compact --vmm=firecracker`, as scripts/spacer-strip.sh runs it),
// passes every rule of Firecracker's ELF loader and boot path (helper/image/firecracker.ts), and
// the loader's copy into zeroed RAM is the .dbg's memory, byte for byte. No KVM here: nothing
// boots; the rules are checked on the files, and each rule is shown to catch a broken copy.
import test from 'ava';
import { chmodSync, copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { ElfFile, PT_LOAD } from '../helper/elf.js';
import {
  FIRECRACKER_DEFAULT_MEM,
  FIRECRACKER_RULES,
  type FirecrackerOptions,
  type FirecrackerRule,
  checkFirecrackerImage,
  firecrackerCopies,
  firecrackerLoadRules,
  firecrackerMemoryDiff,
} from '../helper/image/firecracker.js';
import type { Layout } from '../helper/pipeline.js';
import { type CompiledWorkspace, compileWorkspace, loadApps } from '../helper/workspace/index.js';
import { buildExample, root, spacer, tempDir } from './_fixtures.js';

const out = tempDir('firecracker');
const apps = loadApps();
const LAYOUTS: Layout[] = ['default', 'spacer', 'spacer-aslr'];
/** Firecracker's default guest (128 MiB). The example's kvmplat keeps its own boot record in
 *  .uk_bootinfo, not Unikraft's, so the region budget is Unikraft's default list (128). */
const OPTS: FirecrackerOptions = { memBytes: FIRECRACKER_DEFAULT_MEM, regionCapacity: 128 };

interface Built {
  app: string;
  layout: Layout;
  dbg: string;
  fc: string;
  elf32: string;
}
const built: Built[] = [];
let compiled: CompiledWorkspace;

test.after.always(() => {
  if (!process.env.SPACER_KEEP_TMP) rmSync(out, { recursive: true, force: true });
});

test.before(async () => {
  compiled = await compileWorkspace(join(out, 'objects'));
  for (const layout of LAYOUTS) {
    // Twice: the second links use the slots the first ones made shared (as the demo does).
    for (let pass = 0; pass < (layout === 'default' ? 1 : 2); pass++) {
      for (const app of apps) {
        const b = await buildExample(app, compiled, {
          out: join(out, layout, app.name),
          layout,
          map: join(out, `${layout}-map.json`),
        });
        if (pass === 0 && layout !== 'default') continue;
        const fc = join(out, layout, `${app.name}.fc`);
        await execa('strip', ['-s', '--remove-section=.spacer.rewrite', b.dbg, '-o', fc]);
        // The default layout stands for Unikraft without lib-spacer: strip only.
        if (layout !== 'default') {
          const r = await spacer(['compact', '--vmm=firecracker', fc]);
          if (r.exitCode !== 0) throw new Error(`${layout}/${app.name}: ${r.stderr}`);
        }
        built.push({ app: app.name, layout, dbg: b.dbg, fc, elf32: b.elf });
      }
    }
  }
});

test('packed for Firecracker, every example image passes every rule and loads its .dbg', (t) => {
  t.is(built.length, apps.length * LAYOUTS.length);
  let packed = 0,
    zeroTails = 0;
  for (const b of built) {
    const name = `${b.layout}/${b.app}`;
    t.deepEqual(firecrackerLoadRules(b.fc, OPTS), [], name);
    t.deepEqual(firecrackerMemoryDiff(b.fc, b.dbg), [], name);
    const e = ElfFile.load(b.fc);
    // What the question was about: p_align 16, offsets not page-congruent, a PT_LOAD with no
    // file bytes (the µlibs' bss). The loader reads none of that; the rules above hold anyway.
    if (e.loads.some((p) => p.filesz > 0n && p.offset % 4096n !== p.vaddr % 4096n)) packed++;
    const bss = e.loads.filter((p) => p.filesz === 0n);
    t.true(
      bss.every((p) => p.memsz > 0n),
      `${name}: no PT_LOAD without memory`,
    );
    if (b.layout !== 'default') {
      t.true(bss.length > 0, `${name}: the bss PT_LOAD stays (Unikraft lists it as the kernel's)`);
      t.true(
        e.loads.some((p) => p.align < 4096n),
        `${name}: p_align below a page`,
      );
    }
    zeroTails += e.loads.filter((p) => p.filesz > 0n && p.filesz < p.memsz).length;
    const copies = firecrackerCopies(b.fc);
    t.is(copies.length, e.loads.filter((p) => p.filesz > 0n).length);
  }
  t.is(packed, apps.length * 2, 'every Spacer image is packed (offsets not page-congruent)');
  t.true(zeroTails > 0, 'some segments rely on zeroed RAM past their file bytes');
  t.log(
    `${built.length} images: ${Object.keys(FIRECRACKER_RULES).length} rules, ` +
      `memory compared byte for byte with each .dbg`,
  );
});

test("after Unikraft's boot-info step (objcopy --update-section) they still pass", async (t) => {
  for (const b of built.filter((x) => x.layout !== 'default')) {
    const e = ElfFile.load(b.fc);
    const info = join(out, `${b.layout}-${b.app}.bootinfo`),
      fin = `${b.fc}.final`;
    writeFileSync(info, e.contents(e.section('.uk_bootinfo')!));
    // Unikraft writes mkbootinfo.py's record; here the same bytes, so the .dbg still compares.
    await execa('objcopy', [b.fc, fin, `--update-section=.uk_bootinfo=${info}`]);
    t.deepEqual(checkFirecrackerImage(fin, b.dbg, OPTS), [], `${b.layout}/${b.app}`);
  }
});

test('the qemu multiboot file (ELF32) is not one Firecracker loads', (t) => {
  const v = firecrackerLoadRules(built[0].elf32, OPTS);
  t.true(
    v.some((x) => x.startsWith('elf-phentsize:')),
    v.join('\n'),
  );
});

// --- Each rule catches a broken copy of a packed image.

const sample = () => built.find((b) => b.layout === 'spacer-aslr' && b.app === 'kvstore')!;

interface Ph {
  at: number;
  type: number;
  flags: number;
  offset: bigint;
  vaddr: bigint;
  paddr: bigint;
  filesz: bigint;
  memsz: bigint;
}
function phdrs(d: Buffer): Ph[] {
  const phoff = Number(d.readBigUInt64LE(32)),
    n = d.readUInt16LE(56);
  return Array.from({ length: n }, (_, i) => {
    const at = phoff + i * 56;
    return {
      at,
      type: d.readUInt32LE(at),
      flags: d.readUInt32LE(at + 4),
      offset: d.readBigUInt64LE(at + 8),
      vaddr: d.readBigUInt64LE(at + 16),
      paddr: d.readBigUInt64LE(at + 24),
      filesz: d.readBigUInt64LE(at + 32),
      memsz: d.readBigUInt64LE(at + 40),
    };
  });
}
const FIELD = { offset: 8, vaddr: 16, paddr: 24, filesz: 32, memsz: 40 };
const set = (d: Buffer, p: Ph, field: keyof typeof FIELD, v: bigint) =>
  d.writeBigUInt64LE(v, p.at + FIELD[field]);
const place = (d: Buffer, p: Ph, a: bigint) => {
  set(d, p, 'vaddr', a);
  set(d, p, 'paddr', a);
};
const loadsOf = (d: Buffer) => phdrs(d).filter((p) => p.type === PT_LOAD);
const bssOf = (d: Buffer) => loadsOf(d).find((p) => p.filesz === 0n && p.memsz > 0n)!;
const codeOf = (d: Buffer) => loadsOf(d).find((p) => p.flags & 1)!;
/** The file with a note segment: the GNU_STACK header becomes a PT_NOTE over `note`, appended. */
function withNote(d: Buffer, note: Buffer, filesz = BigInt(note.length)): Buffer {
  const f = Buffer.concat([d, Buffer.alloc((4 - (d.length % 4)) % 4), note]);
  const stack = phdrs(f).find((p) => p.type === 0x6474e551)!;
  f.writeUInt32LE(4, stack.at);
  set(f, stack, 'offset', BigInt(f.length - note.length));
  set(f, stack, 'filesz', filesz);
  return f;
}
function note(type: number, name: string, desc: Buffer, namesz = name.length): Buffer {
  const n = Buffer.alloc(Math.ceil(name.length / 4) * 4);
  n.write(name, 'latin1');
  const h = Buffer.alloc(12);
  h.writeUInt32LE(namesz, 0);
  h.writeUInt32LE(desc.length, 4);
  h.writeUInt32LE(type, 8);
  return Buffer.concat([h, n, desc, Buffer.alloc((4 - (desc.length % 4)) % 4)]);
}
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};

/** A mutation that changes the file in place. */
const edit =
  (change: (d: Buffer) => void) =>
  (d: Buffer): Buffer => {
    change(d);
    return d;
  };

/** Each mutation: the rules it breaks (the one under test first, then those it cannot help
 *  breaking). */
const mutations: [FirecrackerRule[], (d: Buffer) => Buffer, FirecrackerOptions?][] = [
  [['elf-header'], (d) => d.subarray(0, 40)],
  [['elf-magic'], edit((d) => (d[0] = 0))],
  [['elf-endian'], edit((d) => (d[5] = 2))],
  [['elf-class'], edit((d) => (d[4] = 1))],
  [['elf-phentsize'], edit((d) => d.writeUInt16LE(32, 54))],
  [['elf-phoff'], edit((d) => d.writeBigUInt64LE(16n, 32))],
  [['entry-high', 'entry-loaded'], edit((d) => d.writeBigUInt64LE(0x9000n, 24))],
  [['phdr-table'], edit((d) => d.writeUInt16LE(0xfff0, 56))],
  [['segment-in-file'], edit((d) => set(d, codeOf(d), 'offset', BigInt(d.length)))],
  [
    ['segment-in-ram', 'entry-loaded', 'ram-size', 'vaddr-paddr'],
    edit((d) => set(d, codeOf(d), 'paddr', 200n << 20n)),
  ],
  [
    ['segment-overflow', 'boot-mapped', 'ram-size', 'overlap'],
    edit((d) => set(d, codeOf(d), 'memsz', (1n << 64n) - 0x1000n)),
  ],
  [['note-read'], (d) => withNote(d, note(1, 'GNU\0', Buffer.alloc(4)), 100n)],
  [['note-overflow'], (d) => withNote(d, note(1, 'GNU\0', Buffer.alloc(4), 0xfffffffe))],
  [['pvh-note'], (d) => withNote(d, note(18, 'Xen\0', u32(0x100000)))],
  [['pvh-note'], (d) => withNote(d, note(18, 'Xen\0', Buffer.alloc(2)))],
  [['machine'], edit((d) => d.writeUInt16LE(3, 18))],
  [['entry-loaded'], edit((d) => d.writeBigUInt64LE(bssOf(d).vaddr + 0x10n, 24))],
  [['boot-mapped'], edit((d) => place(d, bssOf(d), 3n << 29n)), { memBytes: 2n << 30n }],
  [['low-memory'], edit((d) => place(d, bssOf(d), 0x80000n))],
  [['ram-size'], edit((d) => set(d, bssOf(d), 'memsz', 200n << 20n))],
  [['initrd'], (d) => d, { initrdBytes: 127n << 20n }],
  [['vaddr-paddr'], edit((d) => set(d, bssOf(d), 'paddr', bssOf(d).paddr + 0x100000n))],
  [['page-start'], edit((d) => place(d, bssOf(d), bssOf(d).vaddr + 0x10n))],
  [['overlap'], edit((d) => place(d, bssOf(d), codeOf(d).vaddr))],
  [['regions'], (d) => d, { regionCapacity: 20 }],
];

for (const [i, [rules, mutate, opts]] of mutations.entries()) {
  test(`rule ${rules[0]} (${i}) catches a broken image, and only the rules it breaks`, (t) => {
    t.deepEqual(firecrackerLoadRules(readFileSync(sample().fc), OPTS), [], 'the original passes');
    const d = mutate(Buffer.from(readFileSync(sample().fc)));
    const v = firecrackerLoadRules(d, { ...OPTS, ...opts });
    const broken = [...new Set(v.map((x) => x.split(':')[0]))];
    t.deepEqual(broken.sort(), [...rules].sort(), v.join(' | '));
  });
}

test('rule regions: the room in a Unikraft .uk_bootinfo is read from the image', (t) => {
  const d = Buffer.from(readFileSync(sample().fc));
  const e = new ElfFile('x', d),
    s = e.section('.uk_bootinfo')!;
  t.deepEqual(firecrackerLoadRules(d, { memBytes: OPTS.memBytes }), [], 'example record');
  // As Unikraft's is before mkbootinfo.py fills it: zeros, here room for (480 - 80) / 48 regions.
  d.fill(0, Number(s.offset), Number(s.offset + s.size));
  const v = firecrackerLoadRules(d, { memBytes: OPTS.memBytes });
  t.true(
    v.some((x) => /^regions: .* room for 8$/.test(x)),
    v.join(' | '),
  );
});

const memoryMutations: [FirecrackerRule, (d: Buffer) => Buffer][] = [
  [
    'memory',
    (d) => {
      const c = codeOf(d);
      d[Number(c.offset) + 5] ^= 0xff;
      return d;
    },
  ],
  [
    'memory',
    (d) => {
      // A segment that stops short of its last non-zero byte: RAM keeps a zero there.
      const p = loadsOf(d).find((x) => x.filesz > 1n && d[Number(x.offset + x.filesz - 1n)] !== 0)!;
      set(d, p, 'filesz', p.filesz - 1n);
      return d;
    },
  ],
  [
    'memory-extra',
    (d) => {
      const stack = phdrs(d).find((p) => p.type === 0x6474e551)!;
      d.writeUInt32LE(PT_LOAD, stack.at);
      set(d, stack, 'offset', 0n);
      set(d, stack, 'filesz', 64n);
      set(d, stack, 'memsz', 64n);
      place(d, stack, 0x7000000n);
      return d;
    },
  ],
  ['memory-regions', edit((d) => d.writeUInt32LE(0, bssOf(d).at))],
  ['memory-entry', edit((d) => d.writeBigUInt64LE(d.readBigUInt64LE(24) + 1n, 24))],
];

for (const [i, [rule, mutate]] of memoryMutations.entries()) {
  test(`memory check ${rule} (${i}) catches a broken image`, (t) => {
    const d = mutate(Buffer.from(readFileSync(sample().fc)));
    const v = firecrackerMemoryDiff(d, sample().dbg);
    t.deepEqual([...new Set(v.map((x) => x.split(':')[0]))], [rule], v.join(' | '));
  });
}

test('the loader copies in header order: a later PT_LOAD overwrites an earlier one', (t) => {
  const d = Buffer.from(readFileSync(sample().fc));
  const [a, b] = loadsOf(d).filter((p) => p.filesz >= 16n);
  place(d, b, a.vaddr); // b's bytes now land on a's page, after a's
  const c = firecrackerCopies(d);
  t.deepEqual(
    c.map((x) => x.index),
    [...c.map((x) => x.index)].sort((x, y) => x - y),
  );
  t.deepEqual(c.filter((x) => x.paddr === a.vaddr).length, 2);
  const v = firecrackerMemoryDiff(d, sample().dbg);
  t.true(
    v.some((x) => x.startsWith('memory:')),
    v.join(' | '),
  );
  t.true(firecrackerLoadRules(d, OPTS).some((x) => x.startsWith('overlap:')));
});

test('compact --vmm=firecracker refuses a rule-breaking image, leaves it unchanged', async (t) => {
  const bad = join(out, 'bad.fc');
  await execa('strip', ['-s', '--remove-section=.spacer.rewrite', sample().dbg, '-o', bad]);
  const d = readFileSync(bad);
  d.writeBigUInt64LE(0x1000n, 24); // entry below 1 MiB
  writeFileSync(bad, d);
  const r = await spacer(['compact', '--vmm=firecracker', bad]);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /Firecracker would not load this image \(entry-high: /);
  t.true(readFileSync(bad).equals(d), 'the file is back as it was');
  t.is((await spacer(['compact', bad])).exitCode, 0, 'without --vmm nothing checks the entry');
});

test('the glue hands --vmm=firecracker to compact (scripts/spacer-strip.sh)', async (t) => {
  const node = join(out, 'node-tsx');
  writeFileSync(node, `#!/bin/sh\nexec '${process.execPath}' --import=tsx "$@"\n`);
  chmodSync(node, 0o755);
  const img = join(out, 'glue.fc');
  const r = await execa(
    join(root, 'scripts', 'spacer-strip.sh'),
    [
      node,
      join(root, 'helper', 'cli.ts'),
      '--pack',
      '--vmm=firecracker',
      'strip',
      '-s',
      '--remove-section=.spacer.rewrite',
      sample().dbg,
      '-o',
      img,
    ],
    { cwd: root, reject: false },
  );
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /packed, .*\n.*section headers.*\n.*Firecracker: every rule .* holds/);
  t.true(readFileSync(img).equals(readFileSync(sample().fc)), 'the same file as the test built');
  const makefile = readFileSync(join(root, 'Makefile.uk'), 'utf8');
  t.regex(makefile, /CONFIG_KVM_VMM_FIRECRACKER\)\),--vmm=firecracker\)/, 'Makefile.uk passes it');
  copyFileSync(img, `${img}.again`);
  t.is((await spacer(['compact', '--vmm=firecracker', `${img}.again`])).exitCode, 0, 'twice: ok');
  t.true(readFileSync(`${img}.again`).equals(readFileSync(img)));
});
