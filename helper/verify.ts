// `spacer verify IMAGE`: proves a rewritten image does what the original did. From the record in
// `.spacer.rewrite` it rebuilds each µlib's original code (the image's bytes with the recorded
// original bytes put back at the sites) and checks:
//   - only the sites changed (SHA-256 of the rebuilt code = the recorded hash of the original);
// - the rewrite missed nothing (the analysis of the rebuilt code finds exactly the recorded sites);
//   - every site reaches the same absolute targets as its original instruction, decoded at its
//     original address: a stub jumps to the original branch target, a GOT slot holds the original
//     lea address, a trampoline holds the same instruction (same absolute operands) followed by a
//     jump to the next original instruction, an indirect call pushes the original return address
//     and jumps through the same memory operand;
//   - table entries do not overlap and the unused part of the table is still 0xCC.
import { createHash } from 'node:crypto';
import { type ElfFile } from './elf.js';
import { SpacerError, isSpacerError } from './errors.js';
import { analyzeUlib } from './rewrite/analyze.js';
import { cloneSources, isDirect, retarget, type CloneSource } from './rewrite/clones.js';
import { loadImage, planFromRecord, readRecord, type RewriteRecord } from './rewrite/record.js';
import { REWRITE_SECTION, type ImageSite } from './rewrite/types.js';
import { cloneLayout } from './x86/clone.js';
import { Code, decodeOne, withInstruction } from './x86/decode.js';
import { hex } from './util/units.js';
import {
  STUB,
  dataAddressFields,
  dataSections,
  readAddress,
  slotsAfterStubs,
  stubMap,
} from './x86/entries.js';
import {
  checkAbs,
  checkPi,
  ENTRY_WINDOW,
  firstDiff,
  isJmp,
  reencode,
  reencodePi,
} from './verify/encode.js';

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

