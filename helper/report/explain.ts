// `spacer report --explain A B`: for each µlib present in both images whose pages differ, why.
// Bytes are compared section by section; each difference is traced to the relocation that
// wrote it (images linked with --emit-relocs keep them) and the symbol it refers to, or to a
// different variant, a different address, or a neighbour on the same page.
import { ElfFile, type Section, SHT_NOBITS, SHT_RELA, num } from '../elf.js';
import { SpacerError } from '../errors.js';
import { scanPages, type PageScan } from '../pages.js';
import { readImagePlan, type ImagePlan, type RecordedSlot, type RecordedUlib } from '../plan.js';
import { loadImage, planSection } from './image.js';

export interface Cause {
  section: string;
  /** Offset in the section of the first differing byte of this run. */
  offset: number;
  bytes: number;
  why: string;
}

export interface UlibExplanation {
  ulib: string;
  variantA: string | null;
  variantB: string | null;
  differingPages: number;
  pages: number;
  causes: Cause[];
}

const RELOC_NAMES: Record<number, string> = {
  1: 'R_X86_64_64',
  2: 'R_X86_64_PC32',
  4: 'R_X86_64_PLT32',
  9: 'R_X86_64_GOTPCREL',
  10: 'R_X86_64_32',
  11: 'R_X86_64_32S',
  23: 'R_X86_64_TPOFF32',
  24: 'R_X86_64_PC64',
  41: 'R_X86_64_GOTPCRELX',
  42: 'R_X86_64_REX_GOTPCRELX',
};

/** The relocations applied inside `sec` of a linked image (from --emit-relocs), by address. */
function relocsIn(elf: ElfFile, sec: Section) {
  const syms = elf.symbols();
  return elf.sections
    .filter((s) => s.type === SHT_RELA && s.info === sec.index)
    .flatMap((s) => elf.relocations(s))
    .map((r) => {
      const sym = syms[r.sym];
      const name = sym ? (sym.type === 3 ? (elf.sections[sym.shndx]?.name ?? '?') : sym.name) : '';
      const size = r.type === 1 || r.type === 24 ? 8 : 4;
      return {
        at: r.offset,
        size,
        type: RELOC_NAMES[r.type] ?? `type ${r.type}`,
        target: name + (sym?.type === 3 && r.addend ? `+0x${r.addend.toString(16)}` : ''),
      };
    });
}

/** The function or object symbol that contains `addr`, for people. */
function symbolAt(elf: ElfFile, addr: bigint): string {
  let best: { name: string; value: bigint } | undefined;
  for (const s of elf.symbols()) {
    if (
      (s.type === 1 || s.type === 2) &&
      s.name &&
      s.value <= addr &&
      addr < s.value + (s.size || 1n)
    ) {
      if (!best || s.value > best.value) best = s;
    }
  }
  return best ? `${best.name}+0x${(addr - best.value).toString(16)}` : `0x${addr.toString(16)}`;
}

interface Side {
  elf: ElfFile;
  plan: ImagePlan;
  scan: PageScan;
}

const aslrOf = (a: Side, b: Side) => !!(a.plan.aslr || b.plan.aslr);

/** Counts the pages `sa` covers (once per µlib, in `seen`) and those whose bytes differ. */
function comparePages(a: Side, b: Side, sa: Section, sb: Section, seen: Set<number>) {
  const first = num(sa.addr) >> 12,
    last = (num(sa.addr + (sa.size || 1n)) - 1) >> 12;
  let pages = 0,
    differing = 0;
  for (let p = first; p <= last; p++) {
    if (seen.has(p)) continue;
    seen.add(p);
    pages++;
    const q = p + ((num(sb.addr) >> 12) - first);
    if ((a.scan.nonzero.get(p) ?? 'zero') !== (b.scan.nonzero.get(q) ?? 'zero')) differing++;
  }
  return { pages, differing };
}

/** Why one slot's section differs as a whole (a table, a pointer area, another place, another
 *  variant, a neighbour), or undefined when its bytes must be compared one by one. */
