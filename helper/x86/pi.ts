// Position-independent table entries, for ASLR mode. A µlib's table sits at a fixed distance after
// its code, and both move together from build to build; an entry is the same in every image only
// if it holds no address of anything else. So every address a site needs (a branch target, a lea
// result, a memory operand's base, an immediate) goes to an 8-byte *pointer slot* in the µlib's
// pointer area (`.ptr.<ulib>`), which the map keeps at one absolute address (below 2 GiB), and the
// entry reads it with an absolute `[disp32]` operand. The pointer area is the one part that differs
// between images; code and table pages stay identical wherever the µlib lands.
//
//   form     site becomes          entry (P: the site's pointer slot, r: a scratch register)
// jmpptr rel32 -> entry jmp [P] (call/jmp/jcc to another µlib)
// load jmp entry; int3... mov reg, [P]; jmp back (lea reg,[rip+X]; mov reg, imm)
//   mem      jmp entry; int3...    push r; mov r,[P]; <insn on [r+index]>; pop r; jmp back
//   loadmem  jmp entry; int3...    mov d,[P]; <insn on [d+index]>; jmp back    (a load into GPR d:
//                                  d is free until the load writes it, so no push/pop)
// immreg jmp entry; int3... push r; mov r,[P]; <insn with r for the immediate>; pop r; jmp back
// mem2 jmp entry; int3... both at once (an outside address in the memory operand and in the
//                                  immediate): two scratch registers, two slots P and P+8
// abs jmp entry; int3... <insn on the absolute [X]>; jmp back (a RIP-relative operand to
//                                  the µlib's own data: X keeps its slot in every image, no slot P)
//   callptr  call entry; nop...    push r; mov r,[P]; mov r,[r+index]; xchg [rsp],r; ret
//   jmpmem   jmp entry; int3...    push r; mov r,[P]; mov r,[r+index]; xchg [rsp],r; ret
//   callabs  call entry; nop...    jmp [X]  (call [rip+X], X a function pointer in the µlib's own
//   jmpabs   jmp entry; int3...    jmp [X]   data: at one absolute address in every image)
//
// `callptr` and `callabs` keep the return address inside the µlib (the site's `call`; nops lead
// to the next instruction). `callptr` and `jmpmem` end in a `ret` that no `call` matched: the
// processor's return predictions go wrong for it and for every return of the call chain above it
// (SQLite reaches its allocator through `call [rip+sqlite3Config.m.xMalloc]`); `callabs` and
// `jmpabs` need neither a slot nor a `ret`. The push/pop pairs need code built without a red zone
// (-mno-red-zone, as Unikraft builds). A site no form fits keeps its classic, position-dependent
// entry (table.ts): correct, but its table page then differs between images; the rewrite counts
// them.
//
// This file: the forms and which one fits a site (piPlan); pi-encode.ts encodes an entry and
// patches its site, pi-table.ts lays out a µlib's table and pointer area.
import {
  Code,
  InstructionInfoFactory,
  Instruction,
  OpKind,
  Register,
  RegisterExt,
  onFirstUse,
} from './iced.js';
import { type Operand, type SiteKind } from './classify.js';
import { withInstruction } from './decode.js';

export type PiForm =
  | 'jmpptr'
  | 'load'
  | 'mem'
  | 'loadmem'
  | 'immreg'
  | 'mem2'
  | 'callptr'
  | 'jmpmem'
  | 'abs'
  | 'callabs'
  | 'jmpabs';
export const PI_FORMS: readonly PiForm[] = [
  'jmpptr',
  'load',
  'mem',
  'loadmem',
  'immreg',
  'mem2',
  'callptr',
  'jmpmem',
  'abs',
  'callabs',
  'jmpabs',
];
/** Forms whose entry holds the µlib's own data's address itself (no pointer slot). */
export const slotless = (form: PiForm) => form === 'abs' || form === 'callabs' || form === 'jmpabs';
export const PTR_SLOT = 8;
/** A `load` entry that puts a 32-bit value in a 32-bit register reads a slot of this size. */
export const NARROW_SLOT = 4;

/**
 * Does the `load` entry for this original read 32 bits (`mov r32, [P]`)? Its original put a
 * 32-bit value in a 32-bit register (`mov r32, imm32`, `lea r32`), so the value fits a 4-byte
 * slot: the platform's 358 addresses of its own data took 8 bytes each on real Unikraft.
 */
export function narrowLoad(code: number): boolean {
  return code !== Code.Lea_r64_m && code !== Code.Mov_rm64_imm32 && code !== Code.Mov_r64_imm64;
}
/** How the site itself is patched: its branch retargeted, a jmp to the entry, or a call to it. */
export type PiPatch = 'branch' | 'jmp' | 'call';
export const PI_PATCH: Record<PiForm, PiPatch> = {
  jmpptr: 'branch',
  load: 'jmp',
  mem: 'jmp',
  loadmem: 'jmp',
  immreg: 'jmp',
  mem2: 'jmp',
  callptr: 'call',
  jmpmem: 'jmp',
  abs: 'jmp',
  callabs: 'call',
  jmpabs: 'jmp',
};

