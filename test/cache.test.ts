// The cache next to the map (#14): the example workspace linked with the cache off, cold and warm
// gives byte-identical images, the warm link decodes less; a damaged entry is a miss; gc keeps
// the most recently used; two finishes at once share it; `spacer finish --precompact` leaves a
// file the image rule's strip takes only when it is the same file; iced-x86 is not loaded by
// importing the helper.
import test from 'ava';
import { execa } from 'execa';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { type Layout } from '../helper/pipeline.js';
import {
  cacheSummary,
  cacheUse,
  gcCache,
  readEntry,
  trimCache,
  writeEntry,
} from '../helper/cache/store.js';
import { icedLoaded } from '../helper/x86/iced.js';
import { verifyImage } from '../helper/verify.js';
import { readRecord } from '../helper/rewrite/record.js';
import { ElfFile, SHF_ALLOC } from '../helper/elf.js';
import {
  appSpecOf,
  compileWorkspace,
  linkCommand,
  loadApps,
  loadUlibsConfig,
  objectsFor,
  platformScripts,
  type CompiledWorkspace,
} from '../helper/workspace/index.js';
import { buildExample, cli, root, tempDir } from './_fixtures.js';

// Imported before anything decodes: the test below reads it first.
const icedAtStart = icedLoaded();

const out = tempDir('cache');
const apps = loadApps();
let compiled: CompiledWorkspace;

/** Links every app in `layout` into `<out>/<tag>` on `map`; the cache's use while doing it. */
async function linkAll(layout: Layout, tag: string, map: string, cache: boolean) {
  const before = { hits: cacheUse.hits, misses: cacheUse.misses };
  for (const app of apps)
    await buildExample(app, compiled, { out: join(out, tag, app.name), layout, map, cache });
  return { hits: cacheUse.hits - before.hits, misses: cacheUse.misses - before.misses };
}

const bytes = (tag: string, app: string, ext: string) =>
  readFileSync(join(out, tag, `${app}.${ext}`));

const use: Record<string, { hits: number; misses: number }> = {};

test.before(async () => {
  compiled = await compileWorkspace(join(out, 'objects'));
  for (const layout of ['spacer', 'spacer-aslr'] as const) {
    // Off: a first link of every app on an empty map, then a relink of all of them.
    const off = join(out, `${layout}-off`, 'map.json');
    await linkAll(layout, `${layout}-off1`, off, false);
    await linkAll(layout, `${layout}-off2`, off, false);
    // On: the same two rounds on a map of their own, its cache empty at first.
    const on = join(out, `${layout}-on`, 'map.json');
    use[`${layout} cold`] = await linkAll(layout, `${layout}-cold`, on, true);
    use[`${layout} warm`] = await linkAll(layout, `${layout}-warm`, on, true);
  }
});

test('iced-x86 is not loaded by importing the helper (only by the first decode)', (t) => {
  t.false(icedAtStart);
});

for (const layout of ['spacer', 'spacer-aslr'] as const)
  test(`${layout}: images are byte-identical with the cache off, cold and warm; warm decodes less`, (t) => {
    for (const app of apps.map((a) => a.name))
      for (const ext of ['dbg', 'elf']) {
        t.true(bytes(`${layout}-off1`, app, ext).equals(bytes(`${layout}-cold`, app, ext)), app);
        t.true(bytes(`${layout}-off2`, app, ext).equals(bytes(`${layout}-warm`, app, ext)), app);
      }
    const cold = use[`${layout} cold`],
      warm = use[`${layout} warm`];
    t.true(cold.misses > 0, 'the cold link decodes');
    t.true(warm.hits > warm.misses, `warm: ${warm.hits} reused, ${warm.misses} decoded`);
    t.true(warm.misses < cold.misses, `warm decoded ${warm.misses}, cold ${cold.misses}`);
    // Analyses, rewrites and proofs in both layouts (ASLR's hold the seed's addresses: the example
    // links each app with a seed of its own, the same in both rounds).
    const kinds = cacheSummary(join(out, `${layout}-on`, 'cache')).kinds;
    for (const k of ['analysis', 'rewrite', 'proof'] as const)
      t.true(kinds[k].entries > 0, `${layout}: ${k}`);
  });

