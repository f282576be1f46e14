// Real code, not only our own (issue 4): the SQLite amalgamation that the npm package
// better-sqlite3 ships, compiled with Unikraft's x86-64 code-generation flags into ONE µlib object
// (libsqlite.o, made as Unikraft makes µlibs: gcc -c, ld -r, objcopy), plus an app µlib with a real
// workload (appsql.o), linked into a static x86-64 Linux executable through lib-spacer's real path:
// link() writes the aligned script from a Unikraft-structured platform script, gcc links with
// --emit-relocs, finish() verifies the layout and rewrites per plan. Static glibc (libc.a, libm,
// libgcc) is the platform's C runtime, outside the µlib set: its code stays in the platform's host
// region, its data in the generic patterns. The executables run natively; the output of the
// rewritten images (plain Spacer layout, ASLR under two seeds) must equal the default layout's byte
// for byte. The amalgamation is downloaded at test time (scripts/fetch-sqlite.ts, cached in
// node_modules/.cache); without a reachable npm registry (and no cache) the test is skipped.
import test from 'ava';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { fetchSqlite } from '../scripts/fetch-sqlite.js';
import { ElfFile } from '../helper/elf.js';
import { finish } from '../helper/pipeline.js';
import { link, type Plan } from '../helper/link.js';
import { indirectionNeeds, type IndNeeds, type RewriteStats } from '../helper/rewrite.js';
import { verifyImage } from '../helper/verify.js';
import { compileUlib, fixtures, referencedAddresses, tempDir, UK_CFLAGS } from './_fixtures.js';

const FIX = join(fixtures, 'realcode');
const PLATFORM = join(FIX, 'platform.lds');
/**
 * Unikraft's x86-64 code generation; hosted (glibc headers), so without
 * -nostdinc/-nostdlib/-ffreestanding.
 */
const CFLAGS = UK_CFLAGS.filter((f) => !['-nostdlib', '-nostdinc', '-ffreestanding'].includes(f));
/** A subset of better-sqlite3's own defines (deps/defines.gypi), single-threaded, no dlopen. */
const SQLITE_DEFS = [
  '-DSQLITE_THREADSAFE=0',
  '-DSQLITE_OMIT_LOAD_EXTENSION',
  '-DSQLITE_DEFAULT_MEMSTATUS=0',
  '-DSQLITE_OMIT_DEPRECATED',
  '-DSQLITE_DQS=0',
  '-DSQLITE_USE_URI=0',
  '-DSQLITE_ENABLE_MATH_FUNCTIONS',
  '-DSQLITE_LIKE_DOESNT_MATCH_BLOBS',
];
const SCALE = '3000';
/** Interleaved runs of each image: a run takes about 0.1 s; a few percent needs more than five. */
const RUNS = 15;
const SEEDS = [
  'sqlite-1',
  'sqlite-2',
  'sqlite-3',
  'sqlite-4',
  'sqlite-5',
  'sqlite-6',
  'sqlite-7',
  'sqlite-8',
];

const canRun = process.platform === 'linux' && process.arch === 'x64';
const fetched = canRun ? await fetchSqlite() : undefined;
const skip = !canRun
  ? 'needs x86-64 Linux (the images run natively)'
  : !fetched!.ok
    ? `npm registry unreachable: ${fetched!.unreachable}`
    : undefined;
const run = skip ? test.skip : test;

const dir = tempDir('realcode');
let runs = 0;

interface Image {
  name: string;
  path: string;
  /** A copy as linked, before finish(). */
  linked?: string;
  plan?: Plan;
  rewrite?: RewriteStats;
}

const objs = { app: '', sqlite: '' };
const ASLR_MAP = 'sqlite-aslr.map.json';
const images: Record<'default' | 'lddefault' | 'spacer' | 'aslrA' | 'aslrB', Image> = {} as never;
let needs: Record<'external' | 'aslr', IndNeeds>;
let expected = '';
const times: Record<string, number> = {};

/** Compiles C into a µlib object as Unikraft does: gcc -c, gcc -Wl,-r (ld -r), objcopy. */
const ulib = (name: string, source: string, flags: string[]) =>
  compileUlib(dir, name, source, [...CFLAGS, ...flags]);

