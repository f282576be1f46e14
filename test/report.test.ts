// The page model and `spacer report` on real images made by the GNU assembler and linker, where
// every page's content is set by construction: the expected figures below are counted by hand
// from the layouts, and cross-checked against readelf and objcopy.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { ElfFile } from '../helper/elf.js';
import { SpacerError } from '../helper/errors.js';
import {
  PAGE_SIZE,
  countPages,
  loadedPageRanges,
  pageContent,
  pageHash,
  scanPages,
} from '../helper/pages.js';
import {
  analyzeImages,
  contentBound,
  formatReport,
  imageNames,
  parseImageArg,
  reportCommand,
  explainCommand,
  type Report,
  type UlibReport,
} from '../helper/report/index.js';
import { OWN_CAUSES, explainOwnPages } from '../helper/report/own.js';

const dir = mkdtempSync(join(tmpdir(), 'spacer-report-'));
const P = (addr: number) => addr / PAGE_SIZE;

// ---- the images ---------------------------------------------------------------------------------
// One script for the Spacer-style images: one output section per µlib and kind at a fixed address.
// Page 0x203 is covered by two segments (text head up to 0x203400, rodata from 0x203800) with a
// 1 KiB hole between them; linked with -n, the file has no hole there, so the page must be built
// from the segments, not read from the file.
const SPACER_LDS = `ENTRY(_start)
PHDRS { text PT_LOAD FLAGS(5); rodata PT_LOAD FLAGS(4); data PT_LOAD FLAGS(6); }
SECTIONS {
  . = 0x200000;  .text.libA : { *(.text.libA) } :text
  . = 0x202000;  .text.libB : { *(.text.libB) } :text
  . = 0x203000;  .text : { *(.text) } :text
  . = 0x203800;  .rodata.libA : { *(.rodata.libA) } :rodata
  . = 0x204000;  .rodata.libB : { *(.rodata.libB) } :rodata
  . = 0x205000;  .data.libA : { *(.data.libA) } :data
  . = 0x206000;  .bss.libA : { *(.bss.libA) } :data
  /DISCARD/ : { *(.note*) *(.comment) }
}
`;
// A default-layout image: plain .text/.data/.bss, no per-µlib sections.
const DEFAULT_LDS = `ENTRY(_start)
PHDRS { text PT_LOAD FLAGS(5); data PT_LOAD FLAGS(6); }
SECTIONS {
  . = 0x400000;  .text : { *(.text) } :text
  . = 0x500000;  .data : { *(.data) } :data
  . = ALIGN(0x1000); .bss : { *(.bss) } :data
  /DISCARD/ : { *(.note*) *(.comment) }
}
`;

type Fill = [count: number, byte: number];
interface Sec {
  name: string;
  flags: 'ax' | 'a' | 'aw';
  fill?: Fill[];
  bss?: number;
}

function asm(secs: Sec[]): string {
  let s = '';
  for (const x of secs) {
    s += `.section ${x.name},"${x.flags}",@${x.bss ? 'nobits' : 'progbits'}\n`;
    if (x.name === '.text') s += '.globl _start\n_start:\n';
    for (const [n, b] of x.fill ?? []) s += `.fill ${n},1,${b}\n`;
    if (x.bss) s += `.zero ${x.bss}\n`;
  }
  return s;
}

async function build(name: string, lds: string, secs: Sec[], plan?: object): Promise<string> {
  writeFileSync(join(dir, `${name}.s`), asm(secs));
  writeFileSync(join(dir, `${name}.lds`), lds);
  await execa('as', ['--64', join(dir, `${name}.s`), '-o', join(dir, `${name}.o`)]);
  const out = join(dir, `${name}.elf`);
  await execa('ld', [
    '-n',
    '-m',
    'elf_x86_64',
    '-z',
    'noexecstack',
    '--build-id=none',
    '-T',
    join(dir, `${name}.lds`),
    join(dir, `${name}.o`),
    '-o',
    out,
  ]);
  if (plan) {
    writeFileSync(join(dir, `${name}.plan.json`), JSON.stringify(plan));
    await execa('objcopy', [
      '--add-section',
      `.spacer.plan=${join(dir, `${name}.plan.json`)}`,
      out,
    ]);
  }
  return out;
}

