// The indirection rewriter on real gcc/ld output: small C µlibs compiled with Unikraft's flags,
// linked into a static x86-64 Linux executable whose layout has Unikraft's structure (per-µlib
// slots, per-µlib tables after the code), rewritten, then RUN natively and compared with the
// original; two images with liba at the same slots but other neighbours; verification, corruption,
// idempotence, determinism, bad input, and the first pass's bound.
import test from 'ava';
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { ElfFile, SHT_PROGBITS } from '../helper/elf.js';
import { isSpacerError } from '../helper/errors.js';
import {
  indirectionNeeds,
  readRecord,
  rewriteImage,
  REWRITE_SECTION,
  type Mode,
  type RewritePlan,
  type RewriteStats,
} from '../helper/rewrite.js';
import { verifyImage } from '../helper/verify.js';
import { entryBound, siteKind } from '../helper/x86/classify.js';
import { Code, decodeOne, decodeRange } from '../helper/x86/decode.js';
import { patchSite } from '../helper/x86/tactics.js';
import { encodeTrampoline, TableError } from '../helper/x86/table.js';
import { buildUlib, fixtures, referencedAddresses, tempDir } from './_fixtures.js';

const FIX = join(fixtures, 'rewrite');
const ULIBS = ['liba', 'libb', 'libc'] as const;
type Ulib = (typeof ULIBS)[number];
const canRun = process.platform === 'linux' && process.arch === 'x64';
const runTest = canRun ? test : test.skip;

const dir = tempDir('rewrite');
const objs: Record<string, string> = {};

/** Slot addresses per µlib: text, table, rodata, data, bss. */
type Layout = Record<
  Ulib,
  { text: number; ind: number; ptr: number; rodata: number; data: number; bss: number }
>;
const LAYOUT1: Layout = {
  liba: {
    text: 0x401000,
    ind: 0x410000,
    ptr: 0x413000,
    rodata: 0x501000,
    data: 0x601000,
    bss: 0x701000,
  },
  libb: {
    text: 0x402000,
    ind: 0x411000,
    ptr: 0x413400,
    rodata: 0x502000,
    data: 0x602000,
    bss: 0x702000,
  },
  libc: {
    text: 0x403000,
    ind: 0x412000,
    ptr: 0x413800,
    rodata: 0x503000,
    data: 0x603000,
    bss: 0x703000,
  },
};
// liba at the same slots; its neighbours elsewhere, in another link order (TLS offsets move too).
const LAYOUT2: Layout = {
  liba: LAYOUT1.liba,
  libb: {
    text: 0x404000,
    ind: 0x412000,
    ptr: 0x413400,
    rodata: 0x503000,
    data: 0x603000,
    bss: 0x703000,
  },
  libc: {
    text: 0x402000,
    ind: 0x411000,
    ptr: 0x413800,
    rodata: 0x502000,
    data: 0x602000,
    bss: 0x702000,
  },
};
// ASLR: the code shuffled, each table at the same distance after its code; data and pointer areas
// stay.
const LAYOUT3: Layout = {
  liba: { ...LAYOUT1.liba, text: 0x403000, ind: 0x412000 },
  libb: { ...LAYOUT1.libb, text: 0x401000, ind: 0x410000 },
  libc: { ...LAYOUT1.libc, text: 0x402000, ind: 0x411000 },
};
const TABLE = 0x1000;

function planFor(l: Layout, size = TABLE, ptr = false): RewritePlan {
  return {
    ulibs: ULIBS.map((n) => ({
      name: n,
      text: `.text.${n}`,
      sections: ['text', 'rodata', 'data', 'bss'].map((k) => `.${k}.${n}`),
      ind: { section: `.ind.${n}`, addr: BigInt(l[n].ind), size },
      ...(ptr ? { ptr: { section: `.ptr.${n}`, addr: BigInt(l[n].ptr), size: 0x400 } } : {}),
    })),
  };
}