/** Static link: the µlibs, then the C runtime (libm, libc.a, libgcc) as archives. */
async function gccLink(
  out: string,
  script: string | undefined,
  extra: string[] = [],
): Promise<string> {
  await execa('gcc', [
    '-static',
    '-no-pie',
    '-Wl,--build-id=none',
    '-Wl,-z,noexecstack',
    ...extra,
    ...(script ? [`-Wl,-T,${script}`] : []),
    objs.app,
    objs.sqlite,
    '-lm',
    '-o',
    out,
  ]);
  return out;
}

/**
 * A Spacer image: link() (map, aligned script, plan), the real link with --emit-relocs, finish().
 */
async function spacerImage(
  name: string,
  aslrSeed?: string,
  map = `${name}.map.json`,
): Promise<Image> {
  const lds = join(dir, `${name}.lds`),
    path = join(dir, name);
  const plan = await link({
    image: name,
    lds: PLATFORM,
    out: lds,
    map: join(dir, map),
    objects: [objs.app, objs.sqlite],
    aslrSeed,
  });
  await gccLink(path, plan.script, ['-Wl,--emit-relocs']);
  const linked = `${path}.linked`;
  copyFileSync(path, linked);
  const r = await finish(path, `${lds}.json`);
  return { name, path, linked, plan, rewrite: r.rewrite };
}

/** Runs the workload in a fresh directory (the app creates and removes its database file there);
 * wall time, and the child's CPU time (user + system) from bash's `times`, less sensitive to load.
 * */
