// The example workspace (example/): C µlibs compiled and linked the way Unikraft does it, booted
// under
// qemu (TCG) in the default layout. Needs gcc, binutils and qemu-system-x86_64.
import test from 'ava';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  type AppSpec,
  type CompiledWorkspace,
  type LinkedImage,
  bootExpecting,
  bootFailure,
  bootImage,
  compileWorkspace,
  linkApp,
  linkImage,
  loadApps,
  objectsFor,
  platformScripts,
  workspaceRoot,
} from '../helper/workspace/index.js';
import { ElfFile, PT_TLS } from '../helper/elf.js';
// @ts-expect-error: plain JavaScript model of the apps' output
import { expectedOutput } from '../example/tools/expected.mjs';

const apps = loadApps();
const tmpDirs: string[] = [];
const mkTmp = (tag: string): string => {
  const d = mkdtempSync(path.join(tmpdir(), `spacer-ws-${tag}-`));
  tmpDirs.push(d);
  return d;
};

let compiled: CompiledWorkspace;
let images: Record<string, LinkedImage> = {};
let buildDir: string;
const ready = (async () => {
  buildDir = mkTmp('build');
  compiled = await compileWorkspace(buildDir);
  const linked = await Promise.all(
    apps.map((a) => linkApp(a, compiled, path.join(buildDir, 'images'))),
  );
  images = Object.fromEntries(apps.map((a, i) => [a.name, linked[i]]));
})();

// At most two qemu instances at a time (2 cores, TCG).
let running = 0;
const waiting: (() => void)[] = [];
async function withQemuSlot<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= 2) await new Promise<void>((r) => waiting.push(r));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

test.before(async () => {
  await ready;
});