function slotCause(
  a: Side,
  b: Side,
  kind: string,
  sa: Section,
  sb: Section,
  variants: [string, string],
  ulib: string,
): Cause | null | undefined {
  // A table differs by design, unless its bytes are the same (then its page differs for a
  // neighbour, or, position-independent in ASLR mode, it moved with its code).
  const sameBytes = sa.type !== SHT_NOBITS && a.elf.contents(sa).equals(b.elf.contents(sb));
  const whole = (why: string): Cause => ({ section: sa.name, offset: 0, bytes: num(sa.size), why });
  if (kind === 'ind' && !sameBytes)
    return whole(
      aslrOf(a, b)
        ? 'indirection table: some of its entries are classic ones that hold addresses (a site no position-independent form fits), so it differs'
        : "indirection table: it holds this image's own targets, so it differs by design (the code that uses it does not)",
    );
  if (kind === 'ptr' && !sameBytes)
    return whole(
      "pointer area (ASLR): the addresses of this build's layout, which the µlib's identical table reads; it differs by design",
    );
  if (sa.addr !== sb.addr) {
    const where =
      variants[0] !== variants[1]
        ? ' (different variants)'
        : aslrOf(a, b)
          ? ' (ASLR: each build shuffles the code)'
          : ' (one image has it in its own area: relink it now that the map gave it a stable slot)';
    return whole(
      `placed at 0x${sa.addr.toString(16)} in one image and 0x${sb.addr.toString(16)} in the other${where}`,
    );
  }
  if (variants[0] !== variants[1])
    return whole(
      `different variants of ${ulib} (${variants[0]} vs ${variants[1]}): the library was built in another configuration`,
    );
  if (sa.type === SHT_NOBITS) return null;
  if (sameBytes)
    return {
      section: sa.name,
      offset: 0,
      bytes: 0,
      why: 'its bytes are identical: the page also holds something else that differs (a neighbour, or a per-image table)',
    };
  return undefined;
}

/** Each run of differing bytes of `sa`, traced to the relocation that wrote it. */
function byteCauses(a: Side, b: Side, sa: Section, sb: Section, causes: Cause[], max: number) {
  const ba = a.elf.contents(sa),
    bb = b.elf.contents(sb);
  const relocs = relocsIn(a.elf, sa);
  let i = 0;
  while (i < ba.length && causes.length < max) {
    if (ba[i] === bb[i]) {
      i++;
      continue;
    }
    const start = i;
    while (i < ba.length && ba[i] !== bb[i]) i++;
    const addr = sa.addr + BigInt(start);
    const r = relocs.find((x) => x.at <= addr && addr < x.at + BigInt(x.size));
    const why = r
      ? `${r.type} to ${r.target} in ${symbolAt(a.elf, addr)}: the target sits at another address in the other image`
      : `bytes differ in ${symbolAt(a.elf, addr)} with no relocation recorded (link with -Wl,--emit-relocs to see the cause)`;
    causes.push({ section: sa.name, offset: start, bytes: i - start, why });
  }
}

function explainUlib(
  a: Side,
  b: Side,
  ua: RecordedUlib,
  ub: RecordedUlib,
  maxCauses: number,
): UlibExplanation | undefined {
  const causes: Cause[] = [];
  let pages = 0,
    differing = 0;
  const seenPages = new Set<number>();
  for (const [kind, slot] of Object.entries(ua.slots)) {
    if (!slot) continue;
    const slotB = (ub.slots as Record<string, RecordedSlot | undefined>)[kind];
    const sa = planSection(a.elf, kind, slot),
      sb = slotB ? planSection(b.elf, kind, slotB) : undefined;
    if (!sa || !sb) continue;
    // Pages this section covers and whether they hold the same bytes in both images.
    const c = comparePages(a, b, sa, sb, seenPages);
    pages += c.pages;
    differing += c.differing;
    if (!c.differing) continue;
    const cause = slotCause(a, b, kind, sa, sb, [ua.variant, ub.variant], ua.name);
    if (cause) causes.push(cause);
    else if (cause === undefined) byteCauses(a, b, sa, sb, causes, maxCauses);
  }
  if (!differing) return undefined;
  return {
    ulib: ua.name,
    variantA: ua.variant,
    variantB: ub.variant,
    differingPages: differing,
    pages,
    causes,
  };
}

/** For each µlib present in both images whose pages differ: which bytes differ, and why. */
export function explain(pathA: string, pathB: string, maxCauses = 8): UlibExplanation[] {
  const side = (path: string): Side => {
    const elf = loadImage(path);
    const plan = readImagePlan(elf);
    if (!plan)
      throw new SpacerError(
        `${path}: no .spacer.plan section; --explain needs two images linked by Spacer (their .dbg)`,
      );
    return { elf, plan, scan: scanPages(elf) };
  };
  const a = side(pathA),
    b = side(pathB);
  const out: UlibExplanation[] = [];
  for (const ua of a.plan.ulibs) {
    const ub = b.plan.ulibs.find((x) => x.name === ua.name);
    const e = ub && explainUlib(a, b, ua, ub, maxCauses);
    if (e) out.push(e);
  }
  return out;
}

export function formatExplain(nameA: string, nameB: string, ex: UlibExplanation[]): string {
  if (!ex.length) return `${nameA} ~ ${nameB}: every µlib present in both has identical pages`;
  const lines = [`${nameA} ~ ${nameB}: µlibs present in both whose pages differ`];
  for (const e of ex) {
    lines.push(`${e.ulib}: ${e.differingPages} of ${e.pages} pages differ`);
    for (const c of e.causes)
      lines.push(`  ${c.section}+0x${c.offset.toString(16)} (${c.bytes} bytes): ${c.why}`);
  }
  return lines.join('\n');
}