async function runImage(path: string) {
  const wd = join(dir, `run${++runs}`);
  mkdirSync(wd);
  const t0 = performance.now();
  const r = await execa(
    'bash',
    ['-c', '"$@"; rc=$?; times >&2; exit $rc', 'bash', path, join(wd, 'work.db'), SCALE],
    { reject: false, timeout: 120_000, cwd: wd, stripFinalNewline: false },
  );
  const ms = performance.now() - t0;
  const lines = r.stderr.split('\n').filter(Boolean);
  const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(lines.at(-1) ?? '');
  const cpuMs = m
    ? (Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4])) * 1000
    : NaN;
  return {
    exitCode: r.exitCode,
    stdout: r.stdout,
    stderr: lines.slice(0, -2).join('\n'),
    ms,
    cpuMs,
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

if (skip) test.skip(`real code: SQLite as a µlib (skipped: ${skip})`, () => {});

test.before(async () => {
  if (skip || !fetched?.ok) return;
  const libc = (await execa('gcc', ['-print-file-name=libc.a'])).stdout.trim();
  if (!libc.startsWith('/')) throw new Error('static glibc (libc.a) not found: install libc6-dev');
  // SQLite (about 9 MB of C) and the app, compiled in parallel: the app needs the same sqlite3.h.
  const t0 = performance.now();
  const [sqlite, app] = await Promise.all([
    (async () => {
      const o = await ulib('libsqlite', fetched.source, SQLITE_DEFS);
      times.compileSqlite = performance.now() - t0;
      return o;
    })(),
    ulib('appsql', join(FIX, 'appsql.c'), [`-I${fetched.dir}`, '-Wall']),
  ]);
  objs.sqlite = sqlite;
  objs.app = app;
  needs = {
    external: indirectionNeeds(objs.sqlite, 'external'),
    aslr: indirectionNeeds(objs.sqlite, 'aslr'),
  };
  // The default layout: the platform script as it is, no rewrite; and ld's own default script.
  images.default = { name: 'default', path: await gccLink(join(dir, 'sqlite-default'), PLATFORM) };
  images.lddefault = {
    name: 'lddefault',
    path: await gccLink(join(dir, 'sqlite-lddefault'), undefined),
  };
  let t = performance.now();
  images.spacer = await spacerImage('sqlite-spacer');
  times.spacer = performance.now() - t;
  // ASLR under two seeds that give different µlib orders (two µlibs: two orders).
  // One map for the ASLR images, where another image already uses the same objects: libsqlite is
  // shared, so it starts on a page and is rewritten (an image's own code is left as linked).
  await link({
    image: 'sqlite-aslr-other',
    lds: PLATFORM,
    out: join(dir, 'sqlite-aslr-other.lds'),
    map: join(dir, ASLR_MAP),
    objects: [objs.app, objs.sqlite],
    aslrSeed: 'other',
  });
  t = performance.now();
  images.aslrA = await spacerImage('sqlite-aslr-a', SEEDS[0], ASLR_MAP);
  times.aslr = performance.now() - t;
  for (const seed of SEEDS.slice(1)) {
    images.aslrB = await spacerImage(`sqlite-aslr-b${seed.slice(-1)}`, seed, ASLR_MAP);
    if (images.aslrB.plan!.aslr!.order.join() !== images.aslrA.plan!.aslr!.order.join()) break;
  }
  const r = await runImage(images.default.path);
  if (r.exitCode !== 0)
    throw new Error(`the default-layout image failed (exit ${r.exitCode}): ${r.stderr}`);
  expected = r.stdout;
});

test.after.always(() => {
  // About 40 MB of objects and images; SPACER_KEEP_TMP=1 keeps them for a look.
  if (!process.env.SPACER_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
});

run(
  'the SQLite amalgamation from better-sqlite3 compiles into one µlib object, and the default layout runs the workload',
  async (t) => {
    if (!fetched?.ok) return t.fail();
    t.log(
      `SQLite ${fetched.version} from ${fetched.spec} (${fetched.downloaded ? 'downloaded' : 'cached'} ${fetched.tarball})`,
    );
    t.log(
      `compile of sqlite3.c (${(readFileSync(fetched.source).length / 1e6).toFixed(1)} MB, ${CFLAGS.join(' ')}): ${(times.compileSqlite / 1000).toFixed(1)} s`,
    );
    const o = ElfFile.load(objs.sqlite);
    const text = o.sections
      .filter((s) => /^\.text(\.|$)/.test(s.name))
      .reduce((n, s) => n + Number(s.size), 0);
    t.true(text > 500_000, `libsqlite.o has ${text} bytes of code`);
    t.log(
      `libsqlite.o: ${text} bytes of code; first pass: external ${JSON.stringify(needs.external)}, aslr ${JSON.stringify(needs.aslr)}`,
    );
    // The workload really ran: the rows, the integrity check, the checksum line.
    t.regex(
      expected,
      new RegExp(`^sqlite ${fetched.version.replace(/\./g, '\\.')}, scale ${SCALE}\n`),
    );
    t.regex(expected, /\ncount: 3000\|12000\|\d+\n/);
    t.regex(expected, /\ncheck: ok\n/);
    t.regex(expected, /\nfib: 90\|1779979416004714189\n/);
    t.regex(expected, /\ncnt: 100000\|\d+\|14286\|100000\n/);
    t.regex(expected, /\nrows \d+\nchecksum [0-9a-f]{16}\n$/);
    t.true(expected.split('\n').length > 120);
    // ld's own default script gives the same output: the platform script changes nothing.
    const ld = await runImage(images.lddefault.path);
    t.is(ld.exitCode, 0, ld.stderr);
    t.is(ld.stdout, expected);
  },
);

run(
  'the Spacer images (plain, and ASLR under two seeds) verify and print byte-identical output',
  async (t) => {
    for (const img of [images.spacer, images.aslrA, images.aslrB]) {
      t.deepEqual(verifyImage(img.path), [], img.name);
      t.is(img.plan!.rewrite, img === images.spacer ? 'external' : 'aslr');
      const r = await runImage(img.path);
      t.is(r.exitCode, 0, `${img.name}: ${r.stderr}`);
      t.is(r.stdout, expected, img.name);
      t.is(r.stderr, '', img.name);
    }
    t.notDeepEqual(
      images.aslrA.plan!.aslr!.order,
      images.aslrB.plan!.aslr!.order,
      'the two seeds give different orders',
    );
    // Every µlib sits where its plan says (finish checked it too).
    for (const img of [images.spacer, images.aslrA, images.aslrB]) {
      const elf = ElfFile.load(img.path);
      for (const u of img.plan!.ulibs)
        for (const s of Object.values(u.slots)) {
          const sec = elf.section(s!.section);
          if (sec) t.is(sec.addr, BigInt(s!.addr), `${img.name}: ${s!.section}`);
        }
    }
  },
);

run("the rewrite moved thousands of SQLite instructions, within the first pass's bound", (t) => {
  for (const img of [images.spacer, images.aslrA, images.aslrB]) {
    const st = img.rewrite!,
      s = st.perUlib.libsqlite,
      a = st.perUlib.appsql;
    const mode = img.plan!.rewrite as 'external' | 'aslr';
    t.log(
      `${img.name} (${mode}${img.plan!.aslr ? `, seed ${img.plan!.aslr.seed}, order ${img.plan!.aslr.order.join(' ')}` : ''}): rewrite ${st.ms.toFixed(0)} ms; ` +
        `libsqlite: ${s.sites} sites, ${s.trampolines} trampolines (moved instructions), ${s.stubs} stubs, ${s.got} GOT slots, ${s.tableBytes} table bytes ` +
        `(reserved ${img.plan!.ulibs.find((u) => u.name === 'libsqlite')!.slots.ind?.bytes}), ${s.dataPointers} data pointers on ${s.dataPointerPages.length} pages; ` +
        `appsql: ${a.sites} sites, ${a.trampolines} trampolines, ${a.stubs} stubs, ${a.tableBytes} table bytes`,
    );
    t.true(s.rewritten && a.rewritten);
    const need = needs[mode];
    t.true(
      s.sites <= need.sites &&
        s.stubs <= need.stubs &&
        s.got <= need.got &&
        s.trampolines <= need.trampolines,
      `${JSON.stringify(s)} vs ${JSON.stringify(need)}`,
    );
    t.true(s.tableBytes <= need.bytes);
    // In ASLR mode function pointers now point to entry stubs at addresses every image shares;
    // what is left (switch tables, into the middle of functions) is counted.
    if (mode === 'external') t.is(s.dataPointers, need.dataPointers);
    else {
      t.is(
        s.dataPointers + (st.dataRedirected ?? 0),
        need.dataPointers,
        `${s.dataPointers} left, ${st.dataRedirected} redirected of ${need.dataPointers}`,
      );
      t.true((st.dataRedirected ?? 0) >= 100, `${st.dataRedirected} function pointers redirected`);
    }
    // SQLite calls into the C runtime (memcpy, malloc, strlen, ...) through stubs in every mode.
    t.true(s.stubs >= 20, `${s.stubs} stubs`);
    if (mode === 'external') {
      t.true(s.sites >= 300, `${s.sites} sites`);
    } else {
      // ASLR: RIP-relative references to its own read-only data, data and bss move too (absolute
      // addresses of its data stay: the data keeps its slot while the code moves).
      t.true(
        s.sites >= 1000 && s.trampolines >= 1000,
        `${s.sites} sites, ${s.trampolines} trampolines`,
      );
      t.true(
        s.sites > needs.external.sites * 2,
        `${s.sites} sites in ASLR mode vs ${needs.external.sites}`,
      );
      t.true(s.tableBytes >= 10_000, `${s.tableBytes} table bytes`);
    }
  }
});

run(
  "ASLR: libsqlite's code is byte-identical under both seeds at different addresses, and refers only to itself and its table",
  async (t) => {
    const a = ElfFile.load(images.aslrA.path),
      b = ElfFile.load(images.aslrB.path);
    const ta = a.section('.text.libsqlite')!,
      tb = b.section('.text.libsqlite')!;
    t.not(ta.addr, tb.addr, 'the shuffle moved libsqlite');
    const sha = (e: ElfFile, s: typeof ta) =>
      createHash('sha256').update(e.contents(s)).digest('hex');
    t.is(sha(a, ta), sha(b, tb), 'same code bytes');
    // Another image of the map uses libsqlite: it is shared, so its code starts on a page.
    t.true(images.aslrA.plan!.ulibs.find((u) => u.name === 'libsqlite')!.shared);
    t.is(Number(ta.addr) % 4096, 0);
    const ia = a.section('.ind.libsqlite')!,
      ib = b.section('.ind.libsqlite')!;
    t.is(ia.addr - ta.addr, ib.addr - tb.addr, 'table at a fixed distance');
    const pa = a.section('.ptr.libsqlite')!,
      pb = b.section('.ptr.libsqlite')!;
    t.is(pa.addr, pb.addr, "the pointer area at the map's address");
    // The pointer area holds this build's addresses. (The table may differ too: in this Linux
    // executable the calls into libc go to the PLT, which sits after the shuffled code.)
    t.false(a.contents(pa).equals(b.contents(pb)), 'the pointer areas differ');
    // Independent check with objdump: every branch and RIP-relative operand of the rewritten code
    // lands in libsqlite's own code or its table; the same code as linked did refer outside.
    const inside = (e: ElfFile, x: bigint) =>
      ['.text.libsqlite', '.ind.libsqlite'].some((n) => {
        const s = e.section(n)!;
        return x >= s.addr && x < s.addr + s.size;
      });
    const refs = await referencedAddresses(images.aslrA.path, '.text.libsqlite');
    t.true(refs.length > 10_000, `${refs.length} references`);
    const outside = refs.filter((x) => !inside(a, x));
    t.deepEqual(
      outside.slice(0, 10).map((x) => x.toString(16)),
      [],
      `${outside.length} references leave the µlib`,
    );
    const before = (await referencedAddresses(images.aslrA.linked!, '.text.libsqlite')).filter(
      (x) => !inside(a, x),
    );
    t.true(before.length >= 1000, `${before.length} references left the µlib before the rewrite`);
    t.log(
      `objdump: ${refs.length} branch/RIP-relative references in .text.libsqlite; outside the µlib before the rewrite ${before.length}, after ${outside.length}`,
    );
    // What still differs between the two seeds, page by page (data pointers: switch tables and
    // function pointers hold absolute code addresses; the rewrite counts them, it cannot move
    // them).
    const pages = (n: string) => {
      const x = a.contents(a.section(n)!),
        y = b.contents(b.section(n)!);
      let all = 0,
        diff = 0;
      for (let o = 0; o < x.length; o += 4096, all++)
        if (!Buffer.from(x.subarray(o, o + 4096)).equals(Buffer.from(y.subarray(o, o + 4096))))
          diff++;
      return `${diff}/${all}`;
    };
    t.log(
      `pages of libsqlite that differ between the seeds: text ${pages('.text.libsqlite')}, rodata ${pages('.rodata.libsqlite')}, data ${pages('.data.libsqlite')}, table ${pages('.ind.libsqlite')}`,
    );
  },
);

run(
  'runtime side by side: default layout vs rewritten images, same output every run',
  async (t) => {
    const order = [images.default, images.spacer, images.aslrA, images.aslrB];
    const ms: Record<string, number[]> = Object.fromEntries(order.map((i) => [i.name, []]));
    const cpu: Record<string, number[]> = Object.fromEntries(order.map((i) => [i.name, []]));
    for (let k = 0; k < RUNS; k++) {
      for (const img of order) {
        const r = await runImage(img.path);
        t.is(r.exitCode, 0, img.name);
        t.is(r.stdout, expected, img.name);
        ms[img.name].push(r.ms);
        cpu[img.name].push(r.cpuMs);
      }
    }
    const show = (xs: Record<string, number[]>) => {
      const base = median(xs.default);
      return order
        .map(
          (i) =>
            `${i.name} ${median(xs[i.name]).toFixed(0)} ms (${(median(xs[i.name]) / base).toFixed(2)}x)`,
        )
        .join(', ');
    };
    t.log(`workload (scale ${SCALE}), median of ${RUNS} interleaved runs: wall ${show(ms)}`);
    t.log(`                                           CPU (user+sys) ${show(cpu)}`);
    t.log(
      `build: spacer link+gcc+finish ${(times.spacer / 1000).toFixed(1)} s, aslr ${(times.aslr / 1000).toFixed(1)} s`,
    );
    // A loose bound on CPU time: a trampoline costs two jumps, not a slowdown by multiples.
    for (const img of order.slice(1)) {
      t.true(
        median(cpu[img.name]) < 2.5 * median(cpu.default),
        `${img.name}: ${median(cpu[img.name]).toFixed(0)} ms vs ${median(cpu.default).toFixed(0)} ms`,
      );
    }
  },
);
