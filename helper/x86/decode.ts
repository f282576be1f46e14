// x86-64 decoding for the rewriter: iced-x86 decodes, and every instruction is copied into a plain
// record at once (iced objects live in WebAssembly memory and must be freed), so the rest of the
// rewriter never holds an iced object longer than one call.
import {
  Code,
  Decoder,
  DecoderOptions,
  FlowControl,
  Instruction,
  OpKind,
  Register,
} from './iced.js';

export { Code, FlowControl, Register };

/** One decoded instruction, as plain data. Offsets are from the instruction's first byte. */
export interface Insn {
  ip: bigint;
  len: number;
  code: Code;
  flow: FlowControl;
  /** Not a valid instruction: the bytes [ip, ip+len) are skipped (padding, data in code). */
  invalid: boolean;
  /** A relative near branch (call/jmp/jcc rel8/rel32): its displacement is `imm`. */
  nearBranch: boolean;
  /** Target of a relative near branch. */
  target: bigint;
  /**
   * Has a memory operand; `ipRel` if it is RIP-relative, then `memAddr` is its absolute address.
   */
  hasMem: boolean;
  ipRel: boolean;
  memAddr: bigint;
  memBase: Register;
  memIndex: Register;
  /**
   * Displacement and immediate fields as encoded (size 0: none). A rel branch's displacement is
   * imm.
   */
  dispOff: number;
  dispSize: number;
  immOff: number;
  immSize: number;
  imm2Off: number;
  imm2Size: number;
  /** op0 register (for lea/mov: the destination). */
  op0Register: Register;
}

/** What every instruction needs (its extent, whether it branches and where): no operand details. */
function light(i: Instruction): Insn {
  const nearBranch = !i.isInvalid && (i.isCallNear || i.isJmpShortOrNear || i.isJccShortOrNear);
  return {
    ip: i.ip,
    len: i.length,
    code: i.code,
    flow: i.flowControl,
    invalid: i.isInvalid,
    nearBranch,
    target: nearBranch ? i.nearBranchTarget : 0n,
    hasMem: false,
    ipRel: false,
    memAddr: 0n,
    memBase: Register.None,
    memIndex: Register.None,
    dispOff: 0,
    dispSize: 0,
    immOff: 0,
    immSize: 0,
    imm2Off: 0,
    imm2Size: 0,
    op0Register: Register.None,
  };
}

/** Every field: `light`'s, with the operands' details. */
function record(d: Decoder, i: Instruction): Insn {
  const co = d.getConstantOffsets(i);
  try {
    let hasMem = false;
    for (let k = 0; k < i.opCount; k++) if (i.opKind(k) === OpKind.Memory) hasMem = true;
    const ipRel = hasMem && i.isIpRelMemoryOperand;
    return {
      ...light(i),
      hasMem,
      ipRel,
      memAddr: ipRel
        ? i.ipRelMemoryAddress
        : hasMem
          ? BigInt.asUintN(64, i.memoryDisplacement)
          : 0n,
      memBase: hasMem ? i.memoryBase : Register.None,
      memIndex: hasMem ? i.memoryIndex : Register.None,
      dispOff: co.hasDisplacement ? co.displacementOffset : 0,
      dispSize: co.hasDisplacement ? co.displacementSize : 0,
      immOff: co.hasImmediate ? co.immediateOffset : 0,
      immSize: co.hasImmediate ? co.immediateSize : 0,
      imm2Off: co.hasImmediate2 ? co.immediateOffset2 : 0,
      imm2Size: co.hasImmediate2 ? co.immediateSize2 : 0,
      op0Register: i.opCount > 0 && i.opKind(0) === OpKind.Register ? i.op0Register : Register.None,
    };
  } finally {
    co.free();
  }
}

/**
 * Linear sweep of `bytes` loaded at `base`. `anchors` are addresses where code is known to start
 * (function symbols): an instruction that would run across one is dropped as padding and decoding
 * restarts at the anchor, so alignment padding of any kind cannot desynchronise the sweep.
 * Invalid bytes become one-byte `invalid` records.
 */
export function decodeRange(
  bytes: Uint8Array,
  base: bigint,
  anchors: bigint[] = [],
  detail?: bigint[],
): Insn[] {
  const end = base + BigInt(bytes.length);
  const sorted = (l: bigint[]) => [...new Set(l)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const marks = sorted(anchors).filter((a) => a > base && a < end);
  // With `detail` (the relocated fields), only the instructions holding one get their operands
  // recorded; the others need only their extent and branch target (a third of the work).
  const want = detail && sorted(detail);
  const out: Insn[] = [];
  const d = new Decoder(64, bytes, DecoderOptions.None);
  const i = new Instruction();
  try {
    let ip = base,
      m = 0,
      w = 0;
    while (ip < end) {
      while (m < marks.length && marks[m] <= ip) m++;
      const limit = m < marks.length ? marks[m] : end;
      d.position = Number(ip - base);
      d.ip = ip;
      d.decodeOut(i);
      let full = true;
      if (want) {
        while (w < want.length && want[w] < ip) w++;
        full = w < want.length && want[w] < ip + BigInt(i.length);
      }
      const r = full ? record(d, i) : light(i);
      if (r.invalid || ip + BigInt(r.len) > limit) {
        // Invalid, or it would swallow the start of the next function: skip one byte (or to the
        // anchor).
        const skip = r.invalid ? 1n : limit - ip;
        out.push({
          ...r,
          len: Number(skip),
          invalid: true,
          nearBranch: false,
          hasMem: false,
          ipRel: false,
          dispSize: 0,
          immSize: 0,
          imm2Size: 0,
        });
        ip += skip;
        continue;
      }
      out.push(r);
      ip += BigInt(r.len);
    }
  } finally {
    i.free();
    d.free();
  }
  return out;
}

/** Decodes the single instruction at the start of `bytes`, placed at `ip`. */
export function decodeOne(bytes: Uint8Array, ip: bigint): Insn {
  const d = new Decoder(64, bytes, DecoderOptions.None);
  try {
    d.ip = ip;
    const i = d.decode();
    try {
      return record(d, i);
    } finally {
      i.free();
    }
  } finally {
    d.free();
  }
}

/** Runs `fn` on a live iced Instruction decoded from `bytes` at `ip`, freeing it afterwards. */
export function withInstruction<T>(bytes: Uint8Array, ip: bigint, fn: (i: Instruction) => T): T {
  const d = new Decoder(64, bytes, DecoderOptions.None);
  try {
    d.ip = ip;
    const i = d.decode();
    try {
      return fn(i);
    } finally {
      i.free();
    }
  } finally {
    d.free();
  }
}

/** Index of the instruction containing `addr` in a sorted list, or -1. */
export function findInsn(insns: Insn[], addr: bigint): number {
  let lo = 0,
    hi = insns.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const x = insns[mid];
    if (addr < x.ip) hi = mid - 1;
    else if (addr >= x.ip + BigInt(x.len)) lo = mid + 1;
    else return mid;
  }
  return -1;
}
