// ASLR mode on the example workspace: shuffled code, rewritten references, real qemu boots.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ElfFile } from '../helper/elf.js';
import { buildImage, type BuiltImage } from '../helper/pipeline.js';
import { readRecord } from '../helper/rewrite.js';
import { verifyImage } from '../helper/verify.js';
import { bootImage, compileWorkspace, linkCommand, loadApps, objectsFor, platformScripts, type CompiledWorkspace } from '../helper/workspace/index.js';
import { tempDir } from './_fixtures.js';

const out = tempDir('aslr');
const apps = loadApps().filter((a) => ['faas-sha', 'faas-lz', 'kvstore'].includes(a.name));
let compiled: CompiledWorkspace;

const linkArgs = (objects: string[], defaultLds: string, extraLds: string[], output: string) =>
  linkCommand({ objects, defaultLds, extraLds, out: output }, output);

async function build(app: (typeof apps)[number], seed: string, dir: string): Promise<BuiltImage> {
  const scripts = platformScripts();
  return buildImage({
    image: app.name, objects: objectsFor(app, compiled), lds: scripts.defaultLds, extraLds: scripts.extraLds,
    out: join(out, dir, app.name), layout: 'spacer-aslr', map: join(out, `${dir}-map.json`), seed, linkArgs,
  });
}

const built: Record<string, BuiltImage[]> = {};

test.before(async () => {
  compiled = await compileWorkspace(join(out, 'objects'));
  for (const [dir, seed] of [['s1', 'one'], ['s2', 'two'], ['s1again', 'one']]) {
    built[dir] = [];
    for (const app of apps) built[dir].push(await build(app, `${app.name}:${seed}`, dir));
  }
});

test('every app boots with unchanged output in ASLR mode, for two seeds', async (t) => {
  for (const [i, app] of apps.entries()) {
    const expected = readFileSync(app.expectedOutput, 'utf8');
    for (const dir of ['s1', 's2']) {
      const r = await bootImage(built[dir][i].elf, { timeoutMs: 60_000 });
      t.true(r.success, `${dir}/${app.name}: exit ${r.exitCode}`);
      t.is(r.output, expected, `${dir}/${app.name}`);
    }
  }
});

test('same seed: byte-identical image; different seeds: different µlib orders', (t) => {
  for (let i = 0; i < apps.length; i++) {
    t.true(readFileSync(built.s1[i].elf).equals(readFileSync(built.s1again[i].elf)), apps[i].name);
    t.notDeepEqual(built.s1[i].plan!.aslr!.order, built.s2[i].plan!.aslr!.order, apps[i].name);
  }
});

test('a µlib\'s code and table are byte-identical wherever the shuffle puts them; only its pointer area differs', (t) => {
  const a = ElfFile.load(built.s1[0].dbg), b = ElfFile.load(built.s2[0].dbg);
  let moved = 0, ptrsDiffer = 0;
  for (const sec of a.sections.filter((s) => s.name.startsWith('.text.lib'))) {
    const other = b.section(sec.name)!;
    if (sec.addr !== other.addr) moved++;
    t.true(a.contents(sec).equals(b.contents(other)), sec.name);
    // A µlib other images share starts on a page; the image's own code follows its pointer areas.
    const pu = built.s1[0].plan!.ulibs.find((u) => `.text.${u.name}` === sec.name)!;
    if (pu.shared) t.is(Number(sec.addr) % 4096, 0, `${sec.name} starts on a page`);
    const ind = a.section(sec.name.replace('.text.', '.ind.'));
    if (ind) {
      t.is(ind.addr - sec.addr, b.section(ind.name)!.addr - other.addr, `${ind.name} at a fixed distance`);
      // Position-independent entries: the table holds no address, so it is the same in both builds.
      t.true(a.contents(ind).equals(b.contents(b.section(ind.name)!)), `${ind.name} identical`);
      // What the entries read sits at one address the map keeps; its values follow the shuffle.
      const pa = a.section(sec.name.replace('.text.', '.ptr.')), pb = b.section(sec.name.replace('.text.', '.ptr.'));
      t.truthy(pa && pb, `${sec.name}: pointer area`);
      t.is(pa!.addr, pb!.addr, `${pa!.name} at the map's address`);
      if (!a.contents(pa!).equals(b.contents(pb!))) ptrsDiffer++;
    }
  }
  t.true(moved >= 3, `${moved} µlibs moved between seeds`);
  // Pointer areas hold this build's addresses (one whose targets are all data keeps its values).
  t.true(ptrsDiffer >= 3, `${ptrsDiffer} pointer areas differ between seeds`);
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
  let piSites = 0, slots = 0, sharing = 0;
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
        t.is(new Set(l.map((x) => x.t)).size, 1, `${img.image} ${u.name}: slot ${p} read by sites with different targets`);
        // An address the code takes reads the stub's address, one it reaches the real one: never both.
        const taken = l.map((x) => x.f === 'load' || x.f === 'immreg');
        t.true(taken.every((x) => x === taken[0]), `${img.image} ${u.name}: slot ${p} read as taken and as reached`);
      }
    }
  }
  t.true(sharing > 10, `${sharing} slots shared`);
  t.true(slots < piSites, `${slots} slots for ${piSites} position-independent sites`);
  t.log(`${piSites} position-independent sites read ${slots} pointer slots (${sharing} shared)`);
});