/** Checks `elf` against a rewrite record (also run by the rewriter before it writes anything). */
export function verifyRecord(elf: ElfFile, rec: RewriteRecord): string[] {
  const problems: string[] = [];
  const plan = planFromRecord(rec);
  // ASLR mode: the entry stubs every µlib agrees on (an address of code -> its stub's).
  const stubs = rec.ulibs
    .filter((u) => u.stubs)
    .map((u) => ({
      name: u.name,
      s: { at: BigInt(u.stubs!.at), targets: u.stubs!.targets.map((x) => BigInt(x)) },
    }));
  const canon = stubMap(stubs.map((x) => x.s));
  const canonOf = (v: bigint) => canon.get(v) ?? v;
  let sourcesOf: ((name: string) => CloneSource | undefined) | undefined;
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
    let ptr: { addr: bigint; bytes: Buffer; used: number } | undefined;
    if (ru.ptr) {
      const ps = elf.section(ru.ptr.section);
      if (
        !ps ||
        hex(ps.addr) !== ru.ptr.addr ||
        ps.size < BigInt(ru.ptr.size) ||
        ru.ptr.used > ru.ptr.size
      ) {
        p(`${ru.ptr.section} is missing or moved (recorded at ${ru.ptr.addr})`);
        continue;
      }
      ptr = { addr: ps.addr, bytes: elf.contents(ps).subarray(0, ru.ptr.size), used: ru.ptr.used };
      if (!ptr.bytes.subarray(ru.ptr.used).every((b) => b === 0xcc))
        p(`${ru.ptr.section}: bytes after the ${ru.ptr.used} used ones are not 0xCC`);
    }
    const tlo = ind.addr,
      tend = ind.addr + BigInt(ru.ind.used);
    // An entry's bytes, up to the end of the used table but never more than ENTRY_WINDOW: every
    // decode of an entry copies what it is given into iced's memory.
    const at = (e: bigint) =>
      table.subarray(Number(e - tlo), Math.min(Number(tend - tlo), Number(e - tlo) + ENTRY_WINDOW));
    if (!table.subarray(ru.ind.used).every((b) => b === 0xcc))
      p(`${ru.ind.section}: bytes after the ${ru.ind.used} used ones are not 0xCC`);
    // Copies after the table: each the same bytes as a function that runs the same anywhere, one
    // after the other from the next 16 bytes; the rest of the section is 0xCC.
    const copies = new Map<bigint, bigint>(); // the copy's address -> the function's
    if (ru.clones?.length) {
      sourcesOf ??= cloneSources(elf);
      const all = elf.contents(ind),
        blank = Buffer.from(all);
      const lay = cloneLayout(
        ind.addr + BigInt(ru.ind.size),
        ru.clones.map((c) => c.size),
      );
      for (const [k, c] of ru.clones.entries()) {
        const at = BigInt(c.at),
          src = sourcesOf(c.sym),
          want = lay.at[k];
        if (at !== want) {
          p(`the copy of ${c.sym} is at ${c.at}, not at ${hex(want)}`);
          break;
        }
        if (!src || hex(src.addr) !== c.from || src.bytes.length !== c.size) {
          p(`the copy of ${c.sym} is of no function of ${c.size} bytes at ${c.from}`);
          break;
        }
        if (src.refusal) {
          p(`the copy of ${c.sym} would not run the same: ${src.refusal}`);
          break;
        }
        const off = Number(at - ind.addr);
        if (off + c.size > all.length || !all.subarray(off, off + c.size).equals(src.bytes)) {
          p(`the copy of ${c.sym} at ${c.at} differs from ${c.sym} at ${c.from}`);
          break;
        }
        blank.fill(0xcc, off, off + c.size);
        copies.set(at, src.addr);
      }
      if (!blank.subarray(ru.ind.size).every((b) => b === 0xcc))
        p(`${ru.ind.section}: bytes after the table other than the copies are not 0xCC`);
    }

    // Rebuild the original code and compare with the recorded hash.
    const orig = Buffer.from(code);
    let ok = true;
    for (const s of ru.sites) {
      const off = Number(BigInt(s.a) - text.addr),
        o = Buffer.from(s.o, 'hex');
      if (off < 0 || off + o.length > orig.length || !o.length) {
        p(`site ${s.a} lies outside ${ru.text}`);
        ok = false;
        continue;
      }
      o.copy(orig, off);
    }
    if (!ok) continue;
    if (createHash('sha256').update(orig).digest('hex') !== ru.textSha256)
      p(`${ru.text} differs from the original outside the recorded sites`);

    // Nothing missed: the original code has exactly the recorded sites.
    const u = plan.ulibs.find((x) => x.name === ru.name);
    let analysed: ImageSite[] | undefined;
    if (!u) p('not in the recorded plan');
    else {
      try {
        const a = analyzeUlib(elf, u, rec.mode, orig);
        analysed = a?.sites;
        const want = (a?.sites ?? []).map((s) => `${hex(s.insn.ip)}:${s.kind}`).join(' ');
        const got = ru.sites.map((s) => `${s.a}:${s.k}`).join(' ');
        if (want !== got)
          p(
            `the recorded sites are not the ones the original code needs (recorded ${ru.sites.length}, needed ${a?.sites.length ?? 0})`,
          );
      } catch (e) {
        // A user's image or record that cannot be analysed is a problem; a bug is not.
        if (!isSpacerError(e)) throw e;
        p(`the original code cannot be analysed (${e.message})`);
      }
    }

    // Every site, against its original instruction.
    const extents = new Map<bigint, number>();
    // The µlib's own data (its sections other than its code): what an `abs` entry may address.
    const ownRanges = (u?.sections ?? [])
      .filter((n) => n !== ru.text)
      .map((n) => elf.section(n))
      .filter((x) => x !== undefined)
      .map((x) => [x!.addr, x!.addr + x!.size] as const);
    const ownData = (v: bigint) => ownRanges.some(([lo, hi]) => v >= lo && v < hi);
    const entry = (e: bigint, len: number, what: string): boolean => {
      if (e < tlo || e + BigInt(len) > tend) {
        p(`${what}: table entry ${hex(e)} lies outside the used table`);
        return false;
      }
      const prev = extents.get(e);
      if (prev !== undefined && prev !== len)
        p(`${what}: table entry ${hex(e)} is used with two sizes`);
      extents.set(e, Math.max(prev ?? 0, len));
      return true;
    };
    for (const s of ru.sites) {
      const a = BigInt(s.a),
        e = BigInt(s.e),
        ob = Buffer.from(s.o, 'hex');
      const what = `site ${s.a} (${s.k})`;
      const O = decodeOne(ob, a);
      if (O.invalid || O.len !== ob.length) {
        p(`${what}: the recorded original bytes are not one instruction`);
        continue;
      }
      const off = Number(a - text.addr),
        cur = code.subarray(off, off + O.len);
      const C = decodeOne(cur, a);
      const next = a + BigInt(O.len);
      if (e < tlo || e >= tend) {
        p(`${what}: table entry ${s.e} lies outside ${ru.ind.section}'s used part`);
        continue;
      }
      if (s.f !== undefined) {
        if (!ptr) {
          p(`${what}: a pointer slot but no pointer area`);
          continue;
        }
        let site = cur;
        if (s.c !== undefined) {
          // It reaches a copy of its target: check that, then the rest as if it reached its entry.
          const c = BigInt(s.c);
          if (s.f !== 'jmpptr' || !isDirect(O) || copies.get(c) !== O.target) {
            p(`${what}: ${s.c} is no copy of its target ${hex(O.target)}`);
            continue;
          }
          if (C.code !== O.code || C.len !== O.len || C.target !== c) {
            p(`${what}: the branch does not reach the copy ${s.c}`);
            continue;
          }
          site = Buffer.from(cur);
          retarget(site, a, O, e, what);
        }
        const len =
          s.f === 'abs'
            ? checkAbs(ob, a, site, e, at(e), ownData, (m) => p(`${what}: ${m}`))
            : checkPi(
                s.f,
                BigInt(s.p!),
                ob,
                a,
                site,
                e,
                at(e),
                ptr,
                canonOf,
                (m) => p(`${what}: ${m}`),
                u?.own,
              );
        if (len) entry(e, len, what);
        continue;
      }
      switch (s.k) {
        case 'stub': {
          if (!O.nearBranch) {
            p(`${what}: the original is not a relative branch`);
            break;
          }
          if (C.code !== O.code || C.len !== O.len || !C.nearBranch || C.target !== e) {
            p(`${what}: the branch does not reach its stub ${s.e}`);
            break;
          }
          const rest = (b: Buffer) =>
            Buffer.concat([b.subarray(0, O.immOff), b.subarray(O.immOff + O.immSize)]);
          if (!rest(Buffer.from(cur)).equals(rest(ob)))
            p(`${what}: bytes other than the displacement changed`);
          const J = decodeOne(at(e), e);
          if (!isJmp(J) || J.target !== O.target)
            p(`${what}: stub ${s.e} does not jump to ${hex(O.target)}`);
          else entry(e, J.len, what);
          break;
        }
        case 'got': {
          if (!O.ipRel || (O.code !== Code.Lea_r64_m && O.code !== Code.Lea_r32_m)) {
            p(`${what}: the original is not a RIP-relative lea`);
            break;
          }
          const mov = O.code === Code.Lea_r64_m ? Code.Mov_r64_rm64 : Code.Mov_r32_rm32;
          if (
            C.code !== mov ||
            C.len !== O.len ||
            C.op0Register !== O.op0Register ||
            !C.ipRel ||
            C.memAddr !== e
          ) {
            p(`${what}: the instruction is not a load of slot ${s.e} into the lea's register`);
            break;
          }
          if (!entry(e, 8, what)) break;
          const v = table.readBigUInt64LE(Number(e - tlo));
          if (v !== O.memAddr)
            p(`${what}: GOT slot ${s.e} holds ${hex(v)}, the lea computed ${hex(O.memAddr)}`);
          break;
        }
        case 'trampoline':
        case 'callind': {
          if (C.code !== Code.Jmp_rel32_64 || C.len !== 5 || C.target !== e) {
            p(`${what}: the site does not jump to its trampoline ${s.e}`);
            break;
          }
          if (!cur.subarray(5).every((b) => b === 0xcc))
            p(`${what}: the rest of the site is not int3 padding`);
          const T = at(e);
          let len = 0;
          if (s.k === 'trampoline') {
            const T1 = decodeOne(T, e);
            if (
              T1.invalid ||
              !withInstruction(ob, a, (x) => withInstruction(T, e, (y) => y.equals(x)))
            ) {
              p(
                `${what}: trampoline ${s.e} does not hold the original instruction with the same operands`,
              );
              break;
            }
            if (T1.len > O.len) p(`${what}: the moved instruction is longer than the original`);
            const T2 = decodeOne(T.subarray(T1.len), e + BigInt(T1.len));
            if (!isJmp(T2) || T2.target !== next) {
              p(`${what}: trampoline ${s.e} does not jump back to ${hex(next)}`);
              break;
            }
            len = T1.len + T2.len;
          } else {
            if (O.code !== Code.Call_rm64) {
              p(`${what}: the original is not an indirect call`);
              break;
            }
            const T1 = decodeOne(T, e);
            if (T1.code !== Code.Pushq_imm32 || T.length < 5 || BigInt(T.readInt32LE(1)) !== next) {
              p(`${what}: trampoline ${s.e} does not push the return address ${hex(next)}`);
              break;
            }
            const same = withInstruction(ob, a, (x) => {
              const j = x.clone();
              try {
                j.code = Code.Jmp_rm64;
                return withInstruction(T.subarray(T1.len), e + BigInt(T1.len), (y) => y.equals(j));
              } finally {
                j.free();
              }
            });
            if (!same) {
              p(`${what}: trampoline ${s.e} does not jump through the call's memory operand`);
              break;
            }
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
      const st = stubs.find((x) => x.name === ru.name)?.s;
      const slots = st ? slotsAfterStubs(st) : BigInt(ru.ptr?.addr ?? 0),
        stubPart = ru.ptr ? Number(slots - BigInt(ru.ptr.addr)) : 0;
      const fresh: { table: Buffer; code: Buffer; ptr?: Buffer } | string = ru.ptr
        ? reencodePi(
            ru.sites,
            analysed,
            ind.addr,
            ru.ind.size,
            slots,
            ru.ptr.size - stubPart,
            text.addr,
            orig,
            ru.name,
            canonOf,
            u?.own,
          )
        : reencode(ru.sites, ind.addr, ru.ind.size, text.addr, orig, ru.name);
      if (typeof fresh === 'string') p(fresh);
      else {
        const dt = firstDiff(fresh.table.subarray(0, ru.ind.used), table.subarray(0, ru.ind.used));
        if (dt >= 0 || fresh.table.length !== table.length)
          p(
            `${ru.ind.section}: byte at ${hex(ind.addr + BigInt(Math.max(dt, 0)))} differs from a fresh encoding of the recorded sites`,
          );
        if (ptr && fresh.ptr && !fresh.ptr.equals(ptr.bytes.subarray(stubPart)))
          p(`${ru.ptr!.section}: differs from a fresh encoding of the recorded sites`);
        if (ptr && st) {
          // The stubs: one `jmp entry` each, to the µlib's own code, in address order.
          const b = ptr.bytes;
          st.targets.forEach((t, k) => {
            const J = decodeOne(b.subarray(k * STUB, k * STUB + STUB), st.at + BigInt(k * STUB));
            if (J.code !== Code.Jmp_rel32_64 || J.target !== t)
              p(`${ru.ptr!.section}: entry stub ${k} does not jump to ${hex(t)}`);
            if (t < text.addr || t >= text.addr + text.size || (k && t <= st.targets[k - 1]))
              p(`${ru.ptr!.section}: entry ${hex(t)} is not in ${ru.text} or not in order`);
          });
          if (st.at !== ptr.addr)
            p(
              `${ru.ptr!.section}: the stubs are recorded at ${hex(st.at)}, not at the area's start`,
            );
        }
        const dc = firstDiff(fresh.code, code);
        if (dc >= 0)
          p(
            `${ru.text}: byte at ${hex(text.addr + BigInt(dc))} differs from a fresh rewrite of the recorded sites`,
          );
      }
    }
    // Entries must not overlap (shared stubs and slots are one entry).
    const sorted = [...extents.entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i - 1][0] + BigInt(sorted[i - 1][1]) > sorted[i][0])
        p(`table entries ${hex(sorted[i - 1][0])} and ${hex(sorted[i][0])} overlap`);
    }
  }
  // Data fields redirected to stubs hold the stub of what they held; none still holds an entry.
  if (canon.size) {
    const ranges = new Map<number, [bigint, bigint]>();
    for (const x of rec.ulibs) {
      const t = x.stubs && elf.section(x.text);
      if (t) ranges.set(t.index, [t.addr, t.addr + t.size]);
    }
    for (const f of dataAddressFields(elf, ranges)) {
      if (canon.has(f.value))
        problems.push(
          `${f.sec.name}: the address field at ${hex(f.at)} still holds entry ${hex(f.value)}, not its stub`,
        );
    }
    const secs = dataSections(elf);
    for (const d of rec.data ?? []) {
      const at = BigInt(d.a),
        o = BigInt(d.o);
      const sec = secs.find((x) => at >= x.addr && at < x.addr + x.size);
      const v = sec ? readAddress(elf.contents(sec), Number(at - sec.addr), d.r) : undefined;
      if (!canon.has(o)) problems.push(`data field ${d.a}: its original value ${d.o} is no entry`);
      else if (v !== canon.get(o))
        problems.push(
          `data field ${d.a}: holds ${v === undefined ? 'nothing readable' : hex(v)}, not the stub ${hex(canon.get(o)!)} of ${d.o}`,
        );
    }
  }
  // Every µlib of the plan that has a table and code must have been rewritten.
  for (const u of plan.ulibs) {
    if (u.ind && elf.section(u.text) && !rec.ulibs.some((r) => r.name === u.name))
      problems.push(`${u.name}: has a table in the plan but no record`);
  }
  return problems;
}
