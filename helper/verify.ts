// `spacer verify IMAGE`: proves a rewritten image does what the original did. From the record in
// `.spacer.rewrite` it rebuilds each µlib's original code (the image's bytes with the recorded
// original bytes put back at the sites) and checks:
//   - only the sites changed (SHA-256 of the rebuilt code = the recorded hash of the original);
//   - the rewrite missed nothing (the analysis of the rebuilt code finds exactly the recorded sites);
//   - every site reaches the same absolute targets as its original instruction, decoded at its
//     original address: a stub jumps to the original branch target, a GOT slot holds the original
//     lea address, a trampoline holds the same instruction (same absolute operands) followed by a
//     jump to the next original instruction, an indirect call pushes the original return address
//     and jumps through the same memory operand;
//   - table entries do not overlap and the unused part of the table is still 0xCC.
import { createHash } from 'node:crypto';
import { type ElfFile } from './elf.js';
import { SpacerError } from './errors.js';
import {
  analyzeUlib, loadImage, planFromRecord, readRecord, REWRITE_SECTION, type RewriteRecord,
} from './rewrite.js';
import { type SiteKind } from './x86/classify.js';
import { Code, FlowControl, decodeOne, hex, withInstruction } from './x86/decode.js';
import { patchSite } from './x86/tactics.js';
import { buildTable, type Move } from './x86/table.js';

/** Problems of a rewritten image (empty: verified). Throws a SpacerError for an unreadable file. */
export function verifyImage(dbgPath: string): string[] {
  const elf = loadImage(dbgPath);
  let rec: RewriteRecord | undefined;
  try {
    rec = readRecord(elf);
  } catch (e) {
    if (e instanceof SpacerError) return [e.message];
    throw e;
  }
  if (!rec) return [`${dbgPath}: no ${REWRITE_SECTION} section: the image was not rewritten`];
  return verifyRecord(elf, rec);
}

const isJmp = (i: { nearBranch: boolean; flow: FlowControl }) => i.nearBranch && i.flow === FlowControl.UnconditionalBranch;