async function link(
  name: string,
  l: Layout,
  order: string[] = ['plat', 'liba', 'libb', 'libc'],
  extra: string[] = ['-Wl,--emit-relocs'],
): Promise<string> {
  let script = readFileSync(join(FIX, 'image.lds.in'), 'utf8');
  for (const n of ULIBS)
    for (const k of ['text', 'ind', 'ptr', 'rodata', 'data', 'bss'] as const) {
      script = script.replaceAll(
        `@${n.toUpperCase()}_${k.toUpperCase()}@`,
        `0x${l[n][k].toString(16)}`,
      );
    }
  const lds = join(dir, `${name}.lds`),
    out = join(dir, name);
  writeFileSync(lds, script);
  await execa('gcc', [
    '-nostdlib',
    '-static',
    '-no-pie',
    '-Wl,--build-id=none',
    '-Wl,-z,noexecstack',
    ...extra,
    `-Wl,-T,${lds}`,
    ...order.map((o) => objs[o]),
    '-o',
    out,
  ]);
  return out;
}

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
const run = async (p: string) => await execa(p, [], { reject: false, timeout: 10_000 });
let n = 0;
const copy = (p: string) => {
  const q = `${p}.${++n}`;
  copyFileSync(p, q);
  return q;
};

let img1: string, img2: string, img3: string, noRelocs: string;
let orig1 = '',
  orig2 = '',
  orig3 = '';

test.before(async () => {
  for (const name of ['plat', 'liba', 'libb', 'libc']) {
    objs[name] = await buildUlib(dir, name, readFileSync(join(FIX, `${name}.c`), 'utf8'), [
      '-fno-tree-loop-distribute-patterns',
    ]);
  }
  img1 = await link('img1', LAYOUT1);
  img2 = await link('img2', LAYOUT2, ['plat', 'libb', 'liba', 'libc']);
  img3 = await link('img3', LAYOUT3);
  noRelocs = await link('norelocs', LAYOUT1, undefined, []);
  if (canRun) {
    orig1 = (await run(img1)).stdout;
    orig2 = (await run(img2)).stdout;
    orig3 = (await run(img3)).stdout;
  }
});

/** Rejects with one SpacerError line and leaves the file as it was. */
async function refuses(t: any, path: string, fn: () => Promise<unknown> | unknown, re: RegExp) {
  const before = sha(path);
  const e = await (async () => {
    try {
      await fn();
    } catch (x) {
      return x;
    }
    return undefined;
  })();
  t.true(isSpacerError(e), `expected a SpacerError, got ${e}`);
  t.regex((e as Error).message, re);
  t.false((e as Error).message.includes('\n'));
  t.is(sha(path), before, 'file untouched');
}

test('the fixture script makes each .ind.<ulib> an int3-filled PROGBITS section in the executable text segment', (t) => {
  const elf = ElfFile.load(img1);
  for (const u of ULIBS) {
    const s = elf.section(`.ind.${u}`)!;
    t.truthy(s, u);
    t.is(s.type, SHT_PROGBITS);
    t.is(s.addr, BigInt(LAYOUT1[u].ind));
    t.is(Number(s.size), TABLE);
    t.true(elf.contents(s).every((b) => b === 0xcc));
    t.true(
      elf.loads.some(
        (p) => p.flags & 1 && s.addr >= p.vaddr && s.addr + s.size <= p.vaddr + p.filesz,
      ),
      `${u} table executable`,
    );
    // --emit-relocs kept the code's relocations with final addresses.
    const text = elf.section(`.text.${u}`)!;
    if (u !== 'libc')
      t.true(
        elf
          .relocationsFor(text)
          .every((r) => r.offset >= text.addr && r.offset < text.addr + text.size),
      );
  }
});

