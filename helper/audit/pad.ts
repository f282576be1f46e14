// Salt room in the image's own code: dead bytes between two functions. The image's own code (the
// µlibs only it uses) is packed after a gap drawn from the seed, so every page of it depends on the
// seed, and compiled code fills its pages without a gap between sections. But the assembler pads
// each function to its alignment, and those bytes are never run:
//   - they lie between the end of a sized function (st_value + st_size) and the next function
//     symbol, with no symbol and no relocation in between;
//   - the function before them ends in an instruction that does not fall through (ret, jmp, ud2,
//     or a call: a function ends in a call only when the callee does not return).
// The last 8 bytes of such a run on the page carry the salt; when no run on the page has 8 bytes,
// several runs' bytes together. Only code the rewrite left as linked (not in the rewrite record,
// so `spacer verify` never compares it) is salted this way.
import { createHash } from 'node:crypto';
import {
  type ElfFile,
  type ElfSymbol,
  SHF_EXECINSTR,
  STT_FILE,
  STT_FUNC,
  STT_SECTION,
} from '../elf.js';
import { PAGE } from '../util/units.js';
import { decodeRange, FlowControl } from '../x86/decode.js';
import { onFirstUse } from '../x86/iced.js';
import type { AslrImage } from './analyze.js';

const SALT = 8;
/** Last instructions after which nothing runs on. */
const NO_FALL_THROUGH = onFirstUse(
  () =>
    new Set<FlowControl>([
      FlowControl.Return,
      FlowControl.UnconditionalBranch,
      FlowControl.IndirectBranch,
      FlowControl.Exception,
      FlowControl.Call,
    ]),
);

/** What sectionRuns reads of a section, once per image (harden asks for every salted page). */
interface SectionFacts {
  /** Its sized functions, by address. */
  funcs: ElfSymbol[];
  /** Addresses of its symbols and offsets of its relocations, sorted. */
  named: number[];
  relocs: number[];
  /** Per function (index in funcs): whether it ends without falling through (decoded once). */
  ends: Map<number, boolean>;
}
const factsOf = new WeakMap<ElfFile, Map<number, SectionFacts>>();

function sectionFacts(elf: ElfFile, index: number): SectionFacts {
  let bySec = factsOf.get(elf);
  if (!bySec) factsOf.set(elf, (bySec = new Map()));
  let f = bySec.get(index);
  if (f) return f;
  const inSec = elf
    .symbols()
    .filter((s) => s.shndx === index && s.type !== STT_SECTION && s.type !== STT_FILE);
  const funcs = inSec
    .filter((s) => s.type === STT_FUNC && s.size > 0n)
    .sort((a, b) => Number(a.value - b.value));
  const named = inSec.map((s) => Number(s.value)).sort((a, b) => a - b);
  const relocs = elf
    .relocationsFor(elf.sections[index])
    .map((r) => Number(r.offset))
    .sort((a, b) => a - b);
  bySec.set(index, (f = { funcs, named, relocs, ends: new Map() }));
  return f;
}

/** Whether sorted `xs` holds a value in [from, to). */
function anyIn(xs: number[], from: number, to: number): boolean {
  let lo = 0,
    hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < from) lo = mid + 1;
    else hi = mid;
  }
  return lo < xs.length && xs[lo] < to;
}

/** Dead bytes on a page: [start, end) addresses. */
type Run = readonly [number, number];

/**
 * Where the page's salt goes in the image's own code, or null: the last 8 dead bytes of the
 * highest run on the page that has 8; else, when functions are padded by fewer bytes each (a
 * page of functions of like sizes), the dead bytes of several runs from the top of the page down
 * until they hold 8 bytes (64 bits) together.
 */
export function padPieces(img: AslrImage, page: number): { at: number; len: number }[] | null {
  const runs = deadRuns(img, page);
  const whole = runs.find(([a, b]) => b - a >= SALT);
  if (whole) return [{ at: whole[1] - SALT, len: SALT }];
  const pieces: { at: number; len: number }[] = [];
  let bytes = 0;
  for (const [a, b] of runs) {
    const len = Math.min(b - a, SALT - bytes);
    pieces.push({ at: b - len, len });
    if ((bytes += len) >= SALT) return pieces;
  }
  return null;
}

/** The dead runs on the page in the image's own code, highest first. */
function deadRuns(img: AslrImage, page: number): Run[] {
  const { elf } = img;
  const lo = page * PAGE,
    hi = lo + PAGE;
  const recorded = new Set(img.record.ulibs.map((u) => u.text));
  const own = img.units.filter((u) => u.own && u.start < hi && u.end > lo);
  const secs = elf.sections.filter(
    (s) =>
      s.flags & SHF_EXECINSTR &&
      !recorded.has(s.name) &&
      Number(s.addr) < hi &&
      Number(s.addr + s.size) > lo &&
      own.some((u) => Number(s.addr) >= u.start && Number(s.addr + s.size) <= u.end),
  );
  return secs.flatMap((sec) => sectionRuns(elf, sec.index, lo, hi)).sort((x, y) => y[0] - x[0]);
}

/** The dead runs of section `index` on [lo, hi) (see the file's comment). */
function sectionRuns(elf: ElfFile, index: number, lo: number, hi: number): Run[] {
  const { funcs, named, relocs, ends } = sectionFacts(elf, index);
  const sec = elf.sections[index];
  const runs: Run[] = [];
  for (let i = 0; i < funcs.length - 1; i++) {
    const f = funcs[i];
    const end = Number(f.value + f.size),
      next = Number(funcs[i + 1].value);
    const a = Math.max(end, lo),
      b = Math.min(next, hi);
    if (b <= a) continue;
    if (anyIn(named, end, next) || anyIn(relocs, end, next)) continue;
    let dead = ends.get(i);
    if (dead === undefined)
      ends.set(i, (dead = endsWithoutFallThrough(elf, sec.offset, sec.addr, f)));
    if (dead) runs.push([a, b]);
  }
  return runs;
}

// Functions already decoded, by their address and bytes: harden and audit ask about every function
// of the image's own code, the same functions on every relink of one app with one seed (the link
// server keeps this between command lines). Bounded: emptied when it grows past ENDS_MAX.
const endsKnown = new Map<string, boolean>();
const ENDS_MAX = 1 << 16;

/** Whether the function's last instruction ends it and does not fall through. */
function endsWithoutFallThrough(
  elf: ElfFile,
  secOffset: bigint,
  secAddr: bigint,
  f: ElfSymbol,
): boolean {
  const from = Number(secOffset + (f.value - secAddr));
  const bytes = elf.data.subarray(from, from + Number(f.size));
  const key = createHash('sha256').update(`${f.value} ${f.size}\n`).update(bytes).digest('hex');
  const known = endsKnown.get(key);
  if (known !== undefined) return known;
  const insns = decodeRange(bytes, f.value);
  const last = insns.at(-1);
  const ends =
    !!last &&
    !last.invalid &&
    last.ip + BigInt(last.len) === f.value + f.size &&
    NO_FALL_THROUGH().has(last.flow);
  if (endsKnown.size >= ENDS_MAX) endsKnown.clear();
  endsKnown.set(key, ends);
  return ends;
}
