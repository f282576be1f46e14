// verify's re-encodings and entry checks: a fresh encoding of the recorded sites (classic and
// position-independent), and the check of each position-independent or `abs` entry against its
// original instruction.
import { retarget } from '../rewrite/clones.js';
import { type RewriteRecord } from '../rewrite/record.js';
import { type ImageSite } from '../rewrite/types.js';
import { slotLoadValue, type SiteKind } from '../x86/classify.js';
import { Code, FlowControl, decodeOne, withInstruction } from '../x86/decode.js';
import { hex } from '../util/units.js';
import { patchSite } from '../x86/tactics.js';
import { buildTable, type Move } from '../x86/table.js';
import {
  loadDestination,
  PI_FORMS,
  PI_PATCH,
  NARROW_SLOT,
  narrowLoad,
  PTR_SLOT,
  usedFull,
  type PiForm,
  type PiPlan,
} from '../x86/pi.js';
import { JMPPTR_LEN, jumpsBack, patchPi, piInstructions } from '../x86/pi-encode.js';
import { buildPiTable } from '../x86/pi-table.js';
import { OpKind, Register, type Instruction } from '../x86/iced.js';

/** A near jump (`jmp rel`): the end of a stub or trampoline. */
export const isJmp = (i: { nearBranch: boolean; flow: FlowControl }) =>
  i.nearBranch && i.flow === FlowControl.UnconditionalBranch;

export function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** The table and code the rewriter makes from these sites (same order, same sharing). */
export function reencode(
  sites: RewriteRecord['ulibs'][number]['sites'],
  indAddr: bigint,
  size: number,
  textAddr: bigint,
  orig: Buffer,
  name: string,
): { table: Buffer; code: Buffer } | string {
  try {
    const got = new Set<bigint>(),
      stubs = new Set<bigint>(),
      moves: Move[] = [];
    const targets = sites.map((s) => {
      const ob = Buffer.from(s.o, 'hex'),
        O = decodeOne(ob, BigInt(s.a));
      if (s.g !== undefined) return slotLoadValue(O, ob);
      return s.k === 'stub' ? O.target : s.k === 'got' ? O.memAddr : 0n;
    });
    sites.forEach((s, i) => {
      if (s.k === 'got' || s.g !== undefined) got.add(targets[i]);
      else if (s.k === 'stub') stubs.add(targets[i]);
      if (s.k !== 'got' && s.k !== 'stub')
        moves.push({
          kind: s.k as Extract<SiteKind, 'trampoline' | 'callind'>,
          ip: BigInt(s.a),
          orig: Buffer.from(s.o, 'hex'),
          ...(s.g !== undefined ? { slot: targets[i] } : {}),
        });
    });
    const t = buildTable({
      addr: indAddr,
      size,
      got: [...got],
      stubs: [...stubs],
      moves,
      what: name,
      gotAtEnd: moves.some((m) => m.slot !== undefined),
    });
    const code = Buffer.from(orig);
    let m = 0;
    sites.forEach((s, i) => {
      const entry =
        s.k === 'stub'
          ? t.stubAt.get(targets[i])!
          : s.k === 'got'
            ? t.gotAt.get(targets[i])!
            : t.moveAt[m++];
      patchSite(code, textAddr, decodeOne(Buffer.from(s.o, 'hex'), BigInt(s.a)), s.k, entry, name);
    });
    return { table: t.bytes, code };
  } catch (e) {
    return `the recorded sites cannot be encoded again (${(e as Error).message})`;
  }
}

/**
 * The value a position-independent entry must find in its pointer slot, from the original alone.
 */
function piValue(form: PiForm, o: Instruction): bigint | undefined {
  const mem = () =>
    o.isIpRelMemoryOperand ? o.ipRelMemoryAddress : BigInt.asUintN(64, o.memoryDisplacement);
  switch (form) {
    case 'jmpptr':
      return o.isCallNear || o.isJmpShortOrNear || o.isJccShortOrNear
        ? o.nearBranchTarget
        : undefined;
    case 'load':
      return o.code === Code.Lea_r64_m || o.code === Code.Lea_r32_m
        ? mem()
        : o.opCount === 2 && o.opKind(1) !== OpKind.Memory && o.opKind(1) !== OpKind.Register
          ? BigInt.asUintN(64, o.immediate(1))
          : undefined;
    case 'immreg':
      return BigInt.asUintN(64, o.immediate(1));
    case 'mem2':
    case 'mem':
    case 'loadmem':
    case 'callptr':
    case 'jmpmem':
      return mem();
  }
}

