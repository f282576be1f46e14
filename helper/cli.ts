#!/usr/bin/env node
// The `spacer` command line. Every user-caused failure prints one line, `spacer: <file>: <what>;
// <fix>`, and exits 1; anything else is a bug and prints its stack.
//
// Each command lives in helper/commands/ and imports its modules when it runs (the bundle,
// helper/dist/spacer.mjs, keeps them in chunks of their own): `spacer --help`, `map show` or
// `report` do not load iced-x86's WebAssembly, and `link` loads it only when a new variant's table
// has to be measured.
import { packageRoot } from './paths.js';

// yargs, on every command line, looks for a package.json from the folder the process was in when
// yargs loaded (to guess a version we turn off). In a build folder it finds none, walks up to `/`
// and builds an assertion error on the way: half a millisecond for each of the link server's
// requests. Loaded from our own folder, it finds ours at once.
const cwd = process.cwd();
process.chdir(packageRoot());
const { runCli } = await import('./run.js');
process.chdir(cwd);

runCli(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
