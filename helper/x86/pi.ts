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
//
// `callptr` keeps the return address inside the µlib (the site's `call`; nops lead to the next
// instruction). The push/pop pairs need code built without a red zone (-mno-red-zone, as Unikraft
// builds). A site no form fits keeps its classic, position-dependent entry (table.ts): correct,
// but its table page then differs between images; the rewrite counts them.
import {
  BlockEncoder,
  BlockEncoderOptions,
  Code,
  InstructionInfoFactory,
  Instruction,
  MemoryOperand,
  OpKind,
  Register,
  RegisterExt,
} from 'iced-x86';
import { type Operand, type SiteKind } from './classify.js';
import { withInstruction } from './decode.js';
import { TableError, encodeTrampoline, jmpRel32, rel32 } from './table.js';

export type PiForm =
  'jmpptr' | 'load' | 'mem' | 'loadmem' | 'immreg' | 'mem2' | 'callptr' | 'jmpmem' | 'abs';
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
];
/** Forms whose entry reads no pointer slot. */
const hasSlot = (form: PiForm) => form !== 'abs';
export const PTR_SLOT = 8;
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
};

/** Loads into a general register that read nothing else: the destination can carry the address. */
const PURE_LOADS = new Set<Code>([
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
]);

/** The 64-bit register a pure load writes, when it can carry the address (else undefined). */
export function loadDestination(i: Instruction): Register | undefined {
  if (!PURE_LOADS.has(i.code) || i.opKind(0) !== OpKind.Register || i.opKind(1) !== OpKind.Memory)
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
const SCRATCH = [
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
];
const reg32 = (r: Register) => (Register.EAX + (r - Register.RAX)) as Register;
// Size 8: 64-bit addressing, encoded as SIB + disp32 (sign-extended); size 4 would add an 0x67
// prefix.
const absMem = (addr: bigint) =>
  MemoryOperand.new64(Register.None, Register.None, 1, addr, 8, false, Register.None);

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
function usedFull(i: Instruction): Set<Register> {
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
function regFormOf(code: Code): { code: Code; width: 32 | 64 } | undefined {
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
    const used = usedFull(i);
    const scratch = SCRATCH.find((r) => !used.has(r));
    const hasMem = [...Array(i.opCount).keys()].some((k) => i.opKind(k) === OpKind.Memory);
    const memValue = () =>
      i.isIpRelMemoryOperand ? i.ipRelMemoryAddress : BigInt.asUintN(64, i.memoryDisplacement);
    if (kind === 'got')
      return op === 'disp' && i.isIpRelMemoryOperand
        ? { form: 'load' as const, value: i.ipRelMemoryAddress }
        : undefined;
    // The outside address is a memory operand's displacement: the scratch register takes the place
    // of the missing base (or, next to a base, of the missing index).
    const noBase = i.memoryBase === Register.None || i.memoryBase === Register.RIP;
    const memFits =
      hasMem &&
      i.memoryIndex !== Register.RSP &&
      i.memoryBase !== Register.RSP &&
      (noBase || i.memoryIndex === Register.None);
    if (op === 'mem2') {
      const scratch2 = SCRATCH.find((r) => !used.has(r) && r !== scratch);
      if (
        kind !== 'trampoline' ||
        !memFits ||
        !scratch2 ||
        i.opCount !== 2 ||
        i.opKind(0) !== OpKind.Memory ||
        !regFormOf(i.code)
      )
        return undefined;
      if (i.flowControl !== 0 || i.isStackInstruction || used.has(Register.RSP)) return undefined;
      return {
        form: 'mem2' as const,
        value: memValue(),
        scratch,
        value2: BigInt.asUintN(64, i.immediate(1)),
        scratch2,
      };
    }
    if (op === 'disp') {
      if (!memFits || !scratch) return undefined;
      if (kind === 'callind')
        return i.code === Code.Call_rm64 && noBase
          ? { form: 'callptr' as const, value: memValue(), scratch }
          : undefined;
      if (i.code === Code.Jmp_rm64)
        return noBase ? { form: 'jmpmem' as const, value: memValue(), scratch } : undefined;
      if (
        i.flowControl !== 0 /* FlowControl.Next */ ||
        i.isStackInstruction ||
        used.has(Register.RSP)
      )
        return undefined;
      // Its own data: the same absolute address in every image, so the entry holds it (no slot).
      if (
        ownData &&
        kind === 'trampoline' &&
        i.memoryBase === Register.RIP &&
        i.memoryIndex === Register.None &&
        i.ipRelMemoryAddress < 0x8000_0000n
      ) {
        return { form: 'abs' as const, value: i.ipRelMemoryAddress };
      }
      const d = loadDestination(i);
      if (d !== undefined) return { form: 'loadmem' as const, value: memValue(), scratch: d };
      return { form: 'mem' as const, value: memValue(), scratch };
    }
    if (op === 'imm' && kind === 'trampoline' && i.opCount === 2 && i.opKind(1) !== OpKind.Memory) {
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
      if (
        used.has(Register.RSP) &&
        !(i.opKind(0) === OpKind.Memory && i.memoryBase === Register.RSP)
      )
        return undefined;
      return { form: 'immreg' as const, value, scratch };
    }
    return undefined;
  });
}

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
      const wide =
        i.code === Code.Lea_r64_m ||
        i.code === Code.Mov_rm64_imm32 ||
        i.code === Code.Mov_r64_imm64;
      return [
        Instruction.createRegMem(wide ? Code.Mov_r64_rm64 : Code.Mov_r32_rm32, i.op0Register, P),
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

export interface PiSite {
  kind: SiteKind;
  ip: bigint;
  orig: Buffer;
  /** Which operands refer outside (from the relocations). */
  outside: Operand[];
  /** What each outside operand refers to (classify.refTarget): sites that agree share a slot. */
  targets?: Partial<Record<Operand, string>>;
  /**
   * Its one outside reference is RIP-relative to the µlib's own data (classify.refersToOwnData).
   */
  ownData?: boolean;
}

/**
 * The pointer slot a position-independent entry reads: one key per slot (two adjacent slots for
 * mem2), or undefined when the site's slot is its own (no targets known). Addresses the code
 * takes become their entry stubs' (`canon`), those it branches to or reads through do not: the
 * same target in two roles needs two slots.
 */
export function slotKey(
  plan: PiPlan,
  outside: Operand[],
  targets?: Partial<Record<Operand, string>>,
): string | undefined {
  if (!targets) return undefined;
  const taken = plan.form === 'load' || plan.form === 'immreg';
  if (plan.form === 'mem2') {
    const d = targets.disp,
      m = targets.imm;
    return d && m ? `pair ${d} taken ${m}` : undefined;
  }
  const t = targets[outside[0]];
  return t ? `${taken ? 'taken' : 'reached'} ${t}` : undefined;
}

export interface PiTableRequest {
  addr: bigint;
  size: number;
  ptrAddr: bigint;
  ptrSize: number;
  sites: PiSite[];
  what: string;
  /**
   * The address every image agrees on for an address of code (its entry stub); identity without.
   */
  canon?: (v: bigint) => bigint;
  /** Each site's plan, when the caller already has them (piPlan per site otherwise). */
  plans?: (PiPlan | undefined)[];
  /** The table lives on pages of this image only (the image's own code): branch entries may jump
   * straight to their targets (`jmp rel32`, padded to the length of `jmp [P]`), no indirect jump.
   * */
  direct?: boolean;
}

export interface PiTable {
  bytes: Buffer;
  used: number;
  ptr: Buffer;
  ptrUsed: number;
  /** Per site, in order: its entry, its pointer slot and form (undefined: a classic entry). */
  entryAt: bigint[];
  ptrAt: (bigint | undefined)[];
  plans: (PiPlan | undefined)[];
}

/**
 * Lays out a µlib's table in ASLR mode, one entry per site, and its pointer area: one slot per
 * distinct slot key (two for mem2); sites without targets get slots of their own. Two addresses
 * equal in one image may differ in another, so slots are shared by what the relocations name,
 * never by value, and the layout is the same in every image. The position-independent entries come
 * first,
 * in site order, then the classic ones: those hold addresses, and at the end of the table they
 * cost the fewest pages their sharing. Throws TableError when either overflows.
 */
export function buildPiTable(r: PiTableRequest): PiTable {
  const parts: Buffer[] = [];
  let cur = r.addr;
  const put = (b: Buffer) => {
    parts.push(b);
    cur += BigInt(b.length);
  };
  const ptrVals: bigint[] = [];
  const n = r.sites.length;
  const entryAt: bigint[] = new Array(n),
    ptrAt: (bigint | undefined)[] = new Array(n).fill(undefined);
  // Copies: the values below become canonical without touching the caller's plans.
  const plans = (
    r.plans ?? r.sites.map((s) => piPlan(s.orig, s.ip, s.kind, s.outside, s.ownData))
  ).map((p) => (p ? { ...p } : undefined));
  // Addresses the code takes (not the ones it branches to or reads through) become their stubs'.
  if (r.canon) {
    for (const p of plans) {
      if (p?.form === 'load' || p?.form === 'immreg') p.value = r.canon(p.value);
      else if (p?.form === 'mem2') p.value2 = r.canon(p.value2!);
    }
  }
  const shared = new Map<string, bigint>();
  r.sites.forEach((s, k) => {
    const plan = plans[k];
    if (!plan) return;
    if (!hasSlot(plan.form)) {
      entryAt[k] = cur;
      put(encodePi(s.orig, s.ip, plan, cur, 0n, r.what));
      return;
    }
    const key = slotKey(plan, s.outside, s.targets);
    let p = key === undefined ? undefined : shared.get(key);
    if (p === undefined) {
      p = r.ptrAddr + BigInt(ptrVals.length * PTR_SLOT);
      ptrVals.push(plan.value);
      if (plan.form === 'mem2') ptrVals.push(plan.value2!);
      if (key !== undefined) shared.set(key, p);
    } else {
      // Same symbol, class and addend: the same value; anything else is a bug in the keys.
      const i = Number((p - r.ptrAddr) / BigInt(PTR_SLOT));
      if (ptrVals[i] !== plan.value || (plan.form === 'mem2' && ptrVals[i + 1] !== plan.value2)) {
        throw new Error(
          `${r.what}: site 0x${s.ip.toString(16)} shares pointer slot 0x${p.toString(16)} (${key}) but needs another value`,
        );
      }
    }
    ptrAt[k] = p;
    entryAt[k] = cur;
    put(
      r.direct && plan.form === 'jmpptr'
        ? directEntry(cur, plan.value, r.what)
        : encodePi(s.orig, s.ip, plan, cur, p, r.what),
    );
  });
  r.sites.forEach((s, k) => {
    if (plans[k]) return;
    if (s.kind === 'got') {
      // Classic: lea becomes a load of an 8-byte slot holding the address.
      const pad = Number((8n - (cur % 8n)) % 8n);
      if (pad) put(Buffer.alloc(pad, 0xcc));
      const v = withInstruction(s.orig, s.ip, (i) => i.ipRelMemoryAddress);
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt.asUintN(64, v));
      entryAt[k] = cur;
      put(b);
    } else if (s.kind === 'trampoline' || s.kind === 'callind') {
      entryAt[k] = cur;
      put(encodeTrampoline({ kind: s.kind, ip: s.ip, orig: s.orig }, cur, r.what));
    } else {
      throw new TableError(
        `${r.what}: site 0x${s.ip.toString(16)}: a branch with no position-independent entry`,
      );
    }
  });
  const used = Number(cur - r.addr);
  if (used > r.size)
    throw new TableError(
      `${r.what}: the indirection table needs ${used} bytes, the plan reserves ${r.size}`,
      used,
    );
  const ptrUsed = ptrVals.length * PTR_SLOT;
  if (ptrUsed > r.ptrSize)
    throw new TableError(
      `${r.what}: the pointer area needs ${ptrUsed} bytes, the plan reserves ${r.ptrSize}`,
      undefined,
      ptrUsed,
    );
  const bytes = Buffer.alloc(r.size, 0xcc);
  Buffer.concat(parts).copy(bytes);
  const ptr = Buffer.alloc(r.ptrSize, 0xcc);
  ptrVals.forEach((v, k) => ptr.writeBigUInt64LE(BigInt.asUintN(64, v), k * PTR_SLOT));
  return { bytes, used, ptr, ptrUsed, entryAt, ptrAt, plans };
}
