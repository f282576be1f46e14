// The per-µlib indirection table (`.ind.<ulib>`): its layout and the bytes of every entry.
//
//   [pad to 8] GOT slots (8 bytes each, value = address)      one per distinct lea target
//              stubs     `E9 rel32`      -> target             one per distinct branch target
//              trampolines, in site order:
//   (with slot loads, the GOT slots go last instead, at the table's very end: see gotAtEnd)
// trampoline: <the instruction, re-encoded here> `E9 rel32` -> next original instruction
// callind: `68 imm32` (push return address) <jmp through the call's memory operand>
//   unused bytes stay 0xCC (int3)
//
// A moved instruction is re-encoded by iced's BlockEncoder so it refers to the same absolute
// addresses; should that encoding be longer than the original (or differ), the original bytes
// are copied with their RIP-relative displacement recomputed instead, so a moved instruction is
// never longer than the original, which is what the first pass's size bound relies on.
import { BlockEncoder, BlockEncoderOptions, Code, type Instruction } from './iced.js';
import { GOT_SLOT, JMP_REL32, PUSH_IMM32, slotLoadCode, type SiteKind } from './classify.js';
import { decodeOne, Register, withInstruction } from './decode.js';

export class TableError extends Error {
  /** For an overflow: the bytes the table would need. */
  constructor(
    message: string,
    readonly need?: number,
    readonly ptrNeed?: number,
  ) {
    super(message);
  }
}

const I32_MIN = -(2n ** 31n),
  I32_MAX = 2n ** 31n - 1n;

/** rel32 for a field whose instruction ends at `end`, reaching `target`. */
export function rel32(end: bigint, target: bigint, what: string): number {
  const d = target - end;
  if (d < I32_MIN || d > I32_MAX)
    throw new TableError(
      `${what}: 0x${target.toString(16)} is out of reach of a rel32 from 0x${end.toString(16)} (more than 2 GiB away)`,
    );
  return Number(d);
}

export function jmpRel32(at: bigint, target: bigint, what: string): Buffer {
  const b = Buffer.alloc(JMP_REL32);
  b[0] = 0xe9;
  b.writeInt32LE(rel32(at + 5n, target, what), 1);
  return b;
}

const LEGACY_PREFIXES = new Set([0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3]);

/**
 * Encodes `i` (decoded from `orig` at its own address) at `at`, at most `orig.length` bytes long.
 */
function moveInstruction(
  orig: Buffer,
  i: Instruction,
  at: bigint,
  what: string,
  jmpInsteadOfCall = false,
): Buffer {
  const L = i.length;
  const x = jmpInsteadOfCall ? i.clone() : i;
  try {
    if (jmpInsteadOfCall) x.code = Code.Jmp_rm64;
    let enc: Uint8Array | undefined;
    const be = new BlockEncoder(64, BlockEncoderOptions.None);
    try {
      be.add(x);
      enc = be.encode(at);
    } catch {
      enc = undefined; // e.g. a RIP-relative target out of reach: the manual path reports it
    } finally {
      be.free();
    }
    if (
      enc &&
      enc.length <= L &&
      withInstruction(enc, at, (y) => y.length === enc!.length && y.equals(x))
    )
      return Buffer.from(enc);
    // Fallback: the original bytes (position-independent except a RIP-relative displacement).
    const b = Buffer.from(orig.subarray(0, L));
    if (jmpInsteadOfCall) {
      let p = 0;
      while (p < L && (LEGACY_PREFIXES.has(b[p]) || (b[p] & 0xf0) === 0x40)) p++;
      if (b[p] !== 0xff || p + 1 >= L)
        throw new TableError(`${what}: cannot turn the indirect call into a jump`);
      b[p + 1] = (b[p + 1] & ~0x38) | (4 << 3); // FF /2 (call) -> FF /4 (jmp)
    }
    if (i.isIpRelMemoryOperand) {
      const o = decodeOne(orig, i.ip);
      if (o.dispSize !== 4)
        throw new TableError(`${what}: RIP-relative operand without a 32-bit displacement`);
      b.writeInt32LE(rel32(at + BigInt(L), i.ipRelMemoryAddress, what), o.dispOff);
    }
    if (!withInstruction(b, at, (y) => y.length === L && y.equals(x)))
      throw new TableError(`${what}: the instruction cannot be re-encoded at 0x${at.toString(16)}`);
    return b;
  } finally {
    if (jmpInsteadOfCall) x.free();
  }
}

/** A moved instruction: its original bytes and address. */
export interface Move {
  kind: Extract<SiteKind, 'trampoline' | 'callind'>;
  ip: bigint;
  orig: Buffer;
  /** A slot-load trampoline (classify.ts slotLoadCode): the GOT slot's value, its immediate. */
  slot?: bigint;
}

export interface TableRequest {
  addr: bigint;
  size: number;
  /** Distinct GOT slot values, stub targets, and the moves, each in a deterministic order. */
  got: bigint[];
  /**
   * The GOT slots at the table's end (its last 8-aligned bytes), after the entries: with slot loads
   * they are all of the table that differs between variants, and what follows the table (the
   * image's own code) differs too, so they share that page instead of costing one of their own.
   * The table then takes its name slot's whole capacity, so they sit at one address in every image.
   */
  gotAtEnd?: boolean;
  stubs: bigint[];
  moves: Move[];
  /** Names the table in errors ("image: µlib"). */
  what: string;
}

export interface Table {
  /** `size` bytes: entries, then 0xCC. */
  bytes: Buffer;
  used: number;
  gotAt: Map<bigint, bigint>;
  stubAt: Map<bigint, bigint>;
  moveAt: bigint[];
}

