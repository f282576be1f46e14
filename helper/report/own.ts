// `spacer report --explain`: the cause of each own page (docs/metrics.md), a non-zero page whose
// content no other image of the set holds. A page is cut into the pieces of the sections on it;
// a piece is the cause when no other image holds its bytes at the same place in a page. The
// page's cause is its largest piece's kind when that piece differs; when the largest piece is
// found elsewhere and a smaller one makes the page differ, the cause is that neighbour.
import {
  SHF_EXECINSTR,
  SHF_WRITE,
  SHT_NOBITS,
  STT_FILE,
  STT_SECTION,
  type ElfFile,
  type ElfSymbol,
  type Section,
} from '../elf.js';
import { SpacerError } from '../errors.js';
import { pageAddr, scanPages, type PageScan } from '../pages.js';
import { readImagePlan, type ImagePlan } from '../plan.js';
import { readRecord } from '../rewrite/record.js';
import { PAGE } from '../util/units.js';
import { loadImage, occupies, planSection } from './image.js';
import { imageNames, parseImageArg } from './names.js';

export const OWN_CAUSES = [
  'app',
  'per-app µlib variant',
  'table',
  'pointer area',
  'entry stubs',
  'unwind tables',
  'page tables',
  'switch tables',
  'platform data',
  'addresses',
  'neighbour',
] as const;
export type OwnCause = (typeof OWN_CAUSES)[number];

export interface OwnPage {
  addr: string;
  cause: OwnCause;
  /** The section whose bytes make the page differ (for a neighbour: the neighbour's). */
  section: string;
  /** Its µlib, or null for the platform's sections that belong to no µlib. */
  ulib: string | null;
  detail: string;
}

export interface ImageOwnPages {
  image: string;
  own_pages: number;
  /** Own pages per cause. */
  causes: Partial<Record<OwnCause, number>>;
  pages: OwnPage[];
}

/** A section with what the plan says about it. */
interface Owned {
  s: Section;
  ulib: string | null;
  /** Plan slot kind (text, rodata, data, bss, ind, ptr), or null. */
  kind: string | null;
}

interface Img {
  name: string;
  elf: ElfFile;
  plan: ImagePlan;
  scan: PageScan;
  sections: Owned[];
  byName: Map<string, Owned>;
  /** Entry stubs' address ranges (ASLR mode, from `.spacer.rewrite`). */
  stubs: [bigint, bigint][];
  code: [bigint, bigint][];
}

const UNWIND = /^\.(eh_frame|eh_frame_hdr|gcc_except_table)(\.|$)/;
const PAGE_TABLE = /pml4|pdpt|page_?tables?|(^|_)(bpt|pt|pd|pgd|pud|pmd)(_|$)/i;

/** The loaded sections of an image with their µlib and slot kind, in address order. */
function ownedSections(elf: ElfFile, plan: ImagePlan): Owned[] {
  const owner = new Map<string, { ulib: string; kind: string }>();
  const out: Owned[] = [];
  for (const u of plan.ulibs) {
    for (const [kind, slot] of Object.entries(u.slots)) {
      if (!slot) continue;
      owner.set(slot.section, { ulib: u.name, kind });
      if (!elf.section(slot.section)) {
        const s = planSection(elf, kind, slot);
        if (s) out.push({ s, ulib: u.name, kind });
      }
    }
  }
  const byKind = /^\.(text|rodata|data|bss)\.(.+)$/;
  for (const s of elf.sections) {
    if (!occupies(s)) continue;
    const m = byKind.exec(s.name);
    const o =
      owner.get(s.name) ??
      (m && plan.ulibs.some((u) => u.name === m[2]) ? { ulib: m[2], kind: m[1] } : undefined);
    out.push({ s, ulib: o?.ulib ?? null, kind: o?.kind ?? null });
  }
  return out.filter((o) => o.s.size > 0n).sort((a, b) => (a.s.addr < b.s.addr ? -1 : 1));
}