const slot = (section: string, addr: number, size: number, bytes: number) => ({
  section,
  addr: `0x${addr.toString(16)}`,
  size: `0x${size.toString(16)}`,
  bytes,
});
const libA = {
  name: 'libA',
  variant: 'aaaaaaaaaaaaaaaa',
  slots: {
    text: slot('.text.libA', 0x200000, 0x2000, 8192),
    rodata: slot('.rodata.libA', 0x203800, 0x800, 2048),
    data: slot('.data.libA', 0x205000, 0x1000, 100),
    bss: slot('.bss.libA', 0x206000, 0x2000, 8192),
  },
};
const libB = (variant: string) => ({
  name: 'libB',
  variant,
  slots: {
    text: slot('.text.libB', 0x202000, 0x1000, 4096),
    rodata: slot('.rodata.libB', 0x204000, 0x1000, 4096),
  },
});

// Page contents by construction (A1, A2, B1, ... name distinct non-zero contents):
// a: 0x200 A1 | 0x201 A2 | 0x202 B1 (0x21) | 0x203 [0x31 x1K, 0 x1K, 0x41 x2K] | 0x204 zero (file
// bytes)
//      | 0x205 D (0x51 x100, then zeros) | 0x206, 0x207 zero (bss)            -> 8 pages, 3 zero
//   b: same libA (A1, A2, rodata 0x41, D, bss), libB differs: 0x202 X (0x22), 0x204 B1 (a's 0x202
//      content at another address), head 0x32 so page 0x203 differs from a's  -> 8 pages, 2 zero
//   c: default layout: 0x400 A1 | 0x401 A1 | 0x402 S (0x77) | 0x500 0x88 x10 | 0x501 bss zero
//                                                                              -> 5 pages, 1 zero
/** A Spacer image: libA as in every such image, libB's code and read-only data and a 1 KiB head
 *  filled with the given bytes, libB of the given variant. */
const spacerImage = (
  name: string,
  fill: { libB: number; head: number; roB: number },
  variant: string,
) =>
  build(
    name,
    SPACER_LDS,
    [
      {
        name: '.text.libA',
        flags: 'ax',
        fill: [
          [4096, 0x11],
          [4096, 0x12],
        ],
      },
      { name: '.text.libB', flags: 'ax', fill: [[4096, fill.libB]] },
      { name: '.text', flags: 'ax', fill: [[1024, fill.head]] },
      { name: '.rodata.libA', flags: 'a', fill: [[2048, 0x41]] },
      { name: '.rodata.libB', flags: 'a', fill: [[4096, fill.roB]] },
      { name: '.data.libA', flags: 'aw', fill: [[100, 0x51]] },
      { name: '.bss.libA', flags: 'aw', bss: 0x2000 },
    ],
    { spacer: 1, image: name, ulibs: [libA, libB(variant)] },
  );

let a: string, b: string, c: string;
let bins: { a: Buffer };

test.before(async () => {
  a = await spacerImage('a', { libB: 0x21, head: 0x31, roB: 0 }, 'bbbbbbbbbbbbbbbb');
  b = await spacerImage('b', { libB: 0x22, head: 0x32, roB: 0x21 }, 'cccccccccccccccc');
  c = await build('c', DEFAULT_LDS, [
    {
      name: '.text',
      flags: 'ax',
      fill: [
        [4096, 0x11],
        [4096, 0x11],
        [4096, 0x77],
      ],
    },
    { name: '.data', flags: 'aw', fill: [[10, 0x88]] },
    { name: '.bss', flags: 'aw', bss: 0x1000 },
  ]);
  await execa('objcopy', ['-O', 'binary', a, join(dir, 'a.bin')]);
  bins = { a: readFileSync(join(dir, 'a.bin')) };
});
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const img = (r: Report, name: string) => r.images.find((i) => i.name === name)!;
const ulib = (r: Report, image: string, name: string) =>
  img(r, image).ulibs!.find((u) => u.name === name)!;
