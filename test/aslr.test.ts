// ASLR mode on the example workspace: shuffled code, rewritten references, real qemu boots.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ElfFile, type Section } from '../helper/elf.js';
import type { BuiltImage } from '../helper/pipeline.js';
import { readRecord } from '../helper/rewrite.js';
import { verifyImage } from '../helper/verify.js';
import { cloneRefusal } from '../helper/x86/clone.js';
import { decodeOne } from '../helper/x86/decode.js';
import { narrowLoad } from '../helper/x86/pi.js';
import { codeExtents, codeMapOf } from '../helper/x86/extents.js';
import {
  bootExpecting,
  compileWorkspace,
  loadApps,
  type CompiledWorkspace,
} from '../helper/workspace/index.js';
import { buildExample, tempDir } from './_fixtures.js';
import { hex } from '../helper/util/units.js';

const out = tempDir('aslr');
const apps = loadApps().filter((a) => ['faas-sha', 'faas-lz', 'kvstore'].includes(a.name));
let compiled: CompiledWorkspace;

const build = (app: (typeof apps)[number], seed: string, dir: string): Promise<BuiltImage> =>
  buildExample(app, compiled, {
    out: join(out, dir, app.name),
    layout: 'spacer-aslr',
    map: join(out, `${dir}-map.json`),
    seed,
  });

const built: Record<string, BuiltImage[]> = {};

test.before(async () => {
  compiled = await compileWorkspace(join(out, 'objects'));
  for (const [dir, seed] of [
    ['s1', 'one'],
    ['s2', 'two'],
    ['s1again', 'one'],
  ]) {
    built[dir] = [];
    for (const app of apps) built[dir].push(await build(app, `${app.name}:${seed}`, dir));
  }
});

test('every app boots with unchanged output in ASLR mode, for two seeds', async (t) => {
  for (const [i, app] of apps.entries()) {
    const expected = readFileSync(app.expectedOutput, 'utf8');
    for (const dir of ['s1', 's2']) {
      const { failure, firstFailure } = await bootExpecting(built[dir][i].elf, expected, {
        timeoutMs: 60_000,
      });
      t.is(failure, null, `${dir}/${app.name}`);
      if (firstFailure)
        t.log(
          `${dir}/${app.name}: a first boot failed (${firstFailure}); the second gave the expected output`,
        );
    }
  }
});

test('same seed: byte-identical image; different seeds: different µlib orders', (t) => {
  for (let i = 0; i < apps.length; i++) {
    t.true(readFileSync(built.s1[i].elf).equals(readFileSync(built.s1again[i].elf)), apps[i].name);
    t.notDeepEqual(built.s1[i].plan!.aslr!.order, built.s2[i].plan!.aslr!.order, apps[i].name);
  }
});

/** A code section's bytes with the address fields of data kept in it (ukmath's jump table and
 *  constants, see x86/extents.ts) zeroed: those hold this build's addresses of its own code. */
function codeOnly(elf: ElfFile, sec: Section): Buffer {
  const bytes = Buffer.from(elf.contents(sec));
  const code = codeMapOf(codeExtents(elf.symbols(), sec.index, sec.addr, sec.addr + sec.size));
  for (const r of elf.relocationsFor(sec))
    if (!code.isCode(r.offset))
      bytes.fill(0, Number(r.offset - sec.addr), Number(r.offset - sec.addr) + 8);
  return bytes;
}

