// One error type for everything a user can cause: the CLI prints its message as a single line
// ("spacer: <file>: <what is wrong>; <how to fix>") and exits 1, with no stack trace.
export class SpacerError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'SpacerError';
  }
}

export function isSpacerError(e: unknown): e is SpacerError {
  return e instanceof SpacerError;
}