const shares = (u: UlibReport) => Object.fromEntries(u.shared.map((s) => [s.image, s.pages]));

// ---- the page model -----------------------------------------------------------------------------

/** LOAD rows of `readelf -lW`. */
async function readelfLoads(path: string) {
  const { stdout } = await execa('readelf', ['-lW', path]);
  return [
    ...stdout.matchAll(
      /^\s*LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)/gm,
    ),
  ].map((m) => ({
    offset: BigInt(m[1]),
    vaddr: BigInt(m[2]),
    filesz: BigInt(m[4]),
    memsz: BigInt(m[5]),
  }));
}

test('pages match readelf -lW: every page-aligned address a PT_LOAD covers, counted once', async (t) => {
  for (const [path, expected] of [
    [a, 8],
    [b, 8],
    [c, 5],
  ] as const) {
    const loads = await readelfLoads(path);
    const pages = new Set<bigint>();
    for (const l of loads)
      for (let p = l.vaddr / 4096n; p * 4096n < l.vaddr + l.memsz; p++) pages.add(p);
    const scan = scanPages(ElfFile.load(path));
    t.is(pages.size, expected, path);
    t.is(scan.pages, pages.size, path);
    t.deepEqual(
      scan.ranges.flatMap(([s, e]) => Array.from({ length: e - s }, (_, i) => BigInt(s + i))),
      [...pages].sort((x, y) => Number(x - y)),
      path,
    );
  }
  // The fixture really has a page partly covered by two segments, with no file bytes between them.
  const loads = await readelfLoads(a);
  const onPage = loads.filter(
    (l) => l.vaddr / 4096n <= 0x203n && (l.vaddr + l.memsz - 1n) / 4096n >= 0x203n,
  );
  t.is(onPage.length, 2);
  t.is(
    onPage[1].offset - onPage[0].offset,
    onPage[0].filesz,
    'segments are back to back in the file',
  );
});

test('page contents equal the memory image objcopy -O binary makes (hole and segment boundary included)', (t) => {
  const elf = ElfFile.load(a);
  const scan = scanPages(elf);
  t.true(bins.a.length > 5 * PAGE_SIZE && bins.a.length <= 6 * PAGE_SIZE);
  for (let i = 0; i < 8; i++) {
    const expected = Buffer.alloc(PAGE_SIZE);
    if (i * PAGE_SIZE < bins.a.length)
      bins.a.copy(expected, 0, i * PAGE_SIZE, Math.min(bins.a.length, (i + 1) * PAGE_SIZE));
    const p = P(0x200000) + i;
    t.true(pageContent(elf, p).equals(expected), `page ${p.toString(16)}`);
    if (expected.equals(Buffer.alloc(PAGE_SIZE))) t.false(scan.nonzero.has(p));
    else t.is(scan.nonzero.get(p), pageHash(expected));
  }
  // The shared page: head bytes, the 1 KiB hole as zeros, then rodata.
  const shared = pageContent(elf, 0x203);
  t.deepEqual(
    [shared[0], shared[1023], shared[1024], shared[2047], shared[2048], shared[4095]],
    [0x31, 0x31, 0, 0, 0x41, 0x41],
  );
  t.deepEqual([...scan.nonzero.keys()], [0x200, 0x201, 0x202, 0x203, 0x205]);
  t.is(scan.zeroPages, 3);
});

test('page counts of the real Unikraft 0.17 builds (program headers from shared data) are 118 / 118 / 172', (t) => {
  // vaddr, memsz of the PT_LOADs of hwA, chello, hwB (readelf -lW of the .dbg images), incl. the
  // empty one.
  const hwA = [
    [0x100000n, 0x270b7n],
    [0x128000n, 0x10078n],
    [0x139000n, 0x3d000n],
    [0x139000n, 0n],
  ];
  const chello = [
    [0x100000n, 0x27077n],
    [0x128000n, 0x10078n],
    [0x139000n, 0x3d000n],
    [0x139000n, 0n],
  ];
  const hwB = [
    [0x100000n, 0x52ab7n],
    [0x153000n, 0x170c8n],
    [0x16b000n, 0x41000n],
    [0x16b000n, 0n],
  ];
  const count = (l: bigint[][]) =>
    countPages(loadedPageRanges(l.map(([vaddr, memsz]) => ({ vaddr, memsz }))));
  t.deepEqual([count(hwA), count(chello), count(hwB)], [118, 118, 172]);
});

