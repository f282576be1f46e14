// Which pages of an ASLR image would hold other bytes under another seed (docs/security.md,
// 'ASLR hardening'), found from what the image records: its rewrite record (µlib code and tables,
// pointer areas, entry stubs, pointer slots), its relocations (--emit-relocs) and its sections.
//
// The model: in ASLR mode each µlib's code block (code, table, copies) moves as one unit, by an
// amount drawn from the seed; everything else (the boot head, pinned µlibs, pointer areas,
// read-only data, data, bss) keeps its map address. A page's bytes depend on the seed when
//   - it holds part of a unit that does not start on a page (the image's own code, after a gap
//     drawn from the seed), or part of a unit and bytes of something else;
//   - it holds an entry stub (`jmp` to moved code) or a pointer slot holding an address of moved
//     code (from the record);
//   - it holds a relocated field whose value depends on the seed: an absolute address of moved
//     code (its current value, so fields redirected to stubs count as fixed), or a PC-relative
//     reference between two units that do not move together. Sites the rewrite replaced are left
//     to `spacer verify`, which proves their entries position-independent;
//   - it holds a classic (position-dependent) table entry.
// Moved pages of a unit that starts on a page are the same bytes wherever they land: they hold no
// layout information, so they are not listed.
import { type ElfFile, SHF_ALLOC, SHT_NOBITS, STT_SECTION } from '../elf.js';
import { SpacerError } from '../errors.js';
import { readImagePlan } from '../plan.js';
import { readRecord, type RewriteRecord } from '../rewrite/record.js';
import { PAGE, hex } from '../util/units.js';

/** A µlib's code block: code, table and copies, moved as one by the seed. */
export interface Unit {
  name: string;
  start: number;
  end: number;
  /** The image's own code: placed after a gap drawn from the seed, not on a page of its own. */
  own: boolean;
}

/** One page that depends on the seed, with every reason found (first ones kept). */
export interface SeedPage {
  page: number;
  causes: string[];
}

/** What audit and harden need to know about an ASLR image. */
export interface AslrImage {
  elf: ElfFile;
  seed: string;
  record: RewriteRecord;
  units: Unit[];
  /** Seed-dependent pages, by page number, ascending. */
  pages: SeedPage[];
}

const MAX_CAUSES = 4;
/** The section harden gives each salt word (loaded, 8 bytes): padding, not content. */
export const SALT_SECTION = '.spacer.salt';
// Relocation types whose field is an absolute address (R_X86_64_64, _32, _32S, _16, _8).
const ABS: Record<number, number> = { 1: 8, 10: 4, 11: 4, 12: 2, 14: 1 };
// PC-relative ones (PC32, PLT32, GOTPCREL, PC16, PC8, PC64, GOTPCRELX, REX_GOTPCRELX).
const PCREL: Record<number, number> = { 2: 4, 4: 4, 9: 4, 13: 2, 15: 1, 24: 8, 41: 4, 42: 4 };

/** The loaded byte offset in the file of address `va` (null outside every segment's file bytes). */
export function fileOffset(elf: ElfFile, va: number): number | null {
  for (const p of elf.loads) {
    const s = Number(p.vaddr);
    if (va >= s && va < s + Number(p.filesz)) return Number(p.offset) + (va - s);
  }
  return null;
}

/** Reads the ASLR image: its seed, record and units; a non-ASLR image is one error line. */
export function readAslrImage(elf: ElfFile): AslrImage {
  const plan = readImagePlan(elf);
  const record = readRecord(elf);
  if (!plan || !record)
    throw new SpacerError(
      `${elf.path}: no Spacer plan or rewrite record; audit the .dbg image that 'spacer finish' wrote`,
    );
  if (!plan.aslr || record.mode !== 'aslr')
    throw new SpacerError(
      `${elf.path}: not an ASLR image (no seed in its plan); audit images linked with --aslr`,
    );
  const units: Unit[] = [];
  for (const u of record.plan.ulibs) {
    const text = elf.section(u.text);
    // A pinned µlib (the platform, code with addresses in it) sits at its map address under every
    // seed: a fixed place, not a unit.
    if (!text || text.size === 0n || u.pinned) continue;
    const start = Number(text.addr);
    let end = start + Number(text.size);
    if (u.ind) end = Math.max(end, Number(BigInt(u.ind.addr)) + u.ind.size);
    units.push({ name: u.name, start, end, own: start % PAGE !== 0 || u.own === true });
  }
  units.sort((a, b) => a.start - b.start);
  const img: AslrImage = { elf, seed: plan.aslr.seed, record, units, pages: [] };
  img.pages = seedPages(img);
  return img;
}

/**
 * The unit holding address `a`; with `endToo`, an address just past a unit's end belongs to it (an
 * end pointer moves with it).
 */
export function unitAt(units: Unit[], a: number, endToo = true): Unit | undefined {
  return units.find((u) => a >= u.start && (endToo ? a <= u.end : a < u.end));
}