function readImg(path: string, name: string): Img {
  const elf = loadImage(path);
  const plan = readImagePlan(elf);
  if (!plan)
    throw new SpacerError(
      `${path}: no .spacer.plan section; --explain needs images linked by Spacer (their .dbg)`,
    );
  const sections = ownedSections(elf, plan);
  const stubs = (readRecord(elf)?.ulibs ?? []).flatMap((u) =>
    u.stubs ? [[BigInt(u.stubs.at), BigInt(u.stubs.at) + BigInt(5 * u.stubs.targets.length)]] : [],
  ) as [bigint, bigint][];
  return {
    name,
    elf,
    plan,
    scan: scanPages(elf),
    sections,
    byName: new Map(sections.map((o) => [o.s.name, o])),
    stubs,
    code: sections
      .filter((o) => o.s.flags & SHF_EXECINSTR)
      .map((o) => [o.s.addr, o.s.addr + o.s.size]),
  };
}

/** A section's bytes on one page: [from, to) offsets in the section. */
interface Piece {
  o: Owned;
  from: number;
  to: number;
}

function piecesOn(img: Img, page: number): Piece[] {
  const lo = BigInt(page) * BigInt(PAGE),
    hi = lo + BigInt(PAGE);
  const out: Piece[] = [];
  for (const o of img.sections) {
    const { addr, size } = o.s;
    if (addr >= hi || addr + size <= lo || o.s.type === SHT_NOBITS) continue;
    const from = addr < lo ? Number(lo - addr) : 0;
    const to = Number((addr + size < hi ? addr + size : hi) - addr);
    out.push({ o, from, to });
  }
  return out;
}

/**
 * The first offset (in the section) at which the piece's bytes differ from every other image's
 * same section at the same place in a page, or -1 when some other image holds the same bytes.
 */
function firstDifference(imgs: Img[], i: number, p: Piece): number {
  const mine = imgs[i].elf.contents(p.o.s).subarray(p.from, p.to);
  let first = 0;
  let compared = false;
  for (const [j, other] of imgs.entries()) {
    const o = j === i ? undefined : other.byName.get(p.o.s.name);
    if (!o || (o.s.addr - p.o.s.addr) % BigInt(PAGE) !== 0n || o.s.size < BigInt(p.to)) continue;
    const theirs = other.elf.contents(o.s).subarray(p.from, p.to);
    if (theirs.length < mine.length) continue;
    let k = 0;
    while (k < mine.length && mine[k] === theirs[k]) k++;
    if (k === mine.length) return -1;
    first = compared ? Math.max(first, k) : k;
    compared = true;
  }
  return p.from + first;
}

const within = (ranges: [bigint, bigint][], a: bigint) => ranges.some(([x, y]) => a >= x && a < y);

/** The symbol holding `addr`: a sized one that covers it, else the closest label before it. */
function symbolAt(elf: ElfFile, s: Section, addr: bigint): string | undefined {
  let best: ElfSymbol | undefined;
  for (const y of elf.symbols()) {
    if (!y.name || y.type === STT_SECTION || y.type === STT_FILE) continue;
    if (y.value > addr || y.value < s.addr) continue;
    if (y.size && addr >= y.value + y.size) continue;
    if (!best || y.value > best.value || (y.value === best.value && y.size > best.size)) best = y;
  }
  return best?.name;
}

/** The 8-byte word holding the byte at `addr` points into the image's code. */
function codeAddressAt(img: Img, o: Owned, off: number): boolean {
  const bytes = img.elf.contents(o.s);
  const at = off - Number((o.s.addr + BigInt(off)) % 8n);
  if (at < 0 || at + 8 > bytes.length) return false;
  return within(img.code, bytes.readBigUInt64LE(at));
}