/**
 * Checks one position-independent site: the site reaches its entry, the entry is the form's
 * sequence for the original instruction (decoded, compared operand by operand), its scratch
 * register is one the original does not touch, its pointer slot holds what the original used,
 * and it ends by going back to the next instruction (or, for branches, nowhere else).
 * Returns the entry's length, or 0 after reporting a problem.
 */
export function checkPi(
  form: PiForm,
  P: bigint,
  ob: Buffer,
  a: bigint,
  cur: Buffer,
  e: bigint,
  T: Buffer,
  ptr: { addr: bigint; bytes: Buffer; used: number },
  canonOf: (v: bigint) => bigint,
  p: (m: string) => void,
  direct = false,
): number {
  if (!PI_FORMS.includes(form)) {
    p(`unknown form ${form}`);
    return 0;
  }
  const off = P - ptr.addr;
  // A load into a 32-bit register reads a 4-byte slot (pi-table.ts).
  const size = form === 'load' && narrowLoad(decodeOne(ob, a).code) ? NARROW_SLOT : PTR_SLOT;
  if (off < 0n || off % BigInt(size) !== 0n || off + BigInt(size) > BigInt(ptr.used)) {
    p(`pointer slot ${hex(P)} lies outside the used pointer area`);
    return 0;
  }
  const v =
    size === NARROW_SLOT
      ? BigInt(ptr.bytes.readUInt32LE(Number(off)))
      : ptr.bytes.readBigUInt64LE(Number(off));
  const two = form === 'mem2';
  if (two && off + BigInt(2 * PTR_SLOT) > BigInt(ptr.used)) {
    p(`pointer slots ${hex(P)}.. lie outside the used pointer area`);
    return 0;
  }
  const v2 = two ? ptr.bytes.readBigUInt64LE(Number(off) + PTR_SLOT) : undefined;
  return withInstruction(ob, a, (o): number => {
    if (!slotsHold(form, o, P, v, v2, canonOf, p)) return 0;
    if (!reachesEntry(form, o, cur, a, e, p)) return 0;
    if (form === 'jmpptr' && direct) {
      // A table on the image's own pages: the entry jumps straight to what the slot holds.
      const J = decodeOne(T, e);
      if (
        J.code !== Code.Jmp_rel32_64 ||
        J.target !== v ||
        !T.subarray(J.len, JMPPTR_LEN).every((b) => b === 0xcc)
      ) {
        p(`entry ${hex(e)} does not jump straight to ${hex(v)}`);
        return 0;
      }
      return JMPPTR_LEN;
    }
    const sc = scratchOf(form, o, T, e, p);
    if (!sc) return 0;
    const [s1, s2] = sc;
    // The entry, instruction by instruction, against the form's sequence.
    const plan = {
      form,
      value: v,
      scratch: s1 === Register.None ? undefined : s1,
      ...(two ? { value2: v2, scratch2: s2 } : {}),
    };
    if (two && (s2 === Register.None || s2 === s1)) {
      p('the entry does not save two scratch registers');
      return 0;
    }
    return sequenceLength(form, o, plan, P, T, e, p);
  });
}

/** The pointer slots hold what the original used (an address it takes: maybe its stub's). */
function slotsHold(
  form: PiForm,
  o: Instruction,
  P: bigint,
  v: bigint,
  v2: bigint | undefined,
  canonOf: (v: bigint) => bigint,
  p: (m: string) => void,
): boolean {
  const want = piValue(form, o);
  if (want === undefined) {
    p(`the original does not fit the ${form} form`);
    return false;
  }
  // An address the code takes may be its entry stub's (the address every µlib agrees on).
  const takes = form === 'load' || form === 'immreg';
  if (v !== want && !(takes && v === canonOf(want))) {
    p(`pointer slot ${hex(P)} holds ${hex(v)}, the original used ${hex(want)}`);
    return false;
  }
  const imm = form === 'mem2' ? BigInt.asUintN(64, o.immediate(1)) : undefined;
  if (imm !== undefined && v2 !== imm && v2 !== canonOf(imm)) {
    p(`pointer slot ${hex(P + 8n)} holds ${hex(v2!)}, the original's immediate is ${hex(imm)}`);
    return false;
  }
  return true;
}