// ---- the report ---------------------------------------------------------------------------------

test('totals, instances and pairwise sharing are exact', (t) => {
  const r = analyzeImages([`${a}@3`, `${b}@2`, c]);
  t.deepEqual(
    r.images.map((i) => [
      i.name,
      i.instances,
      i.pages,
      i.nonzero_pages,
      i.zero_pages,
      i.format,
      i.spacer_plan,
    ]),
    [
      ['a', 3, 8, 5, 3, 'elf64', true],
      ['b', 2, 8, 6, 2, 'elf64', true],
      ['c', 1, 5, 4, 1, 'elf64', false],
    ],
  );
  t.is(r.instances, 6);
  t.is(r.pages, 3 * 8 + 2 * 8 + 5);
  t.is(r.zero_pages, 3 * 3 + 2 * 2 + 1);
  t.is(r.nonzero_pages, 3 * 5 + 2 * 6 + 4);
  // A1 A2 B1 a's-0x203 D, X b's-0x203, S 0x88-page: 9 distinct non-zero contents.
  t.is(r.distinct_pages, 9);
  t.deepEqual(r.pairs, [
    { a: 'a', b: 'b', shared_nonzero_pages: 4, shared_nonzero_pages_of_b: 4 },
    { a: 'a', b: 'c', shared_nonzero_pages: 1, shared_nonzero_pages_of_b: 2 }, // c holds A1 twice
    { a: 'b', b: 'c', shared_nonzero_pages: 1, shared_nonzero_pages_of_b: 2 },
  ]);
  // c has no plan: no L, and says why.
  t.is(r.content_bound_pages, null);
  t.is(r.d_over_l, null);
  t.regex(r.content_bound_note!, /\bc has no \.spacer\.plan/);
  // The report is its own JSON.
  t.deepEqual(JSON.parse(JSON.stringify(r)), r);
});

test('per-µlib pages and which are byte-identical in each other image', (t) => {
  const r = analyzeImages([a, b, c]);
  t.is(img(r, 'c').ulibs, undefined, 'default layout: totals only');
  const aA = ulib(r, 'a', 'libA'),
    aB = ulib(r, 'a', 'libB'),
    bA = ulib(r, 'b', 'libA'),
    bB = ulib(r, 'b', 'libB');
  t.deepEqual(
    img(r, 'a').ulibs!.map((u) => u.name),
    ['libA', 'libB'],
  );
  // 0x200 0x201 0x203 0x205 + bss 0x206 0x207
  t.deepEqual([aA.pages, aA.zero_pages, aA.nonzero_pages], [6, 2, 4]);
  t.is(aA.variant, 'aaaaaaaaaaaaaaaa');
  t.deepEqual(aA.sections, ['.text.libA', '.rodata.libA', '.data.libA', '.bss.libA']);
  t.deepEqual(shares(aA), { b: 3, c: 1 });
  t.deepEqual(aA.shared.find((s) => s.image === 'b')!.addrs, ['0x200000', '0x201000', '0x205000']);
  t.deepEqual(aA.shared.find((s) => s.image === 'c')!.addrs, ['0x200000']);
  t.deepEqual([aB.pages, aB.zero_pages], [2, 1]);
  t.deepEqual(shares(aB), { b: 1, c: 0 }); // B1 sits at another address in b: still shared
  t.deepEqual([bA.pages, bA.zero_pages, bB.pages, bB.zero_pages], [6, 2, 2, 0]);
  t.deepEqual(shares(bA), { a: 3, c: 1 });
  t.deepEqual(shares(bB), { a: 1, c: 0 });
  t.deepEqual(bB.shared.find((s) => s.image === 'a')!.addrs, ['0x204000']);

  const text = formatReport(r);
  t.regex(text, /^ {2}libA\s+6 pages \(2 zero\)\s+shared: b 3\/4, c 1\/4$/m);
  t.regex(text, /^ {2}libB\s+2 pages\s+shared: a 1\/2, c 0\/2$/m);
  t.regex(text, /^ {2}a ~ b\s+4\/5 of a\s+4\/6 of b$/m);
  t.regex(text, /^pages without sharing \(P\)\s+21 \(3 instances\)$/m);
  t.regex(text, /^distinct non-zero pages \(D\)\s+9$/m);
  t.regex(text, /^c\s+1\s+5\s+4\s+1\s+2\s+elf64\s+default$/m);
  t.regex(text, /^a\s+1\s+8\s+5\s+3\s+1\s+elf64\s+spacer, 2 µlibs$/m);
  t.regex(text, /^own pages\s+5 \(1\.67 per image; content no other image holds\)$/m);
});

