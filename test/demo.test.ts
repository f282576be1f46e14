// The example workspace end to end through the same path the Unikraft glue uses: every app in
// the default and the Spacer layout, booted under qemu, compared with the page model.
import test from 'ava';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runDemo, type DemoResult } from '../helper/demo.js';
import { ElfFile, PT_LOAD } from '../helper/elf.js';
import { scanPages } from '../helper/pages.js';
import { readRecord } from '../helper/rewrite/record.js';
import { verifyImage } from '../helper/verify.js';
import { decodeOne } from '../helper/x86/decode.js';
import { spacer, tempDir } from './_fixtures.js';

const out = tempDir('demo');
let demo: DemoResult;

test.before(async () => {
  demo = await runDemo({ out });
});

test('every app boots in both layouts and prints what its default build prints', (t) => {
  t.true(demo.apps.length >= 6);
  for (const a of demo.apps) {
    t.true(a.outputs.default!.ok, `${a.name} default: ${a.outputs.default!.failure}`);
    t.true(a.outputs.spacer!.ok, `${a.name} spacer: ${a.outputs.spacer!.failure}`);
    t.true(a.outputs.spacer!.matches_default, `${a.name} spacer output = default output`);
    for (const l of ['default', 'spacer', 'spacer-aslr'] as const) {
      const x = a.outputs[l];
      if (x?.first_boot_failed)
        t.log(
          `${l}/${a.name}: a first boot failed (${x.first_boot_failed}); the second gave the expected output`,
        );
    }
  }
  const json = JSON.parse(readFileSync(join(out, 'demo.json'), 'utf8'));
  for (const layout of ['default', 'spacer']) {
    const f = json.layouts[layout];
    t.true(f.outputs_match, layout);
    for (const k of ['pages', 'distinct_pages', 'content_bound_pages'])
      t.true(Number.isInteger(f[k]) && f[k] > 0, `${layout}.${k}`);
    // L counts the platform's per-app variants once each; only a layout that keeps them at one
    // address shares the pages where they agree (docs/metrics.md).
    if (layout === 'default')
      t.true(f.distinct_pages >= f.content_bound_pages, 'the default layout keeps at least L');
    for (const a of demo.apps) t.true(existsSync(join(out, layout, `${a.name}.elf`)));
  }
});

test('the page floor L_pg and own pages per image, for every layout', (t) => {
  const json = JSON.parse(readFileSync(join(out, 'demo.json'), 'utf8'));
  for (const [layout, f] of Object.entries(json.layouts) as [string, Record<string, number>][]) {
    // L_pg is the Spacer images' floor, applied to every layout as L is.
    t.is(f.page_floor_pages, json.layouts.spacer.page_floor_pages, layout);
    t.true(f.own_pages_per_image > 0, layout);
    // Own pages are distinct contents of one image each: together at most D.
    t.true(f.own_pages_per_image * f.images <= f.distinct_pages + 1e-6, layout);
  }
  const sp = json.layouts.spacer;
  t.true(Number.isInteger(sp.page_floor_pages) && sp.page_floor_pages > 0);
  t.true(sp.page_floor_pages >= sp.content_bound_pages, 'the floor is at least L');
  // The floor keeps each variant whole; the per-app platform's variants share their pages where
  // they agree, so Spacer may go under it, the default layout not.
  t.true(
    sp.page_floor_pages <= json.layouts.default.distinct_pages,
    `L_pg ${sp.page_floor_pages} ≤ default D`,
  );
  // ASLR's cost per image: its pointer area and entry stubs, about one page more than the plain
  // layout's own pages (the platform pinned, switch tables and interrupt stubs through tables).
  const as = json.layouts['spacer-aslr'];
  t.true(
    as.own_pages_per_image <= sp.own_pages_per_image + 1,
    `ASLR own pages per image ${as.own_pages_per_image}, plain ${sp.own_pages_per_image}`,
  );
  t.true(
    as.distinct_pages <= 1.15 * sp.distinct_pages,
    `ASLR D ${as.distinct_pages}, plain ${sp.distinct_pages}`,
  );
  t.true(as.distinct_pages < json.layouts.default.distinct_pages, 'ASLR keeps fewer than default');
});

