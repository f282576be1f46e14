// The `spacer` command line, run once: by the CLI (cli.ts) and by the link server for each of its
// requests (server/serve.ts). Every user-caused failure prints one line, `spacer: <file>: <what>;
// <fix>`, and exits 1 (2 for a usage error); anything else is a bug and prints its stack.
import yargs from 'yargs';
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
import { SpacerError, isSpacerError } from './errors.js';
import { serverCommand } from './commands/server.js';
import { resetCacheUse } from './cache/store.js';
import { reuseBuffers } from './util/buffers.js';
import type { Command } from './commands/common.js';

const USAGE =
  '$0 <command> [options]\n\nLays out Unikraft µlibs at page-aligned addresses shared by every ' +
  'image of a workspace, so KSM can merge their pages.';

/** Whether this run prints the help text (the only run whose help needs wrapping). */
function helpWanted(argv: string[]): boolean {
  return !argv.length || argv.some((a) => a === '--help' || a === '-h' || a === 'help');
}

/** yargs' internals this file reaches into (not in its types). */
type Internals = { getInternalMethods(): { getUsageInstance(): { cacheHelpMessage(): void } } };

/**
 * The link step's command lines parsed before, by their text, with what yargs made of them. Make
 * relinks an image with the same command lines, and through the link server yargs' parse is two
 * milliseconds of each (a tenth of a warm relink's helper time). Parsing reads nothing but the
 * command line (no option takes a default from the environment or the folder), so a command line
 * seen before runs its handler on a copy of the same options.
 */
type Parsed = Parameters<Command['handler']>[0];
const parsedBefore = new Map<string, { handler: Command['handler']; args: Parsed }>();
const PARSED_MAX = 64;
/** How many command lines ran on options parsed before (tests read it). */
export const parsedAgain = { runs: 0 };

/** `c`, remembering the options of each command line that reaches its handler. */
function remembered(c: Command, key: string): Command {
  const handler = c.handler;
  return {
    ...c,
    handler: (a: Parsed) => {
      if (parsedBefore.size >= PARSED_MAX) parsedBefore.clear();
      parsedBefore.set(key, { handler, args: structuredClone(a) });
      return handler(a);
    },
  };
}

async function parse(argv: string[]): Promise<void> {
  const key = argv.join('\0');
  const seen = parsedBefore.get(key);
  if (seen) {
    parsedAgain.runs++;
    await seen.handler(structuredClone(seen.args));
    return;
  }
  const cli = yargs(argv)
    .scriptName('spacer')
    .parserConfiguration({ 'populate--': true })
    .usage(USAGE)
    .command(remembered(linkCommand, key)) // before ld: objects → map → script
    .command(remembered(finishCommand, key)) // after ld: check → rewrite → verify → harden → record
    .command(remembered(compactCommand, key)) // after strip: pack the file, merge section headers
    .command(planCommand)
    .command(verifyCommand)
    .command(auditCommand)
    .command(demoCommand)
    .command(reportCommand)
    .command(mapCommand)
    .command(cacheCommand)
    .command(serverCommand)
    .demandCommand(1, 'name a command; see --help')
    .strict()
    .help()
    // yargs renders the help text after every command; unwrapped it costs a tenth as much.
    .wrap(helpWanted(argv) ? Math.min(80, process.stdout.columns || 80) : null)
    .version(false)
    // Never process.exit(): the link server runs many command lines in one process.
    .exitProcess(false)
    .fail((msg, err, y) => {
      if (err) throw err;
      throw new SpacerError(`${y.help() && ''}${msg}; see 'spacer --help'`, 2);
    });
  // yargs also renders the whole help text once a command's handler starts, in case it fails:
  // 30 to 50 ms of every link step's processes. Ours fail with one line and never show it.
  if (!helpWanted(argv))
    (cli as unknown as Internals).getInternalMethods().getUsageInstance().cacheHelpMessage =
      () => {};
  await cli.parseAsync();
}

/**
 * Runs one command line (without `node` and the script) and gives its exit status: what the CLI
 * does, and what the link server (server/serve.ts) does for each request. A user's error is one
 * line on stderr; anything else is a bug and is thrown.
 */
export async function runCli(argv: string[]): Promise<number> {
  process.exitCode = undefined;
  resetCacheUse();
  reuseBuffers();
  try {
    await parse(argv);
  } catch (e: unknown) {
    if (!isSpacerError(e)) throw e;
    process.stderr.write(`spacer: ${e.message}\n`);
    return e.exitCode;
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = undefined;
  return code;
}
