// A µlib's classic table (external mode, and ASLR mode without a pointer area): one stub per
// branch target, one GOT slot per lea target, one trampoline per moved instruction (x86/table.ts),
// and each site patched in place to reach its entry (x86/tactics.ts).
import { createHash } from 'node:crypto';
import { type ElfFile, type Section, num } from '../elf.js';
import { SpacerError } from '../errors.js';
import { buildTable, TableError, type Move } from '../x86/table.js';
import { patchSite } from '../x86/tactics.js';
import { slotLoadCode } from '../x86/classify.js';
import { hex } from '../util/units.js';
import { type RecordSite, type RecordUlib } from './record.js';
import { type RewriteUlib, type UlibAnalysis, type UlibRewriteStats } from './types.js';

/** One µlib to rewrite: its plan entry, its analysis, its checked table, and the image's bytes. */
export interface UlibJob {
  elf: ElfFile;
  u: RewriteUlib;
  a: UlibAnalysis;
  ind: Section;
  /** `<image>: <µlib>`, the start of its error lines. */
  where: string;
  /** The image's bytes, patched in place. */
  out: Buffer;
}

/** What a µlib's rewrite adds to the record and to its figures. */
export interface UlibResult {
  record: RecordUlib;
  stats: Partial<UlibRewriteStats>;
}

/** The record's view of a µlib's code: where it is and the hash of its original bytes. */
export function recordText(
  job: UlibJob,
): Pick<RecordUlib, 'name' | 'text' | 'textAddr' | 'textSize' | 'textSha256'> {
  const { elf, u, a } = job;
  return {
    name: u.name,
    text: u.text,
    textAddr: hex(a.text.addr),
    textSize: num(a.text.size),
    textSha256: createHash('sha256').update(elf.contents(a.text)).digest('hex'),
  };
}

/** A TableError (the table is too small) as the user's line: how much to reserve. */
export function tableTooSmall(e: TableError, fix: string): SpacerError {
  return new SpacerError(
    `${e.message}; ${fix ? `${fix} (indirectionNeeds gives a safe size)` : 'the image was left unchanged'}`,
  );
}

/** Rewrites one µlib with a classic table of the size its plan reserves. */
export function rewriteExternal(job: UlibJob): UlibResult {
  const { elf, u, a, ind, where, out } = job;
  const size = u.ind!.size;
  // Layout: distinct GOT values and stub targets in site order, then one move per site.
  const got = new Set<bigint>(),
    stubs = new Set<bigint>(),
    moves: Move[] = [];
  // A µlib whose own data's addresses differ per image (the platform, `ownAbs`): its `mov reg,
  // addr` trampolines load the address from a GOT slot, so they are the same in every image and
  // only the slots (next to each other) differ.
  // Only addresses of its own data: distinct there in every variant alike, while two foreign
  // addresses may be equal in one image (an empty table's start and end) and not in another, which
  // would merge their slots and move every entry after them.
  const ownData = !u.ownAbs
    ? []
    : u.sections
        .filter((n) => n !== u.text)
        .map((n) => elf.section(n))
        .filter((x) => x !== undefined && x.size > 0n)
        .map((x) => [x!.addr, x!.addr + x!.size] as const);
  // So do its moved instructions (layout/moved.ts) that put an immediate in a register: the
  // immediate is what differs between its variants.
  const slotLoads = new Set(
    a.sites.filter(
      (s) =>
        !!u.ownAbs &&
        s.kind === 'trampoline' &&
        (s.outside.length === 0
          ? slotLoadCode(s.insn, ['imm']) !== undefined
          : slotLoadCode(s.insn, s.outside) !== undefined &&
            ownData.some(([lo, hi]) => s.target >= lo && s.target < hi)),
    ),
  );
  for (const s of a.sites) {
    if (s.kind === 'got') got.add(s.target);
    else if (s.kind === 'stub') stubs.add(s.target);
    else if (slotLoads.has(s)) {
      got.add(s.target);
      moves.push({ kind: 'trampoline', ip: s.insn.ip, orig: s.orig, slot: s.target });
    } else moves.push({ kind: s.kind, ip: s.insn.ip, orig: s.orig });
  }
  let table;
  const code = Buffer.from(elf.contents(a.text));
  const rsites: RecordSite[] = [];
  try {
    table = buildTable({
      addr: ind.addr,
      size,
      got: [...got],
      stubs: [...stubs],
      moves,
      what: where,
      gotAtEnd: moves.some((m) => m.slot !== undefined),
    });
    let m = 0;
    for (const s of a.sites) {
      const entry =
        s.kind === 'stub'
          ? table.stubAt.get(s.target)!
          : s.kind === 'got'
            ? table.gotAt.get(s.target)!
            : table.moveAt[m++];
      patchSite(code, a.text.addr, s.insn, s.kind, entry, where);
      rsites.push({
        a: hex(s.insn.ip),
        o: s.orig.toString('hex'),
        k: s.kind,
        e: hex(entry),
        t: hex(s.target),
        ...(slotLoads.has(s) ? { g: hex(table.gotAt.get(s.target)!) } : {}),
      });
    }
  } catch (e) {
    if (e instanceof TableError)
      throw tableTooSmall(
        e,
        e.need ? `reserve at least ${e.need} bytes for ${u.ind!.section}` : '',
      );
    throw e;
  }
  code.copy(out, num(a.text.offset));
  table.bytes.copy(out, num(ind.offset));
  return {
    stats: {
      stubs: stubs.size,
      trampolines: moves.length,
      got: got.size,
      tableBytes: table.used,
      rewritten: true,
    },
    record: {
      ...recordText(job),
      ind: { section: u.ind!.section, addr: hex(ind.addr), size, used: table.used },
      sites: rsites,
    },
  };
}