test('an ASLR proof stands only while the entry stubs its check asked about are where they were', (t) => {
  const dir = join(out, 'spacer-aslr-on', 'cache');
  const dbg = join(out, 'spacer-aslr-warm', `${apps[0].name}.dbg`);
  // A first verify through the cache proves nothing anew: every µlib's proof is there.
  const m0 = cacheUse.misses;
  t.deepEqual(verifyImage(dbg, undefined, dir), []);
  t.is(cacheUse.misses, m0, 'every proof reused');
  // Each proof that asked about a stub now remembers another answer: each is proved again.
  type Proof = { proved: string; asked?: [bigint, bigint][] };
  let moved = 0;
  const proofs = join(dir, 'proof');
  for (const sub of readdirSync(proofs))
    for (const key of readdirSync(join(proofs, sub))) {
      const p = readEntry<Proof>(dir, 'proof', key);
      if (!p?.asked?.some(([v, c]) => v !== c)) continue;
      p.asked = p.asked.map(([v, c]) => [v, v === c ? c : c + 0x10n]);
      writeEntry(dir, 'proof', key, p);
      moved++;
    }
  t.true(moved > 0, 'some proofs asked about entry stubs');
  const m1 = cacheUse.misses;
  t.deepEqual(verifyImage(dbg, undefined, dir), []);
  t.true(cacheUse.misses > m1, `${cacheUse.misses - m1} µlibs proved again`);
  // A pointer slot changed by hand is found, cache or not: the area is part of the proof's key.
  const elf = ElfFile.load(dbg);
  const ru = readRecord(elf)!.ulibs.find((x) => x.ptr && x.ptr.used >= 16)!;
  const ptr = elf.section(ru.ptr!.section)!;
  const at = Number(ptr.offset) + ru.ptr!.used - 8;
  const bad = join(out, 'bad-ptr.dbg');
  const data = Buffer.from(readFileSync(dbg));
  data.writeBigUInt64LE(data.readBigUInt64LE(at) ^ 0x40n, at);
  writeFileSync(bad, data);
  t.true(verifyImage(bad, undefined, dir).length > 0, 'the changed slot is a problem');
});

test("an ASLR link keeps each object's table sizes by its content: the next link decodes none", async (t) => {
  const dir = join(out, 'needs');
  mkdirSync(dir, { recursive: true });
  const s = platformScripts();
  const env = { SPACER_CACHE: join(dir, 'cache') };
  const objects = objectsFor(apps[0], compiled);
  const link = (img: string) =>
    execa(
      process.execPath,
      ['--import', 'tsx', cli, 'link', '--image', img, '--lds', s.defaultLds, '--aslr']
        .concat(['--out', join(dir, `${img}.lds`), '--map', join(dir, 'map.json'), '--'])
        .concat(objects),
      { env },
    );
  await link('one');
  const n = cacheSummary(join(dir, 'cache')).kinds.needs.entries;
  t.true(n >= objects.length, `${n} entries for ${objects.length} objects`);
  await link('two');
  t.is(cacheSummary(join(dir, 'cache')).kinds.needs.entries, n, 'the same objects: nothing new');
});

