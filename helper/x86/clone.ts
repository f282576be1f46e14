// Copies of small leaf functions in a µlib's table (ASLR mode). A call out of the µlib normally
// goes through its table entry, `jmp [P]`: an indirect jump, cheap on hardware but a lookup on
// every call under an emulator such as qemu TCG. A callee that is a leaf whose bytes hold no
// address at all (no relocation, no RIP-relative operand, every branch inside itself) runs the
// same wherever its bytes are, so the caller can call a copy of it placed right after its own
// table: a direct call again, and the copy is the same in every image that links the same callee.
// The copies use the free tail of the table's last page, which is padding otherwise.
import { Decoder, DecoderOptions, FlowControl, Instruction, OpKind } from './iced.js';
import { hex } from '../util/units.js';

/** Longest function copied (bytes): the copies share the tail of one page. */
export const CLONE_MAX = 512;
/** Copies start on 16 bytes, as the compiler aligns functions. */
export const CLONE_ALIGN = 16;

/**
 * Why the function `bytes` (loaded at `ip`) would not run the same at another address, or
 * undefined when a copy anywhere is the same function. `relocAt` are the addresses of the
 * relocated fields of the section holding it.
 */
export function cloneRefusal(
  bytes: Uint8Array,
  ip: bigint,
  relocAt: readonly bigint[],
): string | undefined {
  if (!bytes.length) return 'it is empty';
  if (bytes.length > CLONE_MAX) return `it is longer than ${CLONE_MAX} bytes`;
  const end = ip + BigInt(bytes.length);
  if (relocAt.some((r) => r >= ip && r < end)) return 'it holds an address (a relocation)';
  const d = new Decoder(64, bytes, DecoderOptions.None);
  const i = new Instruction();
  try {
    d.ip = ip;
    let last = FlowControl.Next;
    while (d.canDecode) {
      d.decodeOut(i);
      const at = hex(i.ip);
      if (i.isInvalid || i.nextIP > end) return `the bytes at ${at} are no whole instruction`;
      for (let k = 0; k < i.opCount; k++)
        if (i.opKind(k) === OpKind.Memory && i.isIpRelMemoryOperand)
          return `the instruction at ${at} is RIP-relative`;
      const flow = i.flowControl;
      if (flow === FlowControl.UnconditionalBranch || flow === FlowControl.ConditionalBranch) {
        if (i.opKind(0) !== OpKind.NearBranch64) return `the branch at ${at} is not relative`;
        const t = i.nearBranchTarget;
        if (t < ip || t >= end) return `the branch at ${at} leaves the function`;
      } else if (flow !== FlowControl.Next && flow !== FlowControl.Return) {
        return `the instruction at ${at} calls or branches indirectly`;
      }
      last = flow;
    }
    // It must not run off its end into whatever follows it.
    if (last !== FlowControl.Return && last !== FlowControl.UnconditionalBranch)
      return 'it does not end with a return or a jump';
    return undefined;
  } finally {
    i.free();
    d.free();
  }
}

/**
 * Where copies of these sizes go after a table that ends at `tableEnd`: one after the other, each
 * on 16 bytes. The one layout `spacer link` sizes, the rewrite writes and `spacer verify` expects.
 */
export function cloneLayout(
  tableEnd: bigint,
  sizes: readonly number[],
): { at: bigint[]; end: bigint } {
  const a = BigInt(CLONE_ALIGN),
    up = (v: bigint) => ((v + a - 1n) / a) * a;
  const at: bigint[] = [];
  let next = up(tableEnd);
  for (const n of sizes) {
    at.push(next);
    next = up(next + BigInt(n));
  }
  return { at, end: next };
}
