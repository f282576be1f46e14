// Position-independent entries (pi.ts): the bytes of one entry for a site and its plan, and the
// patch of the site that reaches it.
import {
  BlockEncoder,
  BlockEncoderOptions,
  Code,
  Instruction,
  MemoryOperand,
  OpKind,
  Register,
} from './iced.js';
import { withInstruction } from './decode.js';
import { PI_PATCH, PTR_SLOT, narrowLoad, regFormOf, type PiForm, type PiPlan } from './pi.js';
import { TableError, jmpRel32, rel32 } from './table.js';

const reg32 = (r: Register) => (Register.EAX + (r - Register.RAX)) as Register;
// Size 8: 64-bit addressing, encoded as SIB + disp32 (sign-extended); size 4 would add an 0x67
// prefix.
const absMem = (addr: bigint) =>
  MemoryOperand.new64(Register.None, Register.None, 1, addr, 8, false, Register.None);

function encodeBlock(list: Instruction[], at: bigint, what: string): Buffer {
  const be = new BlockEncoder(64, BlockEncoderOptions.None);
  try {
    for (const x of list) be.add(x);
    return Buffer.from(be.encode(at));
  } catch (e) {
    throw new TableError(`${what}: cannot encode the entry (${(e as Error).message})`);
  } finally {
    be.free();
    for (const x of list) x.free();
  }
}

/**
 * The instruction with its outside memory operand turned into `[r + index*scale]` (or `[base +
 * r]`).
 */
export function onScratchBase(i: Instruction, r: Register): Instruction {
  const x = i.clone();
  const base = x.memoryBase;
  if (base === Register.None || base === Register.RIP) x.memoryBase = r;
  else {
    x.memoryIndex = r;
    x.memoryIndexScale = 1;
  }
  x.memoryDisplacement = 0n;
  // rbp and r13 as a base always carry a displacement byte: say so, as a decoder would.
  const nb = x.memoryBase;
  x.memoryDisplSize = nb === Register.RBP || nb === Register.R13 ? 1 : 0;
  return x;
}

/**
 * The instruction with its immediate replaced by the scratch register (rsp-based memory shifted by
 * the push).
 */
export function onScratchImm(i: Instruction, r: Register): Instruction {
  const f = regFormOf(i.code)!;
  const x = i.clone();
  x.setImmediateU32(1, 0); // no stale immediate bits: the result must equal its own decoding
  x.code = f.code;
  if (x.opKind(0) === OpKind.Memory && x.memoryBase === Register.RSP)
    x.memoryDisplacement = x.memoryDisplacement + 8n;
  x.op1Kind = OpKind.Register;
  x.op1Register = f.width === 64 ? r : reg32(r);
  return x;
}

/**
 * The entry's instructions for the original instruction `i` (decoded at its address), without the
 * jump back: what the encoder emits and what verify expects to decode. The caller frees them.
 */