test.after.always(() => {
  if (process.env.SPACER_KEEP_TMP) return;
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

test('the workspace has at least 9 µlibs, 6 apps, FaaS apps sharing µlibs, a variant and a bench app', (t) => {
  const ulibs = readdirSync(path.join(workspaceRoot(), 'ulibs'));
  t.true(ulibs.length >= 9, ulibs.join(' '));
  t.true(apps.length >= 6);
  const faas = apps.filter(
    (a) => a.name.startsWith('faas-') && Object.keys(a.variants).length === 0,
  );
  t.true(faas.length >= 4);
  for (const a of faas) t.deepEqual(a.libs, faas[0].libs, a.name);
  t.true(apps.some((a) => a.variants.nolibc === 'full'));
  t.true(apps.some((a) => a.bench));
  t.true(apps.some((a) => a.libs.length > faas[0].libs.length));
  for (const a of apps) {
    t.is(a.ulibs[0], 'libkvmplat.o', a.name);
    t.is(a.ulibs[1], `${a.appLib}.o`, a.name);
    t.is(a.ulibs.length, a.objectKeys.length);
  }
});

test.serial('expected outputs are those of the independent JavaScript model', (t) => {
  for (const a of apps) t.is(readFileSync(a.expectedOutput, 'utf8'), expectedOutput(a), a.name);
});

for (const app of apps) {
  test(`${app.name} boots under qemu and prints its expected output`, async (t) => {
    const expected = readFileSync(app.expectedOutput, 'utf8');
    const {
      result: r,
      failure,
      firstFailure,
    } = await withQemuSlot(() =>
      bootExpecting(images[app.name].elf, expected, { timeoutMs: 60_000 }),
    );
    t.log(`${app.name}: ${r.durationMs.toFixed(0)} ms, qemu status ${r.qemuStatus}`);
    if (firstFailure)
      t.log(`a first boot failed (${firstFailure}); the second gave the expected output`);
    t.is(failure, null);
    t.false(r.timedOut, 'qemu timed out');
    t.is(r.exitCode, 0, `guest exit code (qemu status ${r.qemuStatus}); stderr: ${r.stderr}`);
    t.true(r.success);
    t.is(r.output, readFileSync(app.expectedOutput, 'utf8'));
  });
}

test('objects are in Unikraft link order, one per µlib, with the variant only where chosen', (t) => {
  for (const a of apps) {
    const objs = objectsFor(a, compiled);
    t.deepEqual(
      objs.map((o) => path.basename(o)),
      a.ulibs,
      a.name,
    );
    for (const o of objs) t.true(existsSync(o), o);
  }
  const plain = compiled.objects['nolibc'];
  const full = compiled.objects['nolibc+full'];
  t.truthy(plain);
  t.truthy(full);
  t.is(path.basename(full), 'libnolibc.o');
  t.not(sha(plain), sha(full));
  const variantApp = apps.find((a) => a.variants.nolibc === 'full') as AppSpec;
  t.true(objectsFor(variantApp, compiled).includes(full));
  for (const a of apps.filter((x) => x !== variantApp)) {
    t.true(objectsFor(a, compiled).includes(plain), a.name);
    t.false(objectsFor(a, compiled).includes(full), a.name);
  }
  // uklibid's table depends on how many libraries the image has.
  const small = apps.find((a) => a.name === 'cpu-bench') as AppSpec;
  const big = apps.find((a) => a.name === 'kvstore') as AppSpec;
  t.not(sha(compiled.objects['uklibid@cpu-bench']), sha(compiled.objects['uklibid@kvstore']));
  t.true(small.ulibs.length < big.ulibs.length);
});

test('every image has at most 6 PT_LOADs, none empty or at address 0, and a TLS segment', (t) => {
  for (const a of apps) {
    for (const file of [images[a.name].dbg, images[a.name].elf]) {
      const elf = ElfFile.load(file);
      const loads = elf.loads;
      t.true(loads.length >= 3 && loads.length <= 6, `${file}: ${loads.length} PT_LOAD`);
      for (const p of loads) {
        t.false(p.vaddr === 0n, `${file}: PT_LOAD at address 0`);
        t.true(p.memsz > 0n, `${file}: empty PT_LOAD at ${p.vaddr.toString(16)}`);
        t.true(
          p.vaddr >= 0x100000n && p.vaddr + p.memsz < 64n << 20n,
          `${file}: PT_LOAD outside guest RAM`,
        );
      }
      t.true(
        elf.segments.some((p) => p.type === PT_TLS),
        `${file}: no PT_TLS`,
      );
    }
    const dbg = ElfFile.load(images[a.name].dbg),
      elf32 = ElfFile.load(images[a.name].elf);
    t.is(dbg.header.class, 64);
    t.is(elf32.header.class, 32);
    t.is(elf32.header.machine, 3); // EM_386: qemu's multiboot loader refuses ELF64
    t.is(elf32.header.entry, dbg.header.entry);
  }
});

test('outputs do not depend on the layout: objects linked in reverse order give the same output', async (t) => {
  const dir = mkTmp('reverse');
  for (const name of ['kvstore', 'faas-parse']) {
    const app = apps.find((a) => a.name === name) as AppSpec;
    const img = await linkImage({
      objects: objectsFor(app, compiled).reverse(),
      ...platformScripts(),
      out: path.join(dir, name),
    });
    t.not(sha(img.dbg), sha(images[name].dbg));
    const { result: r, failure } = await withQemuSlot(() =>
      bootExpecting(img.elf, readFileSync(app.expectedOutput, 'utf8'), { timeoutMs: 60_000 }),
    );
    t.is(failure, null, name);
    t.is(r.exitCode, 0, name);
  }
});

test('bootImage reports a guest that never exits as a failure (timeout kills qemu)', async (t) => {
  const app = apps[0];
  const dir = mkTmp('hang');
  // Entering 64-bit C code from the 32-bit multiboot state runs garbage that never exits.
  const img = await linkImage({
    objects: objectsFor(app, compiled),
    ...platformScripts(),
    out: path.join(dir, 'hang'),
    entry: 'uk_qsort',
  });
  const r = await withQemuSlot(() => bootImage(img.elf, { timeoutMs: 1500 }));
  t.true(r.timedOut);
  t.is(r.exitCode, -1);
  t.false(r.success);
  t.true(r.durationMs < 10_000);
  t.regex(bootFailure(r, null)!, /^timed out after 1\.\d s with 0 bytes of output$/);
  // The one-line reasons for the other ways a boot goes wrong.
  const ok = {
    ...r,
    timedOut: false,
    exitCode: 0,
    qemuStatus: 1,
    success: true,
    output: 'a\nb: 1\n',
    stderr: '',
  };
  t.is(bootFailure(ok, 'a\nb: 1\n'), null);
  t.is(
    bootFailure(ok, 'a\nb: 2\n'),
    'output differs from the expected at line 2: "1\\n" where "2\\n" was expected',
  );
  t.is(
    bootFailure({ ...ok, exitCode: 3, qemuStatus: 7, success: false }, null),
    'the guest exited with 3, 7 bytes of output',
  );
  t.is(
    bootFailure({ ...ok, exitCode: -1, qemuStatus: undefined, success: false }, null),
    'qemu ended with status none (killed by a signal), 7 bytes of output',
  );
  t.is(
    bootFailure(
      { ...ok, output: '', stderr: 'qemu-system-x86_64: cannot set up guest memory\n' },
      'a\n',
    ),
    'output differs from the expected at line 1: "" where "a\\n" was expected (qemu: qemu-system-x86_64: cannot set up guest memory)',
  );
});

test.serial(
  'rebuilds are skipped when up to date; builds are byte-identical across directories and safe to race',
  async (t) => {
    const again = await compileWorkspace(buildDir);
    t.deepEqual(again.built, []);
    t.is(again.upToDate.length, Object.keys(compiled.objects).length);

    // Two builds racing into one fresh directory both succeed and give the same bytes.
    const other = mkTmp('again');
    const [second, racing] = await Promise.all([compileWorkspace(other), compileWorkspace(other)]);
    t.deepEqual(racing.objects, second.objects);
    t.deepEqual(Object.keys(second.objects).sort(), Object.keys(compiled.objects).sort());
    for (const [k, p] of Object.entries(compiled.objects)) {
      t.is(sha(second.objects[k]), sha(p), `object ${k} differs between build directories`);
      const bytes = readFileSync(second.objects[k]);
      t.false(bytes.includes(Buffer.from(other)), `object ${k} contains its build path`);
      t.false(bytes.includes(Buffer.from(workspaceRoot())), `object ${k} contains the source path`);
    }
    const app = apps[0];
    const img = await linkImage({
      objects: objectsFor(app, second),
      ...platformScripts(),
      out: path.join(other, 'img', app.name),
    });
    t.is(sha(img.dbg), sha(images[app.name].dbg));
    t.is(sha(img.elf), sha(images[app.name].elf));
    t.deepEqual(readdirSync(path.join(other, 'img')).sort(), [
      `${app.name}.dbg`,
      `${app.name}.elf`,
    ]);
  },
);