runTest('the un-rewritten fixture runs and computes what the C says', (t) => {
  const lines = orig1
    .trim()
    .split('\n')
    .map((l) => BigInt('0x' + l.split('=')[1]));
  // a_switch(0..8): 11, b_add(4) = 4 + b_counter (5, +1 by its init), 17, a_state*3, 99, b_counter,
  // 42, b_twice(3), 1
  t.deepEqual(
    lines
      .slice(0, 9)
      .map(Number)
      .filter((_, i) => i !== 7),
    [11, 10, 17, 33, 99, 6, 42, 1],
  );
  t.is(lines[12], 7n * 1000n + 11n); // a_tls_work(4): a_tls 3+4, b_tls 9+2
  t.is(lines[13], 12n * 1000n + 13n);
  t.deepEqual(lines.slice(14, 17), [1n, 1n, 1n]); // lea / lea / movabs agree with C's &
  t.is(lines[17], 1n); // b_table[0] through movabs
  t.is(lines[19], 204n); // a_table_sum
  t.is(lines[20], 9n); // a_copy(8) through memcpy: b_table[7] + b_table[0]
  t.deepEqual(lines.slice(22, 24).map(Number).slice(0, 1), [7]); // a_cond_tail(0)
  t.is(lines[24], 9n); // *a_ptr_b after a_bump(3)
  t.is(lines[25], 2n); // init table entries (linker-script symbols)
  t.is(lines[26], 1n);
});

async function rewritten(
  base: string,
  l: Layout,
  mode: Mode,
): Promise<{ path: string; stats: RewriteStats }> {
  const path = copy(base);
  const stats = await rewriteImage(path, planFor(l), mode);
  return { path, stats };
}

for (const mode of ['external', 'aslr'] as Mode[]) {
  test(`${mode}: rewritten image verifies, its code refers only to the µlib and its table, and the table fits the first pass's bound`, async (t) => {
    const { path, stats } = await rewritten(img1, LAYOUT1, mode);
    t.deepEqual(verifyImage(path), []);
    t.false(stats.alreadyDone);
    const a = stats.perUlib.liba;
    t.true(a.rewritten);
    t.true(a.stubs >= 3 && a.got >= 2 && a.trampolines >= 10, JSON.stringify(a));
    t.is(
      stats.sites,
      ULIBS.reduce((s, u) => s + stats.perUlib[u].sites, 0),
    );
    // The first pass bounds the real use, for every µlib.
    for (const u of ULIBS) {
      const need = indirectionNeeds(objs[u], mode);
      const got = stats.perUlib[u];
      t.true(got.tableBytes <= need.bytes, `${u}: ${got.tableBytes} <= ${need.bytes}`);
      t.true(
        got.sites <= need.sites && got.stubs <= need.stubs && got.got <= need.got,
        `${u}: ${JSON.stringify(got)} vs ${JSON.stringify(need)}`,
      );
      t.is(got.dataPointers, need.dataPointers, u);
    }
    // Independent check with objdump: every branch and RIP-relative operand of .text.liba stays
    // inside liba's own sections (external) or its code (aslr), or its table.
    const elf = ElfFile.load(path);
    const range = (name: string) => {
      const s = elf.section(name)!;
      return [s.addr, s.addr + s.size] as const;
    };
    // In both modes the code refers only to its µlib and its table; in ASLR mode references to its
    // own data stay only as absolute addresses (the data keeps its slot while the code moves).
    const allowed = ['.text.liba', '.rodata.liba', '.data.liba', '.bss.liba', '.ind.liba'].map(
      range,
    );
    const refs = await referencedAddresses(path, '.text.liba');
    t.true(refs.length > 20);
    const outside = refs.filter((x) => !allowed.some(([lo, hi]) => x >= lo && x < hi));
    t.deepEqual(
      outside.map((x) => x.toString(16)),
      [],
    );
    const before = (await referencedAddresses(img1, '.text.liba')).filter(
      (x) => !allowed.some(([lo, hi]) => x >= lo && x < hi),
    );
    t.true(before.length >= 10, 'the original code did refer outside');
    // Unused table bytes stay int3.
    const ind = elf.section('.ind.liba')!;
    t.true(
      elf
        .contents(ind)
        .subarray(a.tableBytes)
        .every((b) => b === 0xcc),
    );
    t.true(
      elf
        .contents(ind)
        .subarray(0, a.tableBytes)
        .some((b) => b !== 0xcc),
    );
    // Data pointers: liba's pointer initialiser (and in aslr its switch table) are reported with
    // their pages.
    t.true(a.dataPointers >= (mode === 'aslr' ? 9 : 1));
    t.true(a.dataPointerPages.includes('0x601000'));
    if (mode === 'aslr') t.true(a.dataPointerPages.includes('0x501000'));
    // The record is a non-loaded section.
    const rec = elf.section(REWRITE_SECTION)!;
    t.is(rec.flags & 2n, 0n);
    t.is(readRecord(elf)!.mode, mode);
  });

  runTest(
    `${mode}: the rewritten executable runs and prints what the original printed`,
    async (t) => {
      const { path } = await rewritten(img1, LAYOUT1, mode);
      const r = await run(path);
      t.is(r.exitCode, 0, r.stderr);
      t.true(orig1.split('\n').length > 25);
      t.is(r.stdout, orig1);
    },
  );
}

