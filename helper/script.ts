// Derives the aligned linker script from the platform's own preprocessed default script.
// The platform script is kept as it is except for four kinds of edit:
//   1. its generic input descriptions (`*(.text) *(.text.*)`, ...) exclude the mapped µlib objects;
//   2. each µlib gets one output section per kind (`.text.<ulib>`, ...) at its slot address, with
//      the same input patterns restricted to its object, so mergeable strings stay per µlib;
//   3. the read-only and data regions start at pinned addresses (`. = ADDR;`);
//   4. µlib .bss slots go to one extra PT_LOAD, so the gap before them costs no memory.
// Output sections that extension scripts INSERT against (.rodata, .data, .bss) keep their names and
// come after the µlib slots, so global tables (inittab, libinfo, bootinfo) stay contiguous.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './paths.js';
import { SpacerError } from './errors.js';
import { deepFreeze } from './util/freeze.js';
import {
  globMatch,
  parseScript,
  renderScript,
  stripComments,
  type Item,
  type OutputSection,
  type Script,
} from './ldscript.js';
import { KINDS, type Kind, type SlotKind } from './layout/map-types.js';
import type { UlibObject } from './objects.js';
import { outputName } from './util/sections.js';
import { alignUp, hex } from './util/units.js';

/** Output section of the platform script that holds each kind. */
export const KIND_SECTION: Record<Kind, string> = {
  text: '.text',
  rodata: '.rodata',
  data: '.data',
  bss: '.bss',
};
export const BSS_PHDR = 'spacer_bss';

export interface Platform {
  script: Script;
  src: string;
  textBase: number;
  /** Per kind: index of the platform output section, index of its first generic item. */
  sections: Record<Kind, { stmt: number; firstGeneric: number; patterns: string[] }>;
}

interface Claimer {
  /** Which µlib slot claims (undefined: a platform statement). */
  ulib?: string;
  kind?: Kind;
  head?: boolean;
  file: string;
  excludeMapped: boolean;
  patterns: string[];
}

/** The platform scripts this process analysed, by their text (a server reuses them). */
const platforms = new Map<string, Platform>();

export function loadPlatform(path: string): Platform {
  let src: string;
  try {
    src = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SpacerError(
      `${path}: cannot read the platform linker script (${(e as NodeJS.ErrnoException).code}); build the platform first`,
    );
  }
  const seen = platforms.get(src);
  if (seen) return seen;
  try {
    // Frozen: a link server's later links get the same object.
    const p = deepFreeze(analyzePlatform(src));
    if (platforms.size >= 8) platforms.delete(platforms.keys().next().value!);
    platforms.set(src, p);
    return p;
  } catch (e) {
    if (e instanceof SpacerError)
      throw new SpacerError(
        `${path}: ${e.message}; pass the platform's preprocessed default script (build/libkvmplat/link64.lds)`,
      );
    throw e;
  }
}

export function analyzePlatform(src: string): Platform {
  const script = parseScript(src);
  const sections = {} as Platform['sections'];
  for (const k of KINDS) {
    const name = KIND_SECTION[k];
    const stmt = script.statements.findIndex((s) => s.kind === 'section' && s.name === name);
    if (stmt < 0) throw new SpacerError(`no ${name} output section in the linker script`);
    const sec = script.statements[stmt] as OutputSection;
    const firstGeneric = sec.items.findIndex(
      (it) =>
        it.input &&
        it.input.file === '*' &&
        it.input.sections.some((p) => p === name || p === `${name}.*`),
    );
    if (firstGeneric < 0)
      throw new SpacerError(`output section ${name} has no generic '*(${name})' input description`);
    const patterns = sec.items
      .slice(firstGeneric)
      .filter((it) => it.input && it.input.file === '*')
      .map((it) => it.input!.inner.trim());
    sections[k] = { stmt, firstGeneric, patterns };
  }
  // The text base: the last `. = <number>;` before .text.
  let textBase = -1;
  for (let i = 0; i < sections.text.stmt; i++) {
    const st = script.statements[i];
    const m =
      st.kind === 'other' &&
      /^\s*\.\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*;\s*$/.exec(stripComments(st.text));
    if (m) textBase = Number(m[1]);
  }
  if (textBase < 0) throw new SpacerError("no '. = <address>;' before .text in the linker script");
  return { script, src, textBase, sections };
}

/**
 * The input descriptions of the platform script in order, with µlib slots where the aligned script
 * puts them.
 */
