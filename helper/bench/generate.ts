// The FaaS workload of the benchmark: N small function apps generated deterministically from a
// seed. Each app is one C µlib (`app<name>.o`) with generated functions of varied size (a few
// hundred bytes to ~8 KiB of code), generated rodata strings and tables, and calls into the
// example workspace's shared µlibs. Like the example apps it prints a deterministic result and
// exits through isa-debug-exit (main returns 0 → ukboot → ukplat_terminate).
//
// The FaaS case of the issue: every generated app links the same µlibs as the example FaaS apps
// (kvmplat, nolibc, ukalloc, ukboot, ukcompress, ukconsole, ukhash, uklibid, ukmath, uksort) and
// differs only in its own code. The non-FaaS example apps (a nolibc variant, one more µlib, fewer
// µlibs) are part of the workspace too. The AppSpec returned is built exactly as loadApps() builds
// one (same link order, per-app ukboot/uklibid), so compileWorkspace and objectsFor take generated
// and example apps alike.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type AppSpec, appSpecOf, loadUlibsConfig } from '../workspace/index.js';

/**
 * µlibs every generated app links (besides the platform), alphabetical like apps.json: the FaaS
 * set.
 */
export const FAAS_LIBS = [
  'nolibc',
  'ukalloc',
  'ukboot',
  'ukcompress',
  'ukconsole',
  'ukhash',
  'uklibid',
  'ukmath',
  'uksort',
] as const;

/** A small seeded PRNG (mulberry32): the same seed gives the same workload on every machine. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface GeneratedApp {
  name: string;
  libs: string[];
  variants: Record<string, string>;
  /** Approximate generated code bytes (statements × ~16 bytes), per function. */
  functionSizes: number[];
  source: string;
}

const WORDS = [
  'unikernel',
  'page',
  'library',
  'kernel',
  'memory',
  'share',
  'merge',
  'layout',
  'image',
  'linker',
  'section',
  'dedup',
  'qemu',
  'function',
  'request',
  'tenant',
  'cold',
  'start',
  'warm',
  'invoke',
  'event',
  'queue',
  'cache',
  'token',
  'payload',
  'route',
  'stream',
  'batch',
  'shard',
  'replica',
  'blob',
  'index',
];

const hex32 = (r: () => number) =>
  '0x' +
  Math.floor(r() * 0x100000000)
    .toString(16)
    .padStart(8, '0') +
  'u';