test('aslr moves more than external (RIP-relative references to its own data, absolute addresses of its own code)', async (t) => {
  const ext = indirectionNeeds(objs.liba, 'external'),
    aslr = indirectionNeeds(objs.liba, 'aslr');
  t.true(aslr.sites > ext.sites);
  t.true(aslr.bytes > ext.bytes);
  t.true(aslr.dataPointers > ext.dataPointers);
  // libc's code refers to nothing outside itself but its own data, which aslr places independently.
  t.is(indirectionNeeds(objs.libc, 'external').sites, 0);
  t.true(indirectionNeeds(objs.libc, 'aslr').sites > 0);
});

test("first pass: counts by kind match the object's disassembly, deterministic", async (t) => {
  const a = indirectionNeeds(objs.liba, 'external');
  t.deepEqual(indirectionNeeds(objs.liba, 'external'), a);
  // b_add, b_twice, memcpy: three distinct branch targets; three lea targets (b_counter, b_add, and
  // a_code_data: an untyped global may be a linker-script symbol, so it counts as outside).
  t.is(a.stubs, 3);
  t.is(a.got, 3);
  t.is(a.dataPointers, 1);
  // objdump: direct branches and RIP-relative lea to other µlibs' symbols; everything else moves.
  const { stdout } = await execa('objdump', ['-dr', '--no-show-raw-insn', objs.liba]);
  const lines = stdout.split('\n');
  let branches = 0,
    leas = 0;
  for (let i = 0; i + 1 < lines.length; i++) {
    if (!/R_X86_64_(PLT32|PC32)\s+(b_\w+|memcpy|a_code_data)/.test(lines[i + 1])) continue;
    if (/\s(call|jmp|j[a-z]+)\s+[0-9a-f]+ </.test(lines[i])) branches++;
    else if (/\slea\s/.test(lines[i])) leas++;
  }
  t.true(branches >= 5 && leas === 3, `${branches} ${leas}`);
  t.is(a.sites, a.trampolines + branches + leas);
  // Each moved instruction costs its own length (at least 5) + 5: a jmp back, or a push for a call
  // through memory.
  t.true(a.bytes - 7 - a.stubs * 5 - a.got * 8 >= a.trampolines * 10);
});

test('two images: liba at the same slots with other neighbours has identical code after the rewrite', async (t) => {
  const text = (p: string) => {
    const e = ElfFile.load(p);
    return Buffer.from(e.contents(e.section('.text.liba')!));
  };
  const ind = (p: string) => {
    const e = ElfFile.load(p);
    return Buffer.from(e.contents(e.section('.ind.liba')!));
  };
  t.false(text(img1).equals(text(img2)), 'before: the code differs');
  const r1 = await rewritten(img1, LAYOUT1, 'external');
  const r2 = await rewritten(img2, LAYOUT2, 'external');
  t.true(text(r1.path).equals(text(r2.path)), 'after: the code is identical');
  t.false(ind(r1.path).equals(ind(r2.path)), 'only the tables differ');
  t.deepEqual(verifyImage(r2.path), []);
  // The other µlibs moved, so their code is not comparable; liba's pages are.
  if (canRun) {
    const o = await run(r2.path);
    t.is(o.exitCode, 0);
    t.is(o.stdout, orig2);
  }
});