test('content bound: distinct µlib variants (text+rodata+data from the plan) plus own bytes, rounded up once', (t) => {
  // libA/aaaa 8192+2048+100 (bss 8192 left out) + libB/bbbb 8192 + libB/cccc 8192 + the two 1 KiB
  // heads
  // = 28772 bytes -> 8 pages (7.02 rounded up once; rounding each part would give 9, counting bss
  // 10).
  const r = analyzeImages([`${a}@3`, `${b}@5`]);
  t.is(r.content_bound_bytes, 28772);
  t.is(r.content_bound_pages, 8);
  t.is(r.content_bound_note, undefined);
  t.is(r.distinct_pages, 7);
  t.is(r.d_over_l, 0.875);
  // L_pg: libA/aaaa is shared (code 8192, rodata 2048, data 100: 2 + 1 + 1 pages); each image
  // has its own libB (code 4096, rodata 4096) and 1 KiB head (code): 2 + 1 pages each. 4 + 3 + 3.
  t.deepEqual(contentBound([a, b]), {
    pages: 8,
    bytes: 28772,
    ulib_variants: 3,
    images: 2,
    floor_pages: 10,
  });
  t.is(r.page_floor_pages, 10);
  t.regex(formatReport(r), /^page floor \(L_pg\)\s+10 pages$/m);
  t.regex(formatReport(r), /^content bound \(L\)\s+8 pages \(28772 bytes\)$/m);
  t.regex(formatReport(r), /^D\/L\s+0\.88$/m);
  t.deepEqual(JSON.parse(reportCommand([`${a}@3`, `${b}@5`], { json: true })), r);
  // The bound of the Spacer builds applied to other images (the demo's use).
  const applied = analyzeImages([c], { bound: contentBound([a, b]) });
  t.is(applied.content_bound_pages, 8);
  t.is(applied.d_over_l, Math.round((3 / 8) * 1000) / 1000);
  const none = contentBound([a, c]);
  t.is(none.pages, null);
  t.is(none.floor_pages, null);
  t.regex(none.note!, /^c has no \.spacer\.plan/);
});

test('the ELF32 form (objcopy -O elf32-i386) gives the same figures as the ELF64 image', async (t) => {
  const a32 = join(dir, 'a32.elf');
  await execa('objcopy', ['-O', 'elf32-i386', a, a32]);
  const e32 = ElfFile.load(a32);
  t.is(e32.header.class, 32);
  // Different file offsets, same memory.
  t.notDeepEqual(
    e32.loads.map((l) => l.offset),
    ElfFile.load(a).loads.map((l) => l.offset),
  );
  const r = analyzeImages([a, a32]);
  const [x, y] = r.images;
  t.deepEqual([y.name, y.format], ['a32', 'elf32']);
  t.deepEqual([y.pages, y.nonzero_pages, y.zero_pages], [x.pages, x.nonzero_pages, x.zero_pages]);
  t.is(r.distinct_pages, 5);
  t.deepEqual(r.pairs, [
    { a: 'a', b: 'a32', shared_nonzero_pages: 5, shared_nonzero_pages_of_b: 5 },
  ]);
  t.deepEqual(
    y.ulibs!.map((u) => [u.name, u.pages, u.zero_pages, shares(u)]),
    [
      ['libA', 6, 2, { a: 4 }],
      ['libB', 2, 1, { a: 1 }],
    ],
  );
  // Same variants, and the 1 KiB head once (both forms hold the same bytes): 10340 + 8192 + 1024.
  t.deepEqual([r.content_bound_bytes, r.content_bound_pages], [19556, 5]);
});

