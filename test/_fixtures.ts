// Test fixtures: small C µlibs compiled with Unikraft's x86_64 flags into per-library objects
// the way Unikraft makes them (compile, `ld -r`, objcopy), and a linker that links them with
// the test platform script exactly as the kvm platform does.
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { buildImage, type BuiltImage, type Layout } from '../helper/pipeline.js';
import {
  type AppSpec,
  type CompiledWorkspace,
  linkCommand,
  objectsFor,
  platformScripts,
} from '../helper/workspace/index.js';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const fixtures = join(root, 'test', 'fixtures');
export const platformLds = join(fixtures, 'platform.lds');
export const libinfoLds = join(fixtures, 'libinfo.lds');
export const cli = join(root, 'helper', 'cli.ts');

export const UK_CFLAGS = [
  '-O2',
  '-fno-PIC',
  '-mno-red-zone',
  '-fno-omit-frame-pointer',
  '-fno-asynchronous-unwind-tables',
  '-fno-reorder-blocks',
  '-fcf-protection=none',
  '-fno-stack-protector',
  '-nostdlib',
  '-nostdinc',
  '-ffreestanding',
];

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `spacer-${tag}-`));
}

/**
 * C source of a µlib: `funcs` functions of some size, a string, data, bss, an init entry and a
 * libinfo record.
 */
export function ulibSource(
  name: string,
  opts: { funcs?: number; extra?: string; calls?: string[] } = {},
): string {
  const n = opts.funcs ?? 3;
  let src = `typedef unsigned long u64;\n`;
  for (const c of opts.calls ?? []) src += `extern u64 ${c}_f0(u64);\n`;
  src += `const char ${name}_msg[] = "hello from ${name}";\n`;
  src += `static const char *${name}_shared(void) { return "a string every µlib has"; }\n`;
  src += `u64 ${name}_counter = 7;\nu64 ${name}_buf[64];\n`;
  // A string literal every µlib has: mergeable (.rodata.str1.1), so ld would merge it across µlibs.
  src += `const char *${name}_greeting(void) { return "a greeting every µlib has"; }\n`;
  for (let i = 0; i < n; i++) {
    src += `__attribute__((noinline)) u64 ${name}_f${i}(u64 x) { u64 r = x;`;
    for (let j = 0; j < 8; j++)
      src += ` r = r * ${31 + i + j} + ${name}_buf[(x + ${j}) & 63] + (u64)${name}_shared()[${j}];`;
    for (const c of opts.calls ?? []) src += ` r += ${c}_f0(r);`;
    src += ` ${name}_counter += r; return r; }\n`;
  }
  src += `static int ${name}_init(void) { ${name}_buf[0] = ${name}_counter; return 0; }\n`;
  src += `__attribute__((section(".uk_inittab20"), used)) static int (*${name}_initp)(void) = ${name}_init;\n`;
  src += `__attribute__((section(".uk_libinfo"), used)) static const char ${name}_info[] = "${name}";\n`;
  src += opts.extra ?? '';
  return src;
}

/**
 * Compiles one µlib from C source into `<dir>/<name>.o` (compile, ld -r, objcopy as Unikraft does).
 */
export async function buildUlib(
  dir: string,
  name: string,
  source: string,
  cflags: string[] = [],
): Promise<string> {
  const src = join(dir, 'src', name, 'main.c');
  mkdirSync(dirname(src), { recursive: true });
  writeFileSync(src, source);
  return compileUlib(dir, name, src, [...UK_CFLAGS, ...cflags], join(dir, 'src', name, 'main.o'));
}

/**
 * Compiles the C file `src` with exactly `cflags` into `<dir>/<name>.o` as Unikraft does: gcc -c
 * (into `o`), gcc -Wl,-r (ld -r), objcopy.
 */
export async function compileUlib(
  dir: string,
  name: string,
  src: string,
  cflags: string[],
  o = join(dir, `${name}.main.o`),
): Promise<string> {
  await execa('gcc', [...cflags, '-c', src, '-o', o]);
  const ldo = join(dir, `${name}.ld.o`);
  await execa('gcc', [
    '-nostdlib',
    '-Wl,-r',
    '-Wl,-d',
    '-Wl,--build-id=none',
    '-no-pie',
    '-nostdinc',
    o,
    '-o',
    ldo,
  ]);
  const out = join(dir, `${name}.o`);
  await execa('objcopy', [ldo, out]);
  return out;
}