test('verify: a corrupted trampoline, GOT slot, stub or code byte is caught', async (t) => {
  const { path } = await rewritten(img1, LAYOUT1, 'external');
  const elf = ElfFile.load(path);
  const rec = readRecord(elf)!;
  const liba = rec.ulibs.find((u) => u.name === 'liba')!;
  const ind = elf.section('.ind.liba')!,
    text = elf.section('.text.liba')!;
  const fileOff = (addr: bigint, s = ind) => Number(s.offset + (addr - s.addr));
  const corrupt = (off: number, what: string) => {
    const p = copy(path);
    const b = readFileSync(p);
    b[off] ^= 0x01;
    writeFileSync(p, b);
    const problems = verifyImage(p);
    t.true(problems.length > 0, what);
    return problems;
  };
  const tramp = liba.sites.find((s) => s.k === 'trampoline' && s.o.length >= 14)!;
  let semantic = 0;
  for (let k = 0; k < 12; k++) {
    const problems = corrupt(fileOff(BigInt(tramp.e) + BigInt(k)), `trampoline byte ${k}`);
    t.true(
      problems.some((p) => p.includes(tramp.a) || p.includes('.ind.liba')),
      problems.join(' | '),
    );
    if (
      problems.some(
        (p) =>
          p.includes(`site ${tramp.a}`) && /original instruction|jump back|does not jump/.test(p),
      )
    )
      semantic++;
  }
  // Most single-byte changes alter what the trampoline does, and the decoding proves it (a few,
  // like a REX.B bit on a RIP-relative operand, are equivalent: only the byte check sees them).
  t.true(semantic >= 8, `${semantic} semantic`);
  const got = liba.sites.find((s) => s.k === 'got')!;
  t.true(corrupt(fileOff(BigInt(got.e)), 'GOT slot').some((p) => p.includes('GOT slot')));
  const stub = liba.sites.find((s) => s.k === 'stub')!;
  t.true(corrupt(fileOff(BigInt(stub.e) + 1n), 'stub').some((p) => p.includes('stub')));
  const call = liba.sites.find((s) => s.k === 'callind')!;
  t.true(corrupt(fileOff(BigInt(call.e) + 2n), 'push').some((p) => p.includes('return address')));
  // A code byte that is not a site: the rebuilt original no longer matches the recorded hash.
  const siteBytes = new Set(
    liba.sites.flatMap((s) =>
      Array.from({ length: s.o.length / 2 }, (_, i) => BigInt(s.a) + BigInt(i)),
    ),
  );
  let a = text.addr + 1n;
  while (siteBytes.has(a)) a++;
  t.true(corrupt(fileOff(a, text), 'code').some((p) => p.includes('differs from the original')));
  // Unused table bytes.
  t.true(
    corrupt(fileOff(ind.addr + BigInt(liba.ind.used) + 3n), 'unused').some((p) =>
      p.includes('not 0xCC'),
    ),
  );
  // An image that was never rewritten.
  t.regex(verifyImage(img1)[0], /not rewritten/);
});

test('running the rewrite twice is a no-op with the same plan and refused with another', async (t) => {
  const { path, stats } = await rewritten(img1, LAYOUT1, 'external');
  const h = sha(path);
  const again = await rewriteImage(path, planFor(LAYOUT1), 'external');
  t.true(again.alreadyDone);
  t.is(again.sites, stats.sites);
  t.deepEqual(again.perUlib, stats.perUlib);
  t.is(sha(path), h);
  await refuses(
    t,
    path,
    () => rewriteImage(path, planFor(LAYOUT1, 0x800), 'external'),
    /already rewritten with another plan; relink/,
  );
  await refuses(
    t,
    path,
    () => rewriteImage(path, planFor(LAYOUT1), 'aslr'),
    /already rewritten with another mode \(external\)/,
  );
});