test("a µlib's code and table are byte-identical wherever the shuffle puts them; only its pointer area (and data kept in its code) differs", (t) => {
  const a = ElfFile.load(built.s1[0].dbg),
    b = ElfFile.load(built.s2[0].dbg);
  let moved = 0,
    ptrsDiffer = 0,
    own = 0;
  for (const sec of a.sections.filter((s) => s.name.startsWith('.text.lib'))) {
    const other = b.section(sec.name)!;
    if (sec.addr !== other.addr) moved++;
    // A µlib other images share starts on a page, rewritten; the image's own code (µlibs only it
    // uses so far, the name slots' per-app variants) is packed as linked, with no table.
    const pu = built.s1[0].plan!.ulibs.find((u) => `.text.${u.name}` === sec.name)!;
    if (pu.shared && !pu.named) {
      t.is(Number(sec.addr) % 4096, 0, `${sec.name} starts on a page`);
      t.true(codeOnly(a, sec).equals(codeOnly(b, other)), sec.name);
    } else if (!pu.pinned) {
      own++;
      t.is(a.section(sec.name.replace('.text.', '.ind.')), undefined, `${sec.name}: no table`);
    }
    const ind = a.section(sec.name.replace('.text.', '.ind.'));
    if (ind) {
      t.is(
        ind.addr - sec.addr,
        b.section(ind.name)!.addr - other.addr,
        `${ind.name} at a fixed distance`,
      );
      // Position-independent entries: the table holds no address, so it is the same in both builds.
      // The image's own code (pages no other image shares) has branch entries that jump straight
      // to their targets instead of through the pointer area: its table follows the shuffle.
      if (pu.shared)
        t.true(a.contents(ind).equals(b.contents(b.section(ind.name)!)), `${ind.name} identical`);
      // What the entries read sits at one address the map keeps; its values follow the shuffle.
      const pa = a.section(sec.name.replace('.text.', '.ptr.')),
        pb = b.section(sec.name.replace('.text.', '.ptr.'));
      t.truthy(pa && pb, `${sec.name}: pointer area`);
      t.is(pa!.addr, pb!.addr, `${pa!.name} at the map's address`);
      if (!a.contents(pa!).equals(b.contents(pb!))) ptrsDiffer++;
    }
  }
  t.true(moved >= 3, `${moved} µlibs moved between seeds`);
  t.true(own >= 1, 'the first image of a map has code of its own');
  // Pointer areas hold this build's addresses (one whose targets are all data keeps its values;
  // the first image's own code has none).
  t.true(ptrsDiffer >= 2, `${ptrsDiffer} pointer areas differ between seeds`);
});

test('the platform and a µlib with addresses in its code keep their place; unwind tables are the same under every seed', (t) => {
  for (let i = 0; i < apps.length; i++) {
    const a = ElfFile.load(built.s1[i].dbg),
      b = ElfFile.load(built.s2[i].dbg);
    // kvmplat: boot page tables inside its code; ukmath: a jump table inside its code.
    for (const name of ['.text.libkvmplat', '.text.libukmath']) {
      const x = a.section(name)!,
        y = b.section(name)!;
      t.is(x.addr, y.addr, `${apps[i].name}: ${name} at one address under both seeds`);
      t.true(a.contents(x).equals(b.contents(y)), `${apps[i].name}: ${name} byte-identical`);
    }
    t.true(built.s1[i].plan!.aslr!.order[0] === 'libkvmplat', 'the platform comes first');
    // .eh_frame (kvmplat's interrupt stubs) holds PC-relative addresses of the platform's code.
    const ea = a.section('.eh_frame')!,
      eb = b.section('.eh_frame')!;
    t.true(ea.size > 0x4000, `${apps[i].name}: .eh_frame of ${ea.size} bytes`);
    t.is(ea.addr, eb.addr);
    t.true(a.contents(ea).equals(b.contents(eb)), `${apps[i].name}: .eh_frame identical`);
  }
});

