// Small helpers the benchmark's steps share: rounding, medians, durations and progress lines
// (counts and ETA on stderr).

export const MiB = 1 << 20;

export const median = (xs: number[]) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
export const r3 = (x: number) => Math.round(x * 1000) / 1000;
export const r1 = (x: number) => Math.round(x * 10) / 10;
export const fmtDur = (ms: number) =>
  ms >= 60_000
    ? `${Math.floor(ms / 60_000)}m${String(Math.round((ms % 60_000) / 1000)).padStart(2, '0')}s`
    : `${(ms / 1000).toFixed(1)}s`;

export class Progress {
  private done = 0;
  private last = 0;
  private readonly t0 = Date.now();
  constructor(
    private readonly what: string,
    private readonly total: number,
    private readonly log: (l: string) => void,
  ) {}
  tick(n = 1): void {
    this.done += n;
    const now = Date.now();
    if (now - this.last < 3000 && this.done < this.total) return;
    this.last = now;
    const el = now - this.t0,
      rate = this.done / Math.max(el, 1);
    const eta = this.done ? (this.total - this.done) / rate : NaN;
    this.log(
      `bench: ${this.what} ${this.done}/${this.total} (${Math.round((100 * this.done) / this.total)} %), ${fmtDur(el)} elapsed` +
        (this.done < this.total && Number.isFinite(eta) ? `, ETA ${fmtDur(eta)}` : ''),
    );
  }
}

/** Records the wall time since `t0` as `durations[key]` (ms) and returns it. */
export function lap(durations: Record<string, number>, key: string, t0: number): number {
  return (durations[key] = Math.round(Date.now() - t0));
}
