// What a mutation needs to know about an (unmutated) image: its header tables, relocation and
// symbol tables, the JSON records, the rewrite sites and the µlib code and indirection tables.
import { inflateSync } from 'node:zlib';
import { ElfFile, SHT_NOBITS, SHT_REL, SHT_RELA, SHT_SYMTAB, type Section } from '../elf.js';
import { hex } from '../util/units.js';

export interface RelocSec {
  sec: Section;
  target: Section;
  entsize: number;
  count: number;
  rela: boolean;
}

export interface SiteRef {
  /** File offsets of the site's instruction, its length, and its table entry (if in the file). */
  off: number;
  len: number;
  entry: number | null;
  what: string;
}

export interface ImageStruct {
  id: string;
  data: Buffer;
  is64: boolean;
  sections: Section[];
  shoff: number;
  shnum: number;
  shentsize: number;
  phoff: number;
  phnum: number;
  phentsize: number;
  ehsize: number;
  relocs: RelocSec[];
  symtab?: { sec: Section; count: number; entsize: number; strtab?: Section };
  /**
   * `.spacer.rewrite` and `.spacer.plan` JSON text (inflated when the section is deflated), when
   * present.
   */
  json: { sec: Section; text: string; deflated: boolean }[];
  sites: SiteRef[];
  code: Section[];
  tables: Section[];
}

export const isCode = (s: Section) => /^\.text\.(lib|app)/.test(s.name);
export const fileOf = (s: Section, addr: bigint) => Number(s.offset + (addr - s.addr));

/** Reads what the mutations aim at from an image that loads cleanly. */
export function imageStruct(id: string, elf: ElfFile): ImageStruct {
  const h = elf.header,
    is64 = elf.is64;
  const secs = elf.sections;
  const relocs = relocSections(secs, is64);
  const st = secs.find((s) => s.type === SHT_SYMTAB);
  const symEnt = is64 ? 24 : 16;
  const json = jsonRecords(elf);
  const rw = json.find((j) => j.sec.name === '.spacer.rewrite');
  const sites = rw ? rewriteSites(elf, rw.text) : relocatedSites(elf, relocs);
  return {
    id,
    data: elf.data,
    is64,
    sections: secs,
    shoff: Number(h.shoff),
    shnum: secs.length,
    shentsize: is64 ? 64 : 40,
    phoff: Number(h.phoff),
    phnum: h.phnum,
    phentsize: is64 ? 56 : 32,
    ehsize: is64 ? 64 : 52,
    relocs,
    symtab: st
      ? { sec: st, count: Number(st.size) / symEnt, entsize: symEnt, strtab: secs[st.link] }
      : undefined,
    json,
    sites,
    code: secs.filter((s) => isCode(s) && s.type !== SHT_NOBITS && s.size > 0n),
    tables: secs.filter((s) => /^\.ind\./.test(s.name) && s.type !== SHT_NOBITS && s.size > 0n),
  };
}

/** The relocation sections whose target section exists, with their entry size and count. */
function relocSections(secs: Section[], is64: boolean): RelocSec[] {
  const relocs: RelocSec[] = [];
  for (const s of secs) {
    if (s.type !== SHT_RELA && s.type !== SHT_REL) continue;
    const target = secs[s.info];
    if (!target) continue;
    const rela = s.type === SHT_RELA;
    const entsize = is64 ? (rela ? 24 : 16) : rela ? 12 : 8;
    relocs.push({ sec: s, target, entsize, count: Number(s.size) / entsize, rela });
  }
  return relocs;
}

/**
 * The text of `.spacer.rewrite` and `.spacer.plan` (those with bytes in the file): inflated when
 * it starts like a zlib stream and inflates, else as it is.
 */
function jsonRecords(elf: ElfFile): ImageStruct['json'] {
  const json: ImageStruct['json'] = [];
  for (const name of ['.spacer.rewrite', '.spacer.plan']) {
    const s = elf.section(name);
    if (!s || s.type === SHT_NOBITS) continue;
    const raw = elf.contents(s);
    let text = raw.toString('utf8'),
      deflated = false;
    if (raw[0] === 0x78) {
      try {
        text = inflateSync(raw).toString('utf8');
        deflated = true;
      } catch {
        /* plain text after all */
      }
    }
    json.push({ sec: s, text, deflated });
  }
  return json;
}

/** A rewritten image's sites, as `.spacer.rewrite` (its JSON text, `record`) lists them. */
function rewriteSites(elf: ElfFile, record: string): SiteRef[] {
  const sites: SiteRef[] = [];
  const rec = JSON.parse(record) as {
    ulibs: {
      text: string;
      ind: { section: string };
      sites: { a: string; o: string; e: string; k: string }[];
    }[];
  };
  for (const u of rec.ulibs) {
    const text = elf.section(u.text),
      ind = elf.section(u.ind.section);
    if (!text) continue;
    for (const s of u.sites) {
      const e = BigInt(s.e);
      sites.push({
        off: fileOf(text, BigInt(s.a)),
        len: s.o.length / 2,
        what: `${u.text} site ${s.a} (${s.k})`,
        entry: ind && e >= ind.addr && e < ind.addr + ind.size ? fileOf(ind, e) : null,
      });
    }
  }
  return sites;
}

/** Not rewritten: the places the rewriter reads are the relocated fields in µlib code. */
function relocatedSites(elf: ElfFile, relocs: RelocSec[]): SiteRef[] {
  const sites: SiteRef[] = [];
  for (const r of relocs) {
    if (!isCode(r.target)) continue;
    for (const x of elf.relocations(r.sec)) {
      if (x.offset < r.target.addr || x.offset >= r.target.addr + r.target.size) continue;
      sites.push({
        off: fileOf(r.target, x.offset),
        len: 4,
        entry: null,
        what: `${r.target.name} relocation at ${hex(x.offset)} (type ${x.type})`,
      });
    }
  }
  return sites;
}