function seedPages(img: AslrImage): SeedPage[] {
  const found = new Map<number, string[]>();
  const add = (addr: number, why: string) => {
    const pg = Math.floor(addr / PAGE);
    const list = found.get(pg) ?? [];
    if (list.length < MAX_CAUSES && !list.includes(why)) list.push(why);
    found.set(pg, list);
  };
  unitPages(img, add);
  recordPages(img, add);
  relocationPages(img, add);
  return [...found.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([page, causes]) => ({ page, causes }));
}

/** Loaded, non-empty sections. */
function allocSections(elf: ElfFile) {
  return elf.sections.filter((s) => s.flags & SHF_ALLOC && s.size > 0n);
}

/** Own code, and units sharing a page with anything else. */
function unitPages(img: AslrImage, add: (a: number, why: string) => void): void {
  const secs = allocSections(img.elf);
  for (const u of img.units) {
    const first = Math.floor(u.start / PAGE),
      last = Math.floor((u.end - 1) / PAGE);
    for (let pg = first; pg <= last; pg++) {
      if (u.own) {
        add(pg * PAGE, `own code of ${u.name} at an offset drawn from the seed`);
        continue;
      }
      const lo = pg * PAGE,
        hi = lo + PAGE;
      const other = secs.find((s) => {
        const a = Number(s.addr),
          b = a + Number(s.size);
        return a < hi && b > lo && (b <= u.start || a >= u.end) && s.name !== SALT_SECTION;
      });
      if (other) add(lo, `code of ${u.name} shares the page with ${other.name}`);
    }
  }
}

/** Entry stubs, pointer slots holding addresses of moved code, classic table entries. */
function recordPages(img: AslrImage, add: (a: number, why: string) => void): void {
  for (const u of img.record.ulibs) {
    if (u.stubs) {
      const at = Number(BigInt(u.stubs.at));
      u.stubs.targets.forEach((t, i) => {
        const to = unitAt(img.units, Number(BigInt(t)));
        if (to) add(at + 5 * i, `entry stub of ${u.name} (jmp into ${to.name})`);
      });
    }
    for (const s of u.sites) {
      if (s.p) {
        const to = unitAt(img.units, Number(BigInt(s.t)));
        if (to)
          add(Number(BigInt(s.p)), `pointer slot of ${u.name} holding an address in ${to.name}`);
      } else if (!s.f) add(Number(BigInt(s.e)), `classic table entry of ${u.name} at ${s.e}`);
    }
  }
}

/** Byte ranges of the sites the rewrite replaced (their entries are verify's to prove). */
function siteRanges(rec: RewriteRecord): [number, number][] {
  const r: [number, number][] = [];
  for (const u of rec.ulibs)
    for (const s of u.sites) {
      const a = Number(BigInt(s.a));
      r.push([a, a + s.o.length / 2]);
    }
  return r.sort((x, y) => x[0] - y[0]);
}

function inRanges(r: [number, number][], a: number): boolean {
  let lo = 0,
    hi = r.length - 1;
  while (lo <= hi) {
    const m = (lo + hi) >> 1;
    if (a < r[m][0]) hi = m - 1;
    else if (a >= r[m][1]) lo = m + 1;
    else return true;
  }
  return false;
}

/** Relocated fields whose value depends on the seed. */
function relocationPages(img: AslrImage, add: (a: number, why: string) => void): void {
  const { elf, units } = img;
  const sites = siteRanges(img.record);
  const syms = elf.symbols();
  for (const sec of allocSections(elf)) {
    if (sec.type === SHT_NOBITS) continue;
    for (const r of elf.relocationsFor(sec)) {
      const P = Number(r.offset);
      if (inRanges(sites, P)) continue;
      const from = unitAt(units, P, false);
      const size = ABS[r.type] ?? PCREL[r.type];
      const off = fileOffset(elf, P);
      if (size === undefined || off === null) {
        const sym = syms[r.sym];
        const to = sym && unitAt(units, Number(sym.value));
        if (to && to !== from)
          add(P, `relocation type ${r.type} in ${sec.name} at ${hex(P)} refers to ${to.name}`);
        continue;
      }
      if (ABS[r.type] !== undefined) {
        const v = readField(elf, off, size);
        const to = unitAt(units, v);
        if (to) add(P, `absolute address in ${to.name} at ${hex(P)} (${sec.name})`);
        continue;
      }
      const sym = syms[r.sym];
      if (!sym) continue;
      const S = Number(sym.value);
      // A section symbol names its section's start: the addend says where (less the field's end).
      const T = sym.type === STT_SECTION ? S + Number(r.addend) + size : S;
      const to = unitAt(units, T);
      if ((to || from) && to !== from)
        add(
          P,
          `PC-relative reference at ${hex(P)} (${sec.name}) from ${from?.name ?? 'a fixed place'} to ${to?.name ?? 'a fixed place'}`,
        );
    }
  }
}

function readField(elf: ElfFile, off: number, size: number): number {
  const d = elf.data;
  if (size === 8) return Number(d.readBigUInt64LE(off));
  if (size === 4) return d.readUInt32LE(off);
  if (size === 2) return d.readUInt16LE(off);
  return d[off];
}