test('the glue runs no mkdir and no touch: link makes its folders, finish --stamp writes the stamp only on success', async (t) => {
  // Linker.uk: `spacer link` into a build folder and a map folder that do not exist yet, ld, then
  // `spacer finish --stamp` (make's stamp of the finished image).
  const dir = join(out, 'glue');
  rmSync(dir, { recursive: true, force: true });
  const s = platformScripts();
  const objects = objectsFor(apps[0], compiled);
  const lds = join(dir, 'build', 'spacer', 'one.lds');
  const dbg = join(dir, 'build', 'one.dbg');
  const map = join(dir, 'workspace', 'map.json');
  const env = { SPACER_CACHE: 'off' };
  const spacer = (args: string[]) =>
    execa(process.execPath, ['--import', 'tsx', cli, ...args], { env, reject: false });
  const l = await spacer(
    ['link', '--image', 'one', '--lds', s.defaultLds, '--out', lds, '--map', map, '--'].concat(
      objects,
    ),
  );
  t.is(l.exitCode, 0, l.stderr);
  t.true(existsSync(lds) && existsSync(map));
  const ldArgs = linkCommand({ objects, extraLds: s.extraLds, out: dbg, defaultLds: lds }, dbg);
  ldArgs.splice(ldArgs.indexOf('-o'), 0, '-Wl,--emit-relocs');
  await execa('gcc', ldArgs);
  const stamp = join(dir, 'build', 'spacer', 'one.finished');
  // A finish that fails (its plan is not there) leaves no stamp.
  const bad = await spacer(['finish', '--plan', `${lds}.missing`, dbg, '--stamp', stamp]);
  t.is(bad.exitCode, 1);
  t.false(existsSync(stamp));
  const ok = await spacer(['finish', '--plan', `${lds}.json`, dbg, '--stamp', stamp]);
  t.is(ok.exitCode, 0, ok.stderr);
  t.true(existsSync(stamp));
  // Newer than the finished image, as make needs of a stamp that depends on it.
  t.true(statSync(stamp).mtimeMs >= statSync(dbg).mtimeMs);
  // A stamp that cannot be written: one line naming it, exit 1.
  const nowhere = join(dir, 'no-such-folder', 'one.finished');
  const unwritable = await spacer(['finish', '--plan', `${lds}.json`, dbg, '--stamp', nowhere]);
  t.is(unwritable.exitCode, 1);
  t.regex(
    unwritable.stderr,
    /^spacer: .*no-such-folder\/one\.finished: cannot write the stamp \(ENOENT\)/m,
  );
  t.is(
    unwritable.stderr.split('\n').filter((l) => l.startsWith('spacer: ') && /stamp/.test(l)).length,
    1,
  );
  // Through the link server, the .dbg rule's LD is `spacer-client --link` (Linker.uk): link, ld,
  // then finish on ld's -o file, in one process. Here with no server (Node runs each command, as
  // the client does when none answers): the same bytes as the three steps above.
  const client = join(root, 'helper', 'dist', 'spacer-client');
  t.true(existsSync(client), `${client}: not built (npm run build builds it with cc)`);
  const node = join(dir, 'node.sh');
  writeFileSync(node, `#!/bin/sh\nexec '${process.execPath}' --import tsx "$@"\n`, {
    mode: 0o755,
  });
  const finished = readFileSync(dbg);
  rmSync(dbg);
  const linkArgs = ['link', '--image', 'one', '--lds', s.defaultLds, '--out', lds, '--map', map];
  const step = (finish: string[], ld = ['gcc', ...ldArgs]) =>
    execa(
      client,
      ['--link', node, cli, ...linkArgs, '--', ...objects]
        .concat(['--spacer-finish', 'finish', ...finish])
        .concat(['--spacer-ld', ...ld]),
      { env: { ...env, SPACER_SERVER: 'off' }, reject: false },
    );
  const one = await step(['--plan', `${lds}.json`]);
  t.is(one.exitCode, 0, one.stderr);
  t.true(readFileSync(dbg).equals(finished), 'the same finished image as link, ld and finish');
  // A finish that fails removes ld's output (make links again); a failing ld is its own status.
  const failed = await step(['--plan', `${lds}.missing`]);
  t.is(failed.exitCode, 1);
  t.regex(failed.stderr, /lds\.missing/);
  t.false(existsSync(dbg), 'no unfinished image left for make to take as up to date');
  const ldFails = await step(['--plan', `${lds}.json`], ['sh', '-c', 'exit 4', 'ld', '-o', dbg]);
  t.is(ldFails.exitCode, 4);
  t.false(existsSync(dbg));
});

