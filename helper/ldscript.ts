// A structural reader for GNU ld scripts, enough to transform a platform's preprocessed default
// script without understanding every expression: it splits the SECTIONS body into top-level
// statements (assignments, commands, output section descriptions) and each output section body
// into items (input section descriptions, assignments). Text between the pieces is kept
// verbatim, so an untouched statement is written back byte for byte.
import { SpacerError } from './errors.js';

export interface InputSpec {
  /** File pattern, e.g. `*` or a path. */
  file: string;
  /**
   * Section patterns as written inside the parentheses (each a glob; wrappers such as SORT(...)
   * kept).
   */
  sections: string[];
  /** Inner text of the parentheses, verbatim. */
  inner: string;
  keep: boolean;
}

export interface Item {
  text: string;
  /** Set when the item is an input section description. */
  input?: InputSpec;
}

export interface OutputSection {
  kind: 'section';
  name: string;
  /** Text from the name up to and including the opening brace. */
  head: string;
  items: Item[];
  /** Closing brace and everything after it up to the next statement (phdrs, fill, region). */
  tail: string;
  /** Program headers named after the closing brace (`:text`). */
  phdrs: string[];
}

export interface Other {
  kind: 'other';
  text: string;
}

export type Statement = OutputSection | Other;

export interface Script {
  /** Text before the SECTIONS body (PHDRS, ENTRY, ...) up to and including `SECTIONS {`. */
  prefix: string;
  statements: Statement[];
  /** Closing brace of SECTIONS and what follows. */
  suffix: string;
}

const NAME_CH = /[A-Za-z0-9_.$*?[\]\-/\\~!+^:@%]/;

/** Removes C comments and cpp line markers, keeping offsets meaningful for error messages. */
export function stripComments(src: string): string {
  let out = '';
  for (let i = 0; i < src.length; i++) {
    if (src[i] === '/' && src[i + 1] === '*') {
      const end = src.indexOf('*/', i + 2);
      if (end < 0) throw new SpacerError('unterminated comment in linker script');
      out += src.slice(i, end + 2).replace(/[^\n]/g, ' ');
      i = end + 1;
    } else if (src[i] === '"') {
      const end = src.indexOf('"', i + 1);
      if (end < 0) throw new SpacerError('unterminated string in linker script');
      out += src.slice(i, end + 1);
      i = end;
    } else out += src[i];
  }
  return out.replace(/^#.*$/gm, (m) => ' '.repeat(m.length));
}

function matchClose(s: string, open: number, o: string, c: string): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const ch = s[i];
    if (ch === '"') {
      i = s.indexOf('"', i + 1);
      if (i < 0) break;
      continue;
    }
    if (ch === o) depth++;
    else if (ch === c && --depth === 0) return i;
  }
  throw new SpacerError(`unbalanced '${o}' in linker script`);
}

function skipWs(s: string, i: number): number {
  while (i < s.length && /\s/.test(s[i])) i++;
  return i;
}

