// The command-line reading that `npm run bench` and `npm run fuzz` share: `--flag value` or
// `--flag=value`, --help/-h, whole numbers with a minimum, and one error line ending in
// '; see --help' for anything else.

export interface FlagReader {
  /** Prints `<tool>: <msg>; see --help` and exits with the tool's code. */
  fail(msg: string): never;
  /** The flag's value as a whole number ≥ min. */
  int(min: number): number;
  /** The flag's value; missing, the line is `<flag> needs <what>`. */
  str(what: string): string;
  /** The arguments after the flag up to the next `--…` (consumed). */
  rest(): string[];
}

export interface ParseOptions {
  tool: string;
  exitCode: number;
  /**
   * Refuse whole numbers beyond 2^53 (fuzz); the bench never did and takes them as they come
   * (runBench then refuses a bad --apps itself).
   */
  safeIntegers?: boolean;
}

/** What each flag does with its value (read through the FlagReader). */
export type Flags = Record<string, (r: FlagReader) => void>;

/**
 * Walks `argv` and runs each flag's handler; a flag not in `flags` is an error line. Returns
 * 'help' at --help or -h.
 */
export function parseFlags(argv: string[], o: ParseOptions, flags: Flags): 'help' | undefined {
  const fail = (msg: string): never => {
    process.stderr.write(`${o.tool}: ${msg}; see --help\n`);
    process.exit(o.exitCode);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] =
      a.startsWith('--') && a.includes('=')
        ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]
        : [a, undefined];
    const val = () => inline ?? argv[++i];
    if (flag === '--help' || flag === '-h') return 'help';
    const reader: FlagReader = {
      fail,
      int: (min) => {
        const v = val();
        if (
          v === undefined ||
          !/^\d+$/.test(v) ||
          (o.safeIntegers && !Number.isSafeInteger(Number(v))) ||
          Number(v) < min
        )
          fail(
            `${flag} needs a whole number of at least ${min}${v === undefined ? '' : ` (got ${JSON.stringify(v)})`}`,
          );
        return Number(v);
      },
      str: (what) => val() ?? fail(`${flag} needs ${what}`),
      rest: () => {
        const out: string[] = [];
        while (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out.push(argv[++i]);
        return out;
      },
    };
    if (!Object.hasOwn(flags, flag)) fail(`unknown argument ${JSON.stringify(a)}`);
    flags[flag](reader);
  }
  return undefined;
}