test('deterministic: the same image and plan give byte-identical output', async (t) => {
  const a = await rewritten(img1, LAYOUT1, 'external');
  const b = await rewritten(img1, LAYOUT1, 'external');
  t.is(sha(a.path), sha(b.path));
  t.not(sha(a.path), sha(img1));
  const c = await rewritten(img1, LAYOUT1, 'aslr');
  const d = await rewritten(img1, LAYOUT1, 'aslr');
  t.is(sha(c.path), sha(d.path));
});

test('a table that is too small stops the rewrite, naming the image and the µlib; the image is untouched', async (t) => {
  const p = copy(img1);
  await refuses(
    t,
    p,
    () => rewriteImage(p, planFor(LAYOUT1, 64), 'external'),
    new RegExp(
      `^${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: liba: the indirection table needs \\d+ bytes, the plan reserves 64; reserve at least \\d+ bytes for \\.ind\\.liba`,
    ),
  );
  t.is(readRecord(ElfFile.load(p)), undefined);
});

test('bad input: one SpacerError line, file untouched', async (t) => {
  const plan = planFor(LAYOUT1);
  const trunc = copy(img1);
  truncateSync(trunc, 3000);
  await refuses(t, trunc, () => rewriteImage(trunc, plan), /truncated ELF file/);
  const text = join(dir, 'notes.txt');
  writeFileSync(text, 'not an image\n');
  await refuses(t, text, () => rewriteImage(text, plan), /not an ELF file/);
  const foreign = copy(img1);
  const b = readFileSync(foreign);
  b.writeUInt16LE(183, 18); // EM_AARCH64
  writeFileSync(foreign, b);
  await refuses(t, foreign, () => rewriteImage(foreign, plan), /foreign architecture/);
  const elf32 = join(dir, 'img32.elf');
  await execa('objcopy', ['-O', 'elf32-i386', noRelocs, elf32]);
  await refuses(t, elf32, () => rewriteImage(elf32, plan), /not an x86-64 ELF64 image/);
  const nr = copy(noRelocs);
  await refuses(t, nr, () => rewriteImage(nr, plan), /no relocations; link with -Wl,--emit-relocs/);
  await refuses(
    t,
    objs.liba,
    () => rewriteImage(objs.liba, plan),
    /relocatable object, not a linked image/,
  );
  const moved = copy(img1);
  await refuses(
    t,
    moved,
    () => rewriteImage(moved, planFor({ ...LAYOUT1, liba: { ...LAYOUT1.liba, ind: 0x413000 } })),
    /\.ind\.liba is at 0x410000, the plan says 0x413000/,
  );
  const missing = copy(img1);
  const p2 = planFor(LAYOUT1);
  p2.ulibs[0].ind!.section = '.ind.nope';
  await refuses(
    t,
    missing,
    () => rewriteImage(missing, p2),
    /no section \.ind\.nope; reserve the indirection table/,
  );
  // verify and the first pass refuse bad files the same way.
  t.throws(() => verifyImage(text), { message: /not an ELF file/ });
  t.throws(() => indirectionNeeds(img1), { message: /not a relocatable object/ });
  t.throws(() => indirectionNeeds(objs.liba, 'shuffle' as Mode), {
    message: /unknown rewrite mode 'shuffle'/,
  });
});

test('first pass: an instruction that cannot be redirected is an error naming the object', async (t) => {
  const bad = await buildUlib(
    dir,
    'libbad',
    `extern char ext8[];\n__asm__(".text\\n.globl f\\n.type f, @function\\nf: movb $ext8, %al\\n ret\\n.size f, .-f\\n");\n`,
  );
  const e = t.throws(() => indirectionNeeds(bad));
  t.true(isSpacerError(e));
  t.regex(
    e!.message,
    new RegExp(
      `^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: \\.text\\+0x1: R_X86_64_8 in code is not supported`,
    ),
  );
});

test('text of a µlib without relocations is analysed, and a µlib without a table is only counted', async (t) => {
  const p = copy(img1);
  const plan = planFor(LAYOUT1);
  delete plan.ulibs[1].ind; // libb: no table
  const s = await rewriteImage(p, plan, 'external');
  t.false(s.perUlib.libb.rewritten);
  t.true(s.perUlib.libb.sites >= 1);
  t.is(s.perUlib.libb.tableBytes, 0);
  t.true(s.perUlib.liba.rewritten);
  t.deepEqual(verifyImage(p), []);
  const elf = ElfFile.load(p);
  t.true(elf.contents(elf.section('.ind.libb')!).every((x) => x === 0xcc));
});