const int = (r: () => number, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

function statement(r: () => number, tab: string, tabMask: number): string {
  switch (int(r, 0, 6)) {
    case 0:
      return `x = x * ${hex32(r)} + ${hex32(r)};`;
    case 1:
      return `x ^= x >> ${int(r, 1, 27)};`;
    case 2:
      return `y += ${tab}[(x >> ${int(r, 0, 20)}) & ${tabMask}];`;
    case 3: {
      const s = int(r, 1, 31);
      return `x = (x << ${s}) | (x >> ${32 - s});`;
    }
    case 4:
      return `if (x & ${hex32(r)}) y ^= ${hex32(r)}; else y += x;`;
    case 5:
      return `y = (y ^ x) * ${hex32(r)};`;
    default:
      return `x += y ^ ${hex32(r)};`;
  }
}

/** What the pieces of one generated app share: its PRNG, its name and its µlibs. */
interface AppGen {
  r: () => number;
  name: string;
  has: (lib: string) => boolean;
}

/** The rodata of one app, as its functions and main refer to it. */
interface Rodata {
  nStrings: number;
  nTables: number;
  /** Entries per table (each a power of two: an index is masked with size - 1). */
  tabSizes: number[];
}

/** The comment and the includes: one header per µlib the app calls into. */
function headerLines(g: AppGen, seed: number): string[] {
  const L = [`/* ${g.name}: a generated FaaS function (lib-spacer benchmark, seed ${seed}). */`];
  L.push('#include <stdio.h>', '#include <stdlib.h>', '#include <string.h>');
  if (g.has('ukcompress')) L.push('#include <uk/compress.h>');
  if (g.has('ukhash')) L.push('#include <uk/hash.h>');
  if (g.has('ukmath')) L.push('#include <uk/math.h>');
  if (g.has('ukrand')) L.push('#include <uk/rand.h>');
  if (g.has('uksort')) L.push('#include <uk/sort.h>');
  L.push('');
  return L;
}

/** Read-only data (strings and tables of varied size): own rodata pages for every app. */
function rodataLines(g: AppGen, L: string[]): Rodata {
  const { r } = g;
  const nStrings = int(r, 2, 10);
  for (let i = 0; i < nStrings; i++) {
    const words = Array.from({ length: int(r, 3, 24) }, () => WORDS[int(r, 0, WORDS.length - 1)]);
    L.push(`static const char msg${i}[] = "${g.name} ${words.join(' ')}";`);
  }
  const nTables = int(r, 1, 4);
  const tabSizes: number[] = [];
  for (let i = 0; i < nTables; i++) {
    const size = 1 << int(r, 4, 9); // 16 .. 512 entries (64 B .. 2 KiB)
    tabSizes.push(size);
    const vals = Array.from({ length: size }, () => hex32(r));
    L.push(`static const uint32_t tab${i}[${size}] = {`);
    for (let j = 0; j < vals.length; j += 6) L.push('\t' + vals.slice(j, j + 6).join(', ') + ',');
    L.push('};');
  }
  L.push('');
  return { nStrings, nTables, tabSizes };
}

/**
 * The step functions: own text of varied size, code size log-uniform between ~300 B and ~8 KiB.
 * Returns each one's approximate size.
 */
function functionLines(g: AppGen, rodata: Rodata, L: string[]): number[] {
  const { r } = g;
  const nFuncs = int(r, 1, 6);
  const functionSizes: number[] = [];
  for (let f = 0; f < nFuncs; f++) {
    const bytes = Math.round(Math.exp(Math.log(300) + r() * (Math.log(8192) - Math.log(300))));
    functionSizes.push(bytes);
    const t = int(r, 0, rodata.nTables - 1);
    L.push(
      `static __attribute__((noinline)) uint32_t step${f}(uint32_t x)`,
      '{',
      `\tuint32_t y = ${hex32(r)};`,
      '',
    );
    for (let s = 0; s < Math.max(4, Math.round(bytes / 16)); s++)
      L.push('\t' + statement(r, `tab${t}`, rodata.tabSizes[t] - 1));
    L.push('\treturn x ^ y;', '}', '');
  }
  return functionSizes;
}

/** main's call into ukhash: a SHA-256 it prints and a CRC-32 it folds in. */
function hashLines(g: AppGen, rodata: Rodata): string[] {
  const m = int(g.r, 0, rodata.nStrings - 1);
  return [
    '\t{',
    '\t\tuint8_t d[UK_SHA256_DIGEST_LEN];',
    '\t\tchar hex[2 * UK_SHA256_DIGEST_LEN + 1];',
    '',
    `\t\tuk_sha256(msg${m}, strlen(msg${m}), d);`,
    '\t\tprintf("sha256: %s\\n", uk_hex(hex, d, sizeof(d)));',
    `\t\tacc ^= uk_crc32(0, msg${m}, strlen(msg${m}));`,
    '\t}',
  ];
}

/** main's call into uksort (and ukalloc): a heap array of generated values, sorted. */
function sortLines(g: AppGen): string[] {
  const n = int(g.r, 16, 400);
  return [
    '\t{',
    `\t\tuint32_t *a = malloc(${n} * sizeof(uint32_t));`,
    '\t\tuint32_t v = acc;',
    '',
    '\t\tif (!a)',
    '\t\t\treturn 1;',
    `\t\tfor (i = 0; i < ${n}; i++) {`,
    '\t\t\tv = v * 1664525u + 1013904223u;',
    '\t\t\ta[i] = v >> 8;',
    '\t\t}',
    `\t\tuk_qsort(a, ${n}, sizeof(uint32_t), uk_cmp_u32);`,
    `\t\tacc += a[${n >> 1}] ^ (uint32_t)uk_is_sorted(a, ${n}, sizeof(uint32_t), uk_cmp_u32);`,
    '\t\tfree(a);',
    '\t}',
  ];
}

/** main's call into ukcompress: one of the strings, LZSS-compressed. */
function compressLines(g: AppGen, rodata: Rodata): string[] {
  const m = int(g.r, 0, rodata.nStrings - 1);
  return [
    '\t{',
    `\t\tuint8_t out[UK_LZSS_BOUND(sizeof(msg${m}))];`,
    `\t\tlong c = uk_lzss_compress((const uint8_t *)msg${m}, sizeof(msg${m}), out, sizeof(out));`,
    '',
    '\t\tprintf("lzss: %ld bytes\\n", c);',
    '\t\tacc += (uint32_t)c;',
    '\t}',
  ];
}

/**
 * main: the generated chain, then the µlib calls, then the result. The calls draw from the PRNG
 * in this order (hash, sort, math, compress, nolibc), which the generated text depends on.
 */
function mainLines(
  g: AppGen,
  rodata: Rodata,
  nFuncs: number,
  variants: Record<string, string>,
): string[] {
  const { r, name } = g;
  const { nStrings } = rodata;
  const L = [
    'int main(int argc __unused, char *argv[] __unused)',
    '{',
    '\tuint32_t acc = input;',
    '\tsize_t i;',
    '',
  ];
  L.push(`\tprintf("${name}: start\\n");`);
  for (let f = 0; f < nFuncs; f++) L.push(`\tacc = step${f}(acc);`);
  L.push(`\tfor (i = 0; i < ${nStrings}; i++)`, `\t\tacc = acc * 31u + (uint32_t)i;`);
  L.push(`\tacc += (uint32_t)strlen(msg${int(r, 0, nStrings - 1)});`);
  L.push(`\tprintf("%s\\n", msg${int(r, 0, nStrings - 1)});`);
  if (g.has('ukhash')) L.push(...hashLines(g, rodata));
  if (g.has('uksort')) L.push(...sortLines(g));
  if (g.has('ukmath')) {
    L.push(`\tacc += (uint32_t)uk_powmod(acc | 1u, ${int(r, 3, 65537)}u, 1000000007u);`);
    L.push('\tacc += (uint32_t)uk_is_prime(acc | 1u) + (uint32_t)uk_gcd(acc, 360360u);');
  }
  if (g.has('ukcompress')) L.push(...compressLines(g, rodata));
  if (g.has('ukrand')) L.push('\tuk_rand_seed(acc);', '\tacc ^= uk_rand_u32();');
  if (variants.nolibc === 'full')
    L.push(`\tacc += (uint32_t)strtoul("${int(r, 1, 999999)}", NULL, 10);`);
  L.push(
    `\tprintf("${name}: result %08x\\n", (unsigned int)acc);`,
    `\tprintf("${name}: done\\n");`,
    '\treturn 0;',
    '}',
    '',
  );
  return L;
}

/** Words that make the generated apps' names differ in length, as real functions' names do. */
const NAME_WORDS = ['a', 'io', 'sum', 'json', 'resize', 'thumbnail', 'wordcount', 'checksum-crc'];

/**
 * The name of generated app `index`: unique, and of one of eight lengths. Unikraft's kvm platform
 * compiles the image's name and its length into its code (the example's does too), so apps whose
 * names differ in length have platforms that differ in code, as a real FaaS set's do.
 */
function appName(seed: number, index: number): string {
  const word = NAME_WORDS[(index * 5 + seed) % NAME_WORDS.length];
  return `faas-${word}-${String(index + 1).padStart(4, '0')}`;
}

/**
 * C source of one generated app (deterministic in `seed` and `index`). The pieces are generated
 * in file order from one PRNG: header, input, rodata, functions, main.
 */
export function generateApp(seed: number, index: number): GeneratedApp {
  const r = prng((seed * 0x9e3779b1 + index * 0x85ebca6b + 1) >>> 0);
  const name = appName(seed, index);
  const libs: string[] = [...FAAS_LIBS];
  const variants: Record<string, string> = {};
  const g: AppGen = { r, name, has: (l: string) => libs.includes(l) };
  const L = headerLines(g, seed);
  // The input is read at run time, so the compiler cannot fold the generated arithmetic away.
  L.push(`static volatile uint32_t input = ${hex32(r)};`, '');
  const rodata = rodataLines(g, L);
  const functionSizes = functionLines(g, rodata, L);
  L.push(...mainLines(g, rodata, functionSizes.length, variants));
  return { name, libs, variants, functionSizes, source: L.join('\n') };
}

/**
 * An AppSpec for a generated app whose sources are in `dir`, built exactly as loadApps() builds
 * one.
 */
export function appSpec(g: Pick<GeneratedApp, 'name' | 'libs' | 'variants'>, dir: string): AppSpec {
  return appSpecOf(loadUlibsConfig(), g, dir, false);
}

/**
 * Writes N generated apps under `root/<name>/main.c` (a file is rewritten only when its content
 * changes, so compileWorkspace finds unchanged apps up to date) and returns their AppSpecs.
 */
export function generateApps(
  n: number,
  seed: number,
  root: string,
): { apps: AppSpec[]; generated: GeneratedApp[] } {
  root = resolve(root);
  const apps: AppSpec[] = [],
    generated: GeneratedApp[] = [];
  for (let i = 0; i < n; i++) {
    const g = generateApp(seed, i);
    const dir = join(root, g.name);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'main.c');
    if (!existsSync(file) || readFileSync(file, 'utf8') !== g.source) writeFileSync(file, g.source);
    generated.push(g);
    apps.push(appSpec(g, dir));
  }
  return { apps, generated };
}