test('against the default layout: the whole workspace, and every pair of apps on its own', (t) => {
  const json = JSON.parse(readFileSync(join(out, 'demo.json'), 'utf8'));
  t.true(json.layouts.spacer.distinct_pages <= json.layouts.default.distinct_pages);
  t.is(json.pairs.length, (demo.apps.length * (demo.apps.length - 1)) / 2);
  // Each pair's figure is the report of its two images alone.
  const above = json.pairs.filter(
    (p: { distinct_pages: Record<string, number> }) =>
      p.distinct_pages.spacer > p.distinct_pages.default,
  );
  t.is(json.layouts.spacer.pairs_above_default, above.length);
  // No pair keeps more pages with Spacer, also those whose µlib sets differ (faas-parse's nolibc
  // variant, kvstore's ukrand, cpu-bench without three µlibs).
  t.deepEqual(
    above.map((p: { a: string; b: string }) => `${p.a}~${p.b}`),
    [],
  );
  t.true(
    json.layouts.spacer.pages_per_image_ratio <= 1.15,
    `pages per image ${json.layouts.spacer.pages_per_image_ratio}× the default's`,
  );
});

test('a µlib with identical bytes in two Spacer images sits at the same address, and its pages differ only where another µlib on them differs', (t) => {
  const images = demo.apps.map((a) => ElfFile.load(join(out, 'spacer', `${a.name}.dbg`)));
  const ulibSections = (e: ElfFile) =>
    e.sections.filter((s) => /^\.(text|rodata|data|ind)\.(lib|app)/.test(s.name));
  let compared = 0;
  for (let i = 0; i < images.length; i++) {
    for (let j = i + 1; j < images.length; j++) {
      const a = images[i],
        b = images[j];
      const pa = scanPages(a),
        pb = scanPages(b);
      const differs = (name: string) => {
        const x = a.section(name),
          y = b.section(name);
        return !x || !y || x.addr !== y.addr || !a.contents(x).equals(b.contents(y));
      };
      for (const sec of ulibSections(a)) {
        if (differs(sec.name)) continue;
        const first = Number(sec.addr) >> 12,
          last = (Number(sec.addr + sec.size) - 1) >> 12;
        for (let p = first; p <= last; p++) {
          if ((pa.nonzero.get(p) ?? 'z') === (pb.nonzero.get(p) ?? 'z')) continue;
          // The page differs: only allowed when another section on it differs too: a µlib's, or
          // the platform's boot head (.text), which calls into its per-app code.
          const on = (e: ElfFile) =>
            [...ulibSections(e), ...e.sections.filter((s) => s.name === '.text')].filter(
              (s) =>
                s.name !== sec.name &&
                Number(s.addr) >> 12 <= p &&
                (Number(s.addr + s.size) - 1) >> 12 >= p,
            );
          t.true(
            [...on(a), ...on(b)].some((s) => differs(s.name)),
            `${sec.name} page ${p.toString(16)}: ${demo.apps[i].name} vs ${demo.apps[j].name}`,
          );
        }
        compared++;
      }
    }
  }
  t.true(compared > 50, `compared ${compared} sections`);
});

test("the per-app platform's code is the same in every app, in both layouts", (t) => {
  // The example's platform is built per app (CONFIG_UK_NAME), and its messages are merged after
  // the name's string: with names of other lengths they sit at other offsets; their addresses go
  // through its table. The name's length, compiled into its setup code, is moved to the table
  // (layout/moved.ts: found by the first round's links, moved by the relinks).
  const lengths = new Set(demo.apps.map((a) => a.name.length));
  t.true(lengths.size > 1, 'the demo has names of more than one length');
  for (const layout of ['spacer', 'spacer-aslr']) {
    const images = demo.apps.map((a) => ElfFile.load(join(out, layout, `${a.name}.dbg`)));
    const code = images.map((e) => e.section('.text.libkvmplat')!);
    let pairs = 0;
    for (let i = 0; i < images.length; i++)
      for (let j = i + 1; j < images.length; j++) {
        const x = code[i],
          y = code[j];
        const what = `${layout}: ${demo.apps[i].name} vs ${demo.apps[j].name}`;
        t.is(x.addr, y.addr, `${what}: the platform's code at one address`);
        const a = images[i].contents(x),
          b = images[j].contents(y);
        t.is(a.length, b.length, what);
        const pages = new Set<number>();
        for (let k = 0; k < a.length; k++)
          if (a[k] !== b[k]) pages.add(Number(x.addr + BigInt(k)) >> 12);
        t.is(pages.size, 0, `${what}: ${pages.size} code pages differ`);
        pairs++;
      }
    t.is(pairs, (images.length * (images.length - 1)) / 2);
  }
});

