// The Unikraft glue (Makefile.uk, Makefile.build, Linker.uk) through real make, over the example
// workspace's objects and a kvm link shaped as Unikraft 0.17's (test/fixtures/glue): what runs on
// a first build, that nothing runs on a second, that removing the script relinks (what relayout
// does), and that Node per command and the link server give the same image.
import test from 'ava';
import { execa } from 'execa';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ElfFile } from '../helper/elf.js';
import { PLAN_SECTION } from '../helper/plan.js';
import {
  compileWorkspace,
  loadApps,
  objectsFor,
  platformScripts,
  type CompiledWorkspace,
} from '../helper/workspace/index.js';
import { ENTRY_SYMBOL } from '../helper/workspace/link.js';
import { fixtures, root, tempDir } from './_fixtures.js';

const out = tempDir('glue');
const apps = loadApps();
let compiled: CompiledWorkspace;

test.before(async () => {
  compiled = await compileWorkspace(join(out, 'objects'));
});

/** `make` of the fixture's build of app 0 into `build`, with `vars` added; its output lines. */
async function make(build: string, vars: Record<string, string> = {}) {
  const s = platformScripts();
  const app = join(out, 'app');
  mkdirSync(app, { recursive: true });
  // Written once: the image depends on it.
  if (!existsSync(join(app, '.config'))) writeFileSync(join(app, '.config'), 'CONFIG_SPACER=y\n');
  const args = {
    LIBSPACER: root,
    O: build,
    APP: app,
    NAME: 'hello',
    OBJS: objectsFor(apps[0], compiled).join(' '),
    ENTRY: ENTRY_SYMBOL,
    DEF_LDS: s.defaultLds,
    EXTRA_LDS: s.extraLds.join(' '),
    SPACER_MAP: join(out, 'map', 'map.json'),
    ...vars,
  };
  const r = await execa(
    'make',
    [
      '-f',
      join(fixtures, 'glue', 'Makefile'),
      ...Object.entries(args).map(([k, v]) => `${k}=${v}`),
    ],
    { env: { XDG_RUNTIME_DIR: join(out, 'run'), SPACER_SERVER_IDLE: '30' }, reject: false },
  );
  return { ...r, steps: r.stdout.split('\n').filter((l) => /^ {2}[A-Z]+ /.test(l)) };
}

test('through the link server, the link step is one LD; nothing on a second make; removing the script relinks', async (t) => {
  const client = join(root, 'helper', 'dist', 'spacer-client');
  t.true(existsSync(client), `${client}: not built (npm run build builds it with cc)`);
  mkdirSync(join(out, 'run'), { recursive: true, mode: 0o700 });
  const build = join(out, 'served');
  const image = join(build, 'hello_qemu-x86_64');
  const first = await make(build);
  t.is(first.exitCode, 0, first.stderr);
  t.deepEqual(first.steps, ['  LD hello_qemu-x86_64.dbg', '  SCSTRIP hello_qemu-x86_64']);
  t.regex(first.stderr, /spacer: hello_qemu-x86_64: \d+ µlibs placed/);
  // The .dbg is finished (it carries its plan), and no stamp is needed.
  t.truthy(ElfFile.load(`${image}.dbg`).section(PLAN_SECTION));
  t.false(existsSync(join(build, 'spacer', 'hello_qemu-x86_64.finished')));
  t.true(existsSync(image));
  const again = await make(build);
  t.is(again.exitCode, 0, again.stderr);
  t.deepEqual(again.steps, [], 'nothing to do');
  const dbgTime = statSync(`${image}.dbg`).mtimeMs;
  // What 'spacer map relayout' runs first: the script goes, and the next make links again; an LD
  // and a STRIP on make's command line are the tools the client runs, not replacements for it.
  rmSync(join(build, 'spacer', 'hello_qemu-x86_64.lds'));
  const relink = await make(build, { LD: 'gcc', STRIP: 'strip' });
  t.is(relink.exitCode, 0, relink.stderr);
  t.deepEqual(relink.steps, ['  LD hello_qemu-x86_64.dbg', '  SCSTRIP hello_qemu-x86_64']);
  t.true(statSync(`${image}.dbg`).mtimeMs > dbgTime);
  t.truthy(ElfFile.load(`${image}.dbg`).section(PLAN_SECTION), 'finished by the client');
});

test('with Node per command, link, finish and the stamp are rules of their own; the image is the same', async (t) => {
  const served = join(out, 'served2');
  const direct = join(out, 'direct');
  // Each on a map of its own (a map gives one image name to one build folder).
  const a = await make(served, { SPACER_MAP: join(out, 'map-served', 'map.json') });
  t.is(a.exitCode, 0, a.stderr);
  const offMap = { SPACER_SERVER: 'off', SPACER_MAP: join(out, 'map-direct', 'map.json') };
  const b = await make(direct, offMap);
  t.is(b.exitCode, 0, b.stderr);
  t.deepEqual(b.steps, [
    '  SPACER hello_qemu-x86_64.lds',
    '  LD hello_qemu-x86_64.dbg',
    '  SPACER hello_qemu-x86_64.finished',
    '  SCSTRIP hello_qemu-x86_64',
  ]);
  t.true(existsSync(join(direct, 'spacer', 'hello_qemu-x86_64.finished')));
  // The same objects on the same (new) map: the same bytes either way.
  for (const ext of ['', '.dbg'])
    t.true(
      readFileSync(join(served, `hello_qemu-x86_64${ext}`)).equals(
        readFileSync(join(direct, `hello_qemu-x86_64${ext}`)),
      ),
      `hello_qemu-x86_64${ext}`,
    );
  const again = await make(direct, offMap);
  t.deepEqual(again.steps, []);
});