test('image arguments: path@N, and names from the file name, the parent directory when two collide', (t) => {
  t.deepEqual(parseImageArg('out/x.elf@20'), { path: 'out/x.elf', instances: 20 });
  t.deepEqual(parseImageArg('out/x.elf'), { path: 'out/x.elf', instances: 1 });
  t.throws(() => parseImageArg('out/x.elf@0'), {
    instanceOf: SpacerError,
    message: /out\/x\.elf@0: instance count/,
  });
  t.throws(() => parseImageArg('out/x.elf@many'), {
    instanceOf: SpacerError,
    message: /^out\/x\.elf@many: /,
  });
  t.deepEqual(
    imageNames([
      { path: 'hwA/hello_qemu-x86_64.dbg' },
      { path: 'hwB/hello_qemu-x86_64.dbg' },
      { path: 'hwB/other.dbg' },
    ]),
    ['hwA/hello_qemu-x86_64', 'hwB/hello_qemu-x86_64', 'other'],
  );
  t.deepEqual(imageNames([{ path: 'x/img.dbg' }, { path: 'x/img' }]), ['x/img.dbg', 'x/img']);
  // Two Unikraft apps with the same image name, each in its own <app>/build: named by app.
  t.deepEqual(
    imageNames([
      { path: 'hwA/build/helloworld_qemu-x86_64' },
      { path: 'hwB/build/helloworld_qemu-x86_64' },
    ]),
    ['hwA/helloworld_qemu-x86_64', 'hwB/helloworld_qemu-x86_64'],
  );
  t.deepEqual(imageNames([{ path: 'x/img.dbg' }, { path: 'x/img.dbg' }]), ['img', 'img#2']);
  t.deepEqual(imageNames([{ path: 'x/a.dbg', name: 'A' }, { path: 'y/A.elf' }]), ['A', 'y/A']);
  t.throws(
    () =>
      imageNames([
        { path: 'p', name: 'n' },
        { path: 'q', name: 'n' },
      ]),
    { instanceOf: SpacerError },
  );
  const r = analyzeImages([{ path: a, name: 'first', instances: 4 }, { path: b }]);
  t.deepEqual(
    r.images.map((i) => [i.name, i.instances]),
    [
      ['first', 4],
      ['b', 1],
    ],
  );
  t.is(r.pages, 4 * 8 + 8);
});

test('sharing can be switched off (and is for very many images)', (t) => {
  const r = analyzeImages([a, b], { pairs: false });
  t.deepEqual(r.pairs, []);
  t.regex(r.pairs_note!, /not computed/);
  t.deepEqual(ulib(r, 'a', 'libA').shared, []);
  t.is(ulib(r, 'a', 'libA').pages, 6);
  t.is(r.distinct_pages, 7);
});

test('own pages: what each image adds to D, and with the contents it shares they make up D', (t) => {
  // a holds its head page alone; b its libB page X and its head; c its S and 0x88 pages. A1, A2,
  // B1 and D are held by two images or more.
  const r = analyzeImages([a, b, c]);
  t.deepEqual(
    r.images.map((i) => i.own_pages),
    [1, 2, 2],
  );
  t.is(r.own_pages, 5);
  t.is(r.own_pages_per_image, 1.667);
  t.is(r.distinct_pages, r.own_pages + 4);
  // None of them repeats an own content: leaving an image out takes exactly its own pages off D.
  const all = [a, b, c];
  all.forEach((_, i) => {
    const rest = analyzeImages(all.filter((_, j) => j !== i));
    t.is(r.distinct_pages - rest.distinct_pages, r.images[i].own_pages, r.images[i].name);
  });
  // Instances do not make a page shared: it is still one image's content.
  t.deepEqual(
    analyzeImages([`${a}@3`, `${b}@5`]).images.map((i) => i.own_pages),
    [1, 2],
  );
  // One image alone: every non-zero page is its own.
  t.is(analyzeImages([a]).own_pages, 5);
});