test("the plain layout loads the platform's own-data addresses from GOT slots: verify checks each slot and each load", (t) => {
  const src = join(out, 'spacer', `${demo.apps[0].name}.dbg`);
  const elf = ElfFile.load(src);
  const plat = readRecord(elf)!.ulibs.find((u) => u.name === 'libkvmplat')!;
  const loads = plat.sites.filter((x) => x.g !== undefined);
  t.true(loads.length > 20, `${loads.length} slot loads`);
  // Each holds the original's address, once per address: the slots of one value are shared.
  t.is(new Set(loads.map((x) => x.g)).size, new Set(loads.map((x) => x.t)).size);
  t.deepEqual(verifyImage(src), []);
  const ind = elf.section('.ind.libkvmplat')!;
  const fileOff = (addr: bigint) => Number(ind.offset + (addr - ind.addr));
  const corrupt = (off: number) => {
    const p = join(tempDir('slotload'), 'image.dbg');
    const b = readFileSync(src);
    b[off] ^= 0x01;
    writeFileSync(p, b);
    return verifyImage(p);
  };
  const x = loads[0];
  t.true(corrupt(fileOff(BigInt(x.g!))).some((m) => m.includes(`slot ${x.g} holds`)));
  // The load's displacement (its last four bytes before the jump back).
  const disp = BigInt(x.e) + (decodeOne(Buffer.from(x.o, 'hex'), 0n).len === 5 ? 2n : 3n);
  t.true(corrupt(fileOff(disp)).some((m) => m.includes('does not load slot')));
});

test("the platform's GOT slots end its table, at one address in every app, on the page of the per-image code after it", (t) => {
  // What differs in the platform's table between apps is its GOT slots (the addresses of its own
  // data): at the table's end they share the page of the per-image code that follows (ukboot's,
  // the app's), instead of costing a page of their own.
  const ends = new Set<string>();
  for (const a of demo.apps) {
    const elf = ElfFile.load(join(out, 'spacer', `${a.name}.dbg`));
    const plat = readRecord(elf)!.ulibs.find((u) => u.name === 'libkvmplat')!;
    const ind = elf.section('.ind.libkvmplat')!;
    const slots = plat.sites.filter((x) => x.g !== undefined).map((x) => BigInt(x.g!));
    t.true(slots.length > 0, a.name);
    const last = slots.reduce((x, y) => (y > x ? y : x));
    const end = (ind.addr + ind.size) & ~7n;
    t.true(last + 8n <= end && end - last <= 8n * 64n, `${a.name}: the last slot ends the table`);
    const next = elf.sections
      .filter((s) => s.addr >= ind.addr + ind.size && s.size > 0n && s.name.startsWith('.text'))
      .sort((x, y) => Number(x.addr - y.addr))[0];
    t.is(last >> 12n, next.addr >> 12n, `${a.name}: ${next.name} follows on the slots' page`);
    ends.add(`${ind.addr}+${ind.size}`);
  }
  t.is(ends.size, 1, 'the table takes its name slot whole: one place in every app');
});

test('the default layout shares less of the shared µlibs than Spacer: a µlib after the app shifts', (t) => {
  // In the default layout every library linked after the app moves with the app's size.
  const sha = ElfFile.load(join(out, 'default', 'faas-sha.dbg'));
  const sort = ElfFile.load(join(out, 'default', 'faas-sort.dbg'));
  const addr = (e: ElfFile, s: string) => e.symbols().find((x) => x.name === s)?.value;
  t.not(addr(sha, 'memcpy'), addr(sort, 'memcpy'));
  const ssha = ElfFile.load(join(out, 'spacer', 'faas-sha.dbg'));
  const ssort = ElfFile.load(join(out, 'spacer', 'faas-sort.dbg'));
  t.is(addr(ssha, 'memcpy'), addr(ssort, 'memcpy'));
});

