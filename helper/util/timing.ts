// Milliseconds per pass: `--timings` of the CLI and the pipeline's figures. Kept apart from
// pipeline.ts so that a command timing its passes does not load the whole pipeline.

/** Runs one pass, adding the milliseconds it took to `times[name]`. */
export async function timed<T>(
  times: Record<string, number>,
  name: string,
  fn: () => Promise<T> | T,
): Promise<T> {
  const t = performance.now();
  try {
    return await fn();
  } finally {
    times[name] = (times[name] ?? 0) + performance.now() - t;
  }
}

/** `--timings`: one line per pass on stderr. */
export function formatTimings(times: Record<string, number>): string {
  return Object.entries(times)
    .map(([k, ms]) => `spacer: timing: ${k.padEnd(42)} ${ms.toFixed(1).padStart(9)} ms`)
    .join('\n');
}