export function piInstructions(i: Instruction, plan: PiPlan, ptr: bigint): Instruction[] {
  const r = plan.scratch ?? Register.None;
  const P = absMem(ptr);
  const viaScratch = (body: Instruction[]) => [
    Instruction.createReg(Code.Push_r64, r),
    Instruction.createRegMem(Code.Mov_r64_rm64, r, P),
    ...body,
  ];
  switch (plan.form) {
    case 'jmpptr':
      return [Instruction.createMem(Code.Jmp_rm64, P)];
    case 'load': {
      return [
        Instruction.createRegMem(
          narrowLoad(i.code) ? Code.Mov_r32_rm32 : Code.Mov_r64_rm64,
          i.op0Register,
          P,
        ),
      ];
    }
    case 'mem':
    case 'immreg':
      return [
        ...viaScratch([plan.form === 'mem' ? onScratchBase(i, r) : onScratchImm(i, r)]),
        Instruction.createReg(Code.Pop_r64, r),
      ];
    case 'loadmem':
      return [Instruction.createRegMem(Code.Mov_r64_rm64, r, P), onScratchBase(i, r)];
    case 'callabs':
    case 'jmpabs':
      // The site's call pushed the return address (or its jmp kept the caller's): jump on.
      return [Instruction.createMem(Code.Jmp_rm64, absMem(plan.value))];
    case 'abs': {
      // The same instruction on [disp32] (SIB, no base, no index): RIP-relative no more.
      const x = i.clone();
      x.memoryBase = Register.None;
      x.memoryIndex = Register.None;
      x.memoryDisplacement = plan.value;
      x.memoryDisplSize = 8;
      return [x];
    }
    case 'mem2': {
      const r2 = plan.scratch2!;
      const m = onScratchBase(i, r);
      const body = onScratchImm(m, r2);
      m.free();
      return [
        Instruction.createReg(Code.Push_r64, r),
        Instruction.createReg(Code.Push_r64, r2),
        Instruction.createRegMem(Code.Mov_r64_rm64, r, P),
        Instruction.createRegMem(Code.Mov_r64_rm64, r2, absMem(ptr + BigInt(PTR_SLOT))),
        body,
        Instruction.createReg(Code.Pop_r64, r2),
        Instruction.createReg(Code.Pop_r64, r),
      ];
    }
    case 'callptr':
    case 'jmpmem':
      return [
        ...viaScratch([
          Instruction.createRegMem(
            Code.Mov_r64_rm64,
            r,
            MemoryOperand.new64(r, i.memoryIndex, i.memoryIndexScale, 0n, 0, false, Register.None),
          ),
        ]),
        Instruction.createMemReg(
          Code.Xchg_rm64_r64,
          MemoryOperand.new64(Register.RSP, Register.None, 1, 0n, 0, false, Register.None),
          r,
        ),
        Instruction.create(Code.Retnq),
      ];
  }
}

/**
 * Does the form end with a jump back to the next original instruction (else it ends in `ret`/`jmp
 * [P]`)?
 */
export const jumpsBack = (form: PiForm) =>
  form === 'load' ||
  form === 'mem' ||
  form === 'loadmem' ||
  form === 'immreg' ||
  form === 'mem2' ||
  form === 'abs';

/** The entry's bytes at `at`, its pointer slot at `ptr`. */
export function encodePi(
  orig: Uint8Array,
  ip: bigint,
  plan: PiPlan,
  at: bigint,
  ptr: bigint,
  what: string,
): Buffer {
  const w = `${what}: site 0x${ip.toString(16)}`;
  if (ptr + BigInt(PTR_SLOT) > 0x8000_0000n)
    throw new TableError(
      `${w}: pointer slot 0x${ptr.toString(16)} is above 2 GiB, out of reach of an absolute [disp32]`,
    );
  return withInstruction(orig, ip, (i) => {
    const b = encodeBlock(piInstructions(i, plan, ptr), at, w);
    return jumpsBack(plan.form)
      ? Buffer.concat([b, jmpRel32(at + BigInt(b.length), i.nextIP, w)])
      : b;
  });
}

/**
 * Length of a `jmp [P]` entry: a direct entry takes the same room, so the layout does not change.
 */
export const JMPPTR_LEN = 7;

/** A branch entry of a table on the image's own pages: `jmp rel32` to the target, int3 padding. */
export function directEntry(at: bigint, target: bigint, what: string): Buffer {
  return Buffer.concat([jmpRel32(at, target, what), Buffer.alloc(JMPPTR_LEN - 5, 0xcc)]);
}

/** Patches the site to reach its entry, keeping its length (see PI_PATCH). */
export function patchPi(
  code: Buffer,
  base: bigint,
  ip: bigint,
  len: number,
  immOff: number,
  form: PiForm,
  entry: bigint,
  what: string,
): void {
  const off = Number(ip - base);
  const w = `${what}: site 0x${ip.toString(16)}`;
  if (off < 0 || off + len > code.length) throw new TableError(`${w}: outside its section`);
  const p = PI_PATCH[form];
  if (p === 'branch') {
    code.writeInt32LE(rel32(ip + BigInt(len), entry, w), off + immOff);
    return;
  }
  if (len < 5) throw new TableError(`${w}: ${len} bytes, too short for a jump`);
  if (p === 'jmp') {
    jmpRel32(ip, entry, w).copy(code, off);
    code.fill(0xcc, off + 5, off + len);
  } else {
    code[off] = 0xe8;
    code.writeInt32LE(rel32(ip + 5n, entry, w), off + 1);
    // the call returns here: nops lead on to the next instruction
    code.fill(0x90, off + 5, off + len);
  }
}
