// What every command module shares: the parsed-options type, the stderr logger and the options
// several commands take. Each command imports its working modules when it runs (the bundle keeps
// them in chunks of their own), so `spacer --help` loads none of them.
import type { Argv, CommandModule } from 'yargs';

/** Parsed options, as the handlers read them (yargs' own types are loose here). */
export interface Args {
  [k: string]: any;
}

/** One `spacer` command: its usage, description, options and handler. */
export type Command = CommandModule<object, Args>;

export const log = (line: string) => process.stderr.write(line + '\n');

export const TIMINGS = {
  type: 'boolean',
  default: false,
  describe: 'print the milliseconds each pass took to stderr',
} as const;

export function mapOption<T>(y: Argv<T>) {
  return y.option('map', {
    type: 'string',
    describe:
      'workspace map (default: $SPACER_MAP, else .spacer/map.json in this lib-spacer checkout)',
  });
}

/** The image positional most commands take. */
export function imageArg<T>(y: Argv<T>, describe: string) {
  return y.positional('image', { type: 'string', demandOption: true, describe });
}

/** Positional file names plus whatever follows `--`, as strings. */
export const fileList = (a: Args, key: string): string[] =>
  [...(a[key] ?? []), ...(a['--'] ?? [])].map(String);