test("switch tables are the same under every seed (their cases go through entry stubs); the platform's interrupt stubs call through its table", (t) => {
  const sharedNolibc = (b: BuiltImage) => b.plan!.ulibs.find((u) => u.name === 'libnolibc')!.shared;
  let compared = 0;
  for (let i = 0; i < apps.length; i++) {
    const a = ElfFile.load(built.s1[i].dbg),
      b = ElfFile.load(built.s2[i].dbg);
    // Every call in kvmplat_irq_32 .. _255 (no size: data to the rewriter) reaches kvmplat's own
    // table, which is at one address in every image, not ukconsole's moving code.
    const text = a.section('.text.libkvmplat')!,
      ind = a.section('.ind.libkvmplat')!;
    const code = a.contents(text),
      syms = a.symbols();
    const calls = a
      .relocationsFor(text)
      .filter((r) => r.type === 4 && syms[r.sym].name === 'uk_console_irq')
      .map((r) => r.offset + 4n + BigInt(code.readInt32LE(Number(r.offset - text.addr))));
    t.is(calls.length, 224);
    t.true(
      calls.every((c) => c >= ind.addr && c < ind.addr + ind.size),
      `${apps[i].name}: every stub calls into .ind.libkvmplat`,
    );
    // The first image of a map has nolibc as its own code (not rewritten); the others share it.
    if (!sharedNolibc(built.s1[i]) || !sharedNolibc(built.s2[i])) continue;
    compared++;
    const ta = a.section('.text.libnolibc')!,
      tb = b.section('.text.libnolibc')!;
    t.not(ta.addr, tb.addr, `${apps[i].name}: nolibc's code moved`);
    const ra = a.section('.rodata.libnolibc')!,
      rb = b.section('.rodata.libnolibc')!;
    const cases = a
      .relocationsFor(ra)
      .filter((r) => a.sections[syms[r.sym].shndx]?.name === '.text.libnolibc');
    t.true(
      cases.length >= 8,
      `${apps[i].name}: nolibc's read-only data holds ${cases.length} code addresses`,
    );
    t.is(ra.addr, rb.addr);
    t.true(a.contents(ra).equals(b.contents(rb)), `${apps[i].name}: .rodata.libnolibc identical`);
  }
  t.true(compared >= 2, `${compared} images share nolibc under both seeds`);
});

test('the rewrite verifies and says what it moved', (t) => {
  for (const img of built.s1) {
    // The packed image keeps sections the build patches later in the file, zeros or not.
    const bootinfo = ElfFile.load(img.elf).section('.uk_bootinfo');
    t.is(bootinfo?.type, 1, `${img.image}: .uk_bootinfo is PROGBITS in the packed image`);
    t.deepEqual(verifyImage(img.dbg), [], img.image);
    t.true(img.rewrite!.sites > 10, `${img.image}: ${img.rewrite!.sites} sites`);
    t.true(img.rewrite!.tableBytes > 0);
  }
});

test('sites that name the same target share one pointer slot, and only those', (t) => {
  let piSites = 0,
    slots = 0,
    sharing = 0;
  for (const img of built.s1) {
    const rec = readRecord(ElfFile.load(img.dbg))!;
    for (const u of rec.ulibs) {
      const bySlot = new Map<string, { t: string; f: string }[]>();
      for (const s of u.sites) {
        if (s.p === undefined) continue;
        piSites++;
        (bySlot.get(s.p) ?? bySlot.set(s.p, []).get(s.p)!).push({ t: s.t, f: s.f! });
      }
      slots += bySlot.size;
      for (const [p, l] of bySlot) {
        if (l.length > 1) sharing++;
        // One slot, one value: every site reading it referred to the same address in the original.
        t.is(
          new Set(l.map((x) => x.t)).size,
          1,
          `${img.image} ${u.name}: slot ${p} read by sites with different targets`,
        );
        // An address the code takes reads the stub's address, one it reaches the real one: never
        // both.
        const taken = l.map((x) => x.f === 'load' || x.f === 'immreg');
        t.true(
          taken.every((x) => x === taken[0]),
          `${img.image} ${u.name}: slot ${p} read as taken and as reached`,
        );
      }
    }
  }
  t.true(sharing > 10, `${sharing} slots shared`);
  t.true(slots < piSites, `${slots} slots for ${piSites} position-independent sites`);
  t.log(`${piSites} position-independent sites read ${slots} pointer slots (${sharing} shared)`);
});

test('the loaded segments, and the boot record that lists them, are the same under every seed', (t) => {
  // The build writes one memory region per loaded segment into .uk_bootinfo, as Unikraft's does:
  // segments cut in the seed's order would make that page differ in every image.
  for (const [k, app] of apps.entries()) {
    const a = ElfFile.load(built.s1[k].elf),
      b = ElfFile.load(built.s2[k].elf);
    // Their pages, as the record counts them (the last µlib's bytes end where the seed says).
    const segs = (e: ElfFile) =>
      e.loads.map((p) => `${p.vaddr}+${(p.memsz + 4095n) / 4096n}`).join(' ');
    t.is(segs(a), segs(b), `${app.name}: the same segments under both seeds`);
    const info = (e: ElfFile) => e.contents(e.section('.uk_bootinfo')!);
    const regions = info(a).readUInt32LE(24);
    t.is(regions, a.loads.filter((p) => p.memsz > 0n).length, `${app.name}: one region each`);
    t.true(info(a).equals(info(b)), `${app.name}: the same boot record under both seeds`);
  }
});