for (const layout of ['spacer', 'spacer-aslr'] as const)
  test.serial(
    `${layout}: a relink after only the app changed moves nothing else: the rest of the image comes from the cache`,
    async (t) => {
      // kvstore's app compiled twice, the second time with one function and read-only data
      // more; one image, so every µlib is in its own area, where the app goes last (in ASLR
      // mode too, with the same seed: its own code's gap counts the app by the kilobyte).
      const kv = apps.find((a) => a.name === 'kvstore')!;
      const src = readFileSync(join(root, 'example', 'apps', 'kvstore', 'main.c'), 'utf8');
      const build = async (tag: string, extra: string) => {
        const dir = join(out, 'appdev', layout, tag, 'kv-dev');
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'main.c'), src + extra);
        const spec = appSpecOf(
          loadUlibsConfig(),
          { name: 'kv-dev', libs: kv.libs, variants: {} },
          dir,
          false,
        );
        return {
          spec,
          compiled: await compileWorkspace(join(out, 'appdev', layout, tag, 'objects'), {
            apps: [spec],
          }),
        };
      };
      const v1 = await build('v1', '');
      const v2 = await build(
        'v2',
        '\nconst char kv_dev_note[200] = "one more";\n__attribute__((used)) int kv_dev_extra(int x)\n{\n' +
          '\tint s = 0;\n\tfor (int i = 0; i < x; i++)\n\t\ts += kv_dev_note[i & 127] * (i ^ x) + (s >> 3);\n' +
          '\treturn s;\n}\n',
      );
      const map = join(out, 'appdev', layout, 'map.json');
      const link = async (v: typeof v1, tag: string) => {
        const before = cacheUse.misses;
        await buildExample(v.spec, v.compiled, {
          out: join(out, 'appdev', layout, tag, 'kv-dev'),
          layout,
          map,
          seed: 'kv-dev',
          cache: true,
        });
        return cacheUse.misses - before;
      };
      await link(v1, 'v1');
      const decoded = await link(v2, 'v2');
      const places = (tag: string) =>
        new Map(
          ElfFile.load(join(out, 'appdev', layout, tag, 'kv-dev.dbg'))
            .sections.filter((x) => x.flags & SHF_ALLOC && /\.lib[a-z0-9_]+$/.test(x.name))
            .map((x) => [x.name, x.addr]),
        );
      const a = places('v1'),
        b = places('v2');
      t.true(a.size > 10, `${a.size} µlib sections`);
      t.deepEqual(b, a, 'every µlib section other than the app at the same address');
      // The app's entries only (its analyses, its rewrite, its proof); with every µlib after
      // the app moved, each of them would miss too.
      t.true(decoded <= 5, `${decoded} cache misses`);
    },
  );

test('a damaged or foreign entry is a miss, removed; a whole one reads back', (t) => {
  const dir = join(out, 'entries');
  writeEntry(dir, 'analysis', 'ab'.repeat(32), { x: 1n, b: Buffer.from('hi') });
  t.deepEqual(readEntry(dir, 'analysis', 'ab'.repeat(32)), { x: 1n, b: Buffer.from('hi') });
  const p = join(dir, 'analysis', 'ab', 'ab'.repeat(32));
  const data = readFileSync(p);
  data[data.length - 1] ^= 1;
  writeFileSync(p, data);
  t.is(readEntry(dir, 'analysis', 'ab'.repeat(32)), undefined);
  t.throws(() => statSync(p), undefined, 'the damaged entry is gone');
  writeFileSync(p, 'not an entry');
  t.is(readEntry(dir, 'analysis', 'ab'.repeat(32)), undefined);
});

test('gc keeps the most recently used under the limit and removes old leftovers', (t) => {
  const dir = join(out, 'gc');
  const keys = ['11', '22', '33', '44'].map((k) => k.repeat(32));
  keys.forEach((k, i) => {
    writeEntry(dir, 'rewrite', k, Buffer.alloc(1000, i));
    const when = new Date(Date.now() - (10 - i) * 60e3);
    utimesSync(join(dir, 'rewrite', k.slice(0, 2), k), when, when);
  });
  const stale = join(dir, 'rewrite', '11', `x.spacer-tmp-1-abcdef`);
  writeFileSync(stale, 'half');
  const old = new Date(Date.now() - 2 * 3600e3);
  utimesSync(stale, old, old);
  const size = statSync(join(dir, 'rewrite', '44', keys[3])).size;
  const r = gcCache(dir, 2 * size);
  t.is(r.removed, 2);
  t.is(r.entries, 2);
  t.deepEqual(
    keys.map((k) => readEntry(dir, 'rewrite', k) !== undefined),
    [false, false, true, true],
  );
  t.throws(() => statSync(stale));
  t.is(cacheSummary(dir).entries, 2);
});

