// Data kept in code sections: page tables, jump tables and constants inside `.text`, at many
// offsets, with and without dead-code elimination. The rewriter decodes only what the objects say
// is code (x86/extents.ts); everything else is left exactly as linked.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ElfFile, STT_FUNC, STT_NOTYPE, STT_OBJECT, type ElfSymbol } from '../helper/elf.js';
import type { Layout } from '../helper/pipeline.js';
import { indirectionNeeds } from '../helper/rewrite.js';
import { verifyImage } from '../helper/verify.js';
import { codeExtents, decodeCode } from '../helper/x86/extents.js';
import {
  bootExpecting,
  compileWorkspace,
  loadApps,
  type CompiledWorkspace,
} from '../helper/workspace/index.js';
import { buildExample, buildUlib, tempDir } from './_fixtures.js';

const dir = tempDir('datacode');

const sym = (name: string, value: number, size: number, type: number): ElfSymbol =>
  ({
    name,
    value: BigInt(value),
    size: BigInt(size),
    type,
    shndx: 1,
    bind: 0,
    other: 0,
    index: 0,
  }) as ElfSymbol;

test('extents: sized functions are code, data symbols inside them and bytes no function covers are not', (t) => {
  const syms = [
    sym('f', 0x10, 0x40, STT_FUNC),
    sym('table', 0x20, 0x10, STT_OBJECT),
    sym('g', 0x60, 0, STT_FUNC),
    sym('label', 0x70, 0, STT_NOTYPE),
    sym('h', 0x80, 0x100, STT_FUNC),
  ];
  const ext = codeExtents(syms, 1, 0n, 0x100n).map((e) => [Number(e.start), Number(e.end), e.name]);
  // f less its table; g has no size (left as data); h clipped to the section.
  t.deepEqual(ext, [
    [0x10, 0x20, 'f'],
    [0x30, 0x50, 'f'],
    [0x80, 0x100, 'h'],
  ]);
  // A code section without any function symbol is all data.
  t.deepEqual(codeExtents([sym('pt', 0, 0, STT_NOTYPE)], 1, 0n, 0x3000n), []);
});

test('extents: a relocation that does not fit the decoded instructions leaves its function undecided', (t) => {
  // f: mov rax, imm64 (field at +2); g: ret; then 8 bytes of an untyped table inside g.
  const bytes = Buffer.from([
    0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0xc3, 0, 0, 0, 0, 0, 0, 0, 0,
  ]);
  const ext = codeExtents([sym('f', 0, 11, STT_FUNC), sym('g', 11, 9, STT_FUNC)], 1, 0n, 20n);
  const r = decodeCode(bytes, 0n, ext, [
    { at: 2n, type: 1 },
    { at: 12n, type: 1 },
  ]);
  t.deepEqual(
    r.undecided.map((u) => [u.name, Number(u.at)]),
    [['g', 12]],
  );
  t.true(r.code.isCode(2n));
  t.false(r.code.isCode(12n));
  t.true(r.insns.every((i) => i.ip < 11n));
});

// Hand-written code with data at `pad` bytes into the section: an untyped page-table-like block
// with addresses of its own code and of another µlib, then a sized function; optionally in its own
// section (as -ffunction-sections puts C functions).
function dataInText(pad: number, ownSection: boolean): string {
  const asm = [
    '.text',
    '.globl f',
    '.type f, @function',
    'f:',
    ...Array<string>(pad).fill('nop'),
    'call ext_a',
    'ret',
    '.size f, .-f',
    '.align 8',
    'tbl:',
    '.quad f + 3',
    '.quad ext_b',
    '.quad 0x83',
    '.long 0x12345678',
    ownSection ? '.section .text.g, "ax", @progbits' : '',
    '.globl g',
    '.type g, @function',
    'g:',
    'movq $ext_b, %rax',
    'call ext_a',
    'ret',
    '.size g, .-g',
    '.byte 0xe8, 0x00',
  ];
  return `extern void ext_a(void); extern char ext_b[];\n__asm__(${JSON.stringify(asm.join('\n') + '\n')});\n`;
}

test('extents: a call or jmp to a symbol in bytes no sized function covers is decoded on its own', (t) => {
  // Hand-written stubs without .size (Unikraft's ENTRY): push rdi; mov edi, 32; call sym (PLT32
  // at +7); pop rdi; iretq; jmp sym (PLT32 at +16); then E8 before a PC32 field (a data word) and
  // an E8 with no relocation.
  const bytes = Buffer.from([
    0x57, 0xbf, 0x20, 0, 0, 0, 0xe8, 0, 0, 0, 0, 0x5f, 0x48, 0xcf, 0x90, 0xe9, 0, 0, 0, 0, 0xe8, 0,
    0, 0, 0, 0xe8, 0, 0, 0, 0,
  ]);
  const ext = codeExtents([sym('stub', 0, 0, STT_FUNC)], 1, 0n, 30n);
  t.deepEqual(ext, [], 'a function without a size is data');
  const r = decodeCode(bytes, 0n, ext, [
    { at: 7n, type: 4 },
    { at: 16n, type: 4 },
    { at: 21n, type: 2 },
  ]);
  t.deepEqual(
    r.insns.map((i) => [Number(i.ip), i.len, i.nearBranch]),
    [
      [6, 5, true],
      [15, 5, true],
    ],
  );
  t.true(r.code.isCode(7n) && r.code.isCode(16n));
  t.false(r.code.isCode(0n), 'the bytes around the call stay data');
  t.false(r.code.isCode(21n), 'a PC32 field after an E8 byte is not taken for a call');
  t.false(r.code.isCode(26n));
});