test('a load into a 32-bit register reads a 4-byte pointer slot, after the 8-byte ones; verify reads it as such', (t) => {
  let narrow = 0;
  for (const img of built.s1) {
    const elf = ElfFile.load(img.dbg);
    for (const u of readRecord(elf)!.ulibs) {
      const sites = u.sites.filter((s) => s.p !== undefined);
      const isNarrow = (s: (typeof sites)[number]) =>
        s.f === 'load' && narrowLoad(decodeOne(Buffer.from(s.o, 'hex'), BigInt(s.a)).code);
      const four = sites.filter(isNarrow).map((s) => BigInt(s.p!));
      const eight = sites.filter((s) => !isNarrow(s)).map((s) => BigInt(s.p!));
      narrow += four.length;
      for (const p of four) {
        t.is(p % 4n, 0n);
        t.true(
          eight.every((q) => q + 8n <= p),
          `${img.image} ${u.name}: 4-byte slot ${p} after the 8-byte ones`,
        );
      }
      if (!four.length || narrow !== four.length) continue;
      // The first µlib with such slots: a byte of one changed is caught.
      const ptr = elf.section(`.ptr.${u.name}`)!;
      const copy = join(out, 'narrow.dbg');
      const b = readFileSync(img.dbg);
      b[Number(ptr.offset + (four[0] - ptr.addr))] ^= 0x10;
      writeFileSync(copy, b);
      t.true(
        verifyImage(copy).some((m) => m.includes('holds')),
        `${img.image} ${u.name}: a changed 4-byte slot is caught`,
      );
    }
  }
  t.true(narrow > 20, `${narrow} sites read 4-byte slots`);
});

test("calls to small leaf functions of other µlibs reach copies after the caller's table; a changed copy is caught", async (t) => {
  let copies = 0,
    calls = 0;
  for (const img of built.s1) {
    const elf = ElfFile.load(img.dbg);
    const rec = readRecord(elf)!;
    const fn = (addr: bigint) =>
      elf.symbols().find((y) => y.value === addr && y.type === 2 && y.size > 0n)!;
    for (const u of rec.ulibs) {
      const ind = elf.section(u.ind.section)!;
      for (const c of u.clones ?? []) {
        copies++;
        // The copy is the function's own bytes, after the table proper, in the table's section.
        const f = fn(BigInt(c.from)),
          sec = elf.sections[f.shndx];
        const at = Number(BigInt(c.at) - ind.addr);
        t.true(
          at >= u.ind.size && at + c.size <= Number(ind.size),
          `${u.name}: copy of ${c.sym} inside ${u.ind.section}, after the table`,
        );
        t.true(
          elf
            .contents(ind)
            .subarray(at, at + c.size)
            .equals(
              elf
                .contents(sec)
                .subarray(Number(f.value - sec.addr), Number(f.value - sec.addr) + c.size),
            ),
          `${u.name}: copy of ${c.sym}`,
        );
        t.is(f.name, c.sym);
      }
      for (const s of u.sites.filter((x) => x.c !== undefined && x.c !== x.t)) {
        calls++;
        t.true(
          (u.clones ?? []).some((c) => c.at === s.c && c.from === s.t),
          `${u.name}: site ${s.a} reaches a copy of its target`,
        );
      }
    }
  }
  t.true(copies >= 5 && calls >= copies, `${copies} copies, reached by ${calls} calls`);
  // Tampering with one byte of a copy: verify names it.
  const img = built.s1.find((x) =>
    readRecord(ElfFile.load(x.dbg))!.ulibs.some((u) => u.clones?.length),
  )!;
  const elf = ElfFile.load(img.dbg),
    u = readRecord(elf)!.ulibs.find((x) => x.clones?.length)!;
  const ind = elf.section(u.ind.section)!,
    c = u.clones![0];
  const bad = Buffer.from(elf.data);
  bad[Number(ind.offset) + Number(BigInt(c.at) - ind.addr) + 1] ^= 0xff;
  const path = join(out, 'tampered.dbg');
  writeFileSync(path, bad);
  t.true(
    verifyImage(path).some((p) => p.includes(`the copy of ${c.sym}`)),
    'verify reports the changed copy',
  );
});