// The x86 pieces on hand-made bytes.
test('x86: decoding resynchronises at function starts after padding of any kind', (t) => {
  // ret; three zero bytes of padding (00 00 would swallow the next function's first byte); push
  // rbp; ret
  const insns = decodeRange(Buffer.from([0xc3, 0, 0, 0, 0x55, 0xc3]), 0x1000n, [0x1004n]);
  // (00 00 at 0x1001 is `add [rax], al`; the lone 00 at 0x1003 would run into 0x1004: dropped.)
  t.deepEqual(
    insns.filter((i) => !i.invalid).map((i) => [Number(i.ip), i.len]),
    [
      [0x1000, 1],
      [0x1001, 2],
      [0x1004, 1],
      [0x1005, 1],
    ],
  );
  t.deepEqual(
    insns.filter((i) => i.invalid).map((i) => [Number(i.ip), i.len]),
    [[0x1003, 1]],
  );
  // Without the anchor the sweep would have eaten push rbp into `add [rax+0x55], al`... and lost
  // it.
  t.false(
    decodeRange(Buffer.from([0xc3, 0, 0, 0, 0x55, 0xc3]), 0x1000n).some((i) => i.ip === 0x1004n),
  );
});

test('x86: a trampoline holds the same instruction and jumps back; an indirect call pushes its return address', (t) => {
  const mov = Buffer.from('488b0500010000', 'hex'); // mov rax, [rip+0x100] at 0x401000 -> 0x401107
  const tr = encodeTrampoline({ kind: 'trampoline', ip: 0x401000n, orig: mov }, 0x410000n, 'test');
  const m = decodeOne(tr, 0x410000n),
    back = decodeOne(tr.subarray(m.len), 0x410000n + BigInt(m.len));
  t.true(m.ipRel && m.memAddr === 0x401107n && m.len === 7);
  t.is(back.target, 0x401007n);
  t.is(tr.length, entryBound('trampoline', 7));
  const call = Buffer.from('ff1500010000', 'hex'); // call [rip+0x100] at 0x401000
  const ci = encodeTrampoline({ kind: 'callind', ip: 0x401000n, orig: call }, 0x410000n, 'test');
  t.is(ci[0], 0x68);
  t.is(ci.readInt32LE(1), 0x401006);
  const j = decodeOne(ci.subarray(5), 0x410005n);
  t.true(j.code === Code.Jmp_rm64 && j.memAddr === 0x401106n);
  t.true(ci.length <= entryBound('callind', 6));
  // Out of reach of a rel32: an error, never a wrong encoding.
  t.throws(
    () =>
      encodeTrampoline({ kind: 'trampoline', ip: 0x401000n, orig: mov }, 0x7fff00000000n, 'test'),
    { instanceOf: TableError, message: /out of reach/ },
  );
});

test('x86: sites that cannot be redirected are named, not skipped', (t) => {
  const short = decodeOne(Buffer.from('b005', 'hex'), 0x1000n); // mov al, imm8
  t.regex((siteKind(short, ['imm']) as { error: string }).error, /2 bytes, too short/);
  // call [0x100000] — fine
  const viaStack = decodeOne(Buffer.from('ff142500001000', 'hex'), 0x1000n);
  t.is(siteKind(viaStack, ['disp']), 'callind');
  const rsp = decodeOne(Buffer.from('ff942400001000', 'hex'), 0x1000n); // call [rsp+0x100000]
  t.regex((siteKind(rsp, ['disp']) as { error: string }).error, /stack operand/);
  const code = Buffer.from('488b0500010000', 'hex');
  t.throws(() => patchSite(code, 0x1000n, decodeOne(code, 0x1000n), 'got', 0x2000n, 'test'), {
    message: /not a lea/,
  });
});