function claimers(p: Platform, ulibs: UlibObject[]): Claimer[] {
  const out: Claimer[] = [];
  const slotsOf = (k: Kind) =>
    ulibs.map((u) => ({
      ulib: u.name,
      kind: k,
      file: u.path,
      excludeMapped: false,
      patterns: p.sections[k].patterns,
    }));
  p.script.statements.forEach((st, i) => {
    const kind = KINDS.find((k) => p.sections[k].stmt === i);
    if (kind === 'rodata' || kind === 'data') out.push(...slotsOf(kind));
    if (st.kind === 'section') {
      st.items.forEach((it, j) => {
        if (!it.input) return;
        const generic =
          kind !== undefined && j >= p.sections[kind].firstGeneric && it.input.file === '*';
        out.push({
          file: it.input.file,
          excludeMapped: generic,
          patterns: it.input.sections,
          head: kind === 'text' && j < p.sections.text.firstGeneric,
        });
      });
    }
    if (kind === 'text' || kind === 'bss') out.push(...slotsOf(kind));
  });
  return out;
}

export interface Measured {
  sizes: Record<string, Partial<Record<Kind, number>>>;
  /** Largest input section alignment per µlib and kind. */
  align: Record<string, Partial<Record<Kind, number>>>;
  /** Bytes the platform's text head (boot sections) takes. */
  head: number;
}

/**
 * Sizes of each µlib's slot contents and of the text head, assigning input sections as ld does:
 * first match in script order.
 */
export function measure(p: Platform, ulibs: UlibObject[]): Measured {
  const cl = claimers(p, ulibs);
  const sizes: Measured['sizes'] = {};
  const align: Measured['align'] = {};
  let head = 0;
  // Walk claimers in order; each claims still-unclaimed matching sections of each object in file
  // order.
  const claimed = ulibs.map((u) => u.sections.map(() => false));
  const offsets = new Map<string, number>();
  for (const c of cl) {
    for (const pat of c.patterns) {
      ulibs.forEach((u, ui) => {
        if (c.ulib !== undefined && c.ulib !== u.name) return;
        if (c.excludeMapped) return; // generic descriptions exclude every mapped object
        if (c.ulib === undefined && !globMatch(c.file, u.path)) return;
        u.sections.forEach((s, si) => {
          if (claimed[ui][si] || !globMatch(pat, s.name)) return;
          claimed[ui][si] = true;
          if (c.head) {
            head = alignUp(head, s.align) + s.size;
          } else if (c.ulib && c.kind) {
            const key = `${u.name}\0${c.kind}`;
            const off = alignUp(offsets.get(key) ?? 0, s.align) + s.size;
            offsets.set(key, off);
            (sizes[u.name] ??= {})[c.kind] = off;
            const al = (align[u.name] ??= {});
            al[c.kind] = Math.max(al[c.kind] ?? 1, s.align);
          }
        });
      });
    }
  }
  for (const u of ulibs) {
    sizes[u.name] ??= {};
    align[u.name] ??= {};
  }
  return { sizes, align, head };
}

export interface SlotPlacement {
  ulib: string;
  path: string;
  /** A stable slot shared with other images (false: this image's own area). */
  shared: boolean;
  kind: SlotKind;
  addr: number;
  size: number;
}

export interface ScriptPlan {
  platform: Platform;
  placements: SlotPlacement[];
  /** Mapped object paths (excluded from the platform's generic descriptions). */
  objects: string[];
  rodataBase: number;
  dataBase: number;
  bssBase: number;
  /** End of the image's own area (its reserve) in the read-only data and data regions. */
  ownEnd?: Partial<Record<'rodata' | 'data', number>>;
}