export function encodeTrampoline(m: Move, at: bigint, what: string): Buffer {
  const w = `${what}: site 0x${m.ip.toString(16)}`;
  return withInstruction(m.orig, m.ip, (i) => {
    if (i.isInvalid || i.length !== m.orig.length)
      throw new TableError(`${w}: the original bytes do not decode to one instruction`);
    const next = i.nextIP;
    if (m.kind === 'callind') {
      // push imm32 sign-extends: the return address must be below 2 GiB (small code model).
      if (next > I32_MAX)
        throw new TableError(
          `${w}: return address 0x${next.toString(16)} does not fit push imm32 (above 2 GiB)`,
        );
      const push = Buffer.from([0x68, 0, 0, 0, 0]);
      push.writeInt32LE(Number(next), 1);
      return Buffer.concat([push, moveInstruction(m.orig, i, at + BigInt(PUSH_IMM32), w, true)]);
    }
    const moved = moveInstruction(m.orig, i, at, w);
    return Buffer.concat([moved, jmpRel32(at + BigInt(moved.length), next, w)]);
  });
}

/**
 * A slot-load trampoline: `mov reg, [rip+G]` (G the GOT slot holding the original's immediate, of
 * the original's width and register), then `jmp` back.
 */
export function encodeSlotLoad(m: Move, at: bigint, slot: bigint, what: string): Buffer {
  const w = `${what}: site 0x${m.ip.toString(16)}`;
  const O = decodeOne(m.orig, m.ip);
  const load = slotLoadCode(O, ['imm']);
  if (O.invalid || O.len !== m.orig.length || load === undefined || slot === undefined)
    throw new TableError(`${w}: not a mov of an address into a register`);
  const wide = load === Code.Mov_r64_rm64;
  const reg = O.op0Register - (wide ? Register.RAX : Register.EAX);
  if (reg < 0 || reg > 15) throw new TableError(`${w}: unexpected register`);
  const rex = (wide ? 0x48 : 0) | (reg >= 8 ? 0x44 : 0);
  const head = Buffer.from([...(rex ? [rex] : []), 0x8b, ((reg & 7) << 3) | 5, 0, 0, 0, 0]);
  head.writeInt32LE(rel32(at + BigInt(head.length), slot, w), head.length - 4);
  return Buffer.concat([head, jmpRel32(at + BigInt(head.length), m.ip + BigInt(O.len), w)]);
}

/** A table's entries, laid out one after the other from its address. */
export class TableWriter {
  private readonly parts: Buffer[] = [];
  /** Where the next entry goes. */
  cur: bigint;

  constructor(readonly addr: bigint) {
    this.cur = addr;
  }

  put(b: Buffer): void {
    this.parts.push(b);
    this.cur += BigInt(b.length);
  }

  /** int3 from the next entry up to `at`, then `b` there. */
  putAt(b: Buffer, at: bigint): void {
    if (at > this.cur) this.put(Buffer.alloc(Number(at - this.cur), 0xcc));
    this.put(b);
  }

  /** int3 up to the next 8-byte boundary, where an address slot goes. */
  align8(): void {
    const pad = Number((8n - (this.cur % 8n)) % 8n);
    if (pad) this.put(Buffer.alloc(pad, 0xcc));
  }

  /** The bytes used so far. */
  get used(): number {
    return Number(this.cur - this.addr);
  }

  /** The table's `size` bytes, the entries then 0xCC; TableError (with the bytes needed) when
   *  they do not fit. */
  bytes(size: number, what: string): Buffer {
    if (this.used > size)
      throw new TableError(
        `${what}: the indirection table needs ${this.used} bytes, the plan reserves ${size}`,
        this.used,
      );
    const bytes = Buffer.alloc(size, 0xcc);
    Buffer.concat(this.parts).copy(bytes);
    return bytes;
  }
}

/** Lays out and encodes a table; throws TableError (with the bytes needed) if it does not fit. */
export function buildTable(r: TableRequest): Table {
  const t = new TableWriter(r.addr);
  const gotAt = new Map<bigint, bigint>(),
    stubAt = new Map<bigint, bigint>(),
    moveAt: bigint[] = [];
  const slots = Buffer.alloc(r.got.length * GOT_SLOT);
  // The GOT's address first (the slot-load trampolines encode it): the table's start, or its end.
  const atEnd = !!r.gotAtEnd && r.got.length > 0;
  if (!atEnd && r.got.length) t.align8();
  const gotStart = atEnd ? ((r.addr + BigInt(r.size)) & ~7n) - BigInt(slots.length) : t.cur;
  r.got.forEach((v, i) => {
    slots.writeBigUInt64LE(BigInt.asUintN(64, v), i * GOT_SLOT);
    gotAt.set(v, gotStart + BigInt(i * GOT_SLOT));
  });
  if (!atEnd && r.got.length) t.put(slots);
  for (const x of r.stubs) {
    stubAt.set(x, t.cur);
    t.put(jmpRel32(t.cur, x, `${r.what}: stub`));
  }
  for (const m of r.moves) {
    moveAt.push(t.cur);
    t.put(
      m.slot === undefined
        ? encodeTrampoline(m, t.cur, r.what)
        : encodeSlotLoad(m, t.cur, gotAt.get(m.slot)!, r.what),
    );
  }
  if (atEnd) {
    const need = t.used + 7 + slots.length;
    if (t.cur > gotStart)
      throw new TableError(
        `${r.what}: the indirection table needs ${need} bytes, the plan reserves ${r.size}`,
        need,
      );
    t.putAt(slots, gotStart);
  }
  const bytes = t.bytes(r.size, r.what);
  return { bytes, used: t.used, gotAt, stubAt, moveAt };
}