test('only a function that runs the same anywhere is copied', (t) => {
  const ret = Buffer.from([0x48, 0x89, 0xf8, 0xc3]); // mov rax, rdi; ret
  t.is(cloneRefusal(ret, 0x1000n, []), undefined);
  const loop = Buffer.from([0x48, 0xff, 0xcf, 0x75, 0xfb, 0xc3]); // dec rdi; jnz -5; ret
  t.is(cloneRefusal(loop, 0x1000n, []), undefined);
  t.regex(cloneRefusal(ret, 0x1000n, [0x1001n])!, /relocation/);
  t.regex(
    cloneRefusal(Buffer.from([0x48, 0x8b, 0x05, 0, 0, 0, 0, 0xc3]), 0x1000n, [])!,
    /RIP-relative/,
  ); // mov rax, [rip]; ret
  // call next; ret
  t.regex(cloneRefusal(Buffer.from([0xe8, 0, 0, 0, 0, 0xc3]), 0x1000n, [])!, /branch|calls/);
  t.regex(cloneRefusal(Buffer.from([0xeb, 0x10]), 0x1000n, [])!, /leaves the function/); // jmp +16
  t.regex(cloneRefusal(Buffer.from([0xff, 0xe0]), 0x1000n, [])!, /indirectly/); // jmp rax
  // falls off its end
  t.regex(cloneRefusal(Buffer.from([0x48, 0x89, 0xf8]), 0x1000n, [])!, /does not end/);
  t.regex(cloneRefusal(Buffer.from([0x48, 0x89]), 0x1000n, [])!, /no whole instruction/);
});

test("a call or jump through a function pointer in the µlib's own data jumps through it at its absolute address (no slot, no unmatched ret); a changed entry is caught", (t) => {
  let through = 0,
    tried = false;
  for (const img of built.s1) {
    const elf = ElfFile.load(img.dbg);
    for (const u of readRecord(elf)!.ulibs) {
      for (const s of u.sites) {
        if (s.f !== 'callabs' && s.f !== 'jmpabs') continue;
        through++;
        t.is(s.p, undefined, 'no pointer slot');
        const O = decodeOne(Buffer.from(s.o, 'hex'), BigInt(s.a));
        // The entry: jmp qword ptr [X], X what the original's RIP-relative operand reached.
        const ind = elf.section(`.ind.${u.name}`)!;
        const at = Number(ind.offset + (BigInt(s.e) - ind.addr));
        const entry = elf.data.subarray(at, at + 7);
        t.deepEqual([...entry.subarray(0, 3)], [0xff, 0x24, 0x25], `${s.e}: jmp [disp32]`);
        t.is(BigInt(entry.readInt32LE(3)), O.memAddr, `${s.e}: through ${hex(O.memAddr)}`);
        if (tried) continue;
        tried = true;
        const copy = join(out, 'callabs.dbg');
        const b = readFileSync(img.dbg);
        b[at + 3] ^= 0x08;
        writeFileSync(copy, b);
        t.true(
          verifyImage(copy).some((m) => m.includes('is not jmp [')),
          `${img.image} ${u.name}: a changed entry is caught`,
        );
      }
      // No call or jump through the µlib's own data is left to the forms that end in `ret`.
      for (const s of u.sites)
        if (s.f === 'callptr' || s.f === 'jmpmem') {
          const O = decodeOne(Buffer.from(s.o, 'hex'), BigInt(s.a));
          const own =
            u.name &&
            elf.sections.some(
              (x) =>
                x.name.endsWith(`.${u.name}`) &&
                !x.name.startsWith('.text') &&
                O.memAddr >= x.addr &&
                O.memAddr < x.addr + x.size,
            );
          t.false(own, `${img.image} ${u.name}: ${s.a} calls through its own data with a ret`);
        }
    }
  }
  t.true(through >= 2, `${through} calls and jumps through own function pointers`);
});