const q = (path: string) => {
  if (/["\n]/.test(path))
    throw new SpacerError(
      `object path ${JSON.stringify(path)} cannot be written in a linker script; rename it`,
    );
  return `"${path}"`;
};

/** A block of text the aligned script gets before statement `at` of the platform script. */
interface Insert {
  at: number;
  text: string;
  seq?: number;
}

/** What each step of generateScript reads: the plan and the copy of the script being edited. */
interface Draft {
  plan: ScriptPlan;
  p: Platform;
  sc: Script;
}

/** One kind's slots in address order: the order the script lays them out in. */
function byKind(plan: ScriptPlan, k: SlotKind): SlotPlacement[] {
  return plan.placements.filter((x) => x.kind === k).sort((a, b) => a.addr - b.addr);
}

/** Program headers a kind's slots go to: the platform section's, or the extra bss PT_LOAD. */
function phdrsOf(d: Draft, k: Kind): string[] {
  return k === 'bss' ? [BSS_PHDR] : (d.sc.statements[d.p.sections[k].stmt] as OutputSection).phdrs;
}

/** A µlib's slot: the platform's input patterns for the kind, restricted to its object. */
function slotBlock(d: Draft, x: SlotPlacement): string {
  return (
    '\n' +
    fill('ulib-slot', {
      ULIB: x.ulib,
      KIND: KIND_SECTION[x.kind as Kind],
      SECTION: outputName(x.kind, x.ulib),
      ADDR: hex(x.addr),
      SIZE: hex(x.size),
      INPUTS: d.p.sections[x.kind as Kind].patterns.map((pat) => `${q(x.path)}(${pat})`).join(' '),
      PHDRS: phdrsOf(d, x.kind as Kind)
        .map((h) => ` :${h}`)
        .join(''),
    })
  );
}

/** A µlib's indirection table or pointer area: an extent of its own in the text segment. */
function indBlock(x: SlotPlacement, phdrs: string[]): string {
  return (
    '\n' +
    fill('ulib-ind', {
      ULIB: x.ulib,
      WHAT: x.kind === 'ptr' ? 'pointer area (the addresses its table reads)' : 'indirection table',
      SECTION: outputName(x.kind, x.ulib),
      ADDR: hex(x.addr),
      SIZEM1: hex(x.size - 1),
      PHDRS: phdrs.map((h) => ` :${h}`).join(''),
    })
  );
}

/** Every slot of a kind, in address order. */
function slotText(d: Draft, k: Kind): string {
  return byKind(d.plan, k)
    .map((x) => slotBlock(d, x))
    .join('');
}

/**
 * A segment starts at its first section: when this image lacks the region's first µlib, zeros
 * from the region's start keep the segment on a page (Unikraft's boot checks its memory regions).
 */
function padText(d: Draft, k: 'rodata' | 'data' | 'bss'): string {
  const regionBase: Record<'rodata' | 'data' | 'bss', number> = {
    rodata: d.plan.rodataBase,
    data: d.plan.dataBase,
    bss: d.plan.bssBase,
  };
  const first = byKind(d.plan, k)[0];
  if (!first || first.addr === regionBase[k]) return '';
  const size = hex(first.addr - regionBase[k]);
  return (
    '\n' +
    fill('region-pad', {
      REGION: k,
      ADDR: hex(regionBase[k]),
      TYPE: k === 'bss' ? '(NOLOAD) ' : '',
      BODY: k === 'bss' ? `. = ${size};` : `BYTE(0); . = ${size};`,
      PHDRS: phdrsOf(d, k)
        .map((h) => ` :${h}`)
        .join(''),
    })
  );
}

/** Step 1: the generic descriptions skip mapped objects, which only their slots take. */
function excludeMapped(d: Draft): void {
  const exclude = `EXCLUDE_FILE(${d.plan.objects.map(q).join(' ')})`;
  for (const k of KINDS) {
    const sec = d.sc.statements[d.p.sections[k].stmt] as OutputSection;
    sec.items = sec.items.map((it, j): Item => {
      if (j < d.p.sections[k].firstGeneric || !it.input || it.input.file !== '*') return it;
      const star = it.text.indexOf('*');
      return { ...it, text: it.text.slice(0, star) + exclude + ' ' + it.text.slice(star) };
    });
  }
}

/**
 * Code and tables: one run in address order in the text segment (shared tables right after the
 * boot head, each image's own tables after its own code; in ASLR mode each table after its µlib).
 */
function textInsert(d: Draft): Insert {
  const textPhdrs = (d.sc.statements[d.p.sections.text.stmt] as OutputSection).phdrs;
  const run = [...byKind(d.plan, 'ptr'), ...byKind(d.plan, 'ind'), ...byKind(d.plan, 'text')].sort(
    (x, y) => x.addr - y.addr,
  );
  const textRun = run
    .map((x) => (x.kind === 'ind' || x.kind === 'ptr' ? indBlock(x, textPhdrs) : slotBlock(d, x)))
    .join('');
  const guard = run.length ? '\n' + fill('head-guard', { ADDR: hex(run[0].addr) }) : '';
  return { at: d.p.sections.text.stmt + 1, text: guard + textRun };
}

/**
 * Where the pin of a region goes: before its start symbols (`_rodata = .;`), which stay with the
 * region, when an alignment precedes them; else right at the section.
 */
function pinIndex(sc: Script, at: number): number {
  let pinAt = at;
  while (pinAt > 0) {
    const st = sc.statements[pinAt - 1];
    if (st.kind === 'other' && /^\s*[A-Za-z_][\w.$]*\s*=\s*\.\s*;\s*$/.test(stripComments(st.text)))
      pinAt--;
    else break;
  }
  const before = sc.statements[pinAt - 1];
  // no alignment before: pin right at the section
  if (!(before?.kind === 'other' && /^\s*\.\s*=/.test(stripComments(before.text)))) pinAt = at;
  return pinAt;
}

/** The read-only data or data region: its pin, then its slots and what ends them. */
function regionInserts(d: Draft, k: 'rodata' | 'data'): Insert[] {
  const at = d.p.sections[k].stmt;
  const base = k === 'rodata' ? d.plan.rodataBase : d.plan.dataBase;
  const pin = {
    at: pinIndex(d.sc, at),
    text:
      '\n' +
      fill('region-pin', {
        REGION: k === 'rodata' ? 'read-only' : 'data',
        PREV: k === 'rodata' ? 'text' : 'read-only',
        ADDR: hex(base),
      }),
  };
  // Per-image tables that follow (libinfo, bootinfo) must not share a page with a shared slot;
  // after the image's own µlibs (per-image anyway) they may.
  const last = byKind(d.plan, k).at(-1);
  // Otherwise they start at the end of the own area's reserve: the same address in every image
  // whose own bytes fit, so the shared code that reads them stays the same.
  const end = d.plan.ownEnd?.[k];
  const after = last?.shared
    ? '  . = ALIGN(0x1000);\n'
    : end !== undefined
      ? `  . = MAX(., ${hex(end)}); /* the own area's reserve */\n`
      : '';
  return [pin, { at, text: padText(d, k) + slotText(d, k) + after }];
}

/** µlib .bss slots after the platform's .bss, in the extra PT_LOAD. */
function bssInsert(d: Draft): Insert {
  const bss = byKind(d.plan, 'bss').length ? '  . = ALIGN(0x1000);\n' : '';
  return { at: d.p.sections.bss.stmt + 1, text: padText(d, 'bss') + slotText(d, 'bss') + bss };
}

/**
 * Splices the inserts from the last statement backwards so indices stay valid. Same position:
 * later inserts go first, so the earlier one ends up in front.
 */
function spliceInserts(sc: Script, inserts: Insert[]): void {
  inserts.forEach((x, i) => (x.seq = i));
  inserts.sort((a, b) => b.at - a.at || b.seq! - a.seq!);
  for (const ins of inserts) sc.statements.splice(ins.at, 0, { kind: 'other', text: ins.text });
}

/** Writes the aligned script. Same plan, same bytes. */
export function generateScript(plan: ScriptPlan): string {
  const d: Draft = { plan, p: plan.platform, sc: structuredClone(plan.platform.script) };
  // 1. Generic descriptions skip mapped objects.
  excludeMapped(d);
  // 2-4. Insert slots (and pins) from the last statement backwards so indices stay valid.
  const inserts = [textInsert(d)];
  for (const k of ['rodata', 'data'] as const) inserts.push(...regionInserts(d, k));
  inserts.push(bssInsert(d));
  spliceInserts(d.sc, inserts);

  let out = renderScript(d.sc);
  if (byKind(plan, 'bss').length) out = addPhdr(out, `${BSS_PHDR} PT_LOAD FLAGS(0x6);`);
  return `/* Generated by lib-spacer from the platform's default script; do not edit. */\n${out}`;
}

/** Adds a program header after the last PT_LOAD of the PHDRS command. */
function addPhdr(src: string, line: string): string {
  const m = /\bPHDRS\s*\{([\s\S]*?)\}/.exec(src);
  if (!m)
    throw new SpacerError(
      'linker script has no PHDRS command; lib-spacer needs the platform to name its program headers',
    );
  const last = [...m[1].matchAll(/[^;]*;/g)].filter((e) => /\bPT_LOAD\b/.test(e[0])).pop();
  if (!last) throw new SpacerError('linker script PHDRS names no PT_LOAD');
  const insertAt = m.index + m[0].indexOf('{') + 1 + last.index! + last[0].length;
  return src.slice(0, insertAt) + `\n ${line}` + src.slice(insertAt);
}

const templateCache = new Map<string, string>();

/** Fills a block from linker-templates/ (`@NAME@` placeholders). */
function fill(name: string, vars: Record<string, string>): string {
  let t = templateCache.get(name);
  if (t === undefined) {
    const path = join(packageRoot(), 'linker-templates', `${name}.lds.in`);
    try {
      t = readFileSync(path, 'utf8');
    } catch {
      throw new SpacerError(`${path}: linker template missing; reinstall lib-spacer`);
    }
    templateCache.set(name, t);
  }
  const out = t.replace(/@([A-Z][A-Z0-9_]*)@/g, (m, k) => {
    if (!(k in vars)) throw new Error(`template ${name}: no value for ${m}`);
    return vars[k];
  });
  if (t.replace(/@[A-Z][A-Z0-9_]*@/g, '').includes('@'))
    throw new Error(`template ${name}: malformed placeholder`);
  return out;
}