runTest(
  'aslr with pointer areas: every position-independent form runs as the original did; code and table are the same bytes wherever the code lands',
  async (t) => {
    const forms = new Map<string, number>();
    const outs: string[] = [];
    const paths: string[] = [];
    for (const [img, l, orig] of [
      [img1, LAYOUT1, orig1],
      [img3, LAYOUT3, orig3],
    ] as const) {
      const path = copy(img);
      const stats = await rewriteImage(path, planFor(l, TABLE, true), 'aslr');
      t.deepEqual(verifyImage(path), [], path);
      const r = await run(path);
      t.is(r.exitCode, 0);
      // Line 28 prints &b_add: the address every µlib now agrees on is b_add's entry stub, at the
      // start of libb's pointer area (the same in both layouts); every other line is unchanged.
      const got = r.stdout.split('\n'),
        want = orig.split('\n');
      const stub = BigInt('0x' + got[28].split('=')[1]);
      const ptrB = ElfFile.load(path).section('.ptr.libb')!;
      t.true(stub >= ptrB.addr && stub < ptrB.addr + ptrB.size, `&b_add is its stub: ${got[28]}`);
      t.deepEqual(
        got.filter((_, i) => i !== 28),
        want.filter((_, i) => i !== 28),
        'same output as the original',
      );
      outs.push(r.stdout);
      paths.push(path);
      const rec = readRecord(ElfFile.load(path))!;
      for (const u of rec.ulibs)
        for (const s of u.sites)
          forms.set(s.f ?? 'classic', (forms.get(s.f ?? 'classic') ?? 0) + 1);
      t.is(stats.perUlib.liba.classic, 0, 'liba: every site has a position-independent entry');
      // The first pass bounds the table and the pointer area.
      const need = indirectionNeeds(objs.liba, 'aslr');
      t.true(stats.perUlib.liba.tableBytes <= need.bytes);
      t.true(rec.ulibs.find((u) => u.name === 'liba')!.ptr!.used <= need.ptrBytes);
    }
    for (const f of [
      'jmpptr',
      'load',
      'mem',
      'loadmem',
      'immreg',
      'mem2',
      'callptr',
      'jmpmem',
      'abs',
    ])
      t.true((forms.get(f) ?? 0) > 0, `form ${f} occurs`);
    // The new shapes computed what C computes: mem2 compare and store, base + outside displacement,
    // indirect call and tail call through another µlib's table.
    const lines = outs[0]
      .trim()
      .split('\n')
      .map((x) => BigInt('0x' + x.split('=')[1]));
    // b_fp was b_twice; then b_add; b_msg[6]
    t.deepEqual(lines.slice(29, 32), [1n, 1n, BigInt('f'.charCodeAt(0))]);
    t.is(
      lines[34],
      0x1122334455667788n,
      'data in code under an untyped global is read at its real address',
    );
    const a = ElfFile.load(paths[0]),
      b = ElfFile.load(paths[1]);
    for (const sec of ['.text.liba', '.ind.liba']) {
      t.not(a.section(sec)!.addr, b.section(sec)!.addr, `${sec} moved`);
      t.true(
        a.contents(a.section(sec)!).equals(b.contents(b.section(sec)!)),
        `${sec}: the same bytes at another address`,
      );
    }
    t.false(
      a.contents(a.section('.ptr.liba')!).equals(b.contents(b.section('.ptr.liba')!)),
      "the pointer area holds each layout's addresses",
    );
    // verify catches a pointer slot that no longer holds the original's address, and a changed
    // entry.
    for (const [sec, off] of [
      ['.ptr.liba', 8],
      ['.ind.liba', 3],
    ] as const) {
      const bad = copy(paths[0]);
      const data = readFileSync(bad);
      data[Number(a.section(sec)!.offset) + off] ^= 0x40;
      writeFileSync(bad, data);
      const problems = verifyImage(bad);
      t.true(problems.length > 0, `a flipped byte in ${sec} is caught`);
      t.regex(problems.join(' '), /liba/);
    }
  },
);