/** The µlib `name` of `ulibSource`, compiled into `<dir>/<name>.o`. */
export const testUlib = (dir: string, name: string, opts: Parameters<typeof ulibSource>[1] = {}) =>
  buildUlib(dir, name, ulibSource(name, opts));

/** The boot µlib (`bootSource`), compiled into `<dir>/libboot.o`. */
export const bootUlib = (dir: string) => buildUlib(dir, 'libboot', bootSource());

/** A boot µlib: `.data.boot` header and `.text.boot` entry, like a platform library. */
export function bootSource(): string {
  return (
    `__attribute__((section(".data.boot"), used)) const unsigned int boot_header[4] = {0x1badb002, 0, 0, 0};\n` +
    `__attribute__((section(".text.boot"))) void _start(void) { for (;;) __asm__ volatile("hlt"); }\n` +
    // Like Unikraft's platform, a thread-local variable: the TLS program headers are never empty.
    `__thread int boot_errno;\nint *boot_errno_p(void) { return &boot_errno; }\n`
  );
}

/**
 * Links objects like the kvm platform: gcc with -dT <default script> and -T <extension scripts>.
 */
export async function linkWith(
  script: string,
  objects: string[],
  out: string,
  extra: string[] = [libinfoLds],
): Promise<string> {
  // --emit-relocs, as lib-spacer's glue adds: the post-link rewrite reads the relocations.
  await execa('gcc', [
    '-nostdlib',
    '-no-pie',
    '-Wl,--build-id=none',
    '-Wl,-m,elf_x86_64',
    '-Wl,--entry=_start',
    '-Wl,-z,noexecstack',
    '-Wl,--emit-relocs',
    ...objects,
    `-Wl,-dT,${script}`,
    ...extra.map((e) => `-Wl,-T,${e}`),
    '-o',
    out,
  ]);
  return out;
}

/** objdump's view of a section's code: every direct branch target and RIP-relative address. */
export async function referencedAddresses(path: string, section: string): Promise<bigint[]> {
  const { stdout } = await execa('objdump', ['-d', '--no-show-raw-insn', '-j', section, path], {
    maxBuffer: 1 << 30,
  });
  const out: bigint[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s*[0-9a-f]+:\s+(j\w+|call)\s+([0-9a-f]+) </.exec(line);
    if (m) out.push(BigInt('0x' + m[2]));
    const r = /# ([0-9a-f]+)(?: <|$)/.exec(line);
    if (r && line.includes('(%rip)')) out.push(BigInt('0x' + r[1]));
  }
  return out;
}

/** Runs the spacer CLI from source (through tsx). */
export function spacer(
  args: string[],
  opts: { env?: Record<string, string>; reject?: boolean } = {},
) {
  return execa('node', ['--import=tsx', cli, ...args], {
    reject: opts.reject ?? false,
    env: opts.env,
    cwd: root,
  });
}

/** The arguments of `spacer link` with the test platform script (`extra`: more options). */
export const spacerLinkArgs = (
  map: string,
  image: string,
  out: string,
  objects: string[],
  extra: string[] = [],
) => [
  'link',
  '--map',
  map,
  '--image',
  image,
  '--lds',
  platformLds,
  '--out',
  out,
  ...extra,
  '--',
  ...objects,
];

/**
 * `spacer link` of `objects` into `<dir>/<name>.lds` (and its plan, `.lds.json`) with the test
 * platform script, then the link itself into `<dir>/<name>.dbg`.
 */
export async function spacerLink(dir: string, name: string, objects: string[], map: string) {
  const lds = join(dir, `${name}.lds`);
  const r = await spacer(spacerLinkArgs(map, name, lds, objects));
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return { lds, dbg: await linkWith(lds, objects, join(dir, `${name}.dbg`)) };
}

/**
 * Builds an example app with the helper's pipeline, linked with the example platform's scripts as
 * the Unikraft glue links it; `extraArgs` go to the link command (e.g. --gc-sections).
 */
export function buildExample(
  app: AppSpec,
  compiled: CompiledWorkspace,
  opts: {
    out: string;
    layout: Layout;
    map?: string;
    seed?: string;
    extraArgs?: string[];
    cache?: boolean;
  },
): Promise<BuiltImage> {
  const { extraArgs, ...where } = opts;
  const scripts = platformScripts();
  return buildImage({
    image: app.name,
    objects: objectsFor(app, compiled),
    lds: scripts.defaultLds,
    extraLds: scripts.extraLds,
    ...where,
    linkArgs: (objects, defaultLds, extraLds, out) =>
      linkCommand({ objects, defaultLds, extraLds, out, extraArgs }, out),
  });
}