/** Commands that may end without ';'. */
const COMMAND = /^(ASSERT|PROVIDE|PROVIDE_HIDDEN|HIDDEN|INCLUDE)\s*\(/;

/**
 * The first index in s[from, end) where `stop` says a statement ends, or -1: quoted strings are
 * skipped, and `paren` is the parenthesis depth after the character at k.
 */
function scanTo(
  s: string,
  from: number,
  end: number,
  stop: (k: number, paren: number) => boolean,
): number {
  let paren = 0;
  for (let k = from; k < end; k++) {
    const ch = s[k];
    if (ch === '"') {
      k = s.indexOf('"', k + 1);
      continue;
    }
    if (ch === '(') paren++;
    else if (ch === ')') paren--;
    if (stop(k, paren)) return k;
  }
  return -1;
}

function readName(s: string, i: number): [string, number] {
  if (s[i] === '"') {
    const end = s.indexOf('"', i + 1);
    return [s.slice(i, end + 1), end + 1];
  }
  const start = i;
  while (i < s.length && NAME_CH.test(s[i]) && !(s[i] === ':' && i > start)) i++;
  return [s.slice(start, i), i];
}

export function parseScript(src: string): Script {
  const s = stripComments(src);
  const m = /\bSECTIONS\s*\{/.exec(s);
  if (!m) throw new SpacerError('no SECTIONS command in linker script');
  const bodyStart = m.index + m[0].length;
  const bodyEnd = matchClose(s, bodyStart - 1, '{', '}');
  const statements: Statement[] = [];
  let i = bodyStart;
  while (true) {
    const j = skipWs(s, i);
    if (j >= bodyEnd) {
      if (i < bodyEnd) statements.push({ kind: 'other', text: src.slice(i, bodyEnd) });
      break;
    }
    // Find whether a '{' comes before a ';' at paren depth 0; a command such as ASSERT(...) may
    // end without ';'.
    const stop = scanTo(s, j, bodyEnd, (k, paren) => {
      if (paren !== 0) return false;
      if (s[k] === ')') return COMMAND.test(s.slice(j, k + 1)) && s[skipWs(s, k + 1)] !== ';';
      return s[k] === ';' || s[k] === '{';
    });
    const brace = stop >= 0 && s[stop] === '{' ? stop : -1,
      semi = stop >= 0 && s[stop] !== '{' ? stop : -1;
    if (brace >= 0) {
      const close = matchClose(s, brace, '{', '}');
      // Trailer: phdrs, region, fill.
      let t = close + 1;
      const phdrs: string[] = [];
      while (true) {
        const u = skipWs(s, t);
        if (s[u] === ':' && s[u + 1] !== ':') {
          const [name, e] = readName(s, skipWs(s, u + 1));
          phdrs.push(name);
          t = e;
          continue;
        }
        if (s[u] === '>' || (s.startsWith('AT', u) && s[skipWs(s, u + 2)] === '>')) {
          const v = skipWs(s, s.indexOf('>', u) + 1);
          const [, e] = readName(s, v);
          t = e;
          continue;
        }
        if (s[u] === '=') {
          let e = skipWs(s, u + 1);
          while (e < bodyEnd && !/[\s;]/.test(s[e])) e++;
          t = e;
          continue;
        }
        if (s[u] === ',' || s[u] === ';') {
          t = u + 1;
        }
        break;
      }
      const [name] = readName(s, j);
      statements.push({
        kind: 'section',
        name,
        head: src.slice(i, brace + 1),
        items: parseItems(src, s, brace + 1, close),
        tail: src.slice(close, t),
        phdrs,
      });
      i = t;
    } else {
      const end = semi >= 0 ? semi + 1 : bodyEnd;
      statements.push({ kind: 'other', text: src.slice(i, end) });
      i = end;
    }
  }
  return { prefix: src.slice(0, bodyStart), statements, suffix: src.slice(bodyEnd) };
}

function parseItems(src: string, s: string, start: number, end: number): Item[] {
  const items: Item[] = [];
  let i = start;
  while (true) {
    const j = skipWs(s, i);
    if (j >= end) {
      if (i < end) items.push({ text: src.slice(i, end) });
      break;
    }
    // An input description ends at its closing paren, unless an assignment continues.
    const stop = scanTo(s, j, end, (k, paren) => {
      if (paren !== 0) return false;
      return s[k] === ';' || (s[k] === ')' && !/=/.test(s.slice(j, k).split('(')[0]));
    });
    let endAt = stop < 0 ? end : stop + 1;
    if (s[stop] === ')') {
      const nx = skipWs(s, endAt);
      if (s[nx] === ';') endAt = nx + 1;
    }
    const text = src.slice(i, endAt);
    items.push({ text, input: parseInput(s.slice(j, endAt)) });
    i = endAt;
  }
  return items;
}

const NOT_INPUT =
  /^(ASSERT|PROVIDE|PROVIDE_HIDDEN|HIDDEN|BYTE|SHORT|LONG|QUAD|SQUAD|FILL|CREATE_OBJECT_SYMBOLS|CONSTRUCTORS|INCLUDE|ALIGN|SORT_BY_INIT_PRIORITY_NOT)\b/;

/** Parses `*(a b)`, `KEEP(*(a))`, `file.o(a)`; undefined for assignments and commands. */
export function parseInput(text: string): InputSpec | undefined {
  let t = text.trim().replace(/;$/, '').trim();
  if (!t || /^[^(]*=/.test(t) || NOT_INPUT.test(t)) return undefined;
  let keep = false;
  const km = /^KEEP\s*\(([\s\S]*)\)$/.exec(t);
  if (km) {
    keep = true;
    t = km[1].trim();
  }
  let exclude = '';
  const em = /^(EXCLUDE_FILE\s*\([^)]*\))\s*/.exec(t);
  if (em) {
    exclude = em[1];
    t = t.slice(em[0].length);
  }
  const open = t.indexOf('(');
  if (open < 0) return { file: t, sections: [], inner: '', keep };
  const file = (exclude ? exclude + ' ' : '') + t.slice(0, open).trim();
  const close = t.lastIndexOf(')');
  const inner = t.slice(open + 1, close);
  return { file, sections: splitPatterns(inner), inner, keep };
}

/** Splits a section pattern list into glob names, unwrapping SORT(...) style wrappers. */
export function splitPatterns(inner: string): string[] {
  const out: string[] = [];
  const flat = inner
    .replace(
      /\b(SORT_BY_NAME|SORT_BY_ALIGNMENT|SORT_BY_INIT_PRIORITY|SORT_NONE|SORT|REVERSE)\s*\(/g,
      ' ( ',
    )
    .replace(/EXCLUDE_FILE\s*\([^)]*\)/g, ' ')
    .replace(/[()]/g, ' ');
  for (const w of flat.split(/\s+/)) if (w) out.push(w);
  return out;
}

/** ld-style glob match: `*`, `?`, `[...]` (with `!` or `^` negation). */
const globCache = new Map<string, RegExp>();

export function globMatch(pattern: string, name: string): boolean {
  if (!/[*?[]/.test(pattern)) return pattern === name;
  let compiled = globCache.get(pattern);
  if (!compiled) globCache.set(pattern, (compiled = globRegExp(pattern)));
  return compiled.test(name);
}

/** A linker-script wildcard (`*`, `?`, `[...]`) as an anchored regular expression. */
function globRegExp(pattern: string): RegExp {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let cls = pattern.slice(i + 1, end);
      if (cls[0] === '!' || cls[0] === '^') cls = '^' + cls.slice(1);
      re += '[' + cls.replace(/\\/g, '\\\\') + ']';
      i = end;
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(re + '$');
}

export function renderScript(sc: Script): string {
  let out = sc.prefix;
  for (const st of sc.statements) {
    if (st.kind === 'other') out += st.text;
    else out += st.head + st.items.map((it) => it.text).join('') + st.tail;
  }
  return out + sc.suffix;
}
