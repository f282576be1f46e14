#!/usr/bin/env node
// The `spacer` command line. Every user-caused failure prints one line, `spacer: <file>: <what>;
// <fix>`, and exits 1; anything else is a bug and prints its stack.
//
// Each command lives in helper/commands/ and imports its modules when it runs (the bundle,
// helper/dist/spacer.mjs, keeps them in chunks of their own): `spacer --help`, `map show` or
// `report` do not load iced-x86's WebAssembly, and `link` loads it only when a new variant's table
// has to be measured.
import { hideBin } from 'yargs/helpers';
import { runCli } from './run.js';

runCli(hideBin(process.argv)).then((code) => {
  process.exitCode = code;
});
