// Work a command may finish after its answer is out. Through the link server, make waits for the
// answer of `spacer link` and then runs ld (tens of milliseconds in which the server has nothing
// to do), so what the answer does not depend on — the map's write and its fsync, cache entries,
// the cache's trim — runs then, before the server takes its next request: requests still run
// one at a time, each seeing everything the one before it wrote. A command run by Node on its
// own (the CLI, the tests) does that work at once, where it is asked for, as it always did.
//
// A job that fails is kept by its key: the command that depends on it asks (`failedLater`) and
// fails with its line, as it would have failed had the work run inline (the link step's finish
// asks for its link's map write).

type Job = { key: string; run: () => void };

/** Undefined: not deferring (the work runs at once). */
let jobs: Job[] | undefined;
const failures = new Map<string, string>();

/** From now on, `afterReply` work waits for `runAfterReply` (the link server, per request). */
export function deferAfterReply(): void {
  jobs ??= [];
}

/** Whether work given to `afterReply` now waits for the answer. */
export function deferring(): boolean {
  return jobs !== undefined;
}

/**
 * Runs `run` once this command's answer is out (through the link server), else now. `key` names
 * what it does for `failedLater` (a later failure of the same key replaces the first).
 */
export function afterReply(key: string, run: () => void): void {
  if (jobs) jobs.push({ key, run });
  else run();
}

/**
 * Runs the work left by the last request, in the order it was given; a job that throws is kept
 * by its key (its error line), logged with `log`, and the rest still run.
 */
export function runAfterReply(log: (line: string) => void): void {
  while (jobs?.length) {
    const j = jobs.shift()!;
    try {
      j.run();
      failures.delete(j.key);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      failures.set(j.key, msg);
      log(`after the reply: ${j.key}: ${msg}`);
    }
  }
}

/** The error line of the last deferred work under `key` if it failed (and forgets it). */
export function failedLater(key: string): string | undefined {
  const f = failures.get(key);
  failures.delete(key);
  return f;
}