test('first pass: data inside .text at many offsets, with and without function sections', async (t) => {
  for (const ownSection of [false, true]) {
    for (let pad = 0; pad < 24; pad += 1) {
      const obj = await buildUlib(
        dir,
        `libd${pad}${ownSection ? 's' : ''}`,
        dataInText(pad, ownSection),
        ownSection ? ['-ffunction-sections', '-fdata-sections'] : [],
      );
      const what = `pad ${pad}${ownSection ? ', function sections' : ''}`;
      for (const mode of ['external', 'aslr'] as const) {
        const need = indirectionNeeds(obj, mode);
        // The two calls and the absolute address in g; the table's pointer to ext_b is data.
        t.is(need.sites, 3, `${what}, ${mode}: sites`);
        t.true(need.dataPointers >= 1, `${what}, ${mode}: the table's outside pointer is counted`);
        t.deepEqual(need.undecided, [], what);
      }
    }
  }
});

test('first pass: an untyped table inside a function is named in one line and left as linked', async (t) => {
  const src = `extern void ext_a(void);\n__asm__(${JSON.stringify(
    [
      '.text',
      '.globl f',
      '.type f, @function',
      'f:',
      'call ext_a',
      'jmp *t0(,%rax,8)',
      't0:',
      '.quad 1f, 2f',
      '1: call ext_a',
      '2: ret',
      '.size f, .-f',
      '.globl g',
      '.type g, @function',
      'g:',
      'call ext_a',
      'ret',
      '.size g, .-g',
    ].join('\n') + '\n',
  )});\n`;
  const obj = await buildUlib(dir, 'libjt', src);
  const need = indirectionNeeds(obj, 'external');
  t.is(need.undecided.length, 1);
  t.regex(
    need.undecided[0],
    /libjt\.o: \.text\+0x\w+: the relocation does not fit the instructions of f .*\.type @object and \.size/,
  );
  t.is(need.sites, 1, 'g is still rewritten');
});

test('first pass: a µlib whose loaded unwind tables describe its code keeps its place in ASLR mode', async (t) => {
  const dir = tempDir('unwind');
  const src = 'int ext(int);\nint f(int x) { return ext(x) + 1; }\n';
  const plain = await buildUlib(dir, 'libplain', src);
  const unwind = await buildUlib(dir, 'libunwind', src, ['-fasynchronous-unwind-tables']);
  t.falsy(ElfFile.load(plain).section('.eh_frame'), 'Unikraft flags: no .eh_frame');
  t.truthy(ElfFile.load(unwind).section('.eh_frame'));
  t.false(indirectionNeeds(plain, 'aslr').pinned);
  t.true(indirectionNeeds(unwind, 'aslr').pinned);
  t.false(indirectionNeeds(unwind, 'external').pinned, 'only ASLR mode shuffles');
});

// The example workspace keeps the platform's boot page tables in kvmplat's .text (pagetable.S) and
// a jump table and constants in ukmath's (dispatch.S); ukmath's self-test runs them at boot.
const apps = loadApps().filter((a) => ['faas-sha', 'kvstore'].includes(a.name));
const builds: { dce: boolean; layout: Layout; compiled?: CompiledWorkspace }[] = [];
for (const dce of [false, true])
  for (const layout of ['spacer', 'spacer-aslr'] as const) builds.push({ dce, layout });

for (const b of builds) {
  test(`example workspace${b.dce ? ' with dead-code elimination' : ''}, ${b.layout}: rewrite, verify and boot`, async (t) => {
    const tag = `${b.dce ? 'dce' : 'plain'}`;
    const compiled = await compileWorkspace(join(dir, `objects-${tag}`), {
      apps,
      extraCflags: b.dce ? ['-ffunction-sections', '-fdata-sections'] : [],
    });
    for (const app of apps) {
      const img = await buildExample(app, compiled, {
        out: join(dir, `${tag}-${b.layout}`, app.name),
        layout: b.layout,
        map: join(dir, `${tag}-${b.layout}.json`),
        seed: `${app.name}:7`,
        extraArgs: b.dce ? ['-Wl,--gc-sections'] : [],
      });
      const elf = ElfFile.load(img.dbg);
      // The page tables are in the platform's code section, exactly as the assembler made them.
      const pml4 = elf.symbols().find((y) => y.name === '_boot_pml4')!;
      const text = elf.sections.find((s) => s.index === pml4.shndx)!;
      t.true(text.name.startsWith('.text'), `${app.name}: page tables in ${text.name}`);
      const pd = elf
        .contents(text)
        .subarray(Number(pml4.value - text.addr) + 0x2000, Number(pml4.value - text.addr) + 0x3000);
      t.is(pd.readBigUInt64LE(8), (1n << 21n) | 0x83n, `${app.name}: the PD is untouched`);
      t.deepEqual(verifyImage(img.dbg), [], `${app.name}: verify`);
      const boot = await bootExpecting(img.elf, readFileSync(app.expectedOutput, 'utf8'), {
        timeoutMs: 60_000,
      });
      t.is(boot.failure, null, `${app.name}: boot`);
      if (boot.firstFailure)
        t.log(`${app.name}: a first boot failed (${boot.firstFailure}); the second passed`);
    }
  });
}