test('--explain names a cause for every own page: a neighbour, a per-app variant', async (t) => {
  const own = explainOwnPages([a, b]);
  const r = analyzeImages([a, b]);
  t.deepEqual(
    own.map((x) => [x.image, x.own_pages]),
    r.images.map((i) => [i.name, i.own_pages]),
  );
  for (const x of own) {
    t.is(x.pages.length, x.own_pages);
    for (const p of x.pages) t.true(OWN_CAUSES.includes(p.cause), `${x.image} ${p.addr}`);
    t.is(
      Object.values(x.causes).reduce((n, k) => n + k, 0),
      x.own_pages,
    );
  }
  // Page 0x203: libA's rodata (the larger part) is the same in both; the head before it differs.
  const head = own[0].pages.find((p) => p.addr === '0x203000')!;
  t.deepEqual([head.cause, head.section, head.ulib], ['neighbour', '.text', null]);
  t.regex(head.detail, /platform data/);
  // b's libB is its own variant (cccc), used by no other image.
  const x = own[1].pages.find((p) => p.addr === '0x202000')!;
  t.deepEqual([x.cause, x.section, x.ulib], ['per-app µlib variant', '.text.libB', 'libB']);
  // The command: the two images' µlib differences, then the own pages; JSON has both.
  const text = await explainCommand([a, b]);
  t.regex(text, /^libB: \d+ of \d+ pages differ$/m);
  t.regex(text, /^b: 2 own pages \(per-app µlib variant 1, neighbour 1\)$/m);
  const json = JSON.parse(await explainCommand([a, b, a], { json: true }));
  t.false('ulibs' in json, 'the µlib comparison is for two images');
  t.is(json.own_pages.length, 3);
  // A default-layout image has no plan to say whose bytes a page holds.
  t.throws(() => explainOwnPages([a, c]), {
    instanceOf: SpacerError,
    message: /no \.spacer\.plan/,
  });
});

// ---- bad input ----------------------------------------------------------------------------------

test('a missing, truncated, non-ELF, foreign, relocatable file or a bad plan is one SpacerError line naming it', async (t) => {
  const data = readFileSync(a);
  const truncated = join(dir, 'truncated.elf');
  writeFileSync(truncated, data.subarray(0, 0x3000));
  const text = join(dir, 'notes.txt');
  writeFileSync(text, 'this is not an image\n');
  const arm = join(dir, 'arm.elf');
  const armData = Buffer.from(data);
  armData.writeUInt16LE(40, 18); // e_machine = EM_ARM
  writeFileSync(arm, armData);
  const badPlan = join(dir, 'badplan.elf');
  writeFileSync(join(dir, 'bad.json'), '{"spacer":1,"ulibs":[');
  await execa('objcopy', ['--add-section', `.spacer.plan=${join(dir, 'bad.json')}`, c, badPlan]);
  const cases: [string, RegExp][] = [
    [join(dir, 'missing.elf'), /cannot read/],
    [truncated, /truncated/],
    [text, /not an ELF file/],
    [arm, /foreign architecture/],
    [join(dir, 'a.o'), /relocatable object/],
    [badPlan, /\.spacer\.plan is not valid JSON/],
  ];
  for (const [path, what] of cases) {
    const e = t.throws(() => analyzeImages([a, path]), { instanceOf: SpacerError }, path);
    t.true(e!.message.startsWith(`${path}: `), e!.message);
    t.regex(e!.message, what);
    t.false(e!.message.includes('\n'));
  }
  t.throws(() => analyzeImages([]), { instanceOf: SpacerError, message: /no images/ });
});
