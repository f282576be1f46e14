// ASLR hardening where an image's own code fills whole pages (#16): no gap, no table there, so
// the salt goes into the padding between two functions (audit/pad.ts). The demo's apps are too
// small to have such a page; this app (generated here: 48 functions of like size, about three
// pages of its own code, each padded by fewer than 8 bytes) has. Linked in ASLR mode with two
// seeds next to the demo's µlibs: audit passes and lists salts in padding, 8 bytes gathered from
// several functions' padding where no single one has 8, and the image boots with the default
// layout's output.
import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { auditImage } from '../helper/audit/index.js';
import { type Layout } from '../helper/pipeline.js';
import {
  appSpecOf,
  bootExpecting,
  bootImage,
  compileWorkspace,
  loadApps,
  loadUlibsConfig,
  type AppSpec,
} from '../helper/workspace/index.js';
import { buildExample, tempDir } from './_fixtures.js';

const out = tempDir('padsalt');
const FUNCS = 48;
/** Entries of a read-only table of the functions' addresses: 8000 bytes, about two pages. */
const TABLE = 1000;

/** main.c: FUNCS functions of arithmetic on a volatile input, each called once, one line out. */
function source(): string {
  const L = [
    '#include <stdio.h>',
    '',
    'static volatile unsigned long long input = 0x9e3779b97f4a7c15ULL;',
    '',
  ];
  for (let f = 0; f < FUNCS; f++) {
    L.push(`__attribute__((noinline)) static unsigned long long f${f}(unsigned long long x)`, '{');
    for (let k = 0; k < 12; k++) {
      const c = ((f * 2654435761 + k * 40503) >>> 0) | 1;
      L.push(`\tx = (x ^ (x >> ${(k % 29) + 3})) * ${c}ULL + ${f * 13 + k};`);
    }
    L.push('\treturn x;', '}', '');
  }
  // A table of its own code's addresses in read-only data, as nolibc's on real hwB: on every
  // page it fills the addresses move with the seed, so the own area must leave salt room there.
  L.push('static unsigned long long (*const table[])(unsigned long long) = {');
  for (let i = 0; i < TABLE; i++) L.push(`\tf${(i * 7) % FUNCS},`);
  L.push('};', '');
  L.push(
    'int main(int argc, char *argv[])',
    '{',
    '\tunsigned long long x = input;',
    '\t(void)argc;',
    '\t(void)argv;',
  );
  for (let f = 0; f < FUNCS; f++) L.push(`\tx = f${f}(x);`);
  L.push(`\tx = table[x % ${TABLE}](x);`);
  L.push('\tprintf("pad-app: %llx\\n", x);', '\treturn 0;', '}', '');
  return L.join('\n');
}

let app: AppSpec;
const images: Record<string, string> = {};

test.before(async () => {
  const like = loadApps().find((a) => a.name === 'faas-sum')!;
  const dir = join(out, 'apps', 'pad-app');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'main.c'), source());
  app = appSpecOf(
    loadUlibsConfig(),
    { name: 'pad-app', libs: like.libs, variants: {} },
    dir,
    false,
  );
  const compiled = await compileWorkspace(join(out, 'objects'), { apps: [app] });
  const link = async (tag: string, layout: Layout, seed?: string) => {
    const map = layout === 'default' ? undefined : join(out, `${tag}-map.json`);
    await buildExample(app, compiled, { out: join(out, tag, app.name), layout, map, seed });
    images[tag] = join(out, tag, app.name);
  };
  await link('default', 'default');
  await link('seed1', 'spacer-aslr', 'pad-1');
  await link('seed2', 'spacer-aslr', 'pad-2');
});

test('own code that fills its pages carries its salt in the padding; audit passes with both seeds', (t) => {
  for (const tag of ['seed1', 'seed2']) {
    const r = auditImage(`${images[tag]}.dbg`);
    const bad = r.pages.filter((p) => !p.ok).map((p) => `${p.page}: ${p.problem}`);
    t.deepEqual(bad, [], tag);
    const pads = r.pages.filter((p) => p.salt?.kind === 'pad');
    t.true(pads.length >= 2, `${tag}: ${pads.length} pages salted in padding`);
    for (const p of pads) t.true(p.salt!.bits >= 64, p.page);
    t.true(
      pads.some((p) => p.salt!.at.length > 1),
      `${tag}: a page whose salt is gathered from several paddings`,
    );
  }
});

test('the hardened image boots with the default layout output', async (t) => {
  const want = (await bootImage(`${images.default}.elf`)).output;
  t.regex(want, /pad-app: [0-9a-f]+\n/);
  for (const tag of ['seed1', 'seed2']) {
    const b = await bootExpecting(`${images[tag]}.elf`, want);
    t.is(b.failure, null, tag);
  }
});