/** The site reaches its entry: its branch retargeted, or a jmp (call) and int3 (nop) padding. */
function reachesEntry(
  form: PiForm,
  o: Instruction,
  cur: Buffer,
  a: bigint,
  e: bigint,
  p: (m: string) => void,
): boolean {
  const C = decodeOne(cur, a);
  if (form === 'jmpptr') {
    if (C.code !== o.code || C.len !== o.length || !C.nearBranch || C.target !== e) {
      p(`the branch does not reach its entry ${hex(e)}`);
      return false;
    }
    return true;
  }
  const call = PI_PATCH[form] === 'call';
  if (C.code !== (call ? Code.Call_rel32_64 : Code.Jmp_rel32_64) || C.len !== 5 || C.target !== e) {
    p(`the site does not ${call ? 'call' : 'jump to'} its entry ${hex(e)}`);
    return false;
  }
  if (!cur.subarray(5).every((b) => b === (call ? 0x90 : 0xcc))) {
    p(`the rest of the site is not ${call ? 'nop' : 'int3'} padding`);
    return false;
  }
  if (call && o.code !== Code.Call_rm64) {
    p('the original is not an indirect call');
    return false;
  }
  return true;
}

/**
 * The entry's scratch registers (Register.None where it has none), untouched by the original:
 * their values are saved and restored around it. undefined after reporting a problem.
 */
function scratchOf(
  form: PiForm,
  o: Instruction,
  T: Buffer,
  e: bigint,
  p: (m: string) => void,
): [Register, Register] | undefined {
  const pushed = (at: number) => {
    const x = decodeOne(T.subarray(at), e + BigInt(at));
    return x.code === Code.Push_r64
      ? { reg: withInstruction(T.subarray(at), e + BigInt(at), (y) => y.op0Register), len: x.len }
      : { reg: Register.None, len: 0 };
  };
  const s1 = pushed(0);
  const s2 = form === 'mem2' ? pushed(s1.len).reg : Register.None;
  if (form === 'loadmem') {
    // No push: the load's own destination carries the address, which needs it to be written
    // by the load and used nowhere in its memory operand.
    const d = loadDestination(o);
    const first = withInstruction(T, e, (y) =>
      y.code === Code.Mov_r64_rm64 ? y.op0Register : Register.None,
    );
    if (d === undefined || first !== d) {
      p("the entry does not load the address into the instruction's own destination");
      return undefined;
    }
    return [d, s2];
  }
  const used = usedFull(o);
  for (const r of [s1.reg, s2])
    if (r === Register.RSP || used.has(r)) {
      p("the entry's scratch register is one the instruction uses");
      return undefined;
    }
  return [s1.reg, s2];
}

/** The entry holds the form's sequence, then (most forms) a jump back: its length, or 0. */
function sequenceLength(
  form: PiForm,
  o: Instruction,
  plan: PiPlan,
  P: bigint,
  T: Buffer,
  e: bigint,
  p: (m: string) => void,
): number {
  const expect = piInstructions(o, plan, P);
  try {
    let at = e,
      pos = 0;
    for (const x of expect) {
      const same = withInstruction(T.subarray(pos), at, (y) =>
        !y.isInvalid && y.equals(x) ? y.length : 0,
      );
      if (!same) {
        p(`entry ${hex(e)} is not the ${form} sequence for the original instruction`);
        return 0;
      }
      pos += same;
      at += BigInt(same);
    }
    if (jumpsBack(form)) {
      const J = decodeOne(T.subarray(pos), at);
      if (!isJmp(J) || J.target !== o.nextIP) {
        p(`entry ${hex(e)} does not jump back to ${hex(o.nextIP)}`);
        return 0;
      }
      pos += J.len;
    }
    return pos;
  } finally {
    for (const x of expect) x.free();
  }
}