/** Why a piece whose bytes differ from `off` on holds its own page. */
function pieceCause(imgs: Img[], i: number, p: Piece, off: number): [OwnCause, string] {
  const img = imgs[i];
  const { o } = p;
  const addr = o.s.addr + BigInt(off);
  const sym = symbolAt(img.elf, o.s, addr);
  const at = `${o.s.name}+0x${off.toString(16)}${sym ? ` (${sym})` : ''}`;
  if (UNWIND.test(o.s.name)) return ['unwind tables', `${at}: code addresses of this layout`];
  if (o.kind === 'ind') return ['table', `${at}: the indirection table holds this image's targets`];
  if (o.kind === 'ptr')
    return within(img.stubs, addr)
      ? ['entry stubs', `${at}: jumps to this build's entries`]
      : ['pointer area', `${at}: addresses of this build's layout`];
  if (sym && PAGE_TABLE.test(sym)) return ['page tables', `${at}: addresses of the page tables`];
  if (o.ulib?.startsWith('app')) return ['app', `${at}: the app's own code and data`];
  const variant = o.ulib ? img.plan.ulibs.find((u) => u.name === o.ulib)?.variant : undefined;
  if (o.ulib && variant) {
    const users = imgs.filter((x) =>
      x.plan.ulibs.some((u) => u.name === o.ulib && u.variant === variant),
    );
    if (users.length === 1)
      return ['per-app µlib variant', `${at}: ${o.ulib} ${variant}, used by this image alone`];
  }
  if (!o.ulib) return ['platform data', `${at}: the platform's own section`];
  const writable = (o.s.flags & SHF_WRITE) !== 0n;
  if (!writable && codeAddressAt(img, o, off))
    return ['switch tables', `${at}: a table of code addresses of this layout`];
  return ['addresses', `${at}: addresses of this image's layout in ${o.ulib}'s shared variant`];
}

function pageCause(imgs: Img[], i: number, page: number): OwnPage {
  const addr = pageAddr(page);
  const pieces = piecesOn(imgs[i], page).sort((a, b) => b.to - b.from - (a.to - a.from));
  if (!pieces.length)
    return { addr, cause: 'platform data', section: '', ulib: null, detail: 'no section on it' };
  const diffs = pieces.map((p) => firstDifference(imgs, i, p));
  const k = diffs.findIndex((d) => d >= 0);
  const main = pieces[0].o;
  if (k < 0)
    return {
      addr,
      cause: 'neighbour',
      section: main.s.name,
      ulib: main.ulib,
      detail: `each section on it occurs in another image, but not all together`,
    };
  const p = pieces[k];
  const [cause, detail] = pieceCause(imgs, i, p, diffs[k]);
  if (k === 0) return { addr, cause, section: p.o.s.name, ulib: p.o.ulib, detail };
  return {
    addr,
    cause: 'neighbour',
    section: p.o.s.name,
    ulib: p.o.ulib,
    detail: `${main.s.name} is found in another image; its neighbour differs (${cause}: ${detail})`,
  };
}

/** The cause of every own page of every image (the images need their `.spacer.plan`). */
export function explainOwnPages(args: readonly string[]): ImageOwnPages[] {
  const inputs = args.map(parseImageArg);
  const names = imageNames(inputs);
  const imgs = inputs.map((x, i) => readImg(x.path, names[i]));
  const holders = new Map<string, Set<number>>();
  imgs.forEach((img, i) => {
    for (const h of img.scan.nonzero.values())
      (holders.get(h) ?? holders.set(h, new Set()).get(h)!).add(i);
  });
  return imgs.map((img, i) => {
    const pages: OwnPage[] = [];
    for (const [page, h] of img.scan.nonzero)
      if (holders.get(h)!.size === 1) pages.push(pageCause(imgs, i, page));
    const causes: Partial<Record<OwnCause, number>> = {};
    for (const c of OWN_CAUSES) {
      const n = pages.filter((p) => p.cause === c).length;
      if (n) causes[c] = n;
    }
    return { image: img.name, own_pages: pages.length, causes, pages };
  });
}

export function formatOwnPages(own: ImageOwnPages[]): string {
  const lines = ['own pages: non-zero pages whose content no other image holds, and why'];
  for (const x of own) {
    const counts = Object.entries(x.causes).map(([c, n]) => `${c} ${n}`);
    lines.push(`${x.image}: ${x.own_pages} own page${x.own_pages === 1 ? '' : 's'}`);
    if (counts.length) lines[lines.length - 1] += ` (${counts.join(', ')})`;
    for (const p of x.pages) lines.push(`  ${p.addr}  ${p.cause}: ${p.detail}`);
  }
  return lines.join('\n');
}
