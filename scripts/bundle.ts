// The `spacer` command as make runs it: helper/cli.ts and everything it imports in one entry file,
// helper/dist/spacer.mjs, so Node reads a handful of files at start-up instead of hundreds. Each
// command's modules are imported by cli.ts when the command runs (code splitting puts them in
// helper/dist/chunks/): `spacer --help` or `map show` never load the x86 decoder. iced-x86 stays
// a package (its WebAssembly is read from its own folder). Run by `npm run build`, after tsc. It
// also writes the bundle's code id (helper/dist/code-id), the key of every cache entry, and builds
// the link server's client (helper/dist/spacer-client).
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CODE_ID_FILE, codeIdOf } from '../helper/cache/code-id.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'helper', 'dist');

// Chunk names carry a content hash: the ones of an older build are removed, not left to pile up.
rmSync(join(dist, 'chunks'), { recursive: true, force: true });
await build({
  entryPoints: { spacer: join(root, 'helper', 'cli.ts') },
  outdir: dist,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['iced-x86'],
  // Bundled CommonJS packages (execa's cross-spawn) call require(): the ES module gets one.
  banner: {
    js: "import { createRequire as __spacerRequire } from 'node:module'; const require = __spacerRequire(import.meta.url);",
  },
  legalComments: 'none',
  logLevel: 'warning',
});

// The bundle's code id (rewrite/cache.ts keys every cache entry with it), computed once here
// instead of by every process that starts.
writeFileSync(join(dist, CODE_ID_FILE), `${codeIdOf(dist, '.mjs')}\n`);

// The client make runs instead of Node for the link step (helper/server/client.c): built with the
// host's C compiler (CC, else cc); without one, Linker.uk runs the helper directly. Static where
// the C library allows it: a link step starts it three times, and a static one starts about a
// millisecond sooner (no dynamic loader); else dynamic.
const cc = process.env.CC || 'cc';
const client = join(dist, 'spacer-client');
rmSync(client, { force: true });
const clientArgs = ['-O2', '-Wall', '-o', client, join(root, 'helper', 'server', 'client.c')];
let r = spawnSync(cc, ['-static', ...clientArgs], { stdio: 'ignore' });
if (r.status !== 0) r = spawnSync(cc, clientArgs, { stdio: 'inherit' });
if (r.status !== 0)
  process.stderr.write(
    `bundle: ${cc} could not build helper/dist/spacer-client: make will run the helper directly (one Node start per command)\n`,
  );