/** Checks `elf` against a rewrite record (also run by the rewriter before it writes anything). */
export function verifyRecord(elf: ElfFile, rec: RewriteRecord): string[] {
  const problems: string[] = [];
  const plan = planFromRecord(rec);
  for (const ru of rec.ulibs) {
    const p = (msg: string) => problems.push(`${ru.name}: ${msg}`);
    const before = problems.length;
    const text = elf.section(ru.text);
    if (!text || hex(text.addr) !== ru.textAddr || Number(text.size) !== ru.textSize) {
      p(`${ru.text} is missing or moved (recorded at ${ru.textAddr}, ${ru.textSize} bytes)`);
      continue;
    }
    const ind = elf.section(ru.ind.section);
    if (!ind || hex(ind.addr) !== ru.ind.addr || ind.size < BigInt(ru.ind.size)) {
      p(`${ru.ind.section} is missing or moved (recorded at ${ru.ind.addr})`);
      continue;
    }
    const code = elf.contents(text);
    const table = elf.contents(ind).subarray(0, ru.ind.size);
    const tlo = ind.addr, tend = ind.addr + BigInt(ru.ind.used);
    const at = (e: bigint) => table.subarray(Number(e - tlo), Number(tend - tlo));
    if (!table.subarray(ru.ind.used).every((b) => b === 0xcc)) p(`${ru.ind.section}: bytes after the ${ru.ind.used} used ones are not 0xCC`);

    // Rebuild the original code and compare with the recorded hash.
    const orig = Buffer.from(code);
    let ok = true;
    for (const s of ru.sites) {
      const off = Number(BigInt(s.a) - text.addr), o = Buffer.from(s.o, 'hex');
      if (off < 0 || off + o.length > orig.length || !o.length) { p(`site ${s.a} lies outside ${ru.text}`); ok = false; continue; }
      o.copy(orig, off);
    }
    if (!ok) continue;
    if (createHash('sha256').update(orig).digest('hex') !== ru.textSha256) p(`${ru.text} differs from the original outside the recorded sites`);

    // Nothing missed: the original code has exactly the recorded sites.
    const u = plan.ulibs.find((x) => x.name === ru.name);
    if (!u) p('not in the recorded plan');
    else {
      try {
        const a = analyzeUlib(elf, u, rec.mode, orig);
        const want = (a?.sites ?? []).map((s) => `${hex(s.insn.ip)}:${s.kind}`).join(' ');
        const got = ru.sites.map((s) => `${s.a}:${s.k}`).join(' ');
        if (want !== got) p(`the recorded sites are not the ones the original code needs (recorded ${ru.sites.length}, needed ${a?.sites.length ?? 0})`);
      } catch (e) {
        p(`the original code cannot be analysed (${(e as Error).message})`);
      }
    }

    // Every site, against its original instruction.
    const extents = new Map<bigint, number>();
    const entry = (e: bigint, len: number, what: string): boolean => {
      if (e < tlo || e + BigInt(len) > tend) { p(`${what}: table entry ${hex(e)} lies outside the used table`); return false; }
      const prev = extents.get(e);
      if (prev !== undefined && prev !== len) p(`${what}: table entry ${hex(e)} is used with two sizes`);
      extents.set(e, Math.max(prev ?? 0, len));
      return true;
    };
    for (const s of ru.sites) {
      const a = BigInt(s.a), e = BigInt(s.e), ob = Buffer.from(s.o, 'hex');
      const what = `site ${s.a} (${s.k})`;
      const O = decodeOne(ob, a);
      if (O.invalid || O.len !== ob.length) { p(`${what}: the recorded original bytes are not one instruction`); continue; }
      const off = Number(a - text.addr), cur = code.subarray(off, off + O.len);
      const C = decodeOne(cur, a);
      const next = a + BigInt(O.len);
      if (e < tlo || e >= tend) { p(`${what}: table entry ${s.e} lies outside ${ru.ind.section}'s used part`); continue; }
      switch (s.k) {
        case 'stub': {
          if (!O.nearBranch) { p(`${what}: the original is not a relative branch`); break; }
          if (C.code !== O.code || C.len !== O.len || !C.nearBranch || C.target !== e) { p(`${what}: the branch does not reach its stub ${s.e}`); break; }
          const rest = (b: Buffer) => Buffer.concat([b.subarray(0, O.immOff), b.subarray(O.immOff + O.immSize)]);
          if (!rest(Buffer.from(cur)).equals(rest(ob))) p(`${what}: bytes other than the displacement changed`);
          const J = decodeOne(at(e), e);
          if (!isJmp(J) || J.target !== O.target) p(`${what}: stub ${s.e} does not jump to ${hex(O.target)}`);
          else entry(e, J.len, what);
          break;
        }
        case 'got': {
          if (!O.ipRel || (O.code !== Code.Lea_r64_m && O.code !== Code.Lea_r32_m)) { p(`${what}: the original is not a RIP-relative lea`); break; }
          const mov = O.code === Code.Lea_r64_m ? Code.Mov_r64_rm64 : Code.Mov_r32_rm32;
          if (C.code !== mov || C.len !== O.len || C.op0Register !== O.op0Register || !C.ipRel || C.memAddr !== e) { p(`${what}: the instruction is not a load of slot ${s.e} into the lea's register`); break; }
          if (!entry(e, 8, what)) break;
          const v = table.readBigUInt64LE(Number(e - tlo));
          if (v !== O.memAddr) p(`${what}: GOT slot ${s.e} holds ${hex(v)}, the lea computed ${hex(O.memAddr)}`);
          break;
        }
        case 'trampoline':
        case 'callind': {
          if (C.code !== Code.Jmp_rel32_64 || C.len !== 5 || C.target !== e) { p(`${what}: the site does not jump to its trampoline ${s.e}`); break; }
          if (!cur.subarray(5).every((b) => b === 0xcc)) p(`${what}: the rest of the site is not int3 padding`);
          const T = at(e);
          let len = 0;
          if (s.k === 'trampoline') {
            const T1 = decodeOne(T, e);
            if (T1.invalid || !withInstruction(ob, a, (x) => withInstruction(T, e, (y) => y.equals(x)))) { p(`${what}: trampoline ${s.e} does not hold the original instruction with the same operands`); break; }
            if (T1.len > O.len) p(`${what}: the moved instruction is longer than the original`);
            const T2 = decodeOne(T.subarray(T1.len), e + BigInt(T1.len));
            if (!isJmp(T2) || T2.target !== next) { p(`${what}: trampoline ${s.e} does not jump back to ${hex(next)}`); break; }
            len = T1.len + T2.len;
          } else {
            if (O.code !== Code.Call_rm64) { p(`${what}: the original is not an indirect call`); break; }
            const T1 = decodeOne(T, e);
            if (T1.code !== Code.Pushq_imm32 || T.length < 5 || BigInt(T.readInt32LE(1)) !== next) { p(`${what}: trampoline ${s.e} does not push the return address ${hex(next)}`); break; }
            const same = withInstruction(ob, a, (x) => {
              const j = x.clone();
              try {
                j.code = Code.Jmp_rm64;
                return withInstruction(T.subarray(T1.len), e + BigInt(T1.len), (y) => y.equals(j));
              } finally {
                j.free();
              }
            });
            if (!same) { p(`${what}: trampoline ${s.e} does not jump through the call's memory operand`); break; }
            len = T1.len + decodeOne(T.subarray(T1.len), e + BigInt(T1.len)).len;
          }
          entry(e, len, what);
          break;
        }
        default:
          p(`${what}: unknown kind`);
      }
    }
    // Byte for byte: a fresh encoding of the recorded sites gives this table and this code (the
    // checks above are semantic; this also catches changes that happen to decode equivalently).
    if (problems.length === before) {
      const fresh = reencode(ru.sites, ind.addr, ru.ind.size, text.addr, orig, ru.name);
      if (typeof fresh === 'string') p(fresh);
      else {
        const dt = firstDiff(fresh.table.subarray(0, ru.ind.used), table.subarray(0, ru.ind.used));
        if (dt >= 0 || fresh.table.length !== table.length) p(`${ru.ind.section}: byte at ${hex(ind.addr + BigInt(Math.max(dt, 0)))} differs from a fresh encoding of the recorded sites`);
        const dc = firstDiff(fresh.code, code);
        if (dc >= 0) p(`${ru.text}: byte at ${hex(text.addr + BigInt(dc))} differs from a fresh rewrite of the recorded sites`);
      }
    }
    // Entries must not overlap (shared stubs and slots are one entry).
    const sorted = [...extents.entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i - 1][0] + BigInt(sorted[i - 1][1]) > sorted[i][0]) p(`table entries ${hex(sorted[i - 1][0])} and ${hex(sorted[i][0])} overlap`);
    }
  }
  // Every µlib of the plan that has a table and code must have been rewritten.
  for (const u of plan.ulibs) {
    if (u.ind && elf.section(u.text) && !rec.ulibs.some((r) => r.name === u.name)) problems.push(`${u.name}: has a table in the plan but no record`);
  }
  return problems;
}