/** Loads into a general register that read nothing else: the destination can carry the address. */
const PURE_LOADS = onFirstUse(
  () =>
    new Set<Code>([
      Code.Mov_r64_rm64,
      Code.Mov_r32_rm32,
      Code.Movzx_r32_rm8,
      Code.Movzx_r32_rm16,
      Code.Movzx_r64_rm8,
      Code.Movzx_r64_rm16,
      Code.Movsx_r32_rm8,
      Code.Movsx_r32_rm16,
      Code.Movsx_r64_rm8,
      Code.Movsx_r64_rm16,
      Code.Movsxd_r64_rm32,
    ]),
);

/** The 64-bit register a pure load writes, when it can carry the address (else undefined). */
export function loadDestination(i: Instruction): Register | undefined {
  if (!PURE_LOADS().has(i.code) || i.opKind(0) !== OpKind.Register || i.opKind(1) !== OpKind.Memory)
    return undefined;
  const d = RegisterExt.fullRegister(i.op0Register);
  if (
    d === Register.RSP ||
    d === RegisterExt.fullRegister(i.memoryIndex) ||
    d === RegisterExt.fullRegister(i.memoryBase)
  )
    return undefined;
  return d;
}

/**
 * Upper bound of one position-independent entry for an instruction of `len` bytes with `outside`
 * outside operands.
 */
export function piBound(len: number, outside = 1): number {
  // push(2) + mov r,[P](8) + the instruction (at most one byte longer: a REX) + pop(2) + jmp(5);
  // the indirect forms: push(2) + mov(8) + mov r,[r+i*s](5) + xchg(4) + ret(1); mem2: two of each.
  return outside >= 2 ? len + 30 : Math.max(len + 18, 20);
}

/**
 * Scratch registers, in order of preference (no rsp, no rbp/r12/r13 with their encoding quirks).
 */
const SCRATCH = onFirstUse((): Register[] => [
  Register.RAX,
  Register.RCX,
  Register.RDX,
  Register.RBX,
  Register.RSI,
  Register.RDI,
  Register.R8,
  Register.R9,
  Register.R10,
  Register.R11,
]);

export interface PiPlan {
  form: PiForm;
  /** The value the pointer slot holds (an address, or a TLS offset for fs:/gs: operands). */
  value: bigint;
  /** The scratch register, when the form needs one. */
  scratch?: Register;
  /** mem2: the immediate's value (in the slot after the first) and its scratch register. */
  value2?: bigint;
  scratch2?: Register;
}

/** Full registers the instruction reads or writes (including its memory operand's). */
export function usedFull(i: Instruction): Set<Register> {
  const f = new InstructionInfoFactory();
  try {
    const info = f.info(i);
    try {
      return new Set(
        info
          .usedRegisters()
          .map((u: { register: Register }) => RegisterExt.fullRegister(u.register)),
      );
    } finally {
      info.free();
    }
  } finally {
    f.free();
  }
}
/** `Op_rmW_immN` (or `Op_rAX_immN`) -> `Op_rmW_rW`, the same operation on a register. */
export function regFormOf(code: Code): { code: Code; width: 32 | 64 } | undefined {
  const name = (Code as unknown as Record<number, string>)[code];
  const m =
    /^([A-Z][a-z]+)_(?:rm|r)(32|64)_imm(?:8|32)$/.exec(name ?? '') ??
    /^([A-Z][a-z]+)_(EAX|RAX)_imm32$/.exec(name ?? '');
  if (!m) return undefined;
  const width = m[2] === 'EAX' ? 32 : m[2] === 'RAX' ? 64 : (Number(m[2]) as 32 | 64);
  const cand = (Code as unknown as Record<string, Code>)[`${m[1]}_rm${width}_r${width}`];
  return cand === undefined ? undefined : { code: cand, width };
}

/**
 * Which position-independent form fits a site, from its original bytes, its kind and which of its
 * operands refer outside; undefined when none does (the site keeps a classic entry).
 */
export function piPlan(
  orig: Uint8Array,
  ip: bigint,
  kind: SiteKind,
  outside: Operand[],
  ownData = false,
): PiPlan | undefined {
  const two = outside.length === 2 && outside.includes('disp') && outside.includes('imm');
  if (outside.length !== 1 && !two) return undefined;
  const op = two ? 'mem2' : outside[0];
  return withInstruction(orig, ip, (i) => {
    if (i.isInvalid || i.length !== orig.length) return undefined;
    if (kind === 'stub')
      return op === 'branch' ? { form: 'jmpptr' as const, value: i.nearBranchTarget } : undefined;
    if (kind === 'got')
      return op === 'disp' && i.isIpRelMemoryOperand
        ? { form: 'load' as const, value: i.ipRelMemoryAddress }
        : undefined;
    const used = usedFull(i);
    const s: Fit = { i, kind, used, scratch: SCRATCH().find((r) => !used.has(r)), ownData };
    if (op === 'mem2') return mem2Plan(s);
    if (op === 'disp') return dispPlan(s);
    if (op === 'imm') return immPlan(s);
    return undefined;
  });
}

