// verify's check of each recorded site of a µlib against its original instruction, decoded at its
// original address: a stub jumps to the original branch target, a GOT slot holds the original lea
// address, a trampoline holds the same instruction followed by a jump back, an indirect call
// pushes the original return address and jumps through the same memory operand, and a
// position-independent entry does what its form says (encode.ts).
import { isDirect, retarget } from '../rewrite/clones.js';
import { type RecordSite } from '../rewrite/record.js';
import { Code, decodeOne, withInstruction, type Insn } from '../x86/decode.js';
import { slotLoadCode, slotLoadValue } from '../x86/classify.js';
import { hex } from '../util/units.js';
import { checkAbs, checkPi, isJmp } from './encode.js';
import { slotless } from '../x86/pi.js';

/** What the checks of one µlib's sites share. */
export interface SiteCheck {
  /** Its code as the image holds it, and the code section's address. */
  code: Buffer;
  textAddr: bigint;
  indSection: string;
  /** The used part of the table: [tlo, tend). */
  tlo: bigint;
  tend: bigint;
  table: Buffer;
  /** An entry's bytes (at most ENTRY_WINDOW, never past the used table). */
  at: (e: bigint) => Buffer;
  ptr?: { addr: bigint; bytes: Buffer; used: number };
  /** The copies after the table: the copy's address -> the function's. */
  copies: Map<bigint, bigint>;
  /** An address inside the µlib's own data. */
  ownData: (v: bigint) => boolean;
  canonOf: (v: bigint) => bigint;
  own?: boolean;
  /** Marks a table entry of `len` bytes as used (false: outside the used table). */
  entry: (e: bigint, len: number, what: string) => boolean;
  p: (msg: string) => void;
}

/** One recorded site against its original instruction. */
export function checkSite(c: SiteCheck, s: RecordSite): void {
  const a = BigInt(s.a),
    e = BigInt(s.e),
    ob = Buffer.from(s.o, 'hex');
  const what = `site ${s.a} (${s.k})`;
  const p = (m: string) => c.p(`${what}: ${m}`);
  const O = decodeOne(ob, a);
  if (O.invalid || O.len !== ob.length) {
    p('the recorded original bytes are not one instruction');
    return;
  }
  const off = Number(a - c.textAddr),
    cur = c.code.subarray(off, off + O.len);
  const C = decodeOne(cur, a);
  if (e < c.tlo || e >= c.tend) {
    p(`table entry ${s.e} lies outside ${c.indSection}'s used part`);
    return;
  }
  const site: Site = { s, a, e, ob, O, C, cur, what, p };
  if (s.f !== undefined) checkPiSite(c, site);
  else if (s.k === 'stub') checkStub(c, site);
  else if (s.k === 'got') checkGot(c, site);
  else if (s.k === 'trampoline') checkTrampoline(c, site);
  else if (s.k === 'callind') checkCallind(c, site);
  else p('unknown kind');
}

/** A site decoded: its original (O) and current (C) instruction, its entry `e`. */
interface Site {
  s: RecordSite;
  a: bigint;
  e: bigint;
  ob: Buffer;
  O: Insn;
  C: Insn;
  cur: Buffer;
  what: string;
  p: (m: string) => void;
}

function checkPiSite(c: SiteCheck, x: Site): void {
  const { s, a, e, ob, O, C, p } = x;
  if (!c.ptr) {
    p('a pointer slot but no pointer area');
    return;
  }
  let site = x.cur;
  if (s.c !== undefined) {
    // It reaches a copy of its target: check that, then the rest as if it reached its entry.
    const cp = BigInt(s.c);
    if (s.f !== 'jmpptr' || !isDirect(O) || c.copies.get(cp) !== O.target) {
      p(`${s.c} is no copy of its target ${hex(O.target)}`);
      return;
    }
    if (C.code !== O.code || C.len !== O.len || C.target !== cp) {
      p(`the branch does not reach the copy ${s.c}`);
      return;
    }
    site = Buffer.from(x.cur);
    retarget(site, a, O, e, x.what);
  }
  const len =
    s.f !== undefined && slotless(s.f)
      ? checkAbs(s.f, ob, a, site, e, c.at(e), c.ownData, p)
      : checkPi(s.f!, BigInt(s.p!), ob, a, site, e, c.at(e), c.ptr, c.canonOf, p, c.own);
  if (len) c.entry(e, len, x.what);
}

function checkStub(c: SiteCheck, x: Site): void {
  const { s, e, ob, O, C, p } = x;
  if (!O.nearBranch) {
    p('the original is not a relative branch');
    return;
  }
  if (C.code !== O.code || C.len !== O.len || !C.nearBranch || C.target !== e) {
    p(`the branch does not reach its stub ${s.e}`);
    return;
  }
  const rest = (b: Buffer) =>
    Buffer.concat([b.subarray(0, O.immOff), b.subarray(O.immOff + O.immSize)]);
  if (!rest(Buffer.from(x.cur)).equals(rest(ob))) p('bytes other than the displacement changed');
  const J = decodeOne(c.at(e), e);
  if (!isJmp(J) || J.target !== O.target) p(`stub ${s.e} does not jump to ${hex(O.target)}`);
  else c.entry(e, J.len, x.what);
}