test('two finishes at once on one cache: both images are the ones the cache-off link gives', async (t) => {
  const app = apps[0].name;
  const dir = join(out, 'parallel');
  mkdirSync(dir, { recursive: true });
  // The linked image before its finish: relink it (the plan is in place) without the helper.
  const plan = join(out, 'spacer-cold', `${app}.lds.json`);
  const env = { SPACER_CACHE: join(dir, 'cache') };
  const unfinished = join(dir, 'linked.dbg');
  const s = platformScripts();
  const args = linkCommand(
    {
      objects: objectsFor(apps[0], compiled),
      defaultLds: join(out, 'spacer-cold', `${app}.lds`),
      extraLds: s.extraLds,
      out: unfinished,
    },
    unfinished,
  );
  args.splice(args.indexOf('-o'), 0, '-Wl,--emit-relocs');
  await execa('gcc', args);
  const copies = ['a', 'b'].map((k) => join(dir, `${k}.dbg`));
  for (const c of copies) copyFileSync(unfinished, c);
  await Promise.all(
    copies.map((c) =>
      execa(process.execPath, ['--import', 'tsx', cli, 'finish', '--plan', plan, c], { env }),
    ),
  );
  const want = bytes('spacer-off1', app, 'dbg');
  for (const c of copies) t.true(readFileSync(c).equals(want), c);
  t.true(readdirSync(join(dir, 'cache')).length > 0);
});

test('precompact: the strip wrapper takes the file only when it is the same file and options; the client strips, then compacts', async (t) => {
  const { precompact, optionsLine } = await import('../helper/precompact.js');
  const { compactFile } = await import('../helper/commands/build.js');
  const app = apps[0].name;
  const dir = join(out, 'pre');
  mkdirSync(join(dir, 'spacer'), { recursive: true });
  const dbg = join(dir, `${app}.dbg`);
  copyFileSync(join(out, 'spacer-cold', `${app}.dbg`), dbg);
  const image = join(dir, app);
  const o = { pack: true, holes: false };
  const lines: string[] = [];
  t.true(
    await precompact(dbg, image, 'strip -s --remove-section=.spacer.rewrite', o, (p, say) =>
      compactFile(p, o, {}, image, (l) => (lines.push(l), say(l))),
    ),
  );
  t.is(
    readFileSync(join(dir, 'spacer', `${app}.compact.key`), 'utf8').split('\n')[1],
    optionsLine(o),
  );
  // What `spacer compact` makes of the same strip.
  const ref = join(dir, 'ref');
  await execa('strip', ['-s', '--remove-section=.spacer.rewrite', dbg, '-o', ref]);
  await execa(process.execPath, ['--import', 'tsx', cli, 'compact', ref]);
  const wrapper = join(root, 'scripts', 'spacer-strip.sh');
  const strip = ['strip', '-s', '--remove-section=.spacer.rewrite', dbg, '-o', image];
  // Node given as `false`: the wrapper can only succeed by taking the precompacted file.
  const r = await execa('sh', [wrapper, 'false', cli, '--pack', ...strip]);
  t.true(readFileSync(image).equals(readFileSync(ref)), 'the same bytes as spacer compact');
  t.true(r.stderr.includes(lines[0]), 'it prints what compact printed');
  // Other options, or another strip, and it falls back to `spacer compact` (here: `false`).
  await t.throwsAsync(execa('sh', [wrapper, 'false', cli, '--no-pack', ...strip]));
  const other = ['strip', '-s', dbg, '-o', image];
  await t.throwsAsync(execa('sh', [wrapper, 'false', cli, '--pack', ...other]));
  // Through the link server, the image rule's STRIP is `spacer-client --strip` (Linker.uk): it
  // runs strip, then `spacer compact` (here with no server, so as Node would run it, through a
  // "node" that notes its arguments); it never looks for a precompacted file (the finish makes
  // none then, so a key on disk is an old build's).
  const client = join(root, 'helper', 'dist', 'spacer-client');
  t.true(existsSync(client), `${client}: not built (npm run build builds it with cc)`);
  const log = join(dir, 'node.args');
  const node = join(dir, 'node.sh');
  writeFileSync(
    node,
    `#!/bin/sh\necho "$@" > '${log}'\nexec '${process.execPath}' --import tsx "$@"\n`,
    { mode: 0o755 },
  );
  const env = { SPACER_SERVER: 'off' };
  const c = await execa(client, ['--strip', node, cli, '--pack', '--', ...strip], { env });
  t.is(readFileSync(log, 'utf8').trim(), `${cli} compact --pack ${image}`);
  t.true(readFileSync(image).equals(readFileSync(ref)), 'the same bytes as spacer compact');
  t.regex(c.stderr, /packed/);
  // A strip that fails: its status, and no compaction; no -o: nothing to compact.
  rmSync(log);
  const bad = await execa(client, ['--strip', node, cli, '--pack', '--', 'sh', '-c', 'exit 3'], {
    env,
    reject: false,
  });
  t.is(bad.exitCode, 3);
  t.false(existsSync(log), 'no compaction after a failed strip');
  const none = await execa(client, ['--strip', node, cli, '--pack', '--', 'true'], { env });
  t.is(none.exitCode, 0);
  t.false(existsSync(log), 'nothing to compact without -o');
});

