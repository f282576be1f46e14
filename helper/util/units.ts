// Sizes and number formats every part of the helper shares: the page (what KSM merges and what
// the layout aligns to), its BigInt twin for ELF addresses, and hex for messages.

/** The x86-64 page: the unit of sharing and of alignment. */
export const PAGE = 0x1000;
/** PAGE as a BigInt, for ELF addresses and offsets. */
export const PAGE_N = 0x1000n;

/** `0x…` for messages and names. */
export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}

/** Pages that [lo, hi) touches. */
export function pagesOf(lo: number, hi: number): number {
  return hi > lo ? Math.ceil(hi / PAGE) - Math.floor(lo / PAGE) : 0;
}

/** `v` rounded up to a multiple of `a` (a power of two or any positive step). */
export function alignUp(v: number, a: number): number {
  return a > 1 ? Math.ceil(v / a) * a : v;
}

/** `v` rounded up to a multiple of `a`, in BigInt. */
export function alignUpN(v: bigint, a: bigint): bigint {
  return a > 1n ? ((v + a - 1n) / a) * a : v;
}
