#!/usr/bin/env node
// The `spacer` command line. Every user-caused failure prints one line, `spacer: <file>: <what>;
// <fix>`, and exits 1; anything else is a bug and prints its stack.
//
// Each command lives in helper/commands/ and imports its modules when it runs (the bundle,
// helper/dist/spacer.mjs, keeps them in chunks of their own): `spacer --help`, `map show` or
// `report` do not load iced-x86's WebAssembly, and `link` loads it only when a new variant's table
// has to be measured.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { compactCommand, finishCommand, linkCommand } from './commands/build.js';
import {
  auditCommand,
  demoCommand,
  planCommand,
  reportCommand,
  verifyCommand,
} from './commands/inspect.js';
import { cacheCommand } from './commands/cache.js';
import { mapCommand } from './commands/map.js';
import { isSpacerError } from './errors.js';

const USAGE =
  '$0 <command> [options]\n\nLays out Unikraft µlibs at page-aligned addresses shared by every ' +
  'image of a workspace, so KSM can merge their pages.';

/** Whether this run prints the help text (the only run whose help needs wrapping). */
function helpWanted(argv: string[]): boolean {
  return !argv.length || argv.some((a) => a === '--help' || a === '-h' || a === 'help');
}

/** yargs' internals this file reaches into (not in its types). */
type Internals = { getInternalMethods(): { getUsageInstance(): { cacheHelpMessage(): void } } };

async function main(argv: string[]): Promise<void> {
  const cli = yargs(argv)
    .scriptName('spacer')
    .parserConfiguration({ 'populate--': true })
    .usage(USAGE)
    .command(linkCommand) // before ld: objects → map → script
    .command(finishCommand) // after ld, on the .dbg: check → rewrite → verify → record → harden
    .command(compactCommand) // after strip: pack the file, merge section headers
    .command(planCommand)
    .command(verifyCommand)
    .command(auditCommand)
    .command(demoCommand)
    .command(reportCommand)
    .command(mapCommand)
    .command(cacheCommand)
    .demandCommand(1, 'name a command; see --help')
    .strict()
    .help()
    // yargs renders the help text after every command; unwrapped it costs a tenth as much.
    .wrap(helpWanted(argv) ? Math.min(80, process.stdout.columns || 80) : null)
    .version(false)
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`${y.help() && ''}spacer: ${msg}; see 'spacer --help'\n`);
      process.exit(2);
    });
  // yargs also renders the whole help text once a command's handler starts, in case it fails:
  // 30 to 50 ms of every link step's processes. Ours fail with one line and never show it.
  if (!helpWanted(argv))
    (cli as unknown as Internals).getInternalMethods().getUsageInstance().cacheHelpMessage =
      () => {};
  await cli.parseAsync();
}

main(hideBin(process.argv)).catch((e: unknown) => {
  if (isSpacerError(e)) {
    process.stderr.write(`spacer: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  throw e;
});