test("ASLR: the name slots' per-app variants are the image's own code: packed with the app, not rewritten, moved by the shuffle", (t) => {
  const plans = demo.apps.map((a) =>
    JSON.parse(readFileSync(join(out, 'spacer-aslr', `${a.name}.lds.json`), 'utf8')),
  );
  const images = demo.apps.map((a) => ElfFile.load(join(out, 'spacer-aslr', `${a.name}.dbg`)));
  for (const name of ['libukboot', 'libuklibid']) {
    const entries = plans.map((p) => p.ulibs.find((u: { name: string }) => u.name === name));
    t.true(
      entries.every((u) => u.named && !u.slots.ind && !u.slots.ptr),
      `${name}: every image has its own variant, with no table and no pointer area`,
    );
    t.true(
      new Set(entries.map((u) => u.variant)).size >= 6,
      `${name}: the variants differ between apps`,
    );
    for (const [i, e] of images.entries()) {
      t.is(e.section(`.ind.${name}`), undefined, `${demo.apps[i].name}: ${name} has no table`);
      // Packed with the app's code on its pages, at an offset drawn from the seed.
      const text = e.section(`.text.${name}`)!;
      const app = e.sections.find((x) => x.name.startsWith('.text.app'))!;
      t.true(
        Math.abs(Number(text.addr - app.addr)) < 4 * 4096,
        `${demo.apps[i].name}: ${name} near the app's code`,
      );
    }
    t.true(
      new Set(images.map((e) => e.section(`.text.${name}`)!.addr)).size > 1,
      `${name}: the shuffle moved it`,
    );
  }
  // ukboot builds the app's name from immediates in its code, as Unikraft's boot code does.
  const code = images.map((e) => e.contents(e.section('.text.libukboot')!).toString('hex'));
  t.true(new Set(code).size > 1, "ukboot's code differs between apps");
});

test('Spacer images keep few program headers (seven more than the default at most) and no empty PT_LOAD at address 0', (t) => {
  for (const a of demo.apps) {
    const def = ElfFile.load(join(out, 'default', `${a.name}.elf`));
    const sp = ElfFile.load(join(out, 'spacer', `${a.name}.elf`));
    // One PT_LOAD more for the µlibs' .bss, one for the indirection tables; packing leaves out the
    // zeros before the platform's page-aligned code (its page tables), which starts one more piece,
    // and those at the end of a code page the next µlib does not fill, between the shared read-only
    // data and the name slots and own area on a page of their own, between the µlibs'
    // read-only data and the unwind tables, and after the platform's per-app code in its name
    // slot (a piece each: seven more at most on the example).
    t.true(
      sp.loads.length <= def.loads.length + 7,
      `${a.name}: ${sp.loads.length} PT_LOADs, default ${def.loads.length}`,
    );
    t.false(
      sp.segments.some((p) => p.type === PT_LOAD && p.vaddr === 0n && p.memsz === 0n),
      a.name,
    );
  }
});

test('spacer report reads the images and agrees with the demo figures', async (t) => {
  const imgs = demo.apps.map((a) => join(out, 'spacer', `${a.name}.elf`));
  const r = await spacer(['report', '--json', ...imgs]);
  t.is(r.exitCode, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  t.is(rep.distinct_pages, demo.layouts.spacer.distinct_pages);
  t.is(rep.pages, demo.layouts.spacer.pages);
  t.is(rep.content_bound_pages, demo.layouts.spacer.content_bound_pages);
  const text = await spacer(['report', ...imgs.slice(0, 2)]);
  t.regex(text.stdout, /distinct non-zero pages \(D\)/);
});

test('same objects, same map: the demo rebuilds byte-identical images', async (t) => {
  const again = tempDir('demo2');
  await runDemo({ out: again, boot: false });
  for (const a of demo.apps) {
    for (const layout of ['default', 'spacer']) {
      t.true(
        readFileSync(join(out, layout, `${a.name}.elf`)).equals(
          readFileSync(join(again, layout, `${a.name}.elf`)),
        ),
        `${layout}/${a.name}`,
      );
    }
  }
});