function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** The table and code the rewriter makes from these sites (same order, same sharing). */
function reencode(sites: RewriteRecord['ulibs'][number]['sites'], indAddr: bigint, size: number, textAddr: bigint, orig: Buffer, name: string): { table: Buffer; code: Buffer } | string {
  try {
    const got = new Set<bigint>(), stubs = new Set<bigint>(), moves: Move[] = [];
    const targets = sites.map((s) => {
      const O = decodeOne(Buffer.from(s.o, 'hex'), BigInt(s.a));
      return s.k === 'stub' ? O.target : s.k === 'got' ? O.memAddr : 0n;
    });
    sites.forEach((s, i) => {
      if (s.k === 'got') got.add(targets[i]);
      else if (s.k === 'stub') stubs.add(targets[i]);
      else moves.push({ kind: s.k as Extract<SiteKind, 'trampoline' | 'callind'>, ip: BigInt(s.a), orig: Buffer.from(s.o, 'hex') });
    });
    const t = buildTable({ addr: indAddr, size, got: [...got], stubs: [...stubs], moves, what: name });
    const code = Buffer.from(orig);
    let m = 0;
    sites.forEach((s, i) => {
      const entry = s.k === 'stub' ? t.stubAt.get(targets[i])! : s.k === 'got' ? t.gotAt.get(targets[i])! : t.moveAt[m++];
      patchSite(code, textAddr, decodeOne(Buffer.from(s.o, 'hex'), BigInt(s.a)), s.k, entry, name);
    });
    return { table: t.bytes, code };
  } catch (e) {
    return `the recorded sites cannot be encoded again (${(e as Error).message})`;
  }
}