function checkGot(c: SiteCheck, x: Site): void {
  const { s, e, O, C, p } = x;
  if (!O.ipRel || (O.code !== Code.Lea_r64_m && O.code !== Code.Lea_r32_m)) {
    p('the original is not a RIP-relative lea');
    return;
  }
  const mov = O.code === Code.Lea_r64_m ? Code.Mov_r64_rm64 : Code.Mov_r32_rm32;
  if (
    C.code !== mov ||
    C.len !== O.len ||
    C.op0Register !== O.op0Register ||
    !C.ipRel ||
    C.memAddr !== e
  ) {
    p(`the instruction is not a load of slot ${s.e} into the lea's register`);
    return;
  }
  if (!c.entry(e, 8, x.what)) return;
  const v = c.table.readBigUInt64LE(Number(e - c.tlo));
  if (v !== O.memAddr) p(`GOT slot ${s.e} holds ${hex(v)}, the lea computed ${hex(O.memAddr)}`);
}

/** A trampoline or indirect call: the site is `jmp entry` and int3 padding. */
function jumpsToEntry(x: Site): boolean {
  if (x.C.code !== Code.Jmp_rel32_64 || x.C.len !== 5 || x.C.target !== x.e) {
    x.p(`the site does not jump to its trampoline ${x.s.e}`);
    return false;
  }
  if (!x.cur.subarray(5).every((b) => b === 0xcc)) x.p('the rest of the site is not int3 padding');
  return true;
}

function checkTrampoline(c: SiteCheck, x: Site): void {
  const { s, a, e, ob, O, p } = x;
  if (!jumpsToEntry(x)) return;
  if (s.g !== undefined) {
    checkSlotLoad(c, x, BigInt(s.g));
    return;
  }
  const T = c.at(e);
  const T1 = decodeOne(T, e);
  if (T1.invalid || !withInstruction(ob, a, (i) => withInstruction(T, e, (y) => y.equals(i)))) {
    p(`trampoline ${s.e} does not hold the original instruction with the same operands`);
    return;
  }
  if (T1.len > O.len) p('the moved instruction is longer than the original');
  const next = a + BigInt(O.len);
  const T2 = decodeOne(T.subarray(T1.len), e + BigInt(T1.len));
  if (!isJmp(T2) || T2.target !== next) {
    p(`trampoline ${s.e} does not jump back to ${hex(next)}`);
    return;
  }
  c.entry(e, T1.len + T2.len, x.what);
}

/** A slot-load trampoline: a load of slot `g` (which holds the original's immediate) into the
 * original's register, of its width, then a jump back. */
function checkSlotLoad(c: SiteCheck, x: Site, g: bigint): void {
  const { s, a, e, ob, O, p } = x;
  const load = slotLoadCode(O, ['imm']);
  if (load === undefined) {
    p('the original is not a mov of an immediate into a register');
    return;
  }
  const T = c.at(e);
  const T1 = decodeOne(T, e);
  if (
    T1.invalid ||
    T1.code !== load ||
    T1.op0Register !== O.op0Register ||
    !T1.ipRel ||
    T1.memAddr !== g
  ) {
    p(`trampoline ${s.e} does not load slot ${s.g} into the original's register`);
    return;
  }
  if (!c.entry(g, 8, x.what)) return;
  const imm = slotLoadValue(O, ob);
  const v = c.table.readBigUInt64LE(Number(g - c.tlo));
  if (v !== imm) p(`slot ${s.g} holds ${hex(v)}, the original loaded ${hex(imm)}`);
  const next = a + BigInt(O.len);
  const T2 = decodeOne(T.subarray(T1.len), e + BigInt(T1.len));
  if (!isJmp(T2) || T2.target !== next) {
    p(`trampoline ${s.e} does not jump back to ${hex(next)}`);
    return;
  }
  c.entry(e, T1.len + T2.len, x.what);
}

function checkCallind(c: SiteCheck, x: Site): void {
  const { s, a, e, ob, O, p } = x;
  if (!jumpsToEntry(x)) return;
  const T = c.at(e);
  if (O.code !== Code.Call_rm64) {
    p('the original is not an indirect call');
    return;
  }
  const next = a + BigInt(O.len);
  const T1 = decodeOne(T, e);
  if (T1.code !== Code.Pushq_imm32 || T.length < 5 || BigInt(T.readInt32LE(1)) !== next) {
    p(`trampoline ${s.e} does not push the return address ${hex(next)}`);
    return;
  }
  const same = withInstruction(ob, a, (i) => {
    const j = i.clone();
    try {
      j.code = Code.Jmp_rm64;
      return withInstruction(T.subarray(T1.len), e + BigInt(T1.len), (y) => y.equals(j));
    } finally {
      j.free();
    }
  });
  if (!same) {
    p(`trampoline ${s.e} does not jump through the call's memory operand`);
    return;
  }
  c.entry(e, T1.len + decodeOne(T.subarray(T1.len), e + BigInt(T1.len)).len, x.what);
}