/** A site piPlan fits a form to: its instruction, the registers it uses, a free one. */
interface Fit {
  i: Instruction;
  kind: SiteKind;
  used: Set<Register>;
  scratch?: Register;
  ownData: boolean;
}

/** The memory operand has no base (or RIP): the scratch register can take its place. */
const noBase = (i: Instruction) => i.memoryBase === Register.None || i.memoryBase === Register.RIP;

/**
 * The outside address is a memory operand's displacement: the scratch register takes the place
 * of the missing base (or, next to a base, of the missing index).
 */
function memFits(i: Instruction): boolean {
  const hasMem = [...Array(i.opCount).keys()].some((k) => i.opKind(k) === OpKind.Memory);
  return (
    hasMem &&
    i.memoryIndex !== Register.RSP &&
    i.memoryBase !== Register.RSP &&
    (noBase(i) || i.memoryIndex === Register.None)
  );
}

/** The address the memory operand names (its displacement when it has a base). */
const memValue = (i: Instruction) =>
  i.isIpRelMemoryOperand ? i.ipRelMemoryAddress : BigInt.asUintN(64, i.memoryDisplacement);

/** An instruction that runs on to the next one and leaves the stack alone. */
const plainFlow = (s: Fit) =>
  s.i.flowControl === 0 /* FlowControl.Next */ &&
  !s.i.isStackInstruction &&
  !s.used.has(Register.RSP);

/** An outside address in the memory operand and in the immediate: mem2. */
function mem2Plan(s: Fit): PiPlan | undefined {
  const { i, scratch } = s;
  const scratch2 = SCRATCH().find((r) => !s.used.has(r) && r !== scratch);
  if (
    s.kind !== 'trampoline' ||
    !memFits(i) ||
    !scratch2 ||
    i.opCount !== 2 ||
    i.opKind(0) !== OpKind.Memory ||
    !regFormOf(i.code)
  )
    return undefined;
  if (!plainFlow(s)) return undefined;
  return {
    form: 'mem2' as const,
    value: memValue(i),
    scratch,
    value2: BigInt.asUintN(64, i.immediate(1)),
    scratch2,
  };
}

/** A RIP-relative operand to the µlib's own data, which an absolute [disp32] reaches. */
const ownAbsolute = (s: Fit) =>
  s.ownData &&
  s.i.memoryBase === Register.RIP &&
  s.i.memoryIndex === Register.None &&
  s.i.ipRelMemoryAddress < 0x8000_0000n;

/**
 * The outside address is the memory operand's: callabs, jmpabs, callptr, jmpmem, abs, loadmem or
 * mem.
 */
function dispPlan(s: Fit): PiPlan | undefined {
  const { i, scratch } = s;
  // A function pointer in its own data: the entry jumps through it at its absolute address.
  if (
    ownAbsolute(s) &&
    (s.kind === 'callind' ? i.code === Code.Call_rm64 : i.code === Code.Jmp_rm64)
  )
    return { form: s.kind === 'callind' ? 'callabs' : 'jmpabs', value: i.ipRelMemoryAddress };
  if (!memFits(i) || !scratch) return undefined;
  if (s.kind === 'callind')
    return i.code === Code.Call_rm64 && noBase(i)
      ? { form: 'callptr' as const, value: memValue(i), scratch }
      : undefined;
  if (i.code === Code.Jmp_rm64)
    return noBase(i) ? { form: 'jmpmem' as const, value: memValue(i), scratch } : undefined;
  if (!plainFlow(s)) return undefined;
  // Its own data: the same absolute address in every image, so the entry holds it (no slot).
  if (ownAbsolute(s) && s.kind === 'trampoline')
    return { form: 'abs' as const, value: i.ipRelMemoryAddress };
  const d = loadDestination(i);
  if (d !== undefined) return { form: 'loadmem' as const, value: memValue(i), scratch: d };
  return { form: 'mem' as const, value: memValue(i), scratch };
}

/** The outside address is the immediate: load (mov reg, imm) or immreg. */
function immPlan(s: Fit): PiPlan | undefined {
  const { i, scratch } = s;
  if (s.kind !== 'trampoline' || i.opCount !== 2 || i.opKind(1) === OpKind.Memory) return undefined;
  if (i.isStackInstruction || i.flowControl !== 0) return undefined;
  const value = BigInt.asUintN(64, i.immediate(1));
  // mov reg, imm: a load from the slot, no scratch register.
  if (
    i.opKind(0) === OpKind.Register &&
    (i.code === Code.Mov_r32_imm32 ||
      i.code === Code.Mov_rm64_imm32 ||
      i.code === Code.Mov_r64_imm64)
  ) {
    return { form: 'load' as const, value };
  }
  if (!scratch || !regFormOf(i.code)) return undefined;
  if (s.used.has(Register.RSP) && !(i.opKind(0) === OpKind.Memory && i.memoryBase === Register.RSP))
    return undefined;
  return { form: 'immreg' as const, value, scratch };
}
