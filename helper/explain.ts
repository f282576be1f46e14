// `spacer report --explain A B`: for each µlib present in both images whose pages differ, why.
// Bytes are compared section by section; each difference is traced to the relocation that
// wrote it (images linked with --emit-relocs keep them) and the symbol it refers to, or to a
// different variant, a different address, or a neighbour on the same page.
import { ElfFile, type Section, SHT_NOBITS, SHT_RELA, num } from './elf.js';
import { SpacerError } from './errors.js';
import { scanPages } from './pages.js';
import { readImagePlan, type RecordedSlot } from './plan.js';
import { loadImage, planSection } from './report.js';

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

export function explain(pathA: string, pathB: string, maxCauses = 8): UlibExplanation[] {
  const a = loadImage(pathA),
    b = loadImage(pathB);
  const planA = readImagePlan(a),
    planB = readImagePlan(b);
  if (!planA || !planB)
    throw new SpacerError(
      `${!planA ? pathA : pathB}: no .spacer.plan section; --explain needs two images linked by Spacer (their .dbg)`,
    );
  const pa = scanPages(a),
    pb = scanPages(b);
  const out: UlibExplanation[] = [];
  for (const ua of planA.ulibs) {
    const ub = planB.ulibs.find((x) => x.name === ua.name);
    if (!ub) continue;
    const causes: Cause[] = [];
    let pages = 0,
      differing = 0;
    const seenPages = new Set<number>();
    for (const [kind, slot] of Object.entries(ua.slots)) {
      if (!slot) continue;
      const slotB = (ub.slots as Record<string, RecordedSlot | undefined>)[kind];
      const sa = planSection(a, kind, slot),
        sb = slotB ? planSection(b, kind, slotB) : undefined;
      if (!sa || !sb) continue;
      // Pages this section covers and whether they hold the same bytes in both images.
      const first = num(sa.addr) >> 12,
        last = (num(sa.addr + (sa.size || 1n)) - 1) >> 12;
      let sectionPagesDiffer = false;
      for (let p = first; p <= last; p++) {
        if (seenPages.has(p)) continue;
        seenPages.add(p);
        pages++;
        const q = p + ((num(sb.addr) >> 12) - first);
        if ((pa.nonzero.get(p) ?? 'zero') !== (pb.nonzero.get(q) ?? 'zero')) {
          differing++;
          sectionPagesDiffer = true;
        }
      }
      if (!sectionPagesDiffer) continue;
      // A table differs by design, unless its bytes are the same (then its page differs for a
      // neighbour, or, position-independent in ASLR mode, it moved with its code).
      const sameBytes = sa.type !== SHT_NOBITS && a.contents(sa).equals(b.contents(sb));
      if (kind === 'ind' && !sameBytes) {
        const why =
          planA.aslr || planB.aslr
            ? 'indirection table: some of its entries are classic ones that hold addresses (a site no position-independent form fits), so it differs'
            : "indirection table: it holds this image's own targets, so it differs by design (the code that uses it does not)";
        causes.push({ section: sa.name, offset: 0, bytes: num(sa.size), why });
        continue;
      }
      if (kind === 'ptr' && !sameBytes) {
        causes.push({
          section: sa.name,
          offset: 0,
          bytes: num(sa.size),
          why: "pointer area (ASLR): the addresses of this build's layout, which the µlib's identical table reads; it differs by design",
        });
        continue;
      }
      if (sa.addr !== sb.addr) {
        const where =
          ua.variant !== ub.variant
            ? ' (different variants)'
            : planA.aslr || planB.aslr
              ? ' (ASLR: each build shuffles the code)'
              : ' (one image has it in its own area: relink it now that the map gave it a stable slot)';
        causes.push({
          section: sa.name,
          offset: 0,
          bytes: num(sa.size),
          why: `placed at 0x${sa.addr.toString(16)} in one image and 0x${sb.addr.toString(16)} in the other${where}`,
        });
        continue;
      }
      if (ua.variant !== ub.variant) {
        causes.push({
          section: sa.name,
          offset: 0,
          bytes: num(sa.size),
          why: `different variants of ${ua.name} (${ua.variant} vs ${ub.variant}): the library was built in another configuration`,
        });
        continue;
      }
      if (sa.type === SHT_NOBITS) continue;
      const ba = a.contents(sa),
        bb = b.contents(sb);
      if (ba.equals(bb)) {
        causes.push({
          section: sa.name,
          offset: 0,
          bytes: 0,
          why: 'its bytes are identical: the page also holds something else that differs (a neighbour, or a per-image table)',
        });
        continue;
      }
      const relocs = relocsIn(a, sa);
      let i = 0;
      while (i < ba.length && causes.length < maxCauses) {
        if (ba[i] === bb[i]) {
          i++;
          continue;
        }
        const start = i;
        while (i < ba.length && ba[i] !== bb[i]) i++;
        const addr = sa.addr + BigInt(start);
        const r = relocs.find((x) => x.at <= addr && addr < x.at + BigInt(x.size));
        const why = r
          ? `${r.type} to ${r.target} in ${symbolAt(a, addr)}: the target sits at another address in the other image`
          : `bytes differ in ${symbolAt(a, addr)} with no relocation recorded (link with -Wl,--emit-relocs to see the cause)`;
        causes.push({ section: sa.name, offset: start, bytes: i - start, why });
      }
    }
    if (differing)
      out.push({
        ulib: ua.name,
        variantA: ua.variant,
        variantB: ub.variant,
        differingPages: differing,
        pages,
        causes,
      });
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