test('spacer cache show and gc: what the cache holds, and emptied with --max-mb 0', async (t) => {
  const dir = join(out, 'cli-cache');
  writeEntry(dir, 'analysis', 'cd'.repeat(32), { x: 1 });
  writeEntry(dir, 'needs', 'ef'.repeat(32), { y: 2 });
  const env = { SPACER_CACHE: dir };
  const run = (...args: string[]) =>
    execa(process.execPath, ['--import', 'tsx', cli, 'cache', ...args], { env });
  const show = await run('show');
  t.regex(show.stdout, /2 entries/);
  t.regex(show.stdout, /analysis\s+1 entries/);
  const gc = await run('gc', '--max-mb', '0');
  t.regex(gc.stdout, /removed 2 entries/);
  t.is(cacheSummary(dir).entries, 0);
  const bad = await t.throwsAsync(run('gc', '--max-mb', '-1'));
  t.regex(String(bad?.message), /--max-mb -1: give a number of MiB/);
});

test('trim scans the cache only once the links since the last scan added a sixteenth of its limit', (t) => {
  const dir = join(out, 'trim');
  const saved = process.env.SPACER_CACHE_MB;
  try {
    process.env.SPACER_CACHE_MB = '1'; // gc at 64 KiB of additions
    cacheUse.addedBytes.clear();
    writeEntry(dir, 'object', '12'.repeat(32), Buffer.alloc(30_000));
    trimCache();
    const pending = () => Number(readFileSync(join(dir, 'pending'), 'utf8'));
    t.true(pending() > 30_000, 'counted, no scan yet');
    process.env.SPACER_CACHE_MB = '0.05'; // 52 KB: over it, a sixteenth already added
    writeEntry(dir, 'object', '34'.repeat(32), Buffer.alloc(30_000));
    trimCache();
    t.is(pending(), 0, 'scanned');
    t.is(cacheSummary(dir).entries, 1, 'the least recently used went');
  } finally {
    if (saved === undefined) delete process.env.SPACER_CACHE_MB;
    else process.env.SPACER_CACHE_MB = saved;
    cacheUse.addedBytes.clear();
  }
});

test('a cache folder that cannot be written: one warning line, and the link goes on', (t) => {
  const file = join(out, 'not-a-folder');
  writeFileSync(file, '');
  const dir = join(file, 'cache');
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => (lines.push(String(s)), true)) as typeof write;
  try {
    writeEntry(dir, 'analysis', 'ab'.repeat(32), { x: 1 });
    writeEntry(dir, 'rewrite', 'cd'.repeat(32), { y: 2 });
  } finally {
    process.stderr.write = write;
  }
  t.is(readEntry(dir, 'analysis', 'ab'.repeat(32)), undefined);
  t.is(lines.length, 1);
  t.regex(
    lines[0],
    /^spacer: warning: .*not-a-folder\/cache: the cache cannot be written \(ENOTDIR\)/,
  );
});