/**
 * Checks one site whose entry holds the µlib's own data's address (`abs`, `callabs`, `jmpabs`): the
 * original's RIP-relative operand reached that data (the same address in every image); the site
 * jumps to its entry (int3 padding after), or for `callabs` calls it (nop padding after, where the
 * call returns); the entry is the original instruction on that absolute address and a jump back,
 * or for an original `call`/`jmp [rip+X]`, `jmp [X]`. Returns the entry's length, or 0.
 */
export function checkAbs(
  form: PiForm,
  ob: Buffer,
  a: bigint,
  cur: Buffer,
  e: bigint,
  T: Buffer,
  ownData: (v: bigint) => boolean,
  p: (m: string) => void,
): number {
  return withInstruction(ob, a, (o): number => {
    if (!o.isIpRelMemoryOperand || o.memoryIndex !== Register.None) {
      p('the original has no RIP-relative operand');
      return 0;
    }
    const X = o.ipRelMemoryAddress;
    if (!ownData(X)) {
      p(`${hex(X)} is not the µlib's own data`);
      return 0;
    }
    const through = form === 'callabs' || form === 'jmpabs';
    if (form === 'jmpabs' && o.code !== Code.Jmp_rm64) {
      p('the original is not a jump through memory');
      return 0;
    }
    // The site calls (callabs: its original an indirect call) or jumps to its entry, padded.
    if (!reachesEntry(form, o, cur, a, e, p)) return 0;
    const expect = piInstructions(o, { form, value: X }, 0n);
    try {
      const len = withInstruction(T, e, (y) =>
        !y.isInvalid && y.equals(expect[0]) ? y.length : 0,
      );
      if (!len) {
        p(
          through
            ? `entry ${hex(e)} is not jmp [${hex(X)}]`
            : `entry ${hex(e)} is not the original instruction on [${hex(X)}]`,
        );
        return 0;
      }
      if (through) return len;
      const J = decodeOne(T.subarray(len), e + BigInt(len));
      if (!isJmp(J) || J.target !== o.nextIP) {
        p(`entry ${hex(e)} does not jump back to ${hex(o.nextIP)}`);
        return 0;
      }
      return len + J.len;
    } finally {
      for (const x of expect) x.free();
    }
  });
}

/** Bytes of table an entry check looks at: no entry is longer than piBound(15, 2) = 45 bytes. */
export const ENTRY_WINDOW = 128;

/** The table, pointer area and code the rewriter makes from these sites in ASLR mode. */
export function reencodePi(
  sites: RewriteRecord['ulibs'][number]['sites'],
  analysed: ImageSite[] | undefined,
  indAddr: bigint,
  size: number,
  ptrAddr: bigint,
  ptrSize: number,
  textAddr: bigint,
  orig: Buffer,
  name: string,
  canon: (v: bigint) => bigint,
  direct?: boolean,
): { table: Buffer; code: Buffer; ptr: Buffer } | string {
  if (!analysed || analysed.length !== sites.length)
    return 'the recorded sites cannot be encoded again (the analysis differs)';
  try {
    const t = buildPiTable({
      addr: indAddr,
      size,
      ptrAddr,
      ptrSize,
      what: name,
      canon,
      direct,
      sites: sites.map((s, k) => ({
        kind: s.k,
        ip: BigInt(s.a),
        orig: Buffer.from(s.o, 'hex'),
        outside: analysed[k].outside,
        targets: analysed[k].targets,
        ownData: analysed[k].ownData,
      })),
    });
    const code = Buffer.from(orig);
    sites.forEach((s, k) => {
      const O = decodeOne(Buffer.from(s.o, 'hex'), BigInt(s.a));
      const plan = t.plans[k];
      if (plan?.form !== s.f)
        throw new Error(
          `site ${s.a}: recorded form ${s.f ?? 'classic'}, a fresh plan gives ${plan?.form ?? 'classic'}`,
        );
      if (plan) patchPi(code, textAddr, O.ip, O.len, O.immOff, plan.form, t.entryAt[k], name);
      else patchSite(code, textAddr, O, s.k, t.entryAt[k], name);
      if (s.c !== undefined) retarget(code, textAddr, O, BigInt(s.c), name);
    });
    return { table: t.bytes, code, ptr: t.ptr };
  } catch (e) {
    return `the recorded sites cannot be encoded again (${(e as Error).message})`;
  }
}
